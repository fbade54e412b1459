"""The lab's certificate authority: TLS for STARTTLS (RFC 3207, RFC 2595, RFC 3501 §6.2.1).

Role
    Every lab makes its own small CA when it starts (with ``trustme``, a library
    made for exactly this) and issues one server certificate naming every lab
    host (``msa.north.test``, ``mx.south.test``, …), ``localhost`` and
    ``127.0.0.1``. Clients that should check certificates trust the CA file
    (``lab.ca_file``), as a real client trusts a public CA.

    With ``start_lab(path=...)`` the CA is kept in ``path/tls/`` so a client told
    to trust it once (``curl --cacert``) keeps trusting it after a restart.

This module must not import asyncio, sockets or any server module.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from pathlib import Path

import trustme

__all__ = ["LabCA"]

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
ORGANIZATION = "mailkit-edu lab"


class LabCA:
    """A certificate authority and one server certificate for all lab hosts."""

    def __init__(self, hostnames: Iterable[str], directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
        if cert_path.exists() and key_path.exists():
            self._ca = trustme.CA.from_pem(cert_path.read_bytes(), key_path.read_bytes())
        else:
            self._ca = trustme.CA(organization_name=ORGANIZATION)
            self._ca.private_key_pem.write_to_path(str(key_path))
            key_path.chmod(0o600)
            self._ca.cert_pem.write_to_path(str(cert_path))
        self.hostnames = sorted(set(hostnames) | {"localhost", "127.0.0.1"})
        self._server_cert = self._ca.issue_cert(*self.hostnames)
        #: PEM file of the lab CA: give it to clients (``curl --cacert``, ``cafile=``).
        self.ca_file = cert_path

    def server_context(self) -> ssl.SSLContext:
        """An ``SSLContext`` for the servers' side of STARTTLS."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._server_cert.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """An ``SSLContext`` for clients that trusts the lab CA (and checks host names)."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return context
