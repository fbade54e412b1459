"""The mail store: one Maildir per account. This is the MDA of the lab.

Role
    No other code in mailkit-edu touches mail files. The MX (SMTP) calls
    :meth:`Store.deliver`. The POP3 and IMAP cores list, read, flag, copy, move and
    expunge messages through the small API of :class:`Store` and never open a
    file themselves. While the lab runs, students can ``ls`` the directories and
    watch messages arrive in ``new/`` and move to ``cur/``.

Layout on disk (Maildir, https://cr.yp.to/proto/maildir.html, with Maildir++ folders)
    ::

        ROOT/alice@north.test/Maildir/     INBOX
            tmp/ new/ cur/                 written to tmp/, renamed into new/ (or cur/)
            mailkit-uidlist                INBOX's UIDs
            mailkit-keywords               keyword letters, shared by every folder
            mailkit-uidvalidity            the last UIDVALIDITY given out in this account
            .Sent/ .Drafts/ .Trash/ .Junk/ .Archive/     RFC 6154 special-use folders
            .Work.Projects/                the IMAP folder "Work.Projects"
                tmp/ new/ cur/ maildirfolder mailkit-uidlist

    A message file is called ``<key>`` in ``new/`` and ``<key>:2,<letters>`` in
    ``cur/``. The key is unique, e.g. ``1700000000.M123456P4242Q7.laptop,S=1234``
    (seconds, microseconds, process id, counter, host, size in octets). The letters
    are the flags in ASCII order: D draft, F flagged, P passed ($Forwarded),
    R replied (\\Answered), S seen, T trashed (\\Deleted), and ``a``-``z`` for
    keywords. (On Windows the ``:`` is written ``!``, because Windows does not
    allow ``:`` in file names.)

Files the store keeps beside the Maildir (like Dovecot's dovecot-uidlist and dovecot-keywords)
    ``mailkit-uidlist``: the first line is ``V<uidvalidity> N<uidnext>``. After it
    comes one ``<uid> <key>`` line per message, in UID order. A delivery appends
    one line. When messages go away, the whole file is rewritten (atomically), so
    UIDNEXT outlives an expunge of the newest message and a restart. Between
    rewrites ``N`` may lag behind: UIDNEXT is the larger of ``N`` and the last UID + 1.
    ``mailkit-keywords``: one ``<letter> <keyword>`` line per keyword, e.g. ``a $Junk``.

What IMAP needs (RFC 3501 section 2.3.1.1) and how the store provides it
    * A UID is given out once, at delivery. Files that appear by other means (a
      student copies one into ``new/``) get the next UIDs, in the order of their
      names. UIDs only ever grow and are never reused.
    * UIDVALIDITY is chosen when a folder is created. It is at least the current
      time and always greater than any value this account gave out before, so a
      folder that is deleted and created again never repeats an old value.
    * If a uid list is lost or unreadable, the folder gets a new UIDVALIDITY and
      fresh UIDs. IMAP's rules allow this, and clients then drop their cache.

Concurrency and durability
    Each account has one ``threading.RLock``, and every Store on the same root in
    this process shares it. The lock guards the uid lists, the keywords file and
    the in-memory indexes. :meth:`Store.deliver` does the slow work without the
    lock: it writes to ``tmp/``, calls ``fsync``, renames into ``new/`` and
    ``fsync``\\s the directory. Only after that does it take the lock, and only
    to give the message its UID and append one line to the uid list. So several
    threads can deliver to the same account at once. Once ``deliver`` has
    returned, the message is on disk, even if the process is killed right after.

    Listing a folder of 10,000 messages is cheap when nothing has changed. The
    index is kept in memory, and the directories are listed again only when the
    mtime of ``new/`` or ``cur/`` has changed. Each file is ``stat``-ed once in the
    Store's life (for its internal date); sizes come from ``,S=`` in the name.

Why not Python's ``mailbox.Maildir``?
    It does the same tmp-to-new dance, but it does not ``fsync``, it has no UIDs,
    and it lists the directory again on every call. The few Maildir rules we need
    are written out below instead.

Errors ::

    StoreError
     +-- NoSuchAccount      no such address in this store
     +-- NoSuchFolder       no such folder in the account
     +-- NoSuchMessage      no message with that UID in the folder
     +-- FolderExists       create/rename onto a name that is taken
     +-- InvalidName        a bad address, folder name, flag or keyword
     +-- TooManyKeywords    more than 26 keywords in one account

This module knows nothing of protocols. It must not import asyncio, socket,
ipywidgets or any other mailkit_edu module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.parser
import email.policy
import functools
import itertools
import logging
import os
import platform
import re
import shutil
import string
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pandas as pd

__all__ = [
    "FRAME_COLUMNS",
    "HIERARCHY_DELIMITER",
    "INBOX",
    "MAX_KEYWORDS",
    "SPECIAL_USE",
    "SYSTEM_FLAGS",
    "FolderExists",
    "InvalidName",
    "MessageInfo",
    "NoSuchAccount",
    "NoSuchFolder",
    "NoSuchMessage",
    "Store",
    "StoreError",
    "TooManyKeywords",
    "decode_header_text",
    "fsync_directory",
    "normalize_address",
    "normalize_flag",
    "normalize_folder",
    "sorted_flags",
]

# --------------------------------------------------------------------------- names

#: The one folder every account has (RFC 3501 section 5.1: "INBOX" in any case).
INBOX = "INBOX"

#: Separates the levels of folder names, as in Maildir++: "Work.Projects".
HIERARCHY_DELIMITER = "."

#: Folders made by :meth:`Store.add_account`, with their RFC 6154 special-use attribute.
SPECIAL_USE: dict[str, str] = {
    "Sent": "\\Sent",
    "Drafts": "\\Drafts",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
    "Archive": "\\Archive",
}

#: IMAP flags (RFC 3501 section 2.3.2) and the Maildir info letters that store them.
SYSTEM_FLAGS: dict[str, str] = {
    "\\Draft": "D",
    "\\Flagged": "F",
    "$Forwarded": "P",  # "passed": RFC 5550 section 5.9 keyword, a Maildir letter
    "\\Answered": "R",  # "replied"
    "\\Seen": "S",
    "\\Deleted": "T",  # "trashed"
}
_FLAG_OF_LETTER = {letter: flag for flag, letter in SYSTEM_FLAGS.items()}
_SYSTEM_FLAG_BY_LOWER = {flag.lower(): flag for flag in SYSTEM_FLAGS}

#: The order flags are shown in (the order RFC 3501 section 2.3.2 lists them); keywords follow.
FLAG_ORDER = ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "$Forwarded")

#: Maildir letters for keywords, as Dovecot uses them: a is the first keyword, z the 26th.
KEYWORD_LETTERS = string.ascii_lowercase
#: An account can name at most this many keywords: one per letter.
MAX_KEYWORDS = len(KEYWORD_LETTERS)
#: Our own limit on a keyword's length; RFC 3501 sets none.
MAX_KEYWORD_LENGTH = 64
#: Characters an IMAP atom may not contain (RFC 3501 section 9, "atom-specials"),
#: besides space and control characters.
_ATOM_SPECIALS = frozenset('(){%*"\\]')

#: RFC 5321 section 4.5.3.1.1: the local part of an address is at most 64 octets.
MAX_LOCAL_PART_LENGTH = 64
#: RFC 5321 section 4.5.3.1.2: a domain is at most 255 octets.
MAX_DOMAIN_LENGTH = 255
#: RFC 1035 section 2.3.4: a DNS label is at most 63 octets.
MAX_LABEL_LENGTH = 63
_LOCAL_PART = re.compile(r"[a-z0-9_+-]+(?:\.[a-z0-9_+-]+)*")
_DOMAIN_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")

#: A folder's directory name (a dot plus the name) must fit in a file name, which is
#: at most 255 bytes on ext4, APFS and NTFS. We leave room for renames to add levels.
MAX_FOLDER_NAME_BYTES = 200
#: "/" and "\\" separate paths; "*" and "%" are LIST wildcards (RFC 3501 section 6.3.8).
_FORBIDDEN_IN_FOLDER = frozenset("/\\*%")

# --------------------------------------------------------------------------- files

DIR_MODE = 0o700
FILE_MODE = 0o600
UIDLIST_FILE = "mailkit-uidlist"
KEYWORDS_FILE = "mailkit-keywords"
UIDVALIDITY_FILE = "mailkit-uidvalidity"
#: Maildir++ marks every folder but INBOX with this empty file.
FOLDER_MARKER = "maildirfolder"
#: Windows does not allow ":" in file names; mutt and Python's mailbox use "!" there.
INFO_SEPARATOR = "!" if os.name == "nt" else ":"
#: Starts the "info" part of a file name in cur/: "2," then the flag letters.
INFO_PREFIX = INFO_SEPARATOR + "2,"

#: File-system clocks are coarse. A directory changed in the same clock tick as our
#: last listing keeps the same mtime, so a listing made while the mtime was younger
#: than this is not trusted: the next call lists again. (Git's index has the same
#: "racily clean" problem and the same cure.)
MTIME_GRACE_SECONDS = 2.0

#: :meth:`Store.frame` reads at most this much of each file looking for the header end.
MAX_HEADER_BYTES = 256 * 1024

#: The columns of :meth:`Store.frame`, in order.
FRAME_COLUMNS = ("folder", "uid", "from", "to", "subject", "date", "size", "flags", "file")

_UIDLIST_HEADER = re.compile(r"V([1-9][0-9]*) N([1-9][0-9]*)")
_UIDLIST_ENTRY = re.compile(r"([1-9][0-9]*) (.+)")
_KEYWORDS_ENTRY = re.compile(r"([a-z]) (\S+)")
_SIZE_FIELD = re.compile(r",S=([0-9]+)")
#: RFC 5322 section 2.2.3: unfolding removes each CRLF that is followed by white space.
_FOLDING = re.compile(r"\r?\n(?=[ \t])")

# The host part of a unique name must not contain "/" or ":" (the Maildir spec). We
# keep only letters, digits, "." and "-", so the name is safe on every file system
# and "," stays free to start the ",S=" field.
_HOSTNAME = re.sub(r"[^A-Za-z0-9.-]", "_", platform.node()) or "localhost"
# Numbers the files this process writes ("Q" in the name). next() on it is atomic.
_DELIVERY_COUNTER = itertools.count(1)
# Folder versions (Store.version): unique in the process, so a folder index that is
# loaded again never repeats the version of the one it replaces.
_VERSIONS = itertools.count(1)

# One lock per (root, account), shared by every Store object on that root.
_ACCOUNT_LOCKS: dict[tuple[str, str], threading.RLock] = {}
_ACCOUNT_LOCKS_GUARD = threading.Lock()

_T = TypeVar("_T")


# --------------------------------------------------------------------------- errors


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class NoSuchAccount(StoreError):
    """The address has no Maildir in this store."""


class NoSuchFolder(StoreError):
    """The account has no folder of that name."""


class NoSuchMessage(StoreError):
    """The folder has no message with that UID (it may have been expunged)."""


class FolderExists(StoreError):
    """A folder of that name already exists."""


class InvalidName(StoreError):
    """An address, folder name, flag or keyword that the store does not accept."""


class TooManyKeywords(StoreError):
    """The account already uses all 26 Maildir keyword letters."""


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """What the store knows about one message, without reading the message.

    (``slots``: a folder of 20,000 messages keeps 20,000 of these in memory.)"""

    #: Unique in its folder while the folder's UIDVALIDITY stays the same (RFC 3501 2.3.1.1).
    uid: int
    #: The Maildir unique name, without the ":2,<letters>" info part.
    key: str
    #: IMAP spelling: "\\Seen", "\\Flagged", ..., "$Forwarded" and keyword names.
    flags: frozenset[str]
    #: Octets in the file (RFC 3501 RFC822.SIZE); the store keeps the bytes as delivered.
    size: int
    #: Seconds since the epoch; the file's mtime (RFC 3501 INTERNALDATE).
    internaldate: float
    #: The folder's new/ or cur/ directory, where the file is now (one Path object
    #: shared by every message there: a Path per message would cost ~0.5 kB each).
    directory: Path
    #: The file's name in ``directory``. It changes when the flags change.
    name: str
    #: The folder name, e.g. "INBOX" or "Work.Projects".
    folder: str

    @property
    def path(self) -> Path:
        """Where the file is now."""
        return self.directory / self.name

    @property
    def file(self) -> str:
        """:attr:`path` as a string (cheaper, for system calls)."""
        return os.path.join(self.directory, self.name)


def sorted_flags(flags: Iterable[str]) -> list[str]:
    """Flags in a stable, readable order: system flags as RFC 3501 lists them, then keywords.

    >>> sorted_flags({"\\\\Flagged", "$Junk", "\\\\Seen"})
    ['\\\\Seen', '\\\\Flagged', '$Junk']
    """
    rank = {flag: position for position, flag in enumerate(FLAG_ORDER)}
    return sorted(flags, key=lambda flag: (rank.get(flag, len(rank)), flag.lower(), flag))


# --------------------------------------------------------------------------- validation


def normalize_address(address: str) -> str:
    """Return ``address`` in lower case, or raise :class:`InvalidName` if it is not one.

    The store accepts ``local@domain``. The local part may contain ASCII letters,
    digits and ``. _ + -``, with no dot at either end and no two dots in a row.
    The domain must be a valid DNS name. Anything else is refused, so an address
    can never name a path outside the store, and no non-ASCII spelling can fold
    into another account's address.
    """
    if not isinstance(address, str) or not address.isascii():
        raise InvalidName(f"{address!r} is not a mail address the store accepts (ASCII only)")
    lowered = address.lower()
    local, at, domain = lowered.rpartition("@")
    if not at or not local or not domain:
        raise InvalidName(f"{address!r} is not a mail address: expected local@domain")
    if len(local) > MAX_LOCAL_PART_LENGTH or not _LOCAL_PART.fullmatch(local):
        raise InvalidName(
            f"{address!r}: the part before @ may use only a-z 0-9 . _ + - "
            f"(no dot at the ends, no '..', at most {MAX_LOCAL_PART_LENGTH} characters)"
        )
    labels = domain.split(".")
    if len(domain) > MAX_DOMAIN_LENGTH or not all(
        len(label) <= MAX_LABEL_LENGTH and _DOMAIN_LABEL.fullmatch(label) for label in labels
    ):
        raise InvalidName(f"{address!r}: {domain!r} is not a valid domain name")
    return lowered


@functools.lru_cache(maxsize=4096)
def normalize_folder(name: str) -> str:
    """Return the store's spelling of folder ``name``, or raise :class:`InvalidName`.

    "INBOX" is matched in any case, also as the first level ("inbox.Lists" is
    "INBOX.Lists"). Other names keep their case. The levels are separated by
    "." and none may be empty, so "", ".hidden", "a..b" and ".." are refused.
    A name may not contain "/", "\\", the wildcards "*" and "%", NUL or any
    other control character. So no folder name can reach outside the account's
    directory.
    """
    if not isinstance(name, str) or name == "":
        raise InvalidName(f"{name!r} is not a folder name: it must be a non-empty string")
    levels = name.split(HIERARCHY_DELIMITER)
    if any(level == "" for level in levels):
        raise InvalidName(
            f"{name!r} is not a folder name: '{HIERARCHY_DELIMITER}' separates levels, "
            "and no level may be empty (no leading, trailing or doubled dots)"
        )
    bad = sorted({ch for ch in name if ch in _FORBIDDEN_IN_FOLDER or not ch.isprintable()})
    if bad:
        raise InvalidName(f"{name!r} is not a folder name: it may not contain {bad!r}")
    if len(name.encode("utf-8")) > MAX_FOLDER_NAME_BYTES:
        raise InvalidName(f"folder name {name!r} is longer than {MAX_FOLDER_NAME_BYTES} bytes")
    if levels[0].upper() == INBOX:
        levels[0] = INBOX
    return HIERARCHY_DELIMITER.join(levels)


def normalize_flag(flag: str) -> str:
    """Return the store's spelling of one flag, or raise :class:`InvalidName`.

    System flags are matched in any case ("\\\\seen" is "\\\\Seen"). A keyword
    must be an IMAP atom: printable ASCII without space or ``( ) { % * " \\ ]``
    (RFC 3501 section 9). "\\\\Recent" is refused: it belongs to one IMAP
    session and is never stored (RFC 3501 section 2.3.2).
    """
    if not isinstance(flag, str):
        raise InvalidName(f"{flag!r} is not a flag: flags are strings such as '\\\\Seen'")
    system = _SYSTEM_FLAG_BY_LOWER.get(flag.lower())
    if system is not None:
        return system
    if flag.startswith("\\"):
        raise InvalidName(
            f"{flag!r} cannot be stored: the stored system flags are "
            f"{', '.join(SYSTEM_FLAGS)} (\\Recent is per IMAP session)"
        )
    if not flag or len(flag) > MAX_KEYWORD_LENGTH:
        raise InvalidName(f"keyword {flag!r} must have 1 to {MAX_KEYWORD_LENGTH} characters")
    if any(not (0x21 <= ord(ch) <= 0x7E) or ch in _ATOM_SPECIALS for ch in flag):
        raise InvalidName(
            f"keyword {flag!r} is not an IMAP atom: use printable ASCII without "
            'spaces or ( ) { % * " \\ ]'
        )
    return flag


def _check_flag_collection(flags: Iterable[str]) -> None:
    if isinstance(flags, str | bytes):
        raise TypeError(f"flags must be a collection of flag names, e.g. {{{flags!r}}}")


# --------------------------------------------------------------------------- file helpers


def _split_name(name: str) -> tuple[str, str]:
    """A Maildir file name -> (key, flag letters). "K:2,FS" -> ("K", "FS")."""
    key, separator, info = name.partition(INFO_SEPARATOR)
    letters = info[2:] if separator and info.startswith("2,") else ""
    return key, letters


def _unique_key(size: int) -> str:
    """A new Maildir unique name: <seconds>.M<usec>P<pid>Q<counter>.<host>,S=<size>."""
    now = time.time()
    seconds = int(now)
    micro = int((now - seconds) * 1_000_000)
    counter = next(_DELIVERY_COUNTER)
    return f"{seconds}.M{micro}P{os.getpid()}Q{counter}.{_HOSTNAME},S={size}"


def _file_signature(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime) of a file, or None if it is missing: tells us if it changed."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return (status.st_ino, status.st_size, status.st_mtime_ns)


def fsync_directory(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable.

    A file's fsync saves its bytes. The name that points to it is saved only when
    the directory is fsynced too. (Windows cannot open a directory this way; there,
    NTFS records the rename in its journal.)
    """
    if os.name == "nt":
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _read_file(path: Path, size: int) -> bytes:
    """The whole file, in one ``read`` when ``size`` (from the index) is right."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        data = os.read(descriptor, size + 1)  # a short read of a regular file means its end
        if len(data) <= size:
            return data
        chunks = [data]
        while chunk := os.read(descriptor, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(descriptor)


def _fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_WRONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_atomically(path: Path, text: str, *, durable: bool = True) -> None:
    """Replace ``path`` with ``text``: write a temporary file, fsync it, rename it over.

    ``durable=False`` skips the fsyncs, for files that can be made again (see
    ``_make_maildir``): the rename still makes the change atomic.
    """
    temporary = path.with_name(f"{path.name}.tmp.{os.getpid()}.{next(_DELIVERY_COUNTER)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with open(descriptor, "wb") as file:
            file.write(text.encode("utf-8", "surrogateescape"))
            file.flush()
            if durable:
                os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if durable:
        fsync_directory(path.parent)


def _read_uidlist(path: Path) -> tuple[int, int, dict[str, int]] | None:
    """Parse a uid list into (uidvalidity, uidnext, {key: uid}); None if missing or unreadable.

    A line cut short by a crash, or a line added by hand, is skipped. Its file then
    gets a new UID, which IMAP clients see as one expunge and one new message.
    """
    try:
        text = path.read_bytes().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        return None
    lines = text.split("\n")
    header = _UIDLIST_HEADER.fullmatch(lines[0])
    if header is None:
        return None
    uidvalidity, uidnext = int(header[1]), int(header[2])
    uid_of_key: dict[str, int] = {}
    used: set[int] = set()
    for line in lines[1:]:
        entry = _UIDLIST_ENTRY.fullmatch(line)
        if entry is None:
            continue
        uid, key = int(entry[1]), entry[2]
        if uid in used or key in uid_of_key:
            continue
        used.add(uid)
        uid_of_key[key] = uid
        uidnext = max(uidnext, uid + 1)  # the header's N is only a lower bound
    return uidvalidity, uidnext, uid_of_key


def _write_uidlist(
    directory: Path, uidvalidity: int, uidnext: int, uids: dict[str, int], *, durable: bool = True
) -> None:
    lines = [f"V{uidvalidity} N{uidnext}\n"]
    lines += [f"{uid} {key}\n" for key, uid in sorted(uids.items(), key=lambda item: item[1])]
    _write_atomically(directory / UIDLIST_FILE, "".join(lines), durable=durable)


def _append_uidlist(directory: Path, entries: list[tuple[int, str]]) -> None:
    """Append ``<uid> <key>`` lines (written, not fsynced: see ``Store.deliver``)."""
    text = "".join(f"{uid} {key}\n" for uid, key in entries)
    with open(directory / UIDLIST_FILE, "ab") as file:
        file.write(text.encode("utf-8", "surrogateescape"))


def _read_keywords(path: Path) -> dict[str, str]:
    """Parse ``mailkit-keywords`` into {letter: keyword}; a missing file means no keywords."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return {}
    name_of: dict[str, str] = {}
    for line in text.splitlines():
        entry = _KEYWORDS_ENTRY.fullmatch(line)
        if entry and entry[1] not in name_of:
            name_of[entry[1]] = entry[2]
    return name_of


def _list_messages(directory: Path) -> dict[str, tuple[str, str]]:
    """{key: (subdirectory, file name)} for every message file in new/ and cur/.

    new/ is listed before cur/. Mail clients move files from new/ to cur/, never
    back, so a file moved during our listing is still seen (in cur/). Names that
    start with "." are skipped (the Maildir spec says so), and so are symlinks and
    names with line breaks.
    """
    found: dict[str, tuple[str, str]] = {}
    for subdirectory in ("new", "cur"):
        with os.scandir(directory / subdirectory) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith(".") or "\n" in name or "\r" in name:
                    continue
                if entry.is_file(follow_symlinks=False):
                    found[_split_name(name)[0]] = (subdirectory, name)
    return found


def _read_header_block(path: Path) -> bytes:
    """The header section of a message file, up to the first empty line (RFC 5322 section 2.1)."""
    lines: list[bytes] = []
    total = 0
    with open(path, "rb") as file:
        while total < MAX_HEADER_BYTES:
            line = file.readline(MAX_HEADER_BYTES - total)
            if line in (b"", b"\n", b"\r\n"):
                break
            lines.append(line)
            total += len(line)
    return b"".join(lines)


def decode_header_text(raw: str) -> str:
    """A header value as a person reads it: unfolded, with RFC 2047 encoded words decoded.

    >>> decode_header_text("=?utf-8?q?Gr=C3=BC=C3=9Fe?= aus Berlin")
    'Grüße aus Berlin'
    """
    unfolded = _FOLDING.sub("", raw).strip()
    if "=?" not in unfolded:
        return unfolded  # no encoded word: nothing to decode (and the email package is slow)
    try:
        return str(email.policy.default.header_factory("x-unstructured", unfolded))
    except Exception:  # a malformed header must never break a table; show it as it is
        return unfolded


# --------------------------------------------------------------------------- the index


@dataclass
class _Keywords:
    """An account's keyword letters, as last read from ``mailkit-keywords``."""

    name_of: dict[str, str]
    signature: tuple[int, int, int] | None
    generation: int
    _sets: dict[str, frozenset[str]] = field(default_factory=dict, repr=False)

    def letter_of(self, keyword: str) -> str | None:
        """Keywords are matched without regard to case; the first spelling is kept."""
        wanted = keyword.lower()
        for letter, name in self.name_of.items():
            if name.lower() == wanted:
                return letter
        return None

    def flags_of(self, letters: str) -> frozenset[str]:
        """IMAP flags for Maildir info letters; a letter nobody defined is ignored.

        The same letters give the same (shared) frozenset: a folder of 20,000 messages
        has only a handful of different flag sets.
        """
        flags = self._sets.get(letters)
        if flags is None:
            names = (_FLAG_OF_LETTER.get(letter) or self.name_of.get(letter) for letter in letters)
            flags = self._sets[letters] = frozenset(name for name in names if name)
        return flags


@dataclass
class _FolderIndex:
    """What the store remembers about one folder between calls (guarded by the account lock)."""

    address: str
    folder: str
    directory: Path
    uidvalidity: int
    uidnext: int
    uid_of_key: dict[str, int]
    by_uid: dict[int, MessageInfo] = field(default_factory=dict)
    uidlist_signature: tuple[int, int, int] | None = None
    dirs_signature: tuple[int, int] | None = None
    dirs_trusted: bool = False
    keywords_generation: int = -1
    sorted_messages: list[MessageInfo] | None = None
    #: Changes whenever a message comes, goes or changes its flags (see Store.version).
    version: int = field(default_factory=lambda: next(_VERSIONS))

    def touched(self) -> None:
        """Something in the folder changed: forget the sorted list, take a new version."""
        self.sorted_messages = None
        self.version = next(_VERSIONS)

    def add(self, info: MessageInfo) -> None:
        self.by_uid[info.uid] = info
        self.touched()

    def forget(self, uid: int) -> None:
        info = self.by_uid.pop(uid, None)
        if info is not None:
            self.uid_of_key.pop(info.key, None)
        self.touched()

    def save(self) -> None:
        """Rewrite the uid list from memory (after messages went away)."""
        _write_uidlist(self.directory, self.uidvalidity, self.uidnext, self.uid_of_key)
        self.uidlist_signature = _file_signature(self.directory / UIDLIST_FILE)


# --------------------------------------------------------------------------- the store


class Store:
    """Every account's Maildir under one root directory; safe to use from many threads.

    Example::

        store = Store("/tmp/mail")
        store.add_account("alice@north.test")
        info = store.deliver("alice@north.test", b"Subject: hi\\r\\n\\r\\nHello\\r\\n")
        store.read("alice@north.test", "INBOX", info.uid)   # the same bytes back
        store.set_flags("alice@north.test", "INBOX", info.uid, {"\\\\Seen"})  # new/ -> cur/
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        self._indexes: dict[tuple[str, str], _FolderIndex] = {}
        self._keywords: dict[str, _Keywords] = {}
        # Path arithmetic showed up in profiles of POP3 RETR loops: remember it.
        self._accounts: dict[str, str] = {}  # address as given -> normalised, checked once
        self._dirs: dict[tuple[str, ...], Path] = {}  # folder dirs and their new/, cur/
        self._locks: dict[str, threading.RLock] = {}  # this Store's view of _ACCOUNT_LOCKS
        #: Called as ``watcher(address, folder)`` after this Store changed a folder
        #: (delivery, flags, expunge, copy, move, delete, rename), in the thread that
        #: made the change, maybe with the account's lock held: a watcher must only
        #: schedule work (e.g. ``loop.call_soon_threadsafe``), never wait for it.
        #: IMAP uses it to tell IDLE clients at once (RFC 2177).
        self.watchers: list[Callable[[str, str], None]] = []

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    def _changed(self, address: str, *folders: str) -> None:
        """Tell the watchers; a watcher that fails must not undo the change."""
        for watcher in list(self.watchers):
            for folder in folders:
                try:
                    watcher(address, folder)
                except Exception:  # a watcher's bug is not the store's failure
                    logging.getLogger(__name__).exception("store watcher failed")

    # ------------------------------------------------------------------ accounts

    def add_account(self, address: str) -> None:
        """Create the account's Maildir (INBOX) and its special-use folders (RFC 6154).

        Calling it again is harmless. It only adds what is missing.
        """
        address = normalize_address(address)
        with self._lock(address):
            (self.root / address).mkdir(mode=DIR_MODE, exist_ok=True)
            self._make_maildir(address, INBOX)
            for folder in SPECIAL_USE:
                if not self._folder_exists(address, folder):
                    self._make_maildir(address, folder)

    def accounts(self) -> list[str]:
        """Every address that has a Maildir here, sorted."""
        found = []
        with os.scandir(self.root) as entries:
            for entry in entries:
                try:
                    valid = normalize_address(entry.name) == entry.name
                except InvalidName:
                    continue
                if valid and (Path(entry.path) / "Maildir" / "cur").is_dir():
                    found.append(entry.name)
        return sorted(found)

    def has_account(self, address: str) -> bool:
        """True if ``address`` has a Maildir here. An invalid address has none."""
        try:
            address = normalize_address(address)
        except InvalidName:
            return False
        return self._folder_exists(address, INBOX)

    def maildir_path(self, address: str, folder: str = INBOX) -> Path:
        """The directory holding ``tmp/ new/ cur/`` of one folder: for ``ls`` in a notebook."""
        address = self._account(address)
        folder = normalize_folder(folder)
        if not self._folder_exists(address, folder):
            raise self._missing(address, folder)
        return self._folder_dir(address, folder)

    # ------------------------------------------------------------------ delivery

    def deliver(
        self,
        address: str,
        message: bytes,
        *,
        folder: str = INBOX,
        flags: Iterable[str] = (),
        internaldate: float | None = None,
    ) -> MessageInfo:
        """Store one message durably and give it the folder's next UID.

        This is the MDA's job after SMTP DATA, and IMAP APPEND's (RFC 3501 section
        6.3.11). The bytes are stored exactly as given (SMTP hands over CRLF lines,
        so ``size`` is the IMAP RFC822.SIZE). A message with no flags goes to
        ``new/``. A message with flags goes to ``cur/`` with ``:2,<letters>``.
        ``internaldate`` (epoch seconds) becomes the file's mtime.

        When this returns, the file and its name have been fsynced. A crash cannot
        lose the message any more.
        """
        _check_flag_collection(flags)
        data = bytes(message)
        address = self._account(address)
        folder = normalize_folder(folder)
        directory = self._folder_dir(address, folder)
        if not self._folder_exists(address, folder):
            raise self._missing(address, folder)
        with self._lock(address):
            letters = self._letters(address, flags, register=True)
        mtime_ns = None if internaldate is None else round(internaldate * 1e9)
        # The slow part (writing and fsyncing) runs without the lock ...
        key, path, status = self._write_message(directory, data, letters, mtime_ns)
        fsync_directory(path.parent)
        # ... which is taken only to number the message.
        with self._lock(address):
            index = self._sync(address, folder, rescan=False)
            info = self._register(index, [(key, path, status.st_size, status.st_mtime)])[0]
        self._changed(address, folder)
        # The uid list line is written, not fsynced: the message is safe either way.
        # If a power cut lost the line, the file would get its UID again at the next
        # scan, in name order, which is the order UIDs were given in.
        return info

    # ------------------------------------------------------------------ folders

    def folders(self, address: str) -> list[str]:
        """The account's folder names: "INBOX" first, then the others sorted."""
        address = self._account(address)
        names = []
        with os.scandir(self._maildir(address)) as entries:
            for entry in entries:
                if not entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                    continue
                name = entry.name[1:]
                try:
                    valid = normalize_folder(name) == name and name != INBOX
                except InvalidName:
                    continue
                if valid and (Path(entry.path) / "cur").is_dir():
                    names.append(name)
        return [INBOX, *sorted(names)]

    def create_folder(self, address: str, name: str) -> None:
        """Create a folder (RFC 3501 section 6.3.3), and any missing parent levels.

        RFC 3501 says a server SHOULD create the parents of "Work.Projects", so
        "Work" is created too if it is missing.
        """
        address = self._account(address)
        folder = normalize_folder(name)
        if folder == INBOX:
            raise FolderExists(f"{address} always has an INBOX")
        with self._lock(address):
            if self._folder_exists(address, folder):
                raise FolderExists(f"{address} already has a folder {folder!r}")
            self._make_parents(address, folder)
            self._make_maildir(address, folder)

    def delete_folder(self, address: str, name: str) -> None:
        """Delete a folder and every message in it (RFC 3501 section 6.3.4).

        Sub-folders stay. In Maildir++ they are separate directories, and IMAP
        shows their missing parent as a \\Noselect name. INBOX cannot be deleted.
        """
        address = self._account(address)
        folder = normalize_folder(name)
        if folder == INBOX:
            raise InvalidName("INBOX cannot be deleted (RFC 3501 section 6.3.4)")
        with self._lock(address):
            if not self._folder_exists(address, folder):
                raise NoSuchFolder(f"{address} has no folder {folder!r} to delete")
            # One atomic rename makes the folder disappear, then we clean up at leisure.
            doomed = self._maildir(address) / f"mailkit-deleting.{_unique_key(0)}"
            os.rename(self._folder_dir(address, folder), doomed)
            fsync_directory(self._maildir(address))
            self._indexes.pop((address, folder), None)
            shutil.rmtree(doomed)
        self._changed(address, folder)

    def rename_folder(self, address: str, old: str, new: str) -> None:
        """Rename a folder and its sub-folders (RFC 3501 section 6.3.5).

        UIDs and UIDVALIDITY move with the folder. Renaming INBOX is not supported
        (RFC 3501 gives it a special meaning), so it raises :class:`InvalidName`.
        """
        address = self._account(address)
        source, target = normalize_folder(old), normalize_folder(new)
        if source == INBOX:
            raise InvalidName("renaming INBOX is not supported by this store")
        if target == INBOX:
            raise FolderExists(f"{address} always has an INBOX")
        if target == source or target.startswith(source + HIERARCHY_DELIMITER):
            raise InvalidName(f"cannot rename {source!r} to {target!r}, inside itself")
        with self._lock(address):
            if not self._folder_exists(address, source):
                raise NoSuchFolder(f"{address} has no folder {source!r} to rename")
            prefix = source + HIERARCHY_DELIMITER
            moves = [(source, target)] + [
                (child, normalize_folder(target + child[len(source) :]))
                for child in self.folders(address)
                if child.startswith(prefix)
            ]
            for _, name in moves:
                if self._folder_exists(address, name):
                    raise FolderExists(f"{address} already has a folder {name!r}")
            self._make_parents(address, target)
            for before, after in moves:
                os.rename(self._folder_dir(address, before), self._folder_dir(address, after))
                self._indexes.pop((address, before), None)
                self._indexes.pop((address, after), None)
            fsync_directory(self._maildir(address))
        self._changed(address, *(name for move in moves for name in move))

    def uidvalidity(self, address: str, folder: str) -> int:
        """The folder's UIDVALIDITY (RFC 3501 section 2.3.1.1)."""
        address, folder = self._account(address), normalize_folder(folder)
        with self._lock(address):
            return self._sync(address, folder, rescan=False).uidvalidity  # from the uid list

    def uidnext(self, address: str, folder: str) -> int:
        """The UID the folder's next message will get (RFC 3501 section 2.3.1.1)."""
        address, folder = self._account(address), normalize_folder(folder)
        with self._lock(address):
            return self._sync(address, folder).uidnext

    # ------------------------------------------------------------------ messages

    def messages(self, address: str, folder: str = INBOX) -> list[MessageInfo]:
        """Every message in the folder, sorted by UID.

        If nothing changed on disk since the last call, this costs a few ``stat``
        calls and no directory listing.
        """
        address, folder = self._account(address), normalize_folder(folder)
        with self._lock(address):
            index = self._sync(address, folder)
            if index.sorted_messages is None:
                index.sorted_messages = [index.by_uid[uid] for uid in sorted(index.by_uid)]
            return list(index.sorted_messages)

    def version(self, address: str, folder: str = INBOX) -> int:
        """A number that changes whenever a message of the folder comes, goes or changes
        its flags, by this Store or on disk. Cheap (a few ``stat`` calls): IMAP asks it
        before each command to learn whether it has news for its client."""
        address, folder = self._account(address), normalize_folder(folder)
        with self._lock(address):
            return self._sync(address, folder).version

    def snapshot(self, address: str, folder: str = INBOX) -> tuple[int, list[MessageInfo]]:
        """:meth:`version` and :meth:`messages` together, as of one moment."""
        address, folder = self._account(address), normalize_folder(folder)
        with self._lock(address):
            index = self._sync(address, folder)
            if index.sorted_messages is None:
                index.sorted_messages = [index.by_uid[uid] for uid in sorted(index.by_uid)]
            return index.version, list(index.sorted_messages)

    def get(self, address: str, folder: str, uid: int) -> MessageInfo:
        """One message's :class:`MessageInfo`; :class:`NoSuchMessage` if the UID is not there."""
        address, folder = self._account(address), normalize_folder(folder)
        with self._lock(address):
            info = self._sync(address, folder).by_uid.get(uid)
        if info is None:
            raise NoSuchMessage(f"{folder} of {address} has no message with UID {uid}")
        return info

    def read(self, address: str, folder: str, uid: int) -> bytes:
        """The message's bytes, exactly as they are in the file."""
        address, folder = self._account(address), normalize_folder(folder)
        return self._with_file(address, folder, uid, lambda info: _read_file(info.file, info.size))

    def set_flags(self, address: str, folder: str, uid: int, flags: Iterable[str]) -> MessageInfo:
        """Replace the message's flags (IMAP ``STORE FLAGS``, RFC 3501 section 6.4.6).

        The file moves to ``cur/`` and its name ends in ``:2,<letters>`` (letters in
        ASCII order, as the Maildir spec requires). A new keyword gets the
        account's next free letter.
        """
        _check_flag_collection(flags)
        address, folder = self._account(address), normalize_folder(folder)
        with self._lock(address):
            letters = self._letters(address, flags, register=True)
            return self._change_letters(address, folder, uid, lambda _old: letters)

    def add_flags(self, address: str, folder: str, uid: int, flags: Iterable[str]) -> MessageInfo:
        """Add flags to the ones the message has (IMAP ``STORE +FLAGS``); atomic."""
        _check_flag_collection(flags)
        address, folder = self._account(address), normalize_folder(folder)
        with self._lock(address):
            letters = self._letters(address, flags, register=True)
            return self._change_letters(address, folder, uid, lambda old: old + letters)

    def add_flags_many(
        self, address: str, folder: str, uids: Iterable[int], flags: Iterable[str]
    ) -> list[MessageInfo]:
        """:meth:`add_flags` for many messages under one lock (POP3 marks every message
        it retrieved \\Seen at QUIT). UIDs that are no longer there are skipped.

        A tight loop over the index: one rename per message and no other system call,
        unless a file turns out to have moved (then that one goes the long way)."""
        flags = list(flags)
        _check_flag_collection(flags)
        address, folder = self._account(address), normalize_folder(folder)
        changed = []
        with self._lock(address):
            letters = self._letters(address, flags, register=True)
            keywords = self._load_keywords(address)
            index = self._sync(address, folder, rescan=False)
            cur = self._subdir(address, folder, "cur")
            for uid in uids:
                info = index.by_uid.get(uid)
                if info is not None:
                    key, old = _split_name(info.name)
                    new = "".join(sorted(set(old + letters)))
                    if new == old and info.directory == cur:
                        changed.append(info)
                        continue
                    name = f"{key}{INFO_PREFIX}{new}"
                    with contextlib.suppress(FileNotFoundError):
                        os.rename(info.file, os.path.join(cur, name))
                        info = dataclasses.replace(
                            info, directory=cur, name=name, flags=keywords.flags_of(new)
                        )
                        index.by_uid[uid] = info
                        changed.append(info)
                        continue
                with contextlib.suppress(NoSuchMessage):  # the long way: look again
                    info = self._change_letters(
                        address, folder, uid, lambda old: old + letters, keywords
                    )
                    changed.append(info)
                index = self._sync(address, folder, rescan=False)  # may be a new index now
            index.touched()
        if changed:
            self._changed(address, folder)
        return changed

    def remove_flags(
        self, address: str, folder: str, uid: int, flags: Iterable[str]
    ) -> MessageInfo:
        """Remove flags from the message (IMAP ``STORE -FLAGS``); atomic."""
        _check_flag_collection(flags)
        address, folder = self._account(address), normalize_folder(folder)
        with self._lock(address):
            letters = self._letters(address, flags, register=False)
            return self._change_letters(
                address, folder, uid, lambda old: "".join(c for c in old if c not in letters)
            )

    def expunge(self, address: str, folder: str, uids: Iterable[int]) -> list[int]:
        """Delete messages for good (IMAP EXPUNGE, or POP3 DELE at QUIT).

        Returns the UIDs that were removed, in ascending order. A UID that is not
        there is skipped. The removed UIDs are never given out again.
        """
        address, folder = self._account(address), normalize_folder(folder)
        removed = []
        with self._lock(address):
            for uid in sorted(set(uids)):
                try:
                    self._with_file(address, folder, uid, lambda info: os.unlink(info.file))
                except NoSuchMessage:
                    continue
                self._sync(address, folder, rescan=False).forget(uid)
                removed.append(uid)
            if removed:
                self._sync(address, folder, rescan=False).save()
        if removed:
            self._changed(address, folder)
        return removed

    def copy(
        self, address: str, src_folder: str, uids: Iterable[int], dst_folder: str
    ) -> dict[int, int]:
        """Copy messages to another folder, flags and internal date kept (RFC 3501 6.4.7).

        Returns {source UID: new UID}, as RFC 4315 COPYUID reports it. UIDs that are
        not in the source are skipped. If one copy fails, none is kept.
        """
        address = self._account(address)
        source, target = normalize_folder(src_folder), normalize_folder(dst_folder)
        directory = self._folder_dir(address, target)
        with self._lock(address):
            self._sync(address, target)  # NoSuchFolder before any work
            index = self._sync(address, source)
            wanted = [index.by_uid[uid] for uid in sorted(set(uids)) if uid in index.by_uid]
        written: list[tuple[int, str, Path, os.stat_result]] = []
        try:
            for info in wanted:
                try:
                    data, status = self._with_file(address, source, info.uid, _read_with_status)
                except NoSuchMessage:
                    continue  # expunged meanwhile
                letters = _split_name(info.name)[1]
                key, path, copied = self._write_message(
                    directory, data, letters, status.st_mtime_ns
                )
                written.append((info.uid, key, path, copied))
            for subdirectory in ("new", "cur"):
                fsync_directory(directory / subdirectory)
        except BaseException:
            for _, _, path, _ in written:
                path.unlink(missing_ok=True)
            raise
        with self._lock(address):
            index = self._sync(address, target, rescan=False)
            copies = self._register(
                index, [(key, path, st.st_size, st.st_mtime) for _, key, path, st in written]
            )
        _fsync_file(directory / UIDLIST_FILE)
        if copies:
            self._changed(address, target)
        return {uid: info.uid for (uid, *_), info in zip(written, copies, strict=True)}

    def move(
        self, address: str, src_folder: str, uids: Iterable[int], dst_folder: str
    ) -> dict[int, int]:
        """Move messages to another folder (RFC 6851 MOVE); returns {old UID: new UID}.

        Each file is renamed, so at any moment it is in exactly one folder. UIDs not
        in the source are skipped. If a rename fails half-way, the messages moved
        so far stay moved and the error is raised.
        """
        address = self._account(address)
        source, target = normalize_folder(src_folder), normalize_folder(dst_folder)
        directory = self._folder_dir(address, target)
        moved: dict[int, int] = {}
        with self._lock(address):
            self._sync(address, target)  # NoSuchFolder before any work
            present = self._sync(address, source).by_uid
            # Decide first: moving within one folder creates UIDs that may be in ``uids``.
            wanted = [uid for uid in sorted(set(uids)) if uid in present]
            try:
                for uid in wanted:
                    try:
                        key, path, info = self._with_file(
                            address, source, uid, lambda info: self._rename_into(directory, info)
                        )
                    except NoSuchMessage:
                        continue
                    self._sync(address, source, rescan=False).forget(uid)
                    index = self._sync(address, target, rescan=False)
                    entry = (key, path, info.size, info.internaldate)
                    moved[uid] = self._register(index, [entry])[0].uid
            finally:
                if moved:
                    self._sync(address, source, rescan=False).save()
        if moved:
            for subdirectory in ("new", "cur"):
                fsync_directory(directory / subdirectory)
            _fsync_file(directory / UIDLIST_FILE)
            self._changed(address, source, target)
        return moved

    # ------------------------------------------------------------------ a table for notebooks

    def frame(self, address: str) -> pd.DataFrame:
        """One row per message in every folder of the account, for a notebook.

        Columns: folder, uid, from, to, subject, date, size, flags, file. Header
        values are decoded (RFC 2047 encoded words become text). ``date`` is the
        Date: header as written. ``flags`` is space-separated, e.g.
        ``"\\Seen \\Flagged"``. Only each file's header block is read.
        """
        address = self._account(address)
        rows = []
        for folder in self.folders(address):
            try:
                infos = self.messages(address, folder)
            except NoSuchFolder:
                continue  # deleted meanwhile
            for info in infos:
                try:
                    block = _read_header_block(info.path)
                except FileNotFoundError:  # renamed or expunged since we listed: look again
                    try:
                        block = self._with_file(
                            address, folder, info.uid, lambda i: _read_header_block(i.path)
                        )
                    except NoSuchMessage:
                        continue
                text = block.decode("utf-8", "replace")
                headers = email.parser.HeaderParser(policy=email.policy.compat32).parsestr(
                    text, headersonly=True
                )
                rows.append(
                    {
                        "folder": folder,
                        "uid": info.uid,
                        "from": decode_header_text(str(headers.get("From", ""))),
                        "to": decode_header_text(str(headers.get("To", ""))),
                        "subject": decode_header_text(str(headers.get("Subject", ""))),
                        "date": _FOLDING.sub("", str(headers.get("Date", ""))).strip(),
                        "size": info.size,
                        "flags": " ".join(sorted_flags(info.flags)),
                        "file": str(info.path),
                    }
                )
        return pd.DataFrame(rows, columns=list(FRAME_COLUMNS)).astype(
            {"uid": "int64", "size": "int64"}
        )

    # ------------------------------------------------------------------ internals: places

    def _lock(self, address: str) -> threading.RLock:
        lock = self._locks.get(address)  # the usual case: no global lock, no new RLock
        if lock is None:
            with _ACCOUNT_LOCKS_GUARD:
                lock = _ACCOUNT_LOCKS.get((str(self.root), address))
                if lock is None:
                    lock = _ACCOUNT_LOCKS[(str(self.root), address)] = threading.RLock()
            self._locks[address] = lock
        return lock

    def _subdir(self, address: str, folder: str, subdirectory: str) -> Path:
        """The folder's new/ or cur/ as one shared Path object (see MessageInfo.directory)."""
        place = self._dirs.get((address, folder, subdirectory))
        if place is None:
            place = self._dirs[(address, folder, subdirectory)] = (
                self._folder_dir(address, folder) / subdirectory
            )
        return place

    def _maildir(self, address: str) -> Path:
        return self._folder_dir(address, INBOX)

    def _folder_dir(self, address: str, folder: str) -> Path:
        """INBOX is the Maildir itself; "Work.Projects" is its sub-directory ".Work.Projects"."""
        directory = self._dirs.get((address, folder))
        if directory is None:
            maildir = self.root / address / "Maildir"
            directory = maildir if folder == INBOX else maildir / f".{folder}"
            self._dirs[(address, folder)] = directory
        return directory

    def _folder_exists(self, address: str, folder: str) -> bool:
        return (self._folder_dir(address, folder) / "cur").is_dir()

    def _account(self, address: str) -> str:
        """The normalised address of an existing account, or NoSuchAccount."""
        known = self._accounts.get(address)
        if known is not None:
            return known
        normalised = normalize_address(address)
        if not self._folder_exists(normalised, INBOX):
            raise NoSuchAccount(f"no account {normalised!r} in this store (see add_account)")
        self._accounts[address] = normalised
        return normalised

    def _missing(self, address: str, folder: str) -> StoreError:
        """The error to raise when a folder's directories are not there."""
        self._indexes.pop((address, folder), None)
        if not self._folder_exists(address, INBOX):
            return NoSuchAccount(f"no account {address!r} in this store (see add_account)")
        return NoSuchFolder(f"{address} has no folder {folder!r} (see create_folder)")

    def _make_maildir(self, address: str, folder: str) -> None:
        """Create (or complete) one folder's directories and its uid list.

        Nothing here is fsynced: an empty folder lost in a crash is simply made
        again, with a new UIDVALIDITY, which is exactly how IMAP tells clients to
        forget what they knew. (A new lab makes 30 folders: fsyncing each cost
        most of ``start_lab()``'s time.) The first delivery into a folder fsyncs
        its directory, and with it the journal that holds these creations.
        """
        directory = self._folder_dir(address, folder)
        directory.mkdir(mode=DIR_MODE, exist_ok=True)
        if folder != INBOX:
            (directory / FOLDER_MARKER).touch(mode=FILE_MODE, exist_ok=True)
        if _read_uidlist(directory / UIDLIST_FILE) is None:
            _write_uidlist(directory, self._next_uidvalidity(address), 1, {}, durable=False)
        for subdirectory in ("tmp", "new", "cur"):  # cur/ last: it makes the folder exist
            (directory / subdirectory).mkdir(mode=DIR_MODE, exist_ok=True)

    def _make_parents(self, address: str, folder: str) -> None:
        levels = folder.split(HIERARCHY_DELIMITER)
        for depth in range(1, len(levels)):
            parent = HIERARCHY_DELIMITER.join(levels[:depth])
            if not self._folder_exists(address, parent):
                self._make_maildir(address, parent)

    def _next_uidvalidity(self, address: str) -> int:
        """A UIDVALIDITY greater than any this account gave out before (caller holds lock)."""
        path = self._maildir(address) / UIDVALIDITY_FILE
        try:
            last = int(path.read_text(encoding="ascii").strip() or 0)
        except (FileNotFoundError, ValueError):
            last = 0
        value = max(int(time.time()), last + 1)
        _write_atomically(path, f"{value}\n", durable=False)  # time-based: grows anyway
        return value

    # ------------------------------------------------------------------ internals: flags

    def _load_keywords(self, address: str) -> _Keywords:
        """The account's keyword letters, read again only when the file changed."""
        path = self._maildir(address) / KEYWORDS_FILE
        signature = _file_signature(path)
        cached = self._keywords.get(address)
        if cached is not None and cached.signature == signature:
            return cached
        generation = 0 if cached is None else cached.generation + 1
        keywords = _Keywords(_read_keywords(path), signature, generation)
        self._keywords[address] = keywords
        return keywords

    def _letters(self, address: str, flags: Iterable[str], *, register: bool) -> str:
        """Maildir letters for ``flags``, sorted (caller holds the lock).

        With ``register``, a keyword the account has not seen gets the next free
        letter. Without it, unknown keywords are ignored (removing them is a no-op).
        """
        keywords = self._load_keywords(address)
        letters = set()
        for flag in flags:
            name = normalize_flag(flag)
            letter = SYSTEM_FLAGS.get(name) or keywords.letter_of(name)
            if letter is None and register:
                letter = self._register_keyword(address, name)
                keywords = self._load_keywords(address)
            if letter is not None:
                letters.add(letter)
        return "".join(sorted(letters))

    def _register_keyword(self, address: str, keyword: str) -> str:
        name_of = dict(self._load_keywords(address).name_of)
        free = [letter for letter in KEYWORD_LETTERS if letter not in name_of]
        if not free:
            raise TooManyKeywords(
                f"{address} already uses {MAX_KEYWORDS} keywords, one per Maildir letter "
                f"a-z; {keyword!r} cannot be added"
            )
        name_of[free[0]] = keyword
        text = "".join(f"{letter} {name}\n" for letter, name in sorted(name_of.items()))
        _write_atomically(self._maildir(address) / KEYWORDS_FILE, text)
        return free[0]

    def _change_letters(
        self,
        address: str,
        folder: str,
        uid: int,
        change: Callable[[str], str],
        keywords: _Keywords | None = None,
    ) -> MessageInfo:
        """Rename the message into cur/ with new info letters (caller holds the lock)."""
        if keywords is None:
            keywords = self._load_keywords(address)
        cur = self._subdir(address, folder, "cur")

        def rename(info: MessageInfo) -> MessageInfo:
            key, old = _split_name(info.name)
            letters = "".join(sorted(set(change(old))))
            if letters == old and info.directory == cur:
                return info  # nothing changes (e.g. \\Seen on a message already seen)
            name = f"{key}{INFO_PREFIX}{letters}"
            os.rename(info.file, os.path.join(cur, name))
            return dataclasses.replace(
                info, directory=cur, name=name, flags=keywords.flags_of(letters)
            )

        before = self._sync(address, folder, rescan=False).by_uid.get(uid)
        info = self._with_file(address, folder, uid, rename)
        index = self._indexes.get((address, folder)) or self._sync(address, folder, rescan=False)
        if info is not before:
            index.add(info)
            self._changed(address, folder)
        return info

    # ------------------------------------------------------------------ internals: files

    def _final_path(self, directory: Path, key: str, letters: str) -> Path:
        """new/<key> for a message without flags, cur/<key>:2,<letters> for one with flags."""
        if letters:
            return directory / "cur" / f"{key}{INFO_PREFIX}{letters}"
        return directory / "new" / key

    def _rename_into(self, directory: Path, info: MessageInfo) -> tuple[str, Path, MessageInfo]:
        """Move one file into another folder under a new key; its flag letters stay."""
        letters = _split_name(info.name)[1]
        key = _unique_key(info.size)
        path = self._final_path(directory, key, letters)
        os.rename(info.file, path)
        return key, path, info

    def _write_message(
        self, directory: Path, data: bytes, letters: str, mtime_ns: int | None
    ) -> tuple[str, Path, os.stat_result]:
        """Write tmp/<key>, fsync it, rename it into new/ or cur/. The caller fsyncs the dir."""
        key = _unique_key(len(data))
        temporary = directory / "tmp" / key
        temporary.parent.mkdir(mode=DIR_MODE, exist_ok=True)  # a folder made by hand
        descriptor = os.open(
            temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), FILE_MODE
        )
        try:
            with open(descriptor, "wb") as file:
                file.write(data)
                file.flush()
                if mtime_ns is not None:
                    os.utime(temporary, ns=(mtime_ns, mtime_ns))
                os.fsync(file.fileno())
                status = os.fstat(file.fileno())
            path = self._final_path(directory, key, letters)
            os.rename(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return key, path, status

    def _with_file(
        self, address: str, folder: str, uid: int, action: Callable[[MessageInfo], _T]
    ) -> _T:
        """Run ``action`` on the message's current file.

        The first try trusts the index and lists no directory: reading message after
        message (POP3 RETR, IMAP FETCH) costs a few ``stat`` calls each, not a
        listing. Another program (a mail client, or a student in a shell) may have
        renamed or removed the file meanwhile; then we list the folder again once
        and retry. NoSuchMessage if the message is gone.
        """
        for attempt in range(2):
            with self._lock(address):
                index = self._indexes.get((address, folder)) if attempt == 0 else None
                if index is None:
                    index = self._sync(address, folder, rescan=attempt > 0, force=attempt > 0)
                info = index.by_uid.get(uid)
            if info is None:
                continue
            try:
                return action(info)
            except FileNotFoundError:
                continue
        raise NoSuchMessage(f"{folder} of {address} has no message with UID {uid}")

    # ------------------------------------------------------------------ internals: the index

    def _sync(
        self, address: str, folder: str, *, rescan: bool = True, force: bool = False
    ) -> _FolderIndex:
        """The folder's index, brought up to date with the disk (caller holds the lock).

        * The uid list changed (another Store wrote it, a student edited it): reload.
        * ``rescan``: list new/ and cur/ again if their mtimes changed, or if the last
          listing was too recent to trust (see MTIME_GRACE_SECONDS).
        * ``force``: list them again whatever the mtimes say.
        """
        directory = self._folder_dir(address, folder)
        keywords = self._load_keywords(address)
        index = self._indexes.get((address, folder))
        if index is None or index.uidlist_signature != _file_signature(directory / UIDLIST_FILE):
            previous, index = index, self._load_index(address, folder)
            if previous is not None and previous.uidvalidity == index.uidvalidity:
                index.by_uid = previous.by_uid  # keeps sizes and dates: no stat per file
            force = True
        if rescan or force:
            try:
                signature = self._dirs_signature(directory)
            except FileNotFoundError:
                raise self._missing(address, folder) from None
            if force or not index.dirs_trusted or index.dirs_signature != signature:
                self._scan(index, keywords)
        if index.keywords_generation != keywords.generation:
            for uid, info in index.by_uid.items():
                flags = keywords.flags_of(_split_name(info.name)[1])
                index.by_uid[uid] = dataclasses.replace(info, flags=flags)
            index.keywords_generation = keywords.generation
            index.touched()
        return index

    @staticmethod
    def _dirs_signature(directory: Path) -> tuple[int, int]:
        return (
            os.stat(directory / "new").st_mtime_ns,
            os.stat(directory / "cur").st_mtime_ns,
        )

    def _load_index(self, address: str, folder: str) -> _FolderIndex:
        """Start a folder's index from its uid list (or a fresh one, with a new UIDVALIDITY)."""
        directory = self._folder_dir(address, folder)
        if not (directory / "cur").is_dir():
            raise self._missing(address, folder)
        for subdirectory in ("tmp", "new"):  # a folder a student made with only cur/
            (directory / subdirectory).mkdir(mode=DIR_MODE, exist_ok=True)
        parsed = _read_uidlist(directory / UIDLIST_FILE)
        if parsed is None:
            parsed = (self._next_uidvalidity(address), 1, {})
            _write_uidlist(directory, *parsed)
        uidvalidity, uidnext, uid_of_key = parsed
        index = _FolderIndex(address, folder, directory, uidvalidity, uidnext, uid_of_key)
        index.uidlist_signature = _file_signature(directory / UIDLIST_FILE)
        self._indexes[(address, folder)] = index
        return index

    def _scan(self, index: _FolderIndex, keywords: _Keywords) -> None:
        """List new/ and cur/; number the newcomers, forget the files that are gone."""
        started = time.time()
        signature = self._dirs_signature(index.directory)
        found = _list_messages(index.directory)
        if not index.uid_of_key.keys() <= found.keys():
            found = _list_messages(index.directory)  # a file may have been mid-rename: look again
        by_uid: dict[int, MessageInfo] = {}
        newcomers: list[tuple[str, str | Path, int, float]] = []
        changed = len(found) != len(index.by_uid)
        changed |= keywords.generation != index.keywords_generation
        places = {sub: self._subdir(index.address, index.folder, sub) for sub in ("new", "cur")}
        for key, (subdirectory, name) in sorted(found.items()):
            place = places[subdirectory]
            uid = index.uid_of_key.get(key)
            known = index.by_uid.get(uid) if uid is not None else None
            if known is not None and known.key != key:
                known = None  # the uid list was replaced and this UID means another file now
            if known is not None and known.name == name and known.directory == place:
                by_uid[known.uid] = known
                continue
            changed = True
            if known is not None:  # renamed by someone else: same file, new flags
                flags = keywords.flags_of(_split_name(name)[1])
                by_uid[known.uid] = dataclasses.replace(
                    known, directory=place, name=name, flags=flags
                )
                continue
            path = os.path.join(place, name)
            try:
                status = os.stat(path)  # once per file per Store: its internal date
            except FileNotFoundError:
                continue
            size_field = _SIZE_FIELD.search(key)
            size = int(size_field[1]) if size_field else status.st_size
            if uid is None:
                newcomers.append((key, path, size, status.st_mtime))
            else:
                by_uid[uid] = self._info(index, uid, key, path, size, status.st_mtime, keywords)
        vanished = [key for key, uid in index.uid_of_key.items() if uid not in by_uid]
        for key in vanished:
            del index.uid_of_key[key]
        if changed:  # key strings shared with the MessageInfos: ~100 B less per message
            index.uid_of_key = {info.key: uid for uid, info in by_uid.items()}
        index.by_uid = by_uid
        index.keywords_generation = keywords.generation
        if changed or vanished:
            index.touched()
        if vanished:
            index.save()  # before numbering: _register appends to a clean file
        self._register(index, newcomers, keywords)
        index.dirs_signature = signature
        index.dirs_trusted = started - max(signature) / 1e9 > MTIME_GRACE_SECONDS

    def _register(
        self,
        index: _FolderIndex,
        entries: list[tuple[str, str | Path, int, float]],
        keywords: _Keywords | None = None,
    ) -> list[MessageInfo]:
        """Give each (key, path, size, mtime) its UID (the next one, unless it has one).

        The caller holds the lock. New UIDs are appended to the uid list. The file is
        not fsynced here, so that the slow part stays out of the lock.
        """
        if keywords is None:
            keywords = self._load_keywords(index.address)
        infos = []
        appended = []
        for key, path, size, mtime in entries:
            uid = index.uid_of_key.get(key)
            if uid is None:
                uid = index.uidnext
                index.uidnext += 1
                index.uid_of_key[key] = uid
                appended.append((uid, key))
            info = self._info(index, uid, key, path, size, mtime, keywords)
            index.add(info)
            infos.append(info)
        if appended:
            _append_uidlist(index.directory, appended)
            index.uidlist_signature = _file_signature(index.directory / UIDLIST_FILE)
        return infos

    def _info(
        self,
        index: _FolderIndex,
        uid: int,
        key: str,
        path: str | os.PathLike[str],
        size: int,
        mtime: float,
        keywords: _Keywords,
    ) -> MessageInfo:
        head, name = os.path.split(path)
        flags = keywords.flags_of(_split_name(name)[1])
        directory = self._subdir(index.address, index.folder, os.path.basename(head))
        return MessageInfo(uid, key, flags, size, mtime, directory, name, index.folder)


def _read_with_status(info: MessageInfo) -> tuple[bytes, os.stat_result]:
    with open(info.file, "rb") as file:
        return file.read(), os.fstat(file.fileno())
