"""Benchmark 4: ``lab.transcript()`` on 1,000,000 recorded lines.

What it measures
    A running lab's transcript is filled with 1,000,000 lines (it stops after the
    message that crosses the mark, so a few dozen more) through the servers' own
    recording path (``lab.transcript_log.open_session(server_id)`` and the session's
    ``client()`` / ``server()``), not through sockets. The lines copy what the lab
    really records for one relayed message (see ``lab.transcript()`` after a send):
    a submission session at the MSA (greeting, EHLO and its 9-line reply, AUTH PLAIN,
    MAIL, RCPT, DATA, 20 lines of content, the dot, QUIT), two DNS queries (MX, A)
    and the relay's session at the MX, about 70 lines per message, spread over the two
    MSAs, two MXs and the DNS server, each line its own string. Then
    ``lab.transcript()`` (the whole table as a DataFrame) is timed 3 times.
    Floor: median <= 1.5 s.

Baseline (context only; the floor is absolute)
    The obvious way to make the table: ``pandas.DataFrame`` of a dict of plain Python
    lists holding the same million values (nine columns, no categoricals, no timestamp
    conversion; pandas infers each column's type), timed in the same run on the same
    machine load. A ratio below 1 means the column-buffer design beats the obvious way.

How to read it
    Median of 3 calls. Filling time is printed too (recording cost per line), but it is
    not the floor. ``lab.transcript(server="mx.south.test")`` (a filtered view) is shown
    as context.
"""

from __future__ import annotations

import time

import pandas as pd
from _common import Result, header, median

import mailkit_edu

LINES = 1_000_000
REPETITIONS = 3
FLOOR_SECONDS = 1.5
FLOWS = [
    ("alice@north.test", "carol@south.test", "north.test", "south.test"),
    ("carol@south.test", "bob@north.test", "south.test", "north.test"),
]


def _smtp_session(log, helo: str, host: str, sender: str, rcpt: str, qid: str, auth: bool) -> None:
    log.server(f"220 {host} ESMTP mailkit-edu", "220")
    log.client(f"EHLO {helo}", "EHLO")
    for ext in ("SIZE 10485760", "8BITMIME", "SMTPUTF8", "STARTTLS"):
        log.server(f"250-{ext}", "250")
    if auth:
        log.server("250-AUTH LOGIN PLAIN", "250")
    for ext in ("PIPELINING", "ENHANCEDSTATUSCODES"):
        log.server(f"250-{ext}", "250")
    log.server("250 HELP", "250")
    if auth:
        log.client(f"AUTH PLAIN AGFsaWNlQG5vcnRoLnRlc3QAc2VjcmV0{qid}", "AUTH")
        log.server("235 2.7.0 Authentication successful", "235")
    log.client(f"MAIL FROM:<{sender}> SIZE=1339", "MAIL")
    log.server("250 2.1.0 Sender OK", "250")
    log.client(f"RCPT TO:<{rcpt}>", "RCPT")
    log.server("250 2.1.5 Recipient OK", "250")
    log.client("DATA", "DATA")
    log.server("354 End data with <CR><LF>.<CR><LF>", "354")
    log.client(f"Received: from {helo} (127.0.0.1 [127.0.0.1])")
    log.client(f"\tby {host} (mailkit-edu) with ESMTPA id {qid}")
    log.client(f"From: <{sender}>")
    log.client(f"To: <{rcpt}>")
    log.client(f"Subject: message {qid}")
    log.client(f"Message-ID: <{qid}@{host}>")
    log.client("")
    for i in range(13):
        log.client(f"Line {i:02d} of message {qid}: the quick brown fox jumps over the lazy dog.")
    log.client(".")
    log.server(f"250 2.0.0 OK: queued as {qid}", "250")
    log.client("QUIT", "QUIT")
    log.server("221 2.0.0 Bye", "221")


def fill(lab: mailkit_edu.Lab, lines: int) -> None:
    """Record at least ``lines`` realistic protocol lines in the lab's transcript."""
    transcript = lab.transcript_log
    dns = lab.server("dns").server_id
    number = 0
    while len(transcript) < lines:
        sender, rcpt, here, there = FLOWS[number % len(FLOWS)]
        qid = f"{number:010X}"
        msa = transcript.open_session(lab.server(f"msa.{here}").server_id)
        _smtp_session(msa, "bench-client", f"msa.{here}", sender, rcpt, qid, auth=True)
        query = transcript.open_session(dns)
        query.client(f"{there}. IN MX?", "MX")
        query.server(f"{there}. 300 IN MX 10 mx.{there}.", "NOERROR")
        query = transcript.open_session(dns)
        query.client(f"mx.{there}. IN A?", "A")
        query.server(f"mx.{there}. 300 IN A 127.0.0.1", "NOERROR")
        mx = transcript.open_session(lab.server(f"mx.{there}").server_id)
        _smtp_session(mx, f"msa.{here}", f"mx.{there}", sender, rcpt, qid, auth=False)
        number += 1


def _baseline(lab: mailkit_edu.Lab) -> float:
    """Seconds for pandas to build a 9-column frame from plain lists of the same values."""
    t = lab.transcript_log
    with t._lock:  # a snapshot of the buffers, as frame() takes (benchmark only)
        columns = {
            "time": list(t._time),
            "server": list(t._server),
            "role": list(t._server),
            "protocol": list(t._server),
            "session": list(t._session),
            "direction": list(t._client),
            "line": list(t._line),
            "command": list(t._command),
            "code": list(t._code),
        }
    start = time.perf_counter()
    pd.DataFrame(columns)
    return time.perf_counter() - start


def run() -> Result:
    header(f"4. lab.transcript() on {LINES:,} lines, median of {REPETITIONS}")
    with mailkit_edu.start_lab() as lab:
        start = time.perf_counter()
        fill(lab, LINES)
        filled = time.perf_counter() - start
        recorded = len(lab.transcript_log)
        print(
            f"  filled {recorded:,} lines in {filled:.2f} s "
            f"({filled / recorded * 1e6:.2f} us per recorded line)"
        )
        times = []
        for _ in range(REPETITIONS):
            start = time.perf_counter()
            frame = lab.transcript()
            times.append(time.perf_counter() - start)
            rows = len(frame)
            del frame
        start = time.perf_counter()
        filtered = len(lab.transcript(server="mx.south.test"))
        filter_time = time.perf_counter() - start
        base = median([_baseline(lab) for _ in range(REPETITIONS)])
    ours = median(times)
    print(f"  lab.transcript(): {rows:,} rows; " + ", ".join(f"{t:.2f} s" for t in times))
    print(f"  lab.transcript(server='mx.south.test'): {filtered:,} rows in {filter_time:.2f} s")
    print(f"  baseline, pd.DataFrame from plain lists of the same values: {base:.2f} s")
    print(f"  ratio lab.transcript() / baseline: {ours / base:.1f}x")
    result = Result(
        name="transcript() 1M lines",
        floor=f"median <= {FLOOR_SECONDS} s",
        passed=ours <= FLOOR_SECONDS,
        summary=f"{ours:.2f} s (plain pd.DataFrame of the same lists: {base:.2f} s)",
    )
    result.print()
    return result


if __name__ == "__main__":
    run()
