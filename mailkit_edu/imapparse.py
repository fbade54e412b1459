"""The IMAP command parser: the bytes of one whole command in, a typed command out.

Role
    The first layer of the IMAP4rev1 server. The asyncio shell collects one complete
    command (its lines and its literals), :func:`parse_command` turns it into a frozen
    dataclass such as :class:`Fetch` or :class:`Store`, and only then does the protocol
    core act on it. Nothing is executed here, and nothing here knows about sessions,
    states or mailboxes: a command that parses is *well formed*, not yet *allowed*.
    (This split is pymap's idea; plain dataclasses are enough to express it.) ::

        >>> parse_command(b"a1 UID STORE 2:4 +FLAGS.SILENT (\\\\Seen)")
        Store(tag='a1', sequence_set=SequenceSet('2:4'), mode='+', silent=True,
              flags=('\\\\Seen',), uid=True)
        >>> str(parse_command(b"a2 FETCH 1 BODY.PEEK[1.MIME]").attributes[0])
        'BODY.PEEK[1.MIME]'

How a command reaches the parser (RFC 3501 §4.3 and §7.5, RFC 7888)
    A line that ends with ``{n}`` announces a literal: n octets that follow its CRLF.
    The shell calls :func:`literal_at_end` on each line it reads. For ``{n}`` (a
    synchronizing literal) it sends a continuation request ``+`` and reads n octets;
    for ``{n+}`` (LITERAL+) the client does not wait, and the shell reads at once.
    After the octets the command goes on with the rest of a line, which may again
    end with a literal::

        C: a1 LOGIN {5}
        S: + Ready for literal data
        C: alice {6+}
        C: secret

    The shell then passes ``b"a1 LOGIN {5}\\r\\nalice {6+}\\r\\nsecret"`` to
    :func:`parse_command`: the lines with their CRLFs, the literal octets in place,
    without the final CRLF. :func:`literal_at_end` refuses a literal larger than
    :data:`MAX_LITERAL` before a single octet of it is read.

    The continuation lines of AUTHENTICATE and the ``DONE`` that ends IDLE are not
    commands; the core reads those itself.

The grammar
    The formal syntax is RFC 3501 §9. The :class:`Reader` has one method per element
    of that grammar (``atom``, ``astring``, ``quoted``, ``literal``, ``sequence_set``,
    ``flag_list``, ``date_time``, ...). Each command class has the syntax line of its
    RFC section and a ``parse`` method that reads its arguments, in the order of
    that line, with those methods.

Errors ::

    ParseError                  <tag> BAD <message>   (* BAD <message> if no tag was read)
     +-- UnsupportedCharset     <tag> NO [BADCHARSET (US-ASCII UTF-8)] <message>

    The message is written for the person at the client. It never contains Python
    text, and client input is shown only as printable ASCII, shortened.

RFCs followed
    RFC 3501 (IMAP4rev1), RFC 2177 (IDLE), RFC 4315 (UIDPLUS: UID EXPUNGE),
    RFC 6851 (MOVE), RFC 2342 (NAMESPACE), RFC 7888 (LITERAL+), RFC 5258 and
    RFC 6154 (LIST selection and return options, SPECIAL-USE), RFC 5161 (ENABLE),
    RFC 4959 (SASL-IR), RFC 3691 (UNSELECT), RFC 7162 §4 (line length).

This module must not import asyncio, socket, ssl, threading or ipywidgets, nor any
other module of mailkit_edu: it is pure code on the standard library.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import ClassVar, TypeVar

__all__ = [
    "CHARSETS",
    "LIST_RETURN_OPTIONS",
    "LIST_SELECTION_OPTIONS",
    "MAX_LINE",
    "MAX_LITERAL",
    "MAX_NESTING",
    "MAX_NUMBER",
    "STATUS_ITEMS",
    "SYSTEM_FLAGS",
    "Append",
    "Authenticate",
    "Capability",
    "Check",
    "Close",
    "Command",
    "Copy",
    "Create",
    "Delete",
    "Enable",
    "Examine",
    "Expunge",
    "Fetch",
    "FetchAttribute",
    "Idle",
    "List",
    "Literal",
    "Login",
    "Logout",
    "Lsub",
    "Move",
    "Namespace",
    "Noop",
    "ParseError",
    "Rename",
    "Search",
    "SearchKey",
    "Section",
    "Select",
    "SequenceSet",
    "StartTLS",
    "Status",
    "Store",
    "Subscribe",
    "Unselect",
    "Unsubscribe",
    "UnsupportedCharset",
    "command_tag",
    "decode_mutf7",
    "encode_mutf7",
    "literal_at_end",
    "parse_command",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# --------------------------------------------------------------------------- limits

#: Longest line of a command, CRLF not counted; a line is the text before, between or
#: after literals. RFC 7162 §4 asks servers to accept at least 8192 octets; we allow more.
MAX_LINE = 64 * 1024
#: Largest literal we accept (RFC 3501 §4.3 sets no limit, so each server picks one).
MAX_LITERAL = 64 * 1024 * 1024
#: RFC 3501 §9: a "number" is an unsigned 32-bit integer.
MAX_NUMBER = 2**32 - 1
#: Our limit on how deeply SEARCH keys nest (parentheses, NOT, OR), so that no client
#: can exhaust the Python stack.
MAX_NESTING = 50

# --------------------------------------------------------------------------- vocabulary

#: RFC 3501 §2.3.2: the system flags a client may set. \Recent is set by the server only.
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
#: RFC 3501 §6.3.10: what STATUS can report.
STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN")
#: RFC 3501 §6.4.4: the charsets our SEARCH understands (US-ASCII is the default).
CHARSETS = ("US-ASCII", "UTF-8")
#: RFC 5258 §3.1 and RFC 6154 §4: LIST (selection options) reference pattern.
LIST_SELECTION_OPTIONS = ("SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE")
#: RFC 5258 §3.2 and RFC 6154 §3: LIST reference pattern RETURN (return options).
LIST_RETURN_OPTIONS = ("SUBSCRIBED", "CHILDREN", "SPECIAL-USE")

#: RFC 3501 §6.4.5: the fetch attributes that take no section.
FETCH_ATTRIBUTES = (
    "ENVELOPE",
    "FLAGS",
    "INTERNALDATE",
    "RFC822",
    "RFC822.HEADER",
    "RFC822.SIZE",
    "RFC822.TEXT",
    "BODY",
    "BODYSTRUCTURE",
    "UID",
)
#: RFC 3501 §6.4.5: the three macros, each allowed only alone.
FETCH_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
#: RFC 3501 §6.4.5: the texts a BODY[section] may name after its part numbers.
SECTION_TEXTS = ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME")

#: RFC 3501 §9 date-month, in order.
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")

# RFC 3501 §9, character classes. atom-specials are ( ) { SP CTL % * " \ ]
# (CTL is 0x00-0x1F and 0x7F; we also exclude 8-bit bytes, which are not CHARs).
_ATOM = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\\]]+')  # 1*ATOM-CHAR
_ASTRING_CHARS = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\]+')  # ATOM-CHAR and "]"
_LIST_CHARS = re.compile(rb'[^\x00-\x20\x7f-\xff(){"\\]+')  # ATOM-CHAR, "%", "*", "]"
_TAG = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\+]+')  # ASTRING-CHAR except "+"
_NUMBER = re.compile(rb"[0-9]+")
_SEQUENCE_TOKEN = re.compile(rb"[^\x00-\x20\x7f-\xff()]+")  # read widely, then checked
_LITERAL_BRACES = re.compile(rb"\{([^{}\r\n]*)\}")
_FETCH_NAME = re.compile(rb"[A-Za-z0-9.]+")  # RFC822.SIZE, BODY.PEEK, ...
_SECTION_TEXT = re.compile(rb"[A-Za-z.]+")  # HEADER.FIELDS.NOT, ...
_DATE = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_DATE_TIME = re.compile(
    rb'"([ 0-9]?[0-9])-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{4})"'
)
_BASE64_TOKEN = re.compile(rb"[A-Za-z0-9+/=]+")
_BASE64 = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def _show(text: str | bytes, limit: int = 30) -> str:
    """Client input made safe for an error message: printable ASCII only, shortened."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    shown = "".join(char if " " <= char <= "~" else "?" for char in text[:limit])
    return shown + ("..." if len(text) > limit else "")


# --------------------------------------------------------------------------- errors


class ParseError(Exception):
    """A command that is not well formed. The server answers ``<tag> BAD <message>``.

    ``tag`` is the client's tag if it could be read, else None (answer ``* BAD``).
    """

    status: ClassVar[str] = "BAD"

    def __init__(self, message: str, tag: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.tag = tag

    def response(self) -> str:
        """The reply line, without CRLF: ``a1 BAD ...`` or ``* BAD ...``."""
        return f"{self.tag if self.tag is not None else '*'} {self.status} {self.message}"


class UnsupportedCharset(ParseError):
    """SEARCH CHARSET we do not know. RFC 3501 §6.4.4: the answer is NO [BADCHARSET]."""

    status: ClassVar[str] = "NO"

    def __init__(self, charset: str, tag: str | None = None) -> None:
        super().__init__(
            f"[BADCHARSET ({' '.join(CHARSETS)})] charset {_show(charset)} is not supported", tag
        )


# --------------------------------------------------------------------------- literals


@dataclass(frozen=True)
class Literal:
    """A literal announced at the end of a line: ``{size}`` or ``{size+}`` (RFC 3501 §4.3).

    ``synchronizing`` is True for ``{size}``: the client waits for the server's ``+``
    before it sends the octets. ``{size+}`` (RFC 7888) is sent without waiting.
    """

    size: int
    synchronizing: bool


def _announced(inside_braces: bytes) -> Literal:
    """Read ``5`` or ``5+`` (the text between the braces); refuse sizes over MAX_LITERAL."""
    match = re.fullmatch(rb"([0-9]+)(\+?)", inside_braces)
    if match is None:
        raise ParseError("malformed literal: the form is {size} or {size+}")
    digits, plus = match.groups()
    # Check the number of digits first: never turn a huge announcement into an int.
    if len(digits) > len(str(MAX_LITERAL)) or int(digits) > MAX_LITERAL:
        # TOOBIG: the response code RFC 7888 §4 (LITERAL-) names for a literal too large.
        raise ParseError(f"[TOOBIG] a literal may have at most {MAX_LITERAL} octets")
    return Literal(int(digits), synchronizing=not plus)


def _inside_quotes(line: bytes, end: int) -> bool:
    """True if ``line[end]`` lies inside a quoted string (so a ``{`` there is just text)."""
    inside = False
    position = 0
    while position < end:
        byte = line[position]
        if inside and byte == 0x5C:  # a backslash: the next octet is escaped
            position += 2
            continue
        if byte == 0x22:  # a double quote
            inside = not inside
        position += 1
    return inside


def command_tag(line: bytes) -> str | None:
    """The tag at the start of a command's first line, or None if there is no valid one."""
    match = _TAG.match(line)
    if match is None or line[match.end() : match.end() + 1] not in (b" ", b""):
        return None
    return match.group().decode("ascii")


def literal_at_end(line: bytes) -> Literal | None:
    """The literal announced at the end of ``line`` (given without CRLF), or None.

    Raises ParseError for a malformed announcement (``{12x}``), for a literal larger
    than MAX_LITERAL and for a line longer than MAX_LINE. A ``{5}`` inside a quoted
    string is text, not an announcement.

    After such an error the client may already be sending the literal (it does not
    wait after ``{n+}``). Those octets must never be read as commands, or a message
    could smuggle commands in: after its BAD the shell closes the connection.
    """
    tag = command_tag(line)
    if len(line) > MAX_LINE:
        raise ParseError(f"line too long: at most {MAX_LINE} octets between literals", tag)
    if not line.endswith(b"}"):
        return None
    start = line.rfind(b"{")
    if start < 0 or _inside_quotes(line, start):
        return None  # "}" is an ATOM-CHAR: a line may end with one without a literal
    try:
        return _announced(line[start + 1 : -1])
    except ParseError as error:
        error.tag = tag
        raise


# --------------------------------------------------------------------------- sequence sets


@dataclass(frozen=True, repr=False)
class SequenceSet:
    """Message numbers or UIDs: ``1``, ``2:4``, ``7:*``, ``1,3:5`` (RFC 3501 §9 sequence-set).

    Kept as ranges, never expanded until :meth:`resolve`: ``1:4294967295`` costs two
    numbers. Each range is ``(first, last)`` with ``first <= last``; None stands for
    ``*``, the largest number in use. ``4:2`` is the same range as ``2:4``.
    """

    ranges: tuple[tuple[int | None, int | None], ...]

    @classmethod
    def parse(cls, text: str) -> SequenceSet:
        """Read a sequence set such as ``1,3:5,7:*``; raise ParseError if it is not one."""
        if not text:
            raise ParseError("empty sequence set")
        ranges = []
        for item in text.split(","):
            if not item:
                raise ParseError(f"invalid sequence set {_show(text)}: an empty element")
            ends = item.split(":")
            if len(ends) > 2:
                raise ParseError(f"invalid sequence set {_show(text)}: a range has one colon")
            first, last = (cls._seq_number(end, text) for end in (ends[0], ends[-1]))
            if first is None or (last is not None and last < first):
                first, last = last, first  # "*:4" is "4:*"; "4:2" is "2:4"
            ranges.append((first, last))
        return cls(tuple(ranges))

    @staticmethod
    def _seq_number(text: str, whole: str) -> int | None:
        """RFC 3501 §9 seq-number: nz-number / "*" (None stands for "*")."""
        if text == "*":
            return None
        if text and text.strip("0") == "":
            raise ParseError("0 is not a message number or UID: they start at 1")
        if not re.fullmatch(r"[1-9][0-9]{0,9}", text) or int(text) > MAX_NUMBER:
            raise ParseError(
                f"invalid sequence set {_show(whole)}: expected numbers from 1 to "
                f"{MAX_NUMBER}, * (the last), ranges a:b and commas"
            )
        return int(text)

    def resolve(self, largest: int) -> list[int]:
        """The numbers of the set that are at most ``largest``, sorted, each once.

        ``*`` is ``largest``. RFC 3501 §6.4.8: ``n:*`` always contains ``largest``, even
        when n is larger than it. With ``largest == 0`` (an empty mailbox) the set is empty.
        """
        numbers: set[int] = set()
        for low, high in self._bounds(largest):
            numbers.update(range(low, high + 1))
        return sorted(numbers)

    def contains(self, number: int, largest: int) -> bool:
        """``number in self.resolve(largest)``, without making the list."""
        return any(low <= number <= high for low, high in self._bounds(largest))

    def _bounds(self, largest: int) -> list[tuple[int, int]]:
        """Each range with ``*`` replaced by ``largest`` and cut to 1..largest."""
        bounds = []
        for first, last in self.ranges:
            low = largest if first is None else first
            high = largest if last is None else last
            low, high = min(low, high), min(max(low, high), largest)
            if low <= high:
                bounds.append((max(low, 1), high))
        return bounds

    @property
    def highest_written(self) -> int:
        """The largest number written out (``*`` not counted); 0 if there is none.

        RFC 3501 §9: the server should answer BAD to a message sequence number greater
        than the number of messages (and to ``*`` in an empty mailbox), so the core
        compares this with the mailbox's size. UIDs that do not exist are just ignored.
        """
        return max((n for pair in self.ranges for n in pair if n is not None), default=0)

    def __str__(self) -> str:
        def number(n: int | None) -> str:
            return "*" if n is None else str(n)

        return ",".join(
            number(first) if first == last else f"{number(first)}:{number(last)}"
            for first, last in self.ranges
        )

    def __repr__(self) -> str:
        return f"SequenceSet({str(self)!r})"


# --------------------------------------------------------------------------- FETCH items


@dataclass(frozen=True)
class Section:
    """The part of a message inside ``BODY[...]`` (RFC 3501 §6.4.5).

    ``parts`` are the MIME part numbers (``1.2`` is ``(1, 2)``; none means the whole
    message). ``text`` is HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME or
    None; ``fields`` are the upper-cased header names of HEADER.FIELDS[.NOT].
    """

    parts: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        spec = ".".join(str(part) for part in self.parts)
        if self.text:
            spec += ("." if spec else "") + self.text
        if self.fields:
            spec += " (" + " ".join(_atom_or_quoted(name) for name in self.fields) + ")"
        return spec


@dataclass(frozen=True)
class FetchAttribute:
    """One data item of FETCH (RFC 3501 §6.4.5), e.g. ``FLAGS`` or ``BODY.PEEK[TEXT]<0.100>``.

    ``name`` is BODY for every ``BODY[...]`` and ``BODY.PEEK[...]``; ``peek`` tells them
    apart (BODY.PEEK does not set ``\\Seen``). ``partial`` is ``(start, count)``.
    """

    name: str
    peek: bool = False
    section: Section | None = None
    partial: tuple[int, int] | None = None

    def response_name(self) -> str:
        """How the FETCH response names this item (RFC 3501 §7.4.2).

        BODY.PEEK is answered as BODY, and a partial shows its origin only:
        ``BODY.PEEK[1.HEADER.FIELDS (SUBJECT)]<0.100>`` becomes
        ``BODY[1.HEADER.FIELDS (SUBJECT)]<0>``.
        """
        if self.section is None:
            return self.name
        origin = f"<{self.partial[0]}>" if self.partial else ""
        return f"BODY[{self.section}]{origin}"

    def __str__(self) -> str:
        """The item as a client writes it."""
        if self.section is None:
            return self.name
        partial = f"<{self.partial[0]}.{self.partial[1]}>" if self.partial else ""
        return f"{'BODY.PEEK' if self.peek else 'BODY'}[{self.section}]{partial}"


def _atom_or_quoted(text: str) -> str:
    """``text`` as an atom if it is one, else quoted, else a literal (RFC 3501 §4.1-4.3)."""
    octets = text.encode("utf-8")
    if _ATOM.fullmatch(octets):
        return text
    if "\r" in text or "\n" in text:
        return f"{{{len(octets)}}}\r\n{text}"  # a quoted string cannot hold a line break
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------- SEARCH keys


@dataclass(frozen=True)
class SearchKey:
    """One SEARCH key (RFC 3501 §6.4.4) and its arguments; keys nest.

    ``op`` is the key as on the wire, upper-cased (``FROM``, ``SINCE``, ``NOT``,
    ``OR``, ``UID``, ...) with two more: ``AND`` for a parenthesised group or for the
    several keys of one SEARCH (all must match), and ``SEQUENCE-SET`` for a bare
    sequence set. ``args`` hold, by key: a str (BCC, BODY, CC, FROM, SUBJECT, TEXT,
    TO, KEYWORD, UNKEYWORD; HEADER has two, the field name upper-cased), a
    ``datetime.date`` (BEFORE, ON, SINCE, SENT...), an int (LARGER, SMALLER), a
    :class:`SequenceSet` (UID, SEQUENCE-SET) or SearchKeys (NOT, OR, AND).
    """

    op: str
    args: tuple[SearchArgument, ...] = ()

    def __str__(self) -> str:
        """The key as a client could write it, e.g. ``OR (FROM bob) (NOT SEEN)``."""
        if self.op == "AND":
            return "(" + " ".join(str(key) for key in self.args) + ")"
        if self.op == "SEQUENCE-SET":
            return str(self.args[0])
        return " ".join([self.op, *(_search_argument(arg) for arg in self.args)])


SearchArgument = str | int | date | SequenceSet | SearchKey


def _search_argument(arg: SearchArgument) -> str:
    """One argument of a search key, written as a client would send it."""
    if isinstance(arg, str):
        return _atom_or_quoted(arg)
    if isinstance(arg, date):
        return f"{arg.day}-{MONTHS[arg.month - 1].title()}-{arg.year:04d}"
    if isinstance(arg, SearchKey) and arg.args and arg.op not in ("AND", "SEQUENCE-SET"):
        return f"({arg})"  # parentheses keep "NOT (FROM x)" easy to read
    return str(arg)


#: RFC 3501 §6.4.4: every search key and the kinds of arguments it takes, in order.
SEARCH_KEYS: dict[str, tuple[str, ...]] = {
    "ALL": (),
    "ANSWERED": (),
    "BCC": ("string",),
    "BEFORE": ("date",),
    "BODY": ("string",),
    "CC": ("string",),
    "DELETED": (),
    "DRAFT": (),
    "FLAGGED": (),
    "FROM": ("string",),
    "HEADER": ("header-name", "string"),
    "KEYWORD": ("keyword",),
    "LARGER": ("number",),
    "NEW": (),
    "NOT": ("search-key",),
    "OLD": (),
    "ON": ("date",),
    "OR": ("search-key", "search-key"),
    "RECENT": (),
    "SEEN": (),
    "SENTBEFORE": ("date",),
    "SENTON": ("date",),
    "SENTSINCE": ("date",),
    "SINCE": ("date",),
    "SMALLER": ("number",),
    "SUBJECT": ("string",),
    "TEXT": ("string",),
    "TO": ("string",),
    "UID": ("sequence-set",),
    "UNANSWERED": (),
    "UNDELETED": (),
    "UNDRAFT": (),
    "UNFLAGGED": (),
    "UNKEYWORD": ("keyword",),
    "UNSEEN": (),
}


# --------------------------------------------------------------------------- the reader


class Reader:
    """A cursor over one whole command.

    Each method reads one element of the grammar of RFC 3501 §9 at the cursor and
    moves past it, or raises ParseError saying what it expected and what it found.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        #: The syntax line of the command being read; errors about arguments quote it.
        self.syntax = ""
        #: How deeply the SEARCH key being read is nested (see MAX_NESTING).
        self.depth = 0

    # ------------------------------------------------------------------ looking ahead

    def peek(self) -> bytes:
        """The next octet (b"" at the end)."""
        return self.data[self.pos : self.pos + 1]

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def take(self, pattern: re.Pattern[bytes]) -> bytes | None:
        """Read what ``pattern`` matches at the cursor, or nothing (None)."""
        match = pattern.match(self.data, self.pos)
        if match is None:
            return None
        self.pos = match.end()
        return match.group()

    def skip(self, octet: bytes) -> bool:
        """Read ``octet`` if it comes next."""
        if self.peek() == octet:
            self.pos += 1
            return True
        return False

    def next_word_is(self, word: str) -> bool:
        """Read the next atom if it is ``word`` (in any case); otherwise read nothing."""
        match = _ATOM.match(self.data, self.pos)
        if match is None or match.group().upper() != word.encode("ascii"):
            return False
        self.pos = match.end()
        return True

    # ------------------------------------------------------------------ errors

    def found(self) -> str:
        """What is at the cursor, in words, for an error message."""
        if self.at_end():
            return "the end of the command"
        octet = self.data[self.pos]
        if octet in b"\r\n":
            return "a line break"
        if octet >= 0x80:
            return "an 8-bit octet (8-bit text is allowed only in quoted strings and literals)"
        if octet < 0x20 or octet == 0x7F:
            return f"the control character 0x{octet:02X}"
        if octet == 0x20:
            return "a space"
        word = re.match(rb"[\x21-\x7e]+", self.data[self.pos : self.pos + 40])
        assert word is not None  # the octet itself is printable
        return f"'{_show(word.group(), 20)}'"

    def expected(self, what: str) -> ParseError:
        """The error for "expected ``what``, found <what is there>"."""
        hint = f" (syntax: {self.syntax})" if self.syntax else ""
        return ParseError(f"expected {what}, found {self.found()}{hint}")

    def expect(self, octet: bytes, what: str) -> None:
        """Read ``octet``, which must come next."""
        if not self.skip(octet):
            raise self.expected(what)

    def space(self, before: str) -> None:
        """Read the SP in front of the next argument, called ``before`` in errors."""
        if self.skip(b" "):
            return
        if self.at_end():
            hint = f" (syntax: {self.syntax})" if self.syntax else ""
            raise ParseError(f"missing {before}{hint}")
        raise self.expected(f"a space before {before}")

    def end(self) -> None:
        """Nothing may follow the last argument."""
        if self.at_end():
            return
        rest = self.data[self.pos :]
        hint = f" (syntax: {self.syntax})" if self.syntax else ""
        if rest == b"\r\n":
            raise ParseError("a command is passed to the parser without its final CRLF")
        if rest == b" ":
            raise ParseError(f"a space at the end of the command{hint}")
        if rest.startswith(b" "):
            self.pos += 1  # to name the first extra argument
            raise ParseError(f"too many arguments: {self.found()} after the last one{hint}")
        raise self.expected("the end of the command")

    # ------------------------------------------------------------------ strings

    def atom(self, what: str) -> str:
        """atom = 1*ATOM-CHAR."""
        word = self.take(_ATOM)
        if word is None:
            raise self.expected(what)
        return word.decode("ascii")

    def keyword(self, choices: tuple[str, ...], what: str) -> str:
        """An atom that must be one of ``choices`` (in any case); returned upper-cased."""
        word = self.atom(what).upper()
        if word not in choices:
            raise ParseError(f"unknown {what} {_show(word)}; expected one of {' '.join(choices)}")
        return word

    def quoted(self) -> str:
        """quoted = DQUOTE *QUOTED-CHAR DQUOTE, where only \\\\ and \\" are escapes.

        8-bit octets are accepted when they are UTF-8 (as RFC 6855 allows).
        """
        self.expect(b'"', "a quoted string")
        text = bytearray()
        while True:
            if self.at_end():
                raise ParseError('unterminated quoted string: the closing " is missing')
            octet = self.data[self.pos]
            self.pos += 1
            if octet == 0x22:  # the closing double quote
                break
            if octet == 0x5C:  # a backslash escapes the next octet: \ or " only
                escaped = self.peek()
                if escaped not in (b"\\", b'"'):
                    shown = _show(escaped) if escaped else "the end"
                    raise ParseError(
                        f'invalid escape \\{shown} in a quoted string: only \\\\ and \\" exist'
                    )
                octet = escaped[0]
                self.pos += 1
            elif octet in b"\r\n":
                raise ParseError("a quoted string cannot span lines; send a literal instead")
            elif octet == 0:
                raise ParseError("a quoted string cannot contain NUL")
            text.append(octet)
        return _utf8(bytes(text), "a quoted string")

    def literal(self) -> bytes:
        """literal = "{" number ["+"] "}" CRLF *CHAR8 (RFC 3501 §9, RFC 7888)."""
        braces = self.take(_LITERAL_BRACES)
        if braces is None:
            raise self.expected("a literal such as {5}")
        size = _announced(braces[1:-1]).size
        if not self.skip(b"\r") or not self.skip(b"\n"):
            raise ParseError("a literal's {size} must end its line")
        octets = self.data[self.pos : self.pos + size]
        if len(octets) < size:
            raise ParseError(f"the literal is shorter than the {size} octets announced")
        if b"\0" in octets:
            raise ParseError("a literal cannot contain NUL (RFC 3501 section 9, CHAR8)")
        self.pos += size
        return octets

    def string(self) -> str:
        """string = quoted / literal; a literal used as text must be UTF-8."""
        if self.peek() == b'"':
            return self.quoted()
        return _utf8(self.literal(), "a literal string")

    def astring(self, what: str) -> str:
        """astring = 1*ASTRING-CHAR / string."""
        if self.peek() in (b'"', b"{"):
            return self.string()
        word = self.take(_ASTRING_CHARS)
        if word is None:
            raise self.expected(what)
        return word.decode("ascii")

    def mailbox(self, what: str = "a mailbox name") -> str:
        """mailbox = "INBOX" / astring; INBOX in any case is INBOX (RFC 3501 §5.1).

        The name stays as sent: modified UTF-7 (see :func:`decode_mutf7`).
        """
        name = self.astring(what)
        return "INBOX" if name.upper() == "INBOX" else name

    def list_mailbox(self) -> str:
        """list-mailbox = 1*list-char / string: a name that may hold the wildcards % and *."""
        if self.peek() in (b'"', b"{"):
            return self.string()
        word = self.take(_LIST_CHARS)
        if word is None:
            raise self.expected("a mailbox pattern such as * or %")
        return word.decode("ascii")

    # ------------------------------------------------------------------ numbers and sets

    def number(self, what: str) -> int:
        """number = 1*DIGIT, an unsigned 32-bit integer."""
        digits = self.take(_NUMBER)
        if digits is None:
            raise self.expected(what)
        if len(digits) > len(str(MAX_NUMBER)) or int(digits) > MAX_NUMBER:
            raise ParseError(f"{what} is larger than {MAX_NUMBER} (RFC 3501 section 9)")
        return int(digits)

    def nz_number(self, what: str) -> int:
        """nz-number: a number that is not 0."""
        value = self.number(what)
        if value == 0:
            raise ParseError(f"{what} cannot be 0")
        return value

    def sequence_set(self) -> SequenceSet:
        """sequence-set, e.g. ``1:5,7,9:*``."""
        token = self.take(_SEQUENCE_TOKEN)
        if token is None:
            raise self.expected("a sequence set such as 1:5 or 2,4:*")
        return SequenceSet.parse(token.decode("ascii"))

    # ------------------------------------------------------------------ lists, flags, dates

    def parenthesized(
        self, read_item: Callable[[], T], what: str, *, empty_ok: bool = False
    ) -> tuple[T, ...]:
        """``(`` item *(SP item) ``)``, each item read by ``read_item``."""
        self.expect(b"(", f"( to open the list of {what}")
        items: list[T] = []
        if self.peek() != b")":
            items.append(read_item())
            while self.skip(b" "):
                items.append(read_item())
        if self.at_end():
            raise ParseError(f"unbalanced parentheses: the list of {what} is not closed")
        self.expect(b")", f"a space or ) in the list of {what}")
        if not items and not empty_ok:
            raise ParseError(f"the list of {what} cannot be empty")
        return tuple(items)

    def flag(self) -> str:
        """flag = a system flag (``\\Seen`` ...) / keyword (an atom), for STORE and APPEND.

        System flags come back spelled as in RFC 3501 §2.3.2, whatever their case.
        """
        if not self.skip(b"\\"):
            return self.atom("a flag such as \\Seen or a keyword such as $Forwarded")
        name = "\\" + self.atom("a flag name after the backslash")
        for system_flag in SYSTEM_FLAGS:
            if name.lower() == system_flag.lower():
                return system_flag
        if name.lower() == "\\recent":
            raise ParseError("\\Recent is set by the server only (RFC 3501 section 2.3.2)")
        raise ParseError(
            f"unknown system flag {_show(name)}; the system flags are {' '.join(SYSTEM_FLAGS)}"
        )

    def flag_list(self) -> tuple[str, ...]:
        """flag-list = "(" [flag *(SP flag)] ")"."""
        return self.parenthesized(self.flag, "flags", empty_ok=True)

    def date(self) -> date:
        """date = date-text / DQUOTE date-text DQUOTE, e.g. ``1-Feb-1994``."""
        quoted = self.skip(b'"')
        text = self.take(_DATE)
        if text is None:
            raise self.expected("a date such as 1-Feb-1994")
        if quoted:
            self.expect(b'"', 'the " that closes the date')
        match = _DATE.fullmatch(text)
        assert match is not None
        day, month, year = (part.decode("ascii") for part in match.groups())
        try:
            return date(int(year), _month(month), int(day))
        except ValueError:
            raise ParseError(f"invalid date {_show(text)}") from None

    def date_time(self) -> datetime:
        """date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE.

        For example ``"17-Jul-1996 02:44:25 -0700"``. RFC 3501 wants the day as two
        characters (`` 7`` or ``07``); like most servers we also take ``7``.
        """
        match = _DATE_TIME.match(self.data, self.pos)
        if match is None:
            raise self.expected('a date-time such as "17-Jul-1996 02:44:25 -0700"')
        day, month, year, hour, minute, second, sign, zone = (
            part.decode("ascii") for part in match.groups()
        )
        offset = timedelta(hours=int(zone[:2]), minutes=int(zone[2:]))
        try:
            if int(zone[2:]) >= 60:
                raise ValueError("minutes")
            moment = datetime(
                int(year),
                _month(month),
                int(day),
                int(hour),
                int(minute),
                int(second),
                tzinfo=timezone(-offset if sign == "-" else offset),
            )
        except ValueError:
            raise ParseError(f"invalid date-time {_show(match.group())}") from None
        self.pos = match.end()
        return moment


def _utf8(octets: bytes, what: str) -> str:
    try:
        return octets.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError(f"{what} must be ASCII or UTF-8 text") from None


def _month(name: str) -> int:
    try:
        return MONTHS.index(name.upper()) + 1
    except ValueError:
        raise ParseError(f"unknown month {_show(name)}; the months are Jan to Dec") from None


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class Command:
    """What every command has: the client's tag and, as a class attribute, its name."""

    tag: str
    #: The command as on the wire, upper-cased ("FETCH"); the core dispatches on it.
    name: ClassVar[str] = ""
    #: The syntax line of the command's RFC section; error messages quote it.
    syntax: ClassVar[str] = ""

    @classmethod
    def parse(cls, r: Reader, tag: str, uid: bool) -> Command:
        """Read the arguments after the command name. ``uid``: it came after UID.

        This default is for the commands that take no arguments.
        """
        return cls(tag)


# ---- any state (RFC 3501 §6.1)


@dataclass(frozen=True)
class Capability(Command):
    """RFC 3501 §6.1.1: which extensions does the server offer?"""

    name = "CAPABILITY"
    syntax = "CAPABILITY"


@dataclass(frozen=True)
class Noop(Command):
    """RFC 3501 §6.1.2: do nothing, but report news (new mail, expunges)."""

    name = "NOOP"
    syntax = "NOOP"


@dataclass(frozen=True)
class Logout(Command):
    """RFC 3501 §6.1.3: end the session."""

    name = "LOGOUT"
    syntax = "LOGOUT"


# ---- not authenticated (RFC 3501 §6.2)


@dataclass(frozen=True)
class StartTLS(Command):
    """RFC 3501 §6.2.1: start TLS on this connection."""

    name = "STARTTLS"
    syntax = "STARTTLS"


@dataclass(frozen=True)
class Authenticate(Command):
    """RFC 3501 §6.2.2, with the initial response of RFC 4959 (SASL-IR).

    ``initial_response`` is the base64 text as sent (checked to be base64, not
    decoded), or ``b"="`` for an empty response (RFC 4959 §3), or None.
    """

    name = "AUTHENTICATE"
    syntax = "AUTHENTICATE mechanism [initial-response]"

    mechanism: str
    initial_response: bytes | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, r: Reader, tag: str, uid: bool) -> Authenticate:
        r.space("a SASL mechanism such as PLAIN")
        mechanism = r.atom("a SASL mechanism such as PLAIN").upper()
        if r.at_end():
            return cls(tag, mechanism)
        r.space("the initial response")
        response = r.take(_BASE64_TOKEN)
        if response is None or not (response == b"=" or _BASE64.fullmatch(response)):
            raise ParseError("the initial response must be base64, or = for an empty one")
        return cls(tag, mechanism, response)


@dataclass(frozen=True)
class Login(Command):
    """RFC 3501 §6.2.3: log in with a user name and a password in clear text."""

    name = "LOGIN"
    syntax = "LOGIN userid password"

    userid: str
    password: str = field(repr=False)  # keep passwords out of logs and transcripts

    @classmethod
    def parse(cls, r: Reader, tag: str, uid: bool) -> Login:
        r.space("a user name")
        userid = r.astring("a user name")
        r.space("a password")
        return cls(tag, userid, r.astring("a password"))


# ---- authenticated (RFC 3501 §6.3 and extensions)


@dataclass(frozen=True)
class Enable(Command):
    """RFC 5161 §3.1: turn on extensions that change how the server answers."""

    name = "ENABLE"
    syntax = "ENABLE capability [capability ...]"

    capabilities: tuple[str, ...]  # upper-cased

    @classmethod
    def parse(cls, r: Reader, tag: str, uid: bool) -> Enable:
        capabilities = []
        while True:
            r.space("a capability")
            capabilities.append(r.atom("a capability").upper())
            if r.at_end():
                return cls(tag, tuple(capabilities))


@dataclass(frozen=True)
class _MailboxCommand(Command):
    """The shape of the commands whose one argument is a mailbox name."""

    mailbox: str

    @classmethod
    def parse(cls, r: Reader, tag: str, uid: bool) -> _MailboxCommand:
        r.space("a mailbox name")
        return cls(tag, r.mailbox())


@dataclass(frozen=True)
class Select(_MailboxCommand):
    """RFC 3501 §6.3.1: open a mailbox to read and change it."""

    name = "SELECT"
    syntax = "SELECT mailbox"


@dataclass(frozen=True)
class Examine(_MailboxCommand):
    """RFC 3501 §6.3.2: open a mailbox read-only."""

    name = "EXAMINE"
    syntax = "EXAMINE mailbox"


@dataclass(frozen=True)
class Create(_MailboxCommand):
    """RFC 3501 §6.3.3: create a mailbox."""

    name = "CREATE"
    syntax = "CREATE mailbox"


@dataclass(frozen=True)
class Delete(_MailboxCommand):
    """RFC 3501 §6.3.4: delete a mailbox."""

    name = "DELETE"
    syntax = "DELETE mailbox"


@dataclass(frozen=True)
class Subscribe(_MailboxCommand):
    """RFC 3501 §6.3.6: add a mailbox to the subscriptions (what LSUB lists)."""

    name = "SUBSCRIBE"
    syntax = "SUBSCRIBE mailbox"


@dataclass(frozen=True)
class Unsubscribe(_MailboxCommand):
    """RFC 3501 §6.3.7: remove a mailbox from the subscriptions."""

    name = "UNSUBSCRIBE"
    syntax = "UNSUBSCRIBE mailbox"


@dataclass(frozen=True)
class Rename(Command):
    """RFC 3501 §6.3.5: give a mailbox a new name."""

    name = "RENAME"
    syntax = "RENAME mailbox new-mailbox"

    old: str
    new: str

    @classmethod
    def parse(cls, r: Reader, tag: str, uid: bool) -> Rename:
        r.space("the mailbox to rename")
        old = r.mailbox("the mailbox to rename")
        r.space("the new mailbox name")
        return cls(tag, old, r.mailbox("the new mailbox name"))


@dataclass(frozen=True)
class List(Command):
    """RFC 3501 §6.3.8, with the options of RFC 5258 and RFC 6154 (SPECIAL-USE).

    ``pattern`` may hold the wildcards ``*`` (any text) and ``%`` (any text but the
    hierarchy separator). The options are upper-cased, in the order sent.
    """

    name = "LIST"
    syntax = "LIST [(selection-options)] reference pattern [RETURN (return-options)]"

    reference: str
    pattern: str
    selection_options: tuple[str, ...] = ()
    return_options: tuple[str, ...] = ()

    @classmethod
    def parse(cls, r: Reader, tag: str, uid: bool) -> List:
        r.space("a reference name")
        selection: tuple[str, ...] = ()
        if r.peek() == b"(":
            selection = r.parenthesized(
                lambda: r.keyword(LIST_SELECTION_OPTIONS, "LIST selection option"),
                "selection options",
                empty_ok=True,
            )
            r.space("a reference name")
            # RFC 5258 §3.1: RECURSIVEMATCH only refines another selection option.
            if "RECURSIVEMATCH" in selection and set(selection) <= {"RECURSIVEMATCH", "REMOTE"}:
                raise ParseError("RECURSIVEMATCH needs another selection option, e.g. SUBSCRIBED")
        reference = r.mailbox("a reference name")
        r.space("a mailbox pattern")
        if r.peek() == b"(":
            raise ParseError("only one mailbox pattern per LIST is supported")
        pattern = r.list_mailbox()
        returns: tuple[str, ...] = ()
        if not r.at_end():
            r.space("RETURN")
            if not r.next_word_is("RETURN"):
                raise r.expected("RETURN")
            r.space("the list of return options")
            returns = r.parenthesized(
                lambda: r.keyword(LIST_RETURN_OPTIONS, "LIST return option"),
                "return options",
                empty_ok=True,
            )
        return cls(tag, reference, pattern, selection, returns)


@dataclass(frozen=True)
class Lsub(Command):
    """RFC 3501 §6.3.9: like LIST, but only subscribed mailboxes."""

    name = "LSUB"
    syntax = "LSUB reference pattern"

    reference: str
    pattern: str

    @classmethod
    def parse(cls, r: Reader, tag: str, uid: bool) -> Lsub:
        r.space("a reference name")
        reference = r.mailbox("a reference name")
        r.space("a mailbox pattern")
        return cls(tag, reference, r.list_mailbox())


@dataclass(frozen=True)
class Status(Command):
    """RFC 3501 §6.3.10: counts of a mailbox that is not selected."""

    name = "STATUS"
    syntax = "STATUS mailbox (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)"

    mailbox: str
    items: tuple[str, ...]  # upper-cased, from STATUS_ITEMS

    @classmethod
    def parse(cls, r: Reader, tag: str, uid: bool) -> Status:
        r.space("a mailbox name")
        mailbox = r.mailbox()
        r.space("the list of status items")
        items = r.parenthesized(
            lambda: r.keyword(STATUS_ITEMS, "status item"), "status items", empty_ok=False
        )
        return cls(tag, mailbox, items)


@dataclass(frozen=True)
class Append(Command):
    """RFC 3501 §6.3.11: add a message to a mailbox; the message is a literal."""

    name = "APPEND"
    syntax = 'APPEND mailbox [(flags)] ["date-time"] {size}'

    mailbox: str
    flags: tuple[str, ...]
    date: datetime | None  # the INTERNALDATE to give the message; None means now
    message: bytes = field(repr=False)

    @classmethod
    def parse(cls, r: Reader, tag: str, uid: bool) -> Append:
        r.space("a mailbox name")
        mailbox = r.mailbox()
        r.space("the message literal")
        flags: tuple[str, ...] = ()
        if r.peek() == b"(":
            flags = r.flag_list()
            r.space("the message literal")
        when = None
        if r.peek() == b'"':
            when = r.date_time()
            r.space("the message literal")
        if r.peek() != b"{":
            raise r.expected("the message as a literal such as {310}")
        return cls(tag, mailbox, flags, when, r.literal())


@dataclass(frozen=True)
class Namespace(Command):
    """RFC 2342 §5: where do personal, other users' and shared mailboxes live?"""

    name = "NAMESPACE"
    syntax = "NAMESPACE"


@dataclass(frozen=True)
class Idle(Command):
    """RFC 2177 §3: wait for news; the client ends IDLE with a DONE line."""

    name = "IDLE"
    syntax = "IDLE"


# ---- selected (RFC 3501 §6.4 and extensions)


@dataclass(frozen=True)
class Check(Command):
    """RFC 3501 §6.4.1: a checkpoint of the selected mailbox."""

    name = "CHECK"
    syntax = "CHECK"


@dataclass(frozen=True)
class Close(Command):
    """RFC 3501 §6.4.2: expunge silently and leave the mailbox."""

    name = "CLOSE"
    syntax = "CLOSE"


@dataclass(frozen=True)
class Unselect(Command):
    """RFC 3691 §2: leave the mailbox without expunging."""

    name = "UNSELECT"
    syntax = "UNSELECT"


@dataclass(frozen=True)
class Expunge(Command):
    """RFC 3501 §6.4.3: remove the messages marked \\Deleted.

    ``UID EXPUNGE set`` (RFC 4315 §2.1) removes only those of them whose UIDs are in
    ``sequence_set``; it is this class with ``uid=True``.
    """

    name = "EXPUNGE"
    syntax = "EXPUNGE or UID EXPUNGE sequence-set"

    sequence_set: SequenceSet | None = None
    uid: bool = False

    @classmethod
    def parse(cls, r: Reader, tag: str, uid: bool) -> Expunge:
        if not uid:
            return cls(tag)
        r.space("a set of UIDs")
        return cls(tag, r.sequence_set(), uid=True)


@dataclass(frozen=True)
class Search(Command):
    """RFC 3501 §6.4.4: find messages. Several keys all have to match (an AND).

    ``charset`` is None (US-ASCII is meant), "US-ASCII" or "UTF-8". Without
    CHARSET UTF-8 the strings to search for must be ASCII.
    """

    name = "SEARCH"
    syntax = "[UID] SEARCH [CHARSET charset] search-key [search-key ...]"

    charset: str | None
    criteria: SearchKey
    uid: bool = False

    @classmethod
    def parse(cls, r: Reader, tag: str, uid: bool) -> Search:
        r.space("a search key")
        charset = None
        if r.next_word_is("CHARSET"):
            r.space("a charset name")
            charset = r.astring("a charset name").upper()
            if charset not in CHARSETS:
                raise UnsupportedCharset(charset)
            r.space("a search key")
        keys = [_search_key(r, charset)]
        while not r.at_end():
            r.space("a search key")
            keys.append(_search_key(r, charset))
        criteria = keys[0] if len(keys) == 1 else SearchKey("AND", tuple(keys))
        return cls(tag, charset, criteria, uid)


def _search_key(r: Reader, charset: str | None) -> SearchKey:
    """search-key (RFC 3501 §9): a key, a sequence set or a parenthesised group."""
    r.depth += 1
    try:
        if r.depth > MAX_NESTING:
            raise ParseError(f"search keys nested more than {MAX_NESTING} deep")
        if r.peek() == b"(":
            keys = r.parenthesized(lambda: _search_key(r, charset), "search keys")
            return keys[0] if len(keys) == 1 else SearchKey("AND", keys)
        if r.peek() and r.peek() in b"0123456789*":
            return SearchKey("SEQUENCE-SET", (r.sequence_set(),))
        op = r.atom("a search key such as ALL, UNSEEN or FROM").upper()
        if op not in SEARCH_KEYS:
            raise ParseError(f"unknown search key {_show(op)}")
        args = []
        for kind in SEARCH_KEYS[op]:
            r.space(f"the {kind} after {op}")
            args.append(_SEARCH_ARGUMENT_READERS[kind](r, charset))
        return SearchKey(op, tuple(args))
    finally:
        r.depth -= 1


def _search_string(r: Reader, charset: str | None) -> str:
    text = r.astring("a string to search for")
    if charset != "UTF-8" and not text.isascii():
        raise ParseError("to search for non-ASCII text, send SEARCH CHARSET UTF-8")
    return text


#: How each kind of argument in SEARCH_KEYS is read.
_SEARCH_ARGUMENT_READERS: dict[str, Callable[[Reader, str | None], SearchArgument]] = {
    "string": _search_string,
    "header-name": lambda r, charset: r.astring("a header field name").upper(),
    "keyword": lambda r, charset: r.atom("a keyword such as $Forwarded"),
    "date": lambda r, charset: r.date(),
    "number": lambda r, charset: r.number("a size in octets"),
    "sequence-set": lambda r, charset: r.sequence_set(),
    "search-key": _search_key,
}


@dataclass(frozen=True)
class Fetch(Command):
    """RFC 3501 §6.4.5: read data of messages.

    The macros ALL, FAST and FULL arrive expanded into their attributes.
    """

    name = "FETCH"
    syntax = "[UID] FETCH sequence-set (attribute [attribute ...])"

    sequence_set: SequenceSet
    attributes: tuple[FetchAttribute, ...]
    uid: bool = False

    @classmethod
    def parse(cls, r: Reader, tag: str, uid: bool) -> Fetch:
        r.space("a sequence set")
        sequence_set = r.sequence_set()
        r.space("the data items to fetch")
        if r.peek() == b"(":
            attributes = r.parenthesized(lambda: _fetch_attribute(r), "fetch attributes")
            return cls(tag, sequence_set, attributes, uid)
        for macro, names in FETCH_MACROS.items():
            if r.next_word_is(macro):  # ALL, FAST or FULL: only alone, never in a list
                return cls(tag, sequence_set, tuple(FetchAttribute(n) for n in names), uid)
        return cls(tag, sequence_set, (_fetch_attribute(r),), uid)


def _fetch_attribute(r: Reader) -> FetchAttribute:
    """fetch-att (RFC 3501 §9)."""
    word = r.take(_FETCH_NAME)
    if word is None:
        raise r.expected("a fetch attribute such as FLAGS or BODY[]")
    name = word.decode("ascii").upper()
    if name in ("BODY", "BODY.PEEK") and r.peek() == b"[":
        section = _section(r)
        partial = _partial(r) if r.peek() == b"<" else None
        return FetchAttribute("BODY", peek=name == "BODY.PEEK", section=section, partial=partial)
    if name == "BODY.PEEK":
        raise ParseError("BODY.PEEK needs a section, e.g. BODY.PEEK[]")
    if name in FETCH_MACROS:
        raise ParseError(f"the macro {name} cannot be combined with other fetch attributes")
    if name not in FETCH_ATTRIBUTES:
        raise ParseError(f"unknown fetch attribute {_show(name)}")
    if r.peek() in (b"[", b"<"):
        raise ParseError(f"{name} takes no section or partial; only BODY[...] does")
    return FetchAttribute(name)


def _section(r: Reader) -> Section:
    """section = "[" [section-spec] "]", e.g. ``[]``, ``[1.2.MIME]``, ``[HEADER.FIELDS (TO)]``."""
    r.expect(b"[", "[")
    parts: list[int] = []
    text = None
    fields: tuple[str, ...] = ()
    if r.peek().isdigit():
        parts.append(r.nz_number("a part number"))
        while r.skip(b"."):
            if not r.peek().isdigit():
                text = _section_text(r, has_parts=True)
                break
            parts.append(r.nz_number("a part number"))
    elif r.peek() != b"]":
        text = _section_text(r, has_parts=False)
    if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        r.space("the list of header field names")
        fields = r.parenthesized(
            lambda: r.astring("a header field name").upper(), "header field names"
        )
    if r.at_end():
        raise ParseError("unbalanced brackets: the section has no closing ]")
    r.expect(b"]", "] to close the section")
    return Section(tuple(parts), text, fields)


def _section_text(r: Reader, *, has_parts: bool) -> str:
    """section-text: HEADER, HEADER.FIELDS[.NOT], TEXT, or MIME (after a part number)."""
    word = r.take(_SECTION_TEXT)
    if word is None:
        raise r.expected("HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT or MIME")
    text = word.decode("ascii").upper()
    if text not in SECTION_TEXTS:
        raise ParseError(f"unknown section {_show(text)}")
    if text == "MIME" and not has_parts:
        raise ParseError("MIME needs a part number, e.g. BODY[1.MIME]")
    return text


def _partial(r: Reader) -> tuple[int, int]:
    """``<start.count>``: count octets from octet start (RFC 3501 §6.4.5)."""
    r.expect(b"<", "<")
    start = r.number("the first octet of the partial")
    r.expect(b".", "a . between the partial's start and count")
    count = r.nz_number("the octet count of the partial")
    r.expect(b">", "> to close the partial")
    return start, count


@dataclass(frozen=True)
class Store(Command):
    """RFC 3501 §6.4.6: change flags.

    ``mode`` is "+" (add), "-" (remove) or "" (replace); ``silent`` is True for
    .SILENT: the server does not answer with the new flags.
    """

    name = "STORE"
    syntax = "[UID] STORE sequence-set [+|-]FLAGS[.SILENT] (flag [flag ...])"

    sequence_set: SequenceSet
    mode: str
    silent: bool
    flags: tuple[str, ...]
    uid: bool = False

    @classmethod
    def parse(cls, r: Reader, tag: str, uid: bool) -> Store:
        r.space("a sequence set")
        sequence_set = r.sequence_set()
        r.space("FLAGS, +FLAGS or -FLAGS")
        item = r.atom("FLAGS, +FLAGS or -FLAGS").upper()
        match = re.fullmatch(r"([+-]?)FLAGS(\.SILENT)?", item)
        if match is None:
            raise ParseError(f"expected FLAGS, +FLAGS or -FLAGS (.SILENT), not {_show(item)}")
        r.space("the flags")
        if r.peek() == b"(":
            flags = r.flag_list()
        else:
            flags = (r.flag(),)
            while r.skip(b" "):
                flags += (r.flag(),)
        return cls(tag, sequence_set, match.group(1), bool(match.group(2)), flags, uid)


@dataclass(frozen=True)
class _TransferCommand(Command):
    """The shape of COPY and MOVE: messages, and the mailbox they go to."""

    sequence_set: SequenceSet
    mailbox: str
    uid: bool = False

    @classmethod
    def parse(cls, r: Reader, tag: str, uid: bool) -> _TransferCommand:
        r.space("a sequence set")
        sequence_set = r.sequence_set()
        r.space("a mailbox name")
        return cls(tag, sequence_set, r.mailbox(), uid)


@dataclass(frozen=True)
class Copy(_TransferCommand):
    """RFC 3501 §6.4.7: copy messages to the end of another mailbox."""

    name = "COPY"
    syntax = "[UID] COPY sequence-set mailbox"


@dataclass(frozen=True)
class Move(_TransferCommand):
    """RFC 6851 §3: like COPY, then expunge the originals, in one step."""

    name = "MOVE"
    syntax = "[UID] MOVE sequence-set mailbox"


#: Every command, by name (RFC 3501 §6 and the extensions above).
COMMANDS: dict[str, type[Command]] = {
    cls.name: cls
    for cls in (
        Capability,
        Noop,
        Logout,
        StartTLS,
        Authenticate,
        Login,
        Enable,
        Select,
        Examine,
        Create,
        Delete,
        Rename,
        Subscribe,
        Unsubscribe,
        List,
        Lsub,
        Status,
        Append,
        Namespace,
        Idle,
        Check,
        Close,
        Unselect,
        Expunge,
        Search,
        Fetch,
        Store,
        Copy,
        Move,
    )
}
#: The commands that may follow UID (RFC 3501 §6.4.8, RFC 4315 §2.1, RFC 6851 §3).
UID_COMMANDS: dict[str, type[Command]] = {
    cls.name: cls for cls in (Copy, Move, Fetch, Search, Store, Expunge)
}


# --------------------------------------------------------------------------- parse_command


def parse_command(data: bytes) -> Command:
    """Parse one whole command: ``tag SP name [SP arguments]`` (RFC 3501 §2.2.1).

    ``data`` holds the command's lines joined with their CRLFs and the literal octets
    in place, without the final CRLF. Raises ParseError, and nothing else.
    """
    tag = None
    try:
        r = Reader(bytes(data))
        tag = _tag(r)
        r.space("a command name")
        name = r.atom("a command name").upper()
        uid = name == "UID"
        if uid:
            r.space("a command after UID")
            name = r.atom("a command after UID").upper()
            if name not in UID_COMMANDS:
                raise ParseError(
                    f"UID {_show(name)} does not exist; UID goes before " + ", ".join(UID_COMMANDS)
                )
        if name not in COMMANDS:
            raise ParseError(f"unknown command {_show(name)}")
        cls = COMMANDS[name]
        r.syntax = cls.syntax
        command = cls.parse(r, tag, uid)
        r.end()
        return command
    except ParseError as error:
        if error.tag is None:
            error.tag = tag
        raise
    except Exception:  # a bug here: log it locally, and answer the client plainly
        log.exception("unexpected error while parsing a command (tag %r)", tag)
        raise ParseError("could not parse command", tag) from None


def _tag(r: Reader) -> str:
    """tag = 1*<any ASTRING-CHAR except "+">."""
    if r.at_end():
        raise ParseError("empty command line")
    if r.peek() == b" ":
        raise ParseError("missing tag: a command starts with a tag, e.g. a1 NOOP")
    word = r.take(_TAG)
    if word is None or r.peek() not in (b" ", b""):
        raise ParseError("invalid tag: use letters and digits, e.g. a1 NOOP")
    return word.decode("ascii")


# --------------------------------------------------------------------------- modified UTF-7


def encode_mutf7(name: str) -> str:
    """A mailbox name in modified UTF-7 (RFC 3501 §5.1.3): ``Entwürfe`` → ``Entw&APw-rfe``.

    Printable ASCII stands for itself, except ``&``, written ``&-``. Any other run of
    characters is written ``&`` + their UTF-16 in base64 (with ``,`` for ``/`` and
    no ``=`` padding) + ``-``.
    """
    out: list[str] = []
    pending: list[str] = []  # characters waiting to be base64-encoded

    def flush() -> None:
        if pending:
            out.append("&" + _modified_base64("".join(pending).encode("utf-16-be")) + "-")
            pending.clear()

    for char in name:
        if " " <= char <= "~":
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def decode_mutf7(name: str) -> str:
    """The text of a modified UTF-7 mailbox name: ``Entw&APw-rfe`` → ``Entwürfe``.

    Raises ValueError for anything an encoder could not have produced (RFC 3501 §5.1.3):
    8-bit or control characters, an ``&`` that is never closed, bad base64, printable
    ASCII in base64, or UTF-16 that does not decode.
    """
    out: list[str] = []
    position = 0
    while position < len(name):
        char = name[position]
        if not " " <= char <= "~":
            raise ValueError("a modified UTF-7 name contains only printable ASCII")
        if char != "&":
            out.append(char)
            position += 1
            continue
        end = name.find("-", position + 1)
        if end < 0:
            raise ValueError("'&' starts base64 that is not ended by '-'")
        chunk = name[position + 1 : end]
        out.append(_decode_shifted(chunk) if chunk else "&")
        position = end + 1
    return "".join(out)


def _modified_base64(octets: bytes) -> str:
    """RFC 3501 §5.1.3: base64 with "," instead of "/", without "=" padding."""
    return base64.b64encode(octets).decode("ascii").rstrip("=").replace("/", ",")


def _decode_shifted(chunk: str) -> str:
    """The text of the base64 between ``&`` and ``-``."""
    if not re.fullmatch(r"[A-Za-z0-9+,]+", chunk):
        raise ValueError(f"invalid character in the modified base64 &{_show(chunk)}-")
    padded = chunk.replace(",", "/") + "=" * (-len(chunk) % 4)
    try:
        octets = base64.b64decode(padded, validate=True)
    except binascii.Error:
        raise ValueError(f"invalid modified base64 &{_show(chunk)}-") from None
    if len(octets) % 2 or _modified_base64(octets) != chunk:
        raise ValueError(f"&{_show(chunk)}- is not UTF-16 in canonical modified base64")
    try:
        text = octets.decode("utf-16-be")
    except UnicodeDecodeError:
        raise ValueError(f"&{_show(chunk)}- is not valid UTF-16") from None
    if any(" " <= char <= "~" for char in text):
        raise ValueError("printable ASCII must not be base64-encoded (RFC 3501 section 5.1.3)")
    return text
