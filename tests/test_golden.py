"""Golden transcript: one scripted journey compared line by line with the rows we expect.

Queue ids, dates, Message-IDs and ports are normalised; everything else must match
exactly, in order, each line once.
"""

from __future__ import annotations

import base64
import re

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
