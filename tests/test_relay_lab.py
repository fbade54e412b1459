"""The relay and the lab's life cycle: queue, retries, bounces, restarts, faults, threads."""

from __future__ import annotations

import email
import smtplib
import socket
import threading
import time

import pytest

import mailkit_edu as mk
from mailkit_edu.relay import DNS_CACHE_SECONDS

from .conftest import FAST, lab_threads
from .test_smtp_lab import ALICE, BOB, CAROL, DAVE, message, password, submit, wait_for_subject


def wait_until(condition, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def bounces(lab: mk.Lab, address: str):
    box = lab.mailbox(address)
    return box[box["subject"] == "Undelivered Mail Returned to Sender"]


def wait_for_bounce(lab: mk.Lab, address: str):
    wait_until(lambda: len(bounces(lab, address)) > 0, what=f"a DSN for {address}")
    return bounces(lab, address)


def read_file(path) -> email.message.Message:
    with open(path, "rb") as f:
        return email.message_from_binary_file(f)


def test_queue_retries_while_the_mx_is_down(fresh_lab):
    """With south's MX stopped the message waits in the queue and is retried; once
    the MX is back it is delivered."""
    lab = fresh_lab
    lab.stop_server("mx.south.test")
    assert not lab.servers.set_index("name").loc["mx.south.test", "running"]
    submit(lab, ALICE, [CAROL], message(ALICE, CAROL, "while down"))
    wait_until(lambda: (lab.queue()["attempts"] >= 2).any(), what="two attempts")
    queued = lab.queue()
    assert len(queued) == 1 and "connection failed" in queued.iloc[0]["last_error"]
    assert lab.mailbox(CAROL).empty
    port = lab.port("mx.south.test")
    lab.start_server("mx.south.test")
    assert lab.port("mx.south.test") == port
    lab.flush_queue()
    wait_for_subject(lab, CAROL, "while down")
    wait_until(lambda: lab.queue().empty, what="an empty queue")


def test_injected_451_is_retried_then_delivered(fresh_lab):
    """An injected 451 on RCPT at the MX shows in the transcript, the relay retries,
    and the message arrives."""
    lab = fresh_lab
    lab.inject("mx.south.test", command="RCPT", reply="451 4.7.1 Try again later", times=1)
    submit(lab, ALICE, [CAROL], message(ALICE, CAROL, "after 451"))
    wait_for_subject(lab, CAROL, "after 451")
    rows = lab.transcript(server="mx.south.test")
    assert "451 4.7.1 Try again later" in rows[rows["direction"] == "S"]["line"].tolist()
    assert bounces(lab, ALICE).empty


def test_injected_reply_at_the_msa(fresh_lab):
    """An injected reply at the MSA is what the client gets, once."""
    lab = fresh_lab
    lab.inject("msa.north.test", command="MAIL", reply="421 4.3.2 Shutting down for a lesson")
    with smtplib.SMTP("127.0.0.1", lab.port("msa.north.test"), timeout=10) as smtp:
        smtp.login(ALICE, password(lab, ALICE))
        code, text = smtp.mail(ALICE)
        assert code == 421
    with pytest.raises(ValueError):
        lab.inject("msa.north.test", command="MAIL", reply="not a reply")
    submit(lab, ALICE, [BOB], message(ALICE, BOB, "after inject"))


def test_bounce_for_an_unknown_recipient(fresh_lab):
    """A recipient the MX refuses with 550 comes back to the sender as an RFC 3464
    DSN naming the recipient, the status and the MX's reply."""
    lab = fresh_lab
    submit(lab, ALICE, ["nobody@south.test"], message(ALICE, "nobody@south.test", "to nobody"))
    rows = wait_for_bounce(lab, ALICE)
    dsn = read_file(rows.iloc[0]["file"])
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert dsn["Return-Path"] == "<>"
    parts = list(dsn.walk())
    status = next(p for p in parts if p.get_content_type() == "message/delivery-status")
    text = status.as_string()
    assert "Final-Recipient: rfc822; nobody@south.test" in text
    assert "Status: 5.1.1" in text and "Action: failed" in text
    assert "Remote-MTA: dns; mx.south.test" in text
    returned = next(p for p in parts if p.get_content_type() == "message/rfc822")
    assert returned.get_payload(0)["Subject"] == "to nobody"


def test_bounce_for_an_outside_domain_without_connecting_outside(fresh_lab):
    """A recipient outside the lab is bounced (NXDOMAIN from the lab DNS), and no
    socket tries to reach it (checked by the audit hook in conftest)."""
    lab = fresh_lab
    submit(lab, ALICE, ["someone@example.com"], message(ALICE, "someone@example.com", "outside"))
    rows = wait_for_bounce(lab, ALICE)
    text = read_file(rows.iloc[0]["file"]).as_string()
    assert "Status: 5.1.2" in text and "example.com does not exist in the lab DNS" in text
    dns_rows = lab.transcript(protocol="DNS")
    assert "example.com. IN MX?" in dns_rows["line"].tolist()


def test_an_a_record_outside_the_lab_is_never_connected(fresh_lab):
    """An MX host whose A record points outside 127.0.0.0/8 is refused with a bounce,
    and no connection is attempted."""
    lab = fresh_lab
    lab.zone.add_origin("away.test")
    lab.zone.add("away.test", "MX", "10 mx.away.test.")
    lab.zone.add("mx.away.test", "A", "192.0.2.25")
    submit(lab, ALICE, ["x@away.test"], message(ALICE, "x@away.test", "away"))
    rows = wait_for_bounce(lab, ALICE)
    assert "Status: 5.4.4" in read_file(rows.iloc[0]["file"]).as_string()


def test_implicit_mx_fallback_to_a(fresh_lab):
    """With south's MX record removed, the relay falls back to the domain's A record
    (RFC 5321 §5.1) and still delivers."""
    lab = fresh_lab
    assert lab.zone.remove("south.test", "MX") == 1
    submit(lab, ALICE, [CAROL], message(ALICE, CAROL, "implicit mx"))
    wait_for_subject(lab, CAROL, "implicit mx")
    questions = lab.transcript(protocol="DNS")["line"].tolist()
    assert "south.test. IN A?" in questions


def test_queued_message_survives_a_restart(tmp_path):
    """A message queued while the MX is down is still in the queue after the lab
    stops, and is delivered by a new lab started on the same path."""
    with mk.start_lab(tmp_path, **FAST) as lab:
        lab.stop_server("mx.south.test")
        submit(lab, ALICE, [CAROL], message(ALICE, CAROL, "survivor"))
        assert len(lab.queue()) == 1
    assert list((tmp_path / "queue").glob("*.msg"))
    with mk.start_lab(tmp_path, **FAST) as lab:
        stored = wait_for_subject(lab, CAROL, "survivor")
        assert stored["Return-Path"] == f"<{ALICE}>"
        wait_until(lambda: lab.queue().empty, what="an empty queue")
    assert not list((tmp_path / "queue").glob("*.msg"))


def test_mail_is_kept_across_restarts_with_a_path(tmp_path):
    """With path= a delivered message is still in the Maildir after a restart."""
    with mk.start_lab(tmp_path, **FAST) as lab:
        submit(lab, ALICE, [BOB], message(ALICE, BOB, "kept"))
        wait_for_subject(lab, BOB, "kept")
    with mk.start_lab(tmp_path, **FAST) as lab:
        assert (lab.mailbox(BOB)["subject"] == "kept").sum() == 1


def test_two_labs_side_by_side():
    """Two labs in one process have different ports, and mail in one never shows in the other."""
    with mk.start_lab(**FAST) as one, mk.start_lab(**FAST) as two:
        assert set(one.servers["port"]).isdisjoint(set(two.servers["port"]))
        submit(one, ALICE, [CAROL], message(ALICE, CAROL, "only in one"))
        wait_for_subject(one, CAROL, "only in one")
        assert two.mailbox(CAROL).empty
        assert not (two.transcript()["line"] == "Subject: only in one").any()


def test_stop_leaves_no_thread_and_no_port():
    """stop() ends the lab's thread and frees every port; a second stop() is harmless."""
    before = set(lab_threads())
    threads_before = set(threading.enumerate())
    lab = mk.start_lab(**FAST)
    ports = lab.servers["port"].tolist()
    assert len(set(lab_threads()) - before) == 1
    submit(lab, ALICE, [BOB], message(ALICE, BOB, "before stop"))  # uses executor threads
    wait_for_subject(lab, BOB, "before stop")
    lab.stop()
    lab.stop()
    assert set(lab_threads()) <= before
    assert set(threading.enumerate()) <= threads_before  # executor threads joined too
    assert not lab.path.exists()  # the temporary folder is gone
    for port in ports:
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0


def test_servers_and_accounts_tables(lab):
    """lab.servers and lab.accounts follow the public contract."""
    servers = lab.servers
    assert list(servers.columns[:6]) == ["name", "domain", "role", "protocol", "host", "port"]
    assert set(servers["role"]) == {"dns", "msa", "mx", "pop3", "imap"}
    assert (servers["host"] == "127.0.0.1").all() and (servers["port"] > 0).all()
    accounts = lab.accounts
    assert list(accounts.columns) == ["address", "password", "domain"]
    assert accounts.groupby("domain").size().min() >= 2 and accounts["domain"].nunique() >= 2


def test_custom_domains_and_bad_configuration():
    """Domains and accounts are configurable, and a bad configuration is refused
    in the caller's thread with a clear message."""
    with mk.start_lab(domains={"east.test": ["erin", "eve"], "west.test": {"will": "pw"}}) as lab:
        assert set(lab.accounts["address"]) == {"erin@east.test", "eve@east.test", "will@west.test"}
        submit(
            lab,
            "will@west.test",
            ["erin@east.test"],
            message("will@west.test", "erin@east.test", "hi"),
        )
        wait_for_subject(lab, "erin@east.test", "hi")
    with pytest.raises(ValueError, match="not a valid domain"):
        mk.start_lab(domains={"no spaces.test": ["a"]})
    with pytest.raises(ValueError, match="not a valid account"):
        mk.start_lab(domains={"ok.test": ["../etc"]})


def test_transcript_columns_and_types(lab):
    """lab.transcript() has the contract's columns, a UTC time column, and sessions
    unique per connection."""
    submit(lab, ALICE, [BOB], message(ALICE, BOB, "columns"))
    frame = lab.transcript()
    assert list(frame.columns) == [
        "time",
        "server",
        "role",
        "protocol",
        "session",
        "direction",
        "line",
        "command",
        "code",
    ]
    assert str(frame["time"].dt.tz) == "UTC"
    assert set(frame["direction"]) == {"C", "S"}
    per_session = frame.groupby("session")["server"].nunique()
    assert (per_session == 1).all()
    assert frame["time"].is_monotonic_increasing


def test_start_up_errors_are_clear(tmp_path):
    """A lab path that is a file fails in the caller's thread with a LabError naming
    the path, and leaves no lab thread behind."""
    before = set(lab_threads())
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(mk.LabError, match="a-file"):
        mk.start_lab(blocker)
    assert set(lab_threads()) <= before


def test_relay_reuses_its_connection_and_caches_dns(fresh_lab):
    """Two messages in a row to south go over one MX session (one EHLO, two MAILs)
    after one MX lookup; the relay says QUIT once the connection has been idle."""
    lab = fresh_lab
    with smtplib.SMTP("127.0.0.1", lab.port("msa.north.test"), timeout=10) as smtp:
        smtp.login(ALICE, password(lab, ALICE))
        smtp.send_message(message(ALICE, CAROL, "first of two"))
        wait_for_subject(lab, CAROL, "first of two")
        smtp.send_message(message(ALICE, CAROL, "second of two"))
        wait_for_subject(lab, CAROL, "second of two")
    wait_until(
        lambda: "QUIT" in lab.transcript(server="mx.south.test")["command"].tolist(),
        what="the relay's QUIT",
    )
    mx = lab.transcript(server="mx.south.test")
    assert mx["session"].nunique() == 1
    commands = mx["command"].dropna().tolist()
    assert commands.count("EHLO") == 1 and commands.count("MAIL") == 2
    assert commands[-1] == "QUIT"
    questions = lab.transcript(protocol="DNS")["line"].tolist()
    assert questions.count("south.test. IN MX?") == 1


def test_a_cached_connection_is_never_reused_under_another_msa_name(fresh_lab):
    """The relay keeps its MX connection for the next message, but only for mail from
    the same MSA: Carol's message (msa.south.test) must not ride the connection that
    greeted mx.south.test as msa.north.test, or its Received: line would lie."""
    lab = fresh_lab
    submit(lab, ALICE, [CAROL], message(ALICE, CAROL, "from north"))
    wait_for_subject(lab, CAROL, "from north")
    submit(lab, CAROL, [DAVE], message(CAROL, DAVE, "from south"))  # within the 2 s reuse
    stored = wait_for_subject(lab, DAVE, "from south")
    received = [value for name, value in stored.items() if name.lower() == "received"]
    assert "from msa.south.test" in received[0] and "msa.north.test" not in received[0]
    mx = lab.transcript(server="mx.south.test")
    ehlo = mx[mx["command"] == "EHLO"]["line"].tolist()
    assert ehlo == ["EHLO msa.north.test", "EHLO msa.south.test"]


def test_a_zone_change_reaches_the_relay(fresh_lab):
    """After the MX record of south is pointed at a host with no server, the relay
    notices within its short cache time: mail then waits in the queue."""
    lab = fresh_lab
    submit(lab, ALICE, [CAROL], message(ALICE, CAROL, "before the change"))
    wait_for_subject(lab, CAROL, "before the change")
    lab.zone.remove("south.test", "MX")
    lab.zone.add("south.test", "MX", "10 nowhere.south.test.")
    lab.zone.add("nowhere.south.test", "A", "127.0.0.1")
    time.sleep(DNS_CACHE_SECONDS + 0.1)  # not waiting for mail: letting the cache expire
    submit(lab, ALICE, [CAROL], message(ALICE, CAROL, "after the change"))
    wait_until(
        lambda: lab.queue()["last_error"].str.contains("nowhere.south.test").any(),
        what="an attempt at nowhere.south.test",
    )
    assert lab.mailbox(CAROL)["subject"].tolist() == ["before the change"]
