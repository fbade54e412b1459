"""Compose and Inbox, headless: set values, click, and check the servers' state.

Nothing here reads ``with out:`` captures (invisible outside a browser): the tests read
widget traits (``.value``, ``.options``) and the lab (mailboxes, transcript).
"""

from __future__ import annotations

import asyncio
import time

import pytest

import mailkit_edu as mk
from mailkit_edu import widgets
from mailkit_edu.widgets import Compose, Inbox

from .conftest import FAST

ALICE, BOB, CAROL = "alice@north.test", "bob@north.test", "carol@south.test"


@pytest.fixture(autouse=True)
def strict_widgets():
    widgets.strict(True)
    yield
    widgets.strict(False)


def subjects(lab: mk.Lab, address: str, folder: str = "INBOX") -> list[str]:
    box = lab.mailbox(address)
    return list(box[box["folder"] == folder]["subject"])


def clear(lab: mk.Lab, address: str) -> None:
    store = lab.store
    store.expunge(address, "INBOX", [m.uid for m in store.messages(address)])


def compose(lab: mk.Lab, **values: str) -> Compose:
    window = Compose(lab, values.pop("sender", ALICE))
    for name, value in values.items():
        getattr(window, name).value = value
    return window


# --------------------------------------------------------------------------- Compose


def test_send_delivers_and_shows_the_reply_and_the_session():
    with mk.start_lab(**FAST) as lab:
        window = compose(lab, to=CAROL, cc=BOB, subject="Grüße aus dem Norden", body="Hallo!")
        window.attach("notes.txt", b"some notes\n" * 400)  # ~80 lines of base64
        window.send_button.click()
        result = window.last_result
        assert result is not None and result.ok and result.code == 250
        assert "250" in window.status.value and "Sent" in window.status.value
        lab.wait_for_mail(CAROL)
        lab.wait_for_mail(BOB)
        assert subjects(lab, CAROL) == ["Grüße aus dem Norden"]
        rows = window.session_rows.value.lower()  # smtplib writes "mail FROM:", "data"
        assert "mail from:&lt;alice@north.test&gt;" in rows
        assert "<code>data</code>" in rows and "msa.north.test" in rows
        assert "250 2.0.0 ok: queued" in rows and "more lines" in rows  # long: middle left out
        # nothing the user typed is lost
        assert window.to.value == CAROL and window.body.value == "Hallo!"


def test_bcc_is_delivered_but_not_shown():
    with mk.start_lab(**FAST) as lab:
        window = compose(lab, to=CAROL, bcc=BOB, subject="secret copy", body="x")
        window.send()
        lab.wait_for_mail(BOB)
        stored = lab.store.read(BOB, "INBOX", lab.store.messages(BOB)[0].uid)
        assert b"secret copy" in stored and b"\nBcc:" not in stored and b"\r\nBcc:" not in stored


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("to", "", "recipient"),
        ("to", "carol@@south", "carol@@south"),
    ],
)
def test_bad_addresses_are_explained_and_nothing_is_lost(lab, field, value, words):
    window = compose(lab, to=CAROL, subject="keep me", body="my long text")
    getattr(window, field).value = value
    window.send_button.click()
    assert window.last_result is not None and not window.last_result.ok
    shown = window.status.value + window.errors.text
    assert words.lower() in shown.lower()
    assert "Traceback" not in shown
    assert window.subject.value == "keep me" and window.body.value == "my long text"


def test_a_stopped_msa_and_a_too_big_message_are_explained():
    with mk.start_lab(max_message_size=2000, **FAST) as lab:
        window = compose(lab, to=CAROL, subject="big", body="x" * 5000)
        window.send()
        assert window.last_result.code == 552 and "552" in window.status.value
        window.body.value = "small now"
        lab.stop_server("msa.north.test")
        window.send()
        assert not window.last_result.ok and window.last_result.code is None
        assert "msa.north.test" in window.status.value or "refused" in window.status.value
        lab.start_server("msa.north.test")
        window.send()
        assert window.last_result.ok
        lab.wait_for_mail(CAROL)
        assert subjects(lab, CAROL) == ["big"]


def test_a_wrong_password_is_explained_in_plain_words(lab):
    window = Compose(lab, ALICE, to=CAROL, subject="s", body="b", password="not-it")
    window.send_button.click()
    assert window.last_result.code == 535
    assert "535" in window.status.value and "password" in window.status.value.lower()
    inbox = Inbox(lab, CAROL, "IMAP", password="not-it")
    widgets.strict(False)
    inbox.check_button.click()
    assert "imap.south.test" in inbox.errors.text
    assert "password" in inbox.errors.text.lower() or "AUTHENTICATIONFAILED" in inbox.errors.text
    inbox.protocol.value = "POP3"
    inbox.check_button.click()
    assert "pop3.south.test" in inbox.errors.text
    inbox.close()


def test_new_message_clears_the_fields_but_not_the_sender(lab):
    window = compose(lab, sender=BOB, to=CAROL, subject="s", body="b")
    window.attach("a.bin", b"\0\1")
    window.new_button.click()
    assert (window.to.value, window.subject.value, window.body.value) == ("", "", "")
    assert window.attachments == [] and window.sender.value == BOB


# --------------------------------------------------------------------------- Inbox


def deliver(lab: mk.Lab, address: str, subject: str) -> None:
    lab.store.deliver(
        address,
        f"From: Alice <{ALICE}>\r\nTo: {address}\r\nSubject: {subject}\r\n"
        f"Date: Thu, 26 Nov 2026 10:00:00 +0000\r\n\r\nHello {subject}\r\n".encode(),
    )


def test_imap_check_lists_the_folder_and_opening_marks_seen():
    with mk.start_lab(**FAST) as lab:
        deliver(lab, CAROL, "first")
        deliver(lab, CAROL, "second")
        inbox = Inbox(lab, CAROL, "IMAP")
        inbox.check_button.click()
        labels = [label for label, _ in inbox.list.options]
        assert len(labels) == 2 and "first" in labels[0] and labels[0].startswith("●")
        assert "INBOX" in inbox.folder.options and "Sent" in inbox.folder.options
        lines, octets = inbox.last_cost
        assert lines > 0 and octets > lines * 2
        assert f"{lines}</b> lines" in inbox.cost_label.value
        inbox.list.value = inbox.list.options[0][1]  # what a click in the list does
        assert "Hello first" in inbox.reader.value
        uid = lab.store.messages(CAROL)[0].uid
        assert "\\Seen" in lab.store.get(CAROL, "INBOX", uid).flags
        inbox.flag_flagged.click()
        assert "\\Flagged" in lab.store.get(CAROL, "INBOX", uid).flags
        inbox.flag_seen.click()
        assert "\\Seen" not in lab.store.get(CAROL, "INBOX", uid).flags
        inbox.raw.value = True
        assert "Subject: first" in inbox.reader.value
        inbox.close()


def test_pop3_keep_then_delete_and_the_widget_says_so():
    with mk.start_lab(**FAST) as lab:
        deliver(lab, CAROL, "kept")
        inbox = Inbox(lab, CAROL, "POP3")
        inbox.check()
        assert [m.subject for m in inbox.messages] == ["kept"]
        assert subjects(lab, CAROL) == ["kept"]  # still on the server
        inbox.check()  # nothing new: the UIDL is known
        assert "0 new messages" in inbox.status.value
        deliver(lab, CAROL, "taken")
        inbox.keep.value = False
        inbox.check()
        assert [m.subject for m in inbox.messages] == ["kept", "taken"]
        assert subjects(lab, CAROL) == []  # both gone from the server
        assert "deleted from the server" in inbox.status.value
        inbox.list.value = inbox.list.options[1][1]
        assert "Hello taken" in inbox.reader.value


def test_a_stopped_server_is_explained_and_the_list_stays():
    with mk.start_lab(**FAST) as lab:
        deliver(lab, CAROL, "one")
        inbox = Inbox(lab, CAROL, "IMAP")
        inbox.check()
        lab.stop_server("imap.south.test")
        widgets.strict(False)
        inbox.check_button.click()
        assert "imap.south.test" in inbox.errors.text
        assert len(inbox.list.options) == 1
        lab.start_server("imap.south.test")
        inbox.check()
        assert inbox.errors.text == ""
        inbox.close()


def test_polling_needs_a_loop_and_says_so(lab):
    widgets.strict(False)
    inbox = Inbox(lab, CAROL, "IMAP")
    inbox.auto.value = True
    assert "running asyncio loop" in inbox.errors.text
    assert inbox.auto.value is False
    inbox.close()


def test_every_n_seconds_and_push_run_as_tasks_on_the_loop():
    async def scenario(lab: mk.Lab) -> tuple[int, float]:
        inbox = Inbox(lab, CAROL, "IMAP", interval=1)
        inbox.interval.value = 1
        inbox.auto.value = True  # a task on this loop
        await asyncio.sleep(0.3)
        polled = inbox.checks
        inbox.auto.value = False
        inbox.push.value = True
        await asyncio.wait_for(inbox.idling.wait(), 5)
        sent = time.monotonic()
        await asyncio.to_thread(deliver, lab, CAROL, "pushed")
        while not any(m.subject == "pushed" for m in inbox.messages):
            await asyncio.sleep(0.01)
            assert time.monotonic() - sent < 5
        latency = time.monotonic() - sent
        inbox.push.value = False
        inbox.close()
        return polled, latency

    with mk.start_lab(**FAST) as lab:
        polled, latency = asyncio.run(scenario(lab))
    assert polled >= 1
    assert latency < 2.0
