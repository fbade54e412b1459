"""Inbox: check for mail with POP3 or IMAP — now, every N seconds, or pushed with IDLE.

Role
    The second half of the MUA: one account's mailbox, as a mail client shows it.

    * **POP3** downloads. Each check opens a session, downloads the messages it has not
      seen before (by UIDL, as real clients do) and keeps them *here*, in the widget.
      With "leave a copy on the server" (``mk-keep``, on by default) the server keeps
      them too; untick it and every downloaded message is deleted on the server at
      QUIT, and the widget says so: another device will never see it.
    * **IMAP** reads the mailbox where it lives: the list *is* the server's folder
      (``mk-folder``), opening a message marks it ``\\Seen`` on the server, and the flag
      buttons (``mk-flag-seen``, ``mk-flag-flagged``) change flags there.
    * **When to check**: "Check now" (``mk-check``); "every N s" (``mk-interval`` and
      the switch ``mk-auto``): an asyncio task on the kernel's loop, cancellable; and
      for IMAP "push (IDLE)" (``mk-push``): a task that waits in IDLE and checks as
      soon as the server says something changed (RFC 2177).
    * **What a check costs** (``mk-cost``): the lines and bytes that crossed the wire
      for it, counted in the lab's transcript. Chapter 10 compares polling and push
      with these numbers.

The list (``mk-messages``) shows from, subject, date, size and flags; the reader
(``mk-reader``) shows headers, the text, the attachments, and the raw source on demand
(``mk-raw``). The logic is plain methods (:meth:`Inbox.check`, :meth:`Inbox.open`,
:meth:`Inbox.toggle_flag`, :meth:`Inbox.start_polling`, :meth:`Inbox.start_push`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import html
from typing import TYPE_CHECKING

import ipywidgets as widgets

from .. import mua
from ._base import WidgetBase, css
from .transcript_rows import cost, rows_since

if TYPE_CHECKING:
    from ..lab import Lab

__all__ = ["Inbox"]

PROTOCOLS = ("IMAP", "POP3")


class Inbox(WidgetBase):
    """The mailbox of ``address`` in ``lab``, read over POP3 or IMAP."""

    def __init__(
        self,
        lab: Lab,
        address: str,
        protocol: str = "IMAP",
        *,
        interval: int = 10,
        password: str | None = None,
    ) -> None:
        super().__init__()
        if protocol.upper() not in PROTOCOLS:
            raise ValueError(f"protocol is IMAP or POP3, not {protocol!r}")
        self.lab = lab
        self.address = address.lower()
        self.password = password if password is not None else lab.account(self.address).password
        self.domain = self.address.rpartition("@")[2]
        #: POP3: the messages downloaded so far, by UIDL (this "device's" local copy).
        self.local: dict[str, mua.MessageSummary] = {}
        #: The messages in the list now (POP3: local copies; IMAP: the server's folder).
        self.messages: list[mua.MessageSummary] = []
        #: What the last check cost and what all checks cost: (lines, bytes).
        self.last_cost = (0, 0)
        self.total_cost = (0, 0)
        self.checks = 0
        self._imap: mua.IMAPMailbox | None = None
        self._poll_task: asyncio.Task | None = None
        self._push_task: asyncio.Task | None = None
        self._opened: mua.MessageSummary | None = None

        self.protocol = css(
            widgets.ToggleButtons(options=PROTOCOLS, value=protocol.upper()), "mk-protocol"
        )
        self.check_button = css(widgets.Button(description="Check now", icon="refresh"), "mk-check")
        self.interval = css(
            widgets.BoundedIntText(
                value=interval,
                min=1,
                max=3600,
                description="every (s)",
                layout=widgets.Layout(width="12em"),
            ),
            "mk-interval",
        )
        self.auto = css(widgets.ToggleButton(description="auto-check", icon="clock-o"), "mk-auto")
        self.push = css(widgets.ToggleButton(description="push (IDLE)", icon="bolt"), "mk-push")
        self.keep = css(
            widgets.Checkbox(value=True, description="leave a copy on the server"), "mk-keep"
        )
        self.folder = css(
            widgets.Dropdown(options=["INBOX"], value="INBOX", description="Folder"), "mk-folder"
        )
        self.list = css(
            widgets.Select(options=[], rows=8, layout=widgets.Layout(width="100%")), "mk-messages"
        )
        self.reader = css(widgets.HTML(), "mk-reader")
        self.raw = css(widgets.Checkbox(value=False, description="raw source"), "mk-raw")
        self.flag_seen = css(widgets.Button(description="Seen / unseen"), "mk-flag-seen")
        self.flag_flagged = css(
            widgets.Button(description="Flag / unflag", icon="flag"), "mk-flag-flagged"
        )
        self.status = css(widgets.HTML(), "mk-inbox-status")
        self.cost_label = css(widgets.HTML(), "mk-cost")

        self.check_button.on_click(self.guard(lambda _: self.check(), "Check"))
        self.auto.observe(self.guard(self._on_auto, "auto-check"), names="value")
        self.push.observe(self.guard(self._on_push, "push"), names="value")
        self.protocol.observe(self.guard(self._on_protocol, "protocol"), names="value")
        self.folder.observe(self.guard(lambda _: self.check(), "folder"), names="value")
        self.list.observe(self.guard(self._on_select, "open"), names="value")
        self.raw.observe(self.guard(lambda _: self._show_reader(), "raw"), names="value")
        self.flag_seen.on_click(self.guard(lambda _: self.toggle_flag("\\Seen"), "flag"))
        self.flag_flagged.on_click(self.guard(lambda _: self.toggle_flag("\\Flagged"), "flag"))

        for button in (self.check_button, self.auto, self.push, self.flag_seen, self.flag_flagged):
            button.layout = widgets.Layout(width="auto", flex="0 0 auto")
        self.protocol.style.button_width = "5em"
        self.folder.layout.width = "14em"
        self.folder.style.description_width = "4em"
        self.interval.style.description_width = "5em"
        self.keep.style.description_width = "0"
        self.imap_bar = widgets.HBox([self.folder, self.flag_seen, self.flag_flagged])
        self.pop3_bar = widgets.HBox([self.keep])
        self.widget = css(
            widgets.VBox(
                [
                    widgets.HTML(f"<b>Inbox of {html.escape(self.address)}</b>"),
                    widgets.HBox([self.protocol, self.check_button]),
                    widgets.HBox([self.interval, self.auto, self.push]),
                    self.imap_bar,
                    self.pop3_bar,
                    self.status,
                    self.cost_label,
                    self.errors.widget,
                    self.list,
                    self.raw,
                    self.reader,
                ]
            ),
            "mk-inbox",
        )
        # Share a row fairly with other widgets (an HBox of Compose and Inbox).
        self.widget.layout = widgets.Layout(flex="1 1 0%", min_width="22em", padding="0 8px")
        self._show_bars()

    # -- checking ---------------------------------------------------------------------

    @property
    def server(self) -> str:
        """The lab server this Inbox talks to now, e.g. ``imap.south.test``."""
        return f"{self.protocol.value.lower()}.{self.domain}"

    def check(self) -> mua.CheckResult:
        """One check, in the chosen protocol; the list, the status and the cost follow."""
        self.errors.clear()
        start = len(self.lab.transcript_log)
        result = self._check_pop3() if self.protocol.value == "POP3" else self._check_imap()
        self.checks += 1
        self.last_cost = cost(rows_since(self.lab, start, server=self.server))
        self.total_cost = (
            self.total_cost[0] + self.last_cost[0],
            self.total_cost[1] + self.last_cost[1],
        )
        self._show_cost()
        if result.error:
            self.errors.show(f"Checking {self.server} failed: {result.error}")
        return result

    def _check_pop3(self) -> mua.CheckResult:
        box = mua.POP3Mailbox(self.lab, self.address, self.password)
        # Unticking "leave a copy" also removes the copies earlier checks left there.
        keep = self.keep.value
        result = box.check(keep=keep, known=set(self.local), delete_known=not keep)
        for message in result.messages:
            self.local[message.id] = message
        self.messages = list(self.local.values())
        self._show_list()
        words = f"{_plural(len(result.messages), 'new message')} downloaded"
        if result.deleted:
            gone = _plural(len(result.deleted), "message")
            words += (
                f"; {gone} deleted from the server at QUIT — only this copy is left, "
                "no other device will see them"
            )
        elif result.messages and self.keep.value:
            words += "; the server keeps a copy"
        self.status.value = html.escape(words) if not result.error else ""
        return result

    def _imap_box(self) -> mua.IMAPMailbox:
        if self._imap is None:
            self._imap = mua.IMAPMailbox(self.lab, self.address, self.password)
        return self._imap

    def _check_imap(self) -> mua.CheckResult:
        box = self._imap_box()
        try:
            folders = box.folders()
        except Exception as error:  # the server is down: say so, keep the list as it was
            return mua.CheckResult([], [], error=str(error), server=self.server)
        if list(self.folder.options) != folders:
            current = self.folder.value if self.folder.value in folders else folders[0]
            with self._quiet(self.folder):
                self.folder.options = folders
                self.folder.value = current
        result = box.check(self.folder.value)
        if not result.error:
            self.messages = list(result.messages)
            self._show_list()
            unread = sum("\\Seen" not in m.flags for m in self.messages)
            count = len(self.messages)
            self.status.value = html.escape(
                f"{_plural(count, 'message')} in {self.folder.value} on the server, {unread} unread"
            )
        return result

    # -- reading and flags --------------------------------------------------------------

    def open(self, message_id: str) -> mua.MessageSummary:
        """Show one message in the reader (IMAP: fetched now, which marks it \\Seen)."""
        summary = next(m for m in self.messages if m.id == message_id)
        if self.protocol.value == "IMAP":
            assert summary.uid is not None
            summary = self._imap_box().fetch(summary.uid, self.folder.value)
            self._replace(summary)
        self._opened = summary
        self._show_reader()
        return summary

    def toggle_flag(self, flag: str) -> frozenset[str]:
        """IMAP: set ``flag`` on the open message if it lacks it, else clear it."""
        if self.protocol.value != "IMAP":
            raise RuntimeError("flags live on an IMAP server; switch to IMAP to change them")
        if self._opened is None or self._opened.uid is None:
            raise RuntimeError("open a message first")
        on = flag not in self._opened.flags
        flags = self._imap_box().set_flag(self._opened.uid, flag, on, self.folder.value)
        self._opened = _with_flags(self._opened, flags)
        self._replace(self._opened)
        self._show_reader()
        return flags

    # -- when to check --------------------------------------------------------------------

    def start_polling(self, seconds: float | None = None) -> asyncio.Task:
        """Check every ``seconds`` (default: the interval box) in a task on this loop."""
        self.stop_polling()
        every = float(seconds if seconds is not None else self.interval.value)
        loop = _running_loop("checking every N seconds")
        self._poll_task = loop.create_task(self._poll(every))
        return self._poll_task

    def stop_polling(self) -> None:
        if self._poll_task is not None:
            self._poll_task.cancel()
            self._poll_task = None

    async def _poll(self, every: float) -> None:
        while True:
            self.guard(self.check, "auto-check")()
            await asyncio.sleep(every)

    def start_push(self) -> asyncio.Task:
        """IMAP IDLE: wait for the server's news in a task; check as soon as it comes."""
        if self.protocol.value != "IMAP":
            raise RuntimeError("push needs IMAP IDLE; POP3 can only be polled")
        self.stop_push()
        loop = _running_loop("push (IDLE)")
        self.idling = asyncio.Event()
        self._push_task = loop.create_task(self._push())
        return self._push_task

    def stop_push(self) -> None:
        if self._push_task is not None:
            self._push_task.cancel()
            self._push_task = None

    async def _push(self) -> None:
        self.guard(self.check, "push")()
        while True:
            self.idling.clear()
            start = len(self.lab.transcript_log)
            news = await mua.idle_wait(
                self.lab, self.address, self.password, self.folder.value, ready=self.idling
            )
            idle_cost = cost(rows_since(self.lab, start, server=self.server))
            if news:
                self.guard(self.check, "push")()
                # the IDLE session's own lines are part of what push costs
                self.total_cost = (
                    self.total_cost[0] + idle_cost[0],
                    self.total_cost[1] + idle_cost[1],
                )
                self._show_cost()

    def close(self) -> None:
        """Stop the tasks and log out of IMAP."""
        self.stop_polling()
        self.stop_push()
        if self._imap is not None:
            with contextlib.suppress(Exception):
                self._imap.close()
            self._imap = None

    # -- view ----------------------------------------------------------------------------

    def _on_auto(self, change: dict) -> None:
        if change["new"]:
            try:
                self.start_polling()
            except Exception:
                with self._quiet(self.auto):
                    self.auto.value = False
                raise
        else:
            self.stop_polling()

    def _on_push(self, change: dict) -> None:
        if change["new"]:
            try:
                self.start_push()
            except Exception:
                with self._quiet(self.push):
                    self.push.value = False
                raise
        else:
            self.stop_push()

    def _on_protocol(self, change: dict) -> None:
        self.stop_push()
        with self._quiet(self.push):
            self.push.value = False
        self.messages = list(self.local.values()) if change["new"] == "POP3" else []
        self._opened = None
        self._show_bars()
        self._show_list()
        self._show_reader()
        self.status.value = ""

    def _on_select(self, change: dict) -> None:
        if change["new"] is not None and not self._quiet_now:
            self.open(change["new"])

    _quiet_now = False

    @contextlib.contextmanager
    def _quiet(self, widget: widgets.Widget):
        """Change a widget from code without its observer acting as if the user did."""
        self._quiet_now = True
        try:
            with widget.hold_trait_notifications():
                yield
        finally:
            self._quiet_now = False

    def _replace(self, summary: mua.MessageSummary) -> None:
        self.messages = [summary if m.id == summary.id else m for m in self.messages]
        if summary.id in self.local:
            self.local[summary.id] = summary
        self._show_list()

    def _show_bars(self) -> None:
        imap = self.protocol.value == "IMAP"
        self.imap_bar.layout.display = None if imap else "none"
        self.push.layout.display = None if imap else "none"  # POP3 can only be polled
        self.pop3_bar.layout.display = "none" if imap else None

    def _show_list(self) -> None:
        options = [(_row(m), m.id) for m in self.messages]
        selected = self.list.value if self.list.value in {m.id for m in self.messages} else None
        self._quiet_now = True
        try:
            self.list.options = options
            self.list.value = selected
        finally:
            self._quiet_now = False

    def _show_cost(self) -> None:
        lines, octets = self.last_cost
        all_lines, all_octets = self.total_cost
        self.cost_label.value = (
            f"last check: <b>{lines}</b> lines, <b>{octets}</b> bytes on the wire; "
            f"all {self.checks} checks: {all_lines} lines, {all_octets} bytes"
        )

    def _show_reader(self) -> None:
        message = self._opened
        if message is None or message.raw is None:
            self.reader.value = ""
            return
        if self.raw.value:
            text = message.raw.decode("utf-8", "replace")
            self.reader.value = f"<pre style='white-space:pre-wrap'>{html.escape(text)}</pre>"
            return
        parts = mua.message_parts(message.raw)
        headers = "".join(
            f"<tr><td><b>{html.escape(name)}</b></td><td>{html.escape(str(value))}</td></tr>"
            for name, value in parts["headers"]
            if name.lower() in ("from", "to", "cc", "subject", "date")
        )
        attachments = "".join(
            f"<li>{html.escape(name or '(no name)')} — {html.escape(kind)}, {size} bytes</li>"
            for name, kind, size in parts["attachments"]
        )
        flags = " ".join(sorted(message.flags)) or "(none)"
        self.reader.value = (
            f"<table>{headers}</table>"
            + (
                f"<p>flags on the server: <code>{html.escape(flags)}</code></p>"
                if message.uid
                else ""
            )
            + f"<pre style='white-space:pre-wrap'>{html.escape(parts['text'])}</pre>"
            + (f"<p>Attachments:</p><ul>{attachments}</ul>" if attachments else "")
        )


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _row(message: mua.MessageSummary) -> str:
    flags = "" if not message.flags else " [" + " ".join(sorted(message.flags)) + "]"
    unread = "● " if message.uid is not None and "\\Seen" not in message.flags else ""
    return (
        f"{unread}{message.sender} — {message.subject} — {message.date} — {message.size} B{flags}"
    )


def _with_flags(message: mua.MessageSummary, flags: frozenset[str]) -> mua.MessageSummary:
    return dataclasses.replace(message, flags=frozenset(flags))


def _running_loop(what: str) -> asyncio.AbstractEventLoop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        try:  # ipykernel's loop is current in the kernel thread, though not "running" here
            loop = asyncio.get_event_loop()
        except RuntimeError:
            loop = None
        if loop is None or not loop.is_running():
            raise RuntimeError(
                f"{what} needs a running asyncio loop: use it in a Jupyter notebook"
            ) from None
        return loop
