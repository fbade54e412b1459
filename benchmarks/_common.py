"""What the benchmarks share: the bare aiosmtpd baseline, an SMTP client, statistics.

The baseline server is the same in every SMTP benchmark: aiosmtpd's own ``SMTP``
protocol, on a private asyncio loop in a background thread of *this* process (as the
lab's servers are), bound to 127.0.0.1 on a port the OS picks, whose ``handle_DATA``
stores the message with ``mailbox.Maildir(path).add(...)`` (which fsyncs the file) and
answers ``250 OK``. It does no AUTH, no transcript, no queue and no relay: it is the
floor that any aiosmtpd-based server writing a Maildir stands on, on this machine, now.

Nothing here talks to anything but 127.0.0.1, and every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import mailbox
import os
import shutil
import smtplib
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.smtp import SMTP

LOOPBACK = "127.0.0.1"
#: Seconds any single SMTP operation of a benchmark client may take.
CLIENT_TIMEOUT = 30.0
#: Seconds between two looks at a Maildir folder while waiting for a delivery.
POLL_PAUSE = 0.0002

# One realistic ~1 KiB message, used against both servers.
_BODY = "\r\n".join(
    f"Line {i:02d} of the benchmark message: the quick brown fox jumps over the lazy dog."
    for i in range(12)
)


def message(sender: str, recipient: str, number: int) -> bytes:
    """A small plain-text message (about 1.2 KiB), CRLF line ends, with Date and Message-ID."""
    return (
        f"From: <{sender}>\r\n"
        f"To: <{recipient}>\r\n"
        f"Subject: benchmark message {number}\r\n"
        f"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n"
        f"Message-ID: <bench.{number}.{time.monotonic_ns()}@bench.invalid>\r\n"
        f"MIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n"
        f"\r\n"
        f"{_BODY}\r\n"
    ).encode()


def smtp_transaction(
    port: int,
    sender: str,
    recipient: str,
    data: bytes,
    login: tuple[str, str] | None = None,
) -> None:
    """One complete smtplib transaction: connect, EHLO, [AUTH PLAIN], MAIL, RCPT, DATA, QUIT."""
    client = smtplib.SMTP(LOOPBACK, port, local_hostname="bench-client", timeout=CLIENT_TIMEOUT)
    try:
        client.ehlo()
        if login is not None:
            client.user, client.password = login
            client.auth("PLAIN", client.auth_plain)
        refused = client.sendmail(sender, [recipient], data)
        if refused:
            raise RuntimeError(f"recipient refused: {refused}")
    finally:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()
        client.close()


def count_files(directory: Path) -> int:
    """How many entries ``directory`` holds (a Maildir's ``new/``)."""
    with os.scandir(directory) as entries:
        return sum(1 for _ in entries)


def directory_state(directory: Path) -> tuple[int, int]:
    """(mtime in ns, number of entries) of a directory, for :func:`wait_for_new_entry`."""
    return os.stat(directory).st_mtime_ns, count_files(directory)


def wait_for_new_entry(directory: Path, before: tuple[int, int], deadline: float) -> float:
    """Wait until ``directory`` holds more entries than in ``before``; return when (perf_counter).

    Counting a folder of a few hundred files costs ~0.3 ms here, so the loop polls the
    folder's mtime every 0.2 ms (a 3 us ``stat``; a rename into the folder changes it)
    and counts only when it changed, or every 5 ms in case the clock was too coarse to
    show the change. The time returned is that of the ``stat`` that saw it.
    Raises TimeoutError after ``deadline`` (perf_counter).
    """
    seen_mtime, count = before
    next_count = time.perf_counter() + 0.005
    while True:
        mtime = os.stat(directory).st_mtime_ns
        now = time.perf_counter()
        if mtime != seen_mtime or now >= next_count:
            seen_mtime, next_count = mtime, now + 0.005
            if count_files(directory) > count:
                return now
        if now > deadline:
            raise TimeoutError(f"nothing new in {directory}")
        time.sleep(POLL_PAUSE)


def wait_for_count(directories: Sequence[Path], total: int, timeout: float, pause: float) -> bool:
    """Poll until the directories hold ``total`` files together; False after ``timeout`` s."""
    deadline = time.perf_counter() + timeout
    while sum(count_files(d) for d in directories) < total:
        if time.perf_counter() > deadline:
            return False
        time.sleep(pause)
    return True


# -- the baseline: bare aiosmtpd into a Maildir ------------------------------------------


class _MaildirHandler:
    """aiosmtpd handler: each message goes into ``root/<recipient>/`` with Maildir.add()."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def handle_DATA(self, server, session, envelope) -> str:
        for rcpt in envelope.rcpt_tos:
            mailbox.Maildir(self.root / rcpt).add(envelope.original_content)
        return "250 OK"


class BareMaildirServer:
    """The baseline: ``aiosmtpd.smtp.SMTP`` on a loop in a background thread, no Controller.

    Use as a context manager; ``port`` is the listening port and ``maildir_new(rcpt)``
    the ``new/`` directory a recipient's messages land in.
    """

    def __init__(self, root: Path | None = None) -> None:
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="bench-bare-")) if root is None else root
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="bench-bare-smtp")
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    def maildir_new(self, recipient: str) -> Path:
        mailbox.Maildir(self.root / recipient)  # creates tmp/ new/ cur/ if missing
        return self.root / recipient / "new"

    def __enter__(self) -> BareMaildirServer:
        self._thread.start()
        handler = _MaildirHandler(self.root)
        loop = self.loop

        async def start() -> asyncio.base_events.Server:
            return await loop.create_server(
                lambda: SMTP(handler, hostname="bench", loop=loop), LOOPBACK, 0
            )

        self._server = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc_info: object) -> None:
        server = self._server

        async def stop() -> None:
            if server is not None:
                server.close()
                await asyncio.wait_for(server.wait_closed(), 5)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)


# -- figures ----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def seconds_text(value: float | None) -> str:
    """A duration for a table: milliseconds below 1 s, seconds above, a dash for none."""
    if value is None:
        return "—"
    return ms(value) if value < 1 else f"{value:,.2f} s"


def times_text(ratio: float) -> str:
    """A ratio for a table: ``1.52x``, or ``312x`` when it is large."""
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:,.0f}x"


@dataclass
class Result:
    """What one benchmark reports: its verdict against the floor and the figures."""

    name: str
    floor: str
    passed: bool
    summary: str
    lines: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def print(self) -> None:
        print(f"  [{self.verdict}] floor: {self.floor}")
        print(f"         measured: {self.summary}")


def header(title: str) -> None:
    print()
    print(f"=== {title} ===")


@contextlib.contextmanager
def stopwatch() -> Iterator[list[float]]:
    """``with stopwatch() as t: ...`` then ``t[0]`` is the elapsed seconds."""
    elapsed: list[float] = []
    start = time.perf_counter()
    try:
        yield elapsed
    finally:
        elapsed.append(time.perf_counter() - start)
