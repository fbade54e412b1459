"""Benchmark 1: how long ``start_lab()`` and ``lab.stop()`` take (import excluded).

What it measures
    ``mailkit_edu`` is imported first (not timed). Then, 10 times: ``start_lab()`` (a
    fresh temporary folder, the store with four accounts, the queue, the lab CA and
    its certificate, the loop thread, the DNS server and four SMTP servers listening)
    and ``lab.stop()`` (relay and servers closed, thread joined, folder removed), each
    timed with ``perf_counter``. The floor is on the median start time: <= 0.5 s.

Baseline (context only; the floor is absolute)
    In the same run, 10 times: a new asyncio loop in a new thread, four bare aiosmtpd
    ``SMTP`` listeners and a UDP + TCP listener pair on 127.0.0.1 port 0 (the lab's
    shape without its store, CA or queue), then closed and the thread joined. The ratio
    says how much of the lab's start is more than sockets and a thread on this machine.
    Two of the lab's start phases are also timed alone with the package's own classes,
    ``Store`` + ``add_account`` x4 and ``LabCA`` (key and certificate generation), so
    the report shows where start time goes.

How to read it
    Medians of 10; max shows the worst (the first start also warms caches). On a
    shared 2-core machine compare the ratio more than the absolute times.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
import time
from pathlib import Path

from _common import LOOPBACK, Result, header, median, ms
from aiosmtpd.smtp import SMTP

import mailkit_edu
from mailkit_edu.store import Store
from mailkit_edu.tls import LabCA

REPETITIONS = 10
FLOOR_SECONDS = 0.5
HOSTS = ["msa.north.test", "mx.north.test", "msa.south.test", "mx.south.test"]
ACCOUNTS = ["alice@north.test", "bob@north.test", "carol@south.test", "dave@south.test"]


class _Sink:
    async def handle_DATA(self, server, session, envelope) -> str:
        return "250 OK"


class _Datagram(asyncio.DatagramProtocol):
    pass


def _bare_start_stop() -> tuple[float, float]:
    """Loop thread + 4 aiosmtpd listeners + UDP/TCP pair up, then down: (start, stop) s."""
    started = time.perf_counter()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="bench-bare-start")
    thread.start()

    async def up() -> list:
        servers = [
            await loop.create_server(lambda h=h: SMTP(_Sink(), hostname=h, loop=loop), LOOPBACK, 0)
            for h in HOSTS
        ]
        transport, _ = await loop.create_datagram_endpoint(_Datagram, local_addr=(LOOPBACK, 0))
        port = transport.get_extra_info("sockname")[1]
        servers.append(await loop.create_server(asyncio.Protocol, LOOPBACK, port))
        return [transport, *servers]

    things = asyncio.run_coroutine_threadsafe(up(), loop).result(10)
    start_time = time.perf_counter() - started

    stopping = time.perf_counter()

    async def down() -> None:
        things[0].close()
        for server in things[1:]:
            server.close()
            await server.wait_closed()

    asyncio.run_coroutine_threadsafe(down(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()
    return start_time, time.perf_counter() - stopping


def _phases() -> tuple[float, float]:
    """Two phases of Lab.start timed alone: (store + 4 accounts, LabCA) in seconds."""
    root = Path(tempfile.mkdtemp(prefix="bench-start-"))
    try:
        t0 = time.perf_counter()
        store = Store(root / "mail")
        for address in ACCOUNTS:
            store.add_account(address)
        t1 = time.perf_counter()
        LabCA([*HOSTS, "north.test", "south.test"], root / "tls")
        t2 = time.perf_counter()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return t1 - t0, t2 - t1


def run() -> Result:
    header("1. start_lab() and stop(), 10 times (import excluded)")
    starts, stops = [], []
    for _ in range(REPETITIONS):
        t0 = time.perf_counter()
        lab = mailkit_edu.start_lab()
        t1 = time.perf_counter()
        lab.stop()
        t2 = time.perf_counter()
        starts.append(t1 - t0)
        stops.append(t2 - t1)

    bare = [_bare_start_stop() for _ in range(REPETITIONS)]
    bare_start = median([b[0] for b in bare])
    bare_stop = median([b[1] for b in bare])
    phases = [_phases() for _ in range(REPETITIONS)]
    store_phase = median([p[0] for p in phases])
    ca_phase = median([p[1] for p in phases])

    start_median, stop_median = median(starts), median(stops)
    print(
        f"  start_lab(): median {ms(start_median)}  (min {ms(min(starts))}, max {ms(max(starts))})"
    )
    print(f"  lab.stop():  median {ms(stop_median)}  (min {ms(min(stops))}, max {ms(max(stops))})")
    print(
        f"  baseline, loop thread + 4 aiosmtpd + UDP/TCP listeners: start {ms(bare_start)}, "
        f"stop {ms(bare_stop)}"
    )
    print(
        f"  ratio start_lab / bare start: {start_median / bare_start:.1f}x; "
        f"stop / bare stop: {stop_median / bare_stop:.1f}x"
    )
    print(
        f"  phases alone (medians): Store + 4 accounts {ms(store_phase)}, "
        f"LabCA (CA + server cert) {ms(ca_phase)}, "
        f"the rest (by difference) ~{ms(max(start_median - store_phase - ca_phase, 0.0))}"
    )
    result = Result(
        name="start_lab()",
        floor=f"median start <= {FLOOR_SECONDS} s",
        passed=start_median <= FLOOR_SECONDS,
        summary=(
            f"start {ms(start_median)}, stop {ms(stop_median)} "
            f"(bare loop+listeners: {ms(bare_start)} / {ms(bare_stop)})"
        ),
    )
    result.print()
    return result


if __name__ == "__main__":
    run()
