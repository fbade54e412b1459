"""A lab in JupyterLab in a real browser: the servers table renders, and a widget button
sends a message through the lab's MSA that arrives in Carol's INBOX."""

from __future__ import annotations

import re

from .conftest import expect, open_notebook, run_all_cells, wait_until_executed

START_LAB = """\
import mailkit_edu as mk

lab = mk.start_lab()
lab.servers"""

SEND_BUTTON = """\
import smtplib
from email.message import EmailMessage

import ipywidgets as widgets
from IPython.display import display

send = widgets.Button(description="Send to Carol")
send.add_class("t-send")
count = widgets.Label(value="not sent")
count.add_class("t-count")


def on_send(_):
    count.value = "sending"
    try:
        message = EmailMessage()
        message["From"] = "alice@north.test"
        message["To"] = "carol@south.test"
        message["Subject"] = "Hello from the browser"
        message.set_content("Hi Carol!")
        with smtplib.SMTP("127.0.0.1", lab.port("msa.north.test"), timeout=10) as smtp:
            smtp.login("alice@north.test", lab.account("alice@north.test").password)
            smtp.send_message(message)
        box = lab.wait_for_mail("carol@south.test")
        count.value = str(int((box["folder"] == "INBOX").sum()))
    except Exception as error:  # a browser test sees no traceback from a callback
        count.value = f"error: {error!r}"


send.on_click(on_send)
display(widgets.VBox([send, count]))"""


def test_servers_table_and_send_button(page, jupyter_lab, artifacts):
    open_notebook(page, jupyter_lab, jupyter_lab.notebook([START_LAB, SEND_BUTTON], "lab"))
    run_all_cells(page)

    # lab.servers rendered as pandas' HTML table, not as text.
    table = page.locator(".jp-OutputArea-output table.dataframe")
    expect(table.get_by_role("cell", name="imap.north.test", exact=True)).to_be_visible()

    button = page.locator(".jp-OutputArea-output .t-send")
    label = page.locator(".jp-OutputArea-output .t-count")
    expect(button).to_be_visible()  # the live widget view, not the "VBox(...)" text fallback
    expect(label).to_have_text("not sent")
    wait_until_executed(page)

    button.click()
    # The callback runs in the kernel: wait for its outcome, whatever it is, then check it.
    expect(label).to_have_text(re.compile(r"^(\d+|error: .*)$"))
    assert label.inner_text() == "1"
    wait_until_executed(page)  # kernel idle again: a stable screenshot
    page.screenshot(path=str(artifacts / "lab_in_browser.png"))
