"""The MUA: what Thunderbird does — write and send a message, check for mail, read it.

Role
    A Mail User Agent is the program a person uses. It never delivers mail itself:
    it *submits* each message to its provider's MSA and *reads* mail from a POP3 or
    IMAP server. This module is such a client, in plain Python, for the widgets of
    the course (Compose, Inbox) and for notebook cells::

        from mailkit_edu import mua

        result = mua.send(lab, "alice@north.test", "alice-secret",
                          to="carol@south.test", subject="Hi", body="Hello Carol!")
        result.ok, result.code, result.text          # True, 250, '2.0.0 OK: queued as …'

        with mua.IMAPMailbox(lab, "carol@south.test", "carol-secret") as box:
            for summary in box.check().messages:
                print(summary.uid, summary.sender, summary.subject, summary.flags)

    The first argument (the *target*) may be a running lab, a host name with ``port=``
    (any standards-compliant server, not only the lab's), or an :class:`Endpoint`. The
    only lab-specific code is :func:`endpoint`, which reads ports and the lab CA from a
    lab without importing the lab module (:class:`LabLike`: ``.port(name)`` and
    ``.ca_file``).

The standards it follows
    * RFC 5322 (the message format), RFC 2045 (MIME), RFC 2047 (non-ASCII header text
      as encoded words), RFC 2231 (non-ASCII attachment names): :func:`build_message`,
      :func:`message_parts`.
    * RFC 6409 (message submission), RFC 3207 (STARTTLS), RFC 4954 (SMTP AUTH):
      :func:`send`, with :mod:`smtplib`.
    * RFC 1939 (POP3), RFC 2449 (CAPA), RFC 2595 (STLS): :class:`POP3Mailbox`, with
      :mod:`poplib`.
    * RFC 3501 (IMAP4rev1), RFC 2177 (IDLE), RFC 6851 (MOVE), RFC 4315 (UIDPLUS):
      :class:`IMAPMailbox` with :mod:`imaplib`; IDLE (which imaplib lacks before
      Python 3.14) on a socket of its own (:meth:`IMAPMailbox.wait`) or with asyncio
      streams (:func:`idle_wait`).

    Every STARTTLS checks the server's certificate, for the server's *name* (e.g.
    ``msa.north.test``), not the address we connected to (``127.0.0.1``) — as
    ``curl --resolve`` does.

Errors (drawn as a tree, as httpx does)::

    MUAError (ValueError)        bad input, found before connecting: a malformed
                                 address, a missing port, an unknown role
    MailServerError (RuntimeError)
                                 the server or the network failed (refused, timed
                                 out, TLS, wrong password, NO/BAD): plain words

    :func:`send` raises neither: it returns a :class:`SendResult`; the ``check``
    methods return a :class:`CheckResult` with ``error`` set.

This module knows only sockets and the stdlib clients: it must not import ipywidgets,
IPython or any other part of mailkit_edu (not even the lab).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.errors
import email.header
import email.message
import email.parser
import email.policy
import email.utils
import html.parser
import imaplib
import ipaddress
import itertools
import os
import poplib
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.headerregistry import Address
from typing import Any, Protocol, TypeVar

__all__ = [
    "Attachment",
    "CheckResult",
    "Endpoint",
    "IMAPMailbox",
    "LabLike",
    "MUAError",
    "MailServerError",
    "MessageSummary",
    "POP3Mailbox",
    "SendResult",
    "build_message",
    "endpoint",
    "idle_wait",
    "imap_utf7_decode",
    "imap_utf7_encode",
    "message_parts",
    "parse_addresses",
    "parse_message",
    "send",
    "tls_context",
]

#: The servers a MUA talks to, by role: submission, and the two ways of reading.
ROLES = ("msa", "pop3", "imap")
#: Seconds to wait for a server's reply before giving up.
DEFAULT_TIMEOUT = 10.0
#: RFC 2177 §3: a client should end IDLE and start it again within 29 minutes, because
#: servers may log out a client that says nothing for 30 minutes (RFC 3501 §5.4).
IDLE_RESTART = 29 * 60.0
#: Seconds to wait for a connection to close cleanly (TLS close_notify included).
CLOSE_TIMEOUT = 2.0
#: The headers an inbox list shows (fetched without the body: RFC 3501 §6.4.5).
SUMMARY_FIELDS = "FROM TO SUBJECT DATE"
#: Untagged IMAP responses that mean "the mailbox changed" (RFC 3501 §7.3.1, §7.4).
NEWS = (b"EXISTS", b"EXPUNGE", b"FETCH")


class MUAError(ValueError):
    """Bad input, found before connecting; the message says what, in plain words."""


class MailServerError(RuntimeError):
    """The server or the network failed; the message says what, in plain words."""


# -------------------------------------------------------------------- where the servers are


class LabLike(Protocol):
    """What :func:`endpoint` needs of a lab (``mailkit_edu.Lab`` has both). The MUA
    does not import the lab: it must work with any mail server."""

    def port(self, name: str) -> int:
        """The port of server ``name``, e.g. ``"msa.north.test"``."""
        ...

    @property
    def ca_file(self) -> str | os.PathLike[str]:
        """The CA certificate (PEM) that signed the servers' certificates."""
        ...


@dataclass(frozen=True)
class Endpoint:
    """Where one server listens, and the name its TLS certificate must carry."""

    host: str
    port: int
    #: The name checked against the server's certificate, e.g. ``"msa.north.test"``
    #: (None: ``host`` itself).
    server_hostname: str | None = None
    #: The CA certificate (PEM) to trust for STARTTLS, e.g. ``lab.ca_file``
    #: (None: the system's trusted CAs).
    ca_file: str | None = None

    @property
    def name(self) -> str:
        """How error messages name the server: ``msa.north.test`` or ``host:port``."""
        return self.server_hostname or f"{self.host}:{self.port}"


def endpoint(
    target: LabLike | str | Endpoint,
    role: str,
    address: str,
    port: int | None = None,
    *,
    server_hostname: str | None = None,
    ca_file: str | None = None,
) -> Endpoint:
    """The server of ``role`` (``"msa"``, ``"pop3"`` or ``"imap"``) that ``address`` uses.

    * ``target`` is a running lab: the lab's server ``<role>.<domain of address>`` on
      127.0.0.1, its certificate checked with the lab CA (``port`` overrides the port).
    * ``target`` is a host name or IP address: ``port`` is required; certificates are
      checked with the system's CAs unless ``ca_file`` is given, for the name
      ``server_hostname`` (default: the host).
    * ``target`` is an :class:`Endpoint`: itself (``port`` overrides its port).

    Raises :class:`MUAError` for an unknown role, a missing port, a malformed address
    or a domain the lab does not have.
    """
    if role not in ROLES:
        raise MUAError(f"the role must be one of {', '.join(ROLES)}, not {role!r}")
    if isinstance(target, Endpoint):
        return target if port is None else replace(target, port=port)
    if isinstance(target, str):
        host = target.strip()
        if not host:
            raise MUAError("give the server's host name or IP address")
        if port is None:
            raise MUAError(f"give the port of the {role.upper()} server at {host} (port=...)")
        return Endpoint(host, _check_port(port), server_hostname, ca_file)
    # A running lab (duck typing: mua must not import the lab).
    domain = _single_address(address).rpartition("@")[2].lower()
    name = f"{role}.{domain}"
    try:
        lab_port = target.port(name)
    except (LookupError, RuntimeError) as error:  # LabError is a RuntimeError
        raise MUAError(f"this lab has no server {name} ({error})") from error
    return Endpoint(
        "127.0.0.1",
        _check_port(lab_port if port is None else port),
        name,
        str(target.ca_file),
    )


def _check_port(port: int) -> int:
    """The port, if it is one (1 to 65535); MUAError otherwise."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise MUAError(f"a port is a number from 1 to 65535, not {port!r}")
    return port


class _NamedTLSContext(ssl.SSLContext):
    """A client TLS context that checks the certificate for one fixed server name.

    smtplib, poplib and imaplib pass the host they connected to (``127.0.0.1`` in the
    lab) as the name to check; this context checks ``expected_name`` instead.
    """

    expected_name: str | None = None

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        """Wrap ``sock``, checking the certificate for ``expected_name``."""
        if self.expected_name:
            kwargs["server_hostname"] = self.expected_name
        return super().wrap_socket(sock, *args, **kwargs)


def tls_context(where: Endpoint) -> ssl.SSLContext:
    """A TLS client context for ``where``: certificate and host name checked (TLS 1.2+)."""
    context = _NamedTLSContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificate and name
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if where.ca_file:
        context.load_verify_locations(cafile=where.ca_file)
    else:
        context.load_default_certs()
    context.expected_name = where.server_hostname or where.host
    return context


# --------------------------------------------------------------- addresses and messages

#: RFC 5322 §3.2.3 atext (and any non-ASCII character, RFC 6532), for dot-atoms.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]+"
_LETTER = r"[A-Za-z0-9\u0080-\U0010ffff]"
_LABEL = rf"{_LETTER}(?:(?:{_LETTER}|-)*{_LETTER})?"
_ADDR_SPEC = re.compile(
    rf"^(?P<local>{_ATOM}(?:\.{_ATOM})*)@(?P<domain>{_LABEL}(?:\.{_LABEL})*|\[[^\[\]\s]+\])$"
)
_NAME_ADDR = re.compile(r"^(?P<name>[^<>]*)<(?P<addr>[^<>]*)>$")


def _split_list(text: str) -> list[str]:
    """Split an address list at commas (or semicolons) outside quotes and ``<…>``."""
    pieces, current, quoted, angle, escaped = [], [], False, False, False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"' and not angle:
            quoted = not quoted
        elif char == "<" and not quoted:
            angle = True
        elif char == ">" and not quoted:
            angle = False
        elif char in ",;" and not quoted and not angle:
            pieces.append("".join(current))
            current = []
            continue
        current.append(char)
    pieces.append("".join(current))
    return [piece.strip() for piece in pieces]


def _mailbox(piece: str) -> Address:
    """One ``Name <local@domain>`` or ``local@domain``, checked (MUAError otherwise)."""
    match = _NAME_ADDR.match(piece)
    name, addr = (match["name"].strip(), match["addr"].strip()) if match else ("", piece)
    if name.startswith('"') and name.endswith('"') and len(name) >= 2:
        name = re.sub(r"\\(.)", r"\1", name[1:-1])
    if not _ADDR_SPEC.match(addr):
        hint = "separate addresses with commas; " if " " in addr.strip() else ""
        raise MUAError(
            f"{piece!r} is not an email address ({hint}expected local@domain, "
            "e.g. carol@south.test)"
        )
    local, _, domain = addr.rpartition("@")
    try:
        return Address(display_name=name, username=local, domain=domain)
    except (ValueError, TypeError) as error:
        raise MUAError(f"{piece!r} is not an email address ({error})") from None


def _mailboxes(value: str | Sequence[str]) -> list[Address]:
    """Addresses from text (``"a@x.test, B <b@y.test>"``) or a list of such texts."""
    texts = [value] if isinstance(value, str) else list(value)
    result = []
    for text in texts:
        if not isinstance(text, str):
            raise MUAError(f"an address is text, not {text!r}")
        result.extend(_mailbox(piece) for piece in _split_list(text) if piece)
    return result


def parse_addresses(text: str) -> list[str]:
    """The bare addresses in an address list, in order.

    ``"a@x.test, B <b@y.test>"`` gives ``["a@x.test", "b@y.test"]``. Commas (or
    semicolons) separate addresses; empty pieces (a trailing comma) are skipped.
    Raises :class:`MUAError` naming the first piece that is not an address.
    """
    return [mailbox.addr_spec for mailbox in _mailboxes(text)]


def _single_address(text: str) -> str:
    """Exactly one address (a sender, a login): MUAError otherwise."""
    found = parse_addresses(text)
    if len(found) != 1:
        raise MUAError(f"expected one email address, e.g. alice@north.test, not {text!r}")
    return found[0]


@dataclass(frozen=True)
class Attachment:
    """A file to attach: its name, its bytes and its MIME type (RFC 2045 §5)."""

    filename: str
    data: bytes
    content_type: str = "application/octet-stream"


def build_message(
    sender: str,
    to: Sequence[str],
    cc: Sequence[str] = (),
    subject: str = "",
    body: str = "",
    attachments: Sequence[Attachment] = (),
) -> email.message.EmailMessage:
    """The message a MUA writes (RFC 5322), ready to submit.

    Headers: From, To, Cc (each only when given), Subject, Date (now, local time with
    its offset) and Message-ID (``<…@the sender's domain>``). Non-ASCII text becomes
    RFC 2047 encoded words when the message is written out (``email.policy.default``).
    The body is ``text/plain; charset="utf-8"`` (quoted-printable when it is not
    ASCII, so it passes any server); with attachments the message is
    ``multipart/mixed``: the text first, then each file (base64, its name per
    RFC 2231). Bcc recipients are never written into the message: they are only
    given to the server as envelope recipients (:func:`send`).

    Raises :class:`MUAError` for a malformed address, a subject of more than one line
    or an attachment type that is not ``type/subtype``.
    """
    senders = _mailboxes(sender)
    if len(senders) != 1:
        raise MUAError(f"a message has one sender, e.g. alice@north.test, not {sender!r}")
    message = email.message.EmailMessage(policy=email.policy.default)
    message["From"] = senders
    for header, value in (("To", to), ("Cc", cc)):
        mailboxes = _mailboxes(value)
        if mailboxes:
            message[header] = mailboxes
    if "\r" in subject or "\n" in subject:
        raise MUAError("the subject must be one line")
    message["Subject"] = subject
    message["Date"] = email.utils.format_datetime(datetime.now().astimezone())
    message["Message-ID"] = email.utils.make_msgid(domain=senders[0].domain)
    cte = None if body.isascii() else "quoted-printable"
    message.set_content(body, subtype="plain", charset="utf-8", cte=cte)
    for attachment in attachments:
        maintype, slash, subtype = attachment.content_type.strip().lower().partition("/")
        if not slash or not maintype or not subtype or maintype == "multipart":
            raise MUAError(
                f"{attachment.content_type!r} is not a MIME type for a file "
                "(expected type/subtype, e.g. application/pdf)"
            )
        message.add_attachment(
            bytes(attachment.data), maintype=maintype, subtype=subtype, filename=attachment.filename
        )
    return message


def parse_message(raw: bytes) -> email.message.EmailMessage:
    """The message in ``raw`` (as stored or downloaded), parsed with ``email.policy.default``."""
    return email.parser.BytesParser(policy=email.policy.default).parsebytes(raw)


def message_parts(raw: bytes) -> dict[str, Any]:
    """What a reading pane shows of a message.

    ``{"headers": [(name, value), …]`` every header in order, decoded;
    ``"text": str`` the best text/plain part (or the text/html part without its tags);
    ``"attachments": [(filename, content_type, size), …]`` with the decoded size in
    bytes}``.
    """
    message = parse_message(raw)
    headers = [(name, _header_text(message, name, value)) for name, value in message.raw_items()]
    body = message.get_body(preferencelist=("plain", "html"))
    text = ""
    if body is not None:
        text = _part_text(body)
        if body.get_content_subtype() == "html":
            text = _text_from_html(text)
    attachments = []
    for part in message.walk():
        if part.is_multipart() or part is body:
            continue
        filename = part.get_filename()
        if filename is None and part.get_content_disposition() != "attachment":
            continue  # an alternative or inline text part, not a file
        data = part.get_payload(decode=True) or b""
        attachments.append((filename or "(no name)", part.get_content_type(), len(data)))
    return {"headers": headers, "text": text, "attachments": attachments}


def _header_text(message: email.message.EmailMessage, name: str, value: str) -> str:
    """A header's value as a person reads it (encoded words decoded, unfolded)."""
    try:
        return str(message.policy.header_fetch_parse(name, value))
    except Exception:  # a header the email package cannot parse: show it as written
        return _decode_words(value)


def _part_text(part: email.message.EmailMessage) -> str:
    """A text part's content as str with ``\n`` line ends, whatever its charset claims."""
    try:
        text = part.get_content()
    except (LookupError, UnicodeError, ValueError):  # unknown or lying charset
        text = (part.get_payload(decode=True) or b"").decode("utf-8", "replace")
    return text.replace("\r\n", "\n")  # stored mail has CRLF lines (RFC 5322 §2.1)


class _TextFromHTML(html.parser.HTMLParser):
    """The words of an HTML body: tags dropped, blocks on their own lines."""

    BLOCKS = frozenset({"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6"})

    def __init__(self) -> None:
        """Start with no text and outside any hidden element."""
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0  # inside <script> or <style>

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """An opening tag: a block starts a line; script and style hide text."""
        if tag in ("script", "style"):
            self.hidden += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        """A closing tag: a block ends its line; script and style end hiding."""
        if tag in ("script", "style"):
            self.hidden = max(0, self.hidden - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        """Text between tags: kept unless hidden."""
        if not self.hidden:
            self.parts.append(data)


def _text_from_html(markup: str) -> str:
    """The readable text of an HTML body: tags dropped, whitespace tidied."""
    parser = _TextFromHTML()
    parser.feed(markup)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _decode_words(value: str) -> str:
    """RFC 2047 encoded words to text; folding undone; junk shown as written."""
    value = re.sub(r"\r?\n[ \t]+", " ", value).strip()
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (LookupError, UnicodeError, ValueError, email.errors.HeaderParseError):
        return value


# ---------------------------------------------------------------- sending (submission)


@dataclass
class SendResult:
    """How a submission went: the server's last word, and plain words for a person."""

    ok: bool
    #: The final SMTP reply code: 250 on success; e.g. 530, 535, 550, 552; None if the
    #: server never answered.
    code: int | None
    #: That reply's text (e.g. ``"2.0.0 OK: queued as 4F2A…"``), or the plain-words error.
    text: str
    #: Recipients the server refused, with its replies. A partial success is ``ok=True``
    #: with some recipients here.
    refused: dict[str, tuple[int, str]]
    message_id: str | None
    #: Plain words when it failed (``ok=False``), else None.
    error: str | None


class _SubmissionClient(smtplib.SMTP):
    """smtplib's client, remembering the server's last reply (smtplib keeps only the
    EHLO reply, and ``send_message`` does not return DATA's ``250 … queued as …``)."""

    last_reply: tuple[int, bytes] = (-1, b"")

    def getreply(self) -> tuple[int, bytes]:
        """Read one reply (RFC 5321 §4.2) and remember it."""
        self.last_reply = super().getreply()
        return self.last_reply


def _reply_text(reply: bytes | str) -> str:
    """A server reply as one line of text (bytes decoded, line breaks joined)."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(text.split("\n")).strip()


def _ehlo_name(sock: socket.socket) -> str:
    """Our name for EHLO: our address as an address literal (RFC 5321 §4.1.3), as
    clients do that have no name in the DNS (and never asking the DNS for one)."""
    ip = ipaddress.ip_address(sock.getsockname()[0])
    return f"[IPv6:{ip}]" if ip.version == 6 else f"[{ip}]"


def send(
    target: LabLike | str | Endpoint,
    sender: str,
    password: str,
    to: Sequence[str] | str,
    cc: Sequence[str] | str = (),
    bcc: Sequence[str] | str = (),
    subject: str = "",
    body: str = "",
    attachments: Sequence[Attachment] = (),
    *,
    port: int | None = None,
    starttls: bool | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> SendResult:
    """Write a message and submit it through the sender's MSA (RFC 6409), as a MUA does.

    The session: connect; EHLO; STARTTLS (RFC 3207) when the server offers it
    (``starttls=None``), always (``True``: fail if not offered) or never (``False``),
    checking the certificate; EHLO again; AUTH with the sender's address and
    ``password`` (RFC 4954: PLAIN, else LOGIN; tried once); MAIL, one RCPT per
    recipient of To, Cc and Bcc, DATA (``smtplib.send_message``); QUIT.
    ``to``, ``cc`` and ``bcc`` are lists or texts like ``"a@x.test, B <b@y.test>"``.

    Never raises for bad addresses or for server and network trouble: the
    :class:`SendResult` says what happened, with ``error`` in plain words
    (connection refused, timeout, TLS failure, 530 STARTTLS needed, 535 wrong
    password, 550 recipient refused, 552 too big, …).
    """
    try:
        sender_address = _single_address(sender)
        recipients = [mailbox.addr_spec for value in (to, cc, bcc) for mailbox in _mailboxes(value)]
        if not recipients:
            raise MUAError("give at least one recipient (To, Cc or Bcc)")
        where = endpoint(target, "msa", sender_address, port)
        message = build_message(sender, to, cc, subject, body, attachments)
    except MUAError as error:
        return _failed(None, str(error))
    message_id = message["Message-ID"]
    client = _SubmissionClient(local_hostname="localhost", timeout=timeout)
    try:
        code, greeting = client.connect(where.host, where.port)
        if code != 220:  # RFC 5321 §3.1: 554 (or 421) means "no service here"
            return _failed(
                code,
                f"the server {where.name} refused the connection: {code} {_reply_text(greeting)}",
            )
        client.local_hostname = _ehlo_name(client.sock)
        client.ehlo()
        offered = client.has_extn("starttls")
        if starttls and not offered:
            return _failed(
                None,
                f"the server {where.name} does not offer STARTTLS, and starttls=True requires it",
            )
        if offered and starttls is not False:
            client.starttls(context=tls_context(where))
            client.ehlo()  # RFC 3207 §4.2: forget what we knew, ask again
        if not client.has_extn("auth"):
            return _no_auth(client, where)
        _authenticate(client, sender_address, password)
        refused = client.send_message(message, sender_address, recipients)
        code, reply = client.last_reply  # DATA's reply: 250 … queued as …
        return SendResult(
            ok=True,
            code=code,
            text=_reply_text(reply),
            refused={rcpt: (c, _reply_text(r)) for rcpt, (c, r) in refused.items()},
            message_id=message_id,
            error=None,
        )
    except (OSError, EOFError, UnicodeError) as error:  # smtplib's errors are OSErrors
        return _send_failure(error, client, where, timeout)
    finally:
        _quit_quietly(client)


def _authenticate(client: smtplib.SMTP, user: str, password: str) -> None:
    """AUTH once (RFC 4954), with PLAIN (RFC 4616: one line) or else LOGIN.

    ``smtplib``'s ``login()`` would try every mechanism in turn after a 535, so a
    wrong password would show as two failed logins (and wait out two penalties).
    """
    offered = client.esmtp_features.get("auth", "").upper().split()
    for mechanism in ("PLAIN", "LOGIN"):
        if mechanism in offered:
            client.user, client.password = user, password
            client.auth(mechanism, getattr(client, f"auth_{mechanism.lower()}"))
            return
    client.login(user, password)  # e.g. only CRAM-MD5: let smtplib choose


def _failed(code: int | None, error: str, **fields: Any) -> SendResult:
    """A SendResult for a failure: ``error`` (also the ``text``) in plain words."""
    values: dict[str, Any] = {"refused": {}, "message_id": None} | fields
    return SendResult(ok=False, code=code, text=error, error=error, **values)


def _no_auth(client: smtplib.SMTP, where: Endpoint) -> SendResult:
    """The server offers no AUTH. Ask it why, without giving the password: an
    ``AUTH PLAIN`` with no credentials gets e.g. ``530 Must issue a STARTTLS command
    first`` (RFC 3207 §4); a ``334`` (go on) is cancelled with ``*`` (RFC 4954 §4)."""
    code, reply = client.docmd("AUTH", "PLAIN")
    if code == 334:
        code, reply = client.docmd("*")
    text = f"{code} {_reply_text(reply)}"
    if code == 530:
        return _failed(code, f"the server {where.name} wants STARTTLS before login: {text}")
    return _failed(code, f"the server {where.name} offers no login (AUTH): {text}")


def _send_failure(
    error: Exception, client: _SubmissionClient, where: Endpoint, timeout: float
) -> SendResult:
    """Plain words for what went wrong during a submission."""
    server = f"the server {where.name}"
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        refused = {r: (c, _reply_text(t)) for r, (c, t) in error.recipients.items()}
        code = next(iter(refused.values()))[0] if refused else None
        listing = "; ".join(f"{r}: {c} {t}" for r, (c, t) in refused.items())
        return _failed(code, f"{server} refused every recipient: {listing}", refused=refused)
    if isinstance(error, smtplib.SMTPResponseException):
        code, text = error.smtp_code, f"{error.smtp_code} {_reply_text(error.smtp_error)}"
        if isinstance(error, smtplib.SMTPAuthenticationError) and code == 535:
            words = f"wrong password (or user name): {text}"
        elif code == 530:
            words = f"{server} wants STARTTLS or a login first: {text}"
        elif code == 552:
            limit = client.esmtp_features.get("size", "")
            words = f"the message is too big for {server}: {text}" + (
                f" (it takes at most {limit} bytes: its SIZE)" if limit.isdigit() else ""
            )
        elif isinstance(error, smtplib.SMTPSenderRefused):
            words = f"{server} refused the sender {error.sender}: {text}"
        elif isinstance(error, smtplib.SMTPDataError):
            words = f"{server} refused the message: {text}"
        else:
            words = f"{server} answered {text}"
        return _failed(code, words)
    if isinstance(error, smtplib.SMTPNotSupportedError):  # e.g. SMTPUTF8 (RFC 6531)
        return _failed(None, f"{server} cannot take this message: {error}")
    return _failed(None, _network_words(error, where, timeout))


def _quit_quietly(client: smtplib.SMTP) -> None:
    """QUIT if the connection is still up; close it either way."""
    try:
        if client.sock is not None:
            client.quit()
    except (OSError, smtplib.SMTPException):
        pass
    finally:
        client.close()


def _network_words(error: BaseException, where: Endpoint, timeout: float) -> str:
    """Plain words for a failed connection, TLS handshake or protocol exchange."""
    server = f"the server {where.name}"
    if isinstance(error, smtplib.SMTPServerDisconnected) and isinstance(error.__context__, OSError):
        error = error.__context__  # smtplib wraps the socket's own error (a timeout, …)
    if isinstance(error, ConnectionRefusedError):
        return f"{server} is not answering (connection refused)"
    if isinstance(error, TimeoutError):
        return f"{server} did not answer within {timeout:g} s (timeout)"
    if isinstance(error, ssl.SSLCertVerificationError):
        return (
            f"STARTTLS failed: the certificate of {where.name} could not be verified "
            f"({error.verify_message}); is the right CA file given?"
        )
    if isinstance(error, ssl.SSLError):
        return f"STARTTLS failed with {server}: {error.reason or error}"
    if isinstance(error, smtplib.SMTPServerDisconnected | EOFError | ConnectionResetError):
        return f"{server} closed the connection unexpectedly"
    if isinstance(error, socket.gaierror):
        return f"the host name {where.host} is unknown ({error.strerror})"
    if isinstance(error, UnicodeError):
        reason = getattr(error, "reason", error)
        return f"only ASCII can be sent here ({reason}); check the login and password"
    if isinstance(error, MailServerError | MUAError):
        return str(error)
    if isinstance(error, OSError):
        return f"could not talk to {server}: {error.strerror or error}"
    return f"{server}: {error}"


# ---------------------------------------------------------------------- what a check finds


@dataclass(frozen=True)
class MessageSummary:
    """One line of an inbox: who, what, when, how big, which flags."""

    #: POP3: the unique id (UIDL, RFC 1939 §7); IMAP: ``str(uid)``.
    id: str
    #: The message number in that session (POP3), or the IMAP sequence number.
    number: int | None
    #: The IMAP UID (RFC 3501 §2.3.1.1); None for POP3.
    uid: int | None
    sender: str
    to: str
    subject: str
    #: The Date: header as written.
    date: str
    size: int
    #: IMAP flags (``\\Seen``, ``\\Flagged``, …); POP3 has none: ``frozenset()``.
    flags: frozenset[str]
    #: The whole message, when it was downloaded (POP3 always; IMAP by ``fetch``).
    raw: bytes | None = None


@dataclass
class CheckResult:
    """What one check of a mailbox found."""

    #: POP3: the messages downloaded in this check (the new ones); IMAP: every message
    #: of the folder.
    messages: list[MessageSummary]
    #: POP3: ids deleted on the server at QUIT (``keep=False``); IMAP: ``[]``.
    deleted: list[str]
    #: Plain words when the check failed (``messages`` may then be empty).
    error: str | None = None
    #: The server's name, e.g. ``"imap.south.test"`` (to filter the lab's transcript).
    server: str | None = None


def _summary(
    header_block: bytes,
    *,
    id: str,
    number: int | None,
    uid: int | None,
    size: int,
    flags: frozenset[str] = frozenset(),
    raw: bytes | None = None,
) -> MessageSummary:
    """A summary from a message's header block (the headers as written, then decoded)."""
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(header_block)

    def value(name: str) -> str:
        """One header as written, its encoded words decoded ('' if missing)."""
        found = headers.get(name)
        return "" if found is None else _decode_words(str(found))

    return MessageSummary(
        id=id,
        number=number,
        uid=uid,
        sender=value("From"),
        to=value("To"),
        subject=value("Subject"),
        date=re.sub(r"\s+", " ", str(headers.get("Date", ""))).strip(),
        size=size,
        flags=flags,
        raw=raw,
    )


# ---------------------------------------------------------------------------------- POP3


class POP3Mailbox:
    """A POP3 account (RFC 1939): each :meth:`check` is one session that downloads the
    new messages, and deletes them unless told to keep them."""

    def __init__(
        self,
        target: LabLike | str | Endpoint,
        address: str,
        password: str,
        *,
        port: int | None = None,
        starttls: bool | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """``target``: a lab, a host (with ``port``) or an :class:`Endpoint` (see
        :func:`endpoint`). ``starttls``: None uses STLS when offered, True requires it,
        False never uses it. Raises :class:`MUAError` for bad input."""
        self.address = _single_address(address)
        self.password = password
        self.endpoint = endpoint(target, "pop3", self.address, port)
        self.starttls = starttls
        self.timeout = timeout

    def __repr__(self) -> str:
        """``POP3Mailbox('carol@south.test' at pop3.south.test)``."""
        return f"POP3Mailbox({self.address!r} at {self.endpoint.name})"

    def check(
        self, *, keep: bool = True, known: Iterable[str] = (), delete_known: bool = False
    ) -> CheckResult:
        """One session: download what is new, and delete it on the server unless ``keep``.

        Connect; CAPA (RFC 2449) and STLS (RFC 2595) when offered and ``starttls`` is
        not False, checking the certificate; USER and PASS; UIDL (the unique ids);
        LIST (the sizes); RETR every message whose unique id is not in ``known`` — the
        ids of messages downloaded before, as real clients keep to "leave a copy on the
        server"; with ``keep=False``, DELE every message retrieved now (and, with
        ``delete_known=True``, the ``known`` ones still there too: the copies left on
        the server before); QUIT (the deletions happen only now, RFC 1939 §6). A
        failure anywhere ends the session without QUIT, so nothing is deleted, and
        comes back as ``error``.
        """
        where = self.endpoint
        seen = set(known)
        messages: list[MessageSummary] = []
        try:
            client = _POP3Client(where.host, where.port, timeout=self.timeout)
        except (OSError, poplib.error_proto) as error:
            return CheckResult([], [], self._words(error), where.server_hostname)
        try:
            self._login(client)
            ids = self._unique_ids(client)
            sizes = {int(n): int(s) for n, s in (line.split()[:2] for line in client.list()[1])}
            for number, unique_id in ids:
                if unique_id in seen:
                    continue
                lines = client.retr(number)[1]  # poplib undoes the dot-stuffing
                raw = b"\r\n".join(lines) + b"\r\n"
                block = raw.split(b"\r\n\r\n", 1)[0] + b"\r\n"
                messages.append(
                    _summary(
                        block,
                        id=unique_id,
                        number=number,
                        uid=None,
                        size=sizes.get(number, len(raw)),
                        raw=raw,
                    )
                )
            retrieved = {summary.id for summary in messages}
            doomed = (
                []
                if keep
                else [
                    (number, unique_id)
                    for number, unique_id in ids
                    if unique_id in retrieved or (delete_known and unique_id in seen)
                ]
            )
            for number, _ in doomed:
                client.dele(number)  # only marks it (RFC 1939 §5)
            client.quit()  # the UPDATE state: deletions are made now
        except (OSError, EOFError, poplib.error_proto, MailServerError, ValueError) as error:
            client.close()
            return CheckResult(messages, [], self._words(error), where.server_hostname)
        return CheckResult(
            messages, [unique_id for _, unique_id in doomed], None, where.server_hostname
        )

    def _login(self, client: poplib.POP3) -> None:
        """STLS when offered (or required), then USER/PASS (RFC 1939 §7)."""
        try:
            capabilities = client.capa()
        except poplib.error_proto:  # a server without CAPA (RFC 2449 is optional)
            capabilities = {}
        if "STLS" in capabilities and self.starttls is not False:
            client.stls(tls_context(self.endpoint))
        elif self.starttls:
            raise MailServerError(
                f"the server {self.endpoint.name} does not offer STLS, "
                "and starttls=True requires it"
            )
        try:
            client.user(self.address)
        except poplib.error_proto as error:
            raise MailServerError(
                f"the server {self.endpoint.name} refused the user name: {_pop3_text(error)}"
            ) from None
        try:
            client.pass_(self.password)
        except poplib.error_proto as error:
            text = _pop3_text(error)
            if "[IN-USE]" in text:
                words = "the mailbox is in use by another session (RFC 2449 §8.1.2)"
            elif "[SYS/" in text:
                words = f"the server {self.endpoint.name} has a problem"
            else:
                words = "wrong password (or user name)"
            raise MailServerError(f"{words}: {text}") from None

    def _unique_ids(self, client: poplib.POP3) -> list[tuple[int, str]]:
        """UIDL: ``[(message number, unique id), …]`` (RFC 1939 §7)."""
        try:
            listing = client.uidl()[1]
        except poplib.error_proto as error:
            raise MailServerError(
                f"the server {self.endpoint.name} does not give unique ids (UIDL): "
                f"{_pop3_text(error)}; without them a client cannot tell new mail"
            ) from None
        pairs = []
        for line in listing:
            number, unique_id = line.decode("ascii", "replace").split()[:2]
            pairs.append((int(number), unique_id))
        return pairs

    def _words(self, error: BaseException) -> str:
        """Plain words for a failed POP3 session."""
        if isinstance(error, poplib.error_proto):
            text = _pop3_text(error)
            if text.startswith("-ERR EOF"):
                return f"the server {self.endpoint.name} closed the connection unexpectedly"
            return f"the server {self.endpoint.name} answered {text}"
        return _network_words(error, self.endpoint, self.timeout)


class _POP3Client(poplib.POP3):
    """poplib's client, closing its socket when the greeting fails (poplib's own
    ``__init__`` leaves that socket to the garbage collector)."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        """Connect and read the greeting (RFC 1939 §4); on failure, close and re-raise."""
        try:
            super().__init__(host, port, timeout)
        except BaseException:
            if getattr(self, "sock", None) is not None:
                self.close()
            raise


def _pop3_text(error: poplib.error_proto) -> str:
    """The server's ``-ERR …`` line carried by a poplib error, as text."""
    reply = error.args[0] if error.args else ""
    return _reply_text(reply)


# ---------------------------------------------------------------------------------- IMAP


def imap_utf7_decode(name: str) -> str:
    """A mailbox name as IMAP sends it (modified UTF-7, RFC 3501 §5.1.3) as text:
    ``"Entw&APw-rfe"`` → ``"Entwürfe"``, ``"&-"`` → ``"&"``. Junk stays as it is."""

    def decode(match: re.Match[str]) -> str:
        """One ``&…-`` run back to text."""
        chunk = match.group(1)
        if not chunk:
            return "&"
        data = chunk.replace(",", "/")
        try:
            return base64.b64decode(data + "=" * (-len(data) % 4)).decode("utf-16-be")
        except (ValueError, UnicodeDecodeError):
            return match.group(0)

    return re.sub(r"&([A-Za-z0-9+,]*)-", decode, name)


def imap_utf7_encode(name: str) -> str:
    """Text as an IMAP mailbox name (modified UTF-7, RFC 3501 §5.1.3): printable ASCII
    stays, ``&`` becomes ``&-``, other runs become ``&<base64 of UTF-16>-``."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        """Write the pending run of non-ASCII characters as ``&<base64>-``."""
        if run:
            data = base64.b64encode("".join(run).encode("utf-16-be")).decode("ascii")
            out.append("&" + data.rstrip("=").replace("/", ",") + "-")
            run.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            run.append(char)
    flush()
    return "".join(out)


def _quoted(text: str) -> str:
    """An IMAP quoted string (RFC 3501 §4.3): ``"…"`` with ``\\`` and ``"`` escaped."""
    if "\r" in text or "\n" in text or not text.isascii():
        raise MUAError(f"{text!r} cannot be sent as an IMAP quoted string")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _mailbox_name(folder: str) -> str:
    """A folder name as an IMAP command argument: modified UTF-7, quoted."""
    return _quoted(imap_utf7_encode(folder))


_TOKEN = re.compile(
    rb'\s*(?:(?P<open>\()|(?P<close>\))|"(?P<quoted>(?:[^"\\]|\\.)*)"'
    rb"|(?P<atom>[^\s()\"\[\]{}]+(?:\[[^\]]*\])?(?:<\d+>)?))"
)
_LITERAL_END = re.compile(rb"\{(\d+)\+?\}\r?\n?\Z")


@dataclass(frozen=True)
class _Literal:
    """The bytes of an IMAP literal (``{n}`` then n octets, RFC 3501 §4.3)."""

    data: bytes


def _responses(data: Iterable[Any]) -> Generator[list[bytes | _Literal], None, None]:
    """imaplib's untagged data, regrouped into whole responses.

    imaplib hands a response with literals over as ``(line up to {n}, literal)``
    tuples followed by the rest of the line as bytes; one without literals as bytes.
    """
    parts: list[bytes | _Literal] = []
    for item in data:
        if item is None:
            continue
        if isinstance(item, tuple):
            head, literal = item
            parts += [_LITERAL_END.sub(b"", head), _Literal(literal)]
        else:
            parts.append(item)
            yield parts
            parts = []
    if parts:
        yield parts


def _tokens(parts: list[bytes | _Literal]) -> list[Any]:
    """Tokens of one response: ``"("``, ``")"``, atoms (str), strings (bytes)."""
    tokens: list[Any] = []
    for part in parts:
        if isinstance(part, _Literal):
            tokens.append(part.data)
            continue
        position = 0
        while position < len(part):
            match = _TOKEN.match(part, position)
            if match is None:
                if part[position:].strip():
                    raise MailServerError(f"cannot read the server's response {part!r}")
                break
            position = match.end()
            if match["open"]:
                tokens.append("(")
            elif match["close"]:
                tokens.append(")")
            elif match["quoted"] is not None:
                tokens.append(re.sub(rb"\\(.)", rb"\1", match["quoted"]))
            else:
                tokens.append(match["atom"].decode("utf-8", "replace"))
    return tokens


def _nest(tokens: list[Any]) -> list[Any]:
    """Tokens to nested lists: ``( a ( b ) )`` → ``[["a", ["b"]]]``; NIL → None."""
    stack: list[list[Any]] = [[]]
    for token in tokens:
        if token == "(":
            stack.append([])
        elif token == ")":
            if len(stack) > 1:
                inner = stack.pop()
                stack[-1].append(inner)
        else:
            stack[-1].append(None if token == "NIL" else token)
    while len(stack) > 1:  # an unbalanced response: close what is open
        inner = stack.pop()
        stack[-1].append(inner)
    return stack[0]


def _fetch_items(data: Iterable[Any]) -> list[tuple[int, dict[str, Any]]]:
    """FETCH responses (RFC 3501 §7.4.2) as ``[(sequence number, {item: value}), …]``.

    Item names are upper-cased; ``BODY[HEADER.FIELDS (…)]`` is called ``HEADER``;
    FLAGS is a frozenset of str; numbers are ints; strings are bytes.
    """
    found = []
    for parts in _responses(data):
        tree = _nest(_tokens(parts))
        if len(tree) < 2 or not str(tree[0]).isdigit() or not isinstance(tree[-1], list):
            continue  # not "n (…)": some other response imaplib filed here
        items = tree[-1]
        values: dict[str, Any] = {}
        for key, value in zip(items[::2], items[1::2], strict=False):
            name = str(key).upper()
            if name.startswith("BODY[HEADER") or name.startswith("BODY.PEEK[HEADER"):
                name = "HEADER"
            elif name.startswith("BODY[]"):
                name = "BODY[]"
            if name == "FLAGS":
                value = frozenset(str(flag) for flag in value or ())
            elif isinstance(value, str) and value.isdigit():
                value = int(value)
            values[name] = value
        found.append((int(tree[0]), values))
    return found


def _capability_code(line: bytes) -> set[str] | None:
    """The capabilities in a ``[CAPABILITY …]`` response code (RFC 3501 §7.1), if any."""
    code = re.search(rb"\[CAPABILITY ([^\]]*)\]", line, re.IGNORECASE)
    return set(code.group(1).decode("ascii", "replace").upper().split()) if code else None


def _imap_text(value: Any) -> str:
    """Text of an imaplib reply or error (which may carry bytes, or their repr)."""
    if isinstance(value, list | tuple):
        value = value[-1] if value else ""
    if isinstance(value, BaseException):
        value = value.args[0] if value.args else str(value)
    if isinstance(value, bytes):
        return _reply_text(value)
    return re.sub(r"\[?b'(.*?)'\]?", r"\1", str(value))


T = TypeVar("T")


class IMAPMailbox:
    """An IMAP account (RFC 3501): mail stays on the server; the client looks.

    One imaplib connection, opened on first use and kept (as Thunderbird keeps its
    connections), opened again once if it dropped; :meth:`close` logs out. Also a
    context manager. :meth:`wait` (IDLE) uses a connection of its own. Not
    thread-safe, except that :meth:`wait` may run in another thread.

    Methods other than :meth:`check` raise :class:`MailServerError` in plain words.
    """

    def __init__(
        self,
        target: LabLike | str | Endpoint,
        address: str,
        password: str,
        *,
        port: int | None = None,
        starttls: bool | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """``target``: a lab, a host (with ``port``) or an :class:`Endpoint` (see
        :func:`endpoint`). ``starttls``: None uses STARTTLS when offered, True
        requires it, False never uses it. Raises :class:`MUAError` for bad input."""
        self.address = _single_address(address)
        self.password = password
        self.endpoint = endpoint(target, "imap", self.address, port)
        self.starttls = starttls
        self.timeout = timeout
        self.capabilities: frozenset[str] = frozenset()
        self._client: imaplib.IMAP4 | None = None
        self._selected: tuple[str, bool] | None = None  # (folder, read-only)

    def __repr__(self) -> str:
        """The account, its server, and whether a connection is open."""
        state = "connected" if self._client is not None else "not connected"
        return f"IMAPMailbox({self.address!r} at {self.endpoint.name}, {state})"

    def __enter__(self) -> IMAPMailbox:
        """The mailbox itself (its connection opens on first use)."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Log out at the end of the ``with`` block."""
        self.close()

    # -- the connection ------------------------------------------------------------------

    def _connect(self) -> imaplib.IMAP4:
        """The open connection, or a new one: greeting, STARTTLS, LOGIN (RFC 3501 §6.2)."""
        if self._client is not None:
            return self._client
        where = self.endpoint
        client = imaplib.IMAP4(where.host, where.port, timeout=self.timeout)
        try:
            if "STARTTLS" in client.capabilities and self.starttls is not False:
                client.starttls(tls_context(where))  # asks CAPABILITY again after
            elif self.starttls:
                raise MailServerError(
                    f"the server {where.name} does not offer STARTTLS, "
                    "and starttls=True requires it"
                )
            if client.state == "NONAUTH":  # not PREAUTH
                if "LOGINDISABLED" in client.capabilities:  # RFC 3501 §6.2.3
                    raise MailServerError(
                        f"the server {where.name} does not allow login before STARTTLS "
                        "(LOGINDISABLED); turn STARTTLS on"
                    )
                _quoted(self.password)  # imaplib quotes it; refuse what cannot be quoted
                try:
                    _, data = client.login(self.address, self.password)
                except imaplib.IMAP4.error as error:
                    raise MailServerError(
                        f"wrong password (or user name): {_imap_text(error)}"
                    ) from None
                # Capabilities may grow after login; servers often say so in the OK.
                found = _capability_code(_imap_text(data).encode())
                if found is None:
                    typ, data = client.capability()
                    found = set(_imap_text(data).upper().split()) if typ == "OK" else None
                if found:
                    client.capabilities = tuple(sorted(found))
        except BaseException:
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                client.shutdown()
            raise
        self.capabilities = frozenset(client.capabilities)
        self._client = client
        self._selected = None
        return client

    def _run(self, action: Callable[[imaplib.IMAP4], T]) -> T:
        """Run ``action`` on the connection; if a kept connection turns out to have
        dropped, connect again and run it once more. Failures: MailServerError."""
        for attempt in (1, 2):
            reused = self._client is not None
            try:
                return action(self._connect())
            except (MailServerError, MUAError):
                raise
            except (imaplib.IMAP4.abort, OSError, EOFError) as error:
                self._drop()
                # A kept connection may have died meanwhile: try once on a new one. A
                # timeout means a slow server, not a dead connection: no second wait.
                if not reused or attempt == 2 or isinstance(error, TimeoutError):
                    raise MailServerError(self._words(error)) from None
            except imaplib.IMAP4.error as error:  # a BAD reply, or imaplib's own complaint
                raise MailServerError(
                    f"the server {self.endpoint.name} answered {_imap_text(error)}"
                ) from None
        raise AssertionError("unreachable")

    def _words(self, error: BaseException) -> str:
        """Plain words for a dropped or failed IMAP connection."""
        if isinstance(error, imaplib.IMAP4.abort):
            return f"the server {self.endpoint.name} closed the connection ({_imap_text(error)})"
        return _network_words(error, self.endpoint, self.timeout)

    def _drop(self) -> None:
        """Forget the connection (closing its socket); the next call opens a new one."""
        if self._client is not None:
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                self._client.shutdown()
        self._client = None
        self._selected = None

    def close(self) -> None:
        """LOGOUT (RFC 3501 §6.1.3) and close the connection; safe to call twice."""
        if self._client is not None:
            with contextlib.suppress(OSError, EOFError, imaplib.IMAP4.error):
                self._client.logout()
        self._drop()

    def _select(
        self, client: imaplib.IMAP4, folder: str, read_only: bool = False, *, again: bool = False
    ) -> int | None:
        """SELECT ``folder`` (EXAMINE if ``read_only``: RFC 3501 §6.3.2) and return its
        message count (EXISTS); or nothing, if it is selected already and not ``again``."""
        usable = {(folder, False), (folder, True)} if read_only else {(folder, False)}
        if self._selected in usable and not again:
            return None
        typ, data = client.select(_mailbox_name(folder), readonly=read_only)
        if typ != "OK":
            self._selected = None
            raise MailServerError(f"cannot open the folder {folder!r}: {typ} {_imap_text(data)}")
        self._selected = (folder, read_only)
        return int(data[0]) if data and data[0] and data[0].isdigit() else 0

    def _command(self, client: imaplib.IMAP4, what: str, *args: str) -> list[Any]:
        """``UID <what> args`` (RFC 3501 §6.4.8); its FETCH data; NO → MailServerError."""
        client.response("FETCH")  # forget FETCH news from earlier commands
        typ, data = client.uid(what, *args)
        if typ != "OK":
            raise MailServerError(
                f"the server {self.endpoint.name} refused UID {what}: {typ} {_imap_text(data)}"
            )
        return data

    # -- what a reader does --------------------------------------------------------------

    def folders(self) -> list[str]:
        """The account's folders (LIST, RFC 3501 §6.3.8), names decoded; INBOX first.

        Folders that cannot be opened (``\\Noselect``, ``\\NonExistent``) are left out.
        """

        def listing(client: imaplib.IMAP4) -> list[str]:
            """LIST "" * and its names, on ``client``."""
            typ, data = client.list('""', "*")
            if typ != "OK":
                raise MailServerError(f"LIST failed: {typ} {_imap_text(data)}")
            names = []
            for parts in _responses(data):
                tree = _nest(_tokens(parts))
                if len(tree) < 3 or not isinstance(tree[0], list):
                    continue
                attributes = {str(a).lower() for a in tree[0]}
                if attributes & {"\\noselect", "\\nonexistent"}:
                    continue
                raw = tree[2]
                name = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
                names.append(imap_utf7_decode(name))
            others = [name for name in names if name.upper() != "INBOX"]
            return ["INBOX", *others] if len(others) < len(names) else others

        return self._run(listing)

    def check(self, folder: str = "INBOX", *, read_only: bool = False) -> CheckResult:
        """Every message of ``folder``, without the bodies, sorted by UID.

        SELECT (or EXAMINE with ``read_only=True``: nothing can change, not even
        ``\\Recent``), then ``UID FETCH 1:* (UID FLAGS RFC822.SIZE
        BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE)])`` — PEEK, so reading the
        headers does not mark a message ``\\Seen`` (RFC 3501 §6.4.5). Failures come
        back as ``error``.
        """

        def look(client: imaplib.IMAP4) -> list[MessageSummary]:
            """SELECT again, then the summaries of every message, on ``client``."""
            if self._select(client, folder, read_only, again=True) == 0:  # a fresh look
                return []
            data = self._command(
                client,
                "FETCH",
                "1:*",
                f"(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS ({SUMMARY_FIELDS})])",
            )
            by_uid = {}
            for number, items in _fetch_items(data):
                if "UID" in items and "HEADER" in items:
                    by_uid[items["UID"]] = self._summary(number, items)
            return [by_uid[uid] for uid in sorted(by_uid)]

        server = self.endpoint.server_hostname
        try:
            return CheckResult(self._run(look), [], None, server)
        except (MailServerError, MUAError) as error:
            return CheckResult([], [], str(error), server)

    def _summary(
        self, number: int, items: dict[str, Any], raw: bytes | None = None
    ) -> MessageSummary:
        """A MessageSummary from one message's FETCH items (and its bytes, if fetched)."""
        header = items.get("HEADER") or (raw or b"").split(b"\r\n\r\n", 1)[0]
        size = items.get("RFC822.SIZE")
        return _summary(
            header if isinstance(header, bytes) else b"",
            id=str(items["UID"]),
            number=number,
            uid=items["UID"],
            size=size if isinstance(size, int) else len(raw or b""),
            flags=items.get("FLAGS", frozenset()),
            raw=raw,
        )

    def fetch(self, uid: int, folder: str = "INBOX", *, peek: bool = False) -> MessageSummary:
        """Download one whole message: ``UID FETCH uid (UID FLAGS RFC822.SIZE BODY[])``.

        ``BODY[]`` marks it ``\\Seen`` (RFC 3501 §6.4.5) — opening a message reads it;
        ``peek=True`` asks for ``BODY.PEEK[]``, which does not. The summary's ``raw``
        is the message; its flags are the ones the server reported last.
        """
        section = "BODY.PEEK[]" if peek else "BODY[]"

        def download(client: imaplib.IMAP4) -> MessageSummary:
            """UID FETCH of the whole message, on ``client``."""
            self._select(client, folder, read_only=peek)
            data = self._command(client, "FETCH", str(uid), f"(UID FLAGS RFC822.SIZE {section})")
            merged: dict[str, Any] = {}
            number = None
            for seq, items in _fetch_items(data):
                if items.get("UID") == uid:
                    number = seq
                    merged.update(items)  # a later FLAGS (the new \Seen) wins
            if number is None or not isinstance(merged.get("BODY[]"), bytes):
                raise MailServerError(f"{folder} has no message with UID {uid}")
            return self._summary(number, merged, raw=merged["BODY[]"])

        return self._run(download)

    def _flags(self, client: imaplib.IMAP4, uid: int, folder: str) -> tuple[int, frozenset[str]]:
        """The message's sequence number and flags; MailServerError if it is not there."""
        for number, items in _fetch_items(self._command(client, "FETCH", str(uid), "(UID FLAGS)")):
            if items.get("UID") == uid:
                return number, items.get("FLAGS", frozenset())
        raise MailServerError(f"{folder} has no message with UID {uid}")

    def set_flag(
        self, uid: int, flag: str, on: bool = True, folder: str = "INBOX"
    ) -> frozenset[str]:
        """Set (or clear, ``on=False``) one flag: ``UID STORE uid +FLAGS (flag)``
        (RFC 3501 §6.4.6), e.g. ``\\Seen``, ``\\Flagged``, ``\\Answered`` or a keyword
        like ``$Important``. Returns the message's flags as the server now reports them.
        """
        if not re.fullmatch(r"\\?[^\s()\[\]{}\"\\%*]+", flag):
            raise MUAError(f"{flag!r} is not an IMAP flag (e.g. \\Seen, \\Flagged, $Work)")

        def store(client: imaplib.IMAP4) -> frozenset[str]:
            """UID STORE, then the flags the server reports, on ``client``."""
            self._select(client, folder)
            sign = "+" if on else "-"
            data = self._command(client, "STORE", str(uid), f"{sign}FLAGS", f"({flag})")
            reported = [i for _, i in _fetch_items(data) if i.get("UID") in (uid, None)]
            if reported and "FLAGS" in reported[-1]:
                return reported[-1]["FLAGS"]
            return self._flags(client, uid, folder)[1]  # the server said nothing: ask

        return self._run(store)

    def move(self, uid: int, target_folder: str, folder: str = "INBOX") -> None:
        """Move one message to ``target_folder``: ``UID MOVE`` (RFC 6851); on a server
        without MOVE, its fallback: UID COPY, then \\Deleted and expunge (see :meth:`delete`)."""

        def move_one(client: imaplib.IMAP4) -> None:
            """UID MOVE (or its fallback), on ``client``."""
            self._select(client, folder)
            self._flags(client, uid, folder)  # there at all?
            if "MOVE" in self.capabilities:
                self._command(client, "MOVE", str(uid), _mailbox_name(target_folder))
            else:
                self._command(client, "COPY", str(uid), _mailbox_name(target_folder))
                self._expunge(client, uid)

        self._run(move_one)

    def delete(self, uid: int, folder: str = "INBOX") -> None:
        """Delete one message for good: ``UID STORE uid +FLAGS (\\Deleted)``, then
        ``UID EXPUNGE uid`` (RFC 4315, UIDPLUS). On a server without UIDPLUS a plain
        EXPUNGE (RFC 3501 §6.4.3) removes every message marked \\Deleted in the folder.
        """

        def delete_one(client: imaplib.IMAP4) -> None:
            """\\Deleted and expunge, on ``client``."""
            self._select(client, folder)
            self._flags(client, uid, folder)  # there at all?
            self._expunge(client, uid)

        self._run(delete_one)

    def _expunge(self, client: imaplib.IMAP4, uid: int) -> None:
        """Mark one message \\Deleted, then expunge it (UID EXPUNGE, else EXPUNGE)."""
        self._command(client, "STORE", str(uid), "+FLAGS.SILENT", "(\\Deleted)")
        if "UIDPLUS" in self.capabilities:
            self._command(client, "EXPUNGE", str(uid))
        else:
            typ, data = client.expunge()
            if typ != "OK":
                raise MailServerError(f"EXPUNGE failed: {typ} {_imap_text(data)}")

    def wait(self, folder: str = "INBOX", timeout: float = 30.0) -> list[str]:
        """Block until ``folder`` changes (IDLE, RFC 2177), at most ``timeout`` seconds.

        Returns the untagged lines that ended the wait (e.g. ``["* 3 EXISTS", "* 1
        RECENT"]``), or ``[]`` on timeout; IDLE has been ended with DONE and the
        connection logged out by then. It runs on a connection of its own, a plain
        socket: imaplib has no IDLE before Python 3.14, and its buffered reader
        cannot wait with a time limit. Raises :class:`MailServerError`.
        """
        settings = _IdleSettings(self.address, self.password, self.endpoint, self.starttls)
        steps = _idle_dialogue(settings, folder, timeout)
        return _run_idle_blocking(steps, self.endpoint, self.timeout)


# ---------------------------------------------------------------------------------- IDLE
#
# IDLE is one dialogue (greeting, CAPABILITY, STARTTLS, LOGIN, SELECT, IDLE, wait,
# DONE, LOGOUT), written once as a generator that says what to do next — "send
# these bytes", "read a line" — and is told what came back (the h11 way: the protocol
# has no I/O). Two thin shells run it: one with a blocking socket
# (IMAPMailbox.wait), one with asyncio streams (idle_wait).


@dataclass(frozen=True)
class _Step:
    """One thing for a shell to do."""

    #: "send" (``data``), "line" (read one line; give up after the connection's
    #: timeout), "wait" (read one line, or None after ``timeout`` seconds; None:
    #: wait for ever), "exactly" (read ``size`` bytes), "starttls", "ready".
    kind: str
    data: bytes = b""
    timeout: float | None = None
    size: int = 0


_Dialogue = Generator[_Step, bytes | None, list[str]]


@dataclass
class _IdleSettings:
    """Who logs in where, and the tags of the commands (``m1``, ``m2``, …)."""

    address: str
    password: str
    endpoint: Endpoint
    starttls: bool | None
    tags: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def tag(self) -> bytes:
        """The next command tag: ``m1``, ``m2``, …"""
        return f"m{next(self.tags)}".encode()


def _idle_dialogue(s: _IdleSettings, folder: str, timeout: float | None) -> _Dialogue:
    """Log in, SELECT ``folder``, IDLE until news or ``timeout``, DONE, LOGOUT.

    Returns the untagged lines from the first news (EXISTS, EXPUNGE or FETCH) up to
    the end of IDLE, or [] on timeout. Raises MailServerError in plain words.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    server = s.endpoint.name
    greeting = yield from _read_line()
    if greeting.startswith(b"* BYE"):
        raise MailServerError(
            f"the server {server} refused the connection: {_reply_text(greeting)}"
        )
    capabilities = _capability_code(greeting)  # RFC 3501 §7.1: often in the greeting
    if capabilities is None:
        capabilities = yield from _ask_capabilities(s)
    if "STARTTLS" in capabilities and s.starttls is not False:
        yield from _tagged(s, b"STARTTLS", "STARTTLS")
        yield _Step("starttls")
        capabilities = yield from _ask_capabilities(s)  # RFC 3501 §6.2.1: ask again
    elif s.starttls:
        raise MailServerError(
            f"the server {server} does not offer STARTTLS, and starttls=True requires it"
        )
    if not greeting.startswith(b"* PREAUTH"):
        if "LOGINDISABLED" in capabilities:
            raise MailServerError(
                f"the server {server} does not allow login before STARTTLS "
                "(LOGINDISABLED); turn STARTTLS on"
            )
        login = f"LOGIN {_quoted(s.address)} {_quoted(s.password)}".encode()
        _, ok = yield from _tagged(s, login, "LOGIN", failure="wrong password (or user name)")
        capabilities |= _capability_code(ok) or set()
    if "IDLE" not in capabilities:
        capabilities = yield from _ask_capabilities(s)
        if "IDLE" not in capabilities:
            raise MailServerError(f"the server {server} does not offer IDLE (RFC 2177)")
    select = f"SELECT {_mailbox_name(folder)}".encode()
    yield from _tagged(s, select, "SELECT", failure=f"cannot open the folder {folder!r}")
    news: list[str] = []
    first = True
    while not news:
        tag = s.tag()
        yield _Step("send", tag + b" IDLE\r\n")
        # News may come before the continuation too (mail that came after SELECT).
        while not (line := (yield from _read_line())).startswith(b"+"):
            if line.startswith(tag):
                raise MailServerError(f"the server {server} refused IDLE: {_reply_text(line)}")
            if _is_news(line):
                news.append(_reply_text(line))
        if first:
            yield _Step("ready")
            first = False
        restart = time.monotonic() + IDLE_RESTART
        while not news:
            limit = restart if deadline is None else min(deadline, restart)
            line = yield _Step("wait", timeout=max(0.001, limit - time.monotonic()))
            if line is None:  # the time is up (or IDLE_RESTART is due)
                break
            if line.startswith(b"* BYE"):
                raise MailServerError(f"the server {server} ended the session: {_reply_text(line)}")
            if _is_news(line):
                news.append(_reply_text(line))
        yield _Step("send", b"DONE\r\n")
        untagged, _ = yield from _until(tag)
        if news:  # what came with the first news, up to the end of IDLE
            news += [_reply_text(line) for line in untagged]
        if deadline is not None and time.monotonic() >= deadline:
            break
    yield from _tagged(s, b"LOGOUT", "LOGOUT")
    return news


def _is_news(line: bytes) -> bool:
    """``* <n> EXISTS``, ``* <n> EXPUNGE`` or ``* <n> FETCH (…)``: the mailbox changed."""
    words = line.split(maxsplit=3)
    return len(words) >= 3 and words[0] == b"*" and words[2].upper() in NEWS


def _read_line() -> Generator[_Step, bytes | None, bytes]:
    """One response line, with any literals it announces (``{n}``) read into it."""
    line = yield _Step("line")
    assert line is not None
    while match := _LITERAL_END.search(line):
        data = yield _Step("exactly", size=int(match.group(1)))
        rest = yield _Step("line")
        assert data is not None and rest is not None
        line = line + data + rest
    return line.rstrip(b"\r\n")


def _until(tag: bytes) -> Generator[_Step, bytes | None, tuple[list[bytes], bytes]]:
    """Read the untagged lines up to the tagged one of ``tag``."""
    untagged = []
    while True:
        line = yield from _read_line()
        if line.startswith(tag + b" "):
            return untagged, line
        untagged.append(line)


def _tagged(
    s: _IdleSettings, command: bytes, name: str, failure: str | None = None
) -> Generator[_Step, bytes | None, tuple[list[bytes], bytes]]:
    """Send one command; its untagged lines and its tagged OK (else MailServerError)."""
    tag = s.tag()
    yield _Step("send", tag + b" " + command + b"\r\n")
    untagged, done = yield from _until(tag)
    status = done[len(tag) + 1 :]
    if not status.upper().startswith(b"OK"):
        words = failure or f"the server {s.endpoint.name} refused {name}"
        raise MailServerError(f"{words}: {_reply_text(status)}")
    return untagged, status


def _ask_capabilities(s: _IdleSettings) -> Generator[_Step, bytes | None, set[str]]:
    """CAPABILITY (RFC 3501 §6.1.1): what the server offers, upper-cased."""
    untagged, _ = yield from _tagged(s, b"CAPABILITY", "CAPABILITY")
    found: set[str] = set()
    for line in untagged:
        if line.upper().startswith(b"* CAPABILITY "):
            found |= set(line[13:].decode("ascii", "replace").upper().split())
    return found


class _SocketLines:
    """A blocking socket read line by line, with time limits that do not break it
    (a timed-out read from ``socket.makefile`` cannot be resumed; ``recv`` can)."""

    def __init__(self, sock: socket.socket) -> None:
        """Read from ``sock``, keeping what came after the last line."""
        self.sock = sock
        self.buffer = bytearray()

    def _fill(self, timeout: float | None) -> None:
        """Receive once more (at most ``timeout`` seconds); EOFError if the server closed."""
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("the server closed the connection")
        self.buffer += data

    def line(self, timeout: float | None) -> bytes:
        """The next line with its CRLF; TimeoutError after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = None if deadline is None else max(0.001, deadline - time.monotonic())
            self._fill(left)
        end = self.buffer.index(b"\n") + 1
        line = bytes(self.buffer[:end])
        del self.buffer[:end]
        return line

    def exactly(self, size: int, timeout: float) -> bytes:
        """The next ``size`` bytes (an IMAP literal)."""
        while len(self.buffer) < size:
            self._fill(timeout)
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data


def _run_idle_blocking(steps: _Dialogue, where: Endpoint, io_timeout: float) -> list[str]:
    """Run the IDLE dialogue on a blocking socket (the shell for IMAPMailbox.wait)."""
    try:
        sock = socket.create_connection((where.host, where.port), timeout=io_timeout)
    except OSError as error:
        raise MailServerError(_network_words(error, where, io_timeout)) from None
    lines = _SocketLines(sock)
    try:
        reply: bytes | None = None
        step = next(steps)
        while True:
            reply = None
            if step.kind == "send":
                sock.settimeout(io_timeout)
                sock.sendall(step.data)
            elif step.kind == "line":
                reply = lines.line(io_timeout)
            elif step.kind == "exactly":
                reply = lines.exactly(step.size, io_timeout)
            elif step.kind == "wait":
                try:
                    reply = lines.line(step.timeout)
                except TimeoutError:
                    reply = None
            elif step.kind == "starttls":
                sock = tls_context(where).wrap_socket(sock, server_hostname=where.host)
                lines.sock = sock
            step = steps.send(reply)
    except StopIteration as done:
        return done.value
    except (OSError, EOFError) as error:
        raise MailServerError(_network_words(error, where, io_timeout)) from None
    finally:
        steps.close()
        sock.close()


async def idle_wait(
    target: LabLike | str | Endpoint,
    address: str,
    password: str,
    folder: str = "INBOX",
    *,
    timeout: float | None = None,
    port: int | None = None,
    ready: asyncio.Event | None = None,
    starttls: bool | None = None,
    io_timeout: float = DEFAULT_TIMEOUT,
) -> list[str]:
    """Wait for news in ``folder`` with IDLE (RFC 2177), on the caller's event loop.

    The same dialogue as :meth:`IMAPMailbox.wait` with asyncio streams, for a
    widget's push mode on the kernel's loop (the lab's servers run on a loop of their
    own, in another thread, so this cannot block them). Connect, STARTTLS (when
    offered, unless ``starttls=False``), LOGIN, SELECT, IDLE; ``ready`` is set once the
    server said ``+ idling``; returns the untagged lines of the first news (EXISTS,
    EXPUNGE or FETCH) after DONE and LOGOUT, or ``[]`` after ``timeout`` seconds (None:
    wait for ever). Cancelling the task closes the connection. Raises
    :class:`MailServerError` (and :class:`MUAError` for bad input).
    """
    address = _single_address(address)
    where = endpoint(target, "imap", address, port)
    settings = _IdleSettings(address, password, where, starttls)
    steps = _idle_dialogue(settings, folder, timeout)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(where.host, where.port), io_timeout
        )
    except OSError as error:  # TimeoutError is an OSError
        raise MailServerError(_network_words(error, where, io_timeout)) from None
    try:
        step = next(steps)
        while True:
            reply: bytes | None = None
            if step.kind == "send":
                writer.write(step.data)
                await asyncio.wait_for(writer.drain(), io_timeout)
            elif step.kind in ("line", "wait"):
                limit = io_timeout if step.kind == "line" else step.timeout
                try:
                    reply = await asyncio.wait_for(reader.readline(), limit)
                except TimeoutError:
                    if step.kind == "line":
                        raise
                else:
                    if not reply:
                        raise EOFError("the server closed the connection")
            elif step.kind == "exactly":
                reply = await asyncio.wait_for(reader.readexactly(step.size), io_timeout)
            elif step.kind == "starttls":
                name = where.server_hostname or where.host
                await writer.start_tls(tls_context(where), server_hostname=name)
            elif step.kind == "ready" and ready is not None:
                ready.set()
            step = steps.send(reply)
    except StopIteration as done:
        return done.value
    except (OSError, EOFError, asyncio.IncompleteReadError, ValueError) as error:
        if isinstance(error, MUAError):
            raise
        raise MailServerError(_network_words(error, where, io_timeout)) from None
    finally:
        steps.close()
        writer.close()  # also when cancelled: the server sees the connection end
        with contextlib.suppress(OSError, TimeoutError):  # let the loop finish closing it
            await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)
