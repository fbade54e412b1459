"""Benchmark 6: the lab's IMAP server against Dovecot's, with 2,000 and 20,000 messages.

What it measures
    Two INBOXes per server made of the *same* files: 2,000 and 20,000 plain-text
    messages of about 2 KiB, the messages and the hard-linked pool of ``bench_pop3.py``
    (``_dovecot.py``). Like a real INBOX, the oldest 90 % have been read (files in
    ``cur/`` named ``<name>:2,S``) and the newest 10 % have not (files in ``new/``).
    With stock ``imaplib`` as the client of both servers, the same client code times:

    * **cold pass**: the first time each server sees a folder: connect + LOGIN, then
      ``SELECT INBOX`` and ``UID FETCH 1:* (FLAGS RFC822.SIZE)``, each timed on its
      own. One sample each, no floor (both servers build their index then).
    * **metadata**, warm: connect + LOGIN + ``SELECT INBOX`` + ``UID FETCH 1:* (FLAGS
      RFC822.SIZE)``, what a mail client does each time it opens the folder (9 times
      at 2,000 and 7 at 20,000). After the clock: one answer per message, the sizes
      are the files' sizes, and exactly the 90 % read carry ``\\Seen``.
    * **SELECT INBOX** alone, warm: a new connection and LOGIN (not timed), then the
      SELECT (9 times at each size).
    * **bulk bodies**: ``FETCH 1:* BODY.PEEK[]`` in one command on a connection that
      has the folder selected (7 times at 2,000, 5 at 20,000). After the clock, every
      body must be one of the messages, byte for byte, and each one must come back.
    * **IDLE latency**: a client (a raw socket, not imaplib) selects an INBOX, sends
      ``IDLE``, waits for ``+`` and tells the benchmark process so over a loopback
      control connection; 20 ms later the benchmark process delivers a message
      (ours: ``lab.store.deliver``; Dovecot: a file written into ``tmp/`` and renamed
      into ``new/``, which Dovecot notices with inotify) and notes the time the
      delivery returned (ours fsyncs before it returns; how long the delivery itself
      took is printed too). The latency is the time the client read ``* n EXISTS``
      minus that time (``time.monotonic``, which is CLOCK_MONOTONIC: the same clock
      in both processes on Linux). Then ``DONE``, and the next sample: 50 for ours,
      20 for Dovecot, whose figure is informative only: Dovecot waits 0.5 s after a
      change before it tells an idling client (it batches changes), so it shows
      ~500 ms by design. A sample with no EXISTS within 2 s counts as 2 s; three of
      them in a row end the series.
    * **memory**: the resident set (``/proc/self/statm``) of this process, where our
      server runs, just before any client opened the 20,000-message INBOX, and while
      one client has it selected (after its cold SELECT, and again after its cold
      UID FETCH), after a ``gc.collect()`` and a 0.3 s pause each time. The client
      lives in the other process, so only the server's memory is counted. Ours only.
    * **APPEND latency**: stock ``imaplib.append`` of a ~2 KiB message, 5 rounds of
      10 on one connection each, alternating servers. imaplib sends the literal and
      its final CRLF in two writes: an asyncio server that does not ACK at once meets
      Nagle's algorithm and stalls ~40 ms per APPEND (reference-servers.md).
      Informative; a warning is printed if ours is over 10 ms.

    Ours: ``imap.north.test`` and ``imap.south.test`` of a lab started with
    ``start_lab(path=...)``: alice@north.test holds the 2,000 messages, bob@north.test
    the 20,000, carol@south.test is the IDLE INBOX and dave@south.test the APPEND one.
    The server runs on the lab's asyncio loop in a background thread of this process;
    the imaplib client runs in a separate process (a one-worker process pool), for
    both servers alike. If the lab has no IMAP server (or it fails), that is said
    clearly, Dovecot's figures are still printed, and the verdict is FAIL.

    Baseline: Dovecot 2.3 (Debian's ``dovecot-core`` + ``dovecot-imapd``; installed
    with apt-get if missing), started for this run from a config in the temporary
    folder as in ``/work/shared/docs/reference-servers.md`` (IMAP only), loopback, no
    TLS, Maildirs owned by uid 65534, users ``m2k``, ``m20k``, ``idle`` and
    ``append``; stopped with ``doveadm stop`` in a ``finally`` (and on SIGTERM).

Why the baseline is fair
    Same machine, same run, same filesystem and the same inodes (so the page cache
    treats both alike), same client code in the same separate process, and the
    repetitions alternate between the servers so the machine's noise hits both.
    Before the first contact the benchmark waits until the folders' mtimes are more
    than 2 s old: our store trusts an mtime only then (``MTIME_GRACE_SECONDS``).

How to read it
    Figures are medians of their repetitions; each ratio is ours / Dovecot. Floors,
    from the issue: metadata <= 3x Dovecot and bulk bodies <= 4x Dovecot, at 2,000
    and at 20,000 messages; SELECT of the 20,000-message INBOX <= 50 ms (median);
    IDLE p99 <= 50 ms; RSS growth with the 20,000-message INBOX selected <= 30 MB
    (10^6 bytes). If Dovecot cannot be installed or started, ours is compared with the
    reference figures of reference-servers.md (metadata and bodies only).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import imaplib
import multiprocessing
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _common import LOOPBACK, Result, header, median, ms, percentile, seconds_text, times_text
from _dovecot import (
    DOVECOT_PASSWORD,
    DOVECOT_UID,
    Dovecot,
    digest,
    ensure_dovecot,
    file_names,
    link_maildrop,
    make_messages,
    settle,
    sigterm_raises,
    write_pool,
)

import mailkit_edu

SMALL, LARGE = 2_000, 20_000
SIZES = (SMALL, LARGE)
#: The oldest 90 % of each INBOX have been read (cur/, ":2,S"); the rest are in new/.
READ_FRACTION = 0.9
META_REPS = {SMALL: 9, LARGE: 7}
SELECT_REPS = {SMALL: 9, LARGE: 9}
BODY_REPS = {SMALL: 7, LARGE: 5}
IDLE_SAMPLES = {"ours": 50, "dovecot": 20}
#: Seconds between the client's "+" (it is idling) and the delivery.
IDLE_PAUSE = 0.02
#: Seconds a client in IDLE waits for EXISTS before the sample counts as lost.
IDLE_WAIT = 2.0
IDLE_MISSES = 3  # lost samples in a row that end a series
APPEND_ROUNDS, APPEND_PER_ROUND = 5, 10
META_FLOOR, BODY_FLOOR = 3.0, 4.0
SELECT_FLOOR, IDLE_FLOOR = 0.050, 0.050
MEMORY_FLOOR = 30e6  # bytes
APPEND_WARNING = 0.010
#: Reference figures (reference-servers.md), used only when Dovecot is unavailable.
REFERENCE = {
    ("meta", SMALL): 0.024,
    ("meta", LARGE): 0.11,
    ("body", SMALL): 0.030,
    ("body", LARGE): 0.31,
    ("append", 0): 0.0012,
}
#: Seconds any single IMAP command may take before the client gives up.
CLIENT_TIMEOUT = 30.0
#: Seconds this process waits for the client process's word during the IDLE series.
CONTROL_TIMEOUT = 60.0
#: Pause before each memory reading, so that the server has finished its work.
MEMORY_PAUSE = 0.3
MB = 1e6


@dataclass(frozen=True)
class Inbox:
    """One INBOX, the same files on both servers."""

    address: str  # our account
    user: str  # the Dovecot user
    size: int  # messages linked into it (0: it starts empty)

    @property
    def read(self) -> int:
        """How many of its messages have been read before (the oldest ones)."""
        return int(self.size * READ_FRACTION)


INBOXES = {
    SMALL: Inbox("alice@north.test", "m2k", SMALL),
    LARGE: Inbox("bob@north.test", "m20k", LARGE),
    "idle": Inbox("carol@south.test", "idle", 0),
    "append": Inbox("dave@south.test", "append", 0),
}

# -- the client: the same code for both servers, in a process of its own ------------------

_CLIENT_MESSAGES: list[bytes] = []
_KNOWN: dict[int, set[bytes]] = {}
_HELD: list[imaplib.IMAP4] = []
_SIZE_ITEM = re.compile(rb"RFC822\.SIZE (\d+)")
_FLAGS_ITEM = re.compile(rb"FLAGS \(([^)]*)\)")
_EXISTS = re.compile(rb"\* (\d+) EXISTS", re.IGNORECASE)


def _client_start() -> None:
    """In the client process: make the same messages (same seed) to check against."""
    _CLIENT_MESSAGES[:] = make_messages(LARGE)


def _known(size: int) -> set[bytes]:
    if size not in _KNOWN:
        _KNOWN[size] = {digest(m) for m in _CLIENT_MESSAGES[:size]}
    return _KNOWN[size]


def _connect(port: int, user: str, password: str) -> imaplib.IMAP4:
    try:
        client = imaplib.IMAP4(LOOPBACK, port, timeout=CLIENT_TIMEOUT)
    except imaplib.IMAP4.error as error:
        raise RuntimeError(f"no IMAP greeting at 127.0.0.1:{port}: {error!r}") from None
    try:
        client.login(user, password)
    except imaplib.IMAP4.error as error:
        client.shutdown()
        raise RuntimeError(f"LOGIN {user} at 127.0.0.1:{port}: {error}") from None
    except BaseException:
        client.shutdown()
        raise
    return client


def _logout(client: imaplib.IMAP4) -> None:
    try:
        client.logout()
    except (imaplib.IMAP4.error, OSError):
        client.shutdown()


def _select(client: imaplib.IMAP4, expected: int) -> None:
    typ, data = client.select("INBOX")
    if typ != "OK" or int(data[0]) != expected:
        raise RuntimeError(f"SELECT INBOX: {typ} {data!r}, expected {expected} EXISTS")


def _uid_fetch_metadata(client: imaplib.IMAP4) -> list[bytes]:
    typ, data = client.uid("FETCH", "1:*", "(FLAGS RFC822.SIZE)")
    if typ != "OK":
        raise RuntimeError(f"UID FETCH: {typ} {data[:1]!r}")
    return [item for item in data if isinstance(item, bytes)]


def _check_metadata(answers: list[bytes], inbox: Inbox) -> None:
    """One answer per message, the files' sizes, and \\Seen on exactly the read ones."""
    sizes = sorted(int(m[1]) for a in answers if (m := _SIZE_ITEM.search(a)))
    expected = sorted(len(m) for m in _CLIENT_MESSAGES[: inbox.size])
    if sizes != expected:
        raise RuntimeError(f"{inbox.user}: {len(answers)} answers, sizes do not match the files")
    seen = sum(1 for a in answers if (m := _FLAGS_ITEM.search(a)) and b"\\Seen" in m[1])
    if seen != inbox.read:
        raise RuntimeError(f"{inbox.user}: {seen} messages \\Seen, expected {inbox.read}")


def _client_metadata(port: int, user: str, password: str, inbox: Inbox) -> float:
    """Seconds for connect + LOGIN + SELECT INBOX + UID FETCH 1:* (FLAGS RFC822.SIZE)."""
    start = time.perf_counter()
    client = _connect(port, user, password)
    try:
        _select(client, inbox.size)
        answers = _uid_fetch_metadata(client)
        elapsed = time.perf_counter() - start
    finally:
        _logout(client)
    _check_metadata(answers, inbox)
    return elapsed


def _client_select(port: int, user: str, password: str, inbox: Inbox) -> float:
    """Seconds of SELECT INBOX alone, on a new logged-in connection."""
    client = _connect(port, user, password)
    try:
        start = time.perf_counter()
        _select(client, inbox.size)
        return time.perf_counter() - start
    finally:
        _logout(client)


def _client_bodies(port: int, user: str, password: str, inbox: Inbox) -> float:
    """Seconds of FETCH 1:* BODY.PEEK[] on a selected INBOX; every body checked afterwards."""
    client = _connect(port, user, password)
    try:
        _select(client, inbox.size)
        start = time.perf_counter()
        typ, data = client.fetch("1:*", "BODY.PEEK[]")
        elapsed = time.perf_counter() - start
    finally:
        _logout(client)
    if typ != "OK":
        raise RuntimeError(f"{user}: FETCH BODY.PEEK[]: {typ} {data[:1]!r}")
    bodies = [item[1] for item in data if isinstance(item, tuple) and b"BODY[]" in item[0]]
    seen = {digest(body) for body in bodies}
    if len(bodies) != inbox.size or seen != _known(inbox.size):
        altered = len(seen - _known(inbox.size))
        raise RuntimeError(f"{user}: {len(bodies)} bodies, {altered} not byte for byte")
    return elapsed


def _client_hold(port: int, user: str, password: str, inbox: Inbox) -> tuple[float, float]:
    """The cold pass, first half: (connect + LOGIN, SELECT) seconds; the connection is kept."""
    start = time.perf_counter()
    client = _connect(port, user, password)
    login = time.perf_counter() - start
    _HELD.append(client)
    start = time.perf_counter()
    _select(client, inbox.size)
    return login, time.perf_counter() - start


def _client_held_metadata(inbox: Inbox) -> float:
    """The cold pass, second half: UID FETCH 1:* (FLAGS RFC822.SIZE) on the kept connection."""
    start = time.perf_counter()
    answers = _uid_fetch_metadata(_HELD[-1])
    elapsed = time.perf_counter() - start
    _check_metadata(answers, inbox)
    return elapsed


def _client_release() -> None:
    while _HELD:
        _logout(_HELD.pop())


def _client_append(port: int, user: str, password: str, count: int, first: int) -> list[float]:
    """Seconds of each of ``count`` stock imaplib APPENDs (one connection, not timed)."""
    client = _connect(port, user, password)
    times = []
    try:
        for number in range(first, first + count):
            start = time.perf_counter()
            typ, data = client.append("INBOX", None, None, _CLIENT_MESSAGES[number])
            times.append(time.perf_counter() - start)
            if typ != "OK":
                raise RuntimeError(f"{user}: APPEND: {typ} {data!r}")
        _select(client, first + count)
    finally:
        _logout(client)
    return times


class _Lines:
    """CRLF lines from a socket, each with the time (monotonic) its last bytes were read."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.stamp = 0.0

    def line(self, deadline: float | None = None) -> bytes | None:
        """The next line (without CRLF); None if ``deadline`` (monotonic) passes first."""
        while b"\r\n" not in self.buffer:
            wait = CLIENT_TIMEOUT if deadline is None else deadline - time.monotonic()
            if wait <= 0:
                return None
            self.sock.settimeout(wait)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                if deadline is None:
                    raise
                return None
            self.stamp = time.monotonic()
            if not data:
                raise ConnectionError("the server closed the connection")
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def until_tagged(self, tag: bytes) -> list[bytes]:
        """Lines up to and including the tagged reply, which must be OK."""
        lines = []
        while True:
            line = self.line()
            assert line is not None
            lines.append(line)
            if line.startswith(tag + b" "):
                if not line[len(tag) + 1 :].upper().startswith(b"OK"):
                    raise RuntimeError(f"{line!r}")
                return lines


def _quoted(text: str) -> bytes:
    return b'"' + text.encode().replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _client_idle(
    port: int, user: str, password: str, control_port: int, samples: int
) -> list[float | None]:
    """IDLE ``samples`` times; each time, say "ready" on the control connection after the
    "+", and note when ``* n EXISTS`` for the next message arrives (None: not in IDLE_WAIT)."""
    seen: list[float | None] = []
    with (
        socket.create_connection((LOOPBACK, control_port), timeout=CLIENT_TIMEOUT) as control,
        socket.create_connection((LOOPBACK, port), timeout=CLIENT_TIMEOUT) as imap,
    ):
        imap.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = _Lines(imap)
        reader.line()  # the greeting
        imap.sendall(b"a LOGIN " + _quoted(user) + b" " + _quoted(password) + b"\r\n")
        reader.until_tagged(b"a")
        imap.sendall(b"b SELECT INBOX\r\n")
        counts = [int(m[1]) for line in reader.until_tagged(b"b") if (m := _EXISTS.match(line))]
        initial = counts[-1]
        misses = 0
        for sample in range(samples):
            tag = f"i{sample}".encode()
            imap.sendall(tag + b" IDLE\r\n")
            while not (line := reader.line() or b"").startswith(b"+"):
                if line.startswith(tag + b" "):
                    raise RuntimeError(f"IDLE refused: {line!r}")
            control.sendall(b"ready\n")
            deadline = time.monotonic() + IDLE_WAIT
            when = None
            while when is None and (line := reader.line(deadline)) is not None:
                if (m := _EXISTS.match(line)) and int(m[1]) >= initial + sample + 1:
                    when = reader.stamp
            seen.append(when)
            imap.sendall(b"DONE\r\n")
            reader.until_tagged(tag)
            misses = 0 if when is not None else misses + 1
            if misses >= IDLE_MISSES:
                break
        control.sendall(b"done\n")
        imap.sendall(b"z LOGOUT\r\n")
    return seen


# -- this process's side ------------------------------------------------------------------


def rss() -> int | None:
    """This process's resident set in bytes (Linux), or None."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def quiet_rss() -> int | None:
    time.sleep(MEMORY_PAUSE)
    gc.collect()
    return rss()


def deliver_dovecot(maildir: Path, data: bytes, number: int) -> None:
    """Deliver as an MDA does: write into tmp/, then rename into new/ (Dovecot's inotify)."""
    name = f"{int(time.time())}.M{number:06d}P{os.getpid()}Q{number}.idle,S={len(data)}"
    temporary = maildir / "tmp" / name
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(descriptor, data)
        if os.geteuid() == 0:
            os.fchown(descriptor, DOVECOT_UID, DOVECOT_UID)
    finally:
        os.close(descriptor)
    os.rename(temporary, maildir / "new" / name)


class OursFailed(Exception):
    """Our server failed a step; the message says which and why."""


@dataclass
class Target:
    """One server as the client sees it: per INBOX key, (port, user, password)."""

    label: str
    client: concurrent.futures.Executor
    logins: dict[object, tuple[int, str, str]] = field(default_factory=dict)
    #: How a message is delivered into the IDLE INBOX (this process, not the client's).
    deliver: Callable[[bytes, int], None] | None = None

    def call(self, function: Callable, *args: object) -> object:
        return self.client.submit(function, *args).result()

    def on(self, key: object, function: Callable, *args: object) -> object:
        return self.call(function, *self.logins[key], *args)


def _interleaved(
    targets: list[Target], reps: int, measure: Callable[[Target], float]
) -> dict[str, list[float]]:
    """``reps`` measurements of each target, alternating (A B, B A, A B, ...)."""
    times: dict[str, list[float]] = {t.label: [] for t in targets}
    for repetition in range(reps):
        for target in targets if repetition % 2 == 0 else targets[::-1]:
            times[target.label].append(measure(target))
    return times


@dataclass
class Figures:
    """Everything measured: timings, IDLE latencies, memory, and what failed on our side."""

    times: dict[tuple[str, object, str], list[float]] = field(default_factory=dict)
    idle: dict[str, list[float]] = field(default_factory=dict)  # seconds; IDLE_WAIT if lost
    deliver_call: dict[str, list[float]] = field(default_factory=dict)
    idle_lost: dict[str, int] = field(default_factory=dict)
    memory: dict[str, int] = field(default_factory=dict)  # bytes of growth
    failed: dict[str, str] = field(default_factory=dict)  # section -> why (ours)

    def med(self, what: str, size: object, label: str) -> float | None:
        values = self.times.get((what, size, label))
        return median(values) if values else None


def run() -> Result:
    header(f"6. IMAP with imaplib: {SMALL:,} and {LARGE:,} messages, ours vs Dovecot")
    started = time.perf_counter()
    messages = make_messages(LARGE)
    names = file_names(messages)
    sizes = [len(m) for m in messages]
    print(
        f"  messages: {min(sizes)}-{max(sizes)} octets (mean {sum(sizes) // len(sizes)}), "
        f"CRLF; {READ_FRACTION:.0%} read before (cur/, :2,S), the newest in new/"
    )
    root = Path(tempfile.mkdtemp(prefix="bench-imap-"))
    os.chmod(root, 0o755)  # Dovecot's processes (uid 65534, dovecot) must get through it
    dovecot = Dovecot(root / "dovecot", protocols=("imap",))
    why_not = ensure_dovecot(("imap",))
    why_not_ours: str | None = None
    figures = Figures()
    labels: list[str] = []
    with sigterm_raises():
        client = concurrent.futures.ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn"), initializer=_client_start
        )
        try:
            with mailkit_edu.start_lab(path=root / "lab") as lab:
                pool = root / "pool"
                write_pool(pool, names, messages, DOVECOT_UID if os.geteuid() == 0 else None)
                written: list[Path] = []
                targets: list[Target] = []
                try:
                    ours = Target("ours", client)
                    for key, inbox in INBOXES.items():
                        port = lab.port(f"imap.{inbox.address.rpartition('@')[2]}")
                        ours.logins[key] = (
                            port,
                            inbox.address,
                            lab.account(inbox.address).password,
                        )
                except mailkit_edu.LabError as error:
                    why_not_ours = f"the lab has no IMAP server yet: {error}"
                else:
                    idle = INBOXES["idle"].address
                    ours.deliver = lambda data, _n: lab.store.deliver(idle, data)
                    for inbox in INBOXES.values():
                        written += _link(pool, lab.store.maildir_path(inbox.address), names, inbox)
                    targets.append(ours)
                if why_not is None:
                    try:
                        theirs = _dovecot_target(dovecot, client, pool, names, written)
                    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
                        why_not = f"Dovecot could not be started: {error}"
                    else:
                        targets.append(theirs)
                        print(f"  Dovecot {dovecot.version()} on 127.0.0.1:{dovecot.ports['imap']}")
                if why_not is not None:
                    print(f"  NOTE: {why_not}; ours is compared with the reference figures")
                if why_not_ours is not None:
                    print(f"  NOTE: ours not measured, {why_not_ours}")
                count = sum(i.size for i in INBOXES.values()) * len(targets)
                print(
                    f"  {len(names):,} files written, {count:,} links made "
                    f"({time.perf_counter() - started:.1f} s since the start)"
                )
                labels = [t.label for t in targets]
                if written:
                    settle(written)
                _measure(targets, figures)
        finally:
            client.shutdown(cancel_futures=True)
            dovecot.stop()
            shutil.rmtree(root, ignore_errors=True)
    result = _report(figures, labels, why_not, why_not_ours)
    print(f"  ({time.perf_counter() - started:.0f} s in all)")
    return result


def _link(pool: Path, maildir: Path, names: list[str], inbox: Inbox) -> list[Path]:
    """Link the INBOX's files: the read ones into cur/, the rest into new/."""
    return [
        link_maildrop(pool, maildir, names[: inbox.read], read=True),
        link_maildrop(pool, maildir, names[inbox.read : inbox.size], read=False),
    ]


def _dovecot_target(
    dovecot: Dovecot,
    client: concurrent.futures.Executor,
    pool: Path,
    names: list[str],
    written: list[Path],
) -> Target:
    dovecot.prepare([inbox.user for inbox in INBOXES.values()])
    theirs = Target("dovecot", client)
    port = dovecot.ports["imap"]
    for key, inbox in INBOXES.items():
        theirs.logins[key] = (port, inbox.user, DOVECOT_PASSWORD)
        written += _link(pool, dovecot.maildir(inbox.user), names, inbox)
    idle_maildir = dovecot.maildir(INBOXES["idle"].user)
    theirs.deliver = lambda data, number: deliver_dovecot(idle_maildir, data, number)
    dovecot.start()
    return theirs


def _measure(targets: list[Target], figures: Figures) -> None:
    """Every section in turn; a failure of ours is noted and ends that section for ours."""

    def guarded(section: str, target: Target, measure: Callable[[], object]) -> object:
        if target.label != "ours":
            return measure()
        if section in figures.failed:
            return None
        try:
            return measure()
        except concurrent.futures.BrokenExecutor:
            raise  # the client process died: that is the benchmark's failure, not the server's
        except (imaplib.IMAP4.error, OSError, RuntimeError, AssertionError) as error:
            why = f"{type(error).__name__}: {error}"
            figures.failed[section] = why
            print(f"  ours FAILED in {section}: {why}")
            with contextlib.suppress(Exception):
                target.call(_client_release)
            return None

    # 1. Cold: the first contact with each folder; ours at 20,000 with its memory.
    for size in (LARGE, SMALL):
        for target in targets:
            before = quiet_rss() if target.label == "ours" and size == LARGE else None

            def cold(target: Target = target, size: int = size, before: int | None = before):
                inbox = INBOXES[size]
                login, select = target.on(size, _client_hold, inbox)
                selected = quiet_rss() if before is not None else None
                fetch = target.call(_client_held_metadata, inbox)
                fetched = quiet_rss() if before is not None else None
                target.call(_client_release)
                for what, value in (("cold-login", login), ("cold-select", select)):
                    figures.times[(what, size, target.label)] = [value]
                figures.times[("cold-fetch", size, target.label)] = [fetch]
                if before is not None and selected is not None and fetched is not None:
                    figures.memory["selected"] = selected - before
                    figures.memory["fetched"] = fetched - before
                return True

            if guarded("the cold pass", target, cold) is None and target.label == "ours":
                print("  ours is left out of every later section")
                targets = [t for t in targets if t.label != "ours"]
    # 2. Metadata, warm; 3. SELECT alone, warm; 4. bulk bodies.
    for what, reps, function in (
        ("meta", META_REPS, _client_metadata),
        ("select", SELECT_REPS, _client_select),
        ("body", BODY_REPS, _client_bodies),
    ):
        for size in SIZES:
            section = f"{what} {size:,}"
            active = list(targets)

            def measure(
                target: Target, size: int = size, function: Callable = function, section=section
            ) -> float:
                value = guarded(section, target, lambda: target.on(size, function, INBOXES[size]))
                return float("nan") if value is None else value

            for label, values in _interleaved(active, reps[size], measure).items():
                kept = [v for v in values if v == v]
                if kept and not (label == "ours" and section in figures.failed):
                    figures.times[(what, size, label)] = kept
    # 5. IDLE latency, one server after the other.
    for target in targets:
        guarded("IDLE", target, lambda target=target: _idle_series(target, figures))
    # 6. APPEND with stock imaplib, rounds alternating between the servers.
    appended: dict[str, int] = {t.label: 0 for t in targets}

    def append_round(target: Target) -> float:
        def one_round() -> list[float]:
            first = appended[target.label]
            times = target.on("append", _client_append, APPEND_PER_ROUND, first)
            appended[target.label] += APPEND_PER_ROUND
            return times

        values = guarded("APPEND", target, one_round)
        if values is not None:
            figures.times.setdefault(("append", 0, target.label), []).extend(values)
        return 0.0

    _interleaved(targets, APPEND_ROUNDS, append_round)
    if "APPEND" in figures.failed:
        figures.times.pop(("append", 0, "ours"), None)


def _idle_series(target: Target, figures: Figures) -> bool:
    """Deliver a message each time the client says it is idling; note the latencies."""
    samples = IDLE_SAMPLES[target.label]
    deliver = target.deliver
    assert deliver is not None
    with socket.create_server((LOOPBACK, 0)) as listener:
        listener.settimeout(0.2)
        port, user, password = target.logins["idle"]
        job = target.client.submit(
            _client_idle, port, user, password, listener.getsockname()[1], samples
        )
        deadline = time.monotonic() + CONTROL_TIMEOUT
        control = None
        while control is None:
            try:
                control, _ = listener.accept()
            except TimeoutError:
                if job.done():
                    job.result()  # raises what went wrong in the client
                    raise RuntimeError("the IDLE client ended before it connected") from None
                if time.monotonic() > deadline:
                    raise RuntimeError("the IDLE client did not connect") from None
        delivered: list[float] = []
        calls: list[float] = []
        with control, control.makefile("rb") as words:
            control.settimeout(CONTROL_TIMEOUT)
            for number in range(samples):
                word = words.readline()
                if word != b"ready\n":
                    break  # "done" (too many lost samples) or the client failed
                time.sleep(IDLE_PAUSE)
                start = time.monotonic()
                deliver(_IDLE_MESSAGE, number)
                end = time.monotonic()
                delivered.append(end)
                calls.append(end - start)
            seen = job.result(timeout=CONTROL_TIMEOUT)
    latencies = [
        IDLE_WAIT if when is None else when - at for when, at in zip(seen, delivered, strict=False)
    ]
    figures.idle[target.label] = latencies
    figures.deliver_call[target.label] = calls
    figures.idle_lost[target.label] = sum(1 for when in seen if when is None)
    return True


_IDLE_MESSAGE = (
    b"From: <alice@north.test>\r\nTo: <carol@south.test>\r\nSubject: IDLE benchmark\r\n"
    b"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-ID: <idle@north.test>\r\n\r\n"
    + b"A line of the IDLE benchmark message, long enough to be realistic.\r\n"
    * 30
)


# -- the report ---------------------------------------------------------------------------

ROWS = [
    ("cold-login", "cold connect+LOGIN"),
    ("cold-select", "cold SELECT INBOX"),
    ("cold-fetch", "cold UID FETCH (FLAGS RFC822.SIZE)"),
    ("meta", "metadata: connect..UID FETCH"),
    ("select", "SELECT INBOX, warm"),
    ("body", "FETCH 1:* BODY.PEEK[]"),
]


def _report(
    figures: Figures, labels: list[str], why_not: str | None, why_not_ours: str | None
) -> Result:
    def base(what: str, size: object) -> float | None:
        if why_not is None:
            return figures.med(what, size, "dovecot")
        return REFERENCE.get((what, size))

    base_name = "Dovecot" if why_not is None else "reference"
    print(f"  {'messages':>8}  {'':<36} {'ours':>11} {base_name:>11} {'ratio':>8}")
    for size in SIZES:
        for what, title in ROWS:
            ours, theirs = figures.med(what, size, "ours"), base(what, size)
            ratio = "—" if ours is None or theirs is None else times_text(ours / theirs)
            count = len(figures.times.get((what, size, "ours" if ours else "dovecot"), []))
            line = f"{seconds_text(ours):>11} {seconds_text(theirs):>11} {ratio:>8}"
            print(f"  {size:>8,}  {title:<36} {line}  n={count}")
    ours_append, theirs_append = figures.med("append", 0, "ours"), base("append", 0)
    ratio_text = "—"
    if ours_append is not None and theirs_append is not None:
        ratio_text = times_text(ours_append / theirs_append)
    count = len(figures.times.get(("append", 0, "ours" if ours_append else "dovecot"), []))
    line = f"{seconds_text(ours_append):>11} {seconds_text(theirs_append):>11} {ratio_text:>8}"
    print(f"  {'':>8}  {'APPEND ~2 KiB, stock imaplib':<36} {line}  n={count}")
    for label in labels:
        values = figures.idle.get(label)
        if not values:
            continue
        calls = figures.deliver_call[label]
        print(
            f"  IDLE {label:<8} delivery -> EXISTS: p50 {ms(percentile(values, 50))}, "
            f"p99 {ms(percentile(values, 99))}, max {ms(max(values))} "
            f"(n={len(values)}, lost {figures.idle_lost[label]}); "
            f"the delivery itself took p50 {ms(percentile(calls, 50))}"
        )
    print(
        "  bodies per message (median FETCH / messages): "
        + ", ".join(
            f"{label} {size // 1000}k {value / size * 1e6:.1f} us"
            for size in SIZES
            for label in labels
            if (value := figures.med("body", size, label)) is not None
        )
    )
    if figures.memory:
        print(
            f"  memory of this process (our server) with the {LARGE:,}-message INBOX selected: "
            f"+{figures.memory['selected'] / MB:.1f} MB after SELECT, "
            f"+{figures.memory['fetched'] / MB:.1f} MB after UID FETCH"
        )
    if ours_append is not None and ours_append > APPEND_WARNING:
        print(
            f"  WARNING: ours takes {ms(ours_append)} per imaplib APPEND (> {ms(APPEND_WARNING)}; "
            f"{base_name} {seconds_text(theirs_append)}): the Nagle / delayed-ACK stall? "
            "See reference-servers.md (TCP_QUICKACK after each read)"
        )

    checks: list[tuple[str, bool]] = []
    summary: list[str] = []
    for what, floor, short in (("meta", META_FLOOR, "metadata"), ("body", BODY_FLOOR, "bodies")):
        ratios = []
        for size in SIZES:
            ours, theirs = figures.med(what, size, "ours"), base(what, size)
            name = f"{short} {size // 1000}k"
            if ours is None or theirs is None:
                checks.append(
                    (f"{name}: not measured ({_why(figures, f'{what} {size:,}')})", False)
                )
                continue
            ratio = ours / theirs
            ratios.append(times_text(ratio))
            checks.append((f"{name}: {ratio:.2f}x <= {floor}x {base_name}", ratio <= floor))
        if ratios:
            summary.append(f"{short} {'/'.join(ratios)}")
    select = figures.med("select", LARGE, "ours")
    if select is None:
        checks.append((f"SELECT 20k: not measured ({_why(figures, f'select {LARGE:,}')})", False))
    else:
        text = f"SELECT 20k: {ms(select)} <= {ms(SELECT_FLOOR)}"
        checks.append((text, select <= SELECT_FLOOR))
        summary.append(f"SELECT 20k {ms(select)}")
    idle = figures.idle.get("ours")
    if not idle:
        checks.append((f"IDLE p99: not measured ({_why(figures, 'IDLE')})", False))
    else:
        p99 = percentile(idle, 99)
        lost = figures.idle_lost["ours"]
        complete = len(idle) == IDLE_SAMPLES["ours"] and lost == 0
        text = f"IDLE p99: {ms(p99)} <= {ms(IDLE_FLOOR)} (n={len(idle)}, lost {lost})"
        checks.append((text, p99 <= IDLE_FLOOR and complete))
        summary.append(f"IDLE p99 {ms(p99)}")
    if "fetched" not in figures.memory:
        checks.append(("memory: not measured", False))
    else:
        grown = max(figures.memory["selected"], figures.memory["fetched"])
        text = f"memory, 20k INBOX selected: +{grown / MB:.1f} MB <= {MEMORY_FLOOR / MB:.0f} MB"
        checks.append((text, grown <= MEMORY_FLOOR))
        summary.append(f"RSS +{grown / MB:.1f} MB")
    if ours_append is not None:
        summary.append(f"APPEND {ms(ours_append)}")
    print("  floors:")
    for text, passed in checks:
        print(f"    {'ok  ' if passed else 'FAIL'} {text}")
    if why_not is not None:
        print(f"  NOTE: no same-run Dovecot ({why_not}); ratios are against reference-servers.md")
    if why_not_ours is not None:
        print(f"  NOTE: ours was not measured: {why_not_ours}")
    for section, why in figures.failed.items():
        print(f"  NOTE: ours failed in {section}: {why}")
    result = Result(
        name="IMAP vs Dovecot",
        floor=(
            f"metadata <= {META_FLOOR}x, bodies <= {BODY_FLOOR}x {base_name} at 2k and 20k; "
            f"SELECT 20k <= {SELECT_FLOOR * 1e3:.0f} ms; IDLE p99 <= {IDLE_FLOOR * 1e3:.0f} ms; "
            f"RSS <= {MEMORY_FLOOR / MB:.0f} MB"
        ),
        passed=why_not_ours is None and all(passed for _, passed in checks),
        summary=(
            f"vs {base_name}: " + ", ".join(summary)
            if summary
            else f"ours not measured ({why_not_ours or _why(figures, 'the cold pass')})"
        ),
    )
    result.print()
    return result


def _why(figures: Figures, section: str) -> str:
    """Why a figure of ours is missing, for the floors' lines."""
    for failed in ("the cold pass", section):
        if failed in figures.failed:
            return f"failed in {failed}: {figures.failed[failed]}"
    return "no server"


if __name__ == "__main__":
    run()
