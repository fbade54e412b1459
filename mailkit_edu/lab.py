"""The lab: every server of a small mail world, on one background loop.

Role
    ``start_lab()`` builds and starts a :class:`Lab`: a DNS server for the lab
    zone and, for each mail domain (``north.test``, ``south.test``, …), an MSA,
    an MX, a POP3 server and an IMAP server, a mail store, a relay
    queue and one transcript of every protocol line.

    All servers run on **one private asyncio loop in one background thread**,
    never on the notebook kernel's loop: a blocking client in a cell (smtplib,
    a raw socket) would otherwise wait forever for a server that cannot run.
    Everything binds 127.0.0.1 on a port the operating system picks (port 0),
    and ``lab.servers`` tells which.

    The lab's public methods are called from the notebook's thread. They hand
    work to the loop with ``run_coroutine_threadsafe`` and wait for the answer,
    so errors arrive in the caller's thread as ordinary exceptions.

This module assembles the servers; it must not import ipywidgets.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import logging
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from .config import Account, Domain, parse_domains
from .dnsserver import DNSServer, Zone, lab_async_resolver
from .imapserver import AUTOLOGOUT as IMAP_AUTOLOGOUT
from .imapserver import IMAPServer, IMAPSettings
from .pop3server import AUTOLOGOUT, POP3Server, POP3Settings
from .relay import QUEUE_LIFETIME, RETRY_SCHEDULE, Queue, Relay
from .smtp import (
    AUTH_FAILURE_DELAY,
    DEFAULT_MAX_MESSAGE_SIZE,
    IDLE_TIMEOUT,
    InboundHandler,
    SMTPServer,
    SMTPSettings,
    SubmissionHandler,
)
from .store import Store
from .tls import LabCA
from .transcript import Transcript

__all__ = ["Lab", "LabError", "start_lab"]

#: Seconds ``start_lab`` waits for every server to be listening.
STARTUP_TIMEOUT = 15.0
#: Seconds ``stop`` waits for servers and connections to close.
SHUTDOWN_TIMEOUT = 10.0
#: Seconds one server may take to close its listener and connections.
SERVER_STOP_TIMEOUT = 5.0
LOOPBACK = "127.0.0.1"
#: The servers each mail domain runs, by host name: <role>.<domain>.
MAIL_HOSTS = ("msa", "mx", "pop3", "imap")
#: Threads that write mail to disk (queue and Maildir), so the loop never waits on fsync.
IO_THREADS = 2

_lab_numbers = itertools.count(1)
log = logging.getLogger(__name__)


class LabError(RuntimeError):
    """The lab could not do what was asked (start, find a server, …); the message says why."""


class Lab:
    """A running mail lab. Make one with :func:`start_lab`."""

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        domains: Mapping[str, Mapping[str, str] | Iterable[str]] | None = None,
        require_tls: bool = False,
        mask_secrets: bool = False,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        retry_schedule: Iterable[float] = RETRY_SCHEDULE,
        queue_lifetime: float = QUEUE_LIFETIME,
        auth_failure_delay: float = AUTH_FAILURE_DELAY,
        idle_timeout: float = IDLE_TIMEOUT,
        pop3_autologout: float = AUTOLOGOUT,
        imap_autologout: float = IMAP_AUTOLOGOUT,
    ) -> None:
        self.number = next(_lab_numbers)
        self.domains: list[Domain] = parse_domains(domains)
        self._temporary = path is None
        if path is None:
            path = tempfile.mkdtemp(prefix="mailkit-lab-")
        self.path = Path(path).expanduser().resolve()
        self.settings = SMTPSettings(
            require_tls=require_tls,
            mask_secrets=mask_secrets,
            max_message_size=max_message_size,
            auth_failure_delay=auth_failure_delay,
            idle_timeout=idle_timeout,
        )
        self.pop3_settings = POP3Settings(
            require_tls=require_tls,
            mask_secrets=mask_secrets,
            auth_failure_delay=auth_failure_delay,
            autologout=pop3_autologout,
        )
        self.imap_settings = IMAPSettings(
            require_tls=require_tls,
            mask_secrets=mask_secrets,
            auth_failure_delay=auth_failure_delay,
            autologout=imap_autologout,
        )
        self.transcript_log = Transcript()
        self.zone = Zone([d.name for d in self.domains])
        self._servers: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._state_lock = threading.Lock()
        self._stopped = False
        self._at_exit = _stopper(weakref.ref(self))
        self._relay_settings = (tuple(retry_schedule), queue_lifetime)

    # -- starting and stopping ---------------------------------------------------

    def start(self) -> Lab:
        """Create the store, the zone and the servers, and start them. Returns ``self``.

        Any failure stops what was started and raises :class:`LabError` here, in
        the caller's thread, saying what went wrong.
        """
        if self._thread is not None or self._stopped:
            raise LabError("a lab starts once; make a new one with mailkit_edu.start_lab()")
        try:
            self._prepare()
            self._loop = asyncio.new_event_loop()
            # Disk work (fsync) runs beside the loop, in a small pool of its own: two
            # threads keep the disk busy; more only fight over it (measured).
            self._loop.set_default_executor(
                ThreadPoolExecutor(IO_THREADS, thread_name_prefix=f"mailkit-lab-{self.number}-io")
            )
            self._thread = threading.Thread(
                target=self._run_loop, name=f"mailkit-lab-{self.number}", daemon=True
            )
            self._thread.start()
            atexit.register(self._at_exit)
            self._call(self._start_servers(), timeout=STARTUP_TIMEOUT)
        except Exception as error:
            self.stop()
            if isinstance(error, LabError):
                raise
            raise LabError(f"the lab could not start: {error}") from error
        return self

    def _prepare(self) -> None:
        """The lab's folders, store, queue, DNS zone and CA (in the caller's thread)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.store = Store(self.path / "mail")
            for domain in self.domains:
                for account in domain.accounts:
                    self.store.add_account(account.address)
            self.queue_store = Queue(self.path / "queue")
        except OSError as error:
            raise LabError(f"cannot keep the lab's mail in {self.path}: {error}") from error
        self._build_zone()
        self.ca = LabCA(self.path / "tls")

    def _run_loop(self) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def _build_zone(self) -> None:
        zone = self.zone
        for domain in self.domains:
            name = domain.name
            zone.add(name, "MX", f"10 mx.{name}.")
            zone.add(name, "A", LOOPBACK)  # lets the implicit-MX fallback (RFC 5321 §5.1) work
            zone.add(name, "TXT", '"v=spf1 ip4:127.0.0.1 -all"')
            for role in MAIL_HOSTS:
                zone.add(f"{role}.{name}", "A", LOOPBACK)

    async def _start_servers(self) -> None:
        dns = DNSServer(self.zone, self.transcript_log, name="dns", host=LOOPBACK)
        self._servers["dns"] = dns
        await dns.start()
        retry_schedule, queue_lifetime = self._relay_settings
        self.relay = Relay(
            self.queue_store,
            resolver=lambda: lab_async_resolver(dns.host, dns.port),
            port_for=self._smtp_port_for,
            retry_schedule=retry_schedule,
            queue_lifetime=queue_lifetime,
        )
        loop = asyncio.get_running_loop()
        for domain in self.domains:
            msa_name, mx_name = f"msa.{domain.name}", f"mx.{domain.name}"
            addresses = frozenset(a.address for a in domain.accounts)

            async def enqueue(queue_id, mail_from, rcpts, message, _msa=msa_name):
                await self.relay.enqueue(queue_id, mail_from, rcpts, message, _msa)

            async def deliver(address: str, message: bytes) -> None:
                await loop.run_in_executor(None, self.store.deliver, address, message)

            self._servers[msa_name] = SMTPServer(
                name=msa_name,
                domain=domain.name,
                role="msa",
                # A provider's MSA knows its own users only (like its POP3 and IMAP).
                handler=SubmissionHandler(
                    msa_name, {a.address: a.password for a in domain.accounts}, enqueue
                ),
                transcript=self.transcript_log,
                settings=self.settings,
                tls_context=self.ca.server_context(msa_name),
                host=LOOPBACK,
            )
            self._servers[mx_name] = SMTPServer(
                name=mx_name,
                domain=domain.name,
                role="mx",
                handler=InboundHandler(mx_name, domain.name, lambda a=addresses: a, deliver),
                transcript=self.transcript_log,
                settings=self.settings,
                tls_context=self.ca.server_context(mx_name),
                host=LOOPBACK,
            )
            pop3_name = f"pop3.{domain.name}"
            self._servers[pop3_name] = POP3Server(
                name=pop3_name,
                domain=domain.name,
                store=self.store,
                passwords={a.address: a.password for a in domain.accounts},
                transcript=self.transcript_log,
                settings=self.pop3_settings,
                tls_context=self.ca.server_context(pop3_name),
                host=LOOPBACK,
            )
            imap_name = f"imap.{domain.name}"
            self._servers[imap_name] = IMAPServer(
                name=imap_name,
                domain=domain.name,
                store=self.store,
                passwords={a.address: a.password for a in domain.accounts},
                transcript=self.transcript_log,
                settings=self.imap_settings,
                tls_context=self.ca.server_context(imap_name),
                host=LOOPBACK,
            )
        for server in self._servers.values():
            if server is not dns:
                await server.start()
        self.relay.start()

    def _smtp_port_for(self, host: str) -> int | None:
        """The lab's stand-in for "port 25": which port the SMTP server of ``host`` uses."""
        host = host.lower().rstrip(".")
        server = self._servers.get(host) or self._servers.get(f"mx.{host}")
        if server is None or getattr(server, "role", None) != "mx":
            return None
        return server.port

    def stop(self) -> None:
        """Stop every server and the lab's thread. Safe to call twice; runs at exit too."""
        with self._state_lock:
            if self._stopped:
                return
            self._stopped = True
        atexit.unregister(self._at_exit)
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self._stop_servers(), loop)
            try:
                future.result(SHUTDOWN_TIMEOUT)
            except Exception as error:  # a server that would not close: say so, go on
                future.cancel()  # so that no half-done task is left on the loop
                log.warning("lab %s: stopping the servers failed: %r", self.number, error)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(SHUTDOWN_TIMEOUT)
        if self._temporary:
            shutil.rmtree(self.path, ignore_errors=True)

    async def _stop_servers(self) -> None:
        relay = getattr(self, "relay", None)
        if relay is not None:
            try:
                await asyncio.wait_for(relay.stop(), SERVER_STOP_TIMEOUT)
            except Exception as error:  # queued mail stays on disk either way
                log.warning("lab %s: the relay did not stop cleanly: %r", self.number, error)
        servers = list(self._servers.values())
        stops = [asyncio.wait_for(server.stop(), SERVER_STOP_TIMEOUT) for server in servers]
        outcomes = await asyncio.gather(*stops, return_exceptions=True)
        for server, outcome in zip(servers, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.warning(
                    "lab %s: %s did not stop cleanly: %r", self.number, server.name, outcome
                )

    @property
    def running(self) -> bool:
        return not self._stopped and self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        names = ", ".join(d.name for d in self.domains)
        return f"<Lab {self.number} {state}: {names}; {len(self._servers)} servers; {self.path}>"

    # -- what students look at -------------------------------------------------------

    @property
    def servers(self) -> pd.DataFrame:
        """One row per server: name, domain, role, protocol, host, port, running."""
        rows = [
            {
                "name": s.name,
                "domain": getattr(s, "domain", None),
                "role": s.role,
                "protocol": s.protocol,
                "host": s.host,
                "port": s.port,
                "running": s.running,
            }
            for s in self._servers.values()
        ]
        return pd.DataFrame(
            rows, columns=["name", "domain", "role", "protocol", "host", "port", "running"]
        )

    @property
    def accounts(self) -> pd.DataFrame:
        """One row per account: address (the login everywhere), password, domain."""
        rows = [
            {"address": a.address, "password": a.password, "domain": d.name}
            for d in self.domains
            for a in d.accounts
        ]
        return pd.DataFrame(rows, columns=["address", "password", "domain"])

    def account(self, address: str) -> Account:
        """The :class:`Account` of ``address``."""
        for domain in self.domains:
            for account in domain.accounts:
                if account.address == address.lower():
                    return account
        raise LabError(f"{address} is not an account of this lab; see lab.accounts")

    def server(self, name: str) -> Any:
        """The server object called ``name`` (see ``lab.servers``)."""
        try:
            return self._servers[name.lower()]
        except KeyError:
            known = ", ".join(self._servers)
            raise LabError(f"no server called {name!r}; the servers are: {known}") from None

    def port(self, name: str) -> int:
        """The port of server ``name``, e.g. ``lab.port("msa.north.test")``."""
        return self.server(name).port

    def transcript(
        self,
        *,
        server: str | None = None,
        protocol: str | None = None,
        session: int | None = None,
    ) -> pd.DataFrame:
        """Every protocol line so far, in order, as a DataFrame (optionally filtered)."""
        frame = self.transcript_log.frame()
        if server is not None:
            frame = frame[frame["server"] == server]
        if protocol is not None:
            frame = frame[frame["protocol"] == protocol.upper()]
        if session is not None:
            frame = frame[frame["session"] == session]
        return frame

    def mailbox(self, address: str) -> pd.DataFrame:
        """The MDA's view of one account: a row per stored message, every folder."""
        self.account(address)
        return self.store.frame(address.lower())

    def queue(self) -> pd.DataFrame:
        """Messages waiting in the relay queue, with their attempts and last error."""
        return self.relay.frame()

    def wait_for_mail(
        self, address: str, count: int = 1, timeout: float = 10.0, *, folder: str | None = None
    ) -> pd.DataFrame:
        """Wait until ``address`` has at least ``count`` messages; return its mailbox.

        ``folder`` counts only that folder (e.g. ``"INBOX"``); by default every folder
        counts (Sent, Drafts, … too). Raises ``TimeoutError`` with what the queue says
        if the mail does not come.
        """
        deadline = time.monotonic() + timeout
        while True:
            frame = self.mailbox(address)
            counted = frame if folder is None else frame[frame["folder"] == folder]
            if len(counted) >= count:
                return frame
            if time.monotonic() >= deadline:
                waiting = self.queue()
                where = "" if folder is None else f" in {folder}"
                raise TimeoutError(
                    f"{address} has {len(counted)} message(s){where}, expected {count}, "
                    f"after {timeout} s; "
                    f"queue: {waiting.to_dict('records') if len(waiting) else 'empty'}"
                )
            time.sleep(0.02)

    @property
    def ca_file(self) -> Path:
        """The lab CA certificate (PEM), for clients that verify STARTTLS."""
        return self.ca.ca_file

    # -- faults for teaching -----------------------------------------------------------

    def stop_server(self, name: str) -> None:
        """Take one server down (its port closes; connections drop)."""
        self._call(self.server(name).stop())

    def start_server(self, name: str) -> None:
        """Bring a stopped server back, on the same port."""
        self._call(self.server(name).start())

    def inject(self, name: str, command: str, reply: str, times: int | None = 1) -> None:
        """Make server ``name`` answer its next ``command`` with ``reply`` (``times`` times).

        ``lab.inject("mx.south.test", command="RCPT", reply="451 4.7.1 Try again later")``
        """
        server = self.server(name)
        faults = getattr(server, "faults", None)
        if faults is None:
            raise LabError(f"{name} does not take injected replies")
        if server.protocol == "SMTP" and not (reply[:3].isdigit() and reply[:1] in "2345"):
            raise ValueError(
                f"an SMTP reply starts with a three-digit code, e.g. '451 …', not {reply!r}"
            )
        if server.protocol == "POP3" and not reply.startswith(("+OK", "-ERR")):
            raise ValueError(f"a POP3 reply starts with +OK or -ERR, e.g. '-ERR …', not {reply!r}")
        if server.protocol == "IMAP":
            if command.strip().upper() == "CONNECT":
                if not reply.startswith(("* OK", "* BYE", "* PREAUTH")):
                    raise ValueError(f"an IMAP greeting is '* OK …' or '* BYE …', not {reply!r}")
            elif not reply.startswith(("OK", "NO", "BAD")):
                raise ValueError(
                    "an IMAP reply is OK, NO or BAD and its text, e.g. "
                    f"'NO [UNAVAILABLE] try later' (the server adds the tag), not {reply!r}"
                )
        faults.add(command, reply, times)

    def flush_queue(self) -> None:
        """Retry every queued message now, without waiting for its next attempt."""
        self._require_running()
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.relay.flush)

    # -- plumbing -------------------------------------------------------------------------

    def _require_running(self) -> None:
        if not self.running:
            raise LabError("this lab is stopped; start a new one with mailkit_edu.start_lab()")

    def _call(self, coroutine, timeout: float = SHUTDOWN_TIMEOUT):
        """Run ``coroutine`` on the lab's loop and wait for its result in this thread."""
        assert self._loop is not None
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise LabError("lab methods must be called from outside the lab's own thread")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout)


def _stopper(lab_ref: weakref.ref) -> Any:
    def stop_at_exit() -> None:
        lab = lab_ref()
        if lab is not None:
            lab.stop()

    return stop_at_exit


def start_lab(path: str | Path | None = None, **options: Any) -> Lab:
    """Start a mail lab and return it, running.

    ``path``: a folder to keep mail, queue and CA across restarts (default: a
    fresh temporary folder, removed by ``stop()``). Options: ``domains``
    (``{"north.test": {"alice": "pw"}}`` or ``{"north.test": ["alice"]}``),
    ``require_tls``, ``mask_secrets``, ``max_message_size``, ``retry_schedule``,
    ``queue_lifetime``, ``auth_failure_delay``, ``idle_timeout`` (SMTP, seconds),
    ``pop3_autologout`` (seconds; RFC 1939 asks for at least 600),
    ``imap_autologout`` (seconds; RFC 3501 asks for at least 1800).

    Use it as a context manager to stop it at the end of a block::

        with start_lab() as lab:
            ...
    """
    return Lab(path, **options).start()
