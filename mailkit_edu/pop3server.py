"""The lab's POP3 server: the asyncio shell around the protocol core in ``pop3.py``.

Role
    Everything POP3 *means* (states, DELE at QUIT, the lock, UIDL) lives in the
    pure core, :class:`mailkit_edu.pop3.POP3Session`. This shell only does what
    needs a socket, and is short enough to read in one sitting:

    * accept a TCP connection on 127.0.0.1 and greet (RFC 1939 §4);
    * read one command line at a time — the single read point, where each client
      line enters the transcript — and hand it to the core;
    * write the core's :class:`~mailkit_edu.pop3.Response` — the single write
      point, where each server line enters the transcript;
    * start TLS when the core says so (STLS, RFC 2595 §4), wait a little before
      answering a wrong password, close when the core says so, and close an idle
      connection without a word (RFC 1939 §3: the autologout timer; nothing is
      deleted, because the session never reaches the UPDATE state);
    * answer with a reply injected by ``lab.inject`` instead of running the verb.

This module must not import ipywidgets or the lab.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from .listener import MailboxListener, MailboxSettings
from .pop3 import MaildropLocks, POP3Session, Response
from .transcript import SessionLog, clip, decode_line

__all__ = ["AUTOLOGOUT", "POP3Connection", "POP3Server", "POP3Settings"]

#: RFC 1939 §3: the autologout timer "MUST be of at least 10 minutes' duration".
AUTOLOGOUT = 600.0
#: The longest line we buffer while looking for its end. RFC 2449 §4 allows 255
#: octets per command; anything longer is answered -ERR by the core. A line longer
#: than this is read and thrown away piece by piece, never held in memory.
READ_LIMIT = 8192
#: A line that goes on past this many octets is abuse: the connection is closed.
ABUSIVE_LINE = 1024 * 1024


@dataclass(frozen=True)
class POP3Settings(MailboxSettings):
    """Knobs of a lab's POP3 servers; the autologout default is the RFC's minimum."""

    autologout: float = AUTOLOGOUT


class POP3Server(MailboxListener):
    """One POP3 listener of the lab, for one domain's accounts, on the lab's loop."""

    role = "pop3"
    protocol = "POP3"
    settings: POP3Settings

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        #: One lock per maildrop, shared by every session of this server (RFC 1939 §8).
        self.locks = MaildropLocks()

    def new_connection(self) -> POP3Connection:
        return POP3Connection(self)


class POP3Connection(asyncio.Protocol):
    """One POP3 connection: bytes in, lines to the core, its responses out.

    Lines are handled as they arrive, in ``data_received``, without a coroutine per
    command; only the two steps that must wait (the pause after a wrong password,
    and the TLS handshake after STLS) run as a task, and input waits meanwhile.
    """

    def __init__(self, server: POP3Server) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.long_line: bytes | None = None  # the start of a line past READ_LIMIT
        self.long_dropped = 0
        self.waiting = False  # a delay, a handshake or a full send buffer: input waits
        self.last_line = self.loop.time()
        self.session = POP3Session(
            server.store,
            server.passwords,
            hostname=server.name,
            locks=server.locks,
            require_tls=server.settings.require_tls,
            tls_available=server.tls_context is not None,
        )
        self.transcript: SessionLog = server.transcript.open_session(server.server_id)
        self.watchdog: asyncio.Task | None = None

    # -- the connection's life --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self)
        self.watchdog = self.loop.create_task(self.autologout())
        injected = self.server.faults.take("CONNECT")
        if injected is None:
            self.send(self.session.greeting())
        else:
            self.send(Response([injected.encode()], close=injected.startswith("-ERR")))

    def connection_lost(self, error: Exception | None) -> None:
        if self.buffer:
            self.record_client(bytes(self.buffer))  # a last line without CRLF
            self.buffer.clear()
        if not self.session.closed:
            self.session.connection_lost()  # no QUIT: RFC 1939 §6, nothing is deleted
        if self.watchdog is not None:
            self.watchdog.cancel()
        self.server.connections.discard(self)
        self.transport = None

    def hang_up(self) -> None:
        """Close the connection (after QUIT, on abuse, or when the lab stops this server).

        A stopped server drops its connections at once, as a crashed one would: a
        TLS connection is aborted rather than left waiting for the client's goodbye.
        """
        if self.transport is None:
            return
        if self.server.running:
            self.transport.close()  # what we wrote still goes out first
        else:
            self.transport.abort()

    async def autologout(self) -> None:
        """RFC 1939 §3: close a connection idle for ``autologout`` seconds, without a
        response and without entering UPDATE. One timer per connection, checked
        against the time of the last line, rather than a new timeout per command."""
        limit = self.server.settings.autologout
        while (idle := self.loop.time() - self.last_line) < limit:
            await asyncio.sleep(limit - idle)
        if self.transport is not None:
            self.transport.abort()

    # -- the read point ----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.process()

    def process(self) -> None:
        """Answer every complete line in the buffer, in order, until one must wait."""
        while not self.waiting and self.transport is not None and not self.session.closed:
            line = self.next_line()
            if line is None:
                return
            response = self.answer(line)
            if response.failed_login or response.start_tls:
                self.waiting = True
                self.loop.create_task(self.answer_later(response))
                return
            self.send(response)

    def next_line(self) -> bytes | None:
        """The next complete line (recorded in the transcript), or None for now.

        A line longer than READ_LIMIT is not kept: its first READ_LIMIT octets go to
        the core (which answers -ERR: RFC 2449 §4 allows 255), the rest is dropped as
        it arrives; past ABUSIVE_LINE octets the connection is closed.
        """
        end = self.buffer.find(b"\n")
        if end < 0:
            if len(self.buffer) > READ_LIMIT:
                if self.long_line is None:
                    self.long_line = bytes(self.buffer[:READ_LIMIT])
                    self.long_dropped = len(self.buffer) - READ_LIMIT
                else:
                    self.long_dropped += len(self.buffer)
                self.buffer.clear()
                if self.long_dropped > ABUSIVE_LINE:
                    self.record_client(self.long_line, extra=self.long_dropped)
                    self.send(Response([b"-ERR line far too long, closing"], close=True))
            return None
        line = bytes(self.buffer[: end + 1])
        del self.buffer[: end + 1]
        self.last_line = self.loop.time()
        if self.long_line is not None:
            extra = self.long_dropped + len(line)
            line, self.long_line = self.long_line, None
            self.record_client(line, extra=extra)
            return line
        self.record_client(line)
        return line

    def answer(self, line: bytes) -> Response:
        """The core's answer to ``line``, or the reply ``lab.inject`` put in its place."""
        if not self.session.expecting_sasl:
            verb = line.split(b" ", 1)[0].strip().upper().decode("ascii", "replace")
            injected = self.server.faults.take(verb) if verb.isalpha() else None
            if injected is not None:
                return Response([injected.encode()])
        return self.session.receive_line(line)

    async def answer_later(self, response: Response) -> None:
        """The answers that wait: a wrong password, and STLS (RFC 2595 §4)."""
        try:
            if response.failed_login and self.server.settings.auth_failure_delay > 0:
                await asyncio.sleep(self.server.settings.auth_failure_delay)
            self.send(response)
            if response.start_tls and self.transport is not None:
                await self.start_tls()
        except (ConnectionError, ssl.SSLError, OSError):
            self.hang_up()
            return
        self.waiting = False
        self.process()

    def record_client(self, raw: bytes, extra: int = 0) -> None:
        text = decode_line(raw)
        verb = text.split(" ", 1)[0].upper()
        command = verb if verb.isascii() and verb.isalpha() else None
        if self.server.settings.mask_secrets:
            text = self.masked(text, verb)
        if extra:
            text = f"{clip(text)}… [{extra} more bytes]"
        if self.session.expecting_sasl:
            command = None  # a SASL response, not a command
        self.transcript.client(text, command)

    def masked(self, text: str, verb: str) -> str:
        if self.session.expecting_sasl:
            return "********"
        if verb == "PASS":
            return "PASS ********"
        if verb == "AUTH" and len(text.split()) > 2:
            return " ".join(text.split()[:2]) + " ********"
        return text

    # -- the write point ----------------------------------------------------------------

    def send(self, response: Response) -> None:
        lines = response.lines
        if lines and self.transport is not None:
            first = lines[0]
            code = (
                "+OK" if first.startswith(b"+OK") else "-ERR" if first.startswith(b"-ERR") else "+"
            )
            data = b"\r\n".join(lines)
            # One decode for the whole reply (a RETR is dozens of lines); no line holds CRLF.
            self.transcript.reply(data.decode("utf-8", "backslashreplace").split("\r\n"), code)
            self.transport.write(data + b"\r\n")
        if response.close:
            self.hang_up()

    def pause_writing(self) -> None:
        self.waiting = True  # the client reads slowly: stop answering until it catches up

    def resume_writing(self) -> None:
        self.waiting = False
        self.process()

    async def start_tls(self) -> None:
        """RFC 2595 §4: the TLS handshake right after "+OK Begin TLS negotiation"."""
        assert self.server.tls_context is not None and self.transport is not None
        # Bytes the client sent after STLS but before the handshake are plaintext that
        # a man in the middle could have injected: throw them away (RFC 2595 §4, as
        # RFC 3207 §4.2 says for SMTP), but show them in the transcript.
        for line in bytes(self.buffer).splitlines():
            self.transcript.client(f"{decode_line(line)} [discarded: sent before TLS]")
        self.buffer.clear()
        self.transport = await self.loop.start_tls(
            self.transport, self, self.server.tls_context, server_side=True
        )
        self.session.tls_started()
