"""Shared fixtures: labs on 127.0.0.1, port 0, and a guard that nothing connects outside."""

from __future__ import annotations

import ipaddress
import shutil
import socket
import subprocess
import sys
import threading

import pytest

import mailkit_edu as mk

#: Every address a socket in this test process tried to connect to.
CONNECTIONS: list[tuple] = []


def _audit(event: str, args: tuple) -> None:
    if event in ("socket.connect", "socket.sendto"):
        sock, address = args[0], args[-1]
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            CONNECTIONS.append(address)


sys.addaudithook(_audit)


def outside_connections() -> list[tuple]:
    """Connections attempted to anything but loopback (must always be empty)."""
    return [a for a in CONNECTIONS if not ipaddress.ip_address(a[0]).is_loopback]


@pytest.fixture(autouse=True)
def nothing_leaves_the_machine():
    """After every test: no socket of this process tried to reach a non-loopback address."""
    before = len(CONNECTIONS)
    yield
    outside = [a for a in CONNECTIONS[before:] if not ipaddress.ip_address(a[0]).is_loopback]
    assert not outside, f"connections outside the machine: {outside}"


FAST = {"retry_schedule": (0.2, 0.4, 0.8), "auth_failure_delay": 0.05}


@pytest.fixture(scope="module")
def lab():
    """One default lab for a test module (tests must not depend on each other's mail)."""
    with mk.start_lab(**FAST) as lab:
        yield lab


@pytest.fixture
def fresh_lab():
    """A lab of its own for a test that changes servers or faults."""
    with mk.start_lab(**FAST) as lab:
        yield lab


def lab_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("mailkit-lab-")]


def need(tool: str) -> str:
    """The path of a third-party client, or skip the test (bash .ci/run installs them)."""
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (bash .ci/run installs it)")
    return path


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a client with a time limit, capturing its output as text."""
    return subprocess.run(args, capture_output=True, text=True, timeout=60, **kwargs)
