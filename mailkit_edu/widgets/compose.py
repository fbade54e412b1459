"""Compose: write a message and send it through your provider's MSA, like a mail client.

Role
    The first half of the MUA. The learner picks a sender (one of the lab's accounts),
    fills To, Cc, Bcc, Subject and Body, may attach files, and presses **Send**. The
    widget submits through the sender's MSA with :func:`mailkit_edu.mua.send` (EHLO,
    STARTTLS when offered, AUTH, MAIL FROM, RCPT TO, DATA) and shows:

    * the final SMTP reply, code and text, coloured by class (``mk-status``);
    * the transcript rows of that very session, so the protocol is right there
      (``mk-compose-transcript``);
    * what went wrong, in plain words (a 530, a 535, a 550, a 552, a stopped server,
      a malformed address), without losing anything the learner typed.

    The fields are never cleared by a failure; **New message** (``mk-new``) clears them.

Stable CSS classes: ``mk-compose``, ``mk-from``, ``mk-to``, ``mk-cc``, ``mk-bcc``,
``mk-subject``, ``mk-body``, ``mk-attach``, ``mk-send``, ``mk-new``, ``mk-status``,
``mk-compose-transcript``. The logic is :meth:`Compose.send`; the button calls it.
"""

from __future__ import annotations

import html
import mimetypes
from typing import TYPE_CHECKING

import ipywidgets as widgets

from .. import mua
from ._base import WidgetBase, css
from .transcript_rows import rows_since, rows_table

if TYPE_CHECKING:
    from ..lab import Lab

__all__ = ["Compose"]


class Compose(WidgetBase):
    """A compose window for one lab: From, To, Cc, Bcc, Subject, Body, attachments, Send."""

    def __init__(
        self,
        lab: Lab,
        sender: str | None = None,
        *,
        to: str = "",
        subject: str = "",
        body: str = "",
        password: str | None = None,
    ) -> None:
        super().__init__()
        self.lab = lab
        #: The password to log in with; None: the account's password in the lab.
        self.password = password
        addresses = list(lab.accounts["address"])
        self.sender = css(
            widgets.Dropdown(
                options=addresses,
                value=(sender or addresses[0]).lower(),
                description="From",
            ),
            "mk-from",
        )
        self.to = css(
            widgets.Text(value=to, description="To", placeholder="carol@south.test"), "mk-to"
        )
        self.cc = css(widgets.Text(description="Cc"), "mk-cc")
        self.bcc = css(widgets.Text(description="Bcc"), "mk-bcc")
        self.subject = css(widgets.Text(value=subject, description="Subject"), "mk-subject")
        self.body = css(
            widgets.Textarea(value=body, description="Body", layout=widgets.Layout(height="8em")),
            "mk-body",
        )
        self.upload = css(widgets.FileUpload(description="Attach", multiple=True), "mk-attach")
        self.send_button = css(
            widgets.Button(description="Send", icon="paper-plane", button_style="primary"),
            "mk-send",
        )
        self.new_button = css(widgets.Button(description="New message"), "mk-new")
        self.status = css(widgets.HTML(), "mk-status")
        self.session_rows = css(widgets.HTML(), "mk-compose-transcript")
        #: Attachments added with :meth:`attach` (the upload button adds its own).
        self.attachments: list[mua.Attachment] = []
        #: The :class:`~mailkit_edu.mua.SendResult` of the last Send.
        self.last_result: mua.SendResult | None = None
        self.send_button.on_click(self.guard(lambda _: self.send(), "Send"))
        self.new_button.on_click(self.guard(lambda _: self.new_message(), "New message"))
        for field in (self.sender, self.to, self.cc, self.bcc, self.subject, self.body):
            field.layout.width = "100%"
            field.style.description_width = "4.5em"
        for button in (self.upload, self.send_button, self.new_button):
            button.layout.width = "auto"
        self.widget = css(
            widgets.VBox(
                [
                    self.sender,
                    self.to,
                    self.cc,
                    self.bcc,
                    self.subject,
                    self.body,
                    widgets.HBox([self.upload, self.send_button, self.new_button]),
                    self.status,
                    self.errors.widget,
                    self.session_rows,
                ]
            ),
            "mk-compose",
        )
        # Share a row fairly with other widgets (an HBox of Compose and Inbox).
        self.widget.layout = widgets.Layout(flex="1 1 0%", min_width="22em", padding="0 8px")

    # -- logic ------------------------------------------------------------------------

    def attach(self, filename: str, data: bytes, content_type: str | None = None) -> None:
        """Add an attachment (the upload button does the same for files you pick)."""
        guessed = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        self.attachments.append(mua.Attachment(filename, bytes(data), guessed))

    def all_attachments(self) -> list[mua.Attachment]:
        """The attachments added with :meth:`attach` and those picked with the upload button."""
        uploaded = [
            mua.Attachment(
                item["name"],
                bytes(item["content"]),
                item.get("type")
                or mimetypes.guess_type(item["name"])[0]
                or "application/octet-stream",
            )
            for item in self.upload.value
        ]
        return [*self.attachments, *uploaded]

    def send(self) -> mua.SendResult:
        """Submit the message as it stands; show the outcome; keep every field as typed."""
        self.errors.clear()
        sender = self.sender.value
        start = len(self.lab.transcript_log)
        self.status.value = "<i>sending…</i>"
        result = mua.send(
            self.lab,
            sender,
            self.password if self.password is not None else self.lab.account(sender).password,
            to=self.to.value,
            cc=self.cc.value,
            bcc=self.bcc.value,
            subject=self.subject.value,
            body=self.body.value,
            attachments=self.all_attachments(),
        )
        self.last_result = result
        self.status.value = self._status_html(result)
        msa = f"msa.{sender.rpartition('@')[2]}"
        session = rows_table(rows_since(self.lab, start, server=msa), server_column=False)
        self.session_rows.value = (
            f"<details><summary>the session at {html.escape(msa)}</summary>{session}</details>"
            if session
            else ""
        )
        return result

    def new_message(self) -> None:
        """Clear the message fields (not the sender) for a new message."""
        for field in (self.to, self.cc, self.bcc, self.subject, self.body):
            field.value = ""
        self.attachments.clear()
        self.upload.value = ()
        self.status.value = ""
        self.session_rows.value = ""
        self.errors.clear()

    # -- view -------------------------------------------------------------------------

    @staticmethod
    def _status_html(result: mua.SendResult) -> str:
        code = "" if result.code is None else f"{result.code} "
        if result.ok:
            colour, words = "#2e7d32", "Sent"
            if result.refused:
                refused = ", ".join(
                    f"{address} ({reply[0]} {reply[1]})"
                    for address, reply in result.refused.items()
                )
                words = f"Sent, but refused for {refused}"
        else:
            colour, words = "#c62828", f"Not sent: {result.error or result.text}"
        reply = f" — the server said <code>{html.escape(code + result.text)}</code>"
        return f'<span style="color:{colour}"><b>{html.escape(words)}</b></span>{reply}'
