"""The transcript: every protocol line that crosses any lab server, in order, once.

Role
    One :class:`Transcript` per lab. Each server registers itself once
    (:meth:`Transcript.register_server`) and opens a :class:`SessionLog` per
    connection (or per DNS query). The server's single read point calls
    :meth:`SessionLog.client` for each line it receives and its single write
    point calls :meth:`SessionLog.server` for each line it sends. Nothing else
    writes here, so nothing is recorded twice.

    Recording is cheap (a few list appends under a lock): the buffer is
    column-oriented and append-only. :meth:`Transcript.frame` builds the pandas
    DataFrame on demand, vectorised, so a million lines become a table in about
    a second.

Columns (the public contract, ``design.md`` section 2)
    ``time`` (datetime64[ns, UTC]), ``server``, ``role``, ``protocol``,
    ``session`` (int, unique per connection in this lab), ``direction``
    (``"C"`` client to server, ``"S"`` server to client), ``line`` (str, without
    CRLF), ``command`` (verb of a client line, or None), ``code`` (reply code of a
    server line, or None).

This module knows nothing of protocols: it must not import asyncio, sockets or
any server module.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["COLUMNS", "MAX_RECORDED_LINE", "LineSplitter", "SessionLog", "Transcript"]

COLUMNS = (
    "time",
    "server",
    "role",
    "protocol",
    "session",
    "direction",
    "line",
    "command",
    "code",
)

#: Longest line kept in the transcript, in characters. Longer lines (a 100 kB
#: garbage line, say) are cut here and end with a note of how much was cut, so
#: the table stays readable and memory stays bounded.
MAX_RECORDED_LINE = 2000


def decode_line(raw: bytes) -> str:
    """Bytes from the wire to text for the table: CRLF stripped, UTF-8, and any
    byte that is not UTF-8 shown as an escape (``\\xff``) rather than dropped."""
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw.decode("utf-8", errors="backslashreplace")


def clip(line: str) -> str:
    """Cut a line to :data:`MAX_RECORDED_LINE` characters, saying how much was cut."""
    if len(line) <= MAX_RECORDED_LINE:
        return line
    return f"{line[:MAX_RECORDED_LINE]}… [{len(line) - MAX_RECORDED_LINE} more characters]"


@dataclass(frozen=True)
class _ServerRow:
    name: str
    role: str
    protocol: str


class Transcript:
    """Append-only, thread-safe recorder of protocol lines for one lab."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._servers: list[_ServerRow] = []
        self._sessions = itertools.count(1)
        # Column buffers: appended together under the lock, read by length.
        self._time: list[int] = []
        self._server: list[int] = []
        self._session: list[int] = []
        self._client: list[bool] = []
        self._line: list[str] = []
        self._command: list[str | None] = []
        self._code: list[str | None] = []
        #: Called with no argument after each line is recorded (used by live views).
        self.listeners: list = []

    def __len__(self) -> int:
        return len(self._line)

    def register_server(self, name: str, role: str, protocol: str) -> int:
        """Declare a server once; returns the id its sessions record under."""
        with self._lock:
            self._servers.append(_ServerRow(name, role, protocol))
            return len(self._servers) - 1

    def open_session(self, server_id: int) -> SessionLog:
        """A new session number (unique in this lab) for one connection of a server."""
        return SessionLog(self, server_id, next(self._sessions))

    def record(
        self,
        server_id: int,
        session: int,
        client: bool,
        line: str,
        command: str | None = None,
        code: str | None = None,
    ) -> None:
        """Append one line. Prefer :class:`SessionLog`, which fills the ids in."""
        now = time.time_ns()
        line = clip(line)
        with self._lock:
            self._time.append(now)
            self._server.append(server_id)
            self._session.append(session)
            self._client.append(client)
            self._line.append(line)
            self._command.append(command)
            self._code.append(code)
        for listener in self.listeners:
            listener()

    def record_reply(
        self, server_id: int, session: int, lines: list[str], code: str | None
    ) -> None:
        """Append the lines of one multi-line server reply at once (``code`` on the
        first line only): one lock for a whole RETR, not one per line."""
        if not lines:
            return
        now = time.time_ns()
        n = len(lines)
        if max(map(len, lines)) > MAX_RECORDED_LINE:  # rare: clip only then
            lines = [clip(line) for line in lines]
        with self._lock:
            self._time.extend([now] * n)
            self._server.extend([server_id] * n)
            self._session.extend([session] * n)
            self._client.extend([False] * n)
            self._line.extend(lines)
            self._command.extend([None] * n)
            self._code.append(code)
            self._code.extend([None] * (n - 1))
        for listener in self.listeners:
            listener()

    def frame(self, start: int = 0) -> pd.DataFrame:
        """The transcript as a DataFrame (rows ``start`` onwards), built on demand."""
        with self._lock:
            n = len(self._line)
            servers = list(self._servers)
            time_ns = np.fromiter(self._time[start:n], dtype="int64", count=max(n - start, 0))
            server = np.fromiter(self._server[start:n], dtype="int64", count=max(n - start, 0))
            session = np.fromiter(self._session[start:n], dtype="int64", count=max(n - start, 0))
            client = np.fromiter(self._client[start:n], dtype=bool, count=max(n - start, 0))
            line = self._line[start:n]
            command = self._command[start:n]
            code = self._code[start:n]

        def categorical(values: list[str]) -> pd.Categorical:
            categories = list(dict.fromkeys(values))
            codes = np.array([categories.index(v) for v in values], dtype="int64")
            return pd.Categorical.from_codes(codes[server] if len(server) else [], categories)

        index = pd.RangeIndex(start, max(n, start))
        return pd.DataFrame(
            {
                "time": pd.to_datetime(time_ns, unit="ns", utc=True),
                "server": categorical([s.name for s in servers]),
                "role": categorical([s.role for s in servers]),
                "protocol": categorical([s.protocol for s in servers]),
                "session": session,
                "direction": pd.Categorical.from_codes(client.astype("int8"), ["S", "C"]),
                "line": pd.array(line, dtype=object),
                "command": pd.array(command, dtype=object),
                "code": pd.array(code, dtype=object),
            },
            index=index,
        )


class SessionLog:
    """The transcript as seen from one connection: ``client(...)`` and ``server(...)``."""

    __slots__ = ("_transcript", "server_id", "session")

    def __init__(self, transcript: Transcript, server_id: int, session: int) -> None:
        self._transcript = transcript
        self.server_id = server_id
        self.session = session

    def client(self, line: str, command: str | None = None) -> None:
        """Record a line the client sent (direction ``C``)."""
        self._transcript.record(self.server_id, self.session, True, line, command, None)

    def server(self, line: str, code: str | None = None) -> None:
        """Record a line the server sent (direction ``S``)."""
        self._transcript.record(self.server_id, self.session, False, line, None, code)

    def reply(self, lines: list[str], code: str | None) -> None:
        """Record the lines of one server reply; ``code`` belongs to the first."""
        self._transcript.record_reply(self.server_id, self.session, lines, code)


class LineSplitter:
    """Cut a byte stream into lines for the transcript, at a server's read point.

    ``feed(data)`` returns the complete lines (decoded, CRLF stripped) that ``data``
    finished. Memory stays bounded: of a line that never ends, only the first
    :data:`MAX_RECORDED_LINE` bytes are kept, and the recorded line says how many
    bytes were dropped.
    """

    __slots__ = ("_buffer", "_dropped")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._dropped = 0

    def feed(self, data: bytes) -> list[str]:
        lines: list[str] = []
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            lines.append(self._finish(data[start : end + 1]))
            start = end + 1
        rest = data[start:]
        room = MAX_RECORDED_LINE - len(self._buffer)
        if len(rest) > room:
            self._dropped += len(rest) - max(room, 0)
            rest = rest[: max(room, 0)]
        self._buffer += rest
        return lines

    def flush(self) -> str | None:
        """The unfinished last line (a client that closed without CRLF), if any."""
        if not self._buffer and not self._dropped:
            return None
        return self._finish(b"")

    def _finish(self, tail: bytes) -> str:
        if self._buffer or self._dropped:
            room = MAX_RECORDED_LINE - len(self._buffer)
            if len(tail) > room:
                self._dropped += len(tail) - max(room, 0)
                tail = tail[: max(room, 0)]
            raw = bytes(self._buffer) + tail
            dropped = self._dropped
            self._buffer.clear()
            self._dropped = 0
        else:
            raw, dropped = tail, 0
        if len(raw) > MAX_RECORDED_LINE:
            dropped += len(raw) - MAX_RECORDED_LINE
            raw = raw[:MAX_RECORDED_LINE]
        line = decode_line(raw)
        if dropped:
            line = f"{line}… [{dropped} more bytes]"
        return line
