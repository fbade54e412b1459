"""The lab's SMTP servers: the MSA (submission) and the MX (inbound), on aiosmtpd.

Role
    Each lab domain runs two SMTP servers, as a real provider does:

    * the **MSA** (Message Submission Agent, RFC 6409) where the domain's own
      people submit mail. It requires AUTH (RFC 4954: PLAIN and LOGIN), accepts
      any recipient, adds a ``Received:`` header and puts the message in the
      relay queue (``relay.py``) before it answers 250.
    * the **MX** (the domain's inbound MTA, RFC 5321). It takes mail from other
      servers without AUTH, but only for its own existing accounts: it is never
      an open relay. It adds ``Received:``, ``Return-Path:`` and ``Delivered-To:``
      and hands the message to the store (the MDA), fsynced, before its 250.

    The protocol itself (EHLO, MAIL, RCPT, DATA, …: one ``smtp_<VERB>`` method per
    verb) is aiosmtpd's. :class:`LabSMTP` adds what the lab needs at its single
    read point (``data_received``) and single write point (``push``): the
    transcript, enhanced status codes (RFC 2034/3463), injected faults, and a
    short delay after a wrong password. Policy lives in two handlers with
    aiosmtpd's documented hooks (``handle_MAIL``, ``handle_RCPT``, ``handle_DATA``).

Extensions advertised: SIZE (RFC 1870), 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531),
PIPELINING (RFC 2920), ENHANCEDSTATUSCODES (RFC 2034), STARTTLS (RFC 3207), and on
the MSA AUTH PLAIN LOGIN (RFC 4954).

This module must not import ipywidgets or the lab; it knows the transcript, the
faults registry and (through a callable) the store and the relay queue.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import re
import secrets
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid

from aiosmtpd.smtp import (
    SMTP,
    AuthResult,
    Envelope,
    LoginPassword,
    Session,
    TLSSetupException,
    syntax,
)

from .listener import Listener
from .relay import new_queue_id
from .transcript import LineSplitter, SessionLog, Transcript

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "InboundHandler",
    "LabSMTP",
    "SMTPServer",
    "SMTPSettings",
    "SubmissionHandler",
    "received_header",
    "relay_refusal",
]

log = logging.getLogger(__name__)

# aiosmtpd logs each connection and each unknown command at INFO/WARNING on
# "mail.log"; the transcript already shows students all of that.
logging.getLogger("mail.log").addHandler(logging.NullHandler())

#: SIZE advertised in EHLO (RFC 1870); larger messages get 552.
DEFAULT_MAX_MESSAGE_SIZE = 10 * 1024 * 1024
#: RFC 5321 §4.5.3.1.8: a server must accept at least 100 recipients.
MAX_RECIPIENTS = 100
#: Seconds to wait before answering 535 to a wrong password (slows guessing).
AUTH_FAILURE_DELAY = 0.5
#: RFC 5321 §4.5.3.2.7: a server should wait at least 5 minutes for the next command.
IDLE_TIMEOUT = 300.0

#: Enhanced status codes (RFC 3463) for aiosmtpd's replies that carry none.
#: RFC 2034 §3: once ENHANCEDSTATUSCODES is advertised, every 2xx/4xx/5xx reply
#: except the greeting and the EHLO/HELO reply carries one.
DEFAULT_ENHANCED_CODES = {
    "220": "2.0.0",  # STARTTLS: ready to start TLS
    "221": "2.0.0",
    "235": "2.7.0",
    "250": "2.0.0",
    "251": "2.1.5",
    "252": "2.5.0",
    "421": "4.3.0",
    "450": "4.2.0",
    "451": "4.3.0",
    "452": "4.3.1",
    "454": "4.7.0",
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "535": "5.7.8",
    "550": "5.0.0",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.0.0",
    "555": "5.5.4",
}
#: Replies the client waits for before it may send more: never held back.
_FLUSH_NOW = frozenset({"220", "221", "334", "354", "421"})
_HAS_ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}(?: |$)")
_REPLY = re.compile(r"^[2-5]\d\d(?:[ -].*)?$")


@dataclass(frozen=True)
class SMTPSettings:
    """Knobs shared by a lab's SMTP servers."""

    require_tls: bool = False
    mask_secrets: bool = False
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    auth_failure_delay: float = AUTH_FAILURE_DELAY
    idle_timeout: float = IDLE_TIMEOUT


class _Reading(enum.Enum):
    """What the next client line is, for the transcript's ``command`` column."""

    COMMAND = "command"  # a verb and its arguments
    DATA = "data"  # message content, after 354, until the lone dot
    AUTH = "auth"  # a SASL response, after 334 (RFC 4954)


class LabSMTP(SMTP):
    """aiosmtpd's SMTP protocol plus the lab's read and write points (one per connection)."""

    # RFC 4954 does not fix these texts; "Username:" / "Password:" is what the
    # world sends (and what a student decodes from the transcript).
    AuthLoginUsernameChallenge = "Username:"
    AuthLoginPasswordChallenge = "Password:"

    def __init__(self, server: SMTPServer) -> None:
        settings = server.settings
        is_msa = server.role == "msa"
        super().__init__(
            server.handler,
            hostname=server.name,
            ident="ESMTP mailkit-edu",
            data_size_limit=settings.max_message_size,
            enable_SMTPUTF8=True,
            tls_context=server.tls_context,
            timeout=settings.idle_timeout,
            # The MSA's "AUTH first" rule is SubmissionHandler.handle_MAIL's
            # (aiosmtpd's own auth_required warns when TLS is not also required,
            # which is the lab's deliberate teaching default on 127.0.0.1).
            auth_required=False,
            auth_require_tls=settings.require_tls,
            authenticator=server.handler.authenticate if is_msa else None,
            loop=server.loop,
        )
        self.server = server
        self._log: SessionLog | None = None
        self._rx = LineSplitter()
        self._reading = _Reading.COMMAND
        self._greeted = False
        self._in_helo = False
        self._unsent: list[str] = []
        self._smtp_methods = _VerbTable(self._smtp_methods, self)

    # -- cheaper connections ---------------------------------------------------

    def __dir__(self) -> list[str]:
        """aiosmtpd builds its verb and AUTH tables from ``dir(self)`` and
        ``inspect.getmembers(self)`` on every connection; listing every attribute
        cost a third of a millisecond. Give it just the names it looks for."""
        return _protocol_names(type(self))

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """Parse ``<local@domain> params``. A plain address (the usual case) is read
        with one regular expression; anything else goes to aiosmtpd's full RFC 5322
        parser, which is slower."""
        match = _SIMPLE_PATH.match(arg)
        if match is not None:
            return match["address"], match["rest"]
        return super()._getaddr(arg)

    # -- the read point -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._log is None:  # the first call; STARTTLS calls it again
            self._log = self.server.transcript.open_session(self.server.server_id)
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.server.connections.add(self)
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        for line in self._rx.feed(data):
            self._record_client_line(line)
        super().data_received(data)

    def connection_lost(self, error: Exception | None) -> None:
        rest = self._rx.flush()
        if rest is not None:
            self._record_client_line(rest)
        self.server.connections.discard(self)
        super().connection_lost(error)

    def _timeout_cb(self) -> None:
        # RFC 5321 §4.5.3.2: a server may close an idle connection; say so first
        # (as Postfix does), so the transcript shows why the connection ended.
        if self.transport is not None and self._log is not None:
            line = "421 4.4.2 Idle for too long; closing the connection"
            self._log.server(line, "421")
            self.transport.write(line.encode() + b"\r\n")
        super()._timeout_cb()

    def _record_client_line(self, line: str) -> None:
        assert self._log is not None
        reading = self._reading
        if reading is _Reading.DATA:
            if line == ".":
                self._reading = _Reading.COMMAND
            self._log.client(line)
        elif reading is _Reading.AUTH:
            self._reading = _Reading.COMMAND
            self._log.client("********" if self.server.settings.mask_secrets else line)
        else:
            verb, _, rest = line.partition(" ")
            verb = verb.upper()
            command = verb if verb.isascii() and verb.isalpha() else None
            if command == "AUTH" and self.server.settings.mask_secrets:
                mechanism, _, initial = rest.partition(" ")
                if initial:
                    line = f"{line.partition(' ')[0]} {mechanism} ********"
            self._log.client(line, command)

    # -- the write point ------------------------------------------------------

    async def push(self, status: str | bytes) -> None:
        line = status if isinstance(status, str) else status.decode("utf-8", "replace")
        if not self._greeted:
            self._greeted = True
            injected = self.server.faults.take("CONNECT")
            if injected is not None:
                await self._send(injected)
                if injected[:1] in ("4", "5"):
                    self.hang_up()
                return
        if self.session is not None and self.session.extended_smtp and not self._in_helo:
            line = with_enhanced_code(line)
        if line.startswith("535") and self.server.settings.auth_failure_delay > 0:
            await asyncio.sleep(self.server.settings.auth_failure_delay)
        await self._send(line)

    async def _send(self, line: str) -> None:
        assert self._log is not None
        code = line[:3] if _REPLY.match(line) else None
        if code == "354":
            self._reading = _Reading.DATA
        elif code == "334":
            self._reading = _Reading.AUTH
        self._log.server(line, code)
        self._unsent.append(line)
        if code is not None and line[3:4] == "-":
            return  # a line of a multi-line reply (RFC 5321 §4.2.1): goes with the last one
        if code not in _FLUSH_NOW and self._pipelined_input():
            return  # RFC 2920 §3.2: answer a group of pipelined commands in one write
        data = "\r\n".join(self._unsent).encode("utf-8") + b"\r\n"
        self._unsent.clear()
        if self.transport is not None:
            self._writer.write(data)
            await self._writer.drain()

    def _pipelined_input(self) -> bool:
        """True when the client has already sent its next command (PIPELINING)."""
        return b"\n" in self._reader._buffer  # aiosmtpd reads the same private buffer

    def hang_up(self) -> None:
        """Close the connection (a 421, or the lab stopping this server)."""
        if self.transport is not None:
            self.transport.close()

    # -- verbs the lab changes --------------------------------------------------

    async def answer_injected(self, reply: str) -> None:
        """Send a reply injected with ``lab.inject`` instead of running the verb."""
        await self.push(reply)
        if reply.startswith("421"):  # RFC 5321 §3.8: 421 closes the channel
            self.hang_up()

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        """EHLO (RFC 5321 §4.1.1.1): greet, reset, and list the extensions we offer."""
        if not hostname:
            await self.push("501 5.5.4 Syntax: EHLO hostname")
            return
        self._set_rset_state()
        assert self.session is not None
        self.session.extended_smtp = True
        self.session.host_name = hostname
        lines = [self.hostname]
        if self.data_size_limit:
            lines.append(f"SIZE {self.data_size_limit}")  # RFC 1870
        lines.append("8BITMIME")  # RFC 6152
        lines.append("SMTPUTF8")  # RFC 6531
        # RFC 5321 §4.5.3.1.4 allows 512 octets per command line; each MAIL parameter
        # an extension adds may lengthen it (RFC 1870 §3: 26 for SIZE; RFC 6531: 10).
        self.command_size_limits["MAIL"] = self.command_size_limit + 26 + 10
        lines.append("PIPELINING")  # RFC 2920
        lines.append("ENHANCEDSTATUSCODES")  # RFC 2034
        if self.tls_context and not self._tls_protocol:
            lines.append("STARTTLS")  # RFC 3207
        if self.server.role == "msa" and (not self._auth_require_tls or self._tls_protocol):
            lines.append("AUTH " + " ".join(sorted(self._auth_methods)))  # RFC 4954
        lines.append("HELP")
        self._in_helo = True
        try:
            for line in lines[:-1]:
                await self.push(f"250-{line}")
            await self.push(f"250 {lines[-1]}")
        finally:
            self._in_helo = False

    @syntax("HELP [command]")
    async def smtp_HELP(self, arg: str) -> None:
        self._smtp_methods.browsing = True  # looking a verb up is not running it
        try:
            await super().smtp_HELP(arg)
        finally:
            self._smtp_methods.browsing = False

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        self._in_helo = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._in_helo = False

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        """STARTTLS (RFC 3207): once per connection; a second one is refused."""
        if self._tls_protocol is not None:
            await self.push("503 5.5.1 TLS is already active")
            return
        await super().smtp_STARTTLS(arg)

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        """AUTH (RFC 4954). The MX offers none; with ``require_tls`` the MSA wants
        STARTTLS first and says so with 530 (RFC 3207 §4)."""
        if self.server.role != "msa":
            await self.push("503 5.5.1 AUTH is not offered here: this is an MX; submit via the MSA")
            return
        if self.server.settings.require_tls and self._tls_protocol is None:
            if await self.check_helo_needed("EHLO"):
                return
            await self.push("530 5.7.0 Must issue a STARTTLS command first")
            return
        await super().smtp_AUTH(arg)

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        """RCPT (RFC 5321 §4.1.1.3). The MX screens the raw path for relay tricks
        before aiosmtpd's parser (which would quietly drop a source route)."""
        if self.server.role == "mx" and arg and self.envelope and self.envelope.mail_from:
            refusal = relay_refusal(arg, self.server.domain)
            if refusal is not None:
                await self.push(refusal)
                return
        await super().smtp_RCPT(arg)


@functools.cache
def _protocol_names(cls: type) -> list[str]:
    return sorted(n for n in dir(cls) if n.startswith(("smtp_", "auth_", "handle_")))


class _VerbTable(dict):
    """aiosmtpd's verb table (``{"MAIL": smtp_MAIL, ...}``) with the lab's faults.

    aiosmtpd finds each command's method with ``self._smtp_methods.get(verb)``.
    When ``lab.inject`` has queued a reply for that verb, this table hands back a
    stand-in that sends the injected reply instead; otherwise the real method.
    """

    def __init__(self, methods: dict, protocol: LabSMTP) -> None:
        super().__init__(methods)
        self.protocol = protocol
        self.browsing = False  # True while HELP looks verbs up without running them

    def get(self, verb: str, default=None):
        method = super().get(verb, default)
        if method is None or self.browsing:
            return method
        injected = self.protocol.server.faults.take(verb)
        if injected is None:
            return method
        return functools.partial(_injected, self.protocol, injected)


async def _injected(protocol: LabSMTP, reply: str, arg: str | None) -> None:
    await protocol.answer_injected(reply)


#: ``<local@domain>`` with a dot-atom local part (RFC 5321 §4.1.2), then parameters.
_SIMPLE_PATH = re.compile(
    r"^\s*<(?P<address>[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)>"
    r"\s*(?P<rest>.*)$",
    re.DOTALL,
)


def with_enhanced_code(line: str) -> str:
    """Insert an RFC 3463 status code into a reply that lacks one (2xx/4xx/5xx only)."""
    code = line[:3]
    enhanced = DEFAULT_ENHANCED_CODES.get(code)
    if enhanced is None or _HAS_ENHANCED.match(line) or not _REPLY.match(line):
        return line
    if len(line) == 3:
        return f"{code} {enhanced}"
    return f"{line[:4]}{enhanced} {line[4:]}"


# -- relay policy: what the MX accepts ------------------------------------------

_PATH = re.compile(r"^\s*TO:\s*<(?P<path>[^>]*)>", re.IGNORECASE)


def relay_refusal(arg: str, domain: str) -> str | None:
    """Why the MX of ``domain`` refuses this ``RCPT TO:`` argument, or None.

    An MX delivers only to its own domain (RFC 5321 §3.6, RFC 5321 §7.1 on open
    relays). Old tricks that once made servers relay, each refused here:

    * source routes ``<@mx.north.test:eve@elsewhere.test>`` (RFC 5321 §4.1.1.3,
      Appendix C)
    * the ``%``-hack ``<eve%elsewhere.test@north.test>``
    * UUCP bang paths ``<elsewhere.test!eve@north.test>``
    * quoted local parts hiding an ``@`` ``<"eve@elsewhere.test"@north.test>``
    * a trailing dot ``<alice@north.test.>`` and address literals ``<alice@[127.0.0.1]>``
    """
    match = _PATH.match(arg)
    if match is None:
        return None  # not a path in angle brackets: let the parser answer 501/553
    path = match["path"].strip()
    denied = "550 5.7.1 Relaying denied: "
    if path.startswith("@"):
        return denied + "source routes are not accepted (RFC 5321 §4.1.1.3)"
    local, at, host = path.rpartition("@")
    if not at:
        return None  # e.g. <postmaster> alone: the parser decides
    if local.startswith('"') or "@" in local:
        return denied + "quoted local parts holding '@' are not accepted"
    if "%" in local:
        return denied + "the %-hack is not accepted"
    if "!" in local:
        return denied + "UUCP bang paths are not accepted"
    if host.endswith("."):
        return denied + "a trailing dot in the domain is not accepted"
    if host.startswith("["):
        return denied + "address literals are not accepted"
    if host.lower() != domain:
        return denied + f"this MX only accepts mail for @{domain}"
    return None


# -- Received: and friends --------------------------------------------------------


def received_header(
    *,
    helo: str | None,
    peer: str,
    by: str,
    protocol: str,
    queue_id: str,
    recipient: str | None,
    when: float | None = None,
) -> str:
    """A ``Received:`` trace header (RFC 5321 §4.4), folded, ending in CRLF.

    ``protocol`` is ESMTP, ESMTPS (TLS), ESMTPA (AUTH) or ESMTPSA (both), per
    RFC 3848. ``for <recipient>`` is only written for a single recipient, so a
    Bcc'd address never shows up in another recipient's copy.
    """
    stamp = format_datetime(datetime.fromtimestamp(when or time.time(), UTC))
    # "(name [address])": the name the address resolves back to. The lab does no
    # reverse DNS; every peer is on loopback, which is "localhost".
    lines = [
        f"Received: from {helo or 'unknown'} (localhost [{peer}])",
        f"\tby {by} (mailkit-edu) with {protocol} id {queue_id}",
    ]
    if recipient:
        lines.append(f"\tfor <{recipient}>; {stamp}")
    else:
        lines[-1] += f"; {stamp}"
    return "\r\n".join(lines) + "\r\n"


def with_protocol(session: Session) -> str:
    """RFC 3848's ``with`` keyword for a session."""
    if not session.extended_smtp:
        return "SMTP"
    return "ESMTP" + ("S" if session.ssl else "") + ("A" if session.authenticated else "")


def _peer_ip(session: Session) -> str:
    peer = session.peer
    return peer[0] if isinstance(peer, tuple) else str(peer)


def _null_to_empty(address: str | None) -> str:
    return "" if address in (None, "<>") else address


def _valid_domain(domain: str) -> bool:
    """A host name: dot-separated labels of letters (any script), digits and inner hyphens."""
    return all(
        0 < len(label) <= 63
        and label[0] != "-"
        and label[-1] != "-"
        and all(c.isalnum() or c == "-" for c in label)
        for label in domain.split(".")
    )


def _is_utf8(text: str) -> bool:
    """False for text that came off the wire as invalid UTF-8 (surrogate escapes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _accept_recipient(envelope: Envelope, address: str, options: list) -> str:
    envelope.rcpt_tos.append(address)
    envelope.rcpt_options.extend(options)
    return "250 2.1.5 Recipient OK"


def _header_block(content: bytes) -> bytes:
    end = content.find(b"\r\n\r\n")
    return content if end < 0 else content[: end + 2]


def _has_header(block: bytes, name: bytes) -> bool:
    return re.search(rb"(?im)^" + re.escape(name) + rb"\s*:", block) is not None


# -- the handlers -------------------------------------------------------------------


class _LabHandler:
    """What both SMTP servers share: the trace header and the error policy."""

    hostname: str

    def received(self, session: Session, queue_id: str, recipient: str | None) -> str:
        """This hop's ``Received:`` line for a message that came in on ``session``."""
        return received_header(
            helo=session.host_name,
            peer=_peer_ip(session),
            by=self.hostname,
            protocol=with_protocol(session),
            queue_id=queue_id,
            recipient=recipient,
        )

    def __dir__(self) -> list[str]:
        # aiosmtpd looks for handle_* and auth_* on every connection (see LabSMTP.__dir__).
        return _protocol_names(type(self))

    async def handle_exception(self, error: Exception) -> str:
        # Never put Python's words on the wire: log the traceback here, send a
        # temporary error so a well-behaved client tries again later.
        if isinstance(error, TLSSetupException):  # a client that fails its TLS handshake
            log.info("TLS handshake failed: %s", error.__cause__ or error)
        else:
            log.error("unexpected error in an SMTP session", exc_info=error)
        return "451 4.3.0 Internal server error; please try again later"


class SubmissionHandler(_LabHandler):
    """The MSA's policy (RFC 6409): authenticated local users submit to anyone.

    ``enqueue(queue_id, mail_from, recipients, content)`` must have the message on
    disk when it returns; only then does the MSA answer 250.
    """

    def __init__(
        self,
        hostname: str,
        passwords: Mapping[str, str],
        enqueue: Callable[[str, str, list[str], bytes], Awaitable[None]],
    ) -> None:
        self.hostname = hostname
        self.passwords = passwords
        self.enqueue = enqueue

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data
    ) -> AuthResult:
        """Check a login (full address) and password from AUTH PLAIN or LOGIN."""
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace").strip().lower()
        password = auth_data.password.decode("utf-8", "replace")
        expected = self.passwords.get(login)
        if expected is not None and secrets.compare_digest(expected, password):
            return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list
    ) -> str:
        if not session.authenticated:
            return "530 5.7.0 Authentication required"
        user = session.auth_data
        sender = _null_to_empty(address)
        if sender.lower() != user:
            return f"553 5.7.1 Sender <{sender}> is not yours: you are logged in as {user}"
        envelope.mail_from = sender
        envelope.mail_options.extend(options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list
    ) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        if address.rpartition("@")[2].startswith("["):
            return "550 5.1.2 Address literals are not delivered by the lab"
        local, at, domain = address.rpartition("@")
        if not at or not local or not _valid_domain(domain):
            return "553 5.1.3 Give the recipient's full address, local@domain"
        if not _is_utf8(address):
            return "553 5.6.7 The address is not valid UTF-8 (RFC 6531)"
        return _accept_recipient(envelope, address, options)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        queue_id = new_queue_id()
        content = envelope.original_content or b""
        added = b""
        # RFC 6409 §8.2/8.3: a submission server may add a missing Date or Message-ID.
        block = _header_block(content)
        if not _has_header(block, b"Date"):
            added += f"Date: {format_datetime(datetime.now(UTC))}\r\n".encode()
        if not _has_header(block, b"Message-ID"):
            added += f"Message-ID: {make_msgid(domain=self.hostname)}\r\n".encode()
        only = envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else None
        received = self.received(session, queue_id, only)
        message = received.encode() + added + content
        await self.enqueue(queue_id, envelope.mail_from or "", list(envelope.rcpt_tos), message)
        return f"250 2.0.0 OK: queued as {queue_id}"


class InboundHandler(_LabHandler):
    """The MX's policy: mail for this domain's existing accounts only, then the MDA.

    ``deliver(address, message)`` stores one copy (fsynced) and returns when it is
    on disk; only then does the MX answer 250.
    """

    def __init__(
        self,
        hostname: str,
        domain: str,
        accounts: Callable[[], set[str]],
        deliver: Callable[[str, bytes], Awaitable[None]],
    ) -> None:
        self.hostname = hostname
        self.domain = domain
        self.accounts = accounts
        self.deliver = deliver

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list
    ) -> str:
        envelope.mail_from = _null_to_empty(address) or "<>"
        envelope.mail_options.extend(options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list
    ) -> str:
        # relay_refusal() already screened the raw path in LabSMTP.smtp_RCPT.
        address = address.lower()
        if address.rpartition("@")[2] != self.domain:
            return f"550 5.7.1 Relaying denied: this MX only accepts mail for @{self.domain}"
        if address not in self.accounts():
            return f"550 5.1.1 <{address}>: no such user here"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        return _accept_recipient(envelope, address, options)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        queue_id = new_queue_id()
        content = envelope.original_content or b""
        sender = _null_to_empty(envelope.mail_from)
        copies = []
        for rcpt in envelope.rcpt_tos:
            received = self.received(session, queue_id, rcpt)
            # The MDA's own trace lines (RFC 5321 §4.4: Return-Path at final delivery).
            top = f"Return-Path: <{sender}>\r\nDelivered-To: {rcpt}\r\n{received}"
            copies.append(self.deliver(rcpt, top.encode() + content))
        await asyncio.gather(*copies)
        n = len(copies)
        return f"250 2.0.0 OK: delivered to {n} mailbox{'es' if n > 1 else ''} as {queue_id}"


# -- the listener ---------------------------------------------------------------------


class SMTPServer(Listener):
    """One SMTP listener of the lab (an MSA or an MX) on the lab's loop.

    ``start()`` binds 127.0.0.1 (port 0 lets the OS choose); ``stop()`` closes the
    listener and every open connection. ``start()`` after ``stop()`` binds the
    same port again, so the DNS and the relay's port table stay true.
    """

    protocol = "SMTP"

    def __init__(
        self,
        *,
        name: str,
        domain: str,
        role: str,
        handler: SubmissionHandler | InboundHandler,
        transcript: Transcript,
        settings: SMTPSettings,
        tls_context: ssl.SSLContext | None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if role not in ("msa", "mx"):
            raise ValueError(f"an SMTP server is an 'msa' or an 'mx', not {role!r}")
        self.role = role
        self.handler = handler
        self.settings = settings
        super().__init__(
            name=name,
            domain=domain,
            transcript=transcript,
            tls_context=tls_context,
            host=host,
            port=port,
        )

    def new_connection(self) -> LabSMTP:
        return LabSMTP(self)
