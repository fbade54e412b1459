"""Faults for teaching: make a server answer a command with a reply you choose.

Role
    ``lab.inject("mx.south.test", command="RCPT", reply="451 4.7.1 Try again later")``
    puts one entry in that server's :class:`Faults`. The server's command
    dispatcher asks :meth:`Faults.take` before running each verb; when an entry
    matches, the server sends the injected reply instead of running the verb, and
    the line lands in the transcript like any other. Every protocol (SMTP, POP3,
    IMAP) uses the same registry, so the same call works everywhere.

    The special command ``CONNECT`` replaces the greeting of the next
    connection(s): with a 4xx/5xx SMTP reply (or ``-ERR`` for POP3, ``* BYE`` for
    IMAP) the server then closes the connection, as a busy server would.

This module knows nothing of protocols: it must not import asyncio or sockets.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = ["Fault", "Faults"]


@dataclass
class Fault:
    """One injected reply: for ``command``, answer ``reply``, ``times`` more times
    (``None``: until cleared)."""

    command: str
    reply: str
    times: int | None = 1


class Faults:
    """The injected replies pending for one server (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[Fault] = []

    def add(self, command: str, reply: str, times: int | None = 1) -> Fault:
        """Queue a reply for ``command`` (case-insensitive verb, e.g. ``"RCPT"``)."""
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None for 'until cleared')")
        if not reply or "\r" in reply or "\n" in reply:
            raise ValueError("the reply must be one line of text without CR or LF")
        fault = Fault(command.strip().upper(), reply, times)
        with self._lock:
            self._pending.append(fault)
        return fault

    def take(self, command: str) -> str | None:
        """The reply to send instead of running ``command``, or None (the usual case)."""
        if not self._pending:  # the fast path: nothing injected
            return None
        command = command.upper()
        with self._lock:
            for fault in self._pending:
                if fault.command == command:
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times == 0:
                            self._pending.remove(fault)
                    return fault.reply
        return None

    def clear(self) -> None:
        """Forget every pending fault."""
        with self._lock:
            self._pending.clear()

    def pending(self) -> list[Fault]:
        """A copy of the faults still waiting to fire."""
        with self._lock:
            return [Fault(f.command, f.reply, f.times) for f in self._pending]
