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
import contextlib
import logging
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

from .faults import Faults
from .pop3 import MaildropLocks, POP3Session, Response
from .store import Store
from .transcript import SessionLog, Transcript, clip, decode_line

__all__ = ["AUTOLOGOUT", "POP3Server", "POP3Settings"]

log = logging.getLogger(__name__)

#: RFC 1939 §3: the autologout timer "MUST be of at least 10 minutes' duration".
AUTOLOGOUT = 600.0
#: The longest line we buffer while looking for its end. RFC 2449 §4 allows 255
#: octets per command; anything longer is answered -ERR by the core. A line longer
#: than this is read and thrown away piece by piece, never held in memory.
READ_LIMIT = 8192
#: A line that goes on past this many octets is abuse: the connection is closed.
ABUSIVE_LINE = 1024 * 1024


@dataclass(frozen=True)
class POP3Settings:
    """Knobs of a lab's POP3 servers."""

    require_tls: bool = False
    mask_secrets: bool = False
    auth_failure_delay: float = 0.5
    autologout: float = AUTOLOGOUT


class POP3Server:
    """One POP3 listener of the lab, for one domain's accounts, on the lab's loop."""

    role = "pop3"
    protocol = "POP3"

    def __init__(
        self,
        *,
        name: str,
        domain: str,
        store: Store,
        passwords: Mapping[str, str],
        transcript: Transcript,
        settings: POP3Settings,
        tls_context: ssl.SSLContext | None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.name = name
        self.domain = domain
        self.store = store
        self.passwords = passwords
        self.transcript = transcript
        self.server_id = transcript.register_server(name, self.role, self.protocol)
        self.settings = settings
        self.tls_context = tls_context
        self.host = host
        self.port = port
        self.faults = Faults()
        #: One lock per maildrop, shared by every session of this server (RFC 1939 §8).
        self.locks = MaildropLocks()
        self._server: asyncio.base_events.Server | None = None
        self._connections: dict[asyncio.Task, asyncio.StreamWriter] = {}

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=READ_LIMIT
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._connections.values()):
            writer.close()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()

    # -- one connection -----------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        transcript = self.transcript.open_session(self.server_id)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        session = POP3Session(
            self.store,
            self.passwords,
            hostname=self.name,
            locks=self.locks,
            require_tls=self.settings.require_tls,
            tls_available=self.tls_context is not None,
        )
        connection = _Connection(self, session, reader, writer, transcript)
        try:
            await connection.run()
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass  # the client went away: nothing to answer
        except Exception:
            log.exception("unexpected error in a POP3 connection of %s", self.name)
        finally:
            if not session.closed:
                session.connection_lost()  # no QUIT: RFC 1939 §6, nothing is deleted
            self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class _Connection:
    """The read-process-write loop of one POP3 connection."""

    def __init__(
        self,
        server: POP3Server,
        session: POP3Session,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        transcript: SessionLog,
    ) -> None:
        self.server = server
        self.session = session
        self.reader = reader
        self.writer = writer
        self.transcript = transcript
        self.loop = asyncio.get_running_loop()
        self.last_line = self.loop.time()  # for the autologout timer

    async def run(self) -> None:
        watchdog = asyncio.get_running_loop().create_task(self.autologout())
        try:
            await self.converse()
        finally:
            watchdog.cancel()

    async def autologout(self) -> None:
        """RFC 1939 §3: close a connection idle for ``autologout`` seconds, without a
        response and without entering UPDATE. One timer per connection, checked
        against the time of the last line, rather than a new timeout per command."""
        loop = asyncio.get_running_loop()
        limit = self.server.settings.autologout
        while (idle := loop.time() - self.last_line) < limit:
            await asyncio.sleep(limit - idle)
        self.writer.transport.abort()  # the read in converse() ends: nothing is deleted

    async def converse(self) -> None:
        injected = self.server.faults.take("CONNECT")
        if injected is not None:
            await self.send(Response([injected.encode()]))
            if injected.startswith("-ERR"):
                return
        else:
            await self.send(self.session.greeting())
        while not self.session.closed:
            line = await self.read_line()
            if line is None:
                return  # end of stream, autologout, or an abusive line
            response = self.answer(line)
            if response.failed_login and self.server.settings.auth_failure_delay > 0:
                await asyncio.sleep(self.server.settings.auth_failure_delay)
            await self.send(response)
            if response.start_tls:
                await self.start_tls()
            if response.close:
                return

    def answer(self, line: bytes) -> Response:
        """The core's answer to ``line``, or the reply ``lab.inject`` put in its place."""
        if not self.session.expecting_sasl:
            verb = line.split(b" ", 1)[0].strip().upper().decode("ascii", "replace")
            injected = self.server.faults.take(verb) if verb.isalpha() else None
            if injected is not None:
                return Response([injected.encode()])
        return self.session.receive_line(line)

    # -- the read point ------------------------------------------------------------

    async def read_line(self) -> bytes | None:
        """The next command line, recorded in the transcript; None to hang up."""
        try:
            line = await self.reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as error:
            if error.partial:
                self.record_client(error.partial)
            return None
        except asyncio.LimitOverrunError:
            return await self.read_overlong_line()
        self.last_line = self.loop.time()
        self.record_client(line)
        return line

    async def read_overlong_line(self) -> bytes | None:
        """Read a line longer than READ_LIMIT in pieces; keep only its start.

        The core then answers -ERR (the line is over RFC 2449's 255 octets). A line
        that goes on past ABUSIVE_LINE octets closes the connection.
        """
        start = b""
        total = 0
        while True:
            try:
                piece = await self.reader.readuntil(b"\n")
                done = True
            except asyncio.LimitOverrunError as error:
                piece = await self.reader.readexactly(error.consumed)
                done = False
            if len(start) < READ_LIMIT:
                start += piece[: READ_LIMIT - len(start)]
            total += len(piece)
            if done:
                self.record_client(start, extra=total - len(start))
                return start
            if total > ABUSIVE_LINE:
                self.record_client(start, extra=total - len(start))
                await self.send(Response([b"-ERR line far too long, closing"], close=True))
                return None

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

    # -- the write point -----------------------------------------------------------

    async def send(self, response: Response) -> None:
        lines = response.lines
        if not lines:
            return
        first = lines[0]
        code = "+OK" if first.startswith(b"+OK") else "-ERR" if first.startswith(b"-ERR") else "+"
        data = b"\r\n".join(lines)
        # One decode for the whole reply (a RETR is dozens of lines); no line holds CRLF.
        self.transcript.reply(data.decode("utf-8", "backslashreplace").split("\r\n"), code)
        self.writer.write(data + b"\r\n")
        await self.writer.drain()

    async def start_tls(self) -> None:
        """RFC 2595 §4: the TLS handshake right after "+OK Begin TLS negotiation"."""
        assert self.server.tls_context is not None
        # Bytes the client sent after STLS but before the handshake are plaintext that
        # a man in the middle could have injected: throw them away (RFC 2595 §4, as
        # RFC 3207 §4.2 says for SMTP), but show them in the transcript.
        early = bytes(self.reader._buffer)  # asyncio has no public way to peek here
        self.reader._buffer.clear()
        for line in early.splitlines():
            self.transcript.client(f"{decode_line(line)} [discarded: sent before TLS]")
        await self.writer.start_tls(self.server.tls_context)
        self.session.tls_started()
