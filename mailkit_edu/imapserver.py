"""The lab's IMAP server: the asyncio shell around the protocol core in ``imap.py``.

Role
    Everything IMAP *means* lives in the pure core, :class:`mailkit_edu.imap.IMAPSession`.
    This shell only does what needs a socket:

    * accept a TCP connection on 127.0.0.1 and greet (RFC 3501 §7.1.1);
    * collect one whole command: its lines and its literals. For a synchronizing
      literal ``{n}`` it sends the continuation request ``+`` first (RFC 3501 §7.5);
      for ``{n+}`` (LITERAL+, RFC 7888) it just reads on. A literal larger than the
      core allows is refused *before* one octet of it is read; nothing a client
      announces is allocated up front. This is the single read point, where each
      client line enters the transcript;
    * write the core's :class:`~mailkit_edu.imap.Response`: the single write point,
      where each server line (literal lines too) enters the transcript. A large FETCH
      is sent as it is produced, pausing while the client reads slowly;
    * IDLE (RFC 2177): while a client idles, changes to its mailbox (the store tells
      the server, see ``Store.watchers``) are pushed at once;
    * start TLS after STARTTLS, wait a little before answering a wrong password,
      close after LOGOUT or BYE, and close a connection idle for ``autologout``
      seconds (RFC 3501 §5.4: at least 30 minutes);
    * answer with a reply injected by ``lab.inject`` instead of running the command.

This module must not import ipywidgets or the lab.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .imap import IMAPSession, RecentFlags, Response
from .imapparse import MAX_LINE, ParseError, command_tag, literal_at_end
from .listener import MailboxListener, MailboxSettings
from .transcript import SessionLog, clip, decode_line

__all__ = ["AUTOLOGOUT", "IMAPConnection", "IMAPServer", "IMAPSettings"]

#: RFC 3501 §5.4: "an inactivity autologout timer of at least 30 minutes".
AUTOLOGOUT = 1800.0
#: While a client idles, the mailbox is also checked this often, for changes made
#: behind the store's back (a student moving a file by hand).
IDLE_POLL = 5.0
#: Send a large response in pieces of about this size (then let other clients in).
CHUNK = 256 * 1024
#: Stop reading from a client that sends this much while it waits for an answer.
INPUT_PAUSE = 4 * MAX_LINE
#: TCP_QUICKACK (Linux): answer ACKs at once. imaplib writes an APPEND literal and its
#: final CRLF separately; with delayed ACKs that costs ~40 ms per APPEND.
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


@dataclass(frozen=True)
class IMAPSettings(MailboxSettings):
    """Knobs of a lab's IMAP servers; the autologout default is the RFC's minimum."""

    autologout: float = AUTOLOGOUT


class IMAPServer(MailboxListener):
    """One IMAP listener of the lab, for one domain's accounts, on the lab's loop."""

    role = "imap"
    protocol = "IMAP"
    settings: IMAPSettings

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        #: Who saw which message first (\\Recent), shared by this server's sessions.
        self.recent = RecentFlags()
        #: The connections now in IDLE, to push news to.
        self.idlers: set[IMAPConnection] = set()
        self._watching = False

    def new_connection(self) -> IMAPConnection:
        return IMAPConnection(self)

    async def start(self) -> None:
        await super().start()
        if not self._watching:
            self.store.watchers.append(self._store_changed)
            self._watching = True

    async def stop(self) -> None:
        if self._watching:
            self.store.watchers.remove(self._store_changed)
            self._watching = False
        await super().stop()

    def _store_changed(self, address: str, folder: str) -> None:
        """Called by the store in any thread: wake the IDLE clients of that mailbox."""
        loop = self.loop
        if loop is not None and self.idlers and not loop.is_closed():
            loop.call_soon_threadsafe(self.push, address, folder)

    def push(self, address: str, folder: str) -> None:
        for connection in list(self.idlers):
            selected = connection.session.selected
            if connection.session.user == address and selected and selected.folder == folder:
                connection.push_updates()


class IMAPConnection(asyncio.Protocol):
    """One IMAP connection: bytes in, whole commands to the core, its responses out."""

    def __init__(self, server: IMAPServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.sock: socket.socket | None = None
        self.buffer = bytearray()
        self.parts: list[bytes] = []  # the command so far: lines and literals
        self.literal: bytearray | None = None  # a literal being read
        self.literal_size = 0
        self.literal_lines: list[bytes] = []  # for the transcript
        self.mask_literal = False
        self.waiting = False  # a delay, a handshake, a stream or a full send buffer
        self.paused_reading = False
        self.writable: asyncio.Event = asyncio.Event()
        self.writable.set()
        self.closing = False
        self.last_input = self.loop.time()
        self.session = IMAPSession(
            server.store,
            server.passwords,
            hostname=server.name,
            recent=server.recent,
            require_tls=server.settings.require_tls,
            tls_available=server.tls_context is not None,
        )
        self.transcript: SessionLog = server.transcript.open_session(server.server_id)
        self.watchdog: asyncio.Task | None = None
        self.idle_timer: asyncio.TimerHandle | None = None

    # -- the connection's life --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.sock = sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self)
        self.watchdog = self.loop.create_task(self.autologout())
        injected = self.server.faults.take("CONNECT")
        if injected is None:
            self.send_lines(self.session.greeting().lines)
            return
        self.send_lines([injected.encode()])
        if injected.upper().startswith("* BYE"):
            self.hang_up()

    def connection_lost(self, error: Exception | None) -> None:
        if self.buffer:
            self.record_client(bytes(self.buffer))  # a last line without CRLF
            self.buffer.clear()
        self.session.connection_lost()
        self.stop_idling()
        if self.watchdog is not None:
            self.watchdog.cancel()
        self.server.connections.discard(self)
        self.writable.set()  # a stream waiting to write gives up
        self.transport = None

    def hang_up(self) -> None:
        """Close the connection (after LOGOUT, on abuse, or when the lab stops this server).

        A stopped server drops its connections at once, as a crashed one would: a
        TLS connection is aborted rather than left waiting for the client's goodbye.
        """
        self.closing = True
        if self.transport is None:
            return
        if self.server.running:
            self.transport.close()  # what we wrote still goes out first
        else:
            self.transport.abort()

    async def autologout(self) -> None:
        """RFC 3501 §5.4: close a connection idle for ``autologout`` seconds, with a BYE."""
        limit = self.server.settings.autologout
        while (idle := self.loop.time() - self.last_input) < limit:
            await asyncio.sleep(limit - idle)
        if self.transport is not None:
            self.send_lines([b"* BYE autologout: idle for too long"])
            self.hang_up()

    # -- the read point ----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if _QUICKACK is not None and self.sock is not None:
            with contextlib.suppress(OSError):  # the kernel turns it off again: set it each time
                self.sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        self.last_input = self.loop.time()
        self.buffer += data
        self.process()

    def process(self) -> None:
        """Handle everything complete in the buffer, in order, until something must wait."""
        while self.ready():
            if self.literal is not None:
                if not self.read_literal():
                    break
                continue
            end = self.buffer.find(b"\n")
            if end < 0:
                if len(self.buffer) > MAX_LINE + 2:
                    self.too_long()
                break
            line = bytes(self.buffer[: end + 1])
            del self.buffer[: end + 1]
            self.take_line(line)
        if not self.ready() and len(self.buffer) > INPUT_PAUSE and not self.paused_reading:
            self.paused_reading = True
            if self.transport is not None:
                self.transport.pause_reading()

    def ready(self) -> bool:
        """True if the next command may be answered now: nothing is pending, and the
        client reads what we send (a client that only writes cannot fill our memory)."""
        return (
            not self.waiting
            and self.writable.is_set()
            and not self.closing
            and self.transport is not None
        )

    def take_line(self, raw: bytes) -> None:
        """One line from the client: part of a command, a SASL answer or IDLE's DONE."""
        line = raw.removesuffix(b"\n").removesuffix(b"\r")
        if self.session.expecting_sasl or self.session.idling:
            self.record_client(raw, command=None, secret=self.session.expecting_sasl)
            if self.session.idling:
                self.stop_idling()
            self.respond(self.session.receive_exact(line))
            return
        first = not self.parts
        try:
            announced = literal_at_end(line)
        except ParseError as error:
            # The client may already be sending the literal (LITERAL+): its octets must
            # never be read as commands, so the connection ends here.
            self.record_client(raw, command=self.verb(line) if first else None)
            why = "the command line was too long" if len(line) > MAX_LINE else "a bad literal"
            self.send_lines([error.response().encode(), f"* BYE closing after {why}".encode()])
            self.hang_up()
            return
        if first or not self.mask_literal:
            self.record_client(raw, command=self.verb(line) if first else None)
        else:  # the rest of a LOGIN or AUTHENTICATE after a literal: secret too
            announcement = line[line.rfind(b"{") :].decode("ascii") if announced else ""
            self.transcript.client(f"******** {announcement}".rstrip())
        if first:
            self.mask_literal = self.server.settings.mask_secrets and self.verb(line) in (
                "LOGIN",
                "AUTHENTICATE",
            )
        self.parts.append(raw if announced is not None else line)
        if announced is None:
            command, self.parts = b"".join(self.parts), []
            self.run(command)
            return
        self.literal = bytearray()
        self.literal_size = announced.size
        if announced.synchronizing:
            self.send_lines([b"+ Ready for literal data"])

    def read_literal(self) -> bool:
        """Move literal octets from the buffer; True once the literal is complete."""
        assert self.literal is not None
        wanted = self.literal_size - len(self.literal)
        piece = self.buffer[:wanted]
        del self.buffer[:wanted]
        self.literal += piece
        if len(self.literal) < self.literal_size:
            return False
        data = bytes(self.literal)
        self.literal = None
        self.record_literal(data)
        self.parts.append(data)
        return True

    def too_long(self) -> None:
        """A line past MAX_LINE: we cannot tell where the command ends, so we close."""
        tag = command_tag(bytes(self.buffer[:200])) or "*"
        self.record_client(bytes(self.buffer[:MAX_LINE]), extra=len(self.buffer) - MAX_LINE)
        self.buffer.clear()
        self.send_lines(
            [
                f"{tag} BAD line too long: at most {MAX_LINE} octets".encode(),
                b"* BYE closing: the command line was too long",
            ]
        )
        self.hang_up()

    def run(self, command: bytes) -> None:
        """Answer one whole command (or send the reply ``lab.inject`` put in its place)."""
        tag = command_tag(command)
        verb = self.verb(command)
        injected = self.server.faults.take(verb) if verb else None
        if injected is not None and tag is not None:
            self.send_lines([f"{tag} {injected}".encode()])
            return
        self.respond(self.session.receive_exact(command))

    def respond(self, response: Response) -> None:
        if not isinstance(response.lines, list) and not response.failed_login:
            # A lazy response (FETCH): most fit in one piece and go out at once.
            iterator = iter(response.lines)
            batch: list[bytes] = []
            size = 0
            for line in iterator:
                batch.append(line)
                size += len(line)
                if size >= CHUNK:
                    self.send_lines(batch)
                    response.lines = iterator  # the rest is streamed
                    break
            else:
                response.lines = batch
        if response.failed_login or response.start_tls or not isinstance(response.lines, list):
            self.waiting = True
            self.loop.create_task(self.respond_later(response))
            return
        if response.idle:
            self.start_idling()  # before "+ idling" goes out: no change may slip between
        self.send_lines(response.lines)
        self.after(response)

    def after(self, response: Response) -> None:
        if response.close:
            self.hang_up()
        elif response.idle and self not in self.server.idlers:
            self.start_idling()

    async def respond_later(self, response: Response) -> None:
        """The answers that wait: a wrong password, STARTTLS, and streamed FETCHes."""
        try:
            if response.failed_login and self.server.settings.auth_failure_delay > 0:
                await asyncio.sleep(self.server.settings.auth_failure_delay)
            if isinstance(response.lines, list):
                self.send_lines(response.lines)
            else:
                await self.stream(response.lines)
            if response.start_tls and self.transport is not None:
                await self.start_tls()
            self.after(response)
        except (ConnectionError, ssl.SSLError, OSError):
            self.hang_up()
            return
        self.waiting = False
        if self.writable.is_set():
            self.resume_input()
            self.process()

    def resume_input(self) -> None:
        if self.paused_reading and self.transport is not None:
            self.paused_reading = False
            self.transport.resume_reading()

    async def stream(self, lines: Iterable[bytes]) -> None:
        """Send a lazy response in pieces; wait while the client's window is full."""
        batch: list[bytes] = []
        size = 0
        for line in lines:
            batch.append(line)
            size += len(line)
            if size >= CHUNK:
                self.send_lines(batch)
                batch, size = [], 0
                await self.writable.wait()
                await asyncio.sleep(0)  # let the other clients in
                if self.transport is None:
                    return
        self.send_lines(batch)

    # -- IDLE -----------------------------------------------------------------------------

    def start_idling(self) -> None:
        self.server.idlers.add(self)
        self.idle_timer = self.loop.call_later(IDLE_POLL, self.poll)

    def stop_idling(self) -> None:
        self.server.idlers.discard(self)
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    def poll(self) -> None:
        if self in self.server.idlers:
            self.push_updates()
            self.idle_timer = self.loop.call_later(IDLE_POLL, self.poll)

    def push_updates(self) -> None:
        """RFC 2177: while idling, send the mailbox's news as soon as there are any."""
        if self.transport is None or not self.session.idling:
            return
        lines = self.session.updates()
        if lines:
            self.send_lines(lines)

    # -- the transcript ------------------------------------------------------------------

    @staticmethod
    def verb(line: bytes) -> str | None:
        """The command name of a command line ("FETCH", "UID FETCH"), for the transcript."""
        words = line.split(b" ", 3)
        if len(words) < 2 or command_tag(words[0]) is None:
            return None  # no valid tag: not a command
        name = words[1].upper()
        if name == b"UID" and len(words) > 2:
            name += b" " + words[2].upper().split(b"\r")[0]
        text = name.decode("ascii", "replace")
        return text if text.replace(" ", "").isalpha() else None

    def record_client(
        self, raw: bytes, command: str | None = None, *, secret: bool = False, extra: int = 0
    ) -> None:
        text = decode_line(raw)
        if self.server.settings.mask_secrets:
            if secret:
                text = "********"
            elif command in ("LOGIN", "AUTHENTICATE"):
                text = _masked(text, command)
        if extra:
            text = f"{clip(text)}… [{extra} more bytes]"
        self.transcript.client(text, command)

    def record_literal(self, data: bytes) -> None:
        if self.mask_literal:
            self.transcript.client(f"******** [{len(data)}-octet literal]")
            return
        lines = data.split(b"\n")  # every line of the literal, as it crossed the wire
        if len(lines) > 1 and lines[-1] == b"":
            lines.pop()  # the literal ended with its line's CRLF: no line follows inside it
        for line in lines:
            self.transcript.client(decode_line(line))

    # -- the write point -----------------------------------------------------------------

    def send_lines(self, lines: Iterable[bytes]) -> None:
        lines = list(lines)
        if not lines or self.transport is None:
            return
        data = b"\r\n".join(lines) + b"\r\n"
        self.record_server(lines)
        self.transport.write(data)

    def record_server(self, lines: list[bytes]) -> None:
        """Each response line, literal lines included; the status word in ``code``."""
        data: list[str] = []
        for line in lines:
            code = _status(line)
            if code is None and b"\r\n" not in line:
                data.append(line.decode("utf-8", "backslashreplace"))
                continue
            if data:
                self.transcript.reply(data, None)
                data = []
            # A line with a literal inside: IMAP lines end with CRLF (a bare LF or CR
            # inside a literal is data), so the transcript splits there only.
            self.transcript.reply(line.decode("utf-8", "backslashreplace").split("\r\n"), code)
        if data:
            self.transcript.reply(data, None)

    def pause_writing(self) -> None:
        self.writable.clear()  # the client reads slowly: a stream waits until it catches up

    def resume_writing(self) -> None:
        self.writable.set()
        if not self.waiting:
            self.resume_input()
            self.process()

    async def start_tls(self) -> None:
        """RFC 3501 §6.2.1: the TLS handshake right after "OK Begin TLS negotiation"."""
        assert self.server.tls_context is not None and self.transport is not None
        # Bytes sent after STARTTLS but before the handshake were not protected by TLS
        # (a man in the middle could have injected them): discard them, visibly.
        for line in bytes(self.buffer).splitlines():
            self.transcript.client(f"{decode_line(line)} [discarded: sent before TLS]")
        self.buffer.clear()
        self.transport = await self.loop.start_tls(
            self.transport, self, self.server.tls_context, server_side=True
        )
        self.session.tls_started()


def _status(line: bytes) -> str | None:
    """The status word of a status response (``a1 OK``, ``* BYE``), ``+``, or None."""
    if line.startswith(b"+"):
        return "+"
    words = line.split(b" ", 2)
    if len(words) >= 2 and words[1] in (b"OK", b"NO", b"BAD", b"BYE", b"PREAUTH"):
        return words[1].decode()
    return None


def _masked(text: str, command: str) -> str:
    """``a1 LOGIN alice ********``; ``a1 AUTHENTICATE PLAIN ********``."""
    words = text.split(" ")
    if len(words) <= 3:  # nothing secret on this line (it may announce a literal)
        return text
    return " ".join(words[:3]) + " ********"
