"""Benchmark 2: one cross-domain message, from submission to the recipient's Maildir.

What it measures
    Ours: alice@north.test submits one ~1.2 KiB message to carol@south.test with
    smtplib on a new connection (connect, EHLO, AUTH PLAIN, MAIL, RCPT, DATA, QUIT) at
    ``msa.north.test``. The MSA queues it (fsynced), looks up south.test's MX in the lab
    DNS and relays it over SMTP to ``mx.south.test``, which stores it in carol's Maildir
    (fsynced). The clock starts before ``connect`` and stops when both the client's QUIT
    has returned and a new file is in carol's ``new/`` (counted with ``os.scandir``
    every 0.2 ms).

    Baseline: one smtplib transaction (connect, EHLO, MAIL, RCPT, DATA, QUIT) to a bare
    aiosmtpd server whose ``handle_DATA`` does ``mailbox.Maildir(path).add()``
    (``_common.BareMaildirServer``), timed end to end; when QUIT returns the message is
    on disk already.

Why the baseline is fair
    Both servers run on a background asyncio loop in this same process (as the lab does
    in a notebook kernel), on 127.0.0.1, with the same client library, message, and
    filesystem (both Maildirs live under the system temporary folder). The baseline is
    what "an aiosmtpd server that writes a Maildir" costs here and now, so the ratio
    is the price of everything the lab adds: AUTH, the fsynced queue, two DNS queries, a
    second SMTP hop, and the MDA's fsyncs of the file, its directory and the uid list.

How to read it
    Three repetitions; each runs a block of baseline transactions then a block of ours
    (interleaved so both see the same machine load). p50 and p99 are per repetition;
    the reported figure is the median over repetitions, and so is each ratio. Floors:
    ours p50 <= 4x baseline p50, ours p99 <= 6x baseline p99.
"""

from __future__ import annotations

import time

from _common import (
    BareMaildirServer,
    Result,
    count_files,
    header,
    median,
    message,
    ms,
    percentile,
    smtp_transaction,
)

import mailkit_edu

REPETITIONS = 3
MESSAGES = 150  # per repetition and per server
WARMUP = 5
POLL = 0.0002  # seconds between two looks at new/
DELIVERY_TIMEOUT = 30.0  # seconds one message may take before the benchmark gives up
P50_FLOOR, P99_FLOOR = 4.0, 6.0
SENDER, RECIPIENT = "alice@north.test", "carol@south.test"


def _baseline_block(server: BareMaildirServer, count: int) -> list[float]:
    times = []
    for number in range(count):
        data = message(SENDER, RECIPIENT, number)
        start = time.perf_counter()
        smtp_transaction(server.port, SENDER, RECIPIENT, data)
        times.append(time.perf_counter() - start)
    return times


def _lab_block(lab: mailkit_edu.Lab, count: int) -> list[float]:
    port = lab.port("msa.north.test")
    login = (SENDER, lab.account(SENDER).password)
    new = lab.store.maildir_path(RECIPIENT) / "new"
    times = []
    for number in range(count):
        data = message(SENDER, RECIPIENT, number)
        before = count_files(new)
        start = time.perf_counter()
        smtp_transaction(port, SENDER, RECIPIENT, data, login=login)
        deadline = start + DELIVERY_TIMEOUT
        while count_files(new) <= before:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"message {number} not delivered after {DELIVERY_TIMEOUT} s")
            time.sleep(POLL)
        times.append(time.perf_counter() - start)
    return times


def run() -> Result:
    header(f"2. Submit -> recipient's Maildir, {REPETITIONS} x {MESSAGES} messages each")
    rows = []  # (base p50, base p99, ours p50, ours p99)
    with BareMaildirServer() as bare, mailkit_edu.start_lab() as lab:
        _baseline_block(bare, WARMUP)
        _lab_block(lab, WARMUP)
        for repetition in range(REPETITIONS):
            base = _baseline_block(bare, MESSAGES)
            ours = _lab_block(lab, MESSAGES)
            row = (
                percentile(base, 50),
                percentile(base, 99),
                percentile(ours, 50),
                percentile(ours, 99),
            )
            rows.append(row)
            print(
                f"  rep {repetition + 1}: bare aiosmtpd p50 {ms(row[0])} p99 {ms(row[1])} | "
                f"lab p50 {ms(row[2])} p99 {ms(row[3])} | "
                f"ratio p50 {row[2] / row[0]:.1f}x p99 {row[3] / row[1]:.1f}x"
            )
    base50, base99 = median([r[0] for r in rows]), median([r[1] for r in rows])
    ours50, ours99 = median([r[2] for r in rows]), median([r[3] for r in rows])
    ratio50 = median([r[2] / r[0] for r in rows])
    ratio99 = median([r[3] / r[1] for r in rows])
    print(f"  baseline (bare aiosmtpd -> Maildir): p50 {ms(base50)}, p99 {ms(base99)}")
    print(f"  lab (MSA -> queue -> DNS -> MX -> Maildir): p50 {ms(ours50)}, p99 {ms(ours99)}")
    print(
        f"  ratios (median of reps): p50 {ratio50:.1f}x (floor {P50_FLOOR}x), "
        f"p99 {ratio99:.1f}x (floor {P99_FLOOR}x)"
    )
    print("  reference-servers.md: bare aiosmtpd into mailbox.Maildir p50 ~2.5 ms on this kind")
    result = Result(
        name="submit -> Maildir",
        floor=f"p50 <= {P50_FLOOR}x and p99 <= {P99_FLOOR}x bare aiosmtpd Maildir",
        passed=ratio50 <= P50_FLOOR and ratio99 <= P99_FLOOR,
        summary=(
            f"p50 {ms(ours50)} vs {ms(base50)} = {ratio50:.1f}x; "
            f"p99 {ms(ours99)} vs {ms(base99)} = {ratio99:.1f}x"
        ),
    )
    result.print()
    return result


if __name__ == "__main__":
    run()
