"""TranscriptView, headless: real labs, real mail, assertions on widget traits and state.

The mail goes through the lab with smtplib (AUTH at the MSA), poplib and imaplib; the
view's filters are changed by setting the filter widgets' ``.value`` and its buttons
by ``.click()``. Every assertion is on ``rows_shown``, ``total_matching``, ``html``,
widget traits or the lab's own ``lab.transcript()`` (never on captured output).
"""

from __future__ import annotations

import asyncio
import imaplib
import poplib
import smtplib
import time
import xml.etree.ElementTree as ET

import pytest

import mailkit_edu as mk
from mailkit_edu import relay, widgets
from mailkit_edu.transcript import Transcript
from mailkit_edu.widgets import TranscriptView
from mailkit_edu.widgets import _base as base
from mailkit_edu.widgets.transcript import code_class

ALICE, CAROL, DAVE = "alice@north.test", "carol@south.test", "dave@south.test"


@pytest.fixture(autouse=True)
def strict_widgets():
    """Widget callback errors fail the test (they would only show in the widget)."""
    before = base.STRICT
    widgets.strict(True)
    yield
    widgets.strict(before)


def send(lab: mk.Lab, sender: str, rcpts: list[str], subject: str, body: str = "Hi!") -> None:
    """Submit a message at the sender's MSA, logged in as the sender."""
    domain = sender.rpartition("@")[2]
    data = f"From: <{sender}>\r\nTo: <{rcpts[0]}>\r\nSubject: {subject}\r\n\r\n{body}\r\n"
    with smtplib.SMTP("127.0.0.1", lab.port(f"msa.{domain}"), timeout=10) as smtp:
        smtp.login(sender, lab.account(sender).password)
        smtp.sendmail(sender, rcpts, data.encode())


def settle(lab: mk.Lab) -> None:
    """Wait until the transcript stops growing (the relay's QUIT, the MX's 221...)."""
    last = -1
    while len(lab.transcript_log) != last:
        last = len(lab.transcript_log)
        time.sleep(0.2)


@pytest.fixture(scope="module", autouse=True)
def short_connection_reuse():
    """The relay hangs up on an MX 50 ms after a message, not 2 s: sessions end soon,
    so the transcript settles between the steps of a test."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(relay, "CONNECTION_REUSE_SECONDS", 0.05)
        yield


@pytest.fixture(scope="module")
def mail_lab(short_connection_reuse):
    """A lab where alice wrote to carol, who read it with POP3, and dave, with IMAP."""
    with mk.start_lab(retry_schedule=(0.2, 0.4), auth_failure_delay=0.01) as lab:
        send(lab, ALICE, [CAROL, DAVE], "<b>Lunch</b> & <script>alert(1)</script>")
        lab.wait_for_mail(CAROL)
        lab.wait_for_mail(DAVE)
        pop = poplib.POP3("127.0.0.1", lab.port("pop3.south.test"), timeout=10)
        pop.user(CAROL)
        pop.pass_(lab.account(CAROL).password)
        pop.retr(1)
        pop.quit()
        imap = imaplib.IMAP4("127.0.0.1", lab.port("imap.south.test"), timeout=10)
        imap.login(DAVE, lab.account(DAVE).password)
        imap.select("INBOX")
        imap.uid("FETCH", "1", "(BODY.PEEK[])")
        imap.logout()
        settle(lab)
        yield lab


def expected(lab: mk.Lab, view: TranscriptView | None = None, **filters) -> list[int]:
    """The transcript row indexes that pass ``filters`` (server, protocol, session,
    direction), as lab.transcript() computes them; only those the view has read."""
    direction = filters.pop("direction", None)
    frame = lab.transcript(**filters)
    if direction is not None:
        frame = frame[frame["direction"] == direction]
    if view is not None:
        frame = frame[frame.index < view.rows_read]
    return frame.index.tolist()


def test_shows_the_last_lines_newest_last(mail_lab):
    """Unfiltered, the view counts every transcript line and shows the last ``rows``,
    oldest first, newest at the bottom."""
    view = TranscriptView(mail_lab, rows=50, live=False)
    everything = expected(mail_lab, view)
    assert view.total_matching == len(everything) == view.rows_read
    assert view.rows_shown == everything[-50:]
    assert "showing 50 of" in view.status.value
    last_row = view.html.rsplit("<tr", 1)[1]
    assert f'<td class="mk-n">{everything[-1]}</td>' in last_row


@pytest.mark.parametrize(
    "control, value, filters",
    [
        ("server_filter", "mx.south.test", {"server": "mx.south.test"}),
        ("protocol_filter", "POP3", {"protocol": "POP3"}),
        ("protocol_filter", "DNS", {"protocol": "DNS"}),
        ("direction_filter", "C", {"direction": "C"}),
        ("direction_filter", "S", {"direction": "S"}),
    ],
)
def test_each_filter_matches_lab_transcript(mail_lab, control, value, filters):
    """Setting a filter widget's value gives the rows lab.transcript() gives for it."""
    view = TranscriptView(mail_lab, rows=20, live=False)
    getattr(view, control).value = value
    rows = expected(mail_lab, view, **filters)
    assert view.total_matching == len(rows) > 0
    assert view.rows_shown == rows[-20:]


def test_filters_combine_and_session_is_typed(mail_lab):
    """Server, session and direction together: only the client lines of one POP3 session."""
    pop3 = mail_lab.transcript(server="pop3.south.test")
    session = int(pop3["session"].iloc[0])
    view = TranscriptView(mail_lab, live=False)
    view.server_filter.value = "pop3.south.test"
    view.session_filter.value = str(session)
    view.direction_filter.value = "C"
    rows = expected(mail_lab, view, server="pop3.south.test", session=session, direction="C")
    assert view.rows_shown == rows and view.total_matching == len(rows)
    assert "RETR 1" in view.html and "+OK" not in view.html.split("</style>")[1]
    view.session_filter.value = ""  # empty: every session again
    assert view.total_matching == len(
        expected(mail_lab, view, server="pop3.south.test", direction="C")
    )


def test_constructor_arguments_set_the_filters(mail_lab):
    """TranscriptView(lab, server=, protocol=, session=, direction=) starts filtered,
    with the filter widgets showing those values."""
    msa = mail_lab.transcript(server="msa.north.test")
    session = int(msa["session"].iloc[0])
    view = TranscriptView(
        mail_lab,
        server="msa.north.test",
        protocol="smtp",
        session=session,
        direction="S",
        live=False,
    )
    assert view.server_filter.value == "msa.north.test"
    assert view.protocol_filter.value == "SMTP"
    assert view.session_filter.value == str(session)
    assert view.direction_filter.value == "S"
    assert view.rows_shown == expected(
        mail_lab, view, server="msa.north.test", session=session, direction="S"
    )
    with pytest.raises(ValueError, match="no server called"):
        TranscriptView(mail_lab, server="mx.nowhere.test", live=False)
    with pytest.raises(ValueError, match="direction"):
        TranscriptView(mail_lab, direction="X", live=False)


def test_a_bad_session_number_shows_an_error_and_keeps_the_filter(mail_lab):
    """A session that is not a number: in strict mode the callback raises; otherwise the
    error shows in the widget's error area and the table keeps its rows."""
    view = TranscriptView(mail_lab, protocol="DNS", live=False)
    before = list(view.rows_shown)
    with pytest.raises(ValueError, match="session is a number"):
        view.session_filter.value = "three"
    assert "session is a number" in view.errors.text
    widgets.strict(False)
    view.session_filter.value = "four"
    assert "four" in view.errors.text
    assert view.rows_shown == before
    view.session_filter.value = ""
    assert view.errors.text == ""


def test_every_line_is_escaped(mail_lab):
    """A subject with HTML in it shows as text: the table's HTML has no live tag from it."""
    view = TranscriptView(mail_lab, server="mx.south.test", live=False)
    assert "Subject: &lt;b&gt;Lunch&lt;/b&gt; &amp; &lt;script&gt;alert(1)&lt;/script&gt;" in (
        view.html
    )
    assert "<script>" not in view.html and "<b>Lunch" not in view.html
    # Well-formed markup: the table (after its style block) parses as XML.
    ET.fromstring("<div>" + view.html.split("</style>", 1)[1])


def test_client_and_server_lines_and_codes_are_told_apart(mail_lab):
    """C and S rows carry different classes; reply codes carry their colour class."""
    view = TranscriptView(mail_lab, rows=10_000, live=False)
    html = view.html
    assert 'class="mk-C"' in html and 'class="mk-S"' in html
    assert 'class="mk-C mk-data"' in html  # message content lines after DATA
    for code, css in [("250", "mk-code-2"), ("354", "mk-code-3"), ("+OK", "mk-code-2")]:
        assert f'<span class="mk-code {css}">{code}</span>' in html
    assert '<span class="mk-code mk-code-2">OK</span>' in html  # IMAP tagged OK
    assert '<span class="mk-code mk-code-bye">BYE</span>' in html  # IMAP LOGOUT
    assert '<span class="mk-code mk-code-2">NOERROR</span>' in html  # DNS


def test_code_classes():
    """Reply codes are coloured by their meaning in every protocol of the lab."""
    assert code_class("250") == "mk-code-2"
    assert code_class("354") == "mk-code-3"
    assert code_class("451") == "mk-code-4"
    assert code_class("550") == "mk-code-5"
    assert [code_class(c) for c in ("+OK", "-ERR")] == ["mk-code-2", "mk-code-5"]
    assert [code_class(c) for c in ("OK", "NO", "BAD", "BYE")] == [
        "mk-code-2",
        "mk-code-4",
        "mk-code-5",
        "mk-code-bye",
    ]
    assert code_class(None) == "" and code_class("NXDOMAIN") == "mk-code-5"


def test_refusals_are_red_and_orange(fresh_lab):
    """A refused login (535), an injected 451 and a POP3 -ERR get the red and orange
    classes in the table."""
    fresh_lab.inject("msa.north.test", command="MAIL", reply="451 4.7.1 Try again later")
    with smtplib.SMTP("127.0.0.1", fresh_lab.port("msa.north.test"), timeout=10) as smtp:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login(ALICE, "wrong")
        smtp.login(ALICE, fresh_lab.account(ALICE).password)
        with pytest.raises(smtplib.SMTPSenderRefused):
            smtp.sendmail(ALICE, [CAROL], b"Subject: x\r\n\r\nx\r\n")
    pop = poplib.POP3("127.0.0.1", fresh_lab.port("pop3.south.test"), timeout=10)
    pop.user(CAROL)
    with pytest.raises(poplib.error_proto):
        pop.pass_("wrong")
    pop.close()
    view = TranscriptView(fresh_lab, live=False)
    assert '<span class="mk-code mk-code-5">535</span>' in view.html
    assert '<span class="mk-code mk-code-4">451</span>' in view.html
    assert '<span class="mk-code mk-code-5">-ERR</span>' in view.html


def test_refresh_reads_new_lines_and_redraws_only_when_the_window_changes(fresh_lab):
    """New lines appear at refresh (the button or the method), not before; a refresh with
    nothing new, or with new lines the filters hide, leaves the table's HTML alone."""
    view = TranscriptView(fresh_lab, server="mx.south.test", live=False)
    assert view.total_matching == 0 and "no lines yet" in view.html
    redraws = []
    view.table.observe(lambda change: redraws.append(change), names="value")
    send(fresh_lab, ALICE, [CAROL], "first")
    fresh_lab.wait_for_mail(CAROL)
    settle(fresh_lab)
    assert view.total_matching == 0  # nothing moves by itself without a loop
    view.refresh_button.click()
    assert view.rows_shown == expected(fresh_lab, view, server="mx.south.test")
    assert len(redraws) == 1 and "Subject: first" in view.html
    view.refresh()
    assert len(redraws) == 1  # nothing new: nothing redrawn
    with smtplib.SMTP("127.0.0.1", fresh_lab.port("msa.north.test"), timeout=10) as smtp:
        smtp.noop()  # lines at the MSA only: hidden by the filter
    settle(fresh_lab)
    view.refresh()
    assert len(redraws) == 1
    assert view.total_matching == len(expected(fresh_lab, view, server="mx.south.test"))
    send(fresh_lab, ALICE, [CAROL], "second")
    fresh_lab.wait_for_mail(CAROL, 2)
    settle(fresh_lab)
    view.refresh()
    assert len(redraws) == 2 and "Subject: second" in view.html
    assert view.rows_shown == expected(fresh_lab, view, server="mx.south.test")


def test_older_and_newer_page_through_the_matching_lines(mail_lab):
    """With a window of 7 rows, older shows the 7 before, newer comes back, and at the
    end the view follows new lines again; the buttons are disabled at the ends."""
    view = TranscriptView(mail_lab, server="msa.north.test", rows=7, live=False)
    rows = expected(mail_lab, view, server="msa.north.test")
    assert view.rows_shown == rows[-7:] and view.newer_button.disabled
    view.older_button.click()
    assert view.rows_shown == rows[-14:-7]
    assert "newer" in view.status.value and not view.newer_button.disabled
    for _ in range(len(rows)):
        view.older_button.click()
    assert view.rows_shown == rows[:7] and view.older_button.disabled
    for _ in range(len(rows)):
        view.newer_button.click()
    assert view.rows_shown == rows[-7:] and "following new lines" in view.status.value


def test_a_paged_window_stays_put_while_lines_arrive(fresh_lab):
    """Looking at older lines, new lines do not move the window; newer reaches them."""
    send(fresh_lab, ALICE, [CAROL], "one")
    fresh_lab.wait_for_mail(CAROL)
    settle(fresh_lab)
    view = TranscriptView(fresh_lab, rows=5, live=False)
    view.older()
    window = list(view.rows_shown)
    send(fresh_lab, ALICE, [CAROL], "two")
    fresh_lab.wait_for_mail(CAROL, 2)
    settle(fresh_lab)
    view.refresh()
    assert view.rows_shown == window
    assert view.total_matching == view.rows_read == len(expected(fresh_lab, view))
    while not view.newer_button.disabled:
        view.newer()
    assert view.rows_shown == expected(fresh_lab, view)[-5:]


def test_live_view_follows_new_lines_on_the_running_loop(fresh_lab):
    """With an asyncio loop running (as in Jupyter), the view refreshes by itself every
    interval; lines recorded from the lab's thread only set a flag, so the table does
    not change between ticks; stop() ends it and leaves the transcript's listeners."""
    log = fresh_lab.transcript_log

    async def scenario() -> None:
        view = TranscriptView(fresh_lab, server="mx.south.test", interval=0.05)
        assert view.live and len(log.listeners) == 1
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, send, fresh_lab, ALICE, [CAROL], "live")
        assert view.total_matching == 0  # recorded in the lab's thread: no redraw there
        deadline = loop.time() + 10
        while "Subject: live" not in view.html:
            assert loop.time() < deadline, "the live view never showed the new lines"
            await asyncio.sleep(0.02)
        assert view.total_matching > 0
        view.stop()
        assert not view.live and log.listeners == []
        shown = view.total_matching
        await loop.run_in_executor(None, send, fresh_lab, ALICE, [CAROL], "after stop")
        await loop.run_in_executor(None, fresh_lab.wait_for_mail, CAROL, 2)
        await asyncio.sleep(0.2)
        assert view.total_matching == shown

    asyncio.run(scenario())


def test_without_a_loop_live_does_nothing(mail_lab):
    """In a plain script no loop runs: the view is not live and adds no listener."""
    view = TranscriptView(mail_lab)
    assert not view.live
    assert not view.start()
    assert mail_lab.transcript_log.listeners == []
    view.stop()  # harmless


def test_css_classes_for_browser_tests(mail_lab):
    """The stable CSS classes the browser tests look for are on the right widgets."""
    view = TranscriptView(mail_lab, live=False)
    assert "mk-transcript" in view.widget._dom_classes
    assert "mk-filter-server" in view.server_filter._dom_classes
    assert "mk-filter-protocol" in view.protocol_filter._dom_classes
    assert "mk-filter-session" in view.session_filter._dom_classes
    assert "mk-filter-direction" in view.direction_filter._dom_classes
    assert "mk-transcript-table" in view.table._dom_classes
    assert "mk-refresh" in view.refresh_button._dom_classes
    assert view._repr_mimebundle_() is not None


def test_a_bare_transcript_and_servers_registered_later():
    """The view also takes a Transcript; a server registered after the view was made
    appears in the server filter and its lines are counted."""
    log = Transcript()
    first = log.register_server("one", "mx", "SMTP")
    log.record(first, 1, True, "HELO a")
    view = TranscriptView(log, live=False)
    assert view.total_matching == 1
    second = log.register_server("two", "pop3", "POP3")
    log.record(second, 2, False, "+OK ready", code="+OK")
    view.refresh()
    assert "two" in [value for _, value in view.server_filter.options]
    view.protocol_filter.value = "POP3"
    assert view.rows_shown == [1]
    with pytest.raises(TypeError):
        TranscriptView(object())


def test_filters_set_first_apply_to_lines_recorded_later():
    """A session and direction filter chosen before the lines exist: each refresh adds
    exactly the new lines that pass it (the same as filtering everything again)."""
    log = Transcript()
    smtp = log.register_server("mx.south.test", "mx", "SMTP")
    view = TranscriptView(log, live=False)
    view.session_filter.value = "7"
    view.direction_filter.value = "C"
    for batch in range(3):
        for i in range(300):
            log.record(smtp, 7 if i % 3 else 8, i % 2 == 0, f"line {batch}.{i}")
        view.refresh()
        wanted = [
            n for n in range(len(log)) if (n % 300) % 3 and (n % 300) % 2 == 0
        ]  # session 7, client lines
        assert view.total_matching == len(wanted)
        assert view.rows_shown == wanted[-view.rows :]
