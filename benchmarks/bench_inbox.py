"""Benchmark 8: the Inbox widget's "Check now" over IMAP, with 100 messages.

What it measures
    A lab with 100 messages (~2 KiB, as delivered) in carol@south.test's INBOX. In this
    (the "kernel's") thread, ``Inbox(lab, "carol@south.test", "IMAP")`` and its
    ``check()`` — what the "Check now" button runs: the IMAP round trip (LIST of the
    folders, SELECT, ``UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS
    (FROM TO SUBJECT DATE)])``), parsing the replies, the message list, the status
    line and the cost counter read from the transcript. The first check logs in
    (timed apart); then 30 checks on the open connection, median and max.

    Floor (from the issue): a check-now round trip ≤ 100 ms.

Baseline (context, same run)
    The same IMAP commands with bare ``imaplib`` on one open connection (no parsing into
    summaries, no widgets): what any client must pay for the round trip itself. The
    server is the lab's, on its own loop in a background thread of this process, as in
    a notebook.
"""

from __future__ import annotations

import imaplib
import time

from _common import Result, header, median

import mailkit_edu
from mailkit_edu.widgets import Inbox

MESSAGES = 100
CHECKS = 30
FLOOR_MS = 100.0
CAROL = "carol@south.test"
HEADERS = "BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE)]"


def _message(i: int) -> bytes:
    line = "Line {:02d} of message {}: the quick brown fox jumps.\r\n"
    body = "".join(line.format(n, i) for n in range(40))
    return (
        f"From: Alice <alice@north.test>\r\nTo: {CAROL}\r\nSubject: message {i}\r\n"
        f"Date: Thu, 26 Nov 2026 10:{i % 60:02d}:00 +0000\r\n\r\n{body}"
    ).encode()


def _bare(lab: mailkit_edu.Lab) -> list[float]:
    client = imaplib.IMAP4("127.0.0.1", lab.port("imap.south.test"))
    client.login(CAROL, lab.account(CAROL).password)
    times = []
    for _ in range(CHECKS):
        start = time.perf_counter()
        client.list()
        client.select("INBOX")
        client.uid("FETCH", "1:*", f"(UID FLAGS RFC822.SIZE {HEADERS})")
        times.append(time.perf_counter() - start)
    client.logout()
    return times


def run() -> Result:
    header(f"8. Inbox 'Check now' over IMAP with {MESSAGES} messages")
    with mailkit_edu.start_lab() as lab:
        for i in range(MESSAGES):
            lab.store.deliver(CAROL, _message(i))
        inbox = Inbox(lab, CAROL, "IMAP")
        start = time.perf_counter()
        inbox.check()
        first = time.perf_counter() - start
        assert len(inbox.messages) == MESSAGES and not inbox.errors.text
        checks = []
        for _ in range(CHECKS):
            start = time.perf_counter()
            inbox.check()
            checks.append(time.perf_counter() - start)
        assert len(inbox.list.options) == MESSAGES and not inbox.errors.text
        lines, octets = inbox.last_cost
        inbox.close()
        bare = _bare(lab)
    ours, base = median(checks), median(bare)
    print(f"  first check (with login): {first * 1e3:.1f} ms")
    print(
        f"  check now: median {ours * 1e3:.1f} ms, max {max(checks) * 1e3:.1f} ms "
        f"({CHECKS} checks; {lines} lines, {octets:,} bytes each, from the transcript)"
    )
    print(f"  bare imaplib, same commands: median {base * 1e3:.1f} ms ({ours / base:.2f}x)")
    result = Result(
        name="Inbox check now",
        floor=f"median <= {FLOOR_MS:.0f} ms",
        passed=ours * 1e3 <= FLOOR_MS,
        summary=(
            f"IMAP {MESSAGES} messages: {ours * 1e3:.1f} ms (max {max(checks) * 1e3:.1f} ms); "
            f"bare imaplib {base * 1e3:.1f} ms"
        ),
    )
    result.print()
    return result


if __name__ == "__main__":
    run()
