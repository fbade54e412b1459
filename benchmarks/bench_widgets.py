"""Benchmark 7: the TranscriptView widget with 100,000 lines in the transcript.

What it measures
    A running lab's transcript is filled with 100,000 lines through the real recording
    path (``Transcript.record``, as the servers' ``SessionLog`` calls it), copying what
    the lab records for one relayed and retrieved message: a submission session at the
    MSA, the relay's two DNS queries, its session at the MX and a POP3 session with a
    RETR, spread over the lab's servers, each line its own string. Then, in this (the
    "kernel's") thread, with ``TranscriptView(lab, live=False)`` and the default window
    of 200 rows, the median time of:

    * **first render**: building the view (it reads all 100,000 rows, filters them and
      draws the window), 7 times;
    * **refresh after 1,000 new lines**: 1,000 more lines recorded (not timed), then
      ``view.refresh()``, 15 times;
    * **refresh with nothing new**: ``view.refresh()`` again, 50 times;
    * **filter change**: setting ``view.server_filter.value`` (alternately to
      ``mx.south.test`` and back to all) and ``view.session_filter.value``; each
      re-filters every row read so far and redraws, 16 times.

    Floor (from the issue): each of these ≤ 50 ms of kernel time.

Baseline (context only; the floor is absolute)
    The obvious way to draw the same window: ``lab.transcript()`` (the whole DataFrame),
    filter it, take the last 200 rows and ``DataFrame.to_html()`` them, on every
    refresh. Timed 3 times on the same transcript.

How to read it
    No front end is attached (as in a headless test), so the time is the kernel's own:
    reading the transcript's buffers, numpy filtering, building the HTML. In a notebook
    the kernel also sends the changed HTML to the browser (~35 kB for 200 rows),
    once per redraw; that is not timed here.
"""

from __future__ import annotations

import time

from _common import Result, header, median

import mailkit_edu
from mailkit_edu.widgets import TranscriptView

LINES = 100_000
NEW_LINES = 1_000
ROWS = 200
FLOOR_MS = 50.0


class _Filler:
    """Records realistic lines into a lab's transcript, one message's worth at a time."""

    def __init__(self, lab: mailkit_edu.Lab) -> None:
        self.log = lab.transcript_log
        self.ids = {name: lab.server(name).server_id for name in lab.servers["name"]}
        self.session = 1_000_000  # far above the lab's own session numbers
        self.number = 0

    def _session(self, server: str, lines: list[tuple[bool, str, str | None, str | None]]):
        self.session += 1
        server_id, session, record = self.ids[server], self.session, self.log.record
        for client, line, command, code in lines:
            record(server_id, session, client, line, command, code)

    def message(self) -> None:
        """About 75 lines: MSA session, DNS MX and A, MX session, POP3 RETR session."""
        self.number += 1
        qid = f"{self.number:010X}"
        smtp = [
            (False, "250-SIZE 10485760", None, "250"),
            (False, "250-8BITMIME", None, "250"),
            (False, "250-PIPELINING", None, "250"),
            (False, "250 HELP", None, "250"),
        ]
        content = [
            (True, "From: <alice@north.test>", None, None),
            (True, "To: <carol@south.test>", None, None),
            (True, f"Subject: message {self.number}", None, None),
            (True, f"Message-ID: <{qid}@north.test>", None, None),
            (True, "", None, None),
            *[
                (True, f"Line {i:02d}: the quick brown fox jumps over the lazy dog.", None, None)
                for i in range(10)
            ],
            (True, ".", None, None),
        ]
        self._session(
            "msa.north.test",
            [
                (False, "220 msa.north.test ESMTP mailkit-edu", None, "220"),
                (True, "EHLO [127.0.0.1]", "EHLO", None),
                *smtp,
                (True, "AUTH PLAIN AGFsaWNlQG5vcnRoLnRlc3QAYWxpY2Utc2VjcmV0", "AUTH", None),
                (False, "235 2.7.0 Authentication successful", None, "235"),
                (True, "MAIL FROM:<alice@north.test>", "MAIL", None),
                (False, "250 2.1.0 Sender OK", None, "250"),
                (True, "RCPT TO:<carol@south.test>", "RCPT", None),
                (False, "250 2.1.5 Recipient OK", None, "250"),
                (True, "DATA", "DATA", None),
                (False, "354 End data with <CR><LF>.<CR><LF>", None, "354"),
                *content,
                (False, f"250 2.0.0 OK: queued as {qid}", None, "250"),
                (True, "QUIT", "QUIT", None),
                (False, "221 2.0.0 Bye", None, "221"),
            ],
        )
        self._session(
            "dns",
            [
                (True, "south.test. IN MX?", "MX", None),
                (False, "south.test. 300 IN MX 10 mx.south.test.", None, "NOERROR"),
            ],
        )
        self._session(
            "dns",
            [
                (True, "mx.south.test. IN A?", "A", None),
                (False, "mx.south.test. 300 IN A 127.0.0.1", None, "NOERROR"),
            ],
        )
        self._session(
            "mx.south.test",
            [
                (False, "220 mx.south.test ESMTP mailkit-edu", None, "220"),
                (True, "EHLO msa.north.test", "EHLO", None),
                *smtp,
                (True, "MAIL FROM:<alice@north.test> SIZE=600", "MAIL", None),
                (True, "RCPT TO:<carol@south.test>", "RCPT", None),
                (True, "DATA", "DATA", None),
                (False, "250 2.1.0 Sender OK", None, "250"),
                (False, "250 2.1.5 Recipient OK", None, "250"),
                (False, "354 End data with <CR><LF>.<CR><LF>", None, "354"),
                *content,
                (False, f"250 2.0.0 OK: delivered to 1 mailbox as {qid}", None, "250"),
                (True, "QUIT", "QUIT", None),
                (False, "221 2.0.0 Bye", None, "221"),
            ],
        )
        self._session(
            "pop3.south.test",
            [
                (False, "+OK pop3.south.test ready", None, "+OK"),
                (True, "USER carol@south.test", "USER", None),
                (False, "+OK send PASS", None, "+OK"),
                (True, "PASS carol-secret", "PASS", None),
                (False, "+OK maildrop locked and ready", None, "+OK"),
                (True, "RETR 1", "RETR", None),
                (False, "+OK 600 octets", None, "+OK"),
                *[(False, line, None, None) for _, line, _, _ in content],
                (True, "QUIT", "QUIT", None),
                (False, "+OK signing off", None, "+OK"),
            ],
        )

    def fill(self, lines: int) -> None:
        """Record messages until the transcript holds at least ``lines`` lines."""
        while len(self.log) < lines:
            self.message()

    def add(self, lines: int) -> None:
        """Record about ``lines`` more lines (whole messages)."""
        self.fill(len(self.log) + lines)


def _timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _baseline(lab: mailkit_edu.Lab) -> float:
    """The obvious refresh: the whole DataFrame, filtered, tail, to_html."""
    start = time.perf_counter()
    frame = lab.transcript(server="mx.south.test")
    frame.tail(ROWS).to_html()
    return time.perf_counter() - start


def run() -> Result:
    header(f"7. TranscriptView with {LINES:,} lines in the transcript (window {ROWS} rows)")
    with mailkit_edu.start_lab() as lab:
        filler = _Filler(lab)
        start = time.perf_counter()
        filler.fill(LINES)
        print(f"  filled {len(lab.transcript_log):,} lines in {time.perf_counter() - start:.2f} s")

        firsts = []
        for _ in range(7):
            views: list[TranscriptView] = []
            firsts.append(_timed(lambda v=views: v.append(TranscriptView(lab, live=False))))
        view = views[0]
        assert view.total_matching == len(lab.transcript_log) and len(view.rows_shown) == ROWS

        news = []
        for _ in range(15):
            filler.add(NEW_LINES)
            news.append(_timed(view.refresh))
        assert view.rows_read == len(lab.transcript_log)

        nothings = [_timed(view.refresh) for _ in range(50)]

        sessions = sorted(set(lab.transcript(server="pop3.south.test")["session"]))[-8:]
        filters = []
        for i in range(8):
            value = "mx.south.test" if i % 2 == 0 else "all"
            filters.append(_timed(lambda v=value: setattr(view.server_filter, "value", v)))
            session = str(sessions[i]) if i % 2 == 0 else ""
            filters.append(_timed(lambda s=session: setattr(view.session_filter, "value", s)))
        assert view.errors.text == ""
        rows = view.rows_read
        base = median([_baseline(lab) for _ in range(3)])

    samples = {
        "first render": firsts,
        f"refresh after {NEW_LINES:,} new lines": news,
        "refresh with nothing new": nothings,
        "filter change": filters,
    }
    medians = {name: median(values) for name, values in samples.items()}
    for name, values in samples.items():
        print(
            f"  {name + ':':<34} median {medians[name] * 1e3:6.2f} ms, "
            f"max {max(values) * 1e3:6.2f} ms ({len(values)} times)"
        )
    print(f"  transcript at the end: {rows:,} lines")
    print(
        "  baseline, the obvious refresh (lab.transcript(server=...), tail, to_html): "
        f"{base * 1e3:.0f} ms"
    )
    first, new, nothing, change = medians.values()
    result = Result(
        name="TranscriptView 100k lines",
        floor=f"each median <= {FLOOR_MS:.0f} ms",
        passed=max(medians.values()) * 1e3 <= FLOOR_MS,
        summary=(
            f"first render {first * 1e3:.1f} ms, +1k lines {new * 1e3:.1f} ms, "
            f"nothing new {nothing * 1e3:.2f} ms, filter {change * 1e3:.1f} ms "
            f"(obvious way {base * 1e3:.0f} ms)"
        ),
    )
    result.print()
    return result


if __name__ == "__main__":
    run()
