"""Differential check: one scripted IMAP session against our server and against pymap.

Both servers get the same three messages by APPEND (same flags, same INTERNALDATE: a
plain text message, a multipart/mixed one with a base64 attachment, and one with RFC 2047
encoded words in Subject and From), in two folders the session creates, so pymap's demo
data does not interfere. Then the same commands go to both. Every response line is
parsed and normalised into *items* (see ``normalise``), and for each step the items of
the two servers must be the same multiset, except for the differences listed in
``KNOWN_DIFFERENCES``, each with the RFC section that decides it.

A step fails when a new, unexplained difference appears, and also when a listed one
disappears (then its entry is stale and must go). docs/imap-vs-pymap.md explains the
differences for readers. pymap is a test-only dependency (the ``test`` extra); without
it, or if it cannot start, the module is skipped.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

pytest.importorskip("pymap", reason="pymap (the test extra) is not installed")

TIMEOUT = 5.0
PYMAP_USER, PYMAP_PASSWORD = "demouser", "demopass"
ALICE = "alice@north.test"

# --------------------------------------------------------------------------- the mail

PLAIN = (
    b"From: Bob Example <bob@south.test>\r\n"
    b"To: alice@north.test\r\n"
    b"Subject: Lunch plans\r\n"
    b"Date: Mon, 01 Jan 2024 10:00:00 +0100\r\n"
    b"Message-ID: <m1@south.test>\r\n"
    b"\r\n"
    b"Shall we meet at noon?\r\n"
    b"Bob\r\n"
)
PDF = "JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSPj4Kc3RyZWFtCg=="  # base64
MULTIPART = (
    b"From: Carol <carol@south.test>\r\n"
    b"To: Alice <alice@north.test>, dave@north.test\r\n"
    b"Cc: eve@south.test\r\n"
    b"Subject: Report attached\r\n"
    b"Date: Tue, 02 Jan 2024 11:30:00 +0000\r\n"
    b"Message-ID: <m2@south.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XYZ"\r\n'
    b"\r\n"
    b"This is a multi-part message in MIME format.\r\n"
    b"--XYZ\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 7bit\r\n"
    b"\r\n"
    b"Here is the report.\r\n"
    b"See attachment.\r\n"
    b"--XYZ\r\n"
    b'Content-Type: application/pdf; name="report.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="report.pdf"\r\n'
    b"\r\n" + PDF.encode() + b"\r\n"
    b"--XYZ--\r\n"
)
ENCODED = (
    b"From: =?UTF-8?Q?Ren=C3=A9e?= <renee@south.test>\r\n"
    b"To: alice@north.test\r\n"
    b"Subject: =?UTF-8?B?Q2Fmw6kgbWVldGluZw==?=\r\n"  # "Café meeting"
    b"Date: Wed, 03 Jan 2024 09:15:00 -0500\r\n"
    b"Message-ID: <m3@south.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Caf=C3=A9 at 3?\r\n"
)

# --------------------------------------------------------------------------- the session


@dataclass(frozen=True)
class Step:
    """One command (None: the greeting), with an optional literal for its ``{}``."""

    command: str | None
    literal: bytes | None = None
    name: str = ""

    @property
    def key(self) -> str:
        return self.name or self.command or "greeting"


SESSION = [
    Step(None),
    Step("CAPABILITY"),
    Step('LOGIN "<user>" "<password>"', name="LOGIN"),
    Step("CAPABILITY", name="CAPABILITY after LOGIN"),
    Step('LIST "" ""'),
    Step("CREATE Diff"),
    Step("CREATE Kept"),
    Step("STATUS Diff (MESSAGES UIDNEXT UIDVALIDITY)"),
    Step("STATUS Kept (MESSAGES UIDNEXT UIDVALIDITY)"),
    Step('LIST "" "*"'),
    Step('APPEND Diff (\\Seen) "01-Jan-2024 10:00:00 +0100" {}', PLAIN, "APPEND plain"),
    Step('APPEND Diff () "02-Jan-2024 11:30:00 +0000" {}', MULTIPART, "APPEND multipart"),
    Step('APPEND Diff (\\Answered) "03-Jan-2024 09:15:00 -0500" {}', ENCODED, "APPEND encoded"),
    Step("SELECT Diff"),
    Step("FETCH 1:* (FLAGS RFC822.SIZE INTERNALDATE UID)"),
    Step("FETCH 1 ENVELOPE"),
    Step("FETCH 2 ENVELOPE"),
    Step("FETCH 3 ENVELOPE"),
    Step("FETCH 1 BODYSTRUCTURE"),
    Step("FETCH 2 BODYSTRUCTURE"),
    Step("FETCH 3 BODYSTRUCTURE"),
    Step("FETCH 3 BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]"),
    Step("FETCH 2 BODY[1]"),
    Step("FETCH 2 BODY.PEEK[2]"),
    Step("FETCH 2 BODY.PEEK[2.MIME]"),
    Step("FETCH 1 BODY.PEEK[]<0.20>"),
    Step("FETCH 1:* FLAGS"),
    Step("STORE 2 +FLAGS (\\Flagged)"),
    Step("SEARCH FLAGGED"),
    Step("SEARCH SUBJECT lunch"),
    Step("SEARCH SUBJECT meeting"),  # matches the decoded encoded-word Subject
    Step("SEARCH CHARSET UTF-8 SUBJECT {}", "café".encode(), "SEARCH CHARSET UTF-8 SUBJECT café"),
    Step("SEARCH UNSEEN"),
    Step("SEARCH SINCE 2-Jan-2024"),
    Step("UID SEARCH ALL"),
    Step("COPY 1:2 Kept"),
    Step("STORE 1 +FLAGS.SILENT (\\Deleted)"),
    Step("EXPUNGE"),
    Step("FETCH 1:* (FLAGS UID)", name="FETCH 1:* (FLAGS UID) after EXPUNGE"),
    Step("STATUS Kept (MESSAGES UIDNEXT UIDVALIDITY UNSEEN RECENT)"),
    Step("EXAMINE Kept"),
    Step("FETCH 1:* (FLAGS INTERNALDATE UID)", name="FETCH in Kept (the copies)"),
    Step("STORE 1 +FLAGS (\\Deleted)", name="STORE in an EXAMINEd mailbox"),
    Step("CLOSE", name="CLOSE after EXAMINE"),
    Step("SELECT Diff", name="SELECT Diff again"),
    Step("FETCH 99 FLAGS"),
    Step("FETCH ( FLAGS"),
    Step("BLAH"),
    Step("SEARCH CHARSET X-NOSUCH SUBJECT x"),
    Step("SELECT nosuch"),
    Step("FETCH 1 FLAGS", name="FETCH after a failed SELECT"),
    Step("LOGOUT"),
]
STEPS = {step.key: step for step in SESSION}
assert len(STEPS) == len(SESSION), "step names must be unique"


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Known:
    """A difference we understand: the items only ours sends, those only pymap sends."""

    step: str
    ours: tuple[str, ...]
    pymap: tuple[str, ...]
    why: str


def _each(template: str, *names: str) -> tuple[str, ...]:
    return tuple(template.format(name) for name in names)


# Why, once per reason (several steps show the same difference).
STARTTLS = (
    "Both right. pymap runs here with --no-tls (without it, it offers STARTTLS too); the "
    "lab has certificates and offers STARTTLS before login (RFC 3501 §6.2.1)."
)
EARLY_CAPABILITIES = (
    "Both right. We list our extensions before login too; pymap lists these only after it. "
    "RFC 3501 §7.2.1 lets the list depend on the state, and the [CAPABILITY] code of the "
    "LOGIN reply (§7.1) gives the new list."
)
OWN_EXTENSIONS = (
    "Both right: optional extensions only one server has. Ours: ENABLE (RFC 5161), "
    "NAMESPACE (RFC 2342), SASL-IR (RFC 4959), SPECIAL-USE (RFC 6154), UNSELECT (RFC 3691). "
    "pymap: ID (RFC 2971), AUTH=LOGIN (the obsolete LOGIN SASL mechanism, "
    "draft-murchison-sasl-login), APPENDLIMIT (RFC 7889), BINARY (RFC 3516), MULTIAPPEND "
    "(RFC 3502), OBJECTID (RFC 8474)."
)
MAILBOXID = (
    "Both right. pymap implements OBJECTID (RFC 8474 §4.1, §4.2): a MAILBOXID code after "
    "CREATE, SELECT and EXAMINE. We do not offer OBJECTID."
)
FLAGS_LIST = (
    "Both in use. The FLAGS list: ours names $Forwarded, a keyword we keep as a Maildir flag "
    "letter; pymap names \\Recent. RFC 3501 §7.2.6 says the list holds 'at a minimum, the "
    "system-defined flags', \\Recent among them (§2.3.2), yet the RFC's own examples "
    "(§6.3.1, §8) leave \\Recent out, as Dovecot does. Clients take it as information."
)
PERMANENTFLAGS = (
    "Both right (RFC 3501 §7.1, PERMANENTFLAGS): we also keep keywords ($Forwarded, and any "
    "new one: \\*); pymap keeps only the system flags."
)
ENVELOPE_DATE = (
    "Ours is right. The envelope date is the Date: header's value: RFC 3501 §7.4.2 computes "
    "the envelope 'by parsing the [RFC-2822] header', and the example in §8 passes the text "
    "unchanged, comment and all. pymap rewrites it in INTERNALDATE syntax, which is not "
    "RFC 5322 date-time syntax (lenient parsers such as Python's email.utils still read it)."
)
ADDRESS_NAME = (
    "Both allowed by the grammar (RFC 3501 §9: addr-name = nstring). An address without a "
    "display name: ours NIL, as the RFC's example in §8 has it; pymap an empty string."
)
ENCODED_WORDS = (
    "Ours is right. RFC 3501 §7.4.2 takes the envelope from the header as it is (the "
    "example in §8 too), and decoding RFC 2047 encoded-words is the reading client's job "
    "(RFC 2047 §6). pymap decodes them and sends 8-bit UTF-8 with no charset label, which "
    "an IMAP4rev1 client did not ask for (UTF-8 in responses is what ENABLE UTF8=ACCEPT, "
    "RFC 6855, is for); a client that decodes encoded-words itself cannot tell."
)
BODY_SIZE = (
    "Ours is right. RFC 3501 §7.4.2 body size and lines count the part's body, not its "
    "header: message 1's body is 29 octets in 2 lines (pymap 179 and 8: the whole message "
    "with its header), part 1 of message 2 is 36 octets in 2 lines (pymap 114 and 4: with "
    "the part's MIME header and the CRLF that belongs to the boundary, RFC 2046 §5.1.1)."
)
DEFAULT_CHARSET = (
    "Both allowed (RFC 3501 §9: body-fld-param may be NIL). A message without Content-Type "
    "is text/plain; charset=us-ascii (RFC 2045 §5.2): we give the whole default, in the "
    "form of the RFC's example in §7.4.2; pymap gives the type but not the charset."
)
DISPOSITION = (
    "Ours is right. RFC 3501 §7.4.2 and §9 (body-fld-dsp): the disposition is a "
    'parenthesized list ("ATTACHMENT" ("FILENAME" "report.pdf")) or NIL. pymap sends the '
    "raw header value as one string, where the grammar allows only a list or NIL."
)
BOUNDARY_CRLF = (
    "Ours is right. RFC 2046 §5.1.1: the CRLF before a boundary delimiter line belongs to "
    "the boundary, not to the part before it. pymap includes it in BODY[1] and BODY[2]."
)
SECTION_ECHO = (
    "Both allowed. RFC 3501 does not say how the server writes the section back; we echo "
    "the field list as requested, pymap sorts it. A client that looks the response up by "
    "the exact section it sent finds ours only."
)
LIST_DELIMITER = (
    "Both right. The hierarchy delimiter is the server's choice (RFC 3501 §5.1.1, §6.3.8): "
    "ours is '.', as in Maildir++ folder names; pymap's is '/'. LIST \"\" \"*\" below is "
    "compared with the delimiter normalised."
)
DEFAULT_FOLDERS = (
    "Both right: account set-up, not protocol. Each lab account gets the RFC 6154 "
    "special-use folders (Archive, Drafts, Junk, Sent, Trash) with their attributes; "
    "pymap's demo user has Sent and Trash, and pymap has no SPECIAL-USE."
)
SEQUENCE_RANGE = (
    "Ours is right. RFC 3501 §9 (seq-number): 'The server should respond with a tagged BAD "
    "response to a command that uses a message sequence number greater than the number of "
    "messages in the selected mailbox.' pymap answers OK and returns nothing."
)
BADCHARSET = (
    "Ours is right. RFC 3501 §6.4.4: for a charset the server does not support, it 'MUST "
    "return a tagged NO response (not a BAD)', which SHOULD carry [BADCHARSET]. pymap says "
    "BAD."
)
CLOSE_READ_ONLY = (
    "Ours is right. RFC 3501 §6.4.2: CLOSE removes nothing 'and no error is given, if the "
    "mailbox is selected by an EXAMINE command or is otherwise selected read-only'. pymap "
    "says NO [READ-ONLY]."
)

RECENT_AFTER_EXPUNGE = (
    "Both are allowed. RFC 3501 §7.3.2 has the server send RECENT when the mailbox size "
    "changes; after an EXPUNGE, §7.4.1 only asks for the EXPUNGE itself (it implies the new "
    "size). pymap also repeats the recent count; we send it with the next EXISTS."
)
EXAMINE_RECENT = (
    "Ours is right. RFC 3501 §2.3.2 and §7.3.2: the messages counted in '* n RECENT' are "
    "those with \\Recent set, and EXAMINE shows the flag without taking it (§6.3.2). pymap "
    "counts 2 RECENT after EXAMINE Kept but shows no \\Recent in FETCH FLAGS."
)

OUR_FLAGS = r"* FLAGS ($Forwarded \Answered \Deleted \Draft \Flagged \Seen)"
PYMAP_FLAGS = r"* FLAGS (\Answered \Deleted \Draft \Flagged \Recent \Seen)"
OUR_PERMANENT = r"* OK [PERMANENTFLAGS ($Forwarded \* \Answered \Deleted \Draft \Flagged \Seen)]"
PYMAP_PERMANENT = r"* OK [PERMANENTFLAGS (\Answered \Deleted \Draft \Flagged \Seen)]"
RENEE = '{}(({} NIL "renee" "south.test"))'

KNOWN_DIFFERENCES: list[Known] = [
    # Capabilities, before and after login.
    *(
        Known(step, _each(template, "STARTTLS"), (), STARTTLS)
        for step, template in (
            ("greeting", "* OK [CAPABILITY {}]"),
            ("CAPABILITY", "* CAPABILITY {}"),
        )
    ),
    *(
        Known(step, _each(template, "CHILDREN", "IDLE", "MOVE", "UIDPLUS"), (), EARLY_CAPABILITIES)
        for step, template in (
            ("greeting", "* OK [CAPABILITY {}]"),
            ("CAPABILITY", "* CAPABILITY {}"),
        )
    ),
    *(
        Known(
            step,
            _each(template, "ENABLE", "NAMESPACE", "SASL-IR", "SPECIAL-USE", "UNSELECT"),
            _each(template, "AUTH=LOGIN", "ID"),
            OWN_EXTENSIONS,
        )
        for step, template in (
            ("greeting", "* OK [CAPABILITY {}]"),
            ("CAPABILITY", "* CAPABILITY {}"),
        )
    ),
    *(
        Known(
            step,
            _each(template, "ENABLE", "NAMESPACE", "SASL-IR", "SPECIAL-USE", "UNSELECT"),
            _each(template, "APPENDLIMIT=1000000000", "BINARY", "ID", "MULTIAPPEND", "OBJECTID"),
            OWN_EXTENSIONS,
        )
        for step, template in (
            ("LOGIN", "TAG OK [CAPABILITY {}]"),
            ("CAPABILITY after LOGIN", "* CAPABILITY {}"),
        )
    ),
    # Mailboxes.
    Known(
        'LIST "" ""',
        ('* LIST (\\Noselect) "." ""',),
        ('* LIST (\\Noselect) "/" ""',),
        LIST_DELIMITER,
    ),
    Known("CREATE Diff", ("TAG OK",), ("TAG OK [MAILBOXID (<id>)]",), MAILBOXID),
    Known("CREATE Kept", ("TAG OK",), ("TAG OK [MAILBOXID (<id>)]",), MAILBOXID),
    Known(
        'LIST "" "*"',
        (
            r'* LIST (\Archive \HasNoChildren) <delimiter> "Archive"',
            r'* LIST (\Drafts \HasNoChildren) <delimiter> "Drafts"',
            r'* LIST (\HasNoChildren \Junk) <delimiter> "Junk"',
            r'* LIST (\HasNoChildren \Sent) <delimiter> "Sent"',
            r'* LIST (\HasNoChildren \Trash) <delimiter> "Trash"',
        ),
        (
            r'* LIST (\HasNoChildren) <delimiter> "Sent"',
            r'* LIST (\HasNoChildren) <delimiter> "Trash"',
        ),
        DEFAULT_FOLDERS,
    ),
    *(
        known
        for step in ("SELECT Diff", "SELECT Diff again", "EXAMINE Kept")
        for known in (
            Known(step, (OUR_FLAGS,), (PYMAP_FLAGS,), FLAGS_LIST),
            Known(step, (), ("* OK [MAILBOXID (<id>)]",), MAILBOXID),
        )
    ),
    Known("SELECT Diff", (OUR_PERMANENT,), (PYMAP_PERMANENT,), PERMANENTFLAGS),
    Known("SELECT Diff again", (OUR_PERMANENT,), (PYMAP_PERMANENT,), PERMANENTFLAGS),
    # ENVELOPE.
    Known(
        "FETCH 1 ENVELOPE",
        ('* 1 FETCH ENVELOPE.date "Mon, 01 Jan 2024 10:00:00 +0100"',),
        ('* 1 FETCH ENVELOPE.date "01-Jan-2024 10:00:00 +0100"',),
        ENVELOPE_DATE,
    ),
    Known(
        "FETCH 2 ENVELOPE",
        ('* 2 FETCH ENVELOPE.date "Tue, 02 Jan 2024 11:30:00 +0000"',),
        ('* 2 FETCH ENVELOPE.date "02-Jan-2024 11:30:00 +0000"',),
        ENVELOPE_DATE,
    ),
    Known(
        "FETCH 3 ENVELOPE",
        ('* 3 FETCH ENVELOPE.date "Wed, 03 Jan 2024 09:15:00 -0500"',),
        ('* 3 FETCH ENVELOPE.date "03-Jan-2024 09:15:00 -0500"',),
        ENVELOPE_DATE,
    ),
    Known(
        "FETCH 1 ENVELOPE",
        ('* 1 FETCH ENVELOPE.to ((NIL NIL "alice" "north.test"))',),
        ('* 1 FETCH ENVELOPE.to (("" NIL "alice" "north.test"))',),
        ADDRESS_NAME,
    ),
    Known(
        "FETCH 2 ENVELOPE",
        (
            '* 2 FETCH ENVELOPE.to (("Alice" NIL "alice" "north.test") '
            '(NIL NIL "dave" "north.test"))',
            '* 2 FETCH ENVELOPE.cc ((NIL NIL "eve" "south.test"))',
        ),
        (
            '* 2 FETCH ENVELOPE.to (("Alice" NIL "alice" "north.test") '
            '("" NIL "dave" "north.test"))',
            '* 2 FETCH ENVELOPE.cc (("" NIL "eve" "south.test"))',
        ),
        ADDRESS_NAME,
    ),
    Known(
        "FETCH 3 ENVELOPE",
        ('* 3 FETCH ENVELOPE.to ((NIL NIL "alice" "north.test"))',),
        ('* 3 FETCH ENVELOPE.to (("" NIL "alice" "north.test"))',),
        ADDRESS_NAME,
    ),
    Known(
        "FETCH 3 ENVELOPE",
        (
            '* 3 FETCH ENVELOPE.subject "=?UTF-8?B?Q2Fmw6kgbWVldGluZw==?="',
            *(
                RENEE.format(f"* 3 FETCH ENVELOPE.{field} ", '"=?UTF-8?Q?Ren=C3=A9e?="')
                for field in ("from", "sender", "reply-to")
            ),
        ),
        (
            '* 3 FETCH ENVELOPE.subject "Café meeting"',
            *(
                RENEE.format(f"* 3 FETCH ENVELOPE.{field} ", '"Renée"')
                for field in ("from", "sender", "reply-to")
            ),
        ),
        ENCODED_WORDS,
    ),
    # BODYSTRUCTURE and body parts.
    Known(
        "FETCH 1 BODYSTRUCTURE",
        ("* 1 FETCH BODYSTRUCTURE.size 29", "* 1 FETCH BODYSTRUCTURE.lines 2"),
        ("* 1 FETCH BODYSTRUCTURE.size 179", "* 1 FETCH BODYSTRUCTURE.lines 8"),
        BODY_SIZE,
    ),
    Known(
        "FETCH 1 BODYSTRUCTURE",
        ('* 1 FETCH BODYSTRUCTURE.parameters ("CHARSET" "US-ASCII")',),
        ("* 1 FETCH BODYSTRUCTURE.parameters NIL",),
        DEFAULT_CHARSET,
    ),
    Known(
        "FETCH 2 BODYSTRUCTURE",
        (
            "* 2 FETCH BODYSTRUCTURE[1].size 36",
            "* 2 FETCH BODYSTRUCTURE[1].lines 2",
            "* 2 FETCH BODYSTRUCTURE[2].size 72",
        ),
        (
            "* 2 FETCH BODYSTRUCTURE[1].size 114",
            "* 2 FETCH BODYSTRUCTURE[1].lines 4",
            "* 2 FETCH BODYSTRUCTURE[2].size 217",
        ),
        BODY_SIZE,
    ),
    Known(
        "FETCH 2 BODYSTRUCTURE",
        ('* 2 FETCH BODYSTRUCTURE[2].disposition ("ATTACHMENT" ("FILENAME" "report.pdf"))',),
        (r'* 2 FETCH BODYSTRUCTURE[2].disposition "attachment; filename=\"report.pdf\""',),
        DISPOSITION,
    ),
    Known(
        "FETCH 3 BODYSTRUCTURE",
        ("* 3 FETCH BODYSTRUCTURE.size 17", "* 3 FETCH BODYSTRUCTURE.lines 1"),
        ("* 3 FETCH BODYSTRUCTURE.size 306", "* 3 FETCH BODYSTRUCTURE.lines 10"),
        BODY_SIZE,
    ),
    Known(
        "FETCH 3 BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]",
        (
            "* 3 FETCH BODY[HEADER.FIELDS (SUBJECT FROM)] "
            r'"From: =?UTF-8?Q?Ren=C3=A9e?= <renee@south.test>\r\n'
            r'Subject: =?UTF-8?B?Q2Fmw6kgbWVldGluZw==?=\r\n\r\n"',
        ),
        (
            "* 3 FETCH BODY[HEADER.FIELDS (FROM SUBJECT)] "
            r'"From: =?UTF-8?Q?Ren=C3=A9e?= <renee@south.test>\r\n'
            r'Subject: =?UTF-8?B?Q2Fmw6kgbWVldGluZw==?=\r\n\r\n"',
        ),
        SECTION_ECHO,
    ),
    Known(
        "FETCH 2 BODY[1]",
        (r'* 2 FETCH BODY[1] "Here is the report.\r\nSee attachment."',),
        (r'* 2 FETCH BODY[1] "Here is the report.\r\nSee attachment.\r\n"',),
        BOUNDARY_CRLF,
    ),
    Known(
        "FETCH 2 BODY.PEEK[2]",
        (f'* 2 FETCH BODY[2] "{PDF}"',),
        (f'* 2 FETCH BODY[2] "{PDF}\\r\\n"',),
        BOUNDARY_CRLF,
    ),
    Known("EXPUNGE", (), ("* 2 RECENT",), RECENT_AFTER_EXPUNGE),
    Known(
        "FETCH in Kept (the copies)",
        (r"* 1 FETCH FLAGS (\Recent \Seen)", r"* 2 FETCH FLAGS (\Flagged \Recent \Seen)"),
        (r"* 1 FETCH FLAGS (\Seen)", r"* 2 FETCH FLAGS (\Flagged \Seen)"),
        EXAMINE_RECENT,
    ),
    # Errors.
    Known("CLOSE after EXAMINE", ("TAG OK",), ("TAG NO [READ-ONLY]",), CLOSE_READ_ONLY),
    Known("FETCH 99 FLAGS", ("TAG BAD",), ("TAG OK",), SEQUENCE_RANGE),
    Known(
        "SEARCH CHARSET X-NOSUCH SUBJECT x",
        ("TAG NO [BADCHARSET (US-ASCII UTF-8)]",),
        ("TAG BAD",),
        BADCHARSET,
    ),
]


# --------------------------------------------------------------------------- a client


class Wire:
    """A raw IMAP client: one command out, every response line up to its tag back."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.count = 0

    def close(self) -> None:
        self.sock.close()

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError(f"server closed the connection; unread: {self.buffer!r}")
        self.buffer += data

    def line(self) -> bytes:
        """One response line, literals included (``{n}`` CRLF, n octets, the rest)."""
        out = b""
        while True:
            while b"\r\n" not in self.buffer:
                self._more()
            part, self.buffer = self.buffer.split(b"\r\n", 1)
            out += part
            literal = re.search(rb"\{(\d+)\}$", part)
            if not literal:
                return out
            size = int(literal.group(1))
            while len(self.buffer) < size:
                self._more()
            out += b"\r\n" + self.buffer[:size]
            self.buffer = self.buffer[size:]

    def command(self, text: str, literal: bytes | None = None) -> list[bytes]:
        self.count += 1
        tag = b"A%03d" % self.count
        lines = []
        if literal is None:
            self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        else:  # a synchronizing literal: wait for the server's "+"
            head, tail = text.encode().split(b"{}")
            self.sock.sendall(tag + b" " + head + b"{%d}\r\n" % len(literal))
            while not (line := self.line()).startswith(b"+"):
                lines.append(line)
                if line.startswith(tag + b" "):
                    return lines
            self.sock.sendall(literal + tail + b"\r\n")
        while True:
            lines.append(line := self.line())
            if line.startswith(tag + b" "):
                return lines


def run_session(port: int, user: str, password: str) -> dict[str, list[bytes]]:
    """Each step's response lines, in order."""
    wire = Wire(port)
    try:
        out = {}
        for step in SESSION:
            if step.command is None:
                out[step.key] = [wire.line()]
            else:
                command = step.command.replace("<user>", user).replace("<password>", password)
                out[step.key] = wire.command(command, step.literal)
        return out
    finally:
        wire.close()


# --------------------------------------------------------------------------- parsing


class Atom(str):
    """An atom (NIL, a number, a flag, BODY[...]<n>)."""


class String(bytes):
    """A quoted string or a literal: the same thing on the wire (RFC 3501 §4.3)."""


def parse(data: bytes) -> list:
    values, _ = _values(data, 0, nested=False)
    return values


def _values(data: bytes, pos: int, nested: bool) -> tuple[list, int]:
    out: list = []
    while pos < len(data):
        char = data[pos : pos + 1]
        if char == b" ":
            pos += 1
        elif char == b")":
            if not nested:
                raise ValueError(f"unbalanced ) at {pos} in {data!r}")
            return out, pos + 1
        elif char == b"(":
            inner, pos = _values(data, pos + 1, nested=True)
            out.append(tuple(inner))
        elif char == b'"':
            value, pos = bytearray(), pos + 1
            while data[pos : pos + 1] != b'"':
                if data[pos : pos + 1] == b"\\":
                    pos += 1
                value += data[pos : pos + 1]
                pos += 1
            out.append(String(bytes(value)))
            pos += 1
        elif literal := re.compile(rb"\{(\d+)\+?\}\r\n").match(data, pos):
            end = literal.end() + int(literal.group(1))
            out.append(String(data[literal.end() : end]))
            pos = end
        else:  # an atom; BODY[HEADER.FIELDS (A B)]<0> is one, brackets and all
            start, depth = pos, 0
            while pos < len(data):
                char = data[pos : pos + 1]
                if char == b"[":
                    depth += 1
                elif char == b"]":
                    depth -= 1
                elif depth == 0 and char in (b" ", b"(", b")"):
                    break
                pos += 1
            out.append(Atom(data[start:pos].decode("utf-8", "backslashreplace")))
    if nested:
        raise ValueError(f"unbalanced ( in {data!r}")
    return out, pos


def render(value) -> str:
    if isinstance(value, tuple):
        return "(" + " ".join(render(v) for v in value) + ")"
    if isinstance(value, String):
        text = value.decode("utf-8", "backslashreplace")
        for raw, escaped in (("\\", "\\\\"), ('"', '\\"'), ("\r", "\\r"), ("\n", "\\n")):
            text = text.replace(raw, escaped)
        return f'"{text}"'
    return str(value)


# --------------------------------------------------------------------------- normalising


@dataclass
class Context:
    """What one server's numbers mean: each folder's first UID and UIDVALIDITY.

    UIDs are arbitrary per server (pymap starts a folder at 101, we at 1; RFC 3501
    §2.3.1.1 asks only that they ascend), so a UID is shown relative to the folder's
    UIDNEXT when it was created: the first message is 1 on both. A UIDVALIDITY is
    shown as the folder it belongs to, so a wrong one still shows.
    """

    first_uid: dict[str, int]
    validity: dict[int, str]
    selected: str | None = None
    keep_delimiter: bool = False  # only LIST "" "" shows the hierarchy delimiter
    uid_search: bool = False  # SEARCH numbers are UIDs

    def uid(self, number: int, folder: str | None) -> str:
        base = self.first_uid.get(folder or "")
        return str(number - base + 1) if base is not None else f"<uid {number} in ?>"

    def uidvalidity(self, number: int) -> str:
        return f"<uidvalidity of {self.validity.get(number, '?')}>"


def _folder(value) -> str:
    return value.decode() if isinstance(value, String) else str(value)


def _sorted(values) -> tuple:
    return tuple(sorted(values, key=lambda v: str(v).lower()))


def _uid_set(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        low, _, high = part.partition(":")
        out.extend(range(int(low), int(high or low) + 1))
    return out


def _code(code: str, ctx: Context) -> list[str]:
    """A response code's items: [CAPABILITY a b] becomes one item per capability."""
    name, _, rest = code.partition(" ")
    name = name.upper()
    args = parse(rest.encode())
    if name == "CAPABILITY":
        return [f"[CAPABILITY {a}]" for a in args]
    if name in ("PERMANENTFLAGS", "BADCHARSET") and args:
        return [f"[{name} {render(_sorted(args[0]))}]"]
    if name == "UIDVALIDITY":
        return [f"[UIDVALIDITY {ctx.uidvalidity(int(args[0]))}]"]
    if name == "UIDNEXT":
        return [f"[UIDNEXT {ctx.uid(int(args[0]), ctx.selected)}]"]
    if name == "APPENDUID":
        folder = ctx.validity.get(int(args[0]))
        return [f"[APPENDUID {ctx.uidvalidity(int(args[0]))} {ctx.uid(int(args[1]), folder)}]"]
    if name == "COPYUID":
        folder = ctx.validity.get(int(args[0]))
        source = " ".join(ctx.uid(n, ctx.selected) for n in _uid_set(args[1]))
        target = " ".join(ctx.uid(n, folder) for n in _uid_set(args[2]))
        return [f"[COPYUID {ctx.uidvalidity(int(args[0]))} ({source}) ({target})]"]
    if name == "MAILBOXID":
        return ["[MAILBOXID (<id>)]"]
    return [f"[{name}{' ' if args else ''}{' '.join(render(a) for a in args)}]"]


def _status(who: str, word: str, rest: bytes, ctx: Context) -> list[str]:
    """``* OK [CODE] text`` or ``<tag> NO text``: the status word and the code; the
    text is the server's own and is dropped. A code with a list (CAPABILITY) gives
    one item for itself and one per element."""
    if not rest.startswith(b"["):
        return [f"{who} {word}"]
    code = rest[1 : rest.index(b"]")].decode("utf-8", "backslashreplace")
    codes = _code(code, ctx)
    if len(codes) == 1:
        return [f"{who} {word} {codes[0]}"]
    return [f"{who} {word} [{code.split()[0].upper()}]"] + [f"{who} {word} {c}" for c in codes]


def _internaldate(value: String) -> str:
    """The same instant in UTC: RFC 3501 §2.3.3 asks for the APPEND date-time, and a
    server may keep it in any zone (a Maildir keeps a file time)."""
    when = datetime.strptime(value.decode().strip(), "%d-%b-%Y %H:%M:%S %z")
    return when.astimezone(UTC).strftime('"%d-%b-%Y %H:%M:%S +0000"')


def _up(value):
    return String(value.upper()) if isinstance(value, String) else value


def _parameters(value):
    if isinstance(value, tuple):  # names are case-insensitive, values may not be
        return tuple(_up(v) if i % 2 == 0 else v for i, v in enumerate(value))
    return value


def _disposition(value):
    if isinstance(value, tuple) and len(value) >= 2:
        return (_up(value[0]), _parameters(value[1]), *value[2:])
    return value


ENVELOPE_FIELDS = ("date", "subject", "from", "sender", "reply-to", "to", "cc", "bcc")
ENVELOPE_FIELDS += ("in-reply-to", "message-id")


def _envelope(value: tuple) -> list[tuple[str, str]]:
    """ENVELOPE field by field (RFC 3501 §7.4.2), so each difference stands alone."""
    return [(f".{name}", render(v)) for name, v in zip(ENVELOPE_FIELDS, value, strict=True)]


#: How each case-insensitive BODYSTRUCTURE field is normalised (the others are kept).
BODY_FIXES = {
    "subtype": _up,
    "parameters": _parameters,
    "encoding": _up,
    "disposition": _disposition,
}


def _body(value: tuple, path: str = "") -> list[tuple[str, str]]:
    """BODY / BODYSTRUCTURE field by field, each part under its section number (RFC
    3501 §7.4.2), with the case-insensitive tokens upper-cased: MIME type, subtype,
    parameter names, transfer encoding, disposition type (RFC 2045 §5.1 and §6.1,
    RFC 2183 §2)."""
    where = f"[{path}]" if path else ""
    out = []
    if value and isinstance(value[0], tuple):  # multipart: parts, subtype, extension
        count = next(i for i, v in enumerate(value) if not isinstance(v, tuple))
        for number, part in enumerate(value[:count], 1):
            out += _body(part, f"{path}.{number}" if path else str(number))
        names = ["subtype", "parameters", "disposition", "language", "location"]
        rest = value[count:]
    else:
        kind = (_up(value[0]), _up(value[1]))
        out.append((f"{where}.type", render(kind)))
        names = ["parameters", "id", "description", "encoding", "size"]
        if kind == (b"MESSAGE", b"RFC822"):
            names += ["envelope", "body", "lines"]
        elif kind[0] == b"TEXT":
            names += ["lines"]
        names += ["md5", "disposition", "language", "location"]
        rest = value[2:]
    names += ["extension"] * (len(rest) - len(names))
    for name, field in zip(names, rest, strict=False):
        out.append((f"{where}.{name}", render(BODY_FIXES.get(name, lambda v: v)(field))))
    return out


def _fetch(number: str, values: tuple, ctx: Context) -> list[str]:
    """``* n FETCH (A a B b)``: one item per attribute (their order is free), and one
    per field of ENVELOPE and BODYSTRUCTURE."""
    items = []
    for name, value in zip(values[::2], values[1::2], strict=True):
        upper = name.upper()
        if upper == "FLAGS":
            fields = [("", render(_sorted(value)))]
        elif upper == "UID":
            fields = [("", ctx.uid(int(value), ctx.selected))]
        elif upper == "INTERNALDATE":
            fields = [("", _internaldate(value))]
        elif upper == "ENVELOPE":
            fields = _envelope(value)
        elif upper in ("BODY", "BODYSTRUCTURE"):
            fields = _body(value)
        else:
            fields = [("", render(value))]
        items += [f"* {number} FETCH {name}{field} {text}" for field, text in fields]
    return items


STATUS_WORDS = {"OK", "NO", "BAD", "BYE", "PREAUTH"}


def normalise(line: bytes, ctx: Context) -> list[str]:
    """One response line as items (strings). What may differ between two correct
    servers goes: the tag, free text after OK/NO/BAD/BYE, UIDVALIDITY and UID values
    (see Context), MAILBOXID values, INTERNALDATE zones, the case of MIME tokens,
    quoted string versus literal versus atom for a mailbox name, and the order of
    flags, capabilities, FETCH attributes and STATUS items."""
    head, _, rest = line.partition(b" ")
    who = "*" if head == b"*" else "TAG"
    word, _, rest = rest.partition(b" ")
    upper = word.decode("utf-8", "backslashreplace").upper()
    if upper in STATUS_WORDS:
        return _status(who, upper, rest, ctx)
    if who != "*":
        return [f"{who} {render(parse(line[len(head) + 1 :]))}"]
    if upper.isdigit():  # * n EXISTS / RECENT / EXPUNGE / FETCH (...)
        kind, _, rest = rest.partition(b" ")
        if kind.upper() == b"FETCH":
            return _fetch(upper, parse(rest)[0], ctx)
        return [f"* {upper} {kind.decode().upper()}"]
    values = parse(rest)
    if upper == "CAPABILITY":
        return [f"* CAPABILITY {v}" for v in values]
    if upper == "FLAGS":
        return [f"* FLAGS {render(_sorted(values[0]))}"]
    if upper in ("LIST", "LSUB"):
        attributes, delimiter, name = values
        delimiter = render(delimiter) if ctx.keep_delimiter else "<delimiter>"
        folder = String(_folder(name).encode())
        return [f"* {upper} {render(_sorted(attributes))} {delimiter} {render(folder)}"]
    if upper == "STATUS":
        name, pairs = values
        folder = _folder(name)
        shown = []
        for key, value in zip(pairs[::2], pairs[1::2], strict=True):
            if key.upper() == "UIDNEXT":
                value = ctx.uid(int(value), folder)
            elif key.upper() == "UIDVALIDITY":
                value = ctx.uidvalidity(int(value))
            shown.append(f"{key.upper()} {value}")
        return [f'* STATUS "{folder}" ({" ".join(sorted(shown))})']
    if upper == "SEARCH":
        numbers = sorted(int(v) for v in values)
        if ctx.uid_search:
            return [f"* SEARCH {' '.join(ctx.uid(n, ctx.selected) for n in numbers)}".rstrip()]
        return [f"* SEARCH {' '.join(str(n) for n in numbers)}".rstrip()]
    return [f"* {upper} {render(values)}"]


def learn(responses: dict[str, list[bytes]]) -> Context:
    """Each folder's UIDNEXT and UIDVALIDITY from the first STATUS that names it (the
    session asks right after CREATE, before anything is appended)."""
    first_uid: dict[str, int] = {}
    validity: dict[int, str] = {}
    for lines in responses.values():
        for line in lines:
            if not line.upper().startswith(b"* STATUS "):
                continue
            name, pairs = parse(line[len(b"* STATUS ") :])
            folder = _folder(name)
            items = {k.upper(): int(v) for k, v in zip(pairs[::2], pairs[1::2], strict=True)}
            if "UIDNEXT" in items:
                first_uid.setdefault(folder, items["UIDNEXT"])
            if "UIDVALIDITY" in items:
                validity.setdefault(items["UIDVALIDITY"], folder)
    return Context(first_uid, validity)


def normalise_session(responses: dict[str, list[bytes]]) -> dict[str, list[str]]:
    ctx = learn(responses)
    out = {}
    for step in SESSION:
        lines = responses[step.key]
        command = (step.command or "").upper()
        ctx.keep_delimiter = command == 'LIST "" ""'
        ctx.uid_search = command.startswith("UID SEARCH")
        verb = command.split(" ")[0]
        if verb in ("SELECT", "EXAMINE"):
            ctx.selected = (step.command or "").split(" ", 1)[1]
        out[step.key] = [item for line in lines for item in normalise(line, ctx)]
        ok = lines[-1].split(b" ")[1:2] == [b"OK"]
        failed_select = verb in ("SELECT", "EXAMINE") and not ok  # RFC 3501 §6.3.1
        if failed_select or (verb in ("CLOSE", "UNSELECT", "LOGOUT") and ok):
            ctx.selected = None
    return out


# --------------------------------------------------------------------------- fixtures


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def pymap_port(tmp_path_factory):
    """pymap on 127.0.0.1 (in-memory backend, demo user), stopped after the module."""
    port = _free_port()
    log = tmp_path_factory.mktemp("pymap") / "pymap.log"
    argv = [sys.executable, "-c", "from pymap.main import main; raise SystemExit(main())"]
    argv += ["--no-tls", "--host", "127.0.0.1", "--port", str(port), "dict", "--demo-data"]
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                pytest.skip(f"pymap exited with {process.returncode}: {log.read_text()[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.skip(f"pymap did not listen on {port}: {log.read_text()[-500:]}")
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def transcripts(lab, pymap_port):
    """Both servers' raw responses and their items, step by step."""
    raw = {
        "ours": run_session(lab.port("imap.north.test"), ALICE, lab.account(ALICE).password),
        "pymap": run_session(pymap_port, PYMAP_USER, PYMAP_PASSWORD),
    }
    return raw, {who: normalise_session(responses) for who, responses in raw.items()}


# --------------------------------------------------------------------------- tests


def test_known_differences_name_steps_of_the_session():
    for known in KNOWN_DIFFERENCES:
        assert known.step in STEPS, known.step
        assert known.why.strip() and (known.ours or known.pymap), known


#: The steps meant to fail, and how (on our side). Every other step must end in OK on
#: both servers, so that two servers failing alike cannot pass for two that agree.
ERRORS = {
    "STORE in an EXAMINEd mailbox": "NO",
    "FETCH 99 FLAGS": "BAD",
    "FETCH ( FLAGS": "BAD",
    "BLAH": "BAD",
    "SEARCH CHARSET X-NOSUCH SUBJECT x": "NO",
    "SELECT nosuch": "NO",
    "FETCH after a failed SELECT": "BAD",
}


def test_the_session_ran_on_both_servers(transcripts):
    raw, _ = transcripts
    for who, responses in raw.items():
        assert responses["greeting"][0].startswith(b"* OK"), who
        for step, lines in responses.items():
            status = lines[-1].split(b" ")[1].decode()
            if step in ERRORS:
                assert who == "pymap" or status == ERRORS[step], (who, step, lines[-1])
            elif step != "greeting" and (who, step) != ("pymap", "CLOSE after EXAMINE"):
                assert status == "OK", (who, step, lines[-1])


def test_normalise_keeps_the_data_and_drops_what_may_differ():
    ctx = Context({"Diff": 101}, {77: "Diff"}, selected="Diff")
    line = (
        b"* 2 FETCH (UID 102 FLAGS (\\Seen \\Answered) BODY[HEADER.FIELDS (FROM)] {9}\r\n"
        b'From: x\r\n INTERNALDATE "01-Jan-2024 10:00:00 +0100")'
    )
    assert normalise(line, ctx) == [
        "* 2 FETCH UID 2",
        r"* 2 FETCH FLAGS (\Answered \Seen)",
        r'* 2 FETCH BODY[HEADER.FIELDS (FROM)] "From: x\r\n"',
        '* 2 FETCH INTERNALDATE "01-Jan-2024 09:00:00 +0000"',
    ]
    assert normalise(b"A1 OK [COPYUID 77 101:102 101,102] done", ctx) == [
        "TAG OK [COPYUID <uidvalidity of Diff> (1 2) (1 2)]"
    ]
    assert normalise(b"A1 NO [TRYCREATE] no (such [folder", ctx) == ["TAG NO [TRYCREATE]"]
    assert normalise(b'* LIST (\\HasNoChildren) "/" INBOX', ctx) == [
        r'* LIST (\HasNoChildren) <delimiter> "INBOX"'
    ]


@pytest.mark.parametrize("step", list(STEPS))
def test_step_matches_pymap(step, transcripts):
    """Same items from both servers, apart from the differences we have explained."""
    raw, items = transcripts
    ours, theirs = Counter(items["ours"][step]), Counter(items["pymap"][step])
    listed = [k for k in KNOWN_DIFFERENCES if k.step == step]
    explained_ours = Counter(item for k in listed for item in k.ours)
    explained_pymap = Counter(item for k in listed for item in k.pymap)
    only_ours, only_pymap = ours - theirs, theirs - ours
    if (only_ours, only_pymap) == (explained_ours, explained_pymap):
        return

    def lines(title: str, items: Counter) -> str:
        return "".join(f"\n  {title}: {item}" for item in sorted(items.elements()))

    def said(who: str) -> str:
        return "".join(f"\n    {line!r}" for line in raw[who][step])

    pytest.fail(
        f"step {step!r}: differences that KNOWN_DIFFERENCES does not explain"
        + lines("only ours ", only_ours - explained_ours)
        + lines("only pymap", only_pymap - explained_pymap)
        + lines("stale entry, no longer only ours ", explained_ours - only_ours)
        + lines("stale entry, no longer only pymap", explained_pymap - only_pymap)
        + f"\nours said:{said('ours')}\npymap said:{said('pymap')}",
        pytrace=False,
    )
