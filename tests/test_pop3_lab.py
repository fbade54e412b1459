"""POP3 through a real lab: poplib, raw sockets, curl and fetchmail against 127.0.0.1."""

from __future__ import annotations

import base64
import os
import poplib
import ssl

import pytest

import mailkit_edu as mk

from .conftest import FAST, need, run
from .test_relay_lab import wait_until
from .test_smtp_lab import ALICE, CAROL, Raw, message, submit, wait_for_subject

DAVE = "dave@south.test"


def put(lab: mk.Lab, address: str, subject: str, body: str = "Hello.\r\n") -> None:
    """Deliver straight into the store (the MDA), as the MX would."""
    lab.store.deliver(address, f"From: x@y.test\r\nSubject: {subject}\r\n\r\n{body}".encode())


def pop(lab: mk.Lab, address: str) -> poplib.POP3:
    domain = address.rpartition("@")[2]
    client = poplib.POP3("127.0.0.1", lab.port(f"pop3.{domain}"), timeout=10)
    client.user(address)
    client.pass_(lab.account(address).password)
    return client


def subjects(lab: mk.Lab, address: str) -> list[str]:
    return lab.mailbox(address).query("folder == 'INBOX'")["subject"].tolist()


@pytest.fixture
def lab():
    with mk.start_lab(**FAST) as lab:
        yield lab


def test_pop3_servers_are_in_the_lab(lab):
    """Each domain has a POP3 server (role pop3, protocol POP3) and a DNS A record for it."""
    servers = lab.servers.set_index("name")
    for domain in ("north.test", "south.test"):
        row = servers.loc[f"pop3.{domain}"]
        assert (row["role"], row["protocol"], row["host"]) == ("pop3", "POP3", "127.0.0.1")
    assert ("pop3.south.test.", "A") in {
        (n, t) for n, t in lab.zone.frame()[["name", "type"]].values
    }


def test_end_to_end_smtp_then_pop3(lab):
    """A message submitted over SMTP is listed and retrieved over POP3 with both Received lines."""
    submit(lab, ALICE, [CAROL], message(ALICE, CAROL, "to read over pop3"))
    wait_for_subject(lab, CAROL, "to read over pop3")
    client = pop(lab, CAROL)
    count, size = client.stat()
    assert count == 1 and size == lab.mailbox(CAROL)["size"].sum()
    _, lines, _ = client.retr(1)
    text = b"\n".join(lines).decode()
    assert text.count("Received: from") == 2 and "Subject: to read over pop3" in text
    client.quit()


def test_dele_applies_only_at_quit(lab):
    """DELE marks; the message is still in the Maildir until QUIT, then gone."""
    put(lab, CAROL, "one")
    put(lab, CAROL, "two")
    client = pop(lab, CAROL)
    client.dele(1)
    assert client.stat()[0] == 1
    with pytest.raises(poplib.error_proto, match="deleted"):
        client.retr(1)
    assert subjects(lab, CAROL) == ["one", "two"]  # not yet
    client.quit()
    assert subjects(lab, CAROL) == ["two"]


def test_a_dropped_connection_deletes_nothing(lab):
    """DELE then a dropped connection (no QUIT): nothing is deleted and the lock is freed."""
    put(lab, CAROL, "keep me")
    client = pop(lab, CAROL)
    client.dele(1)
    client.close()  # poplib's close: the socket goes away without QUIT
    wait_until(lambda: not lab.server("pop3.south.test").locks.locked(CAROL), what="unlock")
    assert subjects(lab, CAROL) == ["keep me"]
    again = pop(lab, CAROL)
    assert again.stat()[0] == 1
    again.quit()


def test_rset_unmarks(lab):
    """RSET brings every marked message back; QUIT then deletes nothing."""
    put(lab, CAROL, "a")
    put(lab, CAROL, "b")
    client = pop(lab, CAROL)
    client.dele(1)
    client.dele(2)
    assert client.stat()[0] == 0
    client.rset()
    assert client.stat()[0] == 2
    client.quit()
    assert subjects(lab, CAROL) == ["a", "b"]


def test_the_maildrop_is_locked(lab):
    """A second session for the same maildrop gets -ERR [IN-USE] until the first quits."""
    put(lab, CAROL, "locked")
    first = pop(lab, CAROL)
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        pop(lab, CAROL)
    other = pop(lab, DAVE)  # another maildrop is not affected
    other.quit()
    first.quit()
    pop(lab, CAROL).quit()


def test_uidl_is_stable_across_sessions_and_restarts(tmp_path):
    """UIDL values stay the same in a new session and after a lab restart, and follow
    the store's UIDs."""
    with mk.start_lab(tmp_path, **FAST) as lab:
        put(lab, CAROL, "first")
        put(lab, CAROL, "second")
        client = pop(lab, CAROL)
        before = client.uidl()[1]
        client.dele(1)
        client.quit()
        client = pop(lab, CAROL)
        after_delete = client.uidl()[1]
        client.quit()
    with mk.start_lab(tmp_path, **FAST) as lab:
        client = pop(lab, CAROL)
        after_restart = client.uidl()[1]
        client.quit()
        uid = lab.mailbox(CAROL).query("subject == 'second'")["uid"].item()
    assert len(before) == 2
    assert after_delete == after_restart == [b"1 " + before[1].split()[1]]
    assert before[1].split()[1].endswith(f".{uid}".encode())


def test_top_and_retr_mark_seen_differently(lab):
    """TOP n 1 gives the header and one body line and leaves the message unseen; RETR
    marks it \\Seen in the store (what IMAP will show) when the session QUITs."""
    put(lab, CAROL, "top me", body="line 1\r\nline 2\r\nline 3\r\n")
    client = pop(lab, CAROL)
    _, lines, _ = client.top(1, 1)
    assert lines[-2:] == [b"", b"line 1"]
    assert "\\Seen" not in lab.mailbox(CAROL)["flags"].item()
    client.retr(1)
    client.quit()  # the marks are made at QUIT, with the deletions (UPDATE state)
    assert "\\Seen" in lab.mailbox(CAROL)["flags"].item()


def test_dot_stuffing_on_the_wire(lab):
    """A body line starting with '.' is sent as '..' and poplib gets it back whole."""
    put(lab, CAROL, "dots", body=".hidden\r\n..two\r\n")
    client = pop(lab, CAROL)
    _, lines, _ = client.retr(1)
    assert lines[-2:] == [b".hidden", b"..two"]
    client.quit()
    sent = lab.transcript(server="pop3.south.test").query("direction == 'S'")["line"].tolist()
    assert "..hidden" in sent and "...two" in sent


def test_stls_with_the_lab_ca_and_require_tls():
    """With require_tls=True, USER before STLS gets -ERR [AUTH]; after STLS (lab CA
    verified) login works."""
    with mk.start_lab(require_tls=True, **FAST) as lab:
        put(lab, CAROL, "secret")
        client = poplib.POP3("127.0.0.1", lab.port("pop3.south.test"), timeout=10)
        assert "STLS" in client.capa() and "USER" not in client.capa()
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            client.user(CAROL)
        context = ssl.create_default_context(cafile=str(lab.ca_file))
        client.host = "pop3.south.test"  # poplib checks the certificate against this name
        client.stls(context)
        assert "USER" in client.capa()
        client.user(CAROL)
        client.pass_(lab.account(CAROL).password)
        assert client.stat()[0] == 1
        client.quit()


def test_auth_plain_and_a_wrong_password(lab):
    """AUTH PLAIN logs in; a wrong password gets -ERR [AUTH] and the session may retry."""
    put(lab, CAROL, "auth")
    raw = Raw(lab.port("pop3.south.test"))
    try:
        assert raw.reply()[0].startswith("+OK")
        assert raw.send("PASS x")[0].startswith("-ERR")
        raw.send(f"USER {CAROL}")
        assert raw.send("PASS wrong")[0].startswith("-ERR [AUTH]")
        token = base64.b64encode(f"\0{CAROL}\0{lab.account(CAROL).password}".encode()).decode()
        assert raw.send(f"AUTH PLAIN {token}")[0].startswith("+OK")
        assert raw.send("STAT")[0] == f"+OK 1 {lab.mailbox(CAROL)['size'].item()}"
        assert raw.send("QUIT")[0].startswith("+OK")
    finally:
        raw.close()


def test_bad_input_then_a_healthy_client(lab):
    """Garbage, out-of-range numbers, wrong states and a 10 kB line get -ERR without
    Python text, and the server goes on serving."""
    put(lab, CAROL, "survivor")
    raw = Raw(lab.port("pop3.south.test"))
    replies = []
    try:
        raw.reply()
        replies += raw.send(b"\x00\xff garbage\r\n")
        replies += raw.send("STAT")
        replies += raw.send("X" * 10_000)
        raw.send(f"USER {CAROL}")
        raw.send(f"PASS {lab.account(CAROL).password}")
        for command in ("RETR 0", "RETR 99999", "TOP 1 -5", "LIST x", "DELE", "USER again"):
            replies += raw.send(command)
    finally:
        raw.close()
    assert all(r.startswith("-ERR") for r in replies), replies
    assert not any("Traceback" in r or "Error(" in r for r in replies)
    client = pop(lab, CAROL)
    assert client.stat()[0] == 1
    client.quit()


def test_injected_reply(lab):
    """lab.inject makes RETR fail once with the chosen reply; the next RETR works."""
    put(lab, CAROL, "flaky")
    lab.inject("pop3.south.test", command="RETR", reply="-ERR [SYS/TEMP] disk on fire, try later")
    client = pop(lab, CAROL)
    with pytest.raises(poplib.error_proto, match="disk on fire"):
        client.retr(1)
    assert client.retr(1)[0].startswith(b"+OK")
    client.quit()
    with pytest.raises(ValueError):
        lab.inject("pop3.south.test", command="RETR", reply="451 not pop3")


def test_pop3_delete_is_seen_by_the_store_and_smtp_delivery_by_pop3(lab):
    """The store is shared: a POP3 DELE+QUIT removes the file from the Maildir, and mail
    delivered while a session is open appears in the next session (a fixed snapshot)."""
    put(lab, CAROL, "old")
    client = pop(lab, CAROL)
    put(lab, CAROL, "new while open")
    assert client.stat()[0] == 1  # the session's numbering never changes
    client.dele(1)
    client.quit()
    assert subjects(lab, CAROL) == ["new while open"]
    client = pop(lab, CAROL)
    assert client.stat()[0] == 1
    client.quit()


def test_mask_secrets_hides_the_password():
    """mask_secrets=True hides PASS in the POP3 transcript; by default it shows."""
    for masked in (False, True):
        with mk.start_lab(mask_secrets=masked, **FAST) as lab:
            pop(lab, CAROL).quit()
            lines = lab.transcript(server="pop3.south.test")["line"].tolist()
            password = lab.account(CAROL).password
            assert (f"PASS {password}" in lines) is not masked
            assert ("PASS ********" in lines) is masked


def test_autologout_closes_quietly_and_deletes_nothing():
    """An idle session is closed without a reply after the autologout time, and its
    DELEs are not applied (RFC 1939 §3)."""
    with mk.start_lab(pop3_autologout=0.3, **FAST) as lab:
        put(lab, CAROL, "idle")
        client = pop(lab, CAROL)
        client.dele(1)
        assert client.sock.recv(100) == b""  # closed, nothing said
        wait_until(lambda: not lab.server("pop3.south.test").locks.locked(CAROL), what="unlock")
        assert subjects(lab, CAROL) == ["idle"]


# -- third-party clients ----------------------------------------------------------------


@pytest.mark.clients
def test_curl_lists_retrieves_and_uidl(lab):
    """curl pop3:// lists the maildrop, retrieves message 1 and runs UIDL."""
    curl = need("curl")
    put(lab, CAROL, "for curl", body="curl body\r\n")
    url = f"pop3://127.0.0.1:{lab.port('pop3.south.test')}/"
    user = ["-u", f"{CAROL}:{lab.account(CAROL).password}"]
    listing = run([curl, "-sS", url, *user])
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.split() == ["1", str(lab.mailbox(CAROL)["size"].item())]
    retrieved = run([curl, "-sS", url + "1", *user])
    assert "Subject: for curl" in retrieved.stdout and "curl body" in retrieved.stdout
    uidl = run([curl, "-sS", url, *user, "-X", "UIDL"])
    uid = lab.mailbox(CAROL)["uid"].item()
    assert uidl.stdout.split()[0] == "1" and uidl.stdout.split()[1].endswith(f".{uid}")
    assert subjects(lab, CAROL) == ["for curl"]  # curl does not delete


@pytest.mark.clients
@pytest.mark.parametrize("keep", [True, False])
def test_fetchmail_with_and_without_keep(lab, tmp_path, keep):
    """fetchmail downloads every message over POP3; with 'keep' they stay on the
    server, without it they are deleted (at QUIT)."""
    fetchmail = need("fetchmail")
    put(lab, CAROL, "fetch one")
    put(lab, CAROL, "fetch two")
    out = tmp_path / "out.mbox"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"poll 127.0.0.1 service {lab.port('pop3.south.test')} protocol POP3 "
        f'user "{CAROL}" password "{lab.account(CAROL).password}" is "carol" '
        f'{"keep" if keep else "nokeep"} sslproto "" mda "cat >> {out}"\n'
    )
    os.chmod(rc, 0o600)
    env = {**os.environ, "HOME": str(tmp_path), "FETCHMAILHOME": str(tmp_path)}
    result = run([fetchmail, "-f", str(rc), "--nodetach", "--nosyslog", "-v"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    fetched = out.read_text()
    assert "Subject: fetch one" in fetched and "Subject: fetch two" in fetched
    assert subjects(lab, CAROL) == (["fetch one", "fetch two"] if keep else [])


def test_commands_injected_before_the_tls_handshake_are_discarded(lab):
    """Plaintext sent after STLS but before the handshake (an injection) is not run: it
    shows in the transcript as discarded, and the TLS session starts clean."""
    raw = Raw(lab.port("pop3.south.test"))
    try:
        raw.reply()
        raw.sock.sendall(f"STLS\r\nUSER {CAROL}\r\n".encode())
        assert raw.reply()[0].startswith("+OK")
        context = ssl.create_default_context(cafile=str(lab.ca_file))
        raw.sock = context.wrap_socket(raw.sock, server_hostname="pop3.south.test")
        raw.file = raw.sock.makefile("rb")
        reply = raw.send(f"PASS {lab.account(CAROL).password}")
        assert reply[0].startswith("-ERR")  # the injected USER was thrown away
    finally:
        raw.close()
    lines = lab.transcript(server="pop3.south.test")["line"].tolist()
    assert f"USER {CAROL} [discarded: sent before TLS]" in lines


def test_injected_greeting(lab):
    """inject(command="CONNECT") replaces the POP3 greeting; with -ERR the server hangs up."""
    lab.inject("pop3.south.test", command="CONNECT", reply="-ERR [SYS/TEMP] maintenance")
    with pytest.raises(poplib.error_proto, match="maintenance"):
        poplib.POP3("127.0.0.1", lab.port("pop3.south.test"), timeout=10)
    pop(lab, CAROL).quit()  # once only


@pytest.mark.clients
def test_fetchmail_over_stls_checks_the_lab_certificate(lab, tmp_path):
    """fetchmail upgrades with STLS, verifies the server certificate against the lab CA
    (its common name is the server's host name), and fetches the mail."""
    fetchmail = need("fetchmail")
    put(lab, CAROL, "over tls")
    out = tmp_path / "out.mbox"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"poll 127.0.0.1 service {lab.port('pop3.south.test')} protocol POP3 "
        f'user "{CAROL}" password "{lab.account(CAROL).password}" is "carol" keep '
        f'sslcertfile "{lab.ca_file}" sslcertck sslcommonname "pop3.south.test" '
        f'mda "cat >> {out}"\n'
    )
    os.chmod(rc, 0o600)
    env = {**os.environ, "HOME": str(tmp_path), "FETCHMAILHOME": str(tmp_path)}
    result = run([fetchmail, "-f", str(rc), "--nodetach", "--nosyslog"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Subject: over tls" in out.read_text()
    commands = lab.transcript(server="pop3.south.test")["command"].dropna().tolist()
    assert "STLS" in commands and commands.index("STLS") < commands.index("USER")
