"""The journey of a message: the pure layer (journey_of, to_svg) and the Journey widget.

Real labs: mail is submitted with smtplib at the MSA (AUTH as the sender), relayed by
the lab, and retrieved with poplib and imaplib. Assertions are on the hops (names,
order, times, sessions that exist in ``lab.transcript()``), on the SVG (parsed as
XML) and on the widget's traits.
"""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import time
import xml.etree.ElementTree as ET

import pandas as pd
import pytest

import mailkit_edu as mk
from mailkit_edu import widgets
from mailkit_edu.journey import (
    CACHED,
    DONE,
    MISSING,
    NOT_YET,
    MessageJourney,
    MessageNotFound,
    format_duration,
    journey_of,
    parse_received,
    to_svg,
)
from mailkit_edu.widgets import Journey
from mailkit_edu.widgets import _base as base

from .conftest import FAST

ALICE, BOB = "alice@north.test", "bob@north.test"
CAROL, DAVE = "carol@south.test", "dave@south.test"
KEYS = ["sender", "msa", "dns", "mx", "mda", "retrieval", "recipient"]
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(autouse=True)
def strict_widgets():
    """Widget callback errors fail the test (they would only show in the widget)."""
    before = base.STRICT
    widgets.strict(True)
    yield
    widgets.strict(before)


def send(
    lab: mk.Lab,
    sender: str,
    rcpts: list[str],
    subject: str,
    message_id: str | None = None,
    smtp: smtplib.SMTP | None = None,
) -> None:
    """Submit a message at the sender's MSA, logged in as the sender."""
    header = f"From: <{sender}>\r\nTo: <{rcpts[0]}>\r\nSubject: {subject}\r\n"
    if message_id:
        header += f"Message-ID: <{message_id}>\r\n"
    data = f"{header}\r\nHello!\r\n".encode()
    if smtp is not None:
        smtp.sendmail(sender, rcpts, data)
        return
    domain = sender.rpartition("@")[2]
    with smtplib.SMTP("127.0.0.1", lab.port(f"msa.{domain}"), timeout=10) as client:
        client.login(sender, lab.account(sender).password)
        client.sendmail(sender, rcpts, data)


def pop3_retr(lab: mk.Lab, address: str, number: int = 1, delete: bool = False) -> None:
    domain = address.rpartition("@")[2]
    pop = poplib.POP3("127.0.0.1", lab.port(f"pop3.{domain}"), timeout=10)
    pop.user(address)
    pop.pass_(lab.account(address).password)
    pop.retr(number)
    if delete:
        pop.dele(number)
    pop.quit()


def imap_fetch(lab: mk.Lab, address: str, uid: int, what: str = "(BODY.PEEK[])") -> None:
    domain = address.rpartition("@")[2]
    client = imaplib.IMAP4("127.0.0.1", lab.port(f"imap.{domain}"), timeout=10)
    client.login(address, lab.account(address).password)
    client.select("INBOX")
    client.uid("FETCH", str(uid), what)
    client.logout()


def arrived(lab: mk.Lab, address: str, subject: str, timeout: float = 10.0) -> None:
    """Wait until a message with this subject is in the address's mailbox, and until
    the MX's "250 … delivered" reply to it is in the transcript too: the MX stores the
    message first and answers after, so for a moment the file is there but the reply
    (which journey_of reads) is not yet."""
    deadline = time.monotonic() + timeout
    while not (lab.mailbox(address)["subject"] == subject).any():
        assert time.monotonic() < deadline, f"{subject!r} never reached {address}"
        time.sleep(0.02)
    while True:
        mx = lab.transcript(protocol="SMTP")
        mx = mx[mx["role"] == "mx"]
        data = mx.index[(mx["direction"] == "C") & (mx["line"] == f"Subject: {subject}")]
        if len(data):
            after = mx.loc[data[-1] :]
            if ((after["direction"] == "S") & after["line"].str.contains(" delivered ")).any():
                return
        assert time.monotonic() < deadline, f"the MX never answered 250 for {subject!r}"
        time.sleep(0.02)


def uid_of(lab: mk.Lab, address: str, subject: str) -> int:
    box = lab.mailbox(address)
    return int(box[box["subject"] == subject].iloc[0]["uid"])


def all_done(journey: MessageJourney) -> bool:
    """Every hop happened (the relay may have used a DNS answer it still remembered)."""
    return all(
        hop.status == DONE or (hop.key == "dns" and hop.status == CACHED) for hop in journey.hops
    )


def check_hops(lab: mk.Lab, journey: MessageJourney) -> None:
    """What every journey satisfies: the seven hops in order; the times of the hops that
    happened never go back; each session a hop names exists in the transcript."""
    assert [hop.key for hop in journey.hops] == KEYS
    times = [t for hop in journey.hops if hop.status == DONE for t in (hop.start, hop.end)]
    assert all(t is not None for t in times)
    assert times == sorted(times), journey.frame()
    sessions = set(lab.transcript()["session"])
    for hop in journey.hops:
        assert set(hop.sessions) <= sessions, hop
        if hop.status == DONE:
            assert hop.spent is not None and hop.spent >= pd.Timedelta(0)
        if hop.status in (NOT_YET, MISSING):
            assert hop.start is None and hop.end is None


@pytest.fixture(scope="module")
def lab():
    with mk.start_lab(**FAST) as lab:
        yield lab


@pytest.fixture(scope="module")
def delivered(lab):
    """alice → carol, delivered, not yet retrieved: (lab, Message-ID)."""
    send(lab, ALICE, [CAROL], "Lunch on Friday?", "lunch.1@north.test")
    arrived(lab, CAROL, "Lunch on Friday?")
    return "lunch.1@north.test"


def test_a_delivered_message_has_five_hops_done_and_two_not_yet(lab, delivered):
    """Before anyone reads it: sender, MSA, DNS, MX, MDA done; POP3/IMAP and the
    recipient's MUA "not yet"; each hop's evidence is the right transcript session."""
    journey = journey_of(lab, f"<{delivered}>")
    check_hops(lab, journey)
    assert [hop.status for hop in journey.hops] == [DONE] * 5 + [NOT_YET] * 2
    assert [hop.name for hop in journey.hops][:5] == [
        "Sender's MUA",
        "MSA",
        "DNS",
        "MX",
        "MDA",
    ]
    assert journey.message_id == delivered and journey.subject == "Lunch on Friday?"
    assert (journey.sender, journey.recipient) == (ALICE, CAROL)
    assert journey.stored == (CAROL, "INBOX", uid_of(lab, CAROL, "Lunch on Friday?"))
    assert journey.delivered and not journey.retrieved

    frame = lab.transcript()
    msa, dns, mx = journey.hop("msa"), journey.hop("dns"), journey.hop("mx")
    assert msa.host == "msa.north.test" and mx.host == "mx.south.test"
    first_id, last_id = journey.received[0].queue_id, journey.received[-1].queue_id
    msa_lines = frame[frame["session"] == msa.sessions[0]]["line"].tolist()
    assert f"250 2.0.0 OK: queued as {first_id}" in msa_lines
    mx_lines = frame[frame["session"] == mx.sessions[0]]["line"].tolist()
    assert any(line.endswith(f" as {last_id}") for line in mx_lines)
    assert "Subject: Lunch on Friday?" in mx_lines
    dns_lines = frame[frame["session"].isin(dns.sessions)]["line"].tolist()
    assert "south.test. IN MX?" in dns_lines and "mx.south.test. IN A?" in dns_lines
    # Hops fit together: the MSA starts where the sender's DATA ended, the MDA where
    # the relay's DATA ended at the MX.
    assert journey.hop("sender").end == msa.start and mx.end == journey.hop("mda").start
    assert journey.file and journey.file_mtime is not None
    assert "not yet" in to_svg(journey)


def test_received_headers_are_read_bottom_to_top(lab, delivered):
    """received[0] is the bottom header (the MSA's, ESMTPA), received[-1] the top (the MX's)."""
    journey = journey_of(lab, delivered)
    assert [r.by_host for r in journey.received] == ["msa.north.test", "mx.south.test"]
    assert journey.received[0].with_protocol == "ESMTPA"
    assert journey.received[1].from_host == "msa.north.test"
    assert all(r.for_address == CAROL for r in journey.received)


def test_after_pop3_retr_the_journey_is_complete(lab):
    """carol downloads with POP3 RETR: the POP3 hop names that session, and the
    recipient's MUA has it; the wait in the mailbox is the arrow's time."""
    send(lab, ALICE, [CAROL], "pop3 journey", "pop3.journey@north.test")
    arrived(lab, CAROL, "pop3 journey")
    box = lab.mailbox(CAROL)
    number = list(box["subject"]).index("pop3 journey") + 1
    pop3_retr(lab, CAROL, number)
    journey = journey_of(lab, "pop3.journey@north.test")
    check_hops(lab, journey)
    assert all_done(journey)
    retrieval = journey.hop("retrieval")
    assert retrieval.name == "POP3" and retrieval.host == "pop3.south.test"
    pop3 = lab.transcript(session=retrieval.sessions[0])
    assert pop3["protocol"].iloc[0] == "POP3"
    assert f"RETR {number}" in pop3["line"].tolist()
    assert f"RETR {number}" in retrieval.detail
    gaps = journey.gaps()
    assert gaps[4] == retrieval.start - journey.hop("mda").end > pd.Timedelta(0)
    assert journey.hop("recipient").start == retrieval.end
    assert "took it with POP3" in " ".join(journey.summary())


def test_imap_fetch_counts_only_whole_messages(lab):
    """dave fetches the header only (no), then BODY.PEEK[] (yes): the IMAP hop is the
    whole-message FETCH."""
    send(lab, BOB, [DAVE], "imap journey", "imap.journey@north.test")
    arrived(lab, DAVE, "imap journey")
    uid = uid_of(lab, DAVE, "imap journey")
    imap_fetch(lab, DAVE, uid, "(BODY.PEEK[HEADER])")
    assert journey_of(lab, "imap.journey@north.test").hop("retrieval").status == NOT_YET
    imap_fetch(lab, DAVE, uid, "(BODY.PEEK[])")
    journey = journey_of(lab, "imap.journey@north.test")
    check_hops(lab, journey)
    retrieval = journey.hop("retrieval")
    assert (retrieval.status, retrieval.name, retrieval.host) == (DONE, "IMAP", "imap.south.test")
    command = lab.transcript(session=retrieval.sessions[0], protocol="IMAP")
    assert any(f"UID FETCH {uid} (BODY.PEEK[])" in line for line in command["line"])
    assert journey.sender == BOB


def test_two_recipients_each_have_their_own_retrieval(lab):
    """One MX transaction delivers to carol and dave (one queue id); only carol reads
    it, so only carol's journey has a POP3 hop (told apart by Delivered-To)."""
    send(lab, ALICE, [CAROL, DAVE], "for both", "both@north.test")
    arrived(lab, CAROL, "for both")
    arrived(lab, DAVE, "for both")
    box = lab.mailbox(CAROL)
    pop3_retr(lab, CAROL, list(box["subject"]).index("for both") + 1)
    for_carol = journey_of(lab, "both@north.test", recipient=CAROL)
    for_dave = journey_of(lab, "both@north.test", recipient=DAVE)
    check_hops(lab, for_carol)
    check_hops(lab, for_dave)
    assert for_carol.hop("mx").sessions == for_dave.hop("mx").sessions
    assert for_carol.hop("retrieval").status == DONE
    assert for_dave.hop("retrieval").status == NOT_YET
    assert for_dave.recipient == DAVE and for_dave.stored[0] == DAVE


def test_the_transcript_alone_gives_the_same_journey(lab, delivered):
    """journey_of(lab.transcript(), subject): no store, same hops and sessions. Only the
    MSA's Received: header is in the transcript (in the DATA the relay sent); the MX
    writes its own as it stores the message."""
    from_lab = journey_of(lab, delivered)
    from_frame = journey_of(lab.transcript(), "Lunch on Friday?")
    assert [h.sessions for h in from_frame.hops] == [h.sessions for h in from_lab.hops]
    assert [h.start for h in from_frame.hops] == [h.start for h in from_lab.hops]
    assert from_frame.stored is None and from_frame.message_id == delivered
    assert [r.queue_id for r in from_frame.received] == [from_lab.received[0].queue_id]


def test_a_copy_deleted_with_pop3_still_has_its_journey(lab):
    """After RETR, DELE and QUIT the file is gone; the journey comes from the transcript,
    and says the message was deleted."""
    send(lab, BOB, [DAVE], "read and delete", "gone@north.test")
    arrived(lab, DAVE, "read and delete")
    box = lab.mailbox(DAVE)
    pop3_retr(lab, DAVE, list(box["subject"]).index("read and delete") + 1, delete=True)
    journey = journey_of(lab, "<gone@north.test>")
    check_hops(lab, journey)
    assert journey.stored is None
    assert all_done(journey)
    assert "deleted it from the server" in journey.hop("retrieval").detail


def test_the_last_delivered_message_is_the_default(lab, delivered):
    """journey_of(lab) with no message: the one an MX accepted last."""
    send(lab, BOB, [CAROL], "the latest", "latest@north.test")
    arrived(lab, CAROL, "the latest")
    assert journey_of(lab).message_id == "latest@north.test"


def test_unknown_message(lab):
    """A Message-ID or Subject nobody used: MessageNotFound, saying where it looked."""
    with pytest.raises(MessageNotFound, match="store or the transcript"):
        journey_of(lab, "<nobody@nowhere.test>")
    with pytest.raises(MessageNotFound, match="transcript"):
        journey_of(lab.transcript(), "no such subject")


def test_back_to_back_messages_reuse_the_relays_answers(fresh_lab):
    """Two messages in one SMTP session: the second finds the relay's DNS answer cached
    (or asks again, if a second went by) and perhaps its open MX connection."""
    with smtplib.SMTP("127.0.0.1", fresh_lab.port("msa.north.test"), timeout=10) as smtp:
        smtp.login(ALICE, fresh_lab.account(ALICE).password)
        send(fresh_lab, ALICE, [CAROL], "first of two", "one@north.test", smtp=smtp)
        send(fresh_lab, ALICE, [CAROL], "second of two", "two@north.test", smtp=smtp)
    fresh_lab.wait_for_mail(CAROL, 2)
    first = journey_of(fresh_lab, "one@north.test")
    second = journey_of(fresh_lab, "two@north.test")
    check_hops(fresh_lab, first)
    check_hops(fresh_lab, second)
    # One SMTP session at the MSA carried both messages: the second starts at its MAIL.
    assert first.hop("sender").sessions == second.hop("sender").sessions
    assert second.hop("sender").start > first.hop("msa").end
    dns = second.hop("dns")
    assert dns.status in (DONE, CACHED)
    if dns.status == CACHED:
        assert dns.start is None and dns.sessions == first.hop("dns").sessions[:1]
        assert "remembered" in dns.detail and "cached" in to_svg(second)


def test_a_bounce_has_no_sender_hops(fresh_lab):
    """A message to a user the MX does not know bounces: the bounce's journey starts at
    the relay (no MUA, no MSA: "missing"), then DNS, mx.north.test, alice's Maildir."""
    send(fresh_lab, ALICE, ["nobody@south.test"], "to nobody", "nobody@north.test")
    box = fresh_lab.wait_for_mail(ALICE)
    assert box["subject"].iloc[0] == "Undelivered Mail Returned to Sender"
    journey = journey_of(fresh_lab, "Undelivered Mail Returned to Sender")
    check_hops(fresh_lab, journey)
    assert [h.status for h in journey.hops[:2]] == [MISSING, MISSING]
    assert "bounce" in journey.hop("sender").detail
    assert journey.hop("mx").host == "mx.north.test" and journey.hop("mda").status == DONE
    assert journey.recipient == ALICE
    # The original is attached to the bounce, Message-ID and all: its own journey is
    # still the original's (it never reached an MX).
    original = journey_of(fresh_lab, "nobody@north.test")
    assert original.hop("msa").status == DONE
    assert original.hop("mx").status == NOT_YET and original.hop("mda").status == NOT_YET
    ET.fromstring(to_svg(journey))


def test_the_svg_is_xml_with_every_hop_and_escaped_text(fresh_lab):
    """to_svg gives one well-formed SVG element naming every hop, with the subject's
    markup escaped, the times on the boxes and a tooltip (title) per hop."""
    subject = 'Tom & Jerry <script>alert("x")</script>'
    send(fresh_lab, ALICE, [CAROL], subject, "svg@north.test")
    fresh_lab.wait_for_mail(CAROL)
    pop3_retr(fresh_lab, CAROL)
    journey = journey_of(fresh_lab, "svg@north.test")
    svg = to_svg(journey)
    assert "<script>" not in svg
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    texts = [el.text or "" for el in root.iter(f"{SVG}text")]
    for name in ("Sender's MUA", "MSA", "DNS", "MX", "MDA", "POP3", "Recipient's MUA"):
        assert name in texts, name
    assert any(subject in text for text in texts)
    assert format_duration(journey.hop("msa").spent) in texts
    groups = [g for g in root.iter(f"{SVG}g") if "mk-hop" in g.get("class", "")]
    assert len(groups) == 7
    assert all(g.find(f"{SVG}title") is not None for g in groups)
    assert journey._repr_svg_() == svg


def test_parse_received_and_format_duration():
    """The Received: parser takes the clauses apart; durations read like speech."""
    r = parse_received(
        "from msa.north.test (localhost [127.0.0.1])\r\n\tby mx.south.test (mailkit-edu) "
        "with ESMTP id 5EF1BA0FE0\r\n\tfor <carol@south.test>; Thu, 26 Nov 2026 17:39:25 +0000"
    )
    assert (r.from_host, r.by_host, r.with_protocol, r.queue_id, r.for_address) == (
        "msa.north.test",
        "mx.south.test",
        "ESMTP",
        "5EF1BA0FE0",
        "carol@south.test",
    )
    assert r.date is not None and r.date.hour == 17
    assert parse_received("garbage").by_host is None
    assert format_duration(pd.Timedelta(microseconds=840)) == "840 µs"
    assert format_duration(0.0035) == "3.5 ms"
    assert format_duration(1.237) == "1.24 s"
    assert format_duration(125) == "2 min 05 s"
    assert format_duration(None) == "?"


# -- the widget ----------------------------------------------------------------------------


def test_widget_lists_the_messages_and_shows_the_newest(fresh_lab):
    """With no mail the picture says so; after mail and Refresh the chooser lists every
    stored message, newest first, and the picture is the newest one's SVG."""
    view = Journey(fresh_lab)
    assert view.journey is None and view.message_chooser.options == ()
    assert "No message" in view.picture.value and view.svg == ""
    send(fresh_lab, ALICE, [CAROL], "widget one", "w1@north.test")
    fresh_lab.wait_for_mail(CAROL)
    send(fresh_lab, BOB, [DAVE], "widget two", "w2@north.test")
    fresh_lab.wait_for_mail(DAVE)
    view.refresh_button.click()
    values = [value for _, value in view.message_chooser.options]
    assert values[0] == (DAVE, "INBOX", 1) and (CAROL, "INBOX", 1) in values
    assert view.message_chooser.value == (DAVE, "INBOX", 1)
    assert view.journey.subject == "widget two"
    assert "<svg" in view.picture.value and view.svg in view.picture.value
    ET.fromstring(view.svg)
    assert "widget two" in view.message_chooser.options[0][0]
    assert "What happened at each hop" in view.hops_table.value

    view.message_chooser.value = (CAROL, "INBOX", 1)
    assert view.journey.subject == "widget one" and view.journey.recipient == CAROL
    assert "widget one" in view.picture.value


def test_widget_refresh_shows_the_retrieval(fresh_lab):
    """Journey(lab, message=...) picks that message; after carol downloads it, Refresh
    turns the grey POP3 hop into a done one."""
    send(fresh_lab, ALICE, [CAROL], "read me", "readme@north.test")
    fresh_lab.wait_for_mail(CAROL)
    view = Journey(fresh_lab, message="<readme@north.test>")
    assert view.message_chooser.value == (CAROL, "INBOX", 1)
    assert view.journey.hop("retrieval").status == NOT_YET
    pop3_retr(fresh_lab, CAROL, delete=True)
    view.refresh_button.click()
    check_hops(fresh_lab, view.journey)
    assert view.journey.hop("retrieval").status == DONE
    assert view.message_chooser.value is None  # the copy is gone: deleted with POP3
    assert "POP3" in view.picture.value


def test_widget_css_classes(fresh_lab):
    """Stable CSS classes for browser tests: the picture, the chooser, the button."""
    view = Journey(fresh_lab)
    assert "mk-journey" in view.picture._dom_classes
    assert "mk-journey-message" in view.message_chooser._dom_classes
    assert "mk-refresh" in view.refresh_button._dom_classes
    assert view._repr_mimebundle_() is not None
    with pytest.raises(MessageNotFound):
        view.show("no such message")
