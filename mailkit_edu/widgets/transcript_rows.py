"""Small transcript excerpts for the client widgets: "the lines of what you just did".

Compose shows the MSA session of the message just sent; Inbox shows what a check cost
(lines and bytes, from the transcript, not from the client's own counting). Both take
the rows appended to ``lab.transcript_log`` since a mark made before the action.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from ..lab import Lab

__all__ = ["code_colour", "cost", "rows_since", "rows_table"]

#: How many rows an excerpt shows at most (the rest is counted, not drawn).
MAX_ROWS = 120
#: A run of message lines longer than this shows its first and last lines only.
RUN = 10


def rows_since(lab: Lab, start: int, *, server: str | None = None) -> pd.DataFrame:
    """The transcript rows recorded since row ``start`` (optionally of one server)."""
    frame = lab.transcript_log.frame(start)
    if server is not None:
        frame = frame[frame["server"] == server]
    return frame


def cost(frame: pd.DataFrame) -> tuple[int, int]:
    """(lines, bytes) exchanged in ``frame``: each line counts its CRLF too."""
    if frame.empty:
        return 0, 0
    return len(frame), int(frame["line"].str.len().sum()) + 2 * len(frame)


def code_colour(code: object) -> str:
    """A colour for a reply code: 2xx/+OK/OK green, 3xx/+ blue, 4xx orange, 5xx/-ERR/NO/BAD red."""
    text = "" if code is None or code != code else str(code)  # None or NaN: no colour
    if text[:1] == "2" or text in ("+OK", "OK"):
        return "#2e7d32"
    if text[:1] == "3" or text == "+":
        return "#1565c0"
    if text[:1] == "4":
        return "#ef6c00"
    if text[:1] == "5" or text in ("-ERR", "NO", "BAD", "BYE"):
        return "#c62828"
    return ""


def rows_table(
    frame: pd.DataFrame, *, limit: int = MAX_ROWS, run: int = RUN, server_column: bool = True
) -> str:
    """The rows as a small HTML table: C lines and S lines told apart, codes coloured.

    Every command and reply is shown. Long runs of plain lines (the message after DATA,
    a RETR or a FETCH literal) keep their first and last lines and say how many are left
    out between; past ``limit`` rows the middle of the excerpt is left out the same way.
    """
    if frame.empty:
        return ""
    rows = list(frame.itertuples())
    shown: list[object] = []  # a row, or an int: that many rows left out here
    i = 0
    while i < len(rows):
        j = i
        while j < len(rows) and _plain(rows[j]) and rows[j].direction == rows[i].direction:
            j += 1
        if j - i > run:
            shown += [*rows[i : i + run - 2], j - i - (run - 1), rows[j - 1]]
            i = j
        elif j > i:
            shown += rows[i:j]
            i = j
        else:
            shown.append(rows[i])
            i += 1
    if len(shown) > limit:
        half = limit // 2
        hidden = sum(x if isinstance(x, int) else 1 for x in shown[half:-half])
        shown = [*shown[:half], hidden, *shown[-half:]]
    body = [
        f'<tr><td colspan="3"><i>… {item} more lines …</i></td></tr>'
        if isinstance(item, int)
        else _row_html(item, server_column)
        for item in shown
    ]
    return (
        '<table class="mk-rows" style="font-size:85%;border-collapse:collapse">'
        f"{''.join(body)}</table>"
    )


def _plain(row) -> bool:
    """A line that is neither a command nor a reply with a code: message text."""
    return (row.command is None or row.command != row.command) and (
        row.code is None or row.code != row.code
    )


def _row_html(row, server_column: bool = True) -> str:
    client = row.direction == "C"
    colour = code_colour(row.code)
    style = f' style="color:{colour}"' if colour else ""
    arrow = "C →" if client else "← S"
    background = "#f5f9ff" if client else "#ffffff"
    server = f"<td>{html.escape(str(row.server))}</td>" if server_column else ""
    return (
        f'<tr style="background:{background}">{server}'
        f'<td style="white-space:nowrap">{arrow}</td>'
        f"<td{style}><code>{html.escape(row.line)}</code></td></tr>"
    )
