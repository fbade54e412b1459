"""The lab's certificate authority: TLS for STARTTLS (RFC 3207, RFC 2595, RFC 3501 §6.2.1).

Role
    Every lab makes its own small CA when it starts (with ``trustme``, a library
    made for exactly this) and issues each server a certificate naming its host
    (``msa.north.test``, ``pop3.south.test``, …), ``localhost`` and ``127.0.0.1``.
    Clients that should check certificates trust the CA file (``lab.ca_file``),
    as a real client trusts a public CA.

    With ``start_lab(path=...)`` the CA is kept in ``path/tls/`` so a client told
    to trust it once (``curl --cacert``) keeps trusting it after a restart.

This module must not import asyncio, sockets or any server module.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme

__all__ = ["LabCA"]

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
ORGANIZATION = "mailkit-edu lab"
#: Names every server certificate carries besides its host name.
ALWAYS_NAMED = ("localhost", "127.0.0.1")


class LabCA:
    """A certificate authority, and a certificate for each lab host it is asked for."""

    def __init__(self, directory: str | Path) -> None:
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
        #: PEM file of the lab CA: give it to clients (``curl --cacert``, ``cafile=``).
        self.ca_file = cert_path
        self._contexts: dict[str, ssl.SSLContext] = {}

    def server_context(self, hostname: str) -> ssl.SSLContext:
        """An ``SSLContext`` for the server side of STARTTLS/STLS on ``hostname``.

        Its certificate names the host (as subject alternative name *and* common
        name: some clients, fetchmail's ``sslcommonname`` for one, read only the
        latter), ``localhost`` and ``127.0.0.1``.
        """
        context = self._contexts.get(hostname)
        if context is None:
            names = [hostname, *(n for n in ALWAYS_NAMED if n != hostname)]
            certificate = self._ca.issue_cert(*names, common_name=hostname)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            certificate.configure_cert(context)
            self._contexts[hostname] = context
        return context

    def client_context(self) -> ssl.SSLContext:
        """An ``SSLContext`` for clients that trusts the lab CA (and checks host names)."""
        return ssl.create_default_context(cafile=str(self.ca_file))
