"""The relay: the MSA's queue, MX lookup, delivery with retries, and bounces.

Role
    When the MSA has a message, it calls :meth:`Relay.enqueue`, which writes the
    message to the queue on disk (fsynced: a crash or a restart loses nothing)
    before the MSA answers 250. Then, for each recipient domain, the relay:

    1. asks the lab DNS for the domain's MX records and tries them in order of
       preference (RFC 5321 §5.1); a domain with no MX but an A record is its own
       mail server (the "implicit MX"); a null MX (``0 .``, RFC 7505) accepts no mail;
    2. asks the lab DNS for the chosen host's A record, and connects only if it is
       a loopback address (127.0.0.0/8): the lab never connects outside;
    3. speaks SMTP to that MX (:class:`SMTPClient`): EHLO, MAIL FROM, RCPT TO,
       DATA, QUIT. The MX's transcript shows every line of it.

    A 4xx reply or an MX that does not answer means "try again later": the
    message waits (``retry_schedule``, seconds at lab scale; RFC 5321 §4.5.4.1
    suggests 30 minutes) and is tried again. A 5xx reply, an unknown domain or a
    message older than ``queue_lifetime`` fails for good, and the sender gets a
    Delivery Status Notification (RFC 3464) from ``MAILER-DAEMON``, sent with the
    null reverse path ``MAIL FROM:<>`` so that a bounce never bounces.

    *The one place the lab differs from the Internet:* real MX hosts all listen on
    port 25. Lab servers share 127.0.0.1 and each has its own port, so after the
    DNS lookups the relay reads the port from the lab's port table
    (``port_for(host)``).

This module must not import ipywidgets or the lab; it knows the DNS resolver
helpers and plain asyncio streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.resolver
import pandas as pd

from .dnsserver import NoSuchDomain, resolve_mx
from .store import fsync_directory

__all__ = [
    "QUEUE_LIFETIME",
    "RETRY_SCHEDULE",
    "Delivery",
    "Queue",
    "QueuedMessage",
    "Relay",
    "SMTPClient",
    "build_dsn",
    "new_queue_id",
]

log = logging.getLogger(__name__)

#: Seconds to wait before each retry; the last one repeats. Lab scale, so a
#: learner can watch a retry happen (a real MTA waits 30 minutes or more).
RETRY_SCHEDULE: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
#: Seconds a message may stay in the queue before it bounces (RFC 5321
#: §4.5.4.1: "at least 4-5 days" on the Internet; 5 minutes in the lab).
QUEUE_LIFETIME = 300.0
#: Seconds to wait for a connection or a reply from an MX. RFC 5321 §4.5.3.2
#: allows minutes; the lab's servers are one hop away.
SMTP_TIMEOUT = 30.0
#: Seconds the relay keeps a DNS answer. Real resolvers keep it for its TTL;
#: the lab keeps it briefly, so a change to the zone shows at once in a lesson.
DNS_CACHE_SECONDS = 1.0
#: Seconds an idle connection to an MX is kept for the next message. Postfix's
#: connection cache does the same (smtp_connection_cache_time_limit = 2s).
CONNECTION_REUSE_SECONDS = 2.0
#: A returned message larger than this is quoted by its headers only (RFC 6522).
DSN_MAX_RETURNED = 256 * 1024


@dataclass
class Failure:
    """One recipient the relay gave up on."""

    recipient: str
    status: str  # RFC 3463, e.g. "5.1.1"
    diagnostic: str  # what went wrong, e.g. "smtp; 550 5.1.1 <x>: no such user here"
    remote_mta: str | None = None


@dataclass
class QueuedMessage:
    """The envelope and bookkeeping of one message in the queue."""

    id: str
    mail_from: str
    recipients: list[str]  # still to deliver
    reporting_mta: str
    created: float = field(default_factory=time.time)
    attempts: int = 0
    next_attempt: float = 0.0
    last_error: str = ""
    delivered: list[str] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict) -> QueuedMessage:
        data = dict(data)
        data["failed"] = [Failure(**f) for f in data.get("failed", [])]
        return cls(**data)


class Queue:
    """The queue on disk: ``<id>.msg`` holds a JSON envelope line, then the message.

    ``put`` fsyncs the file and the directory before it returns: that is what
    lets the MSA say 250. Retry bookkeeping goes to ``<id>.state`` (replaced
    atomically; losing it costs at most a repeated attempt, never a message).
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def put(self, entry: QueuedMessage, message: bytes) -> None:
        header = json.dumps(asdict(entry), separators=(",", ":")).encode() + b"\n"
        final = self.directory / f"{entry.id}.msg"
        tmp = self.directory / f".{entry.id}.msg.tmp"
        with open(tmp, "wb", opener=_private) as f:
            f.write(header)
            f.write(message)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        fsync_directory(self.directory)

    def save_state(self, entry: QueuedMessage) -> None:
        tmp = self.directory / f".{entry.id}.state.tmp"
        with open(tmp, "w", opener=_private) as f:
            json.dump(asdict(entry), f)
        os.replace(tmp, self.directory / f"{entry.id}.state")

    def read(self, queue_id: str) -> bytes:
        with open(self.directory / f"{queue_id}.msg", "rb") as f:
            f.readline()
            return f.read()

    def remove(self, queue_id: str) -> None:
        for suffix in (".msg", ".state"):
            with contextlib.suppress(FileNotFoundError):
                (self.directory / f"{queue_id}{suffix}").unlink()

    def load(self) -> list[QueuedMessage]:
        """Every message still queued (after a restart), oldest first."""
        entries = []
        for path in sorted(self.directory.glob("*.msg")):
            try:
                state = path.with_suffix(".state")
                if state.exists():
                    data = json.loads(state.read_text())
                else:
                    with open(path, "rb") as f:
                        data = json.loads(f.readline())
                entries.append(QueuedMessage.from_json(data))
            except (OSError, ValueError, TypeError) as error:
                log.error("skipping unreadable queue file %s: %s", path, error)
        return sorted(entries, key=lambda e: e.created)


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


# -- a small SMTP client ---------------------------------------------------------


class SMTPError(Exception):
    """A reply the relay could not go on from (carries the reply)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text


@dataclass
class Delivery:
    """What one SMTP transaction did for each recipient: ``{rcpt: (code, text)}``."""

    host: str
    replies: dict[str, tuple[int, str]]


class SMTPClient:
    """Just enough SMTP (RFC 5321) to hand a message to an MX, over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.extensions: dict[str, str] = {}
        self.idle_token = 0  # see Relay._keep

    @classmethod
    async def connect(cls, host: str, port: int, timeout: float = SMTP_TIMEOUT) -> SMTPClient:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        return cls(reader, writer)

    async def reply(self, timeout: float = SMTP_TIMEOUT) -> tuple[int, str]:
        """Read one reply, joining the lines of a multi-line reply (RFC 5321 §4.2.1)."""
        texts = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
            if not line:
                raise ConnectionError("the server closed the connection")
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if len(text) < 3 or not text[:3].isdigit():
                raise SMTPError(500, f"unparseable reply {text[:80]!r}")
            texts.append(text[4:])
            if text[3:4] != "-":
                return int(text[:3]), "\n".join(texts)

    async def command(self, line: str) -> tuple[int, str]:
        self.writer.write(line.encode("utf-8") + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def hello(self, name: str) -> None:
        code, text = await self.command(f"EHLO {name}")
        if code == 250:
            for ext in text.split("\n")[1:]:
                keyword, _, value = ext.partition(" ")
                self.extensions[keyword.upper()] = value
            return
        code, text = await self.command(f"HELO {name}")
        if code != 250:
            raise SMTPError(code, text)

    async def send(self, mail_from: str, recipients: Iterable[str], message: bytes) -> dict:
        """One mail transaction (RFC 5321 §3.3): MAIL, a RCPT per recipient, DATA, the
        message. Returns ``{rcpt: (code, text)}``.

        When the server offers PIPELINING (RFC 2920), MAIL, the RCPTs and DATA go in
        one write and their replies are read afterwards, as Postfix does; the
        server's transcript then shows the commands together, then the replies.
        """
        params = ""
        if "SIZE" in self.extensions:
            params += f" SIZE={len(message)}"
        if "8BITMIME" in self.extensions and not message.isascii():
            params += " BODY=8BITMIME"
        recipients = list(recipients)
        if "SMTPUTF8" in self.extensions and not all(a.isascii() for a in [mail_from, *recipients]):
            params += " SMTPUTF8"
        mail = f"MAIL FROM:<{mail_from}>{params}"
        rcpts = [f"RCPT TO:<{rcpt}>" for rcpt in recipients]
        data: tuple[int, str] | None
        if "PIPELINING" in self.extensions:
            lines = [mail, *rcpts, "DATA"]
            self.writer.write("".join(f"{line}\r\n" for line in lines).encode("utf-8"))
            await self.writer.drain()
            answers = [await self.reply() for _ in lines]
            sender, rcpt_replies, data = answers[0], answers[1:-1], answers[-1]
        else:
            sender = await self.command(mail)
            if sender[0] != 250:
                return {rcpt: sender for rcpt in recipients}
            rcpt_replies = [await self.command(line) for line in rcpts]
            accepted_any = any(code in (250, 251) for code, _ in rcpt_replies)
            data = await self.command("DATA") if accepted_any else None
        if sender[0] != 250:
            return {rcpt: sender for rcpt in recipients}
        replies = dict(zip(recipients, rcpt_replies, strict=True))
        accepted = [r for r, (c, _) in replies.items() if c in (250, 251)]
        if data is not None and data[0] == 354 and not accepted:
            self.writer.write(b".\r\n")  # RFC 2920 §3.1: end the data, send no message
            await self.reply()
        elif data is not None and data[0] == 354:
            self.writer.write(dot_stuff(message) + b".\r\n")
            await self.writer.drain()
            final = await self.reply()
            return {**replies, **{r: final for r in accepted}}
        await self.command("RSET")  # leave no half transaction on a reusable connection
        failed = data if data is not None else (503, "no recipient was accepted")
        return {**replies, **{r: failed for r in accepted}}

    async def quit(self) -> None:
        """Say QUIT (RFC 5321 §4.1.1.10) and close."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.command("QUIT"), 5)
        self.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()

    def close(self) -> None:
        """Drop the connection without a word (after an error)."""
        self.writer.close()


def dot_stuff(message: bytes) -> bytes:
    """CRLF line ends, and a dot doubled at the start of any line (RFC 5321 §4.5.2)."""
    message = re.sub(rb"(?<!\r)\n", b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    if message.startswith(b"."):
        message = b"." + message
    return message.replace(b"\r\n.", b"\r\n..")


# -- bounces -------------------------------------------------------------------------


def build_dsn(
    *,
    reporting_mta: str,
    recipient: str,
    failures: list[Failure],
    original: bytes,
    arrival: float,
    queue_id: str,
) -> bytes:
    """A Delivery Status Notification (RFC 3464) in a multipart/report (RFC 6522)."""
    boundary = f"=_dsn_{queue_id}"
    now = format_datetime(datetime.now(UTC))
    human = [
        f"This is the mail system at {reporting_mta}.",
        "",
        "Your message could not be delivered to one or more recipients.",
        "The reasons are below; the returned message is attached.",
        "",
    ]
    human += [f"<{f.recipient}>: {f.diagnostic}" for f in failures]
    status = [
        f"Reporting-MTA: dns; {reporting_mta}",
        f"X-Queue-ID: {queue_id}",
        f"Arrival-Date: {format_datetime(datetime.fromtimestamp(arrival, UTC))}",
        "",
    ]
    for f in failures:
        status += [
            f"Final-Recipient: rfc822; {f.recipient}",
            "Action: failed",
            f"Status: {f.status}",
        ]
        if f.remote_mta:
            status.append(f"Remote-MTA: dns; {f.remote_mta}")
        status += [f"Diagnostic-Code: {f.diagnostic}", f"Last-Attempt-Date: {now}", ""]
    if len(original) <= DSN_MAX_RETURNED:
        returned_type, returned = "message/rfc822", original
    else:
        end = original.find(b"\r\n\r\n")
        returned_type, returned = "text/rfc822-headers", original[: end + 2 if end >= 0 else 0]
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{recipient}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {now}",
        f"Message-ID: {make_msgid(domain=reporting_mta)}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "",
        *human,
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        *status,
        f"--{boundary}",
        f"Content-Type: {returned_type}",
        "",
        "",
    ]
    body = "\r\n".join(head).encode("utf-8") + returned
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + f"\r\n--{boundary}--\r\n".encode()


# -- the relay ----------------------------------------------------------------------------


class _Temporary(Exception):
    def __init__(self, status: str, diagnostic: str) -> None:
        super().__init__(diagnostic)
        self.status, self.diagnostic = status, diagnostic


class _Permanent(_Temporary):
    pass


class Relay:
    """Moves queued messages to the recipients' MX servers, retrying and bouncing."""

    def __init__(
        self,
        queue: Queue,
        *,
        resolver: Callable[[], dns.asyncresolver.Resolver],
        port_for: Callable[[str], int | None],
        retry_schedule: Iterable[float] = RETRY_SCHEDULE,
        queue_lifetime: float = QUEUE_LIFETIME,
    ) -> None:
        self.queue = queue
        self.resolver = resolver
        self.port_for = port_for
        self.retry_schedule = tuple(retry_schedule) or RETRY_SCHEDULE
        self.queue_lifetime = queue_lifetime
        self.entries: dict[str, QueuedMessage] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._dns_cache: dict[tuple[str, str], tuple[float, Any]] = {}
        self._idle: dict[tuple[str, int, str], list[SMTPClient]] = {}  # (MX, port, EHLO name)
        self._closing: set[asyncio.Task] = set()
        self._wake: asyncio.Event | None = None

    # -- the MSA's side ---------------------------------------------------------

    async def enqueue(
        self,
        queue_id: str,
        mail_from: str,
        recipients: list[str],
        message: bytes,
        reporting_mta: str,
    ) -> None:
        """Put a message on disk (fsynced), then start delivering it."""
        entry = QueuedMessage(queue_id, mail_from, list(recipients), reporting_mta)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.queue.put, entry, message)
        self._schedule(entry, message)

    def start(self) -> None:
        """Pick up what an earlier run left in the queue. Call on the lab's loop."""
        self._wake = asyncio.Event()
        for entry in self.queue.load():
            self._schedule(entry)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        idle = [client for clients in self._idle.values() for client in clients]
        self._idle.clear()
        await asyncio.gather(
            *(client.quit() for client in idle), *self._closing, return_exceptions=True
        )

    def flush(self) -> None:
        """Try every waiting message now (like Postfix's ``postqueue -f``)."""
        if self._wake is not None:
            self._wake.set()

    def frame(self) -> pd.DataFrame:
        rows = [
            {
                "id": e.id,
                "from": e.mail_from,
                "to": ", ".join(e.recipients),
                "attempts": e.attempts,
                "next_attempt": pd.Timestamp(e.next_attempt, unit="s", tz="UTC")
                if e.next_attempt
                else pd.NaT,
                "last_error": e.last_error,
                "created": pd.Timestamp(e.created, unit="s", tz="UTC"),
            }
            for e in list(self.entries.values())
        ]
        columns = ["id", "from", "to", "attempts", "next_attempt", "last_error", "created"]
        return pd.DataFrame(rows, columns=columns)

    # -- delivery -------------------------------------------------------------------

    def _schedule(self, entry: QueuedMessage, message: bytes | None = None) -> None:
        self.entries[entry.id] = entry
        task = asyncio.get_running_loop().create_task(
            self._run(entry, message), name=f"relay-{entry.id}"
        )
        self._tasks[entry.id] = task
        task.add_done_callback(lambda _t, i=entry.id: self._tasks.pop(i, None))

    async def _run(self, entry: QueuedMessage, message: bytes | None) -> None:
        loop = asyncio.get_running_loop()
        try:
            if message is None:  # picked up from the queue after a restart
                message = await loop.run_in_executor(None, self.queue.read, entry.id)
            while entry.recipients:
                await self._wait_until(entry.next_attempt)
                await self._attempt(entry, message)
                if not entry.recipients:
                    break
                if time.time() - entry.created >= self.queue_lifetime:
                    for rcpt in entry.recipients:
                        entry.failed.append(
                            Failure(rcpt, "4.4.7", f"x-lab; message expired: {entry.last_error}")
                        )
                    entry.recipients = []
                    break
                delay = self.retry_schedule[min(entry.attempts, len(self.retry_schedule)) - 1]
                entry.next_attempt = time.time() + delay
                await loop.run_in_executor(None, self.queue.save_state, entry)
            if entry.failed and entry.mail_from:
                await self._bounce(entry, message)
            await loop.run_in_executor(None, self.queue.remove, entry.id)
            self.entries.pop(entry.id, None)
        except asyncio.CancelledError:
            raise  # the lab is stopping: the message stays in the queue
        except Exception:
            log.exception("relay of %s failed unexpectedly; it stays queued", entry.id)

    async def _wait_until(self, when: float) -> None:
        assert self._wake is not None
        while (delay := when - time.time()) > 0:
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
                return  # flushed

    async def _attempt(self, entry: QueuedMessage, message: bytes) -> None:
        entry.attempts += 1
        by_domain: dict[str, list[str]] = {}
        for rcpt in entry.recipients:
            by_domain.setdefault(rcpt.rpartition("@")[2].lower(), []).append(rcpt)
        still: list[str] = []
        errors: list[str] = []
        for domain, rcpts in by_domain.items():
            try:
                replies = await self._deliver_domain(domain, entry, rcpts, message)
            except _Permanent as error:
                entry.failed += [Failure(r, error.status, error.diagnostic) for r in rcpts]
                continue
            except _Temporary as error:
                still += rcpts
                errors.append(error.diagnostic)
                continue
            except Exception:
                # A bug of ours must not leave mail stuck unseen: bounce it, with
                # the traceback in the log rather than in the DSN.
                log.exception("relay error for %s (queue id %s)", domain, entry.id)
                entry.failed += [
                    Failure(r, "5.3.0", "x-lab; internal relay error (see the lab's log)")
                    for r in rcpts
                ]
                continue
            for rcpt, (code, text) in replies.replies.items():
                if 200 <= code < 300:
                    entry.delivered.append(rcpt)
                elif 500 <= code < 600:
                    status = _enhanced(text) or "5.0.0"
                    entry.failed.append(Failure(rcpt, status, f"smtp; {code} {text}", replies.host))
                else:
                    still.append(rcpt)
                    errors.append(f"{replies.host} said {code} {text}")
        entry.recipients = still
        entry.last_error = "; ".join(errors)

    async def _deliver_domain(
        self, domain: str, entry: QueuedMessage, rcpts: list[str], message: bytes
    ) -> Delivery:
        mail_from, helo = entry.mail_from, entry.reporting_mta
        hosts = await self._mail_hosts(domain)
        problems = []
        refused: _Permanent | None = None  # a host the lab will never connect to
        for host in hosts:
            try:
                address, port = await self._address(host)
            except _Permanent as error:
                refused = error
                continue
            except _Temporary as error:
                problems.append(error.diagnostic)
                continue
            # One cache per MX *and* per name we greeted it with: each MSA relays as
            # itself, so a message from msa.south.test never rides a connection
            # that said EHLO msa.north.test (its Received: line would lie).
            key = (address, port, helo)
            client = self._take_idle(key)
            if client is not None:  # the connection cache: no connect, greeting or EHLO
                try:
                    replies = await client.send(mail_from, rcpts, message)
                except (TimeoutError, OSError, ConnectionError, SMTPError):
                    client.close()  # the MX hung up meanwhile: connect afresh below
                else:
                    self._keep(key, client)
                    return Delivery(host, replies)
            try:
                client = await SMTPClient.connect(address, port)
            except (TimeoutError, OSError) as error:
                problems.append(f"{host}: connection failed ({error.__class__.__name__})")
                continue
            try:
                code, text = await client.reply()
                if code != 220:
                    problems.append(f"{host} greeted with {code} {text}")
                    await client.quit()
                    continue
                await client.hello(helo)
                replies = await client.send(mail_from, rcpts, message)
            except (TimeoutError, OSError, ConnectionError, SMTPError) as error:
                problems.append(f"{host}: {error}")
                client.close()
                continue
            self._keep(key, client)
            return Delivery(host, replies)
        if refused is not None and not problems:
            raise refused
        raise _Temporary("4.4.1", "; ".join(problems) or f"no mail server for {domain}")

    def _take_idle(self, key: tuple[str, int, str]) -> SMTPClient | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        client = idle.pop()
        client.idle_token += 1  # cancels its pending expiry
        return client

    def _keep(self, key: tuple[str, int, str], client: SMTPClient) -> None:
        """Keep a connection for the next message to the same MX, for a short while."""
        client.idle_token += 1
        self._idle.setdefault(key, []).append(client)
        asyncio.get_running_loop().call_later(
            CONNECTION_REUSE_SECONDS, self._expire, key, client, client.idle_token
        )

    def _expire(self, key: tuple[str, int, str], client: SMTPClient, token: int) -> None:
        idle = self._idle.get(key, [])
        if client.idle_token == token and client in idle:
            idle.remove(client)
            task = asyncio.get_running_loop().create_task(client.quit())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _cached(self, key: tuple[str, str], lookup: Callable[[], Awaitable[Any]]) -> Any:
        """Answer from the cache if it is fresh, else ask the lab DNS (and remember).

        Like any resolver, the relay keeps answers, but only for
        ``DNS_CACHE_SECONDS`` (the records say 300 s): a lesson that changes the
        zone sees the change within a second, and a burst of mail asks DNS once.
        """
        now = time.monotonic()
        hit = self._dns_cache.get(key)
        if hit is not None and hit[0] > now:
            if isinstance(hit[1], BaseException):
                raise hit[1].with_traceback(None)
            return hit[1]
        try:
            value = await lookup()
        except (NoSuchDomain, dns.resolver.NXDOMAIN, dns.resolver.NoAnswer) as error:
            self._dns_cache[key] = (now + DNS_CACHE_SECONDS, error)  # negative caching
            raise
        self._dns_cache[key] = (now + DNS_CACHE_SECONDS, value)
        return value

    async def _mail_hosts(self, domain: str) -> list[str]:
        """The hosts to try for ``domain``, best first (RFC 5321 §5.1)."""
        try:
            mx = await self._cached((domain, "MX"), lambda: resolve_mx(self.resolver(), domain))
        except NoSuchDomain:
            raise _Permanent(
                "5.1.2", f"x-lab; {domain} does not exist in the lab DNS (NXDOMAIN)"
            ) from None
        except dns.exception.DNSException as error:
            raise _Temporary("4.4.3", f"x-lab; DNS lookup of {domain} MX failed: {error}") from None
        if not mx:
            return [domain]  # no MX: the domain itself is the mail server (implicit MX)
        if len(mx) == 1 and mx[0][1] in ("", "."):
            raise _Permanent("5.1.10", f"x-lab; {domain} publishes a null MX: it accepts no mail")
        return [host for _, host in mx]

    async def _address(self, host: str) -> tuple[str, int]:
        async def lookup() -> list[str]:
            answer = await self.resolver().resolve(host, "A")
            return [r.address for r in answer]

        try:
            addresses = await self._cached((host, "A"), lookup)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            raise _Temporary("4.4.4", f"{host}: no A record in the lab DNS") from None
        except dns.exception.DNSException as error:
            raise _Temporary("4.4.3", f"{host}: DNS lookup failed: {error}") from None
        loopback = [a for a in addresses if ipaddress.ip_address(a).is_loopback]
        if not loopback:
            raise _Permanent(
                "5.4.4",
                f"x-lab; {host} resolves to {', '.join(addresses)}, outside the lab: "
                "the lab never connects outside this machine",
            )
        port = self.port_for(host)
        if port is None:
            raise _Temporary("4.4.1", f"{host}: no SMTP server listens for this host in the lab")
        return loopback[0], port

    async def _bounce(self, entry: QueuedMessage, message: bytes) -> None:
        dsn_id = new_queue_id()
        dsn = build_dsn(
            reporting_mta=entry.reporting_mta,
            recipient=entry.mail_from,
            failures=entry.failed,
            original=message,
            arrival=entry.created,
            queue_id=entry.id,
        )
        await self.enqueue(dsn_id, "", [entry.mail_from], dsn, entry.reporting_mta)


def new_queue_id() -> str:
    """A short, unique, readable id, like Postfix's queue ids (40 random bits)."""
    return f"{random.getrandbits(40):010X}"


def _enhanced(text: str) -> str | None:
    match = re.match(r"([245]\.\d{1,3}\.\d{1,3})\b", text)
    return match.group(1) if match else None
