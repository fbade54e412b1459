"""Compose, Inbox and TranscriptView in JupyterLab in a real browser.

The learner's path: send a message with Compose, press "Check now" in Carol's Inbox and
see it in the list; switch the Inbox to POP3 without "leave a copy on the server", check,
and see the server's copy gone. The screenshot of this test is the one in the README.
"""

from __future__ import annotations

import re

from .conftest import expect, open_notebook, run_all_cells, wait_until_executed

START = """\
import mailkit_edu as mk
from mailkit_edu.widgets import Compose, Inbox, TranscriptView

lab = mk.start_lab()"""

WIDGETS = """\
import ipywidgets as widgets

compose = Compose(lab, "alice@north.test")
inbox = Inbox(lab, "carol@south.test", "IMAP")
view = TranscriptView(lab, rows=12)
widgets.VBox([widgets.HBox([compose.widget, inbox.widget]), view.widget])"""


def test_send_check_and_download_with_pop3(page, jupyter_lab, artifacts):
    open_notebook(page, jupyter_lab, jupyter_lab.notebook([START, WIDGETS], "mail-widgets"))
    run_all_cells(page)
    send = page.locator(".mk-send")
    expect(send).to_be_visible()
    wait_until_executed(page)

    page.locator(".mk-to input").fill("carol@south.test")
    page.locator(".mk-subject input").fill("Lunch on Friday?")
    page.locator(".mk-body textarea").fill("Hi Carol, lunch on Friday at noon?")
    send.click()
    expect(page.locator(".mk-status")).to_contain_text("Sent")
    expect(page.locator(".mk-status")).to_contain_text("250")

    # IMAP: check now until the relay has delivered (a second at most), see it in the list.
    messages = page.locator(".mk-messages select")
    check = page.locator(".mk-check")
    for _ in range(20):
        check.click()
        expect(page.locator(".mk-cost")).to_contain_text("lines")
        if "Lunch on Friday?" in messages.inner_text():
            break
        page.wait_for_timeout(250)
    expect(messages).to_contain_text("Lunch on Friday?")
    expect(page.locator(".mk-inbox .mk-error:visible")).to_have_count(0)
    expect(page.locator(".mk-transcript-table")).to_contain_text("FETCH")

    # Open it: the reader shows the body.
    messages.select_option(index=0)
    expect(page.locator(".mk-reader")).to_contain_text("lunch on Friday at noon")
    page.set_viewport_size({"width": 1400, "height": 1500})
    page.locator(".mk-compose").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "compose_inbox_transcript.png"))
    # The widgets alone (the README's picture: docs/images/widgets.png).
    page.locator(".jp-OutputArea-output", has=page.locator(".mk-compose")).screenshot(
        path=str(artifacts / "widgets.png")
    )
    page.set_viewport_size({"width": 1280, "height": 800})

    # POP3 without a copy on the server: downloaded here, gone there.
    page.locator(".mk-protocol button", has_text="POP3").click()
    page.locator(".mk-keep input[type=checkbox]").uncheck()
    check.click()
    expect(page.locator(".mk-inbox-status")).to_contain_text(re.compile("deleted from the server"))
    expect(messages).to_contain_text("Lunch on Friday?")
    page.locator(".mk-protocol button", has_text="IMAP").click()
    check.click()
    expect(page.locator(".mk-inbox-status")).to_contain_text("0 messages in INBOX")
    expect(page.locator(".mk-error:visible")).to_have_count(0)
    wait_until_executed(page)
    page.screenshot(path=str(artifacts / "pop3_took_it.png"), full_page=True)
