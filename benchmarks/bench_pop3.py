"""Benchmark 5: the lab's POP3 server against Dovecot's, with 2,000 and 20,000 messages.

What it measures
    Four maildrops per server, made of the *same* files: 2,000 and 20,000 plain-text
    messages of about 2 KiB (1.5-2.5 KiB) with CRLF line ends, one in five with lines
    that start with "." (so the server has to dot-stuff). Each message is written once
    into a pool and hard-linked into every maildrop (writing 88,000 files takes ~20 s
    on this disk, a link 30 us), named as a delivery agent names it
    (``<time>.M<n>P4242Q<n>.bench,S=<size>,W=<size>``, so neither server has to open a
    file to learn its size). Two maildrops hold *unread* mail (files in ``new/``) and
    two hold mail *read before* (files in ``cur/`` as ``<name>:2,S``). With stock
    ``poplib`` as the client of both servers, the same client code times:

    * **login + STAT + LIST**: from ``connect`` through USER, PASS, STAT and the whole
      LIST reply (QUIT not timed), cold (the first login into a maildrop) and warm
      (later logins into the unread maildrop, 9 times at 2,000 and 5 at 20,000).
    * **first RETR pass over unread mail**: one connection, RETR 1, RETR 2, ... RETR N
      one after another, then QUIT, with each message checked byte for byte (after
      the clock). It can happen once per maildrop, so it is one sample; a pass still
      running after 4 s is cut there and projected to N messages (seconds per RETR
      times N, plus QUIT: each RETR costs the same all through a pass).
    * **RETR all over mail read before**: the same pass over the read maildrops, where
      no flag changes, repeated (5 times at 2,000, 3 at 20,000) after one untimed
      pass at 2,000 that checks every byte.

    QUIT is part of a RETR pass because both servers mark the retrieved messages
    \\Seen at QUIT, all at once (each file is renamed into ``cur/``). Login and STAT
    before the first RETR are not timed.

    Ours: ``pop3.north.test`` and ``pop3.south.test`` of a lab started with
    ``start_lab(path=...)``; the files are linked into the accounts' INBOX Maildirs.
    The server runs on the lab's asyncio loop in a background thread of this
    process. The poplib client runs in a separate process (a one-worker process
    pool), for both servers alike.

    Baseline: Dovecot 2.3 (Debian's ``dovecot-core`` + ``dovecot-pop3d``; installed
    with apt-get if ``/usr/sbin/dovecot`` is missing), started for this run from a
    config in the temporary folder as in ``/work/shared/docs/reference-servers.md``:
    loopback only, ``ssl = no``, plaintext login, ``pop3_uidl_format = %08Xu%08Xv``,
    ``pop3_lock_session = yes``, Maildirs owned by uid 65534; stopped with ``doveadm
    stop`` in a ``finally`` (and on SIGTERM). The messages, the pool and the Dovecot
    helpers are in ``_dovecot.py``, shared with ``bench_imap.py``.

Why the baseline is fair
    Same machine, same run, same filesystem and even the same inodes (so the page
    cache treats both alike), same client code, and the repetitions alternate between
    the servers so the machine's noise hits both. Dovecot is the server people run;
    the floors come from the issue. The client lives in its own process for both
    servers, as Dovecot's clients always do: with poplib in the lab's process (as in
    a notebook) every command also costs a GIL hand-over between the client's thread
    and the server's, which measures where the client sits, not the server (on
    2026-11-26 that made our RETR passes about 1.3x slower).

Cold and warm logins
    The first login into a maildrop is cold: our store lists ``new/`` and ``cur/``,
    ``stat``s each file once and numbers it (``mailkit-uidlist``); Dovecot syncs the
    Maildir and builds its index (``dovecot.index*``, ``dovecot-uidlist``). Both keep
    that index and later only check it against the folders' mtimes: that warm login
    is what a mail client meets every time it polls, and the login floor applies to
    it. The cold figures are one sample each and have no floor. Before the first
    login the benchmark waits until the folders' mtimes are more than 2 s old,
    because our store trusts an mtime only then (``MTIME_GRACE_SECONDS``): a maildrop
    written a moment ago is listed again at every login, by design.

How to read it
    Figures are medians of their repetitions; each ratio is ours / Dovecot. Floors,
    from the issue: warm login + STAT + LIST <= 3x Dovecot and RETR all <= 2x Dovecot
    (applied to both RETR passes), at 2,000 and at 20,000 messages; and the cost must
    grow linearly: the 20k / 2k ratio of each figure is printed for both servers, and
    ours must stay <= 15 (10x the messages, with 1.5x slack). A login grows less
    than 10x because connecting and logging in cost the same at both sizes. Below
    the table: each first pass in detail (RETRs, ms per RETR, QUIT) and the cost of
    one RETR on mail read before. If Dovecot cannot be installed or started, ours is
    printed next to the reference figures of reference-servers.md (there is none for
    the 20,000-message login) and the verdict uses those.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import poplib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from _common import LOOPBACK, Result, header, median, ms, seconds_text, times_text
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

_T = TypeVar("_T")
SMALL, LARGE = 2_000, 20_000
SIZES = (SMALL, LARGE)
LOGIN_REPS = {SMALL: 9, LARGE: 5}
RETR_REPS = {SMALL: 5, LARGE: 3}
#: Seconds of RETR each server gets on an unread maildrop; a pass cut short is projected.
FIRST_PASS_BUDGET = 4.0
LOGIN_FLOOR, RETR_FLOOR, GROWTH_FLOOR = 3.0, 2.0, 15.0
#: Reference figures (reference-servers.md), used only when Dovecot is unavailable.
REFERENCE = {("login", SMALL): 0.015, ("retr", SMALL): 0.25, ("retr", LARGE): 2.45}
#: Seconds any single POP3 command may take before poplib gives up.
CLIENT_TIMEOUT = 60.0
#: A maildrop still locked by the previous session (its QUIT is still being processed).
LOCK_RETRIES, LOCK_PAUSE = 100, 0.02


@dataclass(frozen=True)
class Maildrop:
    """One maildrop, the same files on both servers."""

    address: str  # our account
    user: str  # the Dovecot user
    size: int
    #: False: the files are in new/ (unread mail); True: in cur/ as "<name>:2,S" (read before).
    read: bool


MAILDROPS = [
    Maildrop("carol@south.test", "new2k", SMALL, read=False),
    Maildrop("dave@south.test", "new20k", LARGE, read=False),
    Maildrop("alice@north.test", "read2k", SMALL, read=True),
    Maildrop("bob@north.test", "read20k", LARGE, read=True),
]

# -- the client: the same code for both servers -------------------------------------------


class Locked(Exception):
    """The maildrop is still locked by the previous session (RFC 1939 section 8)."""


def _login(port: int, user: str, password: str) -> poplib.POP3:
    client = poplib.POP3(LOOPBACK, port, timeout=CLIENT_TIMEOUT)
    try:
        client.user(user)
        client.pass_(password)
    except poplib.error_proto as error:
        client.close()
        text = str(error).lower()
        if "in-use" in text or "lock" in text:
            raise Locked(str(error)) from error
        raise
    except BaseException:
        client.close()
        raise
    return client


def _quit(client: poplib.POP3) -> None:
    try:
        client.quit()
    except (poplib.error_proto, OSError):
        client.close()


def _retrying(attempt: Callable[[], _T]) -> _T:
    """Run ``attempt`` again (after an untimed pause) while the maildrop is still locked."""
    for _ in range(LOCK_RETRIES):
        try:
            return attempt()
        except Locked:
            time.sleep(LOCK_PAUSE)
    raise RuntimeError(f"maildrop still locked after {LOCK_RETRIES} attempts")


def login_stat_list(port: int, user: str, password: str, expected: int) -> float:
    """Seconds for connect + USER + PASS + STAT + LIST (the whole listing); QUIT untimed."""

    def attempt() -> float:
        start = time.perf_counter()
        client = _login(port, user, password)
        try:
            count, _ = client.stat()
            _, listing, _ = client.list()
            elapsed = time.perf_counter() - start
        finally:
            _quit(client)
        if count != expected or len(listing) != expected:
            raise RuntimeError(f"{user}: STAT {count}, LIST {len(listing)}, expected {expected}")
        return elapsed

    return _retrying(attempt)


@dataclass
class Pass:
    """One RETR pass: seconds of RETR, messages retrieved, seconds of the QUIT after them."""

    retr: float
    done: int
    quit: float

    @property
    def seconds(self) -> float:
        """RETR and QUIT: Dovecot marks the messages \\Seen at QUIT, ours at each RETR."""
        return self.retr + self.quit

    def whole(self, size: int) -> float:
        """The pass over all ``size`` messages (projected if it was cut short)."""
        return self.retr / self.done * size + self.quit


def retr_all(
    port: int,
    user: str,
    password: str,
    messages: list[bytes],
    *,
    check: bool = False,
    budget: float | None = None,
) -> Pass:
    """RETR 1, RETR 2, ... one after another on one logged-in connection, then QUIT.

    Login and STAT are not timed; the RETRs and the QUIT are, separately. With
    ``budget`` (seconds), the pass stops after the RETR that went past it. After a
    whole pass the octets must add up to the messages' sizes; with ``check``, each
    message must come back byte for byte (compared after the clock stopped).
    """

    def attempt() -> Pass:
        client = _login(port, user, password)
        try:
            count, _ = client.stat()
            if count != len(messages):
                raise RuntimeError(f"{user}: STAT says {count}, expected {len(messages)}")
            kept: list[list[bytes]] = []
            octets = 0
            done = 0
            start = time.perf_counter()
            deadline = start + budget if budget is not None else float("inf")
            for number in range(1, count + 1):
                _, lines, size = client.retr(number)
                octets += size
                done = number
                if check:
                    kept.append(lines)
                if time.perf_counter() > deadline:
                    break
            retr = time.perf_counter() - start
            start = time.perf_counter()
            client.quit()
            quit_seconds = time.perf_counter() - start
        finally:
            client.close()
        if done == count and octets != sum(map(len, messages)):
            raise RuntimeError(f"{user}: {octets} octets retrieved, not {sum(map(len, messages))}")
        if check:
            known = {digest(m) for m in messages}
            seen = {digest(b"\r\n".join(lines) + b"\r\n") for lines in kept}
            if len(seen) != done or not seen <= known:
                raise RuntimeError(f"{user}: {len(seen - known)} messages came back altered")
        return Pass(retr, done, quit_seconds)

    return _retrying(attempt)


# -- the benchmark ------------------------------------------------------------------------


# The client runs in a process of its own, for both servers: Dovecot's processes never
# share an interpreter with poplib, so ours should not either. (In a notebook the
# student's poplib does share the kernel with the lab; that costs the lab one GIL
# hand-over per command, which is the client's placement, not the server's speed.)
_CLIENT_MESSAGES: list[bytes] = []


def _client_start() -> None:
    """In the client process: make the same messages (same seed) to check against."""
    _CLIENT_MESSAGES[:] = make_messages(LARGE)


def _client_login(port: int, user: str, password: str, size: int) -> float:
    return login_stat_list(port, user, password, size)


def _client_retr(port: int, user: str, password: str, size: int, options: dict) -> Pass:
    return retr_all(port, user, password, _CLIENT_MESSAGES[:size], **options)


@dataclass
class Target:
    """One server as the client sees it: for each maildrop, (port, user, password)."""

    label: str
    client: concurrent.futures.Executor
    logins: dict[Maildrop, tuple[int, str, str]] = field(default_factory=dict)

    def login(self, drop: Maildrop) -> float:
        port, user, password = self.logins[drop]
        return self.client.submit(_client_login, port, user, password, drop.size).result()

    def retr(self, drop: Maildrop, messages: list[bytes], **options) -> Pass:
        port, user, password = self.logins[drop]
        job = self.client.submit(_client_retr, port, user, password, drop.size, options)
        return job.result()


def _maildrop(size: int, *, read: bool) -> Maildrop:
    return next(d for d in MAILDROPS if d.size == size and d.read == read)


def _interleaved(
    targets: list[Target], reps: int, measure: Callable[[Target], float]
) -> dict[str, list[float]]:
    """``reps`` measurements of each target, alternating (A B, B A, A B, ...)."""
    times: dict[str, list[float]] = {t.label: [] for t in targets}
    for repetition in range(reps):
        for target in targets if repetition % 2 == 0 else targets[::-1]:
            times[target.label].append(measure(target))
    return times


def run() -> Result:
    header(f"5. POP3 with poplib: {SMALL:,} and {LARGE:,} messages, ours vs Dovecot")
    started = time.perf_counter()
    messages = make_messages(LARGE)
    names = file_names(messages)
    sizes = [len(m) for m in messages]
    print(
        f"  messages: {min(sizes)}-{max(sizes)} octets (mean {sum(sizes) // len(sizes)}), "
        f"CRLF, 1 in 5 with lines that start with '.'"
    )
    root = Path(tempfile.mkdtemp(prefix="bench-pop3-"))
    os.chmod(root, 0o755)  # Dovecot's processes (uid 65534, dovecot) must get through it
    dovecot = Dovecot(root / "dovecot", protocols=("pop3",))
    why_not = ensure_dovecot(("pop3",))
    with sigterm_raises():
        client = concurrent.futures.ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn"), initializer=_client_start
        )
        try:
            with mailkit_edu.start_lab(path=root / "lab") as lab:
                pool = root / "pool"
                write_pool(pool, names, messages, DOVECOT_UID if os.geteuid() == 0 else None)
                ours = Target("ours", client)
                written = []
                for drop in MAILDROPS:
                    port = lab.port(f"pop3.{drop.address.rpartition('@')[2]}")
                    ours.logins[drop] = (port, drop.address, lab.account(drop.address).password)
                    maildir = lab.store.maildir_path(drop.address)
                    files = names[: drop.size]
                    written.append(link_maildrop(pool, maildir, files, read=drop.read))
                targets = [ours]
                if why_not is None:
                    try:
                        dovecot.prepare([drop.user for drop in MAILDROPS])
                        theirs = Target("dovecot", client)
                        port = dovecot.ports["pop3"]
                        for drop in MAILDROPS:
                            theirs.logins[drop] = (port, drop.user, DOVECOT_PASSWORD)
                            maildir = dovecot.maildir(drop.user)
                            files = names[: drop.size]
                            written.append(link_maildrop(pool, maildir, files, read=drop.read))
                        dovecot.start()
                    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
                        why_not = f"Dovecot could not be started: {error}"
                    else:
                        targets.append(theirs)
                        print(f"  Dovecot {dovecot.version()} on 127.0.0.1:{port}")
                if why_not is not None:
                    print(f"  NOTE: {why_not}; ours is compared with the reference figures")
                count = sum(d.size for d in MAILDROPS) * len(targets)
                print(
                    f"  {len(names):,} files written, {count:,} links made "
                    f"({time.perf_counter() - started:.1f} s since the start)"
                )
                settle(written)
                figures, passes = _measure(targets, messages)
        finally:
            client.shutdown(cancel_futures=True)
            dovecot.stop()
            shutil.rmtree(root, ignore_errors=True)
    result = _report(figures, passes, [t.label for t in targets], why_not)
    print(f"  ({time.perf_counter() - started:.0f} s in all)")
    return result


def _measure(
    targets: list[Target], messages: list[bytes]
) -> tuple[dict[tuple[str, int, str], list[float]], dict[tuple[int, str], Pass]]:
    """Every timing, as {(what, size, server): [seconds, ...]}, and the first passes."""
    figures: dict[tuple[str, int, str], list[float]] = {}
    # 1. Cold: the first login into each maildrop (one each, alternating servers).
    for drop in MAILDROPS:
        for target in targets:
            what = "cold-read" if drop.read else "cold-new"
            figures[(what, drop.size, target.label)] = [target.login(drop)]
    # 2. Warm logins into the unread maildrops.
    for size in SIZES:
        drop = _maildrop(size, read=False)
        for label, values in _interleaved(
            targets, LOGIN_REPS[size], lambda t, d=drop: t.login(d)
        ).items():
            figures[("login", size, label)] = values
    # 3. The first RETR pass over unread mail (each message comes back byte for byte).
    passes: dict[tuple[int, str], Pass] = {}
    for size in SIZES:
        drop = _maildrop(size, read=False)
        for target in targets:
            result = target.retr(drop, messages, check=True, budget=FIRST_PASS_BUDGET)
            passes[(size, target.label)] = result
            figures[("first", size, target.label)] = [result.whole(size)]
    # 4. RETR all over mail read before: one untimed pass that checks every byte, then timed.
    for target in targets:
        target.retr(_maildrop(SMALL, read=True), messages, check=True)
    for size in SIZES:
        drop = _maildrop(size, read=True)
        reps = RETR_REPS[size]
        for label, values in _interleaved(
            targets, reps, lambda t, d=drop: t.retr(d, messages).seconds
        ).items():
            figures[("retr", size, label)] = values
    return figures, passes


ROWS = [
    ("cold-new", "cold login+STAT+LIST, unread"),
    ("cold-read", "cold login+STAT+LIST, read"),
    ("login", "warm login+STAT+LIST"),
    ("first", "first RETR pass, unread"),
    ("retr", "RETR all, read before"),
]


def _report(
    figures: dict[tuple[str, int, str], list[float]],
    passes: dict[tuple[int, str], Pass],
    labels: list[str],
    why_not: str | None,
) -> Result:
    def med(what: str, size: int, label: str) -> float | None:
        values = figures.get((what, size, label))
        return median(values) if values else None

    def base(what: str, size: int) -> float | None:
        if why_not is None:
            return med(what, size, "dovecot")
        return REFERENCE.get(("retr" if what == "first" else what, size))

    base_name = "Dovecot" if why_not is None else "reference"
    print(f"  {'messages':>8}  {'':<30} {'ours':>11} {base_name:>11} {'ratio':>8}")
    for size in SIZES:
        for what, title in ROWS:
            ours, theirs = med(what, size, "ours"), base(what, size)
            ratio = "—" if ours is None or theirs is None else times_text(ours / theirs)
            note = f"n={len(figures.get((what, size, 'ours'), []))}"
            if what == "first":
                cut = passes[(size, "ours")]
                note = "n=1" if cut.done == size else f"projected from {cut.done:,} RETR"
            line = f"{seconds_text(ours):>11} {seconds_text(theirs):>11} {ratio:>8}"
            print(f"  {size:>8,}  {title:<30} {line}  {note}")
    print("  first pass over unread mail, in detail (RETR, then QUIT):")
    for (size, label), one in passes.items():
        print(
            f"    {size:>6,} {label:<8} {one.done:>6,} RETR in {seconds_text(one.retr)} "
            f"({one.retr / one.done * 1e3:.3f} ms each), QUIT {ms(one.quit)}"
        )
    print(
        "  RETR + QUIT per message, read before (median pass / messages): "
        + ", ".join(
            f"{label} {size // 1000}k {value / size * 1e3:.3f} ms"
            for size in SIZES
            for label in labels
            if (value := med("retr", size, label)) is not None
        )
    )
    checks: list[tuple[str, bool]] = []
    summary: list[str] = []
    for what, floor, short in (
        ("login", LOGIN_FLOOR, "login"),
        ("first", RETR_FLOOR, "RETR unread"),
        ("retr", RETR_FLOOR, "RETR read"),
    ):
        ratios = []
        for size in SIZES:
            ours, theirs = med(what, size, "ours"), base(what, size)
            if ours is None or theirs is None:
                continue
            ratio = ours / theirs
            ratios.append(times_text(ratio))
            checks.append((f"{short} {size // 1000}k: {ratio:.2f}x <= {floor}x", ratio <= floor))
        summary.append(f"{short} {'/'.join(ratios)}")
    print(f"  growth {LARGE // 1000}k / {SMALL // 1000}k (10x the messages):")
    for what, title in (("login", "warm login"), ("first", "RETR unread"), ("retr", "RETR read")):
        parts = []
        for label in labels:
            small, large = med(what, SMALL, label), med(what, LARGE, label)
            if small and large:
                parts.append(f"{label} {large / small:.1f}x")
                if label == "ours":
                    growth = large / small
                    text = f"{title} growth: {growth:.1f}x <= {GROWTH_FLOOR}x"
                    checks.append((text, growth <= GROWTH_FLOOR))
        print(f"    {title:<12} " + ", ".join(parts))
    print("  floors:")
    for text, passed in checks:
        print(f"    {'ok  ' if passed else 'MISS'} {text}")
    if why_not is not None:
        print(f"  NOTE: no same-run Dovecot ({why_not}); ratios are against reference-servers.md")
    result = Result(
        name="POP3 vs Dovecot",
        floor=(
            f"login+STAT+LIST <= {LOGIN_FLOOR}x, RETR all <= {RETR_FLOOR}x {base_name} "
            f"at 2k and 20k; 20k/2k <= {GROWTH_FLOOR}x"
        ),
        passed=all(passed for _, passed in checks),
        summary=f"2k/20k vs {base_name}: " + ", ".join(summary),
    )
    result.print()
    return result


if __name__ == "__main__":
    run()
