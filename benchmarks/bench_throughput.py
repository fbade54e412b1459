"""Benchmark 3: submission throughput with 8 concurrent clients, every message delivered.

What it measures
    8 client threads share a budget of 400 messages; each thread takes the next number
    and runs one complete smtplib transaction per message on a new connection, until the
    budget is spent. Thread ``i`` plays flow ``i % 4``: alice->carol and bob->dave
    (submitted at msa.north.test, relayed to mx.south.test) and carol->alice and
    dave->bob (msa.south.test to mx.north.test), each with AUTH PLAIN. The clock runs
    from the first connect until every message is in its recipient's Maildir ``new/``
    (the four ``new/`` folders are counted every 2 ms once the clients are done).
    Throughput = 400 / that time.

    Baseline: the same 8 threads, the same flows and messages, without AUTH, against a
    bare aiosmtpd server whose ``handle_DATA`` does ``mailbox.Maildir(path).add()`` into
    a Maildir per recipient (``_common.BareMaildirServer``). Its clock stops when the
    last client's QUIT returns: by then every message is on disk.

Why the baseline is fair
    Same process, same client code and load shape, same filesystem, measured in the same
    run and interleaved with ours (baseline, lab, baseline, lab, ...), so the shared
    machine's noise hits both. The baseline writes once per message (one fsync, on the
    loop itself); ours queues (fsync of file and folder), relays over a second SMTP
    connection and stores (fsync of file and folder): the ratio is the price
    of those, plus AUTH, DNS and the transcript.

How to read it
    msg/s per repetition, then the median over 5 repetitions for each and the median of
    the per-repetition ratios. Floor: ours >= 50% of the baseline.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

from _common import (
    BareMaildirServer,
    Result,
    count_files,
    header,
    median,
    message,
    smtp_transaction,
    wait_for_count,
)

import mailkit_edu

REPETITIONS = 5
CLIENTS = 8
MESSAGES = 400  # per repetition and per server
RUN_TIMEOUT = 60.0  # seconds one repetition may take before the benchmark gives up
FLOOR = 0.5
FLOWS = [
    ("alice@north.test", "carol@south.test", "msa.north.test"),
    ("bob@north.test", "dave@south.test", "msa.north.test"),
    ("carol@south.test", "alice@north.test", "msa.south.test"),
    ("dave@south.test", "bob@north.test", "msa.south.test"),
]
RECIPIENTS = sorted({flow[1] for flow in FLOWS})


def _load(send, total: int) -> float:
    """Run ``send(thread_index, number)`` from CLIENTS threads for ``total`` numbers.

    Returns the time when the first thread started; raises the first client error.
    """
    numbers = itertools.count()
    errors: list[BaseException] = []
    deadline = time.perf_counter() + RUN_TIMEOUT

    def client(index: int) -> None:
        try:
            while not errors and time.perf_counter() < deadline:
                number = next(numbers)
                if number >= total:
                    return
                send(index, number)
        except BaseException as error:  # reported in the main thread
            errors.append(error)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(RUN_TIMEOUT)
    if errors:
        raise errors[0]
    if any(thread.is_alive() for thread in threads) or time.perf_counter() > deadline:
        raise TimeoutError(f"clients did not finish {total} messages in {RUN_TIMEOUT} s")
    return start


def _baseline_rate(server: BareMaildirServer, total: int) -> float:
    folders = [server.maildir_new(r) for r in RECIPIENTS]
    before = sum(count_files(f) for f in folders)

    def send(index: int, number: int) -> None:
        sender, recipient, _ = FLOWS[index % len(FLOWS)]
        smtp_transaction(server.port, sender, recipient, message(sender, recipient, number))

    start = _load(send, total)
    elapsed = time.perf_counter() - start
    if not wait_for_count(folders, before + total, timeout=5.0, pause=0.001):
        raise RuntimeError("the baseline server lost messages")
    return total / elapsed


def _lab_rate(lab: mailkit_edu.Lab, total: int, verbose: bool = True) -> float:
    folders: list[Path] = [lab.store.maildir_path(r) / "new" for r in RECIPIENTS]
    before = sum(count_files(f) for f in folders)
    ports = {name: lab.port(name) for _, _, name in FLOWS}
    passwords = {sender: lab.account(sender).password for sender, _, _ in FLOWS}

    def send(index: int, number: int) -> None:
        sender, recipient, msa = FLOWS[index % len(FLOWS)]
        data = message(sender, recipient, number)
        smtp_transaction(ports[msa], sender, recipient, data, login=(sender, passwords[sender]))

    start = _load(send, total)
    submitted = time.perf_counter() - start
    if not wait_for_count(folders, before + total, timeout=RUN_TIMEOUT, pause=0.002):
        raise TimeoutError(f"not all {total} messages were delivered within {RUN_TIMEOUT} s")
    elapsed = time.perf_counter() - start
    if verbose:
        print(
            f"    (lab: all submitted after {submitted:.2f} s, all delivered after {elapsed:.2f} s)"
        )
    return total / elapsed


def run() -> Result:
    header(f"3. Throughput, {CLIENTS} clients, {MESSAGES} messages, {REPETITIONS} repetitions")
    rows = []
    with BareMaildirServer() as bare, mailkit_edu.start_lab() as lab:
        _baseline_rate(bare, 16)  # warm-up
        _lab_rate(lab, 16, verbose=False)
        for repetition in range(REPETITIONS):
            base = _baseline_rate(bare, MESSAGES)
            ours = _lab_rate(lab, MESSAGES)
            rows.append((base, ours))
            print(
                f"  rep {repetition + 1}: bare aiosmtpd {base:.0f} msg/s | "
                f"lab {ours:.0f} msg/s | ratio {ours / base:.0%}"
            )
    base_rate = median([r[0] for r in rows])
    ours_rate = median([r[1] for r in rows])
    ratio = median([r[1] / r[0] for r in rows])
    print(f"  baseline (bare aiosmtpd -> Maildir): {base_rate:.0f} msg/s")
    print(f"  lab, submitted and delivered: {ours_rate:.0f} msg/s")
    print(f"  ratio (median of reps): {ratio:.0%} (floor {FLOOR:.0%})")
    print("  reference-servers.md: bare aiosmtpd, 8 clients, Maildir ~725 msg/s on this kind")
    result = Result(
        name="throughput, 8 clients",
        floor=f">= {FLOOR:.0%} of bare aiosmtpd Maildir msg/s",
        passed=ratio >= FLOOR,
        summary=f"{ours_rate:.0f} msg/s vs {base_rate:.0f} msg/s = {ratio:.0%}",
    )
    result.print()
    return result


if __name__ == "__main__":
    run()
