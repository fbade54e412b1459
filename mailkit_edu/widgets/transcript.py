"""TranscriptView: the lab's protocol lines as a live table, newest last.

Role
    The widget a learner keeps open beside every chapter: each line that crossed a
    lab server (``lab.transcript()``), filtered by server, protocol, session and
    direction, client lines (``C``) and server lines (``S``) told apart at a glance,
    reply codes coloured by what they mean (2xx green, 3xx blue, 4xx orange, 5xx
    red; ``+OK``/``-ERR``; ``OK``/``NO``/``BAD``/``BYE``).

Staying fast with 100,000 lines
    The table shows a *window*: the last ``rows`` matching lines, with "older" and
    "newer" buttons to page. Nothing is ever rebuilt from the start on a new line:

    * a cursor remembers how many transcript rows were read; a refresh reads only the
      rows appended since, from the transcript's column buffers (``server``,
      ``session``, ``direction``: three integer columns kept here in numpy arrays);
    * the indexes of the matching rows are kept too, and a refresh filters only the
      new rows and appends their indexes (a filter change filters the arrays once,
      vectorised);
    * only the rows in the window are turned into HTML (every line escaped).

    ``benchmarks/bench_widgets.py`` measures it: a refresh with 100,000 rows takes
    well under the 50 ms floor.

Live updates, and threads
    The transcript calls its ``listeners`` from the *lab's* thread, after each line.
    Widgets may only be touched from the kernel's thread, so the listener here only
    sets a flag. A periodic asyncio task on the kernel's loop (every ``interval``
    seconds, when a loop is running, as in Jupyter) looks at the flag and refreshes.
    ``stop()`` cancels the task and removes the listener. Without a running loop (a
    plain script, a test) call :meth:`TranscriptView.refresh` or press Refresh.

For tests, the state is in plain attributes: :attr:`TranscriptView.rows_shown`,
:attr:`TranscriptView.total_matching`, :attr:`TranscriptView.rows_read` and
:attr:`TranscriptView.html`.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import ipywidgets as widgets
import numpy as np

from ..transcript import Transcript
from ._base import WidgetBase, css

__all__ = ["DEFAULT_ROWS", "LIVE_INTERVAL", "TranscriptView", "code_class"]

#: Lines in the table's window (the last ones that match the filters).
DEFAULT_ROWS = 200
#: Seconds between two looks at the transcript when the view is live.
LIVE_INTERVAL = 0.5

ALL = "all"
PROTOCOLS = ("SMTP", "POP3", "IMAP", "DNS")

# One style block per table; every selector is under the table's own wrapper, .mk-tt
# (self-contained HTML: it looks the same outside the widget, e.g. in a saved notebook).
_STYLE = """<style>
.mk-tt .mk-scroll{max-height:28em;overflow-y:auto;display:flex;
 flex-direction:column-reverse;border:1px solid #d0d7de;border-radius:4px}
.mk-tt table{border-collapse:collapse;width:100%;
 font:12px/1.35 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.mk-tt th{position:sticky;top:0;background:#f6f8fa;text-align:left;
 font-weight:600;padding:2px 6px;border-bottom:1px solid #d0d7de;color:#57606a}
.mk-tt td{padding:1px 6px;vertical-align:top;border-bottom:1px solid #f0f2f4}
.mk-tt td.mk-n,.mk-tt td.mk-t{color:#8c959f;white-space:nowrap}
.mk-tt td.mk-srv{white-space:nowrap;color:#57606a}
.mk-tt td.mk-line{white-space:pre-wrap;word-break:break-all;tab-size:4}
.mk-tt tr.mk-C td.mk-line{color:#0b4f9c;font-weight:600}
.mk-tt tr.mk-C td.mk-dir{color:#0b4f9c;font-weight:700}
.mk-tt tr.mk-C{background:#f1f7ff}
.mk-tt tr.mk-S td.mk-line{color:#24292f;padding-left:2.2em}
.mk-tt tr.mk-S td.mk-dir{color:#6e7781}
.mk-tt tr.mk-data td.mk-line{font-weight:400;color:#3b6ea8}
.mk-tt .mk-empty{color:#8c959f;font-style:italic;font-weight:400}
.mk-tt .mk-code{display:inline-block;min-width:3.2em;text-align:center;
 border-radius:3px;padding:0 3px;font-weight:700;color:#fff}
.mk-tt .mk-code-2{background:#1a7f37}
.mk-tt .mk-code-3{background:#0969da}
.mk-tt .mk-code-4{background:#d1700a}
.mk-tt .mk-code-5{background:#cf222e}
.mk-tt .mk-code-bye{background:#8250df}
.mk-tt .mk-code-other{background:#6e7781}
.mk-tt .mk-nothing{padding:1em;color:#57606a;font-style:italic}
</style>"""

# Reply codes of every protocol, by the colour class of their meaning.
_CODE_CLASSES = {
    "+OK": "mk-code-2",  # POP3: done
    "-ERR": "mk-code-5",  # POP3: refused
    "OK": "mk-code-2",  # IMAP: done
    "NO": "mk-code-4",  # IMAP: refused (the command was understood)
    "BAD": "mk-code-5",  # IMAP: not understood
    "BYE": "mk-code-bye",  # IMAP: the server is closing the connection
    "PREAUTH": "mk-code-2",
    "NOERROR": "mk-code-2",  # DNS rcodes
    "NXDOMAIN": "mk-code-5",
}


def code_class(code: str | None) -> str:
    """The CSS class that colours a reply code: by its first digit for SMTP (2xx green,
    3xx blue, 4xx orange, 5xx red), by its word for POP3, IMAP and DNS; "" for none."""
    if not code:
        return ""
    if code[:1] in "2345" and code[:3].isdigit():
        return f"mk-code-{code[0]}"
    return _CODE_CLASSES.get(code.upper(), "mk-code-4" if code.isupper() else "mk-code-other")


class _Flag:
    """What the transcript's listener list holds: a callable that only sets ``dirty``.

    It is called from the lab's thread; an attribute store is all it does (atomic in
    CPython), so it never touches a widget and costs ~50 ns per recorded line.
    """

    __slots__ = ("dirty",)

    def __init__(self) -> None:
        self.dirty = True

    def __call__(self) -> None:
        self.dirty = True


class _Growing:
    """A numpy array that grows at the end (capacity doubles): amortised O(1) appends."""

    __slots__ = ("_data", "size")

    def __init__(self, dtype: Any) -> None:
        self._data = np.empty(1024, dtype=dtype)
        self.size = 0

    def extend(self, values: np.ndarray) -> None:
        needed = self.size + len(values)
        if needed > len(self._data):
            bigger = np.empty(max(needed, 2 * len(self._data)), dtype=self._data.dtype)
            bigger[: self.size] = self._data[: self.size]
            self._data = bigger
        self._data[self.size : needed] = values
        self.size = needed

    def clear(self) -> None:
        self.size = 0

    @property
    def values(self) -> np.ndarray:
        """The filled part (a view: no copy)."""
        return self._data[: self.size]


def _small_ints(values: list[int]) -> np.ndarray:
    """Small non-negative ints (server ids) as a numpy array, fast when all are < 256."""
    try:
        return np.frombuffer(bytes(values), dtype=np.uint8)
    except ValueError:  # an id of 256 or more: the general way
        return np.fromiter(values, dtype=np.int64, count=len(values))


class TranscriptView(WidgetBase):
    """The live table of ``lab.transcript()``, filtered, newest last.

    ``TranscriptView(lab, server="mx.south.test", direction="C", rows=200)`` shows the
    last 200 lines the clients sent to mx.south.test. ``lab`` may also be a
    :class:`~mailkit_edu.transcript.Transcript`. The filters are widgets at the top
    (``server_filter``, ``protocol_filter``, ``session_filter``, ``direction_filter``):
    change them there or set their ``.value``. With ``live=True`` (the default) the
    table follows new lines by itself in a notebook; :meth:`refresh` does it by hand.
    """

    def __init__(
        self,
        lab: Any,
        *,
        server: str | None = None,
        protocol: str | None = None,
        session: int | None = None,
        direction: str | None = None,
        rows: int = DEFAULT_ROWS,
        live: bool = True,
        interval: float = LIVE_INTERVAL,
    ) -> None:
        super().__init__()
        if rows < 1:
            raise ValueError(f"rows is how many lines the table shows: 1 or more, not {rows}")
        log = getattr(lab, "transcript_log", lab)
        if not isinstance(log, Transcript):
            raise TypeError(f"TranscriptView needs a lab (or its transcript), not {lab!r}")
        self.lab = lab
        self.transcript: Transcript = log
        self.rows = rows
        self.interval = interval

        # What has been read from the transcript so far: the cursor and three columns
        # (sessions only once a session filter needs them).
        self._read = 0
        self._server_ids = _Growing(np.int32)
        self._sessions = _Growing(np.int64)
        self._clients = _Growing(np.bool_)
        self._names: list[str] = []  # server id -> name
        self._protocols: list[str] = []  # server id -> protocol
        # The filters, compiled, and the indexes of the rows that pass them.
        self._wanted_servers: np.ndarray | None = None  # bool per server id, or None: all
        self._wanted_session: int | None = None
        self._wanted_client: bool | None = None
        self._matching = _Growing(np.int64)
        #: Where the window ends, as a count of matching rows; None: follow the newest.
        self._end: int | None = None
        self._rendered: tuple[int, ...] | None = None
        self._flag = _Flag()
        self._quiet = False
        self._task: asyncio.Task | None = None

        self.rows_shown: list[int] = []
        """Transcript row indexes (``lab.transcript()``'s index) in the window, oldest first."""
        self.total_matching = 0
        """How many transcript rows pass the filters."""

        self._sync_servers()
        self.server_filter = css(
            widgets.Dropdown(
                options=self._server_options(),
                value=ALL,
                description="server",
                layout=widgets.Layout(width="15em"),
                style={"description_width": "3.5em"},
            ),
            "mk-filter-server",
        )
        self.protocol_filter = css(
            widgets.Dropdown(
                options=[("all", ALL), *[(p, p) for p in PROTOCOLS]],
                value=ALL,
                description="protocol",
                layout=widgets.Layout(width="11em"),
                style={"description_width": "4.5em"},
            ),
            "mk-filter-protocol",
        )
        self.session_filter = css(
            widgets.Text(
                value="",
                placeholder="all",
                description="session",
                continuous_update=False,  # filter on Enter, not on every key
                layout=widgets.Layout(width="10em"),
                style={"description_width": "4em"},
            ),
            "mk-filter-session",
        )
        self.direction_filter = css(
            widgets.Dropdown(
                options=[("both", ALL), ("C: client → server", "C"), ("S: server → client", "S")],
                value=ALL,
                description="lines",
                layout=widgets.Layout(width="14em"),
                style={"description_width": "3em"},
            ),
            "mk-filter-direction",
        )
        self.refresh_button = css(
            widgets.Button(description="Refresh", icon="refresh", layout={"width": "7em"}),
            "mk-refresh",
        )
        self.older_button = css(
            widgets.Button(description="older", icon="chevron-up", layout={"width": "6.5em"}),
            "mk-older",
        )
        self.newer_button = css(
            widgets.Button(description="newer", icon="chevron-down", layout={"width": "6.5em"}),
            "mk-newer",
        )
        self.status = css(widgets.HTML(value=""), "mk-transcript-status")
        self.table = css(widgets.HTML(value=""), "mk-transcript-table")

        # Initial filters from the arguments (validated like the widgets' own values).
        if server is not None:
            self.server_filter.value = self._known_server(server)
        if protocol is not None:
            self.protocol_filter.value = self._known_protocol(protocol)
        if session is not None:
            self.session_filter.value = str(int(session))
        if direction is not None:
            self.direction_filter.value = self._known_direction(direction)
        self._apply_filters(self._compile_filters())
        self.refresh()

        for control in (
            self.server_filter,
            self.protocol_filter,
            self.session_filter,
            self.direction_filter,
        ):
            control.observe(self.guard(self._on_filter, "filter"), names="value")
        self.refresh_button.on_click(self.guard(lambda _: self.refresh(), "refresh"))
        self.older_button.on_click(self.guard(lambda _: self.older(), "older"))
        self.newer_button.on_click(self.guard(lambda _: self.newer(), "newer"))

        self.widget = css(
            widgets.VBox(
                [
                    widgets.HBox(
                        [
                            self.server_filter,
                            self.protocol_filter,
                            self.session_filter,
                            self.direction_filter,
                            self.refresh_button,
                        ],
                        layout=widgets.Layout(flex_flow="row wrap"),
                    ),
                    widgets.HBox([self.status, self.older_button, self.newer_button]),
                    self.table,
                    self.errors.widget,
                ]
            ),
            "mk-transcript",
        )
        if live:
            self.start()

    # -- what tests and notebooks read -------------------------------------------------

    @property
    def html(self) -> str:
        """The table's HTML, as the notebook shows it."""
        return self.table.value

    @property
    def rows_read(self) -> int:
        """How many transcript rows the view has read so far (its cursor)."""
        return self._read

    @property
    def live(self) -> bool:
        """True while the periodic refresh task runs on the kernel's loop."""
        return self._task is not None and not self._task.done()

    # -- refreshing ----------------------------------------------------------------------

    def refresh(self) -> None:
        """Read the lines recorded since the last refresh, filter them, redraw if needed.

        Cheap when nothing is new (a length check), and proportional to the new lines
        otherwise: nothing already read is read or filtered again.
        """
        self._flag.dirty = False
        new = self._read_new_rows()
        if new:
            self._filter_rows(self._read - new)
        self._draw()

    def older(self) -> None:
        """Show the ``rows`` matching lines before the window."""
        end = self._window_end()
        self._end = max(min(self.rows, self.total_matching), end - self.rows)
        self._draw()

    def newer(self) -> None:
        """Show the ``rows`` matching lines after the window (at the end: follow new lines)."""
        end = self._window_end() + self.rows
        self._end = None if end >= self.total_matching else end
        self._draw()

    def start(self) -> bool:
        """Follow new lines by itself: listen to the transcript, refresh every ``interval``
        seconds on the kernel's running asyncio loop. Returns False (and does nothing)
        when no loop is running in this thread (a script or a test: call refresh())."""
        if self.live:
            return True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        if self._flag not in self.transcript.listeners:
            self.transcript.listeners.append(self._flag)
        self._task = loop.create_task(self._follow(), name="mailkit TranscriptView")
        return True

    def stop(self) -> None:
        """Stop following: cancel the periodic task and leave the transcript's listeners."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        with contextlib.suppress(ValueError):
            self.transcript.listeners.remove(self._flag)

    async def _follow(self) -> None:
        refresh = self.guard(self.refresh, "live refresh")
        while True:
            await asyncio.sleep(self.interval)
            if self._flag.dirty:
                refresh()

    # -- reading and filtering -------------------------------------------------------------

    def _read_new_rows(self) -> int:
        """Append the transcript rows not read yet to the columns; return how many.

        Reads the transcript's column buffers (append-only lists, sliced under its
        lock) rather than ``Transcript.frame(start)``: the filters need only small
        integer columns, not a DataFrame with times and texts. Server ids and
        directions convert through ``bytes`` (4x faster than ``np.fromiter``); session
        numbers are read only once a session filter asks for them.
        """
        t = self.transcript
        start = self._read
        if len(t) == start:
            return 0
        with t._lock:
            end = len(t._line)
            servers = t._server[start:end]
            clients = t._client[start:end]
            registered = len(t._servers)
        self._server_ids.extend(_small_ints(servers))
        self._clients.extend(np.frombuffer(bytes(clients), dtype=np.bool_))
        self._read = end
        if registered != len(self._names):  # a server registered since: a longer id table
            self._sync_servers()
            self._quiet = True  # new options must not count as a filter change
            try:
                self.server_filter.options = self._server_options()
            finally:
                self._quiet = False
            self._wanted_servers = self._server_table()
        return end - start

    def _session_column(self) -> np.ndarray:
        """The session numbers of the rows read so far (read now, if not yet)."""
        have = self._sessions.size
        if have < self._read:
            with self.transcript._lock:  # rows below the cursor never change
                sessions = self.transcript._session[have : self._read]
            self._sessions.extend(np.fromiter(sessions, dtype=np.int64, count=len(sessions)))
        return self._sessions.values

    def _filter_rows(self, start: int) -> None:
        """Add the indexes of the rows from ``start`` on that pass the filters."""
        servers = self._server_ids.values[start:]
        mask = np.ones(len(servers), dtype=np.bool_)
        if self._wanted_servers is not None:
            mask &= self._wanted_servers[servers]
        if self._wanted_session is not None:
            mask &= self._session_column()[start:] == self._wanted_session
        if self._wanted_client is not None:
            mask &= self._clients.values[start:] == self._wanted_client
        self._matching.extend(np.flatnonzero(mask) + start)
        self.total_matching = self._matching.size

    def _on_filter(self, change: dict) -> None:
        if self._quiet:
            return
        filters = self._compile_filters()  # a bad session number stops here: nothing changes
        self.errors.clear()
        self._apply_filters(filters)
        self._end = None
        self.refresh()

    def _apply_filters(self, filters: tuple[np.ndarray | None, int | None, bool | None]) -> None:
        """Make ``filters`` the view's, and filter every row read so far with them."""
        self._wanted_servers, self._wanted_session, self._wanted_client = filters
        self._matching.clear()
        self._filter_rows(0)

    def _compile_filters(self) -> tuple[np.ndarray | None, int | None, bool | None]:
        """The filter widgets' values as (a bool per server id or None, session, client)."""
        session = self._session_value()
        direction = self.direction_filter.value
        return self._server_table(), session, None if direction == ALL else direction == "C"

    def _server_table(self) -> np.ndarray | None:
        """True for each server id the server and protocol filters let through (None: all)."""
        server, protocol = self.server_filter.value, self.protocol_filter.value
        if server == ALL and protocol == ALL:
            return None
        return np.array(
            [
                (server == ALL or name == server) and (protocol == ALL or proto == protocol)
                for name, proto in zip(self._names, self._protocols, strict=True)
            ]
            + [False],  # one spare entry, so the table is never empty
            dtype=np.bool_,
        )

    def _session_value(self) -> int | None:
        text = self.session_filter.value.strip()
        if text.lower() in ("", ALL):
            return None
        try:
            return int(text)
        except ValueError:
            raise ValueError(
                f"session is a number from the session column, e.g. 3 (or empty for all), "
                f"not {text!r}"
            ) from None

    def _sync_servers(self) -> None:
        with self.transcript._lock:
            rows = list(self.transcript._servers)
        self._names = [row.name for row in rows]
        self._protocols = [row.protocol for row in rows]

    def _server_options(self) -> list[tuple[str, str]]:
        names = list(dict.fromkeys(self._names))
        return [("all", ALL), *[(name, name) for name in names]]

    def _known_server(self, name: str) -> str:
        if name.lower() in self._names:
            return name.lower()
        if name in self._names:
            return name
        known = ", ".join(dict.fromkeys(self._names))
        raise ValueError(f"no server called {name!r}; the servers are: {known}")

    @staticmethod
    def _known_protocol(protocol: str) -> str:
        if protocol.upper() not in PROTOCOLS:
            raise ValueError(f"protocol is one of {', '.join(PROTOCOLS)}, not {protocol!r}")
        return protocol.upper()

    @staticmethod
    def _known_direction(direction: str) -> str:
        if direction.upper() not in ("C", "S"):
            raise ValueError(
                f"direction is 'C' (client to server) or 'S' (server to client), not {direction!r}"
            )
        return direction.upper()

    # -- drawing ---------------------------------------------------------------------------

    def _window_end(self) -> int:
        total = self.total_matching
        return total if self._end is None else min(self._end, total)

    def _draw(self) -> None:
        end = self._window_end()
        start = max(0, end - self.rows)
        window = self._matching.values[start:end]
        shown = tuple(window.tolist())
        self.rows_shown = list(shown)
        total = self.total_matching
        following = self._end is None
        self.older_button.disabled = start == 0
        self.newer_button.disabled = following
        where = "following new lines" if following else f"{total - end:,} newer: press newer"
        self.status.value = (
            f'<span style="color:#57606a">showing {len(shown):,} of {total:,} matching lines '
            f"({self._read:,} in the transcript; {where})</span>"
        )
        if shown != self._rendered:
            self.table.value = self._table_html(shown)
            self._rendered = shown

    def _table_html(self, shown: Sequence[int]) -> str:
        if not shown:
            what = "no lines yet" if not self._read else "no line matches these filters"
            return f'<div class="mk-tt">{_STYLE}<div class="mk-nothing">({what})</div></div>'
        t = self.transcript
        with t._lock:
            rows = [
                (
                    i,
                    t._time[i],
                    t._server[i],
                    t._session[i],
                    t._client[i],
                    t._line[i],
                    t._command[i],
                    t._code[i],
                )
                for i in shown
            ]
        names = self._names
        parts = [
            '<div class="mk-tt">',
            _STYLE,
            '<div class="mk-scroll"><table><thead><tr><th>#</th><th>time (UTC)</th>'
            "<th>server</th><th>session</th><th></th><th>code</th><th>line</th>"
            "</tr></thead><tbody>",
        ]
        escape = html.escape
        for i, ns, server_id, session, client, line, command, code in rows:
            clock = datetime.fromtimestamp(ns / 1e9, UTC).strftime("%H:%M:%S.%f")[:-3]
            if client:
                kind = "mk-C" if command else "mk-C mk-data"
                arrow = "C →"
            else:
                kind = "mk-S"
                arrow = "← S"
            badge = (
                f'<span class="mk-code {code_class(code)}">{escape(code)}</span>' if code else ""
            )
            text = escape(line) if line else '<span class="mk-empty">(empty line)</span>'
            parts.append(
                f'<tr class="{kind}"><td class="mk-n">{i}</td><td class="mk-t">{clock}</td>'
                f'<td class="mk-srv">{escape(names[server_id])}</td><td class="mk-n">{session}</td>'
                f'<td class="mk-dir">{arrow}</td><td>{badge}</td>'
                f'<td class="mk-line">{text}</td></tr>'
            )
        parts.append("</tbody></table></div></div>")
        return "".join(parts)
