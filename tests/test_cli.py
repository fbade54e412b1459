"""The command line: ``mailkit-edu serve`` in a real subprocess, stopped and killed."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import subprocess
import sys
from pathlib import Path

import mailkit_edu as mk

from .conftest import FAST
from .test_relay_lab import wait_until
from .test_smtp_lab import ALICE, CAROL, message


def serve(*args: str) -> tuple[subprocess.Popen, dict]:
    """Start ``mailkit-edu serve --json`` and read the JSON it prints."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mailkit_edu", "serve", "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    while True:
        line = process.stdout.readline()
        assert line, process.stderr.read()
        lines.append(line)
        if line.rstrip() == "}":
            return process, json.loads("".join(lines))


def test_serve_prints_servers_and_stops_on_ctrl_c():
    """serve --json prints servers, accounts and the CA file; SIGINT stops it with exit 0."""
    process, info = serve()
    try:
        roles = {s["role"] for s in info["servers"]}
        assert roles == {"dns", "msa", "mx", "pop3", "imap"}
        assert all(s["host"] == "127.0.0.1" and s["port"] > 0 for s in info["servers"])
        assert {a["address"] for a in info["accounts"]} >= {ALICE, CAROL}
        assert Path(info["ca_file"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
        msa = next(s for s in info["servers"] if s["name"] == "msa.north.test")
        with smtplib.SMTP("127.0.0.1", msa["port"], timeout=10) as smtp:
            assert smtp.ehlo()[0] == 250
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    assert not Path(info["path"]).exists()  # the temporary lab folder was removed


def test_a_250_survives_kill_9(tmp_path):
    """A message acknowledged with 250 is on disk: SIGKILL the lab right after the
    250 (MX down, so it is only in the queue) and a new lab on the same path delivers it."""
    process, info = serve("--path", str(tmp_path))
    try:
        password = next(a["password"] for a in info["accounts"] if a["address"] == ALICE)
        msa = next(s for s in info["servers"] if s["name"] == "msa.north.test")
        # Submit a burst and kill the lab right after the last 250, while the
        # relay is still busy: some messages are only in the queue.
        with smtplib.SMTP("127.0.0.1", msa["port"], timeout=10) as smtp:
            smtp.login(ALICE, password)
            for i in range(20):
                smtp.send_message(message(ALICE, CAROL, f"kill-9 {i}"))
            os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=20)
    wanted = {f"kill-9 {i}" for i in range(20)}
    with mk.start_lab(tmp_path, **FAST) as lab:
        # At least once: a message the MX took just before the kill may come twice
        # (RFC 5321 §6.1 prefers a duplicate to a loss), but none is missing.
        wait_until(lambda: wanted <= set(lab.mailbox(CAROL)["subject"]), what="all 20 messages")
        wait_until(lambda: lab.queue().empty, what="an empty queue")


def test_a_lab_left_running_stops_at_exit():
    """A script that starts a lab and never stops it exits cleanly, and the lab's
    temporary folder is gone (stop() runs at interpreter exit)."""
    script = "import mailkit_edu as mk; lab = mk.start_lab(); print(lab.path, flush=True)"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert not Path(result.stdout.strip()).exists()
