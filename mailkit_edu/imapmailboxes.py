"""IMAP mailbox names: the wire spelling, LIST patterns, LIST attributes and subscriptions.

Role
    The layer between the IMAP core and the store for everything about *names* of
    mailboxes. The core gets a name from :mod:`mailkit_edu.imapparse` in modified
    UTF-7 and calls :func:`to_store` before it asks the store for anything; it sends
    every name back through :func:`to_wire`. LIST and LSUB are answered with
    :func:`list_matches` and :func:`list_attributes` over ``Store.folders(address)``
    or ``Subscriptions.names()``. Nothing here reads a message. ::

        >>> to_store("Entw&APw-rfe")
        'Entwürfe'
        >>> list_matches("", "%", ["INBOX", "Sent", "Work", "Work.Projects"])
        ['INBOX', 'Sent', 'Work']
        >>> list_attributes("Sent", ["INBOX", "Sent"], special_use=True)
        ['\\\\HasNoChildren', '\\\\Sent']

Names on the wire and in the store
    On the wire a mailbox name is 7-bit: any other character is written in modified
    UTF-7 (RFC 3501 §5.1.3), so ``Entwürfe`` is ``Entw&APw-rfe`` and ``&`` is ``&-``.
    The store keeps plain text (UTF-8 on disk). The hierarchy delimiter is the store's
    ``"."``, and "INBOX" is the same name in any case (RFC 3501 §5.1).

LIST patterns (RFC 3501 §6.3.8)
    The reference and the pattern are joined by plain concatenation, so the
    reference is either empty or ends with the delimiter (``LIST "Work." "%"``).
    ``*`` matches any characters, ``%`` any characters except the delimiter. Names
    are compared case-sensitively, except that a pattern that starts with "inbox"
    in any case, followed by its end, the delimiter or a wildcard, means INBOX.
    ``LIST "" ""`` asks only for the delimiter: :func:`empty_pattern_reply`.

    A folder whose parent does not exist (a student deleted "Work" but not
    "Work.Projects"; the store keeps sub-folders) still has its parent listed, as
    ``\\Noselect``, as RFC 3501 §6.3.8 asks. The same rule gives LSUB its
    ``\\Noselect`` for a parent that is not subscribed (RFC 3501 §6.3.9).

Subscriptions (RFC 3501 §6.3.6, §6.3.7, §6.3.9)
    :class:`Subscriptions` keeps them in ``ROOT/<address>/Maildir/subscriptions``, one
    folder name per line, the file name and layout Dovecot uses. A new account is
    subscribed to INBOX and the RFC 6154 special-use folders.

Errors ::

    ValueError
     +-- MailboxNameError   a name the client sent that is not valid modified UTF-7,
                            or that the store refuses; the message is for the client

RFCs followed
    RFC 3501 (IMAP4rev1 §5.1, §5.1.3, §6.3.6-§6.3.9), RFC 3348 (\\HasChildren,
    \\HasNoChildren), RFC 6154 (special-use attributes).

This module must not import asyncio, socket, ssl or ipywidgets. It uses the standard
library, :mod:`mailkit_edu.store` and :mod:`mailkit_edu.imapparse` only. (It imports
``threading``, for the lock of :class:`Subscriptions`.)
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

from mailkit_edu.imapparse import decode_mutf7, encode_mutf7
from mailkit_edu.store import (
    HIERARCHY_DELIMITER,  # the store's "."; IMAP shows it as it is (RFC 3501 §6.3.8)
    INBOX,
    MAX_FOLDER_NAME_BYTES,
    SPECIAL_USE,
    InvalidName,
    Store,
    fsync_directory,
    normalize_folder,
)

__all__ = [
    "DEFAULT_SUBSCRIPTIONS",
    "HIERARCHY_DELIMITER",
    "SUBSCRIPTIONS_FILE",
    "MailboxNameError",
    "Subscriptions",
    "empty_pattern_reply",
    "list_attributes",
    "list_matches",
    "to_store",
    "to_wire",
]

#: The subscriptions of one account, beside its INBOX (the name Dovecot uses).
SUBSCRIPTIONS_FILE = "subscriptions"

#: What a new account is subscribed to: INBOX and the RFC 6154 special-use folders.
DEFAULT_SUBSCRIPTIONS = (INBOX, *SPECIAL_USE)

#: How much of a client's name an error message repeats.
_SHOWN_CHARACTERS = 40


class MailboxNameError(ValueError):
    """A mailbox name from the client that cannot name a folder.

    The message is written for the person at the client, in printable ASCII; the core
    puts it after ``NO`` (or ``BAD`` for a name that is not even modified UTF-7).
    """


def _show(text: str) -> str:
    """Client input, quoted, as printable ASCII and shortened: safe inside a reply."""
    shown = "".join(ch if " " <= ch <= "~" else "?" for ch in text[:_SHOWN_CHARACTERS])
    return f'"{shown}..."' if len(text) > _SHOWN_CHARACTERS else f'"{shown}"'


# --------------------------------------------------------------------------- names


def to_store(wire_name: str) -> str:
    """The store's folder name for a mailbox name from the wire (RFC 3501 §5.1, §5.1.3).

    ``"Entw&APw-rfe"`` is ``"Entwürfe"``, ``"&-"`` is ``"&"``, ``"inbox.Lists"`` is
    ``"INBOX.Lists"``. Raises :class:`MailboxNameError` for a name that is not valid
    modified UTF-7 or that the store refuses (an empty level as in ``"a..b"``, a
    ``"/"``, a wildcard, a control character, more than the store's length limit).
    """
    try:
        name = decode_mutf7(wire_name)
    except ValueError as error:
        raise MailboxNameError(f"{_show(wire_name)} is not a valid mailbox name: {error}") from None
    try:
        return normalize_folder(name)
    except InvalidName:
        raise MailboxNameError(
            f"{_show(wire_name)} is not a valid mailbox name: {_why(name)}"
        ) from None


def _why(name: str) -> str:
    """Which of the store's rules (see ``normalize_folder``) ``name`` breaks, in words."""
    if name == "":
        return "it is empty"
    if "" in name.split(HIERARCHY_DELIMITER):
        return (
            f"'{HIERARCHY_DELIMITER}' separates levels, and no level may be empty "
            "(no leading, trailing or doubled dots)"
        )
    for char, words in (("/", "'/'"), ("\\", "'\\'"), ("*", "'*'"), ("%", "'%'")):
        if char in name:
            return f"it may not contain {words}"
    if not name.isprintable():
        return "it may not contain control characters"
    if len(name.encode("utf-8")) > MAX_FOLDER_NAME_BYTES:
        return f"it is longer than {MAX_FOLDER_NAME_BYTES} bytes"
    return "the mail store does not accept it"


def to_wire(store_name: str) -> str:
    """The wire spelling of a store folder name, in modified UTF-7 (RFC 3501 §5.1.3)."""
    return encode_mutf7(store_name)


# --------------------------------------------------------------------------- LIST


def empty_pattern_reply() -> tuple[list[str], str]:
    """Attributes and name that answer ``LIST "" ""`` (RFC 3501 §6.3.8).

    The client asks for the hierarchy delimiter and the root name; the core sends
    ``* LIST (\\Noselect) "." ""``. There is one flat namespace, so the root is "".
    """
    return ["\\Noselect"], ""


def list_matches(reference: str, pattern: str, folders: list[str]) -> list[str]:
    """The names in ``folders`` that ``LIST reference pattern`` returns (RFC 3501 §6.3.8).

    ``reference`` and ``pattern`` are wire names (modified UTF-7); the result is store
    names, INBOX first, then sorted. ``*`` matches anything, ``%`` anything but ``"."``.
    Parents that are missing from ``folders`` are matched too (the core lists them as
    ``\\Noselect``, see :func:`list_attributes`). An empty pattern matches nothing:
    answer it with :func:`empty_pattern_reply`. Raises :class:`MailboxNameError` if
    the reference or the pattern is not valid modified UTF-7.
    """
    if pattern == "":
        return []
    try:
        joined = decode_mutf7(reference) + decode_mutf7(pattern)
    except ValueError as error:
        shown = _show(reference + pattern)
        raise MailboxNameError(f"{shown} is not a valid mailbox pattern: {error}") from None
    wanted = _simplified(_inbox_in_any_case(joined))
    names = set(folders) | _missing_parents(folders)
    found = [name for name in names if _matches(wanted, name)]
    return _ordered(found)


def _inbox_in_any_case(pattern: str) -> str:
    """Spell a leading "inbox" (any case) as "INBOX" if it is a whole level (RFC 3501 §5.1)."""
    head, rest = pattern[: len(INBOX)], pattern[len(INBOX) :]
    if head.upper() == INBOX and (rest == "" or rest[0] in (HIERARCHY_DELIMITER, "*", "%")):
        return INBOX + rest
    return pattern


def _missing_parents(folders: list[str]) -> set[str]:
    """The parent levels of ``folders`` that are not folders themselves."""
    parents = set()
    for name in folders:
        levels = name.split(HIERARCHY_DELIMITER)
        for depth in range(1, len(levels)):
            parents.add(HIERARCHY_DELIMITER.join(levels[:depth]))
    return parents - set(folders)


def _simplified(pattern: str) -> str:
    """Merge runs of wildcards: "**" and "%*" match what "*" matches, "%%" what "%" does.

    After this, a pattern has at most one wildcard per literal character (plus one),
    which keeps :func:`_matches` fast whatever a client sends.
    """
    out: list[str] = []
    for char in pattern:
        if char in "*%" and out and out[-1] in "*%":
            out[-1] = "*" if "*" in (char, out[-1]) else "%"
        else:
            out.append(char)
    return "".join(out)


def _matches(pattern: str, name: str) -> bool:
    """True if the LIST ``pattern`` matches all of ``name``.

    Dynamic programming, row by row over the pattern: ``reached[j]`` says whether
    the pattern so far can match the first ``j`` characters of the name. That takes
    len(pattern) x len(name) steps, never the exponential time of naive backtracking.
    """
    literal_characters = sum(char not in "*%" for char in pattern)
    if literal_characters > len(name):
        return False
    reached = [True] + [False] * len(name)
    for char in pattern:
        row = [False] * (len(name) + 1)
        if char == "*":  # any number of any characters
            row[0] = reached[0]
            for j in range(1, len(name) + 1):
                row[j] = reached[j] or row[j - 1]
        elif char == "%":  # any number of characters, but not the delimiter
            row[0] = reached[0]
            for j in range(1, len(name) + 1):
                row[j] = reached[j] or (row[j - 1] and name[j - 1] != HIERARCHY_DELIMITER)
        else:  # exactly this character
            for j in range(1, len(name) + 1):
                row[j] = reached[j - 1] and name[j - 1] == char
        reached = row
    return reached[len(name)]


def list_attributes(name: str, folders: list[str], *, special_use: bool) -> list[str]:
    """The attributes of ``name`` in a LIST (or LSUB) response over ``folders``.

    * ``\\HasChildren`` or ``\\HasNoChildren`` (RFC 3348), always.
    * ``\\Noselect`` for a parent that is not in ``folders`` (see :func:`list_matches`).
    * The RFC 6154 attribute of a special-use folder (``\\Sent``, ``\\Drafts``,
      ``\\Trash``, ``\\Junk``, ``\\Archive``) **always**, whatever ``special_use``
      says. ``special_use`` tells whether the client asked for it (``RETURN
      (SPECIAL-USE)``); RFC 6154 §2 says a server that advertises SPECIAL-USE
      SHOULD send the attributes in LIST responses even when not asked, and we do.
      The keyword stays so the core passes what the client asked.
    """
    del special_use  # the answer is the same either way; see above
    attributes = [] if name in folders else ["\\Noselect"]
    prefix = name + HIERARCHY_DELIMITER
    has_children = any(folder.startswith(prefix) for folder in folders)
    attributes.append("\\HasChildren" if has_children else "\\HasNoChildren")
    if name in SPECIAL_USE:
        attributes.append(SPECIAL_USE[name])
    return attributes


# --------------------------------------------------------------------------- subscriptions

_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(path: Path) -> threading.Lock:
    """One lock per subscriptions file, shared by every object in this process."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(path, threading.Lock())


class Subscriptions:
    """The folders one account is subscribed to (RFC 3501 §6.3.6, §6.3.7, §6.3.9).

    Kept in ``ROOT/<address>/Maildir/subscriptions``: one store folder name per line,
    UTF-8. Until the file exists the account is subscribed to
    :data:`DEFAULT_SUBSCRIPTIONS`. Every change rewrites the file atomically (a
    temporary file, ``fsync``, ``os.replace``). A subscription does not need the
    folder to exist, and deleting a folder does not unsubscribe it: RFC 3501 §6.3.6
    says a server MUST NOT remove a name from the list on its own. ::

        subscriptions = Subscriptions(store, "alice@north.test")
        subscriptions.subscribe("Work")
        subscriptions.names()      # ['INBOX', 'Archive', 'Drafts', ..., 'Work']

    Names are store names: the core calls :func:`to_store` first.
    """

    def __init__(self, store: Store, address: str) -> None:
        self.path = store.maildir_path(address) / SUBSCRIPTIONS_FILE
        self._lock = _lock_for(self.path)

    def __repr__(self) -> str:
        return f"Subscriptions({str(self.path)!r})"

    def names(self) -> list[str]:
        """The subscribed names: INBOX first (if subscribed), then sorted."""
        with self._lock:
            return _ordered(self._read())

    def subscribe(self, name: str) -> None:
        """SUBSCRIBE (RFC 3501 §6.3.6). Subscribing twice is harmless."""
        folder = normalize_folder(name)
        with self._lock:
            names = self._read()
            if folder not in names:
                self._write(names | {folder})

    def unsubscribe(self, name: str) -> None:
        """UNSUBSCRIBE (RFC 3501 §6.3.7). A name that is not subscribed is no error."""
        folder = normalize_folder(name)
        with self._lock:
            names = self._read()
            if folder in names:
                self._write(names - {folder})

    def _read(self) -> set[str]:
        """The names in the file; lines the store would refuse (a hand edit) are skipped."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return set(DEFAULT_SUBSCRIPTIONS)
        names = set()
        for line in text.splitlines():
            try:
                names.add(normalize_folder(line))
            except InvalidName:
                continue
        return names

    def _write(self, names: set[str]) -> None:
        """Replace the file atomically: write a temporary file, fsync, rename over."""
        text = "".join(f"{name}\n" for name in _ordered(names))
        descriptor, temporary = tempfile.mkstemp(
            prefix=f"{SUBSCRIPTIONS_FILE}.tmp.", dir=self.path.parent
        )
        try:
            with open(descriptor, "w", encoding="utf-8", newline="\n") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        fsync_directory(self.path.parent)


def _ordered(names: Iterable[str]) -> list[str]:
    """INBOX first, then the others sorted: the order of ``Store.folders``."""
    return sorted(names, key=lambda name: (name != INBOX, name))
