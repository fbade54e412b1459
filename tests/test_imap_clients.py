"""Third-party IMAP clients against the lab: curl, fetchmail and mutt (in tmux).

Each test skips, saying why, when its client is not installed (bash .ci/run installs
them). Everything talks to 127.0.0.1.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

import mailkit_edu as mk

from .conftest import need, run
from .test_imap_lab import NORTH, clear, flags_of, subjects
from .test_pop3_lab import put
from .test_smtp_lab import ALICE

pytestmark = pytest.mark.clients


def curl_imap(lab: mk.Lab, path: str, *options: str, password: str | None = None):
    """``curl imap://127.0.0.1:PORT/<path>`` as alice."""
    url = f"imap://127.0.0.1:{lab.port(NORTH)}/{path}"
    secret = lab.account(ALICE).password if password is None else password
    return run([need("curl"), "-sS", "--max-time", "10", url, "-u", f"{ALICE}:{secret}", *options])


def stored_bytes(lab: mk.Lab, subject: str) -> bytes:
    row = lab.mailbox(ALICE).query("folder == 'INBOX' and subject == @subject")
    return Path(row["file"].item()).read_bytes()


def test_curl_lists_the_mailboxes(lab):
    """``curl imap://host:port/`` runs LIST "" * and prints one line per folder of the store."""
    result = curl_imap(lab, "")
    assert result.returncode == 0, result.stderr
    names = [line.rsplit(" ", 1)[1].strip('"') for line in result.stdout.splitlines()]
    assert names == lab.store.folders(ALICE)
    assert result.stdout.splitlines()[0] == '* LIST (\\HasNoChildren) "." "INBOX"'


def test_curl_fetches_by_uid_and_marks_it_seen(lab):
    """``imap://.../INBOX;UID=n`` prints the message as stored; curl's UID FETCH BODY[]
    (not PEEK) sets \\Seen in the store."""
    clear(lab, ALICE)
    put(lab, ALICE, "for curl", body="curl body\r\n.dot line\r\n")
    uid = lab.mailbox(ALICE).query("subject == 'for curl'")["uid"].item()
    result = curl_imap(lab, f"INBOX;UID={uid}")
    assert result.returncode == 0, result.stderr
    assert result.stdout == stored_bytes(lab, "for curl").decode().replace("\r\n", "\n")
    assert "\\Seen" in flags_of(lab, ALICE, "for curl")
    commands = lab.transcript(server=NORTH)["line"].tolist()
    assert any(line.endswith(f"UID FETCH {uid} BODY[]") for line in commands)
    wrong = curl_imap(lab, f"INBOX;UID={uid}", password="wrong")
    assert wrong.returncode == 67, (wrong.returncode, wrong.stderr)  # login denied


def test_curl_custom_examine_is_read_only(lab):
    """``-X 'EXAMINE INBOX'`` prints the untagged EXAMINE data (EXISTS, UIDVALIDITY, ...),
    with no permanent flags, and changes nothing."""
    clear(lab, ALICE)
    put(lab, ALICE, "examined 1")
    put(lab, ALICE, "examined 2")
    result = curl_imap(lab, "INBOX", "-X", "EXAMINE INBOX")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "* 2 EXISTS" in lines
    uidvalidity = lab.store.uidvalidity(ALICE, "INBOX")
    assert f"* OK [UIDVALIDITY {uidvalidity}] UIDs valid" in lines
    assert "* OK [PERMANENTFLAGS ()] flags you can change" in lines
    rows = lab.transcript(server=NORTH)
    replies = rows[rows["direction"] == "S"]["line"].tolist()
    assert any(line.endswith("OK [READ-ONLY] EXAMINE completed") for line in replies)
    assert flags_of(lab, ALICE, "examined 1") == set() == flags_of(lab, ALICE, "examined 2")


def test_fetchmail_keep_over_imap(lab, tmp_path):
    """fetchmail over IMAP with ``keep`` hands every unseen message to its MDA, marks them
    \\Seen, and leaves them on the server; a second run finds no new mail (exit 1)."""
    fetchmail = need("fetchmail")
    clear(lab, ALICE)
    put(lab, ALICE, "fetch one")
    put(lab, ALICE, "fetch two")
    out = tmp_path / "out.mbox"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"poll 127.0.0.1 service {lab.port(NORTH)} protocol IMAP "
        f'user "{ALICE}" password "{lab.account(ALICE).password}" is "alice" keep '
        f'sslproto "" mda "cat >> {out}"\n'
    )
    os.chmod(rc, 0o600)
    env = {**os.environ, "HOME": str(tmp_path), "FETCHMAILHOME": str(tmp_path)}
    command = [fetchmail, "-f", str(rc), "--nodetach", "--nosyslog", "-v", "--timeout", "10"]
    result = run(command, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    fetched = out.read_text()
    assert "Subject: fetch one" in fetched and "Subject: fetch two" in fetched
    assert subjects(lab, ALICE) == ["fetch one", "fetch two"]  # kept on the server
    assert flags_of(lab, ALICE, "fetch one") == {"\\Seen"} == flags_of(lab, ALICE, "fetch two")
    again = run(command, env=env)
    assert again.returncode == 1, again.stdout + again.stderr  # 1: no new mail
    assert out.read_text() == fetched
    assert subjects(lab, ALICE) == ["fetch one", "fetch two"]


def test_mutt_lists_the_inbox_in_tmux(lab, tmp_path):
    """mutt, started in a detached tmux session against imap://alice%40north.test@..., shows
    the message's subject in its index; listing fetches headers with BODY.PEEK, so the
    message stays unseen."""
    mutt, tmux = need("mutt"), need("tmux")
    clear(lab, ALICE)
    lab.store.deliver(
        ALICE,
        b"From: Zed Zimmer <zed@elsewhere.test>\r\nSubject: mutt sees me\r\n"
        b"Date: Thu, 26 Nov 2026 10:00:00 +0000\r\n\r\nHello, mutt.\r\n",
    )
    server = f"imap://alice%40north.test@127.0.0.1:{lab.port(NORTH)}/"
    muttrc = tmp_path / "muttrc"
    muttrc.write_text(
        f'set folder="{server}"\n'
        f'set spoolfile="{server}INBOX"\n'
        f'set imap_pass="{lab.account(ALICE).password}"\n'
        "set ssl_starttls=no\nset ssl_force_tls=no\n"
        'set header_cache=""\nset message_cachedir=""\n'
        f'set certificate_file="{tmp_path}/certificates"\n'
        "set imap_passive=no\nset move=no\n"
    )
    # A tmux server of our own (its socket in tmp_path), without the user's tmux.conf.
    tmux_base = [tmux, "-S", str(tmp_path / "tmux.sock"), "-f", "/dev/null"]
    env = {**os.environ, "HOME": str(tmp_path), "TERM": "xterm"}
    session = "mutt"
    subprocess.run(
        [*tmux_base, "new-session", "-d", "-s", session, "-x", "160", "-y", "40"]
        + [f"{mutt} -n -F {muttrc}"],
        env=env,
        check=True,
        timeout=10,
    )
    screen = ""
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            screen = subprocess.run(
                [*tmux_base, "capture-pane", "-p", "-t", session],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout
            if "mutt sees me" in screen:
                break
            time.sleep(0.1)
    finally:
        subprocess.run([*tmux_base, "kill-session", "-t", session], capture_output=True, timeout=5)
    assert "mutt sees me" in screen, screen
    assert "Zed Zimmer" in screen and "Msgs:1" in screen, screen
    commands = lab.transcript(server=NORTH)["command"].dropna().tolist()
    assert "SELECT" in commands and "FETCH" in commands
    assert flags_of(lab, ALICE, "mutt sees me") == set()  # headers only, with BODY.PEEK
