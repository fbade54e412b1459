"""What every lab server shares: a TCP listener on 127.0.0.1 that can stop and start again.

Role
    Each server of the lab (the MSA, the MX, POP3, and IMAP later) is a
    :class:`Listener`: it has a name (``mx.south.test``), a domain, a role and a
    protocol as in ``lab.servers``; it registers once with the lab's transcript;
    it keeps its :class:`~mailkit_edu.faults.Faults` for ``lab.inject``; and it
    makes one asyncio protocol object per connection (:meth:`new_connection`).

    ``start()`` binds the host (127.0.0.1) on the port: 0 the first time, so the
    operating system picks a free one, and the same port again after ``stop()``,
    so that DNS and the relay's port table stay true when a lesson takes a server
    down and brings it back. ``stop()`` closes the listener and drops every open
    connection, as a server that crashed would.

This module knows nothing of any protocol: it must not import smtp, pop3 or imap
modules, nor ipywidgets.
"""

from __future__ import annotations

import abc
import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .faults import Faults
from .transcript import Transcript

__all__ = ["Connection", "Listener", "MailboxListener", "MailboxSettings"]


class Connection(Protocol):
    """What a listener needs of each of its connections."""

    def hang_up(self) -> None:
        """Close the connection (without a protocol goodbye)."""


class Listener(abc.ABC):
    """A lab server's TCP listener; subclasses say how to speak to one connection."""

    role: str
    protocol: str

    def __init__(
        self,
        *,
        name: str,
        domain: str,
        transcript: Transcript,
        tls_context: ssl.SSLContext | None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.name = name
        self.domain = domain
        self.transcript = transcript
        self.server_id = transcript.register_server(name, self.role, self.protocol)
        self.tls_context = tls_context
        self.host = host
        self.port = port
        self.faults = Faults()
        #: The open connections (each adds and removes itself).
        self.connections: set[Connection] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None

    @abc.abstractmethod
    def new_connection(self) -> asyncio.BaseProtocol:
        """The protocol object for one new connection."""

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Listen on ``host``:``port`` (port 0: any free port, read back after)."""
        if self._server is not None:
            return
        self.loop = asyncio.get_running_loop()
        self._server = await self.loop.create_server(self.new_connection, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every open connection. Safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for connection in list(self.connections):
            connection.hang_up()
        await server.wait_closed()


@dataclass(frozen=True)
class MailboxSettings:
    """Knobs of a lab's POP3 and IMAP servers (each protocol sets its own autologout)."""

    require_tls: bool = False
    mask_secrets: bool = False
    auth_failure_delay: float = 0.5
    autologout: float = 600.0


class MailboxListener(Listener):
    """A listener that serves one domain's mailboxes from the store (POP3 and IMAP).

    ``store`` is the lab's :class:`~mailkit_edu.store.Store`, ``passwords`` maps each
    address of the domain to its password, ``settings`` are the protocol's knobs
    (``require_tls``, ``mask_secrets``, ``auth_failure_delay``, ``autologout``).
    """

    def __init__(
        self,
        *,
        name: str,
        domain: str,
        store: Any,
        passwords: Mapping[str, str],
        transcript: Transcript,
        settings: MailboxSettings,
        tls_context: ssl.SSLContext | None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(
            name=name,
            domain=domain,
            transcript=transcript,
            tls_context=tls_context,
            host=host,
            port=port,
        )
        self.store = store
        self.passwords = passwords
        self.settings = settings
