"""The journey of one message: the hops it took and the time it spent at each.

Role
    Chapter 1 draws the path of an email: the sender's mail program (MUA) hands it to
    a submission server (MSA); the relay asks DNS for the recipient domain's MX; it
    hands the message to that MX; the MDA stores it in a Maildir; later the recipient's
    mail program downloads it with POP3 or fetches it with IMAP. This module rebuilds
    that path for a real message of the lab, from two sources of evidence:

    * the message's ``Received:`` headers, read **bottom to top** (each server that
      took the message added one on top; RFC 5321 §4.4): which servers, in which order,
      and the queue id each gave it (``... by msa.north.test ... id 3A98BE5BE4``);
    * the transcript, where those queue ids appear in the servers' own replies
      (``250 2.0.0 OK: queued as 3A98BE5BE4``), with the time of every line.

    :func:`journey_of` returns a :class:`MessageJourney`: a list of :class:`Hop`
    (name, host, start and end time, detail in plain words, transcript session ids,
    and a status: done, not yet, cached or missing). :func:`to_svg` draws it, boxes
    left to right with the time on each arrow; a notebook shows a journey as that
    picture by itself (``_repr_svg_``).

    Which times mean what (all from the transcript, UTC):

    ==================  ==========================================================
    Sender's MUA        its SMTP session at the MSA: connect .. end of DATA (".")
    MSA                 "." .. "250 ... queued as <id>" (the queue write, fsynced)
    DNS                 the relay's "<domain>. IN MX?" .. the answer to "<mx>. IN A?"
    MX                  the relay's session at the MX: connect (or MAIL) .. "."
    MDA                 "." .. "250 ... delivered ... as <id>" (the Maildir write)
    POP3 / IMAP         "RETR n" / "FETCH ... BODY[]" .. the end of its answer
    Recipient's MUA     the moment it has the whole message
    ==================  ==========================================================

    The time on an arrow is the gap between two hops: waiting in the relay's queue,
    connecting, or sitting in the mailbox until someone checks for mail.

This module is pure: it reads the transcript (a DataFrame) and the store's files; it
must not import ipywidgets, asyncio, sockets or any server. The widget that shows it
is :class:`mailkit_edu.widgets.Journey`.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import html
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from .store import INBOX, MAX_HEADER_BYTES, decode_header_text

__all__ = [
    "CACHED",
    "DONE",
    "HOP_WORDS",
    "MISSING",
    "NOT_YET",
    "Hop",
    "MessageJourney",
    "MessageNotFound",
    "Received",
    "format_duration",
    "journey_of",
    "parse_received",
    "to_svg",
]

#: A hop's status: it happened and the transcript shows when.
DONE = "done"
#: It has not happened yet (nobody has downloaded the message, or it is still queued).
NOT_YET = "not yet"
#: DNS only: the relay did not ask, it remembered an earlier answer (for 1 s).
CACHED = "cached"
#: It must have happened (the headers say so) but the transcript does not show it
#: (a lab restarted on the same ``path``, or a transcript filtered before).
MISSING = "missing"

# POP3 / IMAP commands that hand over a whole message (not only its header).
_IMAP_WHOLE = re.compile(r"(?i)(BODY(\.PEEK)?\[\]|RFC822(?![.\w])|BINARY(\.PEEK)?\[\])")
_ADDRESS = re.compile(r"<([^>]*)>")


class MessageNotFound(LookupError):
    """No message of the lab has that Message-ID or Subject; the text says where we looked."""


# --------------------------------------------------------------------------- the data


@dataclass(frozen=True)
class Received:
    """One ``Received:`` header, taken apart (RFC 5321 §4.4 "time stamp line")."""

    #: The whole header, unfolded.
    text: str
    #: ``from`` clause: the name the sending client gave in HELO/EHLO.
    from_host: str | None
    #: ``by`` clause: the server that added this header.
    by_host: str | None
    #: ``with`` clause: ESMTP, ESMTPA (authenticated), ESMTPS (TLS), ... (RFC 3848).
    with_protocol: str | None
    #: ``id`` clause: the queue id that server gave the message.
    queue_id: str | None
    #: ``for`` clause: the recipient, when the message had only one.
    for_address: str | None
    #: The date after the ``;`` (second resolution).
    date: datetime | None


@dataclass(frozen=True)
class Hop:
    """One step of a message's journey."""

    #: Stable key: sender, msa, dns, mx, mda, retrieval, recipient.
    key: str
    #: The name on the box: "Sender's MUA", "MSA", "DNS", "MX", "MDA", "POP3" or
    #: "IMAP" (or "POP3 / IMAP" before anyone retrieved it), "Recipient's MUA".
    name: str
    #: The same in plain words: "submission server", "MX lookup", ...
    what: str
    #: Which machine or person: "msa.north.test", "alice@north.test", ...
    host: str
    #: When the hop began and ended (UTC); None when it has not happened (or not seen).
    start: pd.Timestamp | None
    end: pd.Timestamp | None
    #: What happened there, in a sentence or two, quoting the transcript.
    detail: str
    #: The transcript sessions that show it (``lab.transcript(session=...)``).
    sessions: tuple[int, ...] = ()
    #: DONE, NOT_YET, CACHED or MISSING.
    status: str = DONE
    #: The provider (mail domain) whose machine it is; None for the lab's DNS.
    domain: str | None = None

    @property
    def spent(self) -> pd.Timedelta | None:
        """How long the message spent at this hop (None if unknown)."""
        if self.start is None or self.end is None:
            return None
        return self.end - self.start


@dataclass
class MessageJourney:
    """The hops of one message, oldest first, and what they were built from."""

    message_id: str | None
    subject: str
    sender: str | None
    recipient: str | None
    hops: list[Hop]
    #: The message's ``Received:`` headers, read bottom to top (oldest first).
    received: list[Received] = field(default_factory=list)
    #: The stored copy the journey was built from: (address, folder, uid), if any.
    stored: tuple[str, str, int] | None = None
    #: Its file, and the file's modification time (when the MDA wrote it).
    file: str | None = None
    file_mtime: pd.Timestamp | None = None

    def hop(self, key: str) -> Hop:
        """The hop called ``key`` (sender, msa, dns, mx, mda, retrieval, recipient)."""
        for hop in self.hops:
            if hop.key == key:
                return hop
        raise KeyError(f"no hop {key!r}; the hops are {', '.join(h.key for h in self.hops)}")

    @property
    def delivered(self) -> bool:
        """True once the message is in the recipient's Maildir."""
        return self.hop("mda").status == DONE

    @property
    def retrieved(self) -> bool:
        """True once the recipient's mail program downloaded or fetched it."""
        return self.hop("retrieval").status == DONE

    def gaps(self) -> list[pd.Timedelta | None]:
        """The time on each arrow: from the end of one hop to the start of the next
        (the last known end before it, when a hop in between has no times)."""
        gaps: list[pd.Timedelta | None] = []
        last_end: pd.Timestamp | None = None
        for before, after in zip(self.hops, self.hops[1:], strict=False):
            if before.end is not None:
                last_end = before.end
            gaps.append(
                after.start - last_end if after.start is not None and last_end is not None else None
            )
        return gaps

    def summary(self) -> list[str]:
        """The journey in a few plain sentences (what the picture's footer says)."""
        lines = []
        first = next((h for h in self.hops if h.start is not None), None)
        mda = self.hop("mda")
        if first is not None and first.start is not None and mda.end is not None:
            since = (
                "From the sender's mail program to the mailbox"
                if first.key == "sender"
                else f"From the {first.name} to the mailbox"
            )
            lines.append(f"{since}: {format_duration(mda.end - first.start)}.")
        elif mda.status != DONE:
            lines.append("Not in the recipient's mailbox yet: see lab.queue().")
        retrieval = self.hop("retrieval")
        if retrieval.status == DONE and mda.end is not None and retrieval.start is not None:
            who = _local_part(self.recipient) or "the recipient"
            lines.append(
                f"It waited {format_duration(retrieval.start - mda.end)} in the mailbox "
                f"before {who}'s mail program took it with {retrieval.name}."
            )
        elif mda.status == DONE:
            lines.append("Nobody has retrieved it yet (POP3 RETR or IMAP FETCH).")
        return lines

    def frame(self) -> pd.DataFrame:
        """The hops as a table: name, host, status, start, end, spent, sessions, detail."""
        return pd.DataFrame(
            [
                {
                    "hop": hop.name,
                    "host": hop.host,
                    "status": hop.status,
                    "start": hop.start,
                    "end": hop.end,
                    "spent": hop.spent,
                    "sessions": list(hop.sessions),
                    "detail": hop.detail,
                }
                for hop in self.hops
            ],
            columns=["hop", "host", "status", "start", "end", "spent", "sessions", "detail"],
        )

    def _repr_svg_(self) -> str:
        return to_svg(self)


# --------------------------------------------------------------------------- Received:

_RECEIVED_PARTS = {
    "from_host": re.compile(r"(?i)\bfrom\s+(\S+)"),
    "by_host": re.compile(r"(?i)\bby\s+(\S+)"),
    "with_protocol": re.compile(r"(?i)\bwith\s+(\S+)"),
    "queue_id": re.compile(r"(?i)\bid\s+([^\s;]+)"),
    "for_address": re.compile(r"(?i)\bfor\s+<?([^\s>;]+)>?"),
}


def parse_received(value: str) -> Received:
    """Take one ``Received:`` header value apart (tolerant: missing clauses are None).

    >>> r = parse_received("from [127.0.0.1] (localhost [127.0.0.1]) by msa.north.test "
    ...                    "(mailkit-edu) with ESMTPA id 3A98BE5BE4 for <carol@south.test>; "
    ...                    "Thu, 26 Nov 2026 17:39:25 +0000")
    >>> r.by_host, r.with_protocol, r.queue_id, r.for_address
    ('msa.north.test', 'ESMTPA', '3A98BE5BE4', 'carol@south.test')
    """
    text = " ".join(value.split())
    clauses, _, stamp = text.rpartition(";")
    if not clauses:  # no date part
        clauses, stamp = text, ""
    # Comments "(...)" may contain words like "from"; drop them before matching.
    bare = re.sub(r"\([^()]*\)", " ", clauses)
    parts = {
        name: (m.group(1) if (m := rx.search(bare)) else None)
        for name, rx in _RECEIVED_PARTS.items()
    }
    date = None
    if stamp.strip():
        try:
            date = email.utils.parsedate_to_datetime(stamp.strip())
        except (TypeError, ValueError):
            date = None
    return Received(text=text, date=date, **parts)


# --------------------------------------------------------------------------- durations


def format_duration(delta: pd.Timedelta | float | None) -> str:
    """A duration as people say it: ``840 µs``, ``3.5 ms``, ``1.24 s``, ``2 min 05 s``."""
    if delta is None:
        return "?"
    seconds = delta.total_seconds() if isinstance(delta, pd.Timedelta) else float(delta)
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    if seconds < 3600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest:02d} s"
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours} h {rest // 60:02d} min"


def _clock(when: pd.Timestamp | None) -> str:
    return "" if when is None else when.strftime("%H:%M:%S.%f")[:-3]


# --------------------------------------------------------------------------- evidence


@dataclass
class _Copy:
    """A stored copy of the message and its header."""

    address: str
    folder: str
    uid: int
    file: str
    mtime_ns: int
    header: email.message.Message


@dataclass
class _Transaction:
    """One SMTP transaction in the transcript: MAIL .. "." .. the final 250."""

    session: int
    server: str
    first: int  # position where the transaction starts (session start or its MAIL)
    mail: int
    dot: int
    done: int  # position of the 250 that took the message
    reused: bool  # an earlier transaction used the same connection
    sender: str
    recipients: list[str]
    authenticated: bool


class _Table:
    """The transcript as numpy columns, with the few searches a journey needs.

    Positions are 0..n-1 in the frame (not its index: a filtered frame works too).
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        when = frame["time"]
        if getattr(when.dt, "tz", None) is not None:
            when = when.dt.tz_convert("UTC").dt.tz_localize(None)
        self.time_ns = when.to_numpy(dtype="datetime64[ns]").view("int64")
        self.server = _strings(frame["server"])
        self.role = _strings(frame["role"])
        self.protocol = _strings(frame["protocol"])
        self.session = frame["session"].to_numpy()
        self.client = (frame["direction"] == "C").to_numpy()
        self.line = frame["line"].to_numpy(dtype=object)
        self.command = _strings(frame["command"])
        self.code = _strings(frame["code"])
        self._sessions: dict[int, np.ndarray] = {}
        pairs = frame[["server", "role"]].astype(str).drop_duplicates()
        #: server name -> role ("msa", "mx", ...), for the hosts named in Received: headers.
        self.roles = dict(zip(pairs["server"], pairs["role"], strict=True))

    def __len__(self) -> int:
        return len(self.line)

    def when(self, position: int) -> pd.Timestamp:
        return pd.Timestamp(int(self.time_ns[position]), unit="ns", tz="UTC")

    def of_session(self, session: int) -> np.ndarray:
        rows = self._sessions.get(session)
        if rows is None:
            rows = self._sessions[session] = np.flatnonzero(self.session == session)
        return rows

    def where(self, mask: np.ndarray, test) -> list[int]:
        """Positions where ``mask`` holds and ``test(line)`` is true, in order."""
        line = self.line
        return [int(p) for p in np.flatnonzero(mask) if test(line[p])]

    def is_role(self, role: str) -> np.ndarray:
        return self.role == role

    def transaction(self, done: int) -> _Transaction | None:
        """The SMTP transaction whose final reply is at ``done``."""
        session = int(self.session[done])
        rows = self.of_session(session)
        before = rows[rows < done]
        mails = [int(p) for p in before if self.client[p] and self.command[p] == "MAIL"]
        if not mails:
            return None
        mail = mails[-1]
        dots = [int(p) for p in before if p > mail and self.client[p] and self.line[p] == "."]
        dot = dots[-1] if dots else done
        recipients = [
            _address(self.line[p])
            for p in before
            if p > mail and self.client[p] and self.command[p] == "RCPT"
        ]
        authenticated = any(self.client[p] and self.command[p] == "AUTH" for p in before)
        reused = len(mails) > 1
        return _Transaction(
            session=session,
            server=str(self.server[done]),
            first=mail if reused else int(rows[0]),
            mail=mail,
            dot=dot,
            done=done,
            reused=reused,
            sender=_address(self.line[mail]),
            recipients=[r for r in recipients if r],
            authenticated=authenticated,
        )

    def accepted(self, role: str, host: str | None, queue_id: str) -> _Transaction | None:
        """The transaction in which a ``role`` server (``host``) said "... as <queue_id>"."""
        suffix = f" as {queue_id}"
        mask = self.is_role(role) & ~self.client & (self.code == "250")
        if host is not None:
            mask &= self.server == host.lower()
        found = self.where(mask, lambda line: line.endswith(suffix))
        return self.transaction(found[-1]) if found else None

    def reply_after(self, position: int) -> int | None:
        """The first final 2xx/4xx/5xx reply of the same session after ``position``."""
        rows = self.of_session(int(self.session[position]))
        for p in rows[rows > position]:
            code = self.code[p]
            line = self.line[p]
            if not self.client[p] and code and code[0] in "245" and line[3:4] != "-":
                return int(p)
        return None


def _strings(column: pd.Series) -> np.ndarray:
    """A column as an object array of str, with None (never NaN) where it is empty."""
    values = column.astype(object).to_numpy(dtype=object, copy=True)
    values[pd.isna(values)] = None
    return values


def _address(line: str) -> str:
    match = _ADDRESS.search(line)
    return match.group(1).lower() if match else ""


def _local_part(address: str | None) -> str:
    return (address or "").partition("@")[0]


def _domain_of(address: str | None) -> str | None:
    if not address or "@" not in address:
        return None
    return address.rpartition("@")[2].lower()


def _host_domain(host: str | None) -> str | None:
    """``msa.north.test`` -> ``north.test`` (the lab's naming: <role>.<domain>)."""
    if not host or "." not in host:
        return None
    return host.partition(".")[2].lower()


def _bare_id(message_id: str | None) -> str:
    return (message_id or "").strip().strip("<>").strip()


# --------------------------------------------------------------------------- the store


def _read_header(path: str) -> email.message.Message:
    lines: list[bytes] = []
    total = 0
    with open(path, "rb") as file:
        while total < MAX_HEADER_BYTES:
            line = file.readline(MAX_HEADER_BYTES - total)
            if line in (b"", b"\n", b"\r\n"):
                break
            lines.append(line)
            total += len(line)
    return email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(b"".join(lines))


def _copy_of(store: Any, address: str, folder: str, uid: int) -> _Copy:
    info = store.get(address, folder, uid)
    path = info.file
    try:
        header, mtime_ns = _read_header(path), os.stat(path).st_mtime_ns
    except FileNotFoundError:  # its flags changed meanwhile (a rename): ask again
        info = store.get(address, folder, uid)
        path = info.file
        header, mtime_ns = _read_header(path), os.stat(path).st_mtime_ns
    return _Copy(address, folder, uid, path, mtime_ns, header)


def _find_copies(store: Any, message: str, recipient: str | None) -> list[_Copy]:
    """Every stored copy whose Message-ID (or else Subject) is ``message``, best first."""
    wanted_id = _bare_id(message)
    by_id: list[_Copy] = []
    by_subject: list[_Copy] = []
    for address in store.accounts():
        if recipient is not None and address != recipient.lower():
            continue
        for folder in store.folders(address):
            for info in store.messages(address, folder):
                try:
                    header = _read_header(info.file)
                    mtime_ns = os.stat(info.file).st_mtime_ns
                except FileNotFoundError:
                    continue  # expunged or renamed since the listing
                copy = _Copy(address, folder, info.uid, info.file, mtime_ns, header)
                if wanted_id and _bare_id(header.get("Message-ID")) == wanted_id:
                    by_id.append(copy)
                elif decode_header_text(str(header.get("Subject", ""))) == message.strip():
                    by_subject.append(copy)

    def rank(copy: _Copy) -> tuple:
        delivered = copy.header.get("Delivered-To") is not None
        return (not delivered, copy.folder != INBOX, -copy.mtime_ns)

    return sorted(by_id, key=rank) or sorted(by_subject, key=rank)


# --------------------------------------------------------------------------- the journey


def journey_of(
    source: Any,
    message: str | None = None,
    *,
    recipient: str | None = None,
    stored: tuple[str, str, int] | None = None,
) -> MessageJourney:
    """The journey of one message of a lab, hop by hop.

    ``source`` is a lab (its transcript and its store are used) or a transcript
    DataFrame (``lab.transcript()``; then the store is not read). ``message`` is the
    message's Message-ID (with or without ``<>``) or else its Subject; None means the
    message delivered last. ``recipient`` picks one recipient's copy of a message sent
    to several; ``stored=(address, folder, uid)`` names the stored copy exactly.

    Raises :class:`MessageNotFound` if no such message is in the store or the transcript.
    """
    if isinstance(source, pd.DataFrame):
        frame, store = source, None
    else:
        frame = source.transcript_log.frame()
        store = getattr(source, "store", None)
    table = _Table(frame)
    if recipient is not None:
        recipient = recipient.strip().lower()

    copy: _Copy | None = None
    if store is not None and stored is not None:
        copy = _copy_of(store, *stored)
    elif message is None:
        message = _last_delivered_id(table)
        if message is None:
            raise MessageNotFound("no message has been delivered in this lab yet")
    if copy is None and store is not None and message is not None:
        copies = _find_copies(store, message, recipient)
        copy = copies[0] if copies else None

    # -- what the stored copy's header says -------------------------------------------
    received: list[Received] = []
    message_id = subject = sender = None
    if copy is not None:
        header = copy.header
        received = [parse_received(str(v)) for v in reversed(header.get_all("Received") or [])]
        message_id = _bare_id(header.get("Message-ID")) or None
        subject = decode_header_text(str(header.get("Subject", "")))
        return_path = header.get("Return-Path")
        sender = _address(str(return_path)) if return_path is not None else None
        delivered_to = header.get("Delivered-To")
        if delivered_to is not None:
            recipient = recipient or str(delivered_to).strip().lower()

    def role_of(host: str | None) -> str | None:
        if not host:
            return None
        return table.roles.get(host.lower()) or host.lower().partition(".")[0]

    msa_rec = next((r for r in received if role_of(r.by_host) == "msa"), None)
    mx_rec = next((r for r in reversed(received) if role_of(r.by_host) == "mx"), None)

    # -- the two SMTP transactions in the transcript ----------------------------------
    mx_tx = msa_tx = None
    if mx_rec is not None and mx_rec.queue_id:
        mx_tx = table.accepted("mx", mx_rec.by_host, mx_rec.queue_id)
    if msa_rec is not None and msa_rec.queue_id:
        msa_tx = table.accepted("msa", msa_rec.by_host, msa_rec.queue_id)
    key = message_id or (message if copy is None else None) or subject
    if mx_tx is None and (copy is None or mx_rec is None) and key:
        # No stored copy to read (or one without an MX's trace, e.g. a copy in Sent):
        # find the message in the DATA that the relay sent to an MX.
        mx_tx, found_received = _find_in_data(table, "mx", key, recipient)
        if mx_tx is not None and not received:
            received = found_received
            msa_rec = next((r for r in received if role_of(r.by_host) == "msa"), msa_rec)
    if msa_tx is None and msa_rec is not None and msa_rec.queue_id:
        msa_tx = table.accepted("msa", msa_rec.by_host, msa_rec.queue_id)
    if msa_tx is None and msa_rec is None and key:
        msa_tx, _ = _find_in_data(table, "msa", key, recipient)
    if copy is None and mx_tx is None and msa_tx is None:
        where = "the store or the transcript" if store is not None else "the transcript"
        raise MessageNotFound(
            f"no message with Message-ID or Subject {message!r} in {where}; "
            "the chooser of mailkit_edu.widgets.Journey lists the stored ones"
        )

    # -- who, from the evidence we have -------------------------------------------------
    if mx_tx is not None:
        sender = sender if sender is not None else mx_tx.sender
        if recipient is None and mx_tx.recipients:
            recipient = mx_tx.recipients[0]
    if msa_tx is not None and sender is None:
        sender = msa_tx.sender
    if recipient is None and msa_tx is not None and msa_tx.recipients:
        recipient = msa_tx.recipients[0]
    if recipient is None and mx_rec is not None:
        recipient = mx_rec.for_address
    if copy is None and message_id is None:
        message_id = _data_header(table, mx_tx or msa_tx, "message-id")
    if subject is None:
        subject = _data_header(table, mx_tx or msa_tx, "subject") or ""

    msa_host = msa_tx.server if msa_tx else (msa_rec.by_host if msa_rec else None)
    if msa_host is None and mx_rec is not None and role_of(mx_rec.from_host) == "msa":
        msa_host = mx_rec.from_host  # the relay said EHLO with its MSA's name (a bounce)
    mx_host = mx_tx.server if mx_tx else (mx_rec.by_host if mx_rec else None)
    mx_id = _queue_id(table, mx_tx) if mx_tx else (mx_rec.queue_id if mx_rec else None)
    sender_domain = _host_domain(msa_host) or _domain_of(sender)
    recipient_domain = _domain_of(recipient) or _host_domain(mx_host)

    hops = [
        *_sender_hops(table, msa_tx, msa_rec, sender, msa_host, sender_domain),
        _dns_hop(table, msa_tx, mx_tx, recipient_domain, mx_host),
        *_delivery_hops(table, mx_tx, mx_rec, copy, recipient, mx_host, recipient_domain),
    ]
    after = mx_tx.done if mx_tx is not None else -1
    hops += _retrieval_hops(table, after, mx_host, mx_id, message_id, recipient, recipient_domain)
    return MessageJourney(
        message_id=message_id,
        subject=subject or "",
        sender=sender,
        recipient=recipient,
        hops=hops,
        received=received,
        stored=(copy.address, copy.folder, copy.uid) if copy else None,
        file=copy.file if copy else None,
        file_mtime=pd.Timestamp(copy.mtime_ns, unit="ns", tz="UTC") if copy else None,
    )


def _last_delivered_id(table: _Table) -> str | None:
    """The Message-ID of the last message an MX accepted (from its DATA lines)."""
    mask = table.is_role("mx") & ~table.client & (table.code == "250")
    found = table.where(mask, lambda line: " delivered " in line)
    for done in reversed(found):
        tx = table.transaction(done)
        message_id = _data_header(table, tx, "message-id") if tx else None
        if message_id:
            return message_id
    return None


def _data_lines(table: _Table, tx: _Transaction) -> list[int]:
    rows = table.of_session(tx.session)
    return [int(p) for p in rows if tx.mail < p < tx.dot and table.client[p]]


def _header_lines(table: _Table, tx: _Transaction) -> list[int]:
    """The positions of the DATA lines before the first empty one (the header section)."""
    lines = []
    started = False
    for p in _data_lines(table, tx):
        if not started:  # MAIL, RCPT and DATA themselves are commands, not content
            started = table.command[p] is None
            if not started:
                continue
        if table.line[p] == "":
            break
        lines.append(p)
    return lines


def _data_header(table: _Table, tx: _Transaction | None, name: str) -> str | None:
    """A header's value from the DATA lines of a transaction (the first such header)."""
    if tx is None:
        return None
    prefix = name.lower() + ":"
    for p in _header_lines(table, tx):
        line = table.line[p]
        if line.lower().startswith(prefix):
            value = line[len(prefix) :].strip()
            return _bare_id(value) if name == "message-id" else decode_header_text(value)
    return None


def _queue_id(table: _Table, tx: _Transaction) -> str | None:
    line = table.line[tx.done]
    return line.rpartition(" as ")[2].strip() or None


def _find_in_data(
    table: _Table, role: str, key: str, recipient: str | None
) -> tuple[_Transaction | None, list[Received]]:
    """The last transaction at a ``role`` server whose DATA carries Message-ID or Subject
    ``key`` in its header section (a bounce carries the original in its body: that does
    not count), and the Received: headers in that DATA (oldest first)."""
    key_id = _bare_id(key)
    smtp_data = table.is_role(role) & table.client & pd.isna(table.command)

    def carries(line: str) -> bool:
        low = line[:12].lower()
        if low.startswith("message-id:"):
            return _bare_id(line[11:]) == key_id
        if low.startswith("subject:"):
            return decode_header_text(line[8:]) == key.strip()
        return False

    for position in reversed(table.where(smtp_data, carries)):
        done = table.reply_after(position)
        if done is None or not table.line[done].startswith("250"):
            continue
        tx = table.transaction(done)
        if tx is None or (recipient and tx.recipients and recipient not in tx.recipients):
            continue
        header = _header_lines(table, tx)
        if position not in header:
            continue
        return tx, _received_in_data(table, tx)
    return None, []


def _received_in_data(table: _Table, tx: _Transaction) -> list[Received]:
    headers: list[str] = []
    for p in _header_lines(table, tx):
        line = table.line[p]
        if line[:1] in (" ", "\t") and headers:
            headers[-1] += " " + line.strip()
        else:
            headers.append(line)
    values = [h.partition(":")[2] for h in headers if h.lower().startswith("received:")]
    return [parse_received(v) for v in reversed(values)]


# --------------------------------------------------------------------------- the hops

#: The hops of every journey, in order (their keys), with the name on each box and
#: what it is in plain words (the defaults; a hop may say more, e.g. "download (RETR)").
HOP_WORDS = {
    "sender": ("Sender's MUA", "mail program"),
    "msa": ("MSA", "submission server"),
    "dns": ("DNS", "MX lookup"),
    "mx": ("MX", "incoming mail server"),
    "mda": ("MDA", "delivery to Maildir"),
    "retrieval": ("POP3 / IMAP", "download or fetch"),
    "recipient": ("Recipient's MUA", "mail program"),
}


def _hop(
    key: str,
    host: str,
    detail: str,
    *,
    status: str = DONE,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    sessions: tuple[int, ...] | list[int] = (),
    domain: str | None = None,
    name: str | None = None,
    what: str | None = None,
) -> Hop:
    default_name, default_what = HOP_WORDS[key]
    return Hop(
        key=key,
        name=name or default_name,
        what=what or default_what,
        host=host,
        start=start,
        end=end,
        detail=detail,
        sessions=tuple(dict.fromkeys(sessions)),
        status=status,
        domain=domain,
    )


def _sender_hops(
    table: _Table,
    tx: _Transaction | None,
    rec: Received | None,
    sender: str | None,
    msa_host: str | None,
    domain: str | None,
) -> list[Hop]:
    """The sender's mail program and the MSA: one SMTP session at the MSA."""
    bounce = sender == "" or (sender or "").lower().startswith("mailer-daemon")
    program = f"{_local_part(sender)}'s mail program" if sender and not bounce else None
    if tx is not None:
        who = sender or "the sender"
        login = "logged in (AUTH), " if tx.authenticated else ""
        reuse = " (on a connection it had already used)" if tx.reused else ""
        mua = _hop(
            "sender",
            sender or "?",
            f"{who}'s mail program connected to {tx.server}{reuse}, {login}said whom the "
            "message is from and for (MAIL FROM, RCPT TO) and sent it after DATA, ending "
            f"with a line holding one dot. SMTP session {tx.session}.",
            start=table.when(tx.first),
            end=table.when(tx.dot),
            sessions=[tx.session],
            domain=domain,
            what=program,
        )
        msa = _hop(
            "msa",
            tx.server,
            f"{tx.server} added its Received: header, wrote the message to its queue on "
            f"disk (fsynced) and only then answered “{table.line[tx.done]}”.",
            start=table.when(tx.dot),
            end=table.when(tx.done),
            sessions=[tx.session],
            domain=domain,
        )
        return [mua, msa]
    if bounce:
        text = (
            "No mail program sent this message: the relay wrote it itself. It is a bounce "
            "(a delivery status notification, RFC 3464) about a message it could not deliver."
        )
        return [
            _hop(
                "sender",
                "MAILER-DAEMON",
                text,
                status=MISSING,
                domain=domain,
                what="nobody: a bounce",
            ),
            _hop("msa", msa_host or "?", text, status=MISSING, domain=domain),
        ]
    if rec is not None:
        when = f" at {rec.date:%H:%M:%S}" if rec.date else ""
        text = (
            f"Its Received: header says {rec.by_host} took it from {rec.from_host}{when} "
            f"(id {rec.queue_id}), but that SMTP session is not in this transcript "
            "(was the lab restarted since?)."
        )
    else:
        text = "It did not come through an MSA of this lab (no Received: header of one)."
    return [
        _hop("sender", sender or "?", text, status=MISSING, domain=domain, what=program),
        _hop("msa", msa_host or "?", text, status=MISSING, domain=domain),
    ]


def _dns_hop(
    table: _Table,
    msa_tx: _Transaction | None,
    mx_tx: _Transaction | None,
    domain: str | None,
    mx_host: str | None,
) -> Hop:
    """The relay's MX lookup for the recipient's domain (and the MX host's A record)."""
    if domain is None:
        return _hop("dns", "dns", "The recipient's domain is unknown.", status=MISSING)
    dns_questions = table.is_role("dns") & table.client

    def asked(question: str) -> list[int]:
        return table.where(dns_questions, lambda line: line.lower() == question)

    questions = asked(f"{domain}. in mx?")
    low = msa_tx.dot if msa_tx is not None else -1
    high = mx_tx.first if mx_tx is not None else len(table)
    between = [p for p in questions if low < p < high]
    if between:
        # The last question before the MX session (an earlier one may have led to a
        # failed attempt and a retry); before any delivery, the first after the MSA.
        first = between[-1] if mx_tx is not None else between[0]
        answers = _answers(table, first)
        end = answers[-1] if answers else first
        sessions = [int(table.session[first])]
        said = "; ".join(table.line[p] for p in answers) or "no answer"
        # Without the MSA's session nothing says when the relay took the message: then
        # this is the last lookup before the delivery (its answer served it).
        verb = "asked" if msa_tx is not None else "last asked, before this delivery,"
        text = f"The relay {verb} the lab's DNS “{domain}. IN MX?” and was told “{said}”"
        if mx_host:
            a_asked = [p for p in asked(f"{mx_host.lower()}. in a?") if first < p < high]
            if a_asked:
                a_answers = _answers(table, a_asked[0])
                end = max(end, a_answers[-1] if a_answers else a_asked[0])
                sessions.append(int(table.session[a_asked[0]]))
                said = "; ".join(table.line[p] for p in a_answers) or "no answer"
                text += f", then “{mx_host}. IN A?”: “{said}”"
        return _hop(
            "dns",
            "dns",
            text + ".",
            start=table.when(first),
            end=table.when(end),
            sessions=sessions,
        )
    if mx_tx is not None:
        earlier = [p for p in questions if p < high]
        if not earlier:
            return _hop(
                "dns",
                "dns",
                f"The MX lookup of {domain} is not in this transcript.",
                status=MISSING,
            )
        p = earlier[-1]
        ago = format_duration(table.when(high) - table.when(p))
        return _hop(
            "dns",
            "dns",
            f"The relay did not ask again: it still remembered the answer to “{domain}. IN "
            f"MX?” from {ago} before (it keeps DNS answers for 1 s).",
            status=CACHED,
            sessions=[int(table.session[p])],
        )
    return _hop(
        "dns",
        "dns",
        f"The relay has not looked up {domain}'s MX for this message yet "
        "(is it still in the queue? see lab.queue()).",
        status=NOT_YET,
    )


def _answers(table: _Table, question: int) -> list[int]:
    rows = table.of_session(int(table.session[question]))
    return [int(p) for p in rows if p > question and not table.client[p]]


def _delivery_hops(
    table: _Table,
    tx: _Transaction | None,
    rec: Received | None,
    copy: _Copy | None,
    recipient: str | None,
    mx_host: str | None,
    domain: str | None,
) -> list[Hop]:
    """The MX (the relay's session there) and the MDA (the Maildir write before its 250)."""
    maildir = f"{recipient}'s Maildir" if recipient else "the Maildir"
    when = where = None
    if copy is not None:
        when = pd.Timestamp(copy.mtime_ns, unit="ns", tz="UTC")
        where = (
            f" The file is {os.path.basename(copy.file)} in {copy.address}'s {copy.folder} "
            f"(UID {copy.uid}); the MDA wrote it at {_clock(when)} UTC (its mtime)."
        )
    if tx is not None:
        reused = " on the connection it kept open from an earlier message" if tx.reused else ""
        mx = _hop(
            "mx",
            tx.server,
            f"The relay connected to {tx.server}{reused} and handed the message over: "
            f"MAIL FROM:<{tx.sender}>, RCPT TO:<{'>, <'.join(tx.recipients)}>, DATA. "
            f"SMTP session {tx.session}.",
            start=table.when(tx.first),
            end=table.when(tx.dot),
            sessions=[tx.session],
            domain=domain,
        )
        mda = _hop(
            "mda",
            recipient or "?",
            f"{tx.server} added Return-Path:, Delivered-To: and its Received: header, had "
            f"the MDA store the message in {maildir} (new/, fsynced) and only then answered "
            f"“{table.line[tx.done]}”.{where or ''}",
            start=table.when(tx.dot),
            end=table.when(tx.done),
            sessions=[tx.session],
            domain=domain,
        )
        return [mx, mda]
    if copy is not None and rec is not None:
        return [
            _hop(
                "mx",
                rec.by_host or mx_host or "?",
                f"Its Received: header says {rec.by_host} took it from {rec.from_host} "
                f"(id {rec.queue_id}), but that SMTP session is not in this transcript.",
                status=MISSING,
                domain=domain,
            ),
            _hop(
                "mda",
                recipient or "?",
                f"The message is stored.{where}",
                start=when,
                end=when,
                domain=domain,
            ),
        ]
    text = (
        f"Not delivered to {recipient or 'the recipient'} yet: the relay still has it in "
        "its queue, or gave up (see lab.queue(), and the sender's mailbox for a bounce)."
    )
    host = mx_host or (f"mx.{domain}" if domain else "?")
    return [
        _hop("mx", host, text, status=NOT_YET, domain=domain),
        _hop("mda", recipient or "?", text, status=NOT_YET, domain=domain),
    ]


def _retrieval_hops(
    table: _Table,
    after: int,
    mx_host: str | None,
    mx_id: str | None,
    message_id: str | None,
    recipient: str | None,
    domain: str | None,
) -> list[Hop]:
    """The first POP3 RETR or IMAP FETCH that gave the recipient the whole message.

    The answer to it carries the stored file's lines, among them the MX's own trace
    line (``\\tby mx.south.test (mailkit-edu) with ESMTP id 5EF1BA0FE0``): that queue
    id names this delivery, and the ``Delivered-To:`` line above it the recipient.
    """
    mask = ~table.client & ((table.protocol == "POP3") | (table.protocol == "IMAP"))
    if after >= 0:
        mask[: after + 1] = False
    marks = None
    if mx_id:
        by = f"by {mx_host.lower()} " if mx_host else "by "
        tag = f" id {mx_id}"

        def marks(line: str) -> bool:
            at = line.find(tag)
            rest = line[at + len(tag) : at + len(tag) + 1]
            return at >= 0 and rest in ("", ";") and by in line.lower()

    elif message_id:
        expected = f"message-id: <{message_id}>".lower()

        def marks(line: str) -> bool:
            return line.lower() == expected

    found: list[tuple[int, int]] = []  # (the command, the end of its answer)
    if marks is not None:
        for p in table.where(mask, marks):
            command = _command_before(table, p)
            if command is None or any(c == command for c, _ in found):
                continue
            if not _whole_message(table, command):
                continue  # TOP, or a FETCH of the header only: not the message yet
            if recipient and not _delivered_to(table, command, p, recipient):
                continue
            found.append((command, _answer_end(table, command)))
    who = _local_part(recipient) or "the recipient"
    program = f"{who}'s mail program"
    if not found:
        text = (
            f"Nobody has retrieved it yet: {program} can download it with POP3 (RETR) or "
            "fetch it with IMAP (FETCH ... BODY[])."
        )
        host = f"pop3/imap.{domain}" if domain else "?"
        return [
            _hop("retrieval", host, text, status=NOT_YET, domain=domain),
            _hop("recipient", recipient or "?", text, status=NOT_YET, domain=domain, what=program),
        ]
    command, end = found[0]
    session = int(table.session[command])
    protocol = str(table.protocol[command])
    server = str(table.server[command])
    said = table.line[command]
    more = f" It was retrieved {len(found)} times; this is the first." if len(found) > 1 else ""
    if protocol == "POP3":
        what = "download (RETR)"
        text = (
            f"{program} logged in to {server} and downloaded the message with “{said}”. "
            f"POP3 session {session}.{_pop3_deleted(table, command)}{more}"
        )
    else:
        what = "fetch (IMAP)"
        text = (
            f"{program} fetched the message from {server} with “{said}”; the message "
            f"stays on the server. IMAP session {session}.{more}"
        )
    done = table.when(end)
    return [
        _hop(
            "retrieval",
            server,
            text,
            start=table.when(command),
            end=done,
            sessions=[int(table.session[c]) for c, _ in found],
            domain=domain,
            name=protocol,
            what=what,
        ),
        _hop(
            "recipient",
            recipient or "?",
            f"{program} has the whole message: the answer to “{said}” ended at {_clock(done)} UTC.",
            start=done,
            end=done,
            sessions=[session],
            domain=domain,
            what=program,
        ),
    ]


def _command_before(table: _Table, position: int) -> int | None:
    rows = table.of_session(int(table.session[position]))
    earlier = rows[(rows < position)]
    clients = earlier[table.client[earlier]]
    return int(clients[-1]) if len(clients) else None


def _whole_message(table: _Table, command: int) -> bool:
    verb = table.command[command]
    if table.protocol[command] == "POP3":
        return verb == "RETR"
    return verb in ("FETCH", "UID FETCH") and bool(_IMAP_WHOLE.search(table.line[command]))


def _delivered_to(table: _Table, command: int, mark: int, recipient: str) -> bool:
    rows = table.of_session(int(table.session[command]))
    for p in rows[(rows > command) & (rows < mark)][::-1]:
        line = table.line[p]
        if line[:13].lower() == "delivered-to:":
            return line[13:].strip().lower() == recipient
    return True  # no Delivered-To: line to say otherwise


def _answer_end(table: _Table, command: int) -> int:
    rows = table.of_session(int(table.session[command]))
    later = rows[rows > command]
    clients = later[table.client[later]]
    stop = clients[0] if len(clients) else None
    answer = later[later < stop] if stop is not None else later
    return int(answer[-1]) if len(answer) else command


def _pop3_deleted(table: _Table, command: int) -> str:
    number = table.line[command].partition(" ")[2].strip()
    rows = table.of_session(int(table.session[command]))
    later = [int(p) for p in rows[rows > command] if table.client[p]]
    deleted = any(
        table.command[p] == "DELE" and table.line[p].partition(" ")[2].strip() == number
        for p in later
    )
    quit_ = any(table.command[p] == "QUIT" for p in later)
    if deleted and quit_:
        return f" Then it deleted it from the server (DELE {number}, then QUIT)."
    if deleted:
        return f" It marked it for deletion (DELE {number}); only QUIT would delete it."
    return ""


# --------------------------------------------------------------------------- the picture

_BOX_W, _BOX_H, _GAP, _MARGIN = 132, 124, 76, 20
_TOP = 62  # where the provider bands begin
_BOX_Y = _TOP + 26
_BAND_H = _BOX_H + 40
_FONT = "system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif"
_MONO = "ui-monospace,SFMono-Regular,Menlo,Consolas,monospace"
_INK, _SOFT, _GREY = "#24292f", "#57606a", "#8c959f"
# Provider colours: (band fill, band stroke, accent of its boxes).
_SENDER_COLOURS = ("#eef5ff", "#c8dcf8", "#1f6feb")
_RECIPIENT_COLOURS = ("#eefaf0", "#c1e4c9", "#1a7f37")
_DNS_ACCENT = "#9a6700"
# What crosses each arrow, in a word or two.
_ARROW_WORDS = {
    ("sender", "msa"): "submission",
    ("msa", "dns"): "queue → MX?",
    ("dns", "mx"): "relay (SMTP)",
    ("mx", "mda"): "store",
    ("mda", "retrieval"): "in mailbox",
}


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _text(
    x: float,
    y: float,
    text: str,
    *,
    size: float = 11,
    weight: str = "normal",
    fill: str = _INK,
    anchor: str = "middle",
    mono: bool = False,
    width: float | None = None,
) -> str:
    """One <text>, escaped; squeezed with textLength when it would be wider than ``width``
    (estimated: SVG cannot measure text, and the picture must not depend on fonts)."""
    char = size * (0.61 if mono else 0.56)
    squeeze = ""
    if width is not None and len(text) * char > width:
        squeeze = f' textLength="{width:.0f}" lengthAdjust="spacingAndGlyphs"'
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" '
        f'font-family="{_MONO if mono else _FONT}" font-size="{size}" '
        f'font-weight="{weight}" fill="{fill}"{squeeze}>{_esc(text)}</text>'
    )


def _sender_text(sender: str | None) -> str:
    if sender == "":
        return "<> (a bounce)"  # the null reverse path (RFC 5321 §4.5.5)
    return sender or "?"


def _box_x(i: int) -> float:
    return _MARGIN + i * (_BOX_W + _GAP)


def _accent(hop: Hop, sender_domain: str | None) -> str:
    if hop.status in (NOT_YET, MISSING):
        return _GREY
    if hop.domain is None:
        return _DNS_ACCENT
    return (_SENDER_COLOURS if hop.domain == sender_domain else _RECIPIENT_COLOURS)[2]


def _svg_bands(hops: list[Hop], sender_domain: str | None) -> list[str]:
    """A rounded band behind each run of hops of one provider, with its name."""
    runs: list[list] = []
    for i, hop in enumerate(hops):
        if hop.domain is None:
            continue
        if runs and runs[-1][2] == hop.domain and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i, hop.domain])
    parts = []
    for first, last, domain in runs:
        fill, stroke, accent = _SENDER_COLOURS if domain == sender_domain else _RECIPIENT_COLOURS
        x = _box_x(first) - 10
        w = _box_x(last) + _BOX_W + 10 - x
        side = "recipient's provider"
        if domain == sender_domain:
            side = "sender's provider" if first == 0 else "the same provider"
        parts.append(
            f'<rect x="{x:.1f}" y="{_TOP}" width="{w:.1f}" height="{_BAND_H}" rx="12" '
            f'fill="{fill}" stroke="{stroke}"/>'
        )
        parts.append(
            _text(
                x + 12,
                _TOP + 17,
                f"{domain} · {side}",
                weight="700",
                fill=accent,
                anchor="start",
                width=w - 24,
            )
        )
    for i, hop in enumerate(hops):
        if hop.key == "dns":  # the lab's DNS serves every provider
            parts.append(
                _text(
                    _box_x(i) + _BOX_W / 2,
                    _TOP + 17,
                    "the lab's DNS",
                    weight="700",
                    fill=_DNS_ACCENT,
                )
            )
    return parts


def _svg_arrow(i: int, before: Hop, after: Hop, gap: pd.Timedelta | None) -> list[str]:
    """The arrow from box ``i`` to box ``i + 1``: the gap above it, what crosses below."""
    x1, x2 = _box_x(i) + _BOX_W + 3, _box_x(i + 1) - 3
    y = _BOX_Y + _BOX_H / 2 + 6
    pending = after.status in (NOT_YET, MISSING)
    colour = _GREY if pending else _SOFT
    dash = ' stroke-dasharray="5 4"' if pending else ""
    parts = [
        f'<line x1="{x1:.1f}" y1="{y:.1f}" x2="{x2:.1f}" y2="{y:.1f}" stroke="{colour}" '
        f'stroke-width="2"{dash} marker-end="url(#mk-arrow{"-grey" if pending else ""})"/>'
    ]
    cx = (x1 + x2) / 2
    # A gap of exactly zero is a hand-over at one transcript line (the end of DATA):
    # the arrow then says only what crossed.
    if gap is not None and gap > pd.Timedelta(0):
        parts.append(
            _text(cx, y - 9, f"+{format_duration(gap)}", size=11.5, weight="700", width=_GAP - 6)
        )
    words = _ARROW_WORDS.get((before.key, after.key))
    if after.key == "recipient":
        words = {"POP3": "RETR", "IMAP": "FETCH"}.get(before.name, "to the MUA")
    if words:
        parts.append(_text(cx, y + 17, words, size=10, fill=_SOFT, width=_GAP - 4))
    return parts


def _svg_box(i: int, hop: Hop, accent: str) -> list[str]:
    """One hop: a white card with a coloured title strip; grey and dashed if pending."""
    x, y = _box_x(i), _BOX_Y
    cx, inner = x + _BOX_W / 2, _BOX_W - 12
    pending = hop.status in (NOT_YET, MISSING)
    ink = _GREY if pending else _INK
    dash = ' stroke-dasharray="6 4"' if hop.status != DONE else ""
    if hop.status == DONE and hop.spent is not None and hop.key != "recipient":
        big, small = format_duration(hop.spent), f"at {_clock(hop.start)}"
    elif hop.status == DONE and hop.start is not None:
        big, small = ("has it" if hop.key == "recipient" else "done"), f"at {_clock(hop.start)}"
    elif hop.status == CACHED:
        big, small = "cached", "answer remembered"
    elif hop.status == MISSING:
        big, small = "not shown", "not in the transcript"
    else:
        big, small = "not yet", ""
    parts = [
        f'<g class="mk-hop mk-hop-{_esc(hop.key)}">',
        f"<title>{_esc(hop.name)}: {_esc(hop.detail)}</title>",
        f'<rect x="{x}" y="{y}" width="{_BOX_W}" height="{_BOX_H}" rx="9" '
        f'fill="{"#f6f8fa" if pending else "#ffffff"}"/>',
        f'<path d="M{x},{y + 26} V{y + 9} a9,9 0 0 1 9,-9 H{x + _BOX_W - 9} '
        f'a9,9 0 0 1 9,9 V{y + 26} z" fill="{accent}"/>',
        f'<rect x="{x}" y="{y}" width="{_BOX_W}" height="{_BOX_H}" rx="9" fill="none" '
        f'stroke="{accent}" stroke-width="1.5"{dash}/>',
        _text(cx, y + 18, hop.name, size=13, weight="700", fill="#ffffff", width=inner),
        _text(cx, y + 43, hop.what, fill=ink, width=inner),
        _text(cx, y + 60, _fit(hop.host, 30), size=10.5, fill=ink, mono=True, width=inner),
        _text(cx, y + 86, big, size=15, weight="700", fill=accent, width=inner),
    ]
    if small:
        parts.append(
            _text(cx, y + 103, small, size=10, fill=_GREY, mono=small[:3] == "at ", width=inner)
        )
    if hop.sessions:
        label = "session" if len(hop.sessions) == 1 else "sessions"
        sessions = _fit(", ".join(map(str, hop.sessions)), 18)
        parts.append(_text(cx, y + 117, f"{label} {sessions}", size=9.5, fill=_GREY, width=inner))
    parts.append("</g>")
    return parts


def to_svg(journey: MessageJourney) -> str:
    """The journey as a standalone SVG picture (a string; no external assets).

    Boxes left to right, one per hop, on coloured bands for the sender's and the
    recipient's provider; in each box the hop's name, what it is in plain words, its
    host, the time spent there and the clock time (UTC); on each arrow the time between
    two hops and what crossed. Hops that have not happened are grey and dashed ("not
    yet"). Hovering a box shows its detail (an SVG ``<title>``). Below: the message's
    ``Received:`` headers read bottom to top, and the journey in a sentence or two.
    """
    hops = journey.hops
    n = len(hops)
    width = 2 * _MARGIN + n * _BOX_W + (n - 1) * _GAP
    footer_y = _TOP + _BAND_H + 26
    height = footer_y + 48
    full = width - 2 * _MARGIN
    sender_domain = hops[0].domain if hops else None
    title = f"The journey of “{_fit(journey.subject or '(no subject)', 70)}”"
    desc = " ".join(
        f"{h.name} ({h.host}): {h.status}"
        + (f", {format_duration(h.spent)}" if h.spent is not None else "")
        + "."
        for h in hops
    )
    arrowhead = (
        '<marker id="mk-arrow{}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{}"/></marker>'
    )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" style="max-width:100%;height:auto">',
        f"<title>{_esc(title)}</title><desc>{_esc(desc)}</desc>",
        "<defs>" + arrowhead.format("", _SOFT) + arrowhead.format("-grey", _GREY) + "</defs>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        _text(_MARGIN, 26, title, size=16, weight="700", anchor="start", width=full - 330),
        _text(
            width - _MARGIN,
            26,
            f"{_sender_text(journey.sender)} → {journey.recipient or '?'}",
            size=13,
            weight="600",
            fill=_SOFT,
            anchor="end",
            mono=True,
            width=320,
        ),
    ]
    if journey.message_id:
        parts.append(
            _text(
                _MARGIN,
                46,
                f"Message-ID <{_fit(journey.message_id, 90)}>",
                fill=_SOFT,
                anchor="start",
                mono=True,
            )
        )
    parts += _svg_bands(hops, sender_domain)
    for i, gap in enumerate(journey.gaps()):
        parts += _svg_arrow(i, hops[i], hops[i + 1], gap)
    for i, hop in enumerate(hops):
        parts += _svg_box(i, hop, _accent(hop, sender_domain))

    trace = "   ".join(
        f"{k}. by {r.by_host} ({r.with_protocol}, id {r.queue_id}) from {r.from_host}"
        for k, r in enumerate(journey.received, 1)
    )
    if trace:
        trace = f"Received: headers, read bottom to top:  {trace}"
    else:
        trace = "No Received: headers to read (the message has not reached a mailbox)."
    parts.append(_text(_MARGIN, footer_y, trace, anchor="start", width=full))
    parts.append(
        _text(
            _MARGIN,
            footer_y + 19,
            " ".join(journey.summary()),
            weight="600",
            anchor="start",
            width=full,
        )
    )
    parts.append(
        _text(
            _MARGIN,
            footer_y + 37,
            "In a box: the time spent at that hop. On an arrow: the time between two hops. "
            "Grey and dashed: not yet. Times in UTC, from lab.transcript(); hover over a box "
            "to read what happened there.",
            size=10,
            fill=_SOFT,
            anchor="start",
            width=full,
        )
    )
    parts.append("</svg>")
    return "".join(parts)
