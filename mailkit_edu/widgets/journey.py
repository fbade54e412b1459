"""Journey: the hops one message took, drawn from the learner's own mail.

Role
    The picture of chapter 1 (sender's MUA → MSA → DNS MX lookup → MX → MDA → POP3 or
    IMAP → recipient's MUA), made from a real message of the lab, with the time spent
    at each hop. Choose a message in the lab's mailboxes; the widget asks
    :func:`mailkit_edu.journey.journey_of` for its journey (from the message's
    ``Received:`` headers and the transcript) and shows :func:`mailkit_edu.journey.to_svg`'s
    picture, with a table of the hops below it. Hops that have not happened yet (nobody
    has downloaded the message) are grey; press Refresh after downloading it.

    The logic is in :mod:`mailkit_edu.journey` (pure, no widgets); this is the view.
    For tests: :attr:`Journey.journey` (the data), :attr:`Journey.svg` (the picture),
    ``message_chooser.value`` (``(address, folder, uid)`` of the copy shown).
"""

from __future__ import annotations

import html
import os
from typing import Any

import ipywidgets as widgets

from ..journey import DONE, MessageJourney, format_duration, journey_of, to_svg
from ._base import WidgetBase, css

__all__ = ["Journey"]

_EMPTY = (
    '<div style="padding:1em;color:#57606a;font-style:italic">No message in the lab\'s '
    "mailboxes yet: send one (Compose, or smtplib through the MSA), then press Refresh.</div>"
)


class Journey(WidgetBase):
    """The journey of one message of ``lab``, drawn, with a message chooser.

    ``Journey(lab)`` shows the newest message in any mailbox of the lab;
    ``Journey(lab, message="<id@north.test>")`` (a Message-ID, or a Subject) shows that
    one, and ``recipient=`` picks whose copy when it went to several people.
    """

    def __init__(self, lab: Any, message: str | None = None, *, recipient: str | None = None):
        super().__init__()
        self.lab = lab
        #: The journey shown now (None before there is any message).
        self.journey: MessageJourney | None = None
        self._quiet = False

        self.message_chooser = css(
            widgets.Dropdown(
                options=[],
                value=None,
                description="message",
                layout=widgets.Layout(width="46em"),
                style={"description_width": "4.5em"},
            ),
            "mk-journey-message",
        )
        self.refresh_button = css(
            widgets.Button(description="Refresh", icon="refresh", layout={"width": "7em"}),
            "mk-refresh",
            "mk-journey-refresh",
        )
        self.picture = css(widgets.HTML(value=_EMPTY), "mk-journey")
        self.hops_table = css(widgets.HTML(value=""), "mk-journey-hops")
        self.message_chooser.observe(self.guard(self._on_choose, "message"), names="value")
        self.refresh_button.on_click(self.guard(lambda _: self.refresh(), "refresh"))
        self.widget = css(
            widgets.VBox(
                [
                    widgets.HBox([self.message_chooser, self.refresh_button]),
                    self.picture,
                    self.hops_table,
                    self.errors.widget,
                ]
            ),
            "mk-journey-widget",
        )

        self._load_options()
        if message is not None:
            self.show(message, recipient=recipient)
        elif self.message_chooser.options:
            self._select(self.message_chooser.options[0][1])

    # -- what tests and notebooks read ---------------------------------------------------

    @property
    def svg(self) -> str:
        """The picture of the journey shown now ("" when there is none)."""
        return to_svg(self.journey) if self.journey is not None else ""

    # -- actions ---------------------------------------------------------------------------

    def show(self, message: str, *, recipient: str | None = None) -> MessageJourney:
        """Show the journey of the message with this Message-ID (or Subject)."""
        journey = journey_of(self.lab, message, recipient=recipient)
        if journey.stored is not None and journey.stored not in self._values():
            self._load_options()
        if journey.stored in self._values():
            self._select(journey.stored, journey)
        else:  # no stored copy (deleted with POP3, or not delivered yet): the transcript's
            self._quietly(setattr, self.message_chooser, "value", None)
            self._draw(journey)
        return journey

    def refresh(self) -> None:
        """Look again: the mailboxes for the chooser, the transcript for the journey."""
        shown = self.message_chooser.value
        previous = self.journey
        self._load_options()
        if shown in self._values():
            self._select(shown)
        elif previous is not None and previous.message_id:
            # The copy is gone (POP3 DELE, IMAP EXPUNGE): its journey is still in the
            # transcript.
            self.show(previous.message_id, recipient=previous.recipient)
        elif self.message_chooser.options:
            self._select(self.message_chooser.options[0][1])
        else:
            self._draw(None)

    # -- inside ----------------------------------------------------------------------------

    def _values(self) -> list[Any]:
        return [value for _, value in self.message_chooser.options]

    def _quietly(self, function: Any, *args: Any) -> None:
        self._quiet = True
        try:
            function(*args)
        finally:
            self._quiet = False

    def _select(self, value: tuple[str, str, int], journey: MessageJourney | None = None) -> None:
        self._quietly(setattr, self.message_chooser, "value", value)
        self._draw(journey or journey_of(self.lab, stored=value))

    def _on_choose(self, change: dict) -> None:
        if self._quiet or change["new"] is None:
            return
        self.errors.clear()
        self._draw(journey_of(self.lab, stored=change["new"]))

    def _load_options(self) -> None:
        """Every stored message of every account, newest first."""
        rows = []
        for address in self.lab.store.accounts():
            box = self.lab.mailbox(address)
            for row in box.itertuples(index=False):
                try:
                    mtime = os.stat(row.file).st_mtime_ns
                except OSError:
                    mtime = 0
                sender = f" — from {row[2]}" if row[2] else ""  # the "from" column
                subject = row.subject or "(no subject)"
                label = f"{subject}{sender} — {address} {row.folder} #{row.uid}"
                rows.append((mtime, label, (address, row.folder, int(row.uid))))
        rows.sort(key=lambda r: r[0], reverse=True)
        options = [(label, value) for _, label, value in rows]
        self._quietly(setattr, self.message_chooser, "options", options)

    def _draw(self, journey: MessageJourney | None) -> None:
        self.journey = journey
        if journey is None:
            self.picture.value = _EMPTY
            self.hops_table.value = ""
            return
        self.picture.value = f'<div style="overflow-x:auto">{to_svg(journey)}</div>'
        self.hops_table.value = _hops_html(journey)


def _hops_html(journey: MessageJourney) -> str:
    """The hops as a small table: what the picture's boxes say, and each one's detail."""
    esc = html.escape
    rows = []
    for hop in journey.hops:
        colour = "#24292f" if hop.status == DONE else "#8c959f"
        spent = format_duration(hop.spent) if hop.spent is not None else hop.status
        sessions = ", ".join(map(str, hop.sessions))
        rows.append(
            f'<tr style="color:{colour}"><td style="white-space:nowrap"><b>{esc(hop.name)}</b>'
            f'</td><td style="white-space:nowrap;font-family:monospace">{esc(hop.host)}</td>'
            f'<td style="white-space:nowrap">{esc(spent)}</td><td>{esc(sessions)}</td>'
            f"<td>{esc(hop.detail)}</td></tr>"
        )
    return (
        '<details><summary style="cursor:pointer;color:#57606a">What happened at each hop'
        '</summary><table style="border-collapse:collapse;font-size:12px;margin-top:4px">'
        '<thead><tr style="text-align:left;color:#57606a"><th>hop</th><th>host</th>'
        "<th>time spent</th><th>sessions</th><th>what happened</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></details>"
    )
