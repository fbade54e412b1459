"""What IMAP FETCH says about one message: stored bytes in, response fragments out.

Role
    The layer between the store and the IMAP core's FETCH and SEARCH. The core reads
    a message's bytes from the store, wraps them in a :class:`MessageView`, and asks it
    for the pieces a FETCH response is made of: the ENVELOPE, the BODYSTRUCTURE, the
    octets of ``BODY[section]<partial>``, the size. Nothing here knows about sessions,
    mailboxes or flags. ::

        >>> view = MessageView(b"From: Bob <bob@north.test>\\r\\n"
        ...                    b"Subject: hi\\r\\n\\r\\nHello\\r\\n")
        >>> view.size
        50
        >>> view.bodystructure()
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 7 1 NIL NIL NIL NIL)'
        >>> view.section(Section(text="HEADER.FIELDS", fields=("SUBJECT",)))
        b'Subject: hi\\r\\n\\r\\n'

    The core writes the octets of a section as a literal: ``literal(view.section(...))``.

Octets, not objects
    Every section is a slice of the stored bytes, never a message re-written by the
    ``email`` package's generator: a client that fetches ``BODY[]<0.1000>`` and then
    ``BODY[]<1000.1000>`` must get exactly the octets that RFC822.SIZE counted. So the
    MIME structure is found here by a small splitter on the raw bytes (RFC 2046 §5.1.1:
    a part starts after a ``--boundary`` line and ends at the CRLF before the next one;
    ``--boundary--`` closes the multipart). ``email`` is used only to *decode* (RFC 2047
    header words, dates) for SEARCH.

Part numbers (RFC 3501 §6.4.5) ::

    multipart/mixed                     BODY[]      the whole message
     +-- text/plain                     BODY[1]     its body,  BODY[1.MIME] its header
     +-- message/rfc822                 BODY[2]     the whole encapsulated message
          +-- multipart/alternative     BODY[2.HEADER], BODY[2.TEXT]: its header and body
               +-- text/plain           BODY[2.1]
               +-- text/html            BODY[2.2]

    A message that is not multipart has one part, its body: ``BODY[1]``.

Choices a student should know about
    * Stored mail has CRLF line ends. A file with bare LF line ends (written by hand) is
      treated as if every bare LF were CRLF, so sizes and sections agree with what is
      sent. A lone CR is left alone.
    * A part that does not exist (``BODY[7]`` of a two-part message, ``BODY[1.HEADER]``
      of a text part) gives the empty string, as Dovecot answers; RFC 3501 does not
      say what to do.
    * Malformed MIME never raises. A multipart without a boundary parameter, or whose
      boundary never appears, and a Content-Type that does not parse, are read as one
      ``text/plain; charset=us-ascii`` part (the RFC 2045 §5.2 default). Nesting deeper
      than :data:`MAX_MIME_DEPTH` is read the same way.
    * ENVELOPE and BODYSTRUCTURE strings are the raw header octets, unfolded: RFC 2047
      encoded words stay encoded, as servers send them. Names of types, subtypes,
      parameters, dispositions and encodings are upper-cased, as in RFC 3501's examples;
      values are left as written. An address without ``@host`` gets the host ``""``
      (NIL would mean a group marker).
    * A line count is the number of CRLFs, plus one for a last line without CRLF.

RFCs followed
    RFC 3501 §6.4.5 and §7.4.2 (FETCH), §9 (the formal syntax of envelope and body),
    RFC 5322 §3.4 (addresses and groups), RFC 2045 and RFC 2046 (MIME), RFC 2183
    (Content-Disposition), RFC 3066 (Content-Language), RFC 2557 (Content-Location),
    RFC 2047 (encoded words, decoded only for SEARCH).

Left out: comments inside Content-Type, RFC 2231 parameter continuations (passed on
raw, e.g. ``("FILENAME*" "utf-8''r%C3%A9sum%C3%A9.pdf")``), Content-MD5 (always NIL),
and BINARY (RFC 3516): NUL octets are sent in an ordinary literal.

This module must not import asyncio, socket, ssl, threading or ipywidgets: it is pure
code on the standard library, and it knows nothing of the store or of sessions.
"""

from __future__ import annotations

import base64
import datetime
import email.errors
import email.header
import email.utils
import functools
import quopri
import re
import time
from dataclasses import dataclass, field

from .imapparse import Section

__all__ = [
    "MAX_MIME_DEPTH",
    "MessageView",
    "crlf_normalise",
    "fetch_date",
    "literal",
    "nstring",
]

#: A Content-Type as (maintype, subtype, parameters): ("text", "plain", (("charset", "utf-8"),)).
MediaType = tuple[str, str, tuple[tuple[str, str], ...]]

#: How deep multiparts and message/rfc822 parts may nest before the rest is read as text.
#: RFC 3501 sets no limit; Dovecot stops at 100 too. It keeps recursion bounded.
MAX_MIME_DEPTH = 100

#: RFC 2045 §5.2: what a part without a (valid) Content-Type is.
DEFAULT_TYPE: MediaType = ("text", "plain", (("charset", "US-ASCII"),))

#: RFC 2046 §5.1.5: inside multipart/digest, a part without Content-Type is a message.
DIGEST_DEFAULT_TYPE: MediaType = ("message", "rfc822", ())

#: RFC 2045 §6.1: the encoding of a part without Content-Transfer-Encoding.
DEFAULT_ENCODING = "7BIT"

#: RFC 3501 §9 date-time: month names are English whatever the locale.
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

CRLF = b"\r\n"
NIL = b"NIL"

_BARE_LF = re.compile(rb"(?<!\r)\n")
_FOLD = re.compile(rb"\r?\n")
_LINE = re.compile(rb"[^\n]*\n|[^\n]+")
#: RFC 2045 §5.1: a type or subtype token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: RFC 5322 §3.2.3: the specials that separate the words of an address.
_ADDRESS_SPECIALS = '<>,:;@"()[]'


# --------------------------------------------------------------------------- IMAP strings


def literal(data: bytes) -> bytes:
    """A literal (RFC 3501 §4.3): ``{n}`` CRLF and the n octets, e.g. ``{5}\\r\\nHello``."""
    return b"{%d}\r\n" % len(data) + data


def nstring(value: str | bytes | None) -> bytes:
    """NIL, a quoted string, or a literal (RFC 3501 §4.3-4.5).

    A quoted string may hold 7-bit characters but not CR, LF or NUL; ``\\`` and ``"``
    are escaped with a backslash. Anything else (8-bit text, a line break) is sent as a
    literal. A ``str`` is sent as UTF-8.
    """
    if value is None:
        return NIL
    octets = value.encode("utf-8") if isinstance(value, str) else value
    if any(byte > 0x7F or byte in b"\r\n\0" for byte in octets):
        return literal(octets)
    return b'"' + octets.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def fetch_date(epoch: float) -> bytes:
    """INTERNALDATE as RFC 3501 §9 date-time, in UTC: ``b'"17-Jul-1996 09:44:25 +0000"'``."""
    t = time.gmtime(epoch)
    return (
        f'"{t.tm_mday:02d}-{MONTHS[t.tm_mon - 1]}-{t.tm_year:04d} '
        f'{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"'
    ).encode("ascii")


def _string_list(values: list[bytes]) -> bytes:
    """``("a" "b")``, or NIL for no values (body-fld-param, body-fld-lang)."""
    return b"(" + b" ".join(nstring(value) for value in values) + b")" if values else NIL


# --------------------------------------------------------------------------- headers


def crlf_normalise(data: bytes) -> bytes:
    """``data`` with every bare LF turned into CRLF: the octets as sent on the wire."""
    if data.count(b"\n") == data.count(CRLF):
        return data  # the usual case (stored mail has CRLF): two fast counts, no regex
    return _BARE_LF.sub(CRLF, data)


def _split_header(data: bytes) -> tuple[bytes, bytes]:
    """(header with its blank line, body) of an entity (RFC 5322 §2.1).

    Without a blank line the whole entity is header and the body is empty.
    """
    if data.startswith(CRLF):
        return CRLF, data[2:]
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return data, b""
    return data[: end + 4], data[end + 4 :]


def _header_fields(header: bytes) -> list[tuple[str, bytes]]:
    """The fields of a header in order: (NAME upper-cased, raw octets ending in CRLF).

    A line that starts with a space or a tab continues the field before it (folding,
    RFC 5322 §2.2.3). A line without a colon becomes a field with the name "".
    """
    fields: list[tuple[str, bytes]] = []
    for line in _LINE.findall(header):
        if line == CRLF:
            break  # the blank line that ends the header
        if line[:1] in (b" ", b"\t") and fields:
            name, raw = fields[-1]
            fields[-1] = (name, raw + line)
        else:
            name = line.split(b":", 1)[0].strip() if b":" in line else b""
            fields.append((name.decode("latin-1").upper(), line))
    return [(name, raw if raw.endswith(CRLF) else raw.rstrip(b"\r") + CRLF) for name, raw in fields]


def _field_value(raw: bytes) -> bytes:
    """The value of one raw field, unfolded and without surrounding blanks."""
    value = raw.split(b":", 1)[1] if b":" in raw else b""
    return _FOLD.sub(b"", value).strip(b" \t")


def _first_value(fields: list[tuple[str, bytes]], name: str) -> bytes | None:
    """The unfolded value of the first field called ``name`` (upper-case), or None."""
    for field_name, raw in fields:
        if field_name == name:
            return _field_value(raw)
    return None


def _split_params(value: str) -> tuple[str, list[tuple[str, str]]]:
    """Split a value with parameters (RFC 2045 §5.1).

    ``type/sub; a=1; b="x;y"`` gives ``("type/sub", [("a", "1"), ("b", "x;y")])``.
    """
    chunks: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            chunks.append("".join(current))
            current = []
            continue
        current.append(char)
    chunks.append("".join(current))
    params = []
    for chunk in chunks[1:]:
        name, equals, raw = chunk.partition("=")
        name, raw = name.strip(), raw.strip()
        if not equals or not name:
            continue
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params.append((name, raw))
    return chunks[0].strip(), params


# --------------------------------------------------------------------------- MIME structure


@dataclass
class _Part:
    """One MIME entity: a whole message, a part of a multipart, or an encapsulated message."""

    header: bytes
    body: bytes
    fields: list[tuple[str, bytes]]
    maintype: str  # lower-case, e.g. "text"
    subtype: str  # lower-case, e.g. "plain"
    params: tuple[tuple[str, str], ...]
    children: list[_Part] = field(default_factory=list)  # of a multipart
    message: _Part | None = None  # of a message/rfc822 part

    def value(self, name: str) -> bytes | None:
        """The unfolded value of the first field ``name`` (upper-case), or None."""
        return _first_value(self.fields, name)

    def param(self, name: str) -> str | None:
        """The value of the Content-Type parameter ``name`` (lower-case), or None."""
        return next((v for n, v in self.params if n.lower() == name), None)


def _content_type(value: bytes | None, default: MediaType) -> MediaType:
    """(maintype, subtype, params) of a Content-Type value; ``default`` if absent or invalid."""
    if value is None:
        return default
    media, params = _split_params(value.decode("latin-1"))
    maintype, slash, subtype = (s.strip() for s in media.partition("/"))
    if not (slash and _TOKEN.fullmatch(maintype) and _TOKEN.fullmatch(subtype)):
        return DEFAULT_TYPE
    return maintype.lower(), subtype.lower(), tuple(params)


def _split_multipart(body: bytes, boundary: bytes) -> list[bytes] | None:
    """The parts of a multipart body (RFC 2046 §5.1.1), or None if there are none.

    A delimiter is a line ``--boundary`` (with optional blanks after it); the CRLF before
    it belongs to the delimiter, not to the part. ``--boundary--`` ends the parts. A
    missing close delimiter is tolerated: the last part then runs to the end.
    """
    delimiter = re.compile(rb"(?:\A|\r\n)--" + re.escape(boundary) + rb"(--)?[ \t]*(?=\r\n|\Z)")
    parts: list[bytes] = []
    start: int | None = None
    for match in delimiter.finditer(body):
        if start is not None:
            parts.append(body[start : match.start()])
        if match.group(1):
            start = None
            break
        start = match.end() + len(CRLF)
    if start is not None:
        parts.append(body[start:])
    return parts or None


def _parse_entity(data: bytes, default: MediaType, depth: int = 0) -> _Part:
    """Parse one entity and, recursively, the parts inside it. Never raises."""
    header, body = _split_header(data)
    fields = _header_fields(header)
    maintype, subtype, params = _content_type(_first_value(fields, "CONTENT-TYPE"), default)
    part = _Part(header, body, fields, maintype, subtype, params)
    too_deep = depth >= MAX_MIME_DEPTH
    if maintype == "multipart":
        boundary = part.param("boundary")
        pieces = None
        if boundary and not too_deep:
            pieces = _split_multipart(body, boundary.encode("latin-1", errors="replace"))
        if pieces is None:  # malformed: read it as one text part
            part.maintype, part.subtype, part.params = DEFAULT_TYPE
        else:
            child_default = DIGEST_DEFAULT_TYPE if subtype == "digest" else DEFAULT_TYPE
            part.children = [_parse_entity(p, child_default, depth + 1) for p in pieces]
    elif (maintype, subtype) == ("message", "rfc822"):
        if too_deep:
            part.maintype, part.subtype, part.params = DEFAULT_TYPE
        else:
            part.message = _parse_entity(body, DEFAULT_TYPE, depth + 1)
    return part


def _subparts(node: _Part, is_message: bool) -> list[_Part]:
    """What part numbers count inside ``node`` (RFC 3501 §6.4.5).

    The parts of a multipart are its children. A message that is not multipart has one
    part, its body (the node itself). The parts of a message/rfc822 part are the parts of
    the message inside it.
    """
    if node.children:
        return node.children
    if is_message:
        return [node]
    if node.message is not None:
        return _subparts(node.message, True)
    return []


def _line_count(body: bytes) -> int:
    """body-fld-lines: CRLFs, plus one for a last line that has none."""
    return body.count(CRLF) + (1 if body and not body.endswith(CRLF) else 0)


# --------------------------------------------------------------------------- addresses


@dataclass(frozen=True)
class _Address:
    """One address of the envelope (RFC 3501 §7.4.2): (name adl mailbox host).

    A group start is (NIL NIL "group name" NIL), a group end (NIL NIL NIL NIL).
    """

    name: str | None
    adl: str | None
    mailbox: str | None
    host: str | None

    def imap(self) -> bytes:
        parts = (self.name, self.adl, self.mailbox, self.host)
        return b"(" + b" ".join(nstring(_raw(p)) for p in parts) + b")"


_GROUP_END = _Address(None, None, None, None)


def _raw(text: str | None) -> bytes | None:
    """Header text back to its octets (we decode headers as latin-1: one char, one octet)."""
    return None if text is None else text.encode("latin-1")


def _address_tokens(value: str) -> list[tuple[str, str]]:
    """Tokens of an address list: (kind, text), kind one of ``atom quoted comment special``."""
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(value)
    while i < n:
        char = value[i]
        if char in " \t\r\n":
            i += 1
        elif char == '"':
            text, i = [], i + 1
            while i < n and value[i] != '"':
                if value[i] == "\\" and i + 1 < n:
                    i += 1
                text.append(value[i])
                i += 1
            tokens.append(("quoted", "".join(text)))
            i += 1
        elif char == "(":
            start, depth = i + 1, 0
            while i < n:
                if value[i] == "\\":
                    i += 1
                elif value[i] == "(":
                    depth += 1
                elif value[i] == ")":
                    depth -= 1
                    if depth == 0:
                        break
                i += 1
            tokens.append(("comment", value[start:i]))
            i += 1
        elif char == "[":
            end = value.find("]", i)
            end = n if end < 0 else end + 1
            tokens.append(("atom", value[i:end]))
            i = end
        elif char in _ADDRESS_SPECIALS:
            tokens.append(("special", char))
            i += 1
        else:
            start = i
            while i < n and value[i] not in _ADDRESS_SPECIALS and value[i] not in " \t\r\n":
                i += 1
            tokens.append(("atom", value[start:i]))
    return tokens


def _phrase(tokens: list[tuple[str, str]]) -> str | None:
    """A display name: its words joined by one space, quoted strings unquoted."""
    words = [text for kind, text in tokens if kind in ("atom", "quoted", "special")]
    return " ".join(words) if words else None


def _join_addr(tokens: list[tuple[str, str]]) -> str:
    """Part of an addr-spec as written, without blanks: ``a.b``, ``"john doe"``."""
    out = []
    for kind, text in tokens:
        if kind == "quoted":
            out.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
        elif kind != "comment":
            out.append(text)
    return "".join(out)


def _mailbox(phrase: list[tuple[str, str]], spec: list[tuple[str, str]]) -> _Address:
    """One mailbox from its display-name tokens and its ``[route:]local@host`` tokens."""
    name = _phrase(phrase)
    if name is None:  # old style: "alice@north.test (Alice Liddell)"
        name = next((text for kind, text in spec if kind == "comment"), None)
    spec = [t for t in spec if t[0] != "comment"]
    adl = None
    if ("special", ":") in spec:  # an obsolete source route: <@relay1,@relay2:alice@host>
        colon = spec.index(("special", ":"))
        adl, spec = _join_addr(spec[:colon]), spec[colon + 1 :]
    at = max((i for i, t in enumerate(spec) if t == ("special", "@")), default=None)
    if at is None:
        return _Address(name, adl, _join_addr(spec), "")
    return _Address(name, adl, _join_addr(spec[:at]), _join_addr(spec[at + 1 :]))


def _parse_addresses(value: bytes) -> list[_Address]:
    """An address list (RFC 5322 §3.4), groups marked as RFC 3501 §7.4.2 says."""
    addresses: list[_Address] = []
    words: list[tuple[str, str]] = []
    angle: list[tuple[str, str]] | None = None
    in_group = False

    def end_address() -> None:
        nonlocal words, angle
        if angle is not None:
            addresses.append(_mailbox(words, angle))
        elif any(kind != "comment" for kind, _ in words):
            addresses.append(_mailbox([], words))
        words, angle = [], None

    tokens = _address_tokens(value.decode("latin-1"))
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == ("special", "<") and angle is None:
            close = next((j for j in range(i, len(tokens)) if tokens[j] == ("special", ">")), None)
            close = len(tokens) if close is None else close
            angle, i = tokens[i + 1 : close], close + 1
            continue
        if token == ("special", ","):
            end_address()
        elif token == ("special", ":") and angle is None and not in_group:
            addresses.append(_Address(None, None, _phrase(words) or "", None))
            words, in_group = [], True
        elif token == ("special", ";"):
            end_address()
            if in_group:
                addresses.append(_GROUP_END)
                in_group = False
        elif angle is None:
            words.append(token)
        i += 1  # (words after <addr> and before the next comma are ignored)
    end_address()
    if in_group:
        addresses.append(_GROUP_END)
    return addresses


def _address_list(value: bytes | None) -> bytes | None:
    """``((name adl mailbox host)...)`` for a header value, or None if it has no address."""
    addresses = _parse_addresses(value) if value is not None else []
    return b"(" + b"".join(a.imap() for a in addresses) + b")" if addresses else None


def _envelope(part: _Part) -> bytes:
    """ENVELOPE (RFC 3501 §7.4.2) of a message entity."""
    from_ = _address_list(part.value("FROM"))
    sender = _address_list(part.value("SENDER")) or from_
    reply_to = _address_list(part.value("REPLY-TO")) or from_
    items = [
        nstring(part.value("DATE")),
        nstring(part.value("SUBJECT")),
        from_ or NIL,
        sender or NIL,
        reply_to or NIL,
        _address_list(part.value("TO")) or NIL,
        _address_list(part.value("CC")) or NIL,
        _address_list(part.value("BCC")) or NIL,
        nstring(part.value("IN-REPLY-TO")),
        nstring(part.value("MESSAGE-ID")),
    ]
    return b"(" + b" ".join(items) + b")"


# --------------------------------------------------------------------------- BODYSTRUCTURE


def _params(params: tuple[tuple[str, str], ...]) -> bytes:
    """body-fld-param: ``("CHARSET" "utf-8" "FORMAT" "flowed")`` or NIL."""
    return _string_list([_raw(text) for pair in params for text in (pair[0].upper(), pair[1])])


def _disposition(part: _Part) -> bytes:
    """body-fld-dsp (RFC 2183): ``("ATTACHMENT" ("FILENAME" "a.pdf"))`` or NIL."""
    value = part.value("CONTENT-DISPOSITION")
    if value is None:
        return NIL
    kind, params = _split_params(value.decode("latin-1"))
    if not kind:
        return NIL
    return b"(" + nstring(_raw(kind.upper())) + b" " + _params(tuple(params)) + b")"


def _language(part: _Part) -> bytes:
    """body-fld-lang (RFC 3066): one tag as a string, several as a list, or NIL."""
    value = part.value("CONTENT-LANGUAGE")
    tags = [t.strip() for t in value.split(b",") if t.strip()] if value is not None else []
    return nstring(tags[0]) if len(tags) == 1 else _string_list(tags)


def _extension(part: _Part) -> list[bytes]:
    """body-fld-dsp, body-fld-lang and body-fld-loc, shared by both kinds of body."""
    return [_disposition(part), _language(part), nstring(part.value("CONTENT-LOCATION"))]


def _body(part: _Part, extensible: bool) -> bytes:
    """BODY or BODYSTRUCTURE of one part, recursively (RFC 3501 §7.4.2, §9 ``body``)."""
    if part.children:  # body-type-mpart: the parts, one after the other, then the subtype
        inner = b"".join(_body(child, extensible) for child in part.children)
        items = [nstring(_raw(part.subtype.upper()))]
        if extensible:
            items += [_params(part.params), *_extension(part)]
        return b"(" + inner + b" " + b" ".join(items) + b")"
    encoding = part.value("CONTENT-TRANSFER-ENCODING")
    items = [
        nstring(_raw(part.maintype.upper())),
        nstring(_raw(part.subtype.upper())),
        _params(part.params),
        nstring(part.value("CONTENT-ID")),
        nstring(part.value("CONTENT-DESCRIPTION")),
        nstring(encoding.upper() if encoding else DEFAULT_ENCODING),
        str(len(part.body)).encode("ascii"),
    ]
    if part.message is not None:  # body-type-msg
        items += [
            _envelope(part.message),
            _body(part.message, extensible),
            str(_line_count(part.body)).encode("ascii"),
        ]
    elif part.maintype == "text":  # body-type-text
        items.append(str(_line_count(part.body)).encode("ascii"))
    if extensible:
        items += [NIL, *_extension(part)]  # body-fld-md5 is always NIL here
    return b"(" + b" ".join(items) + b")"


# --------------------------------------------------------------------------- decoding


def _decode_header(value: bytes) -> str:
    """A header value as text: RFC 2047 words decoded; the raw text if they do not decode."""
    text = value.decode("utf-8", errors="replace")
    try:
        return str(email.header.make_header(email.header.decode_header(text)))
    except (email.errors.HeaderParseError, LookupError, ValueError, TypeError):
        return text


def _decode_body(part: _Part) -> str:
    """The text of a text part: transfer encoding undone, charset decoded, errors replaced."""
    encoding = (part.value("CONTENT-TRANSFER-ENCODING") or b"").strip().lower()
    data = part.body
    if encoding == b"base64":
        alphabet = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
        if len(alphabet) % 4 == 1:  # one stray character cannot be decoded: drop it
            alphabet = alphabet[:-1]
        alphabet += b"=" * (-len(alphabet) % 4)  # the padding we removed, or that was missing
        data = base64.b64decode(alphabet)  # cannot fail now: only the alphabet, padded
    elif encoding == b"quoted-printable":
        data = quopri.decodestring(data)
    charset = part.param("charset") or "us-ascii"
    try:
        return data.decode(charset, errors="replace")
    except (LookupError, ValueError, TypeError):
        return data.decode("utf-8", errors="replace")


def _texts(part: _Part) -> list[str]:
    """The decoded text of every text part inside ``part``, in order."""
    if part.children:
        return [text for child in part.children for text in _texts(child)]
    if part.message is not None:
        return _texts(part.message)
    return [_decode_body(part)] if part.maintype == "text" else []


# --------------------------------------------------------------------------- the view


class MessageView:
    """One message, parsed once (lazily) for FETCH and SEARCH.

    ``data`` are the stored octets; bare LF line ends are read as CRLF.
    """

    def __init__(self, data: bytes) -> None:
        self._data = crlf_normalise(data)
        #: RFC822.SIZE: the octets as sent on the wire (RFC 3501 §7.4.2).
        self.size: int = len(self._data)

    @functools.cached_property
    def _root(self) -> _Part:
        return _parse_entity(self._data, DEFAULT_TYPE)

    def envelope(self) -> bytes:
        """ENVELOPE (RFC 3501 §7.4.2)::

        (date subject from sender reply-to to cc bcc in-reply-to message-id)

        Sender and reply-to default to from; a missing header is NIL.
        """
        return _envelope(self._root)

    def bodystructure(self, extensible: bool = True) -> bytes:
        """BODYSTRUCTURE, or with ``extensible=False`` BODY (RFC 3501 §7.4.2)."""
        return _body(self._root, extensible)

    def section(self, section: Section | None, partial: tuple[int, int] | None = None) -> bytes:
        """The octets of ``BODY[section]<start.count>`` (RFC 3501 §6.4.5).

        None or an empty section is the whole message. A part that does not exist
        gives b"". A partial that starts past the end gives b"".
        """
        data = self._section(section or Section())
        if partial is not None:
            start, count = partial
            data = data[start : start + count]
        return data

    def _section(self, section: Section) -> bytes:
        if not section.parts and section.text is None:
            return self._data
        node, is_message = self._root, True
        for number in section.parts:
            parts = _subparts(node, is_message)
            if not 1 <= number <= len(parts):
                return b""  # no such part: the empty string, as Dovecot answers
            node, is_message = parts[number - 1], False
        if section.text is None:
            return node.body
        if section.text == "MIME":
            return b"" if is_message else node.header
        message = node if is_message else node.message  # HEADER and TEXT need a message
        if message is None:
            return b""
        if section.text == "HEADER":
            return message.header
        if section.text == "TEXT":
            return message.body
        wanted = {name.upper() for name in section.fields}
        keep = section.text == "HEADER.FIELDS"
        chosen = [raw for name, raw in message.fields if (name in wanted) == keep]
        return b"".join(chosen) + CRLF

    def header_bytes(self) -> bytes:
        """RFC822.HEADER: the header with its blank line (same as BODY.PEEK[HEADER])."""
        return self._root.header

    def text_bytes(self) -> bytes:
        """RFC822.TEXT: the body (same as BODY[TEXT])."""
        return self._root.body

    def internal_text(self) -> str:
        """The decoded text of all text parts, for SEARCH BODY and TEXT. Never raises."""
        return "\n".join(_texts(self._root))

    def header(self, name: str) -> list[str]:
        """The decoded values of every ``name`` field, for SEARCH HEADER, FROM, SUBJECT..."""
        wanted = name.upper()
        return [_decode_header(_field_value(raw)) for n, raw in self._root.fields if n == wanted]

    def sent_date(self) -> datetime.date | None:
        """The date of the Date: header, as written (RFC 3501 §6.4.4 SENTON...), or None."""
        value = self._root.value("DATE")
        if value is None:
            return None
        try:
            parsed = email.utils.parsedate_tz(value.decode("latin-1"))
            return datetime.date(*parsed[:3]) if parsed else None
        except (ValueError, TypeError, IndexError, OverflowError):
            return None
