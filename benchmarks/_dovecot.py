"""What the mail-store benchmarks share: the messages, the maildrops, a throwaway Dovecot.

Used by ``bench_pop3.py`` and ``bench_imap.py``:

* :func:`make_messages` makes the same realistic ~2 KiB messages every time (a fixed
  seed), so a client in another process can make them again to check what it gets;
* :func:`write_pool` writes each message once, :func:`link_maildrop` hard-links the pool
  into a Maildir's ``new/`` or ``cur/`` (writing 88,000 files takes ~20 s on this disk,
  a link 30 us), named as a delivery agent names them (``...,S=<size>,W=<size>``);
* :class:`Dovecot` is a Dovecot 2.3 started for one run from a config in a temporary
  folder, as in ``/work/shared/docs/reference-servers.md``: loopback only, no TLS,
  plaintext login, virtual users mapped to uid 65534 (Dovecot refuses uid 0 for mail
  users), stopped with ``doveadm stop`` (and SIGTERM to its master if that fails).

Nothing here listens on or connects to anything but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from _common import LOOPBACK

DOVECOT_UID = 65534  # Dovecot refuses uid 0 for mail users
DOVECOT_PASSWORD = "benchpw"
DOVECOT_START_TIMEOUT = 15.0
INSTALL_TIMEOUT = 600.0
#: Our store trusts a folder's mtime only once it is older than 2 s (MTIME_GRACE_SECONDS).
SETTLE_SECONDS = 2.2
#: The Debian package that brings each protocol's Dovecot binary.
PACKAGES = {"pop3": "dovecot-pop3d", "imap": "dovecot-imapd"}

# -- the messages -------------------------------------------------------------------------

_WORDS = (  # noqa: SIM905 (a sentence is easier to read than 44 quoted words)
    "mail server client message header body queue relay domain address delivery folder "
    "network packet socket stream line reply command status octet size listing report "
    "meeting budget review draft schedule project team weekly notes summary question "
    "answer lunch friday monday tomorrow attached please thanks regards"
).split()
_DOT_LINES = [".", ". a line that starts with a dot", "..two dots", ".signature follows"]


def make_messages(count: int, seed: int = 1939) -> list[bytes]:
    """``count`` realistic messages of about 2 KiB, CRLF line ends; every fifth has dot lines."""
    rng = random.Random(seed)
    sentences = [
        " ".join(rng.choices(_WORDS, k=rng.randint(8, 12))).capitalize() + "." for _ in range(997)
    ]
    messages = []
    for number in range(count):
        sender, recipient = rng.choice(["alice", "bob"]), rng.choice(["carol", "dave"])
        subject = " ".join(rng.choices(_WORDS, k=rng.randint(3, 8)))
        body = rng.choices(sentences, k=rng.randint(14, 22))
        if number % 5 == 0:
            body[3:3] = _DOT_LINES[: 1 + number % len(_DOT_LINES)]
        lines = [
            f"Return-Path: <{sender}@north.test>",
            f"Received: from mx.north.test (mx.north.test [127.0.0.1])\r\n"
            f"\tby mx.south.test with ESMTP id Q{number:06d}\r\n"
            f"\tfor <{recipient}@south.test>; Thu, 01 Jan 2026 00:{number % 60:02d}:00 +0000",
            f"Received: from [127.0.0.1] (localhost [127.0.0.1])\r\n"
            f"\tby msa.north.test with ESMTPSA id S{number:06d}; Thu, 01 Jan 2026 +0000",
            f'From: "{sender.title()} Example" <{sender}@north.test>',
            f'To: "{recipient.title()} Example" <{recipient}@south.test>',
            f"Subject: {subject} ({number})",
            "Date: Thu, 01 Jan 2026 00:00:00 +0000",
            f"Message-ID: <{number}.{rng.getrandbits(48):012x}@north.test>",
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: 8bit",
            "",
            f"Hello {recipient.title()},",
            "",
            *body,
            "",
            "-- ",
            sender.title(),
            "",
        ]
        messages.append("\r\n".join(lines).encode())
    return messages


def file_names(messages: list[bytes]) -> list[str]:
    """Maildir names for the messages, in delivery order (the same for both servers)."""
    base = 1_767_225_600  # 2026-01-01
    return [
        f"{base + number}.M{number:06d}P4242Q{number}.bench,S={len(data)},W={len(data)}"
        for number, data in enumerate(messages)
    ]


def write_pool(pool: Path, names: list[str], messages: list[bytes], uid: int | None) -> None:
    """Write each message once into ``pool`` (no fsync: a benchmark fixture), owned by ``uid``."""
    pool.mkdir()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for name, data in zip(names, messages, strict=True):
        descriptor = os.open(f"{pool}/{name}", flags, 0o600)
        try:
            os.write(descriptor, data)
            if uid is not None:
                os.fchown(descriptor, uid, uid)
        finally:
            os.close(descriptor)


def link_maildrop(pool: Path, maildir: Path, names: list[str], *, read: bool) -> Path:
    """Hard-link the pool's files into ``new/`` (or ``cur/`` as seen); return that folder."""
    folder = maildir / ("cur" if read else "new")
    suffix = ":2,S" if read else ""
    for name in names:
        os.link(f"{pool}/{name}", f"{folder}/{name}{suffix}")
    return folder


def digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def settle(folders: list[Path]) -> None:
    """Wait until the folders' mtimes are more than SETTLE_SECONDS old.

    Our store trusts a folder's mtime only once it is 2 s old: a maildrop written a
    moment ago would be listed again at every login, by design.
    """
    pause = max(os.stat(f).st_mtime for f in folders) + SETTLE_SECONDS - time.time()
    time.sleep(min(max(pause, 0.0), SETTLE_SECONDS))


def _raise_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # so that ``finally`` stops Dovecot on a kill


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises SystemExit (in the main thread), so ``finally`` runs."""
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_exit) if main_thread else None
    try:
        yield
    finally:
        if main_thread and previous is not None:
            signal.signal(signal.SIGTERM, previous)


# -- Dovecot ------------------------------------------------------------------------------

_CONF_HEAD = """\
instance_name = bench-dovecot-{name}
protocols = {protocols}
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = dovecot
default_login_user = dovenull
mail_location = maildir:{root}/mail/%u/Maildir
first_valid_uid = 1000
first_valid_gid = 1000
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/users
  default_fields = uid={uid} gid={uid} home={root}/mail/%u
}}
"""
_CONF_POP3 = """\
pop3_uidl_format = %08Xu%08Xv
pop3_lock_session = yes
"""
_CONF_LISTENER = """\
service {protocol}-login {{
  inet_listener {protocol} {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener {protocol}s {{
    port = 0
  }}
}}
"""
#: What each protocol's server says first when it is ready.
_GREETINGS = {"pop3": b"+OK", "imap": b"* OK"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def _installed(protocols: tuple[str, ...]) -> bool:
    binaries = ["/usr/sbin/dovecot", *(f"/usr/lib/dovecot/{p}" for p in protocols)]
    return all(Path(binary).exists() for binary in binaries)


def ensure_dovecot(protocols: tuple[str, ...] = ("pop3",)) -> str | None:
    """None if Dovecot and ``protocols`` are there (apt-get installs them if not), or why not."""
    if _installed(protocols):
        return None
    packages = ["dovecot-core", *(PACKAGES[p] for p in protocols)]
    names = " ".join(packages)
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "Dovecot is not installed and apt-get cannot be run here"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", *packages]
    print(f"  installing {names} with apt-get ...")
    for step in ([install], [["apt-get", "update", "-q"], install]):
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            for command in step:
                subprocess.run(command, env=env, capture_output=True, timeout=INSTALL_TIMEOUT)
        if _installed(protocols):
            return None
    return f"apt-get could not install {names}"


@dataclass
class Dovecot:
    """A throwaway Dovecot serving ``protocols`` under ``root`` (see reference-servers.md).

    ``ports[protocol]`` is each listener's port on 127.0.0.1, known after :meth:`prepare`.
    ``extra`` is appended to the config as it is.
    """

    root: Path
    protocols: tuple[str, ...] = ("pop3",)
    extra: str = ""
    ports: dict[str, int] = field(default_factory=dict)
    started: bool = False

    @property
    def conf(self) -> Path:
        return self.root / "dovecot.conf"

    def maildir(self, user: str) -> Path:
        """Create the user's home and Maildir (owned by 65534) and return the Maildir."""
        home = self.root / "mail" / user
        for directory in (
            home,
            home / "Maildir",
            *(home / "Maildir" / d for d in ("tmp", "new", "cur")),
        ):
            directory.mkdir(mode=0o700, exist_ok=True)
            os.chown(directory, DOVECOT_UID, DOVECOT_UID)
        return home / "Maildir"

    def prepare(self, users: list[str]) -> None:
        self.root.mkdir(mode=0o755)
        (self.root / "mail").mkdir(mode=0o755)
        self.ports = {protocol: free_port() for protocol in self.protocols}
        text = _CONF_HEAD.format(
            name=next(iter(self.ports.values())),
            protocols=" ".join(self.protocols),
            root=self.root,
            uid=DOVECOT_UID,
        )
        if "pop3" in self.protocols:
            text += _CONF_POP3
        for protocol, port in self.ports.items():
            text += _CONF_LISTENER.format(protocol=protocol, port=port)
        self.conf.write_text(text + self.extra)
        users_file = self.root / "users"
        users_file.write_text("".join(f"{u}:{{PLAIN}}{DOVECOT_PASSWORD}::::::\n" for u in users))
        os.chmod(users_file, 0o640)
        with contextlib.suppress(KeyError, OSError):
            import grp

            os.chown(users_file, 0, grp.getgrnam("dovecot").gr_gid)

    def start(self) -> None:
        """Start it and wait until every listener greets; RuntimeError (with its log) if not."""
        self.started = True  # from here on, stop() must run whatever happens
        with open(self.root / "start.log", "wb") as output:  # the daemon keeps it open
            result = subprocess.run(
                ["/usr/sbin/dovecot", "-c", str(self.conf)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=30,
            )
        if result.returncode != 0:
            text = (self.root / "start.log").read_text(errors="replace").strip()
            raise RuntimeError(f"dovecot exited with {result.returncode}: {text}")
        deadline = time.perf_counter() + DOVECOT_START_TIMEOUT
        for protocol, port in self.ports.items():
            while not self._greets(port, _GREETINGS[protocol]):
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"dovecot did not answer: {self.log_tail()}")
                time.sleep(0.05)

    @staticmethod
    def _greets(port: int, greeting: bytes) -> bool:
        """True if a connection to ``port`` gets a greeting that starts with ``greeting``."""
        try:
            with socket.create_connection((LOOPBACK, port), timeout=5) as connection:
                line = connection.makefile("rb").readline(1024)
        except OSError:
            return False
        return line.startswith(greeting)

    def stop(self) -> None:
        """``doveadm stop``; if its master is still there 10 s later, SIGTERM (it is ours)."""
        if not self.started:
            return
        self.started = False
        pid = None
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.root / "run" / "master.pid").read_text().split()[0])
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(
                ["doveadm", "-c", str(self.conf), "stop"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=30,
            )
        if pid is None:
            return
        for signal_number in (None, signal.SIGTERM):
            if signal_number is not None:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal_number)
            deadline = time.perf_counter() + 10
            while time.perf_counter() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
                except PermissionError:
                    return  # the pid is someone else's now: ours is gone
                time.sleep(0.05)

    def version(self) -> str:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            out = subprocess.run(
                ["/usr/sbin/dovecot", "--version"], capture_output=True, text=True, timeout=10
            )
            return out.stdout.strip()
        return "?"

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return " | ".join((self.root / "dovecot.log").read_text().splitlines()[-5:])
        return "(no log)"
