"""The POP3 protocol core: a line in, a :class:`Response` out (RFC 1939).

Role
    Everything POP3 *means* lives here: the three states, the login, the numbering
    of messages, DELE that only marks and QUIT that commits, the maildrop lock.
    Nothing here touches a socket. The asyncio shell (``pop3server.py``) reads a
    line, calls :meth:`POP3Session.receive_line`, and writes the lines of the
    :class:`Response` it gets back, each followed by CRLF. So a notebook can
    speak POP3 without any network::

        >>> s = POP3Session(lab.store, {"alice@north.test": "alice-secret"},
        ...                 hostname="pop3.north.test", locks=MaildropLocks())
        >>> s.greeting()
        +OK POP3 server ready <4242.1700000000000000000@pop3.north.test>
        >>> s.receive_line(b"USER alice@north.test")
        +OK send PASS
        >>> s.receive_line(b"PASS alice-secret")
        +OK maildrop locked and ready (2 messages, 640 octets)
        >>> s.receive_line(b"STAT")
        +OK 2 640

The states (RFC 1939 §3) ::

    greeting ──▶ AUTHORIZATION ──USER+PASS / APOP / AUTH──▶ TRANSACTION ──QUIT──▶ UPDATE
                      │ QUIT: close, nothing changes              │ connection lost:
                      ▼                                           ▼ lock released, nothing deleted

    Only QUIT in TRANSACTION reaches UPDATE, where the messages marked with DELE
    are expunged from the store. Every other end of a session deletes nothing.

RFCs followed
    RFC 1939 (POP3), RFC 2449 (CAPA, response codes, line lengths), RFC 3206
    (the SYS and AUTH response codes), RFC 5034 and RFC 4616 (AUTH PLAIN),
    RFC 2595 §4 (STLS).

Choices a student should know about
    * A message read with RETR is marked ``\\Seen`` in the store, so IMAP shows it as
      read too. (RFC 1939 says nothing about flags.) Like the deletions, and like
      Dovecot, the marks are made in the UPDATE state, after QUIT: a session that is
      cut off changes nothing at all. TOP is only a peek and marks nothing.
    * The unique-id of UIDL is ``<uidvalidity>.<uid>`` from the store, so it stays
      the same across sessions and restarts (RFC 1939 §7).
    * Sizes (STAT, LIST, RETR) are the sizes of the stored files. Stored mail has
      CRLF line ends, so this is also the size on the wire, except for a file with
      bare LF line ends (written by hand): RETR sends it with CRLF.
    * The message list is a snapshot taken at login. Mail that arrives later
      waits for the next session; a message that IMAP expunged meanwhile answers
      ``-ERR [SYS/PERM]``.
    * After STLS (``Response.start_tls``) the shell must throw away any bytes the
      client sent before the handshake: they were not protected by TLS.

Errors ::

    POP3Error           -ERR [CODE] text: the session goes on
     +-- LoginFailed    -ERR [AUTH] invalid user name or password (the shell waits first)

This module must not import asyncio, socket, ssl, threading or ipywidgets: it is
pure, synchronous code. It reaches mail only through :class:`~mailkit_edu.store.Store`.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import hashlib
import hmac
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .store import INBOX, MessageInfo, NoSuchMessage, Store

#: What RETR leaves on a message, for IMAP to see (RFC 3501 §2.3.2).
SEEN = ("\\Seen",)

__all__ = [
    "MAX_BAD_LINES",
    "MAX_COMMAND_LINE",
    "LoginFailed",
    "MaildropLocks",
    "POP3Error",
    "POP3Session",
    "Response",
    "ResponseCode",
    "State",
    "dot_stuff",
    "message_lines",
    "stuffed_lines",
]

log = logging.getLogger(__name__)

#: RFC 2449 §4: a command line is at most 255 octets, including the CRLF.
MAX_COMMAND_LINE = 255
#: Our own limit: this many -ERR replies in a row and the server hangs up.
MAX_BAD_LINES = 10
#: RFC 1939 §7: a unique-id is 1 to 70 characters in the range 0x21 to 0x7E.
MAX_UNIQUE_ID = 70
#: The SASL mechanisms we offer (RFC 5034 §4, RFC 4616).
SASL_MECHANISMS = ("PLAIN",)

_PRINTABLE = re.compile(rb"[\x20-\x7e]*")
_DECIMAL = re.compile(r"[0-9]+")


class State(enum.Enum):
    """The states of a POP3 session (RFC 1939 §3)."""

    AUTHORIZATION = "AUTHORIZATION"  # after the greeting: the client identifies itself
    TRANSACTION = "TRANSACTION"  # logged in, the maildrop is locked
    UPDATE = "UPDATE"  # after QUIT: marked messages are deleted, the lock released


#: How the dispatcher names a state in an error message.
_WHEN = {
    State.AUTHORIZATION: "before login",
    State.TRANSACTION: "after login",
    State.UPDATE: "after QUIT",
}


class ResponseCode(enum.StrEnum):
    """Response codes in brackets after -ERR (RFC 2449 §8, RFC 3206)."""

    IN_USE = "IN-USE"  # the maildrop is locked by another session
    AUTH = "AUTH"  # the credentials (or how they were sent) are the problem
    SYS_TEMP = "SYS/TEMP"  # a passing problem of the server: try again later
    SYS_PERM = "SYS/PERM"  # a lasting problem of the server: trying again will not help


# --------------------------------------------------------------------------- replies


@dataclass(repr=False)
class Response:
    """What the server sends for one client line, and what the shell does next."""

    #: Lines to send, without CRLF. A multi-line response is already dot-stuffed
    #: and ends with b"." (RFC 1939 §3).
    lines: list[bytes]
    close: bool = False  # close the connection after sending (QUIT, abuse)
    start_tls: bool = False  # start TLS right after sending (STLS)
    failed_login: bool = False  # wait a moment before sending (slows password guessing)

    def text(self) -> str:
        """The lines as text, one per line, as a student would read them."""
        return "\n".join(line.decode("utf-8", "replace") for line in self.lines)

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        then = [name for name in ("close", "start_tls", "failed_login") if getattr(self, name)]
        return self.text() + (f"\n[then: {', '.join(then)}]" if then else "")


def ok(text: str) -> Response:
    """A one-line positive response: ``+OK text`` (or ``+OK`` alone)."""
    return Response([f"+OK {text}".rstrip().encode("ascii", "replace")])


def multiline(first: str, lines: list[bytes]) -> Response:
    """``+OK first``, the lines dot-stuffed, then the terminating ``.`` (RFC 1939 §3)."""
    return Response([f"+OK {first}".encode("ascii", "replace"), *map(dot_stuff, lines), b"."])


def n_messages(count: int) -> str:
    """ "1 message", "2 messages": replies a student can read aloud."""
    return f"{count} message" if count == 1 else f"{count} messages"


def dot_stuff(line: bytes) -> bytes:
    """RFC 1939 §3: a line that starts with "." gets one more in front ("." → "..")."""
    return b"." + line if line.startswith(b".") else line


def stuffed_lines(data: bytes) -> list[bytes]:
    """A whole message as dot-stuffed lines, ready to follow a "+OK" line (RETR).

    The same result as ``[dot_stuff(l) for l in message_lines(data)]``, done with a
    few byte-string operations instead of a Python step per line: a 2 KB message
    has some forty lines, and RETR is the command POP3 clients send most.
    """
    if not data:
        return []
    text = b"\n" + data.replace(b"\r\n", b"\n")  # the leading LF lets line 1 be stuffed too
    if text.endswith(b"\n"):
        text = text[:-1]
    return text.replace(b"\n.", b"\n..")[1:].split(b"\n")


def message_lines(data: bytes) -> list[bytes]:
    """A message's lines without their line ends; CRLF and bare LF both end a line."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the message ended with a line end, not with a partial line
    return [line.removesuffix(b"\r") for line in lines]


class POP3Error(Exception):
    """An expected failure; it carries its reply, ``-ERR [CODE] text``."""

    failed_login = False

    def __init__(self, text: str, code: ResponseCode | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code

    def response(self) -> Response:
        prefix = f"[{self.code}] " if self.code else ""
        line = f"-ERR {prefix}{self.text}".encode("ascii", "replace")
        return Response([line], failed_login=self.failed_login)


class LoginFailed(POP3Error):
    """Wrong password or unknown user: one answer for both, so no address is revealed."""

    failed_login = True

    def __init__(self) -> None:
        super().__init__("invalid user name or password", ResponseCode.AUTH)


# --------------------------------------------------------------------------- the lock


class MaildropLocks:
    """The exclusive-access lock of each maildrop (RFC 1939 §8).

    One object is shared by all the sessions of one server. Those sessions run
    one at a time on the shell's event loop, so a plain set is enough.
    """

    def __init__(self) -> None:
        self._held: set[str] = set()

    def acquire(self, address: str) -> bool:
        """Lock the maildrop; False if another session holds it."""
        if address.lower() in self._held:
            return False
        self._held.add(address.lower())
        return True

    def release(self, address: str) -> None:
        self._held.discard(address.lower())

    def locked(self, address: str) -> bool:
        return address.lower() in self._held

    def __repr__(self) -> str:
        return f"MaildropLocks({sorted(self._held)})"


# --------------------------------------------------------------------------- verbs


@dataclass(frozen=True)
class Rule:
    """What the dispatcher checks before it runs a verb."""

    syntax: str  # e.g. "TOP msg n": "[...]" marks optional arguments
    states: frozenset[State]
    whole_line: bool = False  # the argument is the rest of the line, spaces and all

    @functools.cached_property
    def arity(self) -> tuple[int, int]:
        """(fewest, most) arguments the syntax line allows ("[...]" is optional)."""
        placeholders = self.syntax.split()[1:]
        return sum(1 for word in placeholders if not word.startswith("[")), len(placeholders)

    def accepts(self, arg: str) -> bool:
        """True if ``arg`` has as many space-separated words as the syntax line allows."""
        if self.whole_line:
            return arg != ""
        fewest, most = self.arity
        words = arg.split(" ") if arg else []
        return fewest <= len(words) <= most and "" not in words


def command(syntax: str, *states: State, whole_line: bool = False) -> Callable:
    """Declare a verb's syntax line and the states it is allowed in."""

    def declare(method: Callable) -> Callable:
        method.rule = Rule(syntax, frozenset(states), whole_line)
        return method

    return declare


@functools.cache
def verb_table(cls: type) -> dict[str, str]:
    """{"RETR": "pop3_RETR", ...}: every ``pop3_`` method of ``cls``, found once per class."""
    return {name.removeprefix("pop3_"): name for name in dir(cls) if name.startswith("pop3_")}


AUTHORIZATION, TRANSACTION = State.AUTHORIZATION, State.TRANSACTION


class POP3Session:
    """One POP3 conversation, from the greeting to QUIT (or a dropped connection)."""

    def __init__(
        self,
        store: Store,
        passwords: Mapping[str, str],
        *,
        hostname: str,
        locks: MaildropLocks,
        require_tls: bool = False,
        tls_available: bool = False,
        tls_active: bool = False,
        banner_timestamp: str | None = None,
    ) -> None:
        self.store = store
        self.passwords = {address.lower(): password for address, password in passwords.items()}
        self.hostname = hostname
        self.locks = locks
        self.require_tls = require_tls
        self.tls_available = tls_available
        self.tls_active = tls_active
        #: RFC 1939 §7: unique for this greeting; APOP's digest is computed over it.
        self.timestamp = banner_timestamp or f"<{os.getpid()}.{time.time_ns()}@{hostname}>"
        self.state = State.AUTHORIZATION
        self.user: str | None = None  # the authenticated address
        self.closed = False
        #: True when the next line is a SASL response (after "+ "), not a command.
        self.expecting_sasl = False
        self._user_named: str | None = None  # the name given by USER, waiting for PASS
        self._messages: list[MessageInfo] = []  # message n is self._messages[n - 1]
        self._octets = 0  # the size of all of them
        self._deleted: set[int] = set()  # message numbers marked by DELE
        self._retrieved: set[int] = set()  # message numbers to mark \\Seen at QUIT
        self._uidvalidity = 0
        self._bad_lines = 0  # -ERR replies in a row

    def __repr__(self) -> str:
        return f"<POP3Session {self.state.name} user={self.user!r} closed={self.closed}>"

    # ------------------------------------------------------------------ the shell's calls

    def greeting(self) -> Response:
        """RFC 1939 §4: the server's first line, with the timestamp APOP uses (§7)."""
        return ok(f"POP3 server ready {self.timestamp}")

    def receive_line(self, line: bytes) -> Response:
        """Answer one line from the client (its CRLF may be there or not)."""
        if self.closed:
            if line.strip().upper() == b"QUIT":
                return Response([b"+OK already signed off"], close=True)
            return Response([b"-ERR the session is closed"], close=True)
        try:
            read = self._sasl_response if self.expecting_sasl else self._dispatch
            response = read(line)
        except POP3Error as error:
            response = error.response()
        except Exception:  # a bug or a broken store: log it here, never on the wire
            log.exception("POP3 session of %s: unexpected error", self.user or "(nobody)")
            response = POP3Error("internal server error", ResponseCode.SYS_TEMP).response()
        return self._count_bad_lines(response)

    def tls_started(self) -> None:
        """The STLS handshake is done. RFC 2595 §4: forget what was said before it."""
        self.tls_active = True
        self._user_named = None

    def connection_lost(self) -> None:
        """The connection ended without QUIT: release the lock, delete nothing (RFC 1939 §6)."""
        self._end()

    # ------------------------------------------------------------------ the dispatcher

    def _dispatch(self, line: bytes) -> Response:
        """Check the line, the verb, the state and the arguments; then run the verb."""
        raw = line.removesuffix(b"\n").removesuffix(b"\r")
        if len(raw) + 2 > MAX_COMMAND_LINE:
            raise POP3Error(f"line too long (RFC 2449 allows {MAX_COMMAND_LINE} octets)")
        if not _PRINTABLE.fullmatch(raw):
            raise POP3Error("a command line must be printable ASCII")
        verb, _, arg = raw.decode("ascii").partition(" ")
        verb = verb.upper()
        name = verb_table(type(self)).get(verb)
        if name is None:
            raise POP3Error(f"unknown command {verb}" if verb else "empty command line")
        method = getattr(self, name)
        rule: Rule = method.rule
        if self.state not in rule.states:
            allowed = " or ".join(f"{_WHEN[s]} ({s.name} state)" for s in State if s in rule.states)
            raise POP3Error(f"{verb} is only valid {allowed}")
        if not rule.accepts(arg):
            raise POP3Error(f"syntax: {rule.syntax}")
        return method(arg)

    def _count_bad_lines(self, response: Response) -> Response:
        """Ten -ERR replies in a row mean a confused or hostile client: hang up."""
        if response.close or not response.lines[0].startswith(b"-ERR"):
            self._bad_lines = 0
            return response
        self._bad_lines += 1
        if self._bad_lines < MAX_BAD_LINES:
            return response
        self._end()
        return Response([b"-ERR too many errors, closing"], close=True)

    # ------------------------------------------------------------------ AUTHORIZATION

    @command("USER name", AUTHORIZATION)
    def pop3_USER(self, name: str) -> Response:
        """USER name (RFC 1939 §7). The answer is the same for every name."""
        self._refuse_plaintext_login("USER")
        self._user_named = name
        return ok("send PASS")

    @command("PASS string", AUTHORIZATION, whole_line=True)
    def pop3_PASS(self, password: str) -> Response:
        """PASS string (RFC 1939 §7). Spaces belong to the password, as §7 permits."""
        self._refuse_plaintext_login("PASS")
        name, self._user_named = self._user_named, None
        if name is None:
            raise POP3Error("send USER first")
        return self._log_in(self._check_password(name, password))

    @command("APOP name digest", AUTHORIZATION)
    def pop3_APOP(self, arg: str) -> Response:
        """APOP name digest (RFC 1939 §7): digest = MD5(timestamp + password), in hex.

        Allowed without TLS even when TLS is required: the password itself never
        crosses the wire. (MD5 is weak today; APOP is here to be studied.)
        """
        name, digest = arg.split(" ")
        self._user_named = None
        password = self.passwords.get(name.lower())
        if password is None:
            raise LoginFailed()
        expected = hashlib.md5((self.timestamp + password).encode()).hexdigest()
        if not hmac.compare_digest(expected, digest.lower()):
            raise LoginFailed()
        return self._log_in(name.lower())

    @command("AUTH [mechanism [initial-response]]", AUTHORIZATION)
    def pop3_AUTH(self, arg: str) -> Response:
        """AUTH mechanism [initial-response] (RFC 5034 §4); only PLAIN (RFC 4616).

        Without an initial response the server sends "+ " and reads the response
        on the next line. Bare ``AUTH`` lists the mechanisms.
        """
        self._refuse_plaintext_login("AUTH")
        if not arg:
            return Response([b"+OK", *(m.encode() for m in SASL_MECHANISMS), b"."])
        mechanism, _, initial = arg.partition(" ")
        if mechanism.upper() not in SASL_MECHANISMS:
            raise POP3Error("unsupported SASL mechanism")
        if initial:
            return self._auth_plain(initial.encode())
        self.expecting_sasl = True
        return Response([b"+ "])  # an empty challenge: "send your response"

    def _sasl_response(self, line: bytes) -> Response:
        """The line after "+ ": base64 of the PLAIN response, or "*" to cancel."""
        self.expecting_sasl = False
        response = line.removesuffix(b"\n").removesuffix(b"\r")
        if response == b"*":
            raise POP3Error("authentication cancelled")
        return self._auth_plain(response)

    def _auth_plain(self, encoded: bytes) -> Response:
        """RFC 4616: base64 of ``authzid NUL authcid NUL password``; "=" means empty."""
        try:
            plain = b"" if encoded == b"=" else base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise POP3Error("invalid base64 in AUTH response", ResponseCode.AUTH) from None
        try:
            authzid, authcid, password = (part.decode("utf-8") for part in plain.split(b"\0"))
        except ValueError:  # not three parts, or not UTF-8
            raise POP3Error(
                "PLAIN wants authzid NUL authcid NUL password", ResponseCode.AUTH
            ) from None
        if authzid and authzid.lower() != authcid.lower():
            raise POP3Error("you may only log in as yourself (authzid)", ResponseCode.AUTH)
        return self._log_in(self._check_password(authcid, password))

    def _refuse_plaintext_login(self, verb: str) -> None:
        if self.require_tls and not self.tls_active:
            raise POP3Error(f"{verb} needs TLS on this server: use STLS first", ResponseCode.AUTH)

    def _check_password(self, name: str, password: str) -> str:
        """The address ``name`` logs in as, if ``password`` is right; else LoginFailed."""
        expected = self.passwords.get(name.lower())
        if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
            raise LoginFailed()
        return name.lower()

    def _log_in(self, address: str) -> Response:
        """Lock the maildrop, take the snapshot, number the messages 1..N (RFC 1939 §4)."""
        if not self.locks.acquire(address):
            raise POP3Error("maildrop already locked by another session", ResponseCode.IN_USE)
        try:
            self._messages = self.store.messages(address, INBOX)  # sorted by UID
            self._uidvalidity = self.store.uidvalidity(address, INBOX)  # no second listing
            self._octets = sum(info.size for info in self._messages)
        except BaseException:
            self.locks.release(address)
            raise
        self.user, self.state = address, State.TRANSACTION
        count, octets = self._totals()
        return ok(f"maildrop locked and ready ({n_messages(count)}, {octets} octets)")

    # ------------------------------------------------------------------ TRANSACTION

    @command("STAT", TRANSACTION)
    def pop3_STAT(self, arg: str) -> Response:
        """STAT (RFC 1939 §5): the number and total size of the messages not deleted."""
        count, octets = self._totals()
        return ok(f"{count} {octets}")

    @command("LIST [msg]", TRANSACTION)
    def pop3_LIST(self, arg: str) -> Response:
        """LIST [msg] (RFC 1939 §5): "n size" for one message, or for each one."""
        if arg:
            number, info = self._message(arg)
            return ok(f"{number} {info.size}")
        count, octets = self._totals()
        lines = [f"{n} {info.size}".encode() for n, info in self._present()]
        return multiline(f"{n_messages(count)} ({octets} octets)", lines)

    @command("UIDL [msg]", TRANSACTION)
    def pop3_UIDL(self, arg: str) -> Response:
        """UIDL [msg] (RFC 1939 §7): "n unique-id", the same in every session."""
        if arg:
            number, info = self._message(arg)
            return ok(f"{number} {self._unique_id(info)}")
        lines = [f"{n} {self._unique_id(info)}".encode() for n, info in self._present()]
        return multiline("unique-id listing follows", lines)

    @command("RETR msg", TRANSACTION)
    def pop3_RETR(self, arg: str) -> Response:
        """RETR msg (RFC 1939 §5): the whole message; it will be marked \\Seen at QUIT."""
        number, info = self._message(arg)
        lines = stuffed_lines(self._read(number, info))
        response = Response([f"+OK {info.size} octets".encode(), *lines, b"."])
        if "\\Seen" not in info.flags:  # as of login
            self._retrieved.add(number)
        return response

    @command("TOP msg n", TRANSACTION)
    def pop3_TOP(self, arg: str) -> Response:
        """TOP msg n (RFC 1939 §7): the header, the blank line and n body lines."""
        msg, n = arg.split(" ")
        number, info = self._message(msg)
        if not _DECIMAL.fullmatch(n):
            raise POP3Error(f"the line count must be a number 0 or more, not {n}")
        lines = message_lines(self._read(number, info))
        blank = lines.index(b"") if b"" in lines else len(lines)
        return multiline("top of message follows", lines[: blank + 1 + int(n)])

    @command("DELE msg", TRANSACTION)
    def pop3_DELE(self, arg: str) -> Response:
        """DELE msg (RFC 1939 §5): only a mark. QUIT deletes; RSET unmarks."""
        number, _info = self._message(arg)
        self._deleted.add(number)
        return ok(f"message {number} deleted")

    @command("RSET", TRANSACTION)
    def pop3_RSET(self, arg: str) -> Response:
        """RSET (RFC 1939 §5): unmark every message marked with DELE."""
        self._deleted.clear()
        count, octets = self._totals()
        return ok(f"maildrop has {n_messages(count)} ({octets} octets)")

    @command("NOOP", TRANSACTION)
    def pop3_NOOP(self, arg: str) -> Response:
        """NOOP (RFC 1939 §5): nothing, but +OK."""
        return ok("")

    def _message(self, arg: str) -> tuple[int, MessageInfo]:
        """Message number ``arg`` and its info, if it exists and is not marked deleted."""
        if not _DECIMAL.fullmatch(arg):
            raise POP3Error(f"a message number is a decimal number, not {arg}")
        number = int(arg)
        if not 1 <= number <= len(self._messages):
            raise POP3Error(f"no such message, only {len(self._messages)} in maildrop")
        if number in self._deleted:
            raise POP3Error(f"message {number} is deleted")
        return number, self._messages[number - 1]

    def _present(self) -> list[tuple[int, MessageInfo]]:
        """(number, info) of every message not marked deleted, in order."""
        if not self._deleted:  # the usual case: skip the membership tests
            return list(enumerate(self._messages, 1))
        return [(n, info) for n, info in enumerate(self._messages, 1) if n not in self._deleted]

    def _totals(self) -> tuple[int, int]:
        """(count, octets) of the messages not marked deleted (STAT, LIST, RSET)."""
        if not self._deleted:
            return len(self._messages), self._octets
        deleted = sum(self._messages[n - 1].size for n in self._deleted)
        return len(self._messages) - len(self._deleted), self._octets - deleted

    def _read(self, number: int, info: MessageInfo) -> bytes:
        try:
            return self.store.read(self.user, INBOX, info.uid)
        except NoSuchMessage:
            raise POP3Error(
                f"message {number} is no longer in the maildrop", ResponseCode.SYS_PERM
            ) from None

    def _unique_id(self, info: MessageInfo) -> str:
        """Two numbers and a dot: printable, and far below MAX_UNIQUE_ID characters."""
        return f"{self._uidvalidity}.{info.uid}"

    # ------------------------------------------------------------------ both states

    @command("QUIT", AUTHORIZATION, TRANSACTION)
    def pop3_QUIT(self, arg: str) -> Response:
        """QUIT (RFC 1939 §4, §6). After login it enters UPDATE: marked messages go."""
        if self.state is State.AUTHORIZATION:
            self._end()
            return Response([f"+OK {self.hostname} POP3 server signing off".encode()], close=True)
        self.state = State.UPDATE
        uids = [self._messages[n - 1].uid for n in sorted(self._deleted)]
        try:
            self.store.expunge(self.user, INBOX, uids)
            seen = [self._messages[n - 1].uid for n in sorted(self._retrieved - self._deleted)]
            self.store.add_flags_many(self.user, INBOX, seen, SEEN)  # skips any IMAP expunged
        except Exception:
            log.exception("POP3 UPDATE of %s: expunge failed", self.user)
            reply = f"-ERR [{ResponseCode.SYS_TEMP}] some deleted messages not removed"
        else:
            reply = f"+OK {self.hostname} POP3 server signing off ({n_messages(len(uids))} deleted)"
        self._end()
        return Response([reply.encode()], close=True)

    @command("CAPA", AUTHORIZATION, TRANSACTION)
    def pop3_CAPA(self, arg: str) -> Response:
        """CAPA (RFC 2449 §5): what this server offers, now, in this state."""
        before_login = self.state is State.AUTHORIZATION
        capabilities = ["TOP", "UIDL"]
        if before_login and not (self.require_tls and not self.tls_active):
            capabilities += ["USER", "SASL " + " ".join(SASL_MECHANISMS)]
        capabilities += ["RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if before_login and self.tls_available and not self.tls_active:
            capabilities.append("STLS")  # RFC 2595 §4
        capabilities.append("IMPLEMENTATION mailkit-edu")
        return multiline("Capability list follows", [c.encode() for c in capabilities])

    @command("STLS", AUTHORIZATION)
    def pop3_STLS(self, arg: str) -> Response:
        """STLS (RFC 2595 §4): the shell starts TLS right after this +OK."""
        if self.tls_active:
            raise POP3Error("command not permitted when TLS active")
        if not self.tls_available:
            raise POP3Error("STLS is not available on this server")
        return Response([b"+OK Begin TLS negotiation"], start_tls=True)

    # ------------------------------------------------------------------ the end

    def _end(self) -> None:
        """Close the session once: release the maildrop lock if we hold it."""
        if not self.closed and self.user is not None:
            self.locks.release(self.user)
        self.closed = True
        self.expecting_sasl = False
