"""The IMAP4rev1 protocol core: one whole command in, a :class:`Response` out (RFC 3501).

Role
    Everything IMAP *means* lives here: the four states, the login, the selected
    mailbox and its sequence numbers, FETCH, STORE, SEARCH, COPY, MOVE, EXPUNGE and
    the untagged updates that tell a client what other sessions changed. Nothing here
    touches a socket. The asyncio shell (``imapserver.py``) collects one command with
    its literals, calls :meth:`IMAPSession.receive`, and writes the lines of the
    :class:`Response`, each followed by CRLF. So a notebook can speak IMAP without any
    network::

        >>> s = IMAPSession(lab.store, {"alice@north.test": "alice-secret"},
        ...                 hostname="imap.north.test")
        >>> s.receive(b'a1 LOGIN alice@north.test alice-secret')
        a1 OK [CAPABILITY IMAP4rev1 ...] LOGIN completed
        >>> s.receive(b"a2 SELECT INBOX")
        * FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft $Forwarded)
        * 2 EXISTS
        ...
        a2 OK [READ-WRITE] SELECT completed

The layers ::

    imapparse.py      bytes -> a typed command (Fetch, Store, ...) or ParseError (BAD)
    imap.py           this module: states, one ``imap_<NAME>`` method per command
    imapmessage.py    a message's ENVELOPE, BODYSTRUCTURE and BODY[section] octets
    imapmailboxes.py  mailbox names (modified UTF-7), LIST patterns, subscriptions
    store.py          the Maildir: UIDs, flags, folders

The states (RFC 3501 §3) ::

    greeting ─▶ NOT_AUTHENTICATED ─LOGIN/AUTHENTICATE─▶ AUTHENTICATED ─SELECT/EXAMINE─▶ SELECTED
                                                              ▲─────── CLOSE/UNSELECT ──────┘
    LOGOUT from any state ─▶ LOGOUT (the server says BYE and closes)

The selected mailbox and its updates (RFC 3501 §5.2, §7.3, §7.4)
    SELECT takes a snapshot: message *n* is the n-th message by UID. The snapshot
    changes only when this session tells its client: ``* n EXISTS`` for new mail,
    ``* n EXPUNGE`` for a message gone, ``* n FETCH (FLAGS ...)`` for flags changed by
    someone else (another IMAP session, a POP3 QUIT, a delivery, a student renaming a
    file). Before each tagged reply the core asks the store for the folder's version;
    only if it moved does it compare. While a client is in IDLE, the shell asks the
    core for :meth:`IMAPSession.updates` as soon as the store reports a change.

    RFC 3501 §7.4.1: no EXPUNGE may be sent during FETCH, STORE or SEARCH (the
    client could not tell which numbers it got). After those commands the core sends
    only EXISTS and FETCH news and keeps the expunges for the next command.

Choices a student should know about
    * ``\\Recent`` (RFC 3501 §2.3.2) goes to the first session that sees a message
      (SELECT, or an update); EXAMINE and STATUS show it without taking it. The
      server keeps this in memory: after a restart every message is recent once.
    * BODY[...] and RFC822 and RFC822.TEXT set ``\\Seen``; BODY.PEEK[...] and
      RFC822.HEADER do not. The FETCH response then includes the new FLAGS.
    * RFC822.SIZE is the size of the stored file (stored mail has CRLF line ends).
    * A message that another session expunged while it is still in our snapshot
      cannot be read any more: FETCH skips it and ends ``NO [EXPUNGEISSUED]`` (RFC
      2180 §4.1.2, RFC 5530).
    * Ten BAD replies in a row, or five failed logins, and the server says BYE.

Errors ::

    IMAPError       <tag> NO [CODE] text, or <tag> BAD text: the session goes on
     +-- LoginFailed    NO [AUTHENTICATIONFAILED]: the shell waits before sending it
    ParseError (imapparse)  <tag> BAD text

RFCs followed
    RFC 3501 (IMAP4rev1), RFC 2177 (IDLE), RFC 4315 (UIDPLUS), RFC 6851 (MOVE),
    RFC 2342 (NAMESPACE), RFC 7888 (LITERAL+), RFC 6154 (SPECIAL-USE), RFC 5161
    (ENABLE), RFC 4959 (SASL-IR), RFC 4616 (PLAIN), RFC 3691 (UNSELECT), RFC 3348
    (CHILDREN), RFC 5530 (response codes), RFC 2180 (multi-access advice).

This module must not import asyncio, socket, ssl or ipywidgets: it is pure,
synchronous code. It reaches mail only through :class:`~mailkit_edu.store.Store`.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import dataclasses
import enum
import functools
import hmac
import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from . import imapparse as p
from .imapmailboxes import (
    MailboxNameError,
    Subscriptions,
    empty_pattern_reply,
    list_attributes,
    list_matches,
    to_store,
    to_wire,
)
from .imapmessage import MessageView, fetch_date, literal, nstring
from .store import (
    HIERARCHY_DELIMITER,
    INBOX,
    FolderExists,
    InvalidName,
    MessageInfo,
    NoSuchFolder,
    NoSuchMessage,
    Store,
    StoreError,
    TooManyKeywords,
    sorted_flags,
)

__all__ = [
    "CAPABILITIES",
    "MAX_BAD_COMMANDS",
    "MAX_FAILED_LOGINS",
    "IMAPError",
    "IMAPSession",
    "LoginFailed",
    "RecentFlags",
    "Response",
    "State",
]

log = logging.getLogger(__name__)

#: What we offer, always (RFC 3501 §7.2.1); STARTTLS, AUTH=PLAIN and LOGINDISABLED
#: are added or left out by state (see :meth:`IMAPSession.capabilities`).
CAPABILITIES = (
    "IMAP4rev1",
    "LITERAL+",
    "SASL-IR",
    "IDLE",
    "UIDPLUS",
    "MOVE",
    "NAMESPACE",
    "SPECIAL-USE",
    "ENABLE",
    "UNSELECT",
    "CHILDREN",
)
#: This many BAD replies in a row and the server says BYE (a confused or hostile client).
MAX_BAD_COMMANDS = 10
#: This many failed logins in one connection and the server says BYE.
MAX_FAILED_LOGINS = 5
#: The flags a client may store (RFC 3501 §2.3.2), and $Forwarded (a Maildir letter).
SYSTEM_FLAGS = ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "$Forwarded")

SEEN = "\\Seen"
DELETED = "\\Deleted"
RECENT = "\\Recent"


class State(enum.Enum):
    """The states of an IMAP session (RFC 3501 §3)."""

    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


NOT_AUTHENTICATED, AUTHENTICATED, SELECTED, LOGOUT = State


# --------------------------------------------------------------------------- replies


@dataclass(repr=False)
class Response:
    """What the server sends for one command, and what the shell does next.

    ``lines`` are the response lines without their final CRLF; a line that carries a
    literal (``* 1 FETCH (BODY[] {310}`` CRLF, the octets, ``)``) has it inside. For a
    large FETCH, ``lines`` is a generator, so the shell can send as it goes instead of
    holding every message in memory; :meth:`text` reads it all.
    """

    lines: Iterable[bytes]
    close: bool = False  # close the connection after sending (LOGOUT, BYE)
    start_tls: bool = False  # start TLS right after sending (STARTTLS)
    failed_login: bool = False  # wait a moment before sending (slows password guessing)
    idle: bool = False  # the client is now in IDLE: updates are pushed until DONE

    def text(self) -> str:
        """The lines as text, as a student would read them (reads a generator once)."""
        self.lines = list(self.lines)
        return "\n".join(line.decode("utf-8", "replace") for line in self.lines)

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        then = [n for n in ("close", "start_tls", "failed_login", "idle") if getattr(self, n)]
        return self.text() + (f"\n[then: {', '.join(then)}]" if then else "")


class IMAPError(Exception):
    """An expected failure: ``<tag> NO [CODE] text`` (or BAD); the session goes on."""

    def __init__(self, text: str, code: str | None = None, *, status: str = "NO") -> None:
        super().__init__(text)
        self.text = text
        self.code = code
        self.status = status

    def line(self, tag: str) -> bytes:
        code = f"[{self.code}] " if self.code else ""
        return f"{tag} {self.status} {code}{self.text}".encode("utf-8", "replace")


class LoginFailed(IMAPError):
    """RFC 5530 AUTHENTICATIONFAILED: the same words for a wrong user and a wrong password."""

    def __init__(self) -> None:
        super().__init__("invalid user name or password", "AUTHENTICATIONFAILED")


def _bad(text: str) -> IMAPError:
    return IMAPError(text, status="BAD")


# --------------------------------------------------------------------------- \Recent


class RecentFlags:
    """Who saw which message first, for ``\\Recent`` (RFC 3501 §2.3.2).

    One per server, shared by its sessions: per (account, folder) the highest UID some
    session has already been told about. A message with a higher UID is recent for the
    next session that sees it, and for no other. The first look at a folder after the
    server started cannot know what earlier sessions saw, so then every message is
    recent: RFC 3501 §2.3.2 says a message SHOULD be considered recent when the server
    cannot tell.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], int] = {}

    def claim(self, address: str, folder: str, uids: list[int]) -> set[int]:
        """The UIDs (sorted list) that are recent for the caller; from now on, for no other."""
        with self._lock:
            last = self._seen.get((address, folder), 0)  # 0: first look, all are recent
            start = bisect.bisect_right(uids, last)
            if start < len(uids):
                self._seen[(address, folder)] = uids[-1]
            return set(uids[start:])

    def peek(self, address: str, folder: str, uids: list[int]) -> set[int]:
        """The UIDs that are recent, without taking them (EXAMINE, STATUS)."""
        with self._lock:
            last = self._seen.get((address, folder), 0)
        return set(uids[bisect.bisect_right(uids, last) :])


# --------------------------------------------------------------------------- dispatch


def command(*states: State) -> Callable:
    """Declare the states a command is allowed in (RFC 3501 §6)."""

    def declare(method: Callable) -> Callable:
        method.states = frozenset(states)
        return method

    return declare


@functools.cache
def command_table(cls: type) -> dict[str, str]:
    """{"FETCH": "imap_FETCH", ...}: every ``imap_`` method of ``cls``, found once per class."""
    return {name.removeprefix("imap_"): name for name in dir(cls) if name.startswith("imap_")}


_STATE_WORDS = {
    NOT_AUTHENTICATED: "before login",
    AUTHENTICATED: "after login",
    SELECTED: "with a mailbox selected",
    LOGOUT: "after LOGOUT",
}


# --------------------------------------------------------------------------- the mailbox


@dataclass
class Selected:
    """The selected mailbox as this session's client knows it (RFC 3501 §5.2).

    ``messages[n - 1]`` is message number n. ``uids`` are the same messages' UIDs,
    ascending (for bisect). ``gone`` holds UIDs another session expunged that the
    client has not been told about yet (it may not be told during FETCH, STORE and
    SEARCH).
    """

    folder: str
    read_only: bool
    messages: list[MessageInfo]
    uids: list[int]
    version: int
    uidvalidity: int
    recent: set[int] = field(default_factory=set)
    gone: set[int] = field(default_factory=set)

    def number_of(self, uid: int) -> int | None:
        """The message number of ``uid``, or None."""
        position = bisect.bisect_left(self.uids, uid)
        if position < len(self.uids) and self.uids[position] == uid:
            return position + 1
        return None


# --------------------------------------------------------------------------- the session


class IMAPSession:
    """One IMAP conversation, from the greeting to LOGOUT (or a dropped connection)."""

    def __init__(
        self,
        store: Store,
        passwords: Mapping[str, str],
        *,
        hostname: str,
        recent: RecentFlags | None = None,
        require_tls: bool = False,
        tls_available: bool = False,
        tls_active: bool = False,
    ) -> None:
        self.store = store
        self.passwords = {address.lower(): password for address, password in passwords.items()}
        self.hostname = hostname
        self.recent = recent if recent is not None else RecentFlags()
        self.require_tls = require_tls
        self.tls_available = tls_available
        self.tls_active = tls_active
        self.state = NOT_AUTHENTICATED
        self.user: str | None = None
        self.selected: Selected | None = None
        #: True after "AUTHENTICATE PLAIN" without an initial response: the next line
        #: is the client's base64 answer, not a command.
        self.expecting_sasl = False
        #: True during IDLE: the next line should be DONE.
        self.idling = False
        self._pending_tag = ""  # the tag of the AUTHENTICATE or IDLE in progress
        self._bad_commands = 0
        self._failed_logins = 0

    # ------------------------------------------------------------------ entry points

    def greeting(self) -> Response:
        """The first line (RFC 3501 §7.1.1), with the capabilities (saves a round trip)."""
        caps = " ".join(self.capabilities())
        return Response([f"* OK [CAPABILITY {caps}] {self.hostname} IMAP4rev1 ready".encode()])

    def receive(self, data: bytes) -> Response:
        """Answer one whole command (its lines and literals, without the last CRLF).

        After AUTHENTICATE without an initial response (:attr:`expecting_sasl`) and
        during IDLE (:attr:`idling`), ``data`` is one line, not a command.
        """
        if data.endswith(b"\n") and data.count(b"\n") == 1:
            data = data[:-1].removesuffix(b"\r")  # one line typed in a cell with its CRLF
        return self.receive_exact(data)

    def receive_exact(self, data: bytes) -> Response:
        """:meth:`receive` for the shell, which passes the command exactly as read:
        without its final CRLF, so a literal at the end keeps its own last CRLF."""
        if self.state is LOGOUT:
            return Response([b"* BYE the session is over"], close=True)
        if self.expecting_sasl:
            return self._guarded(self._pending_tag, lambda: self._sasl_response(data))
        if self.idling:
            return self._guarded(self._pending_tag, lambda: self._idle_done(data))
        try:
            cmd = p.parse_command(data)
        except p.ParseError as error:
            return self._count_bad(Response([error.response().encode()]), error.status == "BAD")
        return self._guarded(cmd.tag, lambda: self._dispatch(cmd))

    def updates(self) -> list[bytes]:
        """Untagged news of the selected mailbox, now (the shell calls it during IDLE)."""
        if self.selected is None or self.state is not SELECTED:
            return []
        return self._sync(expunges=True)

    def tls_started(self) -> None:
        """The STARTTLS handshake is done (RFC 3501 §6.2.1)."""
        self.tls_active = True

    def connection_lost(self) -> None:
        """The connection ended. Nothing to undo: every change was made when asked."""
        self.state = LOGOUT
        self.selected = None
        self.idling = self.expecting_sasl = False

    def capabilities(self) -> list[str]:
        """The capability list for the current state (RFC 3501 §7.2.1)."""
        caps = list(CAPABILITIES)
        if self.state is NOT_AUTHENTICATED:
            if self.tls_available and not self.tls_active:
                caps.append("STARTTLS")
            if self.require_tls and not self.tls_active:
                caps.append("LOGINDISABLED")  # RFC 3501 §6.2.3
            else:
                caps.append("AUTH=PLAIN")
        return caps

    # ------------------------------------------------------------------ the dispatcher

    def _dispatch(self, cmd: p.Command) -> Response:
        name = command_table(type(self)).get(cmd.name)
        if name is None:  # parsed, but this core has no method for it
            raise _bad(f"{cmd.name} is not implemented")
        method = getattr(self, name)
        if self.state not in method.states:
            allowed = " or ".join(_STATE_WORDS[s] for s in State if s in method.states)
            raise _bad(f"{cmd.name} is only valid {allowed} (now: {self.state.value})")
        return method(cmd)

    def _guarded(self, tag: str, run: Callable[[], Response]) -> Response:
        """Run a command; turn expected failures into NO/BAD lines, bugs into NO [SERVERBUG]."""
        try:
            response = run()
        except LoginFailed as error:
            self._failed_logins += 1
            if self._failed_logins >= MAX_FAILED_LOGINS:
                self.state = LOGOUT
                lines = [error.line(tag), b"* BYE too many failed logins"]
                return Response(lines, close=True, failed_login=True)
            return Response([error.line(tag)], failed_login=True)
        except IMAPError as error:
            return self._count_bad(
                Response([*self._news(tag), error.line(tag)]), error.status == "BAD"
            )
        except Exception:  # a bug or a broken store: log it here, never on the wire
            log.exception("IMAP session of %s: unexpected error", self.user or "(nobody)")
            self.idling = self.expecting_sasl = False
            return Response([f"{tag} NO [SERVERBUG] internal server error".encode()])
        self._bad_commands = 0
        return response

    def _news(self, tag: str) -> list[bytes]:
        """Updates to send before a NO: the state of the mailbox may have moved on."""
        if tag == "*" or self.selected is None or self.state is not SELECTED:
            return []
        try:
            return self._sync(expunges=False)  # RFC 3501 §7.4.1: the failed command may be a FETCH
        except StoreError:
            return []

    def _count_bad(self, response: Response, bad: bool) -> Response:
        if not bad:
            self._bad_commands = 0
            return response
        self._bad_commands += 1
        if self._bad_commands < MAX_BAD_COMMANDS:
            return response
        self.state = LOGOUT
        lines = [*response.lines, b"* BYE too many bad commands"]
        return Response(lines, close=True)

    def _done(self, tag: str, text: str, lines: Iterable[bytes] = (), *, expunges=True) -> Response:
        """The command's own lines, then the mailbox news, then ``<tag> OK text``."""
        news = self._sync(expunges=expunges) if self.state is SELECTED else []
        return Response([*lines, *news, f"{tag} OK {text}".encode()])

    # ------------------------------------------------------------------ any state (§6.1)

    @command(NOT_AUTHENTICATED, AUTHENTICATED, SELECTED)
    def imap_CAPABILITY(self, cmd: p.Capability) -> Response:
        """CAPABILITY (RFC 3501 §6.1.1): what this server offers, now."""
        line = f"* CAPABILITY {' '.join(self.capabilities())}".encode()
        return self._done(cmd.tag, "CAPABILITY completed", [line])

    @command(NOT_AUTHENTICATED, AUTHENTICATED, SELECTED)
    def imap_NOOP(self, cmd: p.Noop) -> Response:
        """NOOP (RFC 3501 §6.1.2): nothing, but the mailbox news come with it."""
        return self._done(cmd.tag, "NOOP completed")

    @command(NOT_AUTHENTICATED, AUTHENTICATED, SELECTED)
    def imap_LOGOUT(self, cmd: p.Logout) -> Response:
        """LOGOUT (RFC 3501 §6.1.3): BYE, then OK, then the server closes."""
        self.state = LOGOUT
        self.selected = None
        bye = f"* BYE {self.hostname} IMAP4rev1 server logging out".encode()
        return Response([bye, f"{cmd.tag} OK LOGOUT completed".encode()], close=True)

    # ------------------------------------------------------------------ not authenticated (§6.2)

    @command(NOT_AUTHENTICATED)
    def imap_STARTTLS(self, cmd: p.StartTLS) -> Response:
        """STARTTLS (RFC 3501 §6.2.1): the shell starts TLS right after this OK."""
        if self.tls_active:
            raise _bad("TLS is already active")
        if not self.tls_available:
            raise _bad("STARTTLS is not available on this server")
        return Response([f"{cmd.tag} OK Begin TLS negotiation now".encode()], start_tls=True)

    @command(NOT_AUTHENTICATED)
    def imap_LOGIN(self, cmd: p.Login) -> Response:
        """LOGIN user password (RFC 3501 §6.2.3): the password in clear text."""
        if self.require_tls and not self.tls_active:
            raise IMAPError("LOGIN is disabled before STARTTLS on this server", "PRIVACYREQUIRED")
        return self._log_in(cmd.tag, self._check_password(cmd.userid, cmd.password), "LOGIN")

    @command(NOT_AUTHENTICATED)
    def imap_AUTHENTICATE(self, cmd: p.Authenticate) -> Response:
        """AUTHENTICATE PLAIN (RFC 3501 §6.2.2, RFC 4616), with SASL-IR (RFC 4959)."""
        if cmd.mechanism != "PLAIN":
            raise IMAPError(f"unsupported SASL mechanism {cmd.mechanism}; use PLAIN")
        if self.require_tls and not self.tls_active:
            raise IMAPError("authentication needs TLS on this server", "PRIVACYREQUIRED")
        if cmd.initial_response is not None:
            return self._auth_plain(cmd.tag, cmd.initial_response)
        self.expecting_sasl = True
        self._pending_tag = cmd.tag
        return Response([b"+ "])  # an empty challenge: "send your response"

    def _sasl_response(self, line: bytes) -> Response:
        """The line after "+ ": base64 of the PLAIN response, or "*" to cancel."""
        self.expecting_sasl = False
        if line == b"*":
            raise _bad("authentication cancelled")  # RFC 3501 §6.2.2
        return self._auth_plain(self._pending_tag, line)

    def _auth_plain(self, tag: str, encoded: bytes) -> Response:
        """RFC 4616: base64 of ``authzid NUL authcid NUL password``; "=" is empty."""
        try:
            plain = b"" if encoded == b"=" else base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise _bad("invalid base64 in the PLAIN response") from None
        try:
            authzid, authcid, password = (part.decode("utf-8") for part in plain.split(b"\0"))
        except ValueError:
            raise _bad("PLAIN wants authzid NUL authcid NUL password") from None
        if authzid and authzid.lower() != authcid.lower():
            raise IMAPError("you may only log in as yourself (authzid)", "AUTHORIZATIONFAILED")
        return self._log_in(tag, self._check_password(authcid, password), "AUTHENTICATE")

    def _check_password(self, name: str, password: str) -> str:
        expected = self.passwords.get(name.lower())
        if expected is None or not _same(expected, password):
            raise LoginFailed()
        return name.lower()

    def _log_in(self, tag: str, address: str, verb: str) -> Response:
        if not self.store.has_account(address):
            raise IMAPError("this account has no mailbox here", "UNAVAILABLE")
        self.user = address
        self.state = AUTHENTICATED
        caps = " ".join(self.capabilities())
        return Response([f"{tag} OK [CAPABILITY {caps}] {verb} completed".encode()])

    # ------------------------------------------------------------------ authenticated (§6.3)

    @command(AUTHENTICATED, SELECTED)
    def imap_ENABLE(self, cmd: p.Enable) -> Response:
        """ENABLE (RFC 5161): we offer no extension that needs enabling, so none is."""
        return self._done(cmd.tag, "ENABLE completed", [b"* ENABLED"])

    @command(AUTHENTICATED, SELECTED)
    def imap_SELECT(self, cmd: p.Select) -> Response:
        """SELECT mailbox (RFC 3501 §6.3.1): open it read-write."""
        return self._select(cmd.tag, cmd.mailbox, read_only=False)

    @command(AUTHENTICATED, SELECTED)
    def imap_EXAMINE(self, cmd: p.Examine) -> Response:
        """EXAMINE mailbox (RFC 3501 §6.3.2): open it read-only."""
        return self._select(cmd.tag, cmd.mailbox, read_only=True)

    def _select(self, tag: str, mailbox: str, *, read_only: bool) -> Response:
        # RFC 3501 §6.3.1: a SELECT first deselects, even when it then fails.
        self.selected = None
        self.state = AUTHENTICATED
        folder = self._folder(mailbox)
        try:
            version, messages = self.store.snapshot(self.user, folder)
            uidvalidity = self.store.uidvalidity(self.user, folder)
            uidnext = self.store.uidnext(self.user, folder)
        except NoSuchFolder:
            raise IMAPError(f"no mailbox {to_wire(folder)}", "NONEXISTENT") from None
        uids = [info.uid for info in messages]
        claim = self.recent.peek if read_only else self.recent.claim
        selected = Selected(folder, read_only, messages, uids, version, uidvalidity)
        selected.recent = claim(self.user, folder, uids)
        keywords = set().union(*(info.flags for info in messages)) - set(SYSTEM_FLAGS)
        flags = " ".join([*SYSTEM_FLAGS, *sorted_flags(keywords)])
        lines = [
            f"* FLAGS ({flags})".encode(),
            b"* %d EXISTS" % len(messages),
            b"* %d RECENT" % len(selected.recent),
        ]
        unseen = next((n for n, info in enumerate(messages, 1) if SEEN not in info.flags), None)
        if unseen is not None:
            lines.append(b"* OK [UNSEEN %d] message %d is the first unseen" % (unseen, unseen))
        permanent = "" if read_only else f"{flags} \\*"
        lines += [
            f"* OK [PERMANENTFLAGS ({permanent})] flags you can change".encode(),
            b"* OK [UIDVALIDITY %d] UIDs valid" % uidvalidity,
            b"* OK [UIDNEXT %d] predicted next UID" % uidnext,
        ]
        self.selected = selected
        self.state = SELECTED
        mode = "READ-ONLY" if read_only else "READ-WRITE"
        verb = "EXAMINE" if read_only else "SELECT"
        return Response([*lines, f"{tag} OK [{mode}] {verb} completed".encode()])

    @command(AUTHENTICATED, SELECTED)
    def imap_CREATE(self, cmd: p.Create) -> Response:
        """CREATE mailbox (RFC 3501 §6.3.3); a trailing "." is dropped, parents are made."""
        name = cmd.mailbox.removesuffix(HIERARCHY_DELIMITER)
        folder = self._folder(name)
        try:
            self.store.create_folder(self.user, folder)
        except FolderExists:
            raise IMAPError(f"mailbox {to_wire(folder)} already exists", "ALREADYEXISTS") from None
        except InvalidName as error:
            raise IMAPError(f"cannot create {to_wire(folder)}: {error}", "CANNOT") from None
        return self._done(cmd.tag, "CREATE completed")

    @command(AUTHENTICATED, SELECTED)
    def imap_DELETE(self, cmd: p.Delete) -> Response:
        """DELETE mailbox (RFC 3501 §6.3.4): its messages go too; sub-folders stay."""
        folder = self._folder(cmd.mailbox)
        if folder == INBOX:
            raise IMAPError("INBOX cannot be deleted", "CANNOT")
        if self.selected is not None and self.selected.folder == folder:
            raise IMAPError("close this mailbox before deleting it", "INUSE")
        try:
            self.store.delete_folder(self.user, folder)
        except NoSuchFolder:
            raise IMAPError(f"no mailbox {to_wire(folder)}", "NONEXISTENT") from None
        # The subscription stays (RFC 3501 §6.3.6): LSUB then shows the name \\Noselect.
        return self._done(cmd.tag, "DELETE completed")

    @command(AUTHENTICATED, SELECTED)
    def imap_RENAME(self, cmd: p.Rename) -> Response:
        """RENAME old new (RFC 3501 §6.3.5); sub-folders move with it. Not INBOX."""
        old, new = self._folder(cmd.old), self._folder(cmd.new)
        if old == INBOX:
            raise IMAPError("renaming INBOX is not supported here", "CANNOT")
        try:
            self.store.rename_folder(self.user, old, new)
        except NoSuchFolder:
            raise IMAPError(f"no mailbox {to_wire(old)}", "NONEXISTENT") from None
        except FolderExists:
            raise IMAPError(f"mailbox {to_wire(new)} already exists", "ALREADYEXISTS") from None
        except InvalidName as error:
            raise IMAPError(f"cannot rename: {error}", "CANNOT") from None
        return self._done(cmd.tag, "RENAME completed")

    @command(AUTHENTICATED, SELECTED)
    def imap_SUBSCRIBE(self, cmd: p.Subscribe) -> Response:
        """SUBSCRIBE mailbox (RFC 3501 §6.3.6): add it to the LSUB list."""
        folder = self._folder(cmd.mailbox)
        if folder not in self.store.folders(self.user):
            raise IMAPError(f"no mailbox {to_wire(folder)}", "NONEXISTENT")
        Subscriptions(self.store, self.user).subscribe(folder)
        return self._done(cmd.tag, "SUBSCRIBE completed")

    @command(AUTHENTICATED, SELECTED)
    def imap_UNSUBSCRIBE(self, cmd: p.Unsubscribe) -> Response:
        """UNSUBSCRIBE mailbox (RFC 3501 §6.3.7): the mailbox itself stays."""
        Subscriptions(self.store, self.user).unsubscribe(self._folder(cmd.mailbox))
        return self._done(cmd.tag, "UNSUBSCRIBE completed")

    @command(AUTHENTICATED, SELECTED)
    def imap_LIST(self, cmd: p.List) -> Response:
        """LIST reference pattern (RFC 3501 §6.3.8), with RFC 5258/6154 options."""
        if cmd.pattern == "" and not cmd.selection_options:
            attributes, name = empty_pattern_reply()
            lines = [f'* LIST ({" ".join(attributes)}) "{HIERARCHY_DELIMITER}" ""'.encode()]
            return self._done(cmd.tag, "LIST completed", lines)
        folders = self.store.folders(self.user)
        subscribed = Subscriptions(self.store, self.user).names()
        only_subscribed = "SUBSCRIBED" in cmd.selection_options
        pool = subscribed if only_subscribed else folders
        special_use_only = "SPECIAL-USE" in cmd.selection_options
        lines = []
        for name in self._matches(cmd.reference, cmd.pattern, pool):
            attributes = list_attributes(
                name, folders, special_use="SPECIAL-USE" in cmd.return_options
            )
            if special_use_only and not any(a in attributes for a in _SPECIAL_USE_ATTRIBUTES):
                continue
            if (only_subscribed or "SUBSCRIBED" in cmd.return_options) and name in subscribed:
                attributes.append("\\Subscribed")
            if only_subscribed and name not in folders:
                attributes.append("\\NonExistent")
            lines.append(_list_line("LIST", attributes, name))
        return self._done(cmd.tag, "LIST completed", lines)

    @command(AUTHENTICATED, SELECTED)
    def imap_LSUB(self, cmd: p.Lsub) -> Response:
        """LSUB reference pattern (RFC 3501 §6.3.9): LIST over the subscribed names."""
        if cmd.pattern == "":
            attributes, name = empty_pattern_reply()
            lines = [f'* LSUB ({" ".join(attributes)}) "{HIERARCHY_DELIMITER}" ""'.encode()]
            return self._done(cmd.tag, "LSUB completed", lines)
        subscribed = Subscriptions(self.store, self.user).names()
        lines = []
        for name in self._matches(cmd.reference, cmd.pattern, subscribed):
            attributes = [a for a in list_attributes(name, subscribed, special_use=False)]
            lines.append(_list_line("LSUB", attributes, name))
        return self._done(cmd.tag, "LSUB completed", lines)

    def _matches(self, reference: str, pattern: str, names: list[str]) -> list[str]:
        try:
            return list_matches(reference, pattern, names)
        except MailboxNameError as error:
            raise _bad(str(error)) from None

    @command(AUTHENTICATED, SELECTED)
    def imap_NAMESPACE(self, cmd: p.Namespace) -> Response:
        """NAMESPACE (RFC 2342): one personal namespace, "" with "." between levels."""
        line = f'* NAMESPACE (("" "{HIERARCHY_DELIMITER}")) NIL NIL'.encode()
        return self._done(cmd.tag, "NAMESPACE completed", [line])

    @command(AUTHENTICATED, SELECTED)
    def imap_STATUS(self, cmd: p.Status) -> Response:
        """STATUS mailbox (items) (RFC 3501 §6.3.10): counts, without selecting it."""
        folder = self._folder(cmd.mailbox)
        try:
            messages = self.store.messages(self.user, folder)
            values = {
                "MESSAGES": len(messages),
                "UIDNEXT": self.store.uidnext(self.user, folder),
                "UIDVALIDITY": self.store.uidvalidity(self.user, folder),
                "UNSEEN": sum(1 for info in messages if SEEN not in info.flags),
            }
        except NoSuchFolder:
            raise IMAPError(f"no mailbox {to_wire(folder)}", "NONEXISTENT") from None
        if "RECENT" in cmd.items:
            uids = [info.uid for info in messages]
            values["RECENT"] = len(self.recent.peek(self.user, folder, uids))
        items = " ".join(f"{item} {values[item]}" for item in cmd.items)
        line = b"* STATUS " + _mailbox_name(folder) + f" ({items})".encode()
        return self._done(cmd.tag, "STATUS completed", [line])

    @command(AUTHENTICATED, SELECTED)
    def imap_APPEND(self, cmd: p.Append) -> Response:
        """APPEND mailbox [(flags)] [date] {size} (RFC 3501 §6.3.11), with APPENDUID."""
        folder = self._folder(cmd.mailbox)
        flags = self._storable(cmd.flags)
        when = cmd.date.timestamp() if cmd.date is not None else None
        try:
            info = self.store.deliver(
                self.user, cmd.message, folder=folder, flags=flags, internaldate=when
            )
        except NoSuchFolder:
            raise IMAPError(f"no mailbox {to_wire(folder)}", "TRYCREATE") from None
        except TooManyKeywords as error:
            raise IMAPError(str(error), "LIMIT") from None
        uidvalidity = self.store.uidvalidity(self.user, folder)
        return self._done(cmd.tag, f"[APPENDUID {uidvalidity} {info.uid}] APPEND completed")

    @command(AUTHENTICATED, SELECTED)
    def imap_IDLE(self, cmd: p.Idle) -> Response:
        """IDLE (RFC 2177): "+ idling", then news as they happen, until the client's DONE."""
        self.idling = True
        self._pending_tag = cmd.tag
        news = self._sync(expunges=True) if self.state is SELECTED else []
        return Response([b"+ idling", *news], idle=True)

    def _idle_done(self, line: bytes) -> Response:
        self.idling = False
        if line.upper() != b"DONE":
            raise _bad("expected DONE to end IDLE")
        return self._done(self._pending_tag, "IDLE terminated")

    # ------------------------------------------------------------------ selected (§6.4)

    @command(SELECTED)
    def imap_CHECK(self, cmd: p.Check) -> Response:
        """CHECK (RFC 3501 §6.4.1): every change is on disk already; the news come along."""
        return self._done(cmd.tag, "CHECK completed")

    @command(SELECTED)
    def imap_CLOSE(self, cmd: p.Close) -> Response:
        """CLOSE (RFC 3501 §6.4.2): expunge silently (unless read-only), then deselect."""
        selected = self._mailbox()
        if not selected.read_only:  # the flags as they are now, whoever set them
            messages = self.store.messages(self.user, selected.folder)
            doomed = [info.uid for info in messages if DELETED in info.flags]
            self.store.expunge(self.user, selected.folder, doomed)
        self.selected = None
        self.state = AUTHENTICATED
        return Response([f"{cmd.tag} OK CLOSE completed".encode()])

    @command(SELECTED)
    def imap_UNSELECT(self, cmd: p.Unselect) -> Response:
        """UNSELECT (RFC 3691): deselect without expunging."""
        self.selected = None
        self.state = AUTHENTICATED
        return Response([f"{cmd.tag} OK UNSELECT completed".encode()])

    @command(SELECTED)
    def imap_EXPUNGE(self, cmd: p.Expunge) -> Response:
        """EXPUNGE (RFC 3501 §6.4.3), and UID EXPUNGE set (RFC 4315 §2.1)."""
        selected = self._writable()
        news = self._sync(expunges=True)  # first learn who set or cleared \\Deleted meanwhile
        doomed = [
            info.uid
            for info in selected.messages
            if DELETED in info.flags
            and (cmd.sequence_set is None or self._in_uid_set(cmd.sequence_set, info.uid))
        ]
        removed = set(self.store.expunge(self.user, selected.folder, doomed))
        return self._done(cmd.tag, "EXPUNGE completed", [*news, *self._forget(removed)])

    def _in_uid_set(self, sequence_set: p.SequenceSet, uid: int) -> bool:
        largest = self._mailbox().uids[-1] if self._mailbox().uids else 0
        return sequence_set.contains(uid, largest)

    @command(SELECTED)
    def imap_SEARCH(self, cmd: p.Search) -> Response:
        """[UID] SEARCH [CHARSET c] keys (RFC 3501 §6.4.4): the numbers (or UIDs) that match."""
        selected = self._mailbox()
        news = self._sync(expunges=cmd.uid)  # search the flags as they are now
        matcher = _Matcher(self, selected)
        found = [
            str(info.uid if cmd.uid else number)
            for number, info in enumerate(selected.messages, 1)
            if matcher.matches(cmd.criteria, number, info)
        ]
        line = ("* SEARCH " + " ".join(found)).rstrip().encode()
        return self._done(cmd.tag, "SEARCH completed", [*news, line], expunges=cmd.uid)

    @command(SELECTED)
    def imap_FETCH(self, cmd: p.Fetch) -> Response:
        """[UID] FETCH set (items) (RFC 3501 §6.4.5): the data of each message, in order."""
        selected = self._mailbox()
        # The client's numbers mean the messages it knows; the flags it gets are the
        # ones the store has now (RFC 3501 §7.4.1: no EXPUNGE during a FETCH by number).
        if cmd.uid:
            news = self._sync(expunges=True)
            numbers = self._numbers(cmd.sequence_set, True)
        else:
            numbers = self._numbers(cmd.sequence_set, False)
            news = self._sync(expunges=False)
        attributes = list(cmd.attributes)
        if cmd.uid and not any(a.name == "UID" for a in attributes):
            attributes.insert(0, p.FetchAttribute("UID"))  # RFC 3501 §6.4.8
        sets_seen = not selected.read_only and any(_sets_seen(a) for a in attributes)
        if sets_seen and not any(a.name == "FLAGS" for a in attributes):
            attributes.append(p.FetchAttribute("FLAGS"))  # tell the client about the new \Seen
        lines = self._fetch_lines(cmd, numbers, attributes, sets_seen)
        return Response(self._guarded_lines(cmd.tag, itertools.chain(news, lines)))

    def _guarded_lines(self, tag: str, lines: Iterator[bytes]) -> Iterator[bytes]:
        """A lazy response that fails in the middle still ends with a tagged line."""
        try:
            yield from lines
        except IMAPError as error:
            yield error.line(tag)
        except Exception:
            log.exception("IMAP session of %s: unexpected error in FETCH", self.user)
            yield f"{tag} NO [SERVERBUG] internal server error".encode()

    def _fetch_lines(
        self,
        cmd: p.Fetch,
        numbers: list[int],
        attributes: list[p.FetchAttribute],
        sets_seen: bool,
    ) -> Iterator[bytes]:
        selected = self._mailbox()
        needs_view = any(a.name in _NEEDS_VIEW for a in attributes)
        missing = False
        newly_seen: list[int] = []
        for number in numbers:
            info = selected.messages[number - 1]
            view = None
            if needs_view:
                try:
                    view = MessageView(self.store.read(self.user, selected.folder, info.uid))
                except NoSuchMessage:
                    missing = True
                    continue
            if sets_seen:  # add_flags_many skips the messages that have it already
                if SEEN not in info.flags:
                    info = _with_flags(info, info.flags | {SEEN})
                    selected.messages[number - 1] = info  # what the client is told
                newly_seen.append(info.uid)
            items = [self._fetch_item(attribute, info, view) for attribute in attributes]
            yield b"* %d FETCH (" % number + b" ".join(items) + b")"
        if newly_seen:
            self._set_seen(newly_seen)
        if missing:
            news = self._sync(expunges=cmd.uid)
            yield from news
            yield f"{cmd.tag} NO [EXPUNGEISSUED] some messages were expunged meanwhile".encode()
            return
        yield from self._sync(expunges=cmd.uid)
        yield f"{cmd.tag} OK FETCH completed".encode()

    def _set_seen(self, uids: list[int]) -> None:
        """Store the \\Seen that BODY[] gave, in one batch. The snapshot keeps what the
        client was told, so the next check reports any other change made meanwhile."""
        self.store.add_flags_many(self.user, self._mailbox().folder, uids, [SEEN])

    def _fetch_item(
        self, attribute: p.FetchAttribute, info: MessageInfo, view: MessageView | None
    ) -> bytes:
        name = attribute.name
        if name == "UID":
            return b"UID %d" % info.uid
        if name == "FLAGS":
            return b"FLAGS (" + self._flags_text(info) + b")"
        if name == "RFC822.SIZE":
            return b"RFC822.SIZE %d" % info.size
        if name == "INTERNALDATE":
            return b"INTERNALDATE " + fetch_date(info.internaldate)
        assert view is not None
        if name == "ENVELOPE":
            return b"ENVELOPE " + view.envelope()
        if name == "BODYSTRUCTURE":
            return b"BODYSTRUCTURE " + view.bodystructure(extensible=True)
        if name == "BODY" and attribute.section is None:
            return b"BODY " + view.bodystructure(extensible=False)
        if name == "BODY":
            data = view.section(attribute.section, attribute.partial)
            return attribute.response_name().encode() + b" " + literal(data)
        if name == "RFC822":
            return b"RFC822 " + literal(view.section(None))
        if name == "RFC822.HEADER":
            return b"RFC822.HEADER " + literal(view.header_bytes())
        if name == "RFC822.TEXT":
            return b"RFC822.TEXT " + literal(view.text_bytes())
        raise _bad(f"cannot fetch {name}")  # the parser lets nothing else through

    def _flags_text(self, info: MessageInfo) -> bytes:
        flags = _flag_bytes(info.flags)
        if info.uid in self._mailbox().recent:
            return flags + b" \\Recent" if flags else b"\\Recent"
        return flags

    @command(SELECTED)
    def imap_STORE(self, cmd: p.Store) -> Response:
        """[UID] STORE set [+|-]FLAGS[.SILENT] (flags) (RFC 3501 §6.4.6)."""
        selected = self._writable()
        numbers = self._numbers(cmd.sequence_set, cmd.uid)
        flags = self._storable(cmd.flags)
        change = {
            "": self.store.set_flags,
            "+": self.store.add_flags,
            "-": self.store.remove_flags,
        }[cmd.mode]
        lines = []
        missing = False
        for number in numbers:
            uid = selected.uids[number - 1]
            try:
                info = change(self.user, selected.folder, uid, flags)
            except NoSuchMessage:
                missing = True
                continue
            except TooManyKeywords as error:
                raise IMAPError(str(error), "LIMIT") from None
            selected.messages[number - 1] = info
            if not cmd.silent:
                uid_item = b"UID %d " % uid if cmd.uid else b""
                lines.append(
                    b"* %d FETCH (%sFLAGS (%s))" % (number, uid_item, self._flags_text(info))
                )
        if missing:
            news = self._sync(expunges=cmd.uid)
            tail = f"{cmd.tag} NO [EXPUNGEISSUED] some messages were expunged meanwhile"
            return Response([*lines, *news, tail.encode()])
        return self._done(cmd.tag, "STORE completed", lines, expunges=cmd.uid)

    @command(SELECTED)
    def imap_COPY(self, cmd: p.Copy) -> Response:
        """[UID] COPY set mailbox (RFC 3501 §6.4.7), with COPYUID (RFC 4315)."""
        selected = self._mailbox()
        target = self._folder(cmd.mailbox)
        uids = [selected.uids[n - 1] for n in self._numbers(cmd.sequence_set, cmd.uid)]
        mapping = self._transfer(self.store.copy, selected.folder, uids, target)
        code = self._copyuid(target, mapping)
        return self._done(cmd.tag, f"{code}COPY completed")

    @command(SELECTED)
    def imap_MOVE(self, cmd: p.Move) -> Response:
        """[UID] MOVE set mailbox (RFC 6851): COPYUID first, then the EXPUNGEs, then OK."""
        selected = self._writable()
        target = self._folder(cmd.mailbox)
        uids = [selected.uids[n - 1] for n in self._numbers(cmd.sequence_set, cmd.uid)]
        mapping = self._transfer(self.store.move, selected.folder, uids, target)
        code = self._copyuid(target, mapping)
        lines = [f"* OK {code}moved".encode()] if code else []
        lines += self._forget(set(mapping))
        return self._done(cmd.tag, "MOVE completed", lines)

    def _transfer(
        self, how: Callable[..., dict[int, int]], source: str, uids: list[int], target: str
    ) -> dict[int, int]:
        try:
            return how(self.user, source, uids, target)
        except NoSuchFolder:
            raise IMAPError(f"no mailbox {to_wire(target)}", "TRYCREATE") from None

    def _copyuid(self, target: str, mapping: dict[int, int]) -> str:
        """``[COPYUID uidvalidity source-uids target-uids] `` (RFC 4315 §3), or ""."""
        if not mapping:
            return ""
        uidvalidity = self.store.uidvalidity(self.user, target)
        source = ",".join(str(uid) for uid in mapping)
        copies = ",".join(str(uid) for uid in mapping.values())
        return f"[COPYUID {uidvalidity} {source} {copies}] "

    # ------------------------------------------------------------------ the snapshot

    def _mailbox(self) -> Selected:
        assert self.selected is not None
        return self.selected

    def _writable(self) -> Selected:
        selected = self._mailbox()
        if selected.read_only:
            raise IMAPError(
                "the mailbox is read-only (EXAMINE): select it to change it", "READ-ONLY"
            )
        return selected

    def _numbers(self, sequence_set: p.SequenceSet, uid: bool) -> list[int]:
        """Message numbers of a sequence set (or of a UID set), ascending, each once."""
        selected = self._mailbox()
        if not uid:
            count = len(selected.messages)
            if sequence_set.highest_written > count or (count == 0 and _has_star(sequence_set)):
                raise _bad(
                    f"no such message: the mailbox has {count} "
                    f"(message numbers go from 1 to {count})"
                )
            return sequence_set.resolve(count)
        uids = selected.uids
        if not uids:
            return []
        positions: set[int] = set()
        largest = uids[-1]
        for first, last in sequence_set.ranges:
            low = largest if first is None else first
            high = largest if last is None else last
            low, high = min(low, high), max(low, high)
            start, end = bisect.bisect_left(uids, low), bisect.bisect_right(uids, high)
            positions.update(range(start + 1, end + 1))
        return sorted(positions)

    def _forget(self, uids: set[int]) -> list[bytes]:
        """Drop messages from the snapshot; ``* n EXPUNGE`` for each, highest number first."""
        selected = self._mailbox()
        lines = []
        for number in range(len(selected.messages), 0, -1):
            if selected.messages[number - 1].uid in uids:
                lines.append(b"* %d EXPUNGE" % number)
                del selected.messages[number - 1]
                del selected.uids[number - 1]
        selected.gone -= uids
        selected.recent -= uids
        return lines

    def _sync(self, *, expunges: bool) -> list[bytes]:
        """Compare the snapshot with the store; the untagged lines that tell the difference.

        RFC 3501 §5.2: the client learns of new mail (EXISTS, RECENT), flags changed by
        others (FETCH) and expunges (EXPUNGE, only when ``expunges``).
        """
        selected = self._mailbox()
        try:
            version = self.store.version(self.user, selected.folder)
        except NoSuchFolder:  # someone deleted the folder under us
            version = -1
        if version == selected.version and not (expunges and selected.gone):
            return []
        try:
            version, current = self.store.snapshot(self.user, selected.folder)
        except NoSuchFolder:
            version, current = -1, []
        by_uid = {info.uid: info for info in current}
        lines: list[bytes] = []
        selected.gone |= {uid for uid in selected.uids if uid not in by_uid}
        if expunges and selected.gone:
            lines += self._forget(set(selected.gone))
        for number, info in enumerate(selected.messages, 1):
            now = by_uid.get(info.uid)
            if now is not None and now is not info:
                selected.messages[number - 1] = now
                if now.flags != info.flags:
                    lines.append(b"* %d FETCH (FLAGS (%s))" % (number, self._flags_text(now)))
        highest = selected.uids[-1] if selected.uids else 0
        start = bisect.bisect_right([info.uid for info in current], highest)
        arrived = current[start:]
        if arrived:
            selected.messages.extend(arrived)
            selected.uids.extend(info.uid for info in arrived)
            if not selected.read_only:
                selected.recent |= self.recent.claim(self.user, selected.folder, selected.uids)
            lines.append(b"* %d EXISTS" % len(selected.messages))
            lines.append(b"* %d RECENT" % len(selected.recent))
        selected.version = version
        return lines

    # ------------------------------------------------------------------ helpers

    def _folder(self, mailbox: str) -> str:
        """The store folder for a mailbox name from the client: NO [CANNOT] for a name the
        store refuses (``a/b``, ``..``), BAD for one that is not modified UTF-7."""
        try:
            return to_store(mailbox)
        except MailboxNameError as error:
            try:
                p.decode_mutf7(mailbox)
            except ValueError:  # not even modified UTF-7: a syntax error (RFC 3501 §5.1.3)
                raise _bad(str(error)) from None
            raise IMAPError(str(error), "CANNOT") from None  # a name the store refuses

    def _storable(self, flags: tuple[str, ...]) -> list[str]:
        """Flags a client may store: \\Recent is the server's (RFC 3501 §2.3.2)."""
        result = []
        for flag in flags:
            if flag.lower() == RECENT.lower():
                continue
            if flag.startswith("\\") and flag.lower() not in _SYSTEM_LOWER:
                raise _bad(f"{flag} is not a flag: the system flags are {' '.join(SYSTEM_FLAGS)}")
            result.append(flag)
        return result


# --------------------------------------------------------------------------- SEARCH


class _Matcher:
    """Evaluates SEARCH keys (RFC 3501 §6.4.4) on the messages of a snapshot.

    The message's bytes are read only for keys that need them (headers, body, text,
    sent dates), and at most once per message.
    """

    def __init__(self, session: IMAPSession, selected: Selected) -> None:
        self.session = session
        self.selected = selected
        self.largest_number = len(selected.messages)
        self.largest_uid = selected.uids[-1] if selected.uids else 0
        self._views: dict[int, MessageView | None] = {}

    def view(self, info: MessageInfo) -> MessageView | None:
        if info.uid not in self._views:
            self._views.clear()  # one message at a time: memory stays flat
            try:
                data = self.session.store.read(self.session.user, self.selected.folder, info.uid)
                self._views[info.uid] = MessageView(data)
            except NoSuchMessage:
                self._views[info.uid] = None
        return self._views[info.uid]

    def matches(self, key: p.SearchKey, number: int, info: MessageInfo) -> bool:
        op, args = key.op, key.args
        flags = info.flags
        if op == "AND":
            return all(self.matches(k, number, info) for k in args)  # type: ignore[arg-type]
        if op == "OR":
            return self.matches(args[0], number, info) or self.matches(args[1], number, info)  # type: ignore[arg-type]
        if op == "NOT":
            return not self.matches(args[0], number, info)  # type: ignore[arg-type]
        if op == "ALL":
            return True
        if op == "SEQUENCE-SET":
            return args[0].contains(number, self.largest_number)  # type: ignore[union-attr]
        if op == "UID":
            return args[0].contains(info.uid, self.largest_uid)  # type: ignore[union-attr]
        if op in _FLAG_KEYS:
            flag, wanted = _FLAG_KEYS[op]
            return (flag in flags) == wanted
        recent = info.uid in self.selected.recent
        if op == "RECENT":
            return recent
        if op == "OLD":
            return not recent
        if op == "NEW":
            return recent and SEEN not in flags
        if op in ("KEYWORD", "UNKEYWORD"):
            has = str(args[0]).lower() in {f.lower() for f in flags}
            return has if op == "KEYWORD" else not has
        if op == "LARGER":
            return info.size > args[0]  # type: ignore[operator]
        if op == "SMALLER":
            return info.size < args[0]  # type: ignore[operator]
        if op in ("BEFORE", "ON", "SINCE"):
            return _compare_date(op, _internal_day(info.internaldate), args[0])  # type: ignore[arg-type]
        view = self.view(info)
        if view is None:
            return False
        if op in ("SENTBEFORE", "SENTON", "SENTSINCE"):
            sent = view.sent_date()
            return sent is not None and _compare_date(op[4:], sent, args[0])  # type: ignore[arg-type]
        if op in ("FROM", "TO", "CC", "BCC", "SUBJECT"):
            return _contains(view.header(op), str(args[0]))
        if op == "HEADER":
            values = view.header(str(args[0]))
            return bool(values) and _contains(values, str(args[1]))
        if op == "BODY":
            return _contains([view.internal_text()], str(args[0]))
        if op == "TEXT":
            header = view.header_bytes().decode("utf-8", "replace")
            return _contains([header, view.internal_text()], str(args[0]))
        raise _bad(f"search key {op} is not supported")


_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}


def _contains(values: list[str], wanted: str) -> bool:
    """RFC 3501 §6.4.4: a case-insensitive substring match."""
    needle = wanted.casefold()
    return any(needle in value.casefold() for value in values)


def _internal_day(epoch: float) -> date:
    """The day of INTERNALDATE; we give INTERNALDATE in UTC, so we compare in UTC."""
    return datetime.fromtimestamp(epoch, UTC).date()


def _compare_date(op: str, day: date, wanted: date) -> bool:
    if op == "BEFORE":
        return day < wanted
    if op == "ON":
        return day == wanted
    return day >= wanted  # SINCE


# --------------------------------------------------------------------------- small helpers

_NEEDS_VIEW = frozenset(
    {"ENVELOPE", "BODYSTRUCTURE", "BODY", "RFC822", "RFC822.HEADER", "RFC822.TEXT"}
)
_SPECIAL_USE_ATTRIBUTES = ("\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive", "\\All")
_SYSTEM_LOWER = frozenset(flag.lower() for flag in SYSTEM_FLAGS if flag.startswith("\\"))


def _sets_seen(attribute: p.FetchAttribute) -> bool:
    """RFC 3501 §6.4.5: BODY[...] (not .PEEK), RFC822 and RFC822.TEXT set \\Seen."""
    if attribute.name == "BODY":
        return attribute.section is not None and not attribute.peek
    return attribute.name in ("RFC822", "RFC822.TEXT")


@functools.lru_cache(maxsize=1024)
def _flag_bytes(flags: frozenset[str]) -> bytes:
    """``\\Seen \\Flagged $Junk``: the flags in a stable order (few distinct sets: cached)."""
    return " ".join(sorted_flags(flags)).encode("utf-8")


def _with_flags(info: MessageInfo, flags: frozenset[str]) -> MessageInfo:
    return dataclasses.replace(info, flags=frozenset(flags))


def _has_star(sequence_set: p.SequenceSet) -> bool:
    return any(None in pair for pair in sequence_set.ranges)


def _mailbox_name(folder: str) -> bytes:
    """A mailbox name as a client reads it: modified UTF-7, quoted (RFC 3501 §5.1.3)."""
    return nstring(to_wire(folder))


def _list_line(verb: str, attributes: list[str], folder: str) -> bytes:
    head = f'* {verb} ({" ".join(attributes)}) "{HIERARCHY_DELIMITER}" '.encode()
    return head + _mailbox_name(folder)


def _same(expected: str, given: str) -> bool:
    """Compare passwords in constant time."""
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))
