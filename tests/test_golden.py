"""Golden transcript: one scripted journey compared line by line with the rows we expect.

Queue ids, dates, Message-IDs and ports are normalised; everything else must match
exactly, in order, each line once.
"""

from __future__ import annotations

import base64
import imaplib
import re
from datetime import UTC, datetime

from .test_imap_lab import Wire
from .test_relay_lab import wait_until
from .test_smtp_lab import ALICE, CAROL, Raw, wait_for_subject

SCRIPT = [
    "EHLO laptop.north.test",
    "AUTH PLAIN " + base64.b64encode(f"\0{ALICE}\0alice-secret".encode()).decode(),
    f"MAIL FROM:<{ALICE}>",
    f"RCPT TO:<{CAROL}>",
    "DATA",
    "From: Alice <alice@north.test>\r\nTo: Carol <carol@south.test>\r\n"
    "Subject: golden\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n"
    "Message-ID: <golden@north.test>\r\n"
    "\r\nHi Carol,\r\n..a line that starts with a dot\r\n.",
    "QUIT",
]

AUTH = SCRIPT[1]

GOLDEN_MSA = [
    ("S", "220 msa.north.test ESMTP mailkit-edu", None, "220"),
    ("C", "EHLO laptop.north.test", "EHLO", None),
    ("S", "250-msa.north.test", None, "250"),
    ("S", "250-SIZE 10485760", None, "250"),
    ("S", "250-8BITMIME", None, "250"),
    ("S", "250-SMTPUTF8", None, "250"),
    ("S", "250-PIPELINING", None, "250"),
    ("S", "250-ENHANCEDSTATUSCODES", None, "250"),
    ("S", "250-STARTTLS", None, "250"),
    ("S", "250-AUTH LOGIN PLAIN", None, "250"),
    ("S", "250 HELP", None, "250"),
    ("C", AUTH, "AUTH", None),
    ("S", "235 2.7.0 Authentication successful", None, "235"),
    ("C", f"MAIL FROM:<{ALICE}>", "MAIL", None),
    ("S", "250 2.1.0 Sender OK", None, "250"),
    ("C", f"RCPT TO:<{CAROL}>", "RCPT", None),
    ("S", "250 2.1.5 Recipient OK", None, "250"),
    ("C", "DATA", "DATA", None),
    ("S", "354 End data with <CR><LF>.<CR><LF>", None, "354"),
    ("C", "From: Alice <alice@north.test>", None, None),
    ("C", "To: Carol <carol@south.test>", None, None),
    ("C", "Subject: golden", None, None),
    ("C", "Date: <date>", None, None),
    ("C", "Message-ID: <golden@north.test>", None, None),
    ("C", "", None, None),
    ("C", "Hi Carol,", None, None),
    ("C", "..a line that starts with a dot", None, None),
    ("C", ".", None, None),
    ("S", "250 2.0.0 OK: queued as <id>", None, "250"),
    ("C", "QUIT", "QUIT", None),
    ("S", "221 2.0.0 Bye", None, "221"),
]

GOLDEN_DNS = [
    ("C", "south.test. IN MX?", "MX", None),
    ("S", "south.test. 300 IN MX 10 mx.south.test.", None, "NOERROR"),
    ("C", "mx.south.test. IN A?", "A", None),
    ("S", "mx.south.test. 300 IN A 127.0.0.1", None, "NOERROR"),
]

GOLDEN_MX = [
    ("S", "220 mx.south.test ESMTP mailkit-edu", None, "220"),
    ("C", "EHLO msa.north.test", "EHLO", None),
    ("S", "250-mx.south.test", None, "250"),
    ("S", "250-SIZE 10485760", None, "250"),
    ("S", "250-8BITMIME", None, "250"),
    ("S", "250-SMTPUTF8", None, "250"),
    ("S", "250-PIPELINING", None, "250"),
    ("S", "250-ENHANCEDSTATUSCODES", None, "250"),
    ("S", "250-STARTTLS", None, "250"),
    ("S", "250 HELP", None, "250"),
    # The relay pipelines (RFC 2920): three commands in one write, then the replies.
    ("C", f"MAIL FROM:<{ALICE}> SIZE=<n>", "MAIL", None),
    ("C", f"RCPT TO:<{CAROL}>", "RCPT", None),
    ("C", "DATA", "DATA", None),
    ("S", "250 2.1.0 Sender OK", None, "250"),
    ("S", "250 2.1.5 Recipient OK", None, "250"),
    ("S", "354 End data with <CR><LF>.<CR><LF>", None, "354"),
    ("C", "Received: from laptop.north.test (localhost [127.0.0.1])", None, None),
    ("C", "\tby msa.north.test (mailkit-edu) with ESMTPA id <id>", None, None),
    ("C", f"\tfor <{CAROL}>; <date>", None, None),
    ("C", "From: Alice <alice@north.test>", None, None),
    ("C", "To: Carol <carol@south.test>", None, None),
    ("C", "Subject: golden", None, None),
    ("C", "Date: <date>", None, None),
    ("C", "Message-ID: <golden@north.test>", None, None),
    ("C", "", None, None),
    ("C", "Hi Carol,", None, None),
    ("C", "..a line that starts with a dot", None, None),
    ("C", ".", None, None),
    ("S", "250 2.0.0 OK: delivered to 1 mailbox as <id>", None, "250"),
    ("C", "QUIT", "QUIT", None),
    ("S", "221 2.0.0 Bye", None, "221"),
]


def normalise(line: str) -> str:
    line = re.sub(r"\b[0-9A-F]{10}\b", "<id>", line)
    line = re.sub(r"\w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}", "<date>", line)
    return re.sub(r"SIZE=\d+", "SIZE=<n>", line)


def rows(frame) -> list[tuple]:
    return [
        (
            r.direction,
            normalise(r.line),
            None if r.command != r.command else r.command,  # NaN -> None
            None if r.code != r.code else r.code,
        )
        for r in frame.itertuples()
    ]


def test_golden_journey(fresh_lab):
    """A scripted submission gives exactly the expected MSA, DNS and MX rows, in order."""
    lab = fresh_lab
    raw = Raw(lab.port("msa.north.test"))
    try:
        raw.reply()
        for line in SCRIPT:
            raw.send(line)
    finally:
        raw.close()
    stored = wait_for_subject(lab, CAROL, "golden")
    # The relay keeps its connection to the MX for a moment (in case more mail
    # comes), then says QUIT: wait for that.
    wait_until(
        lambda: "221 2.0.0 Bye" in lab.transcript(server="mx.south.test")["line"].tolist(),
        what="the relay's QUIT",
    )
    assert stored.get_payload() == "Hi Carol,\n.a line that starts with a dot\n"
    t = lab.transcript()
    assert rows(t[t["server"] == "msa.north.test"]) == GOLDEN_MSA
    assert rows(t[t["server"] == "dns"]) == GOLDEN_DNS
    assert rows(t[t["server"] == "mx.south.test"]) == GOLDEN_MX
    # The three conversations happen one after the other, in that order.
    order = t.drop_duplicates("session")["server"].tolist()
    assert order == ["msa.north.test", "dns", "dns", "mx.south.test"]


POP3_SCRIPT = [
    "CAPA",
    "USER carol@south.test",
    "PASS carol-secret",
    "STAT",
    "LIST",
    "UIDL",
    "RETR 1",
    "DELE 1",
    "RETR 1",
    "QUIT",
]

GOLDEN_POP3 = [
    ("S", "+OK POP3 server ready <timestamp>", None, "+OK"),
    ("C", "CAPA", "CAPA", None),
    ("S", "+OK Capability list follows", None, "+OK"),
    ("S", "TOP", None, None),
    ("S", "UIDL", None, None),
    ("S", "USER", None, None),
    ("S", "SASL PLAIN", None, None),
    ("S", "RESP-CODES", None, None),
    ("S", "AUTH-RESP-CODE", None, None),
    ("S", "PIPELINING", None, None),
    ("S", "STLS", None, None),
    ("S", "IMPLEMENTATION mailkit-edu", None, None),
    ("S", ".", None, None),
    ("C", "USER carol@south.test", "USER", None),
    ("S", "+OK send PASS", None, "+OK"),
    ("C", "PASS carol-secret", "PASS", None),
    ("S", "+OK maildrop locked and ready (1 message, 49 octets)", None, "+OK"),
    ("C", "STAT", "STAT", None),
    ("S", "+OK 1 49", None, "+OK"),
    ("C", "LIST", "LIST", None),
    ("S", "+OK 1 message (49 octets)", None, "+OK"),
    ("S", "1 49", None, None),
    ("S", ".", None, None),
    ("C", "UIDL", "UIDL", None),
    ("S", "+OK unique-id listing follows", None, "+OK"),
    ("S", "1 <uidvalidity>.1", None, None),
    ("S", ".", None, None),
    ("C", "RETR 1", "RETR", None),
    ("S", "+OK 49 octets", None, "+OK"),
    ("S", "From: a@b.test", None, None),
    ("S", "Subject: golden pop", None, None),
    ("S", "", None, None),
    ("S", "Hi", None, None),
    ("S", "..dot", None, None),  # dot-stuffed (RFC 1939 §3)
    ("S", ".", None, None),
    ("C", "DELE 1", "DELE", None),
    ("S", "+OK message 1 deleted", None, "+OK"),
    ("C", "RETR 1", "RETR", None),
    ("S", "-ERR message 1 is deleted", None, "-ERR"),
    ("C", "QUIT", "QUIT", None),
    ("S", "+OK pop3.south.test POP3 server signing off (1 message deleted)", None, "+OK"),
]


def test_golden_pop3_session(fresh_lab):
    """A scripted POP3 session gives exactly the expected rows, and DELE+QUIT empties the
    Maildir."""
    lab = fresh_lab
    lab.store.deliver(CAROL, b"From: a@b.test\r\nSubject: golden pop\r\n\r\nHi\r\n.dot\r\n")
    raw = Raw(lab.port("pop3.south.test"))
    try:
        raw.reply()
        for line in POP3_SCRIPT:  # one at a time, each after the previous status line
            raw.sock.sendall(line.encode() + b"\r\n")
            status = raw.file.readline()
            if line in ("CAPA", "LIST", "UIDL") or (line == "RETR 1" and status[:3] == b"+OK"):
                while raw.file.readline() != b".\r\n":  # the rest of a multi-line reply
                    pass
        assert raw.file.readline() == b""  # the server closed after QUIT
    finally:
        raw.close()
    uidvalidity = lab.store.uidvalidity(CAROL, "INBOX")
    wait_until(lambda: lab.mailbox(CAROL).empty, what="the QUIT's deletion")
    t = lab.transcript(server="pop3.south.test").copy()
    t["line"] = (
        t["line"]
        .str.replace(r"<\d+\.\d+@pop3\.south\.test>", "<timestamp>", regex=True)
        .str.replace(f"{uidvalidity}.", "<uidvalidity>.", regex=False)
    )
    assert rows(t) == GOLDEN_POP3


IMAP_MESSAGE = (
    b"From: Bob <bob@north.test>\r\nTo: Alice <alice@north.test>\r\nSubject: golden imap\r\n"
    b"Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <golden-imap@north.test>\r\n"
    b"\r\nHi Alice,\r\nsee you.\r\n"
)
IMAP_NOTE = b"Subject: note\r\n\r\nremember\r\n"

IMAP_SCRIPT = [
    "a1 CAPABILITY",
    "a2 LOGIN alice@north.test alice-secret",
    'a3 LIST "" *',
    "a4 SELECT INBOX",
    "a5 FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)",
    "a6 FETCH 1 BODY[]",
    "a7 STORE 1 +FLAGS (\\Flagged)",
    "a8 SEARCH FLAGGED",
    f'a9 APPEND INBOX (\\Seen) "26-Nov-2026 10:05:00 +0000" {{{len(IMAP_NOTE)}}}',
    IMAP_NOTE.decode() + "\r\n",  # the literal, then the CRLF that ends the APPEND
    "a10 UID FETCH 2 (FLAGS INTERNALDATE)",
    "a11 STORE 1 +FLAGS (\\Deleted)",
    "a12 EXPUNGE",
    "a13 LOGOUT",
]

CAPABILITIES = "IMAP4rev1 LITERAL+ SASL-IR IDLE UIDPLUS MOVE NAMESPACE SPECIAL-USE ENABLE UNSELECT"
ENVELOPE = (
    '("<date>" "golden imap" (("Bob" NIL "bob" "north.test")) (("Bob" NIL "bob" "north.test")) '
    '(("Bob" NIL "bob" "north.test")) (("Alice" NIL "alice" "north.test")) NIL NIL NIL '
    '"<golden-imap@north.test>")'
)
ALL_FLAGS = "\\Seen \\Answered \\Flagged \\Deleted \\Draft $Forwarded"

GOLDEN_IMAP = [
    (
        "S",
        f"* OK [CAPABILITY {CAPABILITIES} CHILDREN STARTTLS AUTH=PLAIN] "
        "imap.north.test IMAP4rev1 ready",
        None,
        "OK",
    ),
    ("C", "a1 CAPABILITY", "CAPABILITY", None),
    ("S", f"* CAPABILITY {CAPABILITIES} CHILDREN STARTTLS AUTH=PLAIN", None, None),
    ("S", "a1 OK CAPABILITY completed", None, "OK"),
    ("C", "a2 LOGIN alice@north.test alice-secret", "LOGIN", None),
    ("S", f"a2 OK [CAPABILITY {CAPABILITIES} CHILDREN] LOGIN completed", None, "OK"),
    ("C", 'a3 LIST "" *', "LIST", None),
    ("S", '* LIST (\\HasNoChildren) "." "INBOX"', None, None),
    ("S", '* LIST (\\HasNoChildren \\Archive) "." "Archive"', None, None),
    ("S", '* LIST (\\HasNoChildren \\Drafts) "." "Drafts"', None, None),
    ("S", '* LIST (\\HasNoChildren \\Junk) "." "Junk"', None, None),
    ("S", '* LIST (\\HasNoChildren \\Sent) "." "Sent"', None, None),
    ("S", '* LIST (\\HasNoChildren \\Trash) "." "Trash"', None, None),
    ("S", "a3 OK LIST completed", None, "OK"),
    ("C", "a4 SELECT INBOX", "SELECT", None),
    ("S", f"* FLAGS ({ALL_FLAGS})", None, None),
    ("S", "* 1 EXISTS", None, None),
    ("S", "* 1 RECENT", None, None),  # delivered after the last look: recent for us
    ("S", "* OK [UNSEEN 1] message 1 is the first unseen", None, "OK"),
    ("S", f"* OK [PERMANENTFLAGS ({ALL_FLAGS} \\*)] flags you can change", None, "OK"),
    ("S", "* OK [UIDVALIDITY <uidvalidity>] UIDs valid", None, "OK"),
    ("S", "* OK [UIDNEXT 2] predicted next UID", None, "OK"),
    ("S", "a4 OK [READ-WRITE] SELECT completed", None, "OK"),
    ("C", "a5 FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)", "FETCH", None),
    (
        "S",
        '* 1 FETCH (FLAGS (\\Recent) INTERNALDATE "26-Nov-2026 10:00:05 +0000" '
        f"RFC822.SIZE {len(IMAP_MESSAGE)} ENVELOPE {ENVELOPE})",
        None,
        None,
    ),
    ("S", "a5 OK FETCH completed", None, "OK"),
    ("C", "a6 FETCH 1 BODY[]", "FETCH", None),
    ("S", f"* 1 FETCH (BODY[] {{{len(IMAP_MESSAGE)}}}", None, None),  # the literal's lines
    ("S", "From: Bob <bob@north.test>", None, None),
    ("S", "To: Alice <alice@north.test>", None, None),
    ("S", "Subject: golden imap", None, None),
    ("S", "Date: <date>", None, None),
    ("S", "Message-ID: <golden-imap@north.test>", None, None),
    ("S", "", None, None),
    ("S", "Hi Alice,", None, None),
    ("S", "see you.", None, None),
    ("S", " FLAGS (\\Seen \\Recent))", None, None),  # BODY[] set \Seen (RFC 3501 §6.4.5)
    ("S", "a6 OK FETCH completed", None, "OK"),
    ("C", "a7 STORE 1 +FLAGS (\\Flagged)", "STORE", None),
    ("S", "* 1 FETCH (FLAGS (\\Seen \\Flagged \\Recent))", None, None),
    ("S", "a7 OK STORE completed", None, "OK"),
    ("C", "a8 SEARCH FLAGGED", "SEARCH", None),
    ("S", "* SEARCH 1", None, None),
    ("S", "a8 OK SEARCH completed", None, "OK"),
    (
        "C",
        f'a9 APPEND INBOX (\\Seen) "26-Nov-2026 10:05:00 +0000" {{{len(IMAP_NOTE)}}}',
        "APPEND",
        None,
    ),
    ("S", "+ Ready for literal data", None, "+"),
    ("C", "Subject: note", None, None),  # the literal's lines, as they crossed the wire
    ("C", "", None, None),
    ("C", "remember", None, None),
    ("C", "", None, None),  # the end of the APPEND line, after the literal
    ("S", "* 2 EXISTS", None, None),  # the news before the tagged reply
    ("S", "* 2 RECENT", None, None),
    ("S", "a9 OK [APPENDUID <uidvalidity> 2] APPEND completed", None, "OK"),
    ("C", "a10 UID FETCH 2 (FLAGS INTERNALDATE)", "UID FETCH", None),
    (
        "S",
        '* 2 FETCH (UID 2 FLAGS (\\Seen \\Recent) INTERNALDATE "26-Nov-2026 10:05:00 +0000")',
        None,
        None,
    ),
    ("S", "a10 OK FETCH completed", None, "OK"),
    ("C", "a11 STORE 1 +FLAGS (\\Deleted)", "STORE", None),
    ("S", "* 1 FETCH (FLAGS (\\Seen \\Flagged \\Deleted \\Recent))", None, None),
    ("S", "a11 OK STORE completed", None, "OK"),
    ("C", "a12 EXPUNGE", "EXPUNGE", None),
    ("S", "* 1 EXPUNGE", None, None),
    ("S", "a12 OK EXPUNGE completed", None, "OK"),
    ("C", "a13 LOGOUT", "LOGOUT", None),
    ("S", "* BYE imap.north.test IMAP4rev1 server logging out", None, "BYE"),
    ("S", "a13 OK LOGOUT completed", None, "OK"),
]


def test_golden_imap_session(fresh_lab):
    """A scripted IMAP session gives exactly the expected rows (UIDVALIDITY and dates
    normalised), and the store ends with the appended note only, \\Seen."""
    lab = fresh_lab
    alice = "alice@north.test"
    # A first session looks at the empty INBOX, so what arrives next is \Recent for the
    # next session that sees it (RFC 3501 §2.3.2).
    with imaplib.IMAP4("127.0.0.1", lab.port("imap.north.test"), timeout=10) as first:
        first.login(alice, lab.account(alice).password)
        first.select("INBOX")
    when = datetime(2026, 11, 26, 10, 0, 5, tzinfo=UTC).timestamp()
    lab.store.deliver(alice, IMAP_MESSAGE, internaldate=when)
    wire = Wire(lab.port("imap.north.test"))
    try:
        tag = ""
        for line in IMAP_SCRIPT:  # one at a time, each after the previous reply
            wire.send(line)
            if re.match(r"a\d+ ", line):
                tag = line.split(" ")[0]  # else: a literal, ending the command of ``tag``
            while not wire.line().startswith(("+", f"{tag} ")):
                pass
        assert wire.until_closed() == []
    finally:
        wire.close()
    uidvalidity = lab.store.uidvalidity(alice, "INBOX")
    t = lab.transcript(server="imap.north.test").copy()
    t = t[t["session"] == t["session"].iloc[-1]]
    t["line"] = t["line"].str.replace(str(uidvalidity), "<uidvalidity>", regex=False)
    assert rows(t) == GOLDEN_IMAP
    box = lab.mailbox(alice)
    assert box["subject"].tolist() == ["note"] and box["flags"].tolist() == ["\\Seen"]
