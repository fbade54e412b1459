"""Tests of the mail store (mailkit_edu.store): Maildir layout, UIDs, flags, folders, safety.

Pure tests: no sockets, no servers. Each test uses its own ``tmp_path``.
"""

from __future__ import annotations

import os
import re
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from mailkit_edu import store as store_module
from mailkit_edu.store import (
    INBOX,
    MAX_KEYWORDS,
    SPECIAL_USE,
    FolderExists,
    InvalidName,
    NoSuchAccount,
    NoSuchFolder,
    NoSuchMessage,
    Store,
    StoreError,
    TooManyKeywords,
)

ALICE = "alice@north.test"
BOB = "bob@south.test"


def make_message(subject: str = "Hello", body: str = "Hi there.") -> bytes:
    """A small RFC 5322 message with CRLF line ends, as SMTP DATA hands it over."""
    return (
        f"From: Bob <{BOB}>\r\nTo: Alice <{ALICE}>\r\nSubject: {subject}\r\n"
        f"Date: Mon, 06 May 2024 10:00:00 +0000\r\n\r\n{body}\r\n"
    ).encode()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    mail = Store(tmp_path / "store")
    mail.add_account(ALICE)
    mail.add_account(BOB)
    return mail


def maildir(store: Store, address: str = ALICE) -> Path:
    return store.root / address / "Maildir"


# --------------------------------------------------------------------------- delivery


def test_delivery_lands_in_new_with_exact_bytes_after_fsync_of_file_and_directory(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deliver() puts the exact bytes in new/ and fsyncs the file, then new/, before returning."""
    real_fsync = os.fsync
    synced: list[int] = []

    def recording_fsync(descriptor: int) -> None:
        synced.append(os.fstat(descriptor).st_ino)
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    message = make_message() + b"raw \x00 and \xff bytes, kept as they are\r\n"
    info = store.deliver(ALICE, message)

    assert info.path.parent == maildir(store) / "new"
    assert info.path.read_bytes() == message
    assert info.size == len(message) and info.folder == INBOX and info.flags == frozenset()
    assert list((maildir(store) / "tmp").iterdir()) == []
    file_inode = info.path.stat().st_ino
    dir_inode = info.path.parent.stat().st_ino
    assert file_inode in synced and dir_inode in synced
    assert synced.index(file_inode) < synced.index(dir_inode)


def test_unique_name_follows_the_maildir_pattern(store: Store) -> None:
    """A delivered file is named <time>.M<usec>P<pid>Q<n>.<host>,S=<size> with no '/' or ':'."""
    message = make_message()
    info = store.deliver(ALICE, message)
    assert re.fullmatch(r"\d+\.M\d+P\d+Q\d+\.[A-Za-z0-9._-]+,S=\d+", info.key)
    assert info.key.endswith(f",S={len(message)}")
    assert info.path.name == info.key


def test_delivery_with_flags_and_internaldate_lands_in_cur(store: Store) -> None:
    """deliver() with flags writes cur/<key>:2,<letters> and sets the mtime to internaldate."""
    when = 1_000_000_000.5
    info = store.deliver(
        ALICE, make_message(), flags=["\\Seen", "\\Flagged"], internaldate=when, folder="Sent"
    )
    assert info.path.parent == maildir(store) / ".Sent" / "cur"
    assert info.path.name == f"{info.key}:2,FS"
    assert info.flags == {"\\Seen", "\\Flagged"}
    assert info.internaldate == pytest.approx(when) and info.path.stat().st_mtime == pytest.approx(
        when
    )


def test_flags_must_be_a_collection_not_a_string(store: Store) -> None:
    """Passing one flag as a bare string is a TypeError, not nine one-letter keywords."""
    with pytest.raises(TypeError):
        store.deliver(ALICE, make_message(), flags="\\Seen")


# --------------------------------------------------------------------------- UIDs


def test_uids_follow_delivery_order_and_survive_a_fresh_store(store: Store) -> None:
    """UIDs grow in delivery order, and a new Store on the same root sees the same UIDs."""
    delivered = [store.deliver(ALICE, make_message(f"n{n}")) for n in range(5)]
    assert [info.uid for info in delivered] == [1, 2, 3, 4, 5]
    store.set_flags(ALICE, INBOX, 3, {"\\Seen"})

    again = Store(store.root)
    listed = again.messages(ALICE)
    assert [(m.uid, m.key) for m in listed] == [(d.uid, d.key) for d in delivered]
    assert again.read(ALICE, INBOX, 4) == make_message("n3")
    assert again.get(ALICE, INBOX, 3).flags == {"\\Seen"}


def test_uidnext_survives_expunge_of_the_newest_message_and_a_restart(store: Store) -> None:
    """After the newest message is expunged, UIDNEXT stays and its UID is never reused."""
    for n in range(3):
        store.deliver(ALICE, make_message(f"n{n}"))
    assert store.expunge(ALICE, INBOX, [3]) == [3]
    assert store.uidnext(ALICE, INBOX) == 4

    again = Store(store.root)
    assert again.uidnext(ALICE, INBOX) == 4
    assert again.deliver(ALICE, make_message()).uid == 4
    assert [m.uid for m in again.messages(ALICE)] == [1, 2, 4]


def test_expunge_returns_only_removed_uids_and_deletes_the_files(store: Store) -> None:
    """expunge() deletes the files of existing UIDs, skips unknown ones and reports what it did."""
    infos = [store.deliver(ALICE, make_message()) for _ in range(3)]
    assert store.expunge(ALICE, INBOX, [2, 1, 99, 2]) == [1, 2]
    assert not infos[0].path.exists() and not infos[1].path.exists()
    assert [m.uid for m in store.messages(ALICE)] == [3]
    with pytest.raises(NoSuchMessage, match="UID 1"):
        store.read(ALICE, INBOX, 1)


def test_uidvalidity_is_persisted_and_grows_for_a_recreated_folder(store: Store) -> None:
    """UIDVALIDITY survives a restart; a folder deleted and created again gets a larger one."""
    inbox = store.uidvalidity(ALICE, INBOX)
    assert inbox > 0 and Store(store.root).uidvalidity(ALICE, INBOX) == inbox

    store.create_folder(ALICE, "Work")
    first = store.uidvalidity(ALICE, "Work")
    store.delete_folder(ALICE, "Work")
    store.create_folder(ALICE, "Work")
    assert store.uidvalidity(ALICE, "Work") > first


def test_uid_list_file_has_the_documented_format(store: Store) -> None:
    """mailkit-uidlist is a 'V<uidvalidity> N<uidnext>' line, then one '<uid> <key>' line each."""
    infos = [store.deliver(ALICE, make_message()) for _ in range(2)]
    lines = (maildir(store) / "mailkit-uidlist").read_text().splitlines()
    assert re.fullmatch(rf"V{store.uidvalidity(ALICE, INBOX)} N\d+", lines[0])
    assert lines[1:] == [f"{info.uid} {info.key}" for info in infos]


def test_a_file_dropped_into_new_by_hand_gets_the_next_uid(store: Store) -> None:
    """A file copied into new/ by hand is found and numbered after the delivered ones."""
    store.deliver(ALICE, make_message())
    store.deliver(ALICE, make_message())
    handmade = make_message("by hand")
    (maildir(store) / "new" / "0000000001.handmade").write_bytes(handmade)
    (maildir(store) / "new" / "0000000002.handmade,S=3").write_bytes(b"abc")

    listed = store.messages(ALICE)
    assert [m.uid for m in listed] == [1, 2, 3, 4]
    assert (listed[2].key, listed[2].size) == ("0000000001.handmade", len(handmade))
    assert store.read(ALICE, INBOX, 3) == handmade
    assert listed[3].size == 3
    assert store.uidnext(ALICE, INBOX) == 5


def test_files_removed_by_hand_drop_out_of_the_uid_list(store: Store) -> None:
    """A message file deleted outside the store disappears from messages() and the uid list."""
    first = store.deliver(ALICE, make_message())
    store.deliver(ALICE, make_message())
    first.path.unlink()
    assert [m.uid for m in store.messages(ALICE)] == [2]
    assert first.key not in (maildir(store) / "mailkit-uidlist").read_text()
    assert store.uidnext(ALICE, INBOX) == 3


def test_a_rename_by_another_mail_client_keeps_the_uid(store: Store) -> None:
    """When another program moves a file new/ -> cur/ to mark it seen, its UID stays."""
    info = store.deliver(ALICE, make_message("renamed"))
    os.rename(info.path, maildir(store) / "cur" / f"{info.key}:2,S")
    assert store.read(ALICE, INBOX, info.uid) == make_message("renamed")
    assert store.get(ALICE, INBOX, info.uid).flags == {"\\Seen"}


def test_a_lost_uid_list_gives_a_new_uidvalidity(store: Store) -> None:
    """If the uid list is deleted, the folder gets a larger UIDVALIDITY and fresh UIDs."""
    store.deliver(ALICE, make_message())
    before = store.uidvalidity(ALICE, INBOX)
    (maildir(store) / "mailkit-uidlist").unlink()
    assert store.uidvalidity(ALICE, INBOX) > before
    assert [m.uid for m in store.messages(ALICE)] == [1]


# --------------------------------------------------------------------------- flags


def test_set_flags_moves_to_cur_with_ascii_sorted_letters(store: Store) -> None:
    """set_flags() renames new/<key> to cur/<key>:2,<letters>, letters in ASCII order."""
    info = store.deliver(ALICE, make_message())
    every = ["\\Seen", "\\Answered", "\\Draft", "\\Flagged", "\\Deleted", "$Forwarded"]
    flagged = store.set_flags(ALICE, INBOX, info.uid, every)
    assert flagged.path == maildir(store) / "cur" / f"{info.key}:2,DFPRST"
    assert flagged.flags == set(every) and not info.path.exists()

    cleared = store.set_flags(ALICE, INBOX, info.uid, [])
    assert cleared.path.name == f"{info.key}:2," and cleared.flags == frozenset()
    assert store.get(ALICE, INBOX, info.uid) == cleared


def test_system_flags_are_case_insensitive_and_recent_is_refused(store: Store) -> None:
    """'\\seen' means \\Seen, while \\Recent (session state) and unknown \\flags are refused."""
    info = store.deliver(ALICE, make_message())
    assert store.set_flags(ALICE, INBOX, info.uid, ["\\SEEN", "$forwarded"]).flags == {
        "\\Seen",
        "$Forwarded",
    }
    for flag in ("\\Recent", "\\Important"):
        with pytest.raises(InvalidName, match="cannot be stored"):
            store.set_flags(ALICE, INBOX, info.uid, [flag])


def test_add_and_remove_flags_change_only_the_named_flags(store: Store) -> None:
    """add_flags() and remove_flags() are IMAP's +FLAGS and -FLAGS."""
    info = store.deliver(ALICE, make_message(), flags=["\\Seen"])
    assert store.add_flags(ALICE, INBOX, info.uid, ["\\Flagged", "Later"]).flags == {
        "\\Seen",
        "\\Flagged",
        "Later",
    }
    removed = store.remove_flags(ALICE, INBOX, info.uid, ["\\seen", "later", "NeverUsed"])
    assert removed.flags == {"\\Flagged"}
    assert removed.path.name == f"{info.key}:2,F"


def test_keywords_round_trip_through_the_keywords_file(store: Store) -> None:
    """Keywords get letters a, b, ... in mailkit-keywords and read back in a fresh Store."""
    info = store.deliver(ALICE, make_message(), flags=["$Junk", "Project-X", "\\Seen"])
    assert info.path.name.endswith(":2,Sab")
    keywords = (maildir(store) / "mailkit-keywords").read_text().splitlines()
    assert keywords == ["a $Junk", "b Project-X"]

    # Case-insensitive: "$junk" reuses letter a, in another folder too (letters are per account).
    other = store.deliver(ALICE, make_message(), flags=["$junk"], folder="Junk")
    assert other.path.name.endswith(":2,a") and other.flags == {"$Junk"}

    again = Store(store.root)
    assert again.get(ALICE, INBOX, info.uid).flags == {"$Junk", "Project-X", "\\Seen"}


def test_at_most_26_keywords_per_account(store: Store) -> None:
    """The 27th keyword raises TooManyKeywords (a StoreError): Maildir has 26 letters."""
    info = store.deliver(ALICE, make_message())
    names = [f"k{n}" for n in range(MAX_KEYWORDS)]
    assert len(store.set_flags(ALICE, INBOX, info.uid, names).flags) == MAX_KEYWORDS
    with pytest.raises(TooManyKeywords, match="26"):
        store.add_flags(ALICE, INBOX, info.uid, ["one-too-many"])
    assert issubclass(TooManyKeywords, StoreError)


@pytest.mark.parametrize("keyword", ["two words", "(paren", "brack]", 'quo"te', "", "ünï", "a*"])
def test_keywords_must_be_imap_atoms(store: Store, keyword: str) -> None:
    """A keyword that is not an IMAP atom raises InvalidName."""
    info = store.deliver(ALICE, make_message())
    with pytest.raises(InvalidName):
        store.set_flags(ALICE, INBOX, info.uid, [keyword])


# --------------------------------------------------------------------------- copy and move


def test_copy_returns_a_uid_map_and_keeps_bytes_flags_and_date(store: Store) -> None:
    """copy() maps old UID to new UID (for COPYUID) and keeps bytes, flags and internal date."""
    plain = store.deliver(ALICE, make_message("plain"), internaldate=1_600_000_000)
    flagged = store.deliver(ALICE, make_message("flagged"), flags=["\\Seen", "$Junk"])
    store.deliver(ALICE, make_message("third"), folder="Trash")

    mapping = store.copy(ALICE, INBOX, [flagged.uid, plain.uid, 42], "Trash")
    assert mapping == {plain.uid: 2, flagged.uid: 3}
    copied = store.get(ALICE, "Trash", 3)
    assert copied.flags == {"\\Seen", "$Junk"} and copied.path.parent.name == "cur"
    assert store.read(ALICE, "Trash", 3) == make_message("flagged")
    assert store.get(ALICE, "Trash", 2).internaldate == plain.internaldate
    assert store.get(ALICE, "Trash", 2).path.parent.name == "new"
    assert [m.uid for m in store.messages(ALICE)] == [1, 2]  # the originals stay


def test_move_returns_a_uid_map_keeps_flags_and_empties_the_source(store: Store) -> None:
    """move() renames the files into the target folder, keeps flags and reports new UIDs."""
    first = store.deliver(ALICE, make_message("one"), flags=["\\Flagged"])
    second = store.deliver(ALICE, make_message("two"))

    assert store.move(ALICE, INBOX, [first.uid, second.uid], "Archive") == {1: 1, 2: 2}
    assert store.messages(ALICE) == []
    moved = store.messages(ALICE, "Archive")
    assert [m.flags for m in moved] == [{"\\Flagged"}, frozenset()]
    assert store.read(ALICE, "Archive", 1) == make_message("one")
    assert not first.path.exists()
    assert store.uidnext(ALICE, INBOX) == 3  # the source's UIDs are not reused

    again = Store(store.root)
    assert [m.uid for m in again.messages(ALICE, "Archive")] == [1, 2]
    assert again.messages(ALICE) == []


def test_move_within_a_folder_moves_each_message_once(store: Store) -> None:
    """Moving UIDs 1 and 3 within INBOX when UIDNEXT is 3 moves the one message once."""
    store.deliver(ALICE, make_message("one"))
    store.deliver(ALICE, make_message("two"))
    store.expunge(ALICE, INBOX, [2])
    assert store.move(ALICE, INBOX, [1, 3], INBOX) == {1: 3}
    assert [m.uid for m in store.messages(ALICE)] == [3]
    assert store.read(ALICE, INBOX, 3) == make_message("one")


def test_copy_to_a_missing_folder_raises_no_such_folder(store: Store) -> None:
    """copy() and move() into a folder that does not exist raise NoSuchFolder and change nothing."""
    info = store.deliver(ALICE, make_message())
    for operation in (store.copy, store.move):
        with pytest.raises(NoSuchFolder, match="Nowhere"):
            operation(ALICE, INBOX, [info.uid], "Nowhere")
    assert [m.uid for m in store.messages(ALICE)] == [info.uid]


# --------------------------------------------------------------------------- folders


def test_add_account_creates_inbox_and_special_use_folders_idempotently(store: Store) -> None:
    """add_account() makes INBOX, Sent, Drafts, Trash, Junk and Archive; repeating is harmless."""
    assert store.folders(ALICE) == [INBOX, *sorted(SPECIAL_USE)]
    for name in SPECIAL_USE:
        folder = maildir(store) / f".{name}"
        assert all((folder / sub).is_dir() for sub in ("tmp", "new", "cur"))
        assert (folder / "maildirfolder").is_file()
    before = store.uidvalidity(ALICE, "Sent")
    store.add_account(ALICE.upper())
    assert store.uidvalidity(ALICE, "Sent") == before
    assert store.accounts() == [ALICE, BOB]
    assert store.has_account("Alice@North.Test") and not store.has_account("carol@north.test")


def test_create_rename_and_delete_folders(store: Store) -> None:
    """Folders map to .Name dirs; rename moves children and UIDs; delete leaves sub-folders."""
    store.create_folder(ALICE, "Work.Projects")
    assert (maildir(store) / ".Work.Projects" / "cur").is_dir()
    assert {"Work", "Work.Projects"} <= set(store.folders(ALICE))  # the parent is made too
    info = store.deliver(ALICE, make_message("plan"), folder="Work.Projects")
    validity = store.uidvalidity(ALICE, "Work.Projects")

    store.rename_folder(ALICE, "Work", "Play")
    assert "Work" not in store.folders(ALICE) and "Play.Projects" in store.folders(ALICE)
    assert store.read(ALICE, "Play.Projects", info.uid) == make_message("plan")
    assert store.uidvalidity(ALICE, "Play.Projects") == validity

    store.delete_folder(ALICE, "Play")
    assert "Play" not in store.folders(ALICE) and "Play.Projects" in store.folders(ALICE)
    store.delete_folder(ALICE, "Play.Projects")
    assert store.folders(ALICE) == [INBOX, *sorted(SPECIAL_USE)]
    assert not [p for p in maildir(store).iterdir() if p.name.startswith("mailkit-deleting")]
    with pytest.raises(NoSuchFolder):
        store.messages(ALICE, "Play.Projects")


def test_folder_errors_say_what_went_wrong(store: Store) -> None:
    """Creating a taken name, deleting a missing one, and touching INBOX raise the right errors."""
    store.create_folder(ALICE, "Work")
    with pytest.raises(FolderExists, match="Work"):
        store.create_folder(ALICE, "Work")
    with pytest.raises(FolderExists):
        store.create_folder(ALICE, "inbox")
    with pytest.raises(FolderExists):
        store.rename_folder(ALICE, "Work", "Sent")
    with pytest.raises(NoSuchFolder, match="Nope"):
        store.delete_folder(ALICE, "Nope")
    with pytest.raises(NoSuchFolder):
        store.rename_folder(ALICE, "Nope", "Other")
    with pytest.raises(InvalidName, match="INBOX"):
        store.delete_folder(ALICE, "Inbox")
    with pytest.raises(InvalidName, match="INBOX"):
        store.rename_folder(ALICE, INBOX, "Old")
    with pytest.raises(InvalidName, match="inside itself"):
        store.rename_folder(ALICE, "Work", "Work.Sub")


def test_inbox_is_matched_in_any_case(store: Store) -> None:
    """'inbox' and 'Inbox' name the same folder as 'INBOX' (RFC 3501 section 5.1)."""
    info = store.deliver(ALICE, make_message(), folder="inbox")
    assert store.get(ALICE, "Inbox", info.uid) == store.get(ALICE, INBOX, info.uid)
    assert store.maildir_path(ALICE, "iNbOx") == maildir(store)


# --------------------------------------------------------------------------- safety


@pytest.mark.parametrize(
    "address",
    [
        "",
        "alice",
        "@north.test",
        "alice@",
        "al ice@north.test",
        "../x@north.test",
        "a/b@north.test",
        "..@north.test",
        ".alice@north.test",
        "alice@north..test",
        "alice@-north.test",
        "alice@north.test/..",
        "alice@north.test\x00",
        "\u212aate@north.test",  # KELVIN SIGN lowercases to "k": must not become kate
        "x" * 65 + "@north.test",
    ],
)
def test_invalid_addresses_raise_invalid_name(store: Store, address: str) -> None:
    """An address that is not local@domain with safe characters raises InvalidName."""
    with pytest.raises(InvalidName):
        store.add_account(address)
    with pytest.raises(InvalidName):
        store.deliver(address, make_message())
    assert not store.has_account(address)


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "a/b",
        ".hidden",
        "",
        "a\x00b",
        "..",
        "a..b",
        "trailing.",
        "back\\slash",
        "tab\tx",
        "*",
    ],
)
def test_invalid_folder_names_raise_invalid_name(store: Store, name: str) -> None:
    """A folder name that could escape the Maildir or confuse IMAP raises InvalidName."""
    with pytest.raises(InvalidName):
        store.create_folder(ALICE, name)
    with pytest.raises(InvalidName):
        store.deliver(ALICE, make_message(), folder=name)
    with pytest.raises(InvalidName):
        store.messages(ALICE, name)
    assert sorted(p.name for p in store.root.parent.iterdir()) == ["store"]


def test_one_account_cannot_reach_another_accounts_mail(store: Store) -> None:
    """UIDs are per account: Bob's UID 1 is Bob's message, and Alice's folders are not Bob's."""
    store.deliver(ALICE, make_message("for alice"))
    with pytest.raises(NoSuchMessage):
        store.read(BOB, INBOX, 1)
    store.deliver(BOB, make_message("for bob"))
    assert store.read(BOB, INBOX, 1) == make_message("for bob")
    store.create_folder(ALICE, "Private")
    with pytest.raises(NoSuchFolder, match=BOB):
        store.messages(BOB, "Private")
    for folder in store.folders(ALICE):
        assert store.maildir_path(ALICE, folder).is_relative_to(store.root / ALICE)


def test_unknown_account_raises_no_such_account(store: Store) -> None:
    """Using an address with no Maildir raises NoSuchAccount naming the address."""
    with pytest.raises(NoSuchAccount, match="carol@north.test"):
        store.deliver("Carol@north.test", make_message())
    with pytest.raises(NoSuchAccount):
        store.messages("carol@north.test")


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_directories_are_0700_and_files_0600(store: Store) -> None:
    """The store keeps mail private: directories mode 0700, files mode 0600."""
    store.deliver(ALICE, make_message(), flags=["$Junk"])
    for path in (store.root / ALICE).rglob("*"):
        expected = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


def test_every_error_is_a_store_error() -> None:
    """Callers can catch StoreError to handle every error the store raises on purpose."""
    for error in (NoSuchAccount, NoSuchFolder, NoSuchMessage, FolderExists, InvalidName):
        assert issubclass(error, StoreError)


def test_public_api_is_pinned() -> None:
    """The names other modules rely on are exported in __all__ and exist."""
    for name in ("Store", "MessageInfo", "SYSTEM_FLAGS", "StoreError", "InvalidName"):
        assert name in store_module.__all__
    assert all(hasattr(store_module, name) for name in store_module.__all__)
    assert store_module.SYSTEM_FLAGS == {
        "\\Draft": "D",
        "\\Flagged": "F",
        "$Forwarded": "P",
        "\\Answered": "R",
        "\\Seen": "S",
        "\\Deleted": "T",
    }


def test_the_store_imports_no_protocol_or_ui_module() -> None:
    """store.py imports neither asyncio, socket, ipywidgets nor other mailkit_edu modules."""
    source = Path(store_module.__file__).read_text(encoding="utf-8")
    imports = re.findall(r"^\s*(?:import|from)\s+([\w.]+)", source, flags=re.MULTILINE)
    roots = {name.split(".")[0] for name in imports}
    assert not roots & {"asyncio", "socket", "ipywidgets", "mailkit_edu"}


# --------------------------------------------------------------------------- the notebook table


def test_frame_has_the_documented_columns_and_decodes_encoded_words(store: Store) -> None:
    """frame() has one row per message in every folder, with RFC 2047 headers decoded."""
    message = (
        b"From: =?utf-8?q?J=C3=BCrgen?= <j@south.test>\r\n"
        b"To: alice@north.test\r\n"
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n aus Berlin\r\n"
        b"Date: Tue, 07 May 2024 09:30:00 +0200\r\n\r\nHallo\r\n"
    )
    store.deliver(ALICE, message, flags=["\\Flagged", "\\Seen"])
    store.deliver(ALICE, make_message("sent one"), folder="Sent")

    frame = store.frame(ALICE)
    assert list(frame.columns) == [
        "folder",
        "uid",
        "from",
        "to",
        "subject",
        "date",
        "size",
        "flags",
        "file",
    ]
    assert list(frame["folder"]) == [INBOX, "Sent"]
    row = frame.iloc[0]
    assert row["subject"] == "Grüße aus Berlin"
    assert row["from"] == "Jürgen <j@south.test>"
    assert row["date"] == "Tue, 07 May 2024 09:30:00 +0200"
    assert row["flags"] == "\\Seen \\Flagged"
    assert row["uid"] == 1 and row["size"] == len(message)
    assert Path(row["file"]).read_bytes() == message
    assert frame["uid"].dtype == "int64"


def test_frame_of_an_empty_account_has_the_columns(store: Store) -> None:
    """frame() of an account with no mail is an empty table with the same columns."""
    frame = store.frame(BOB)
    assert frame.empty and list(frame.columns) == list(store_module.FRAME_COLUMNS)


def test_frame_reads_only_the_header_block(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """frame() reads a message's headers, not its 1 MB body."""
    store.deliver(ALICE, make_message("big", body="x" * 1_000_000))
    bytes_read = []
    real_open = open

    class CountingFile:
        def __init__(self, file: BinaryIO) -> None:
            self.file = file

        def __enter__(self) -> CountingFile:
            return self

        def __exit__(self, *exc: object) -> None:
            self.file.close()

        def readline(self, size: int = -1) -> bytes:
            line = self.file.readline(size)
            bytes_read.append(len(line))
            return line

        def read(self, size: int = -1) -> bytes:
            data = self.file.read(size)
            bytes_read.append(len(data))
            return data

    def counting_open(*args: Any, **kwargs: Any) -> CountingFile:
        return CountingFile(real_open(*args, **kwargs))

    monkeypatch.setattr(store_module, "open", counting_open, raising=False)
    assert store.frame(ALICE)["subject"].tolist() == ["big"]
    assert 0 < sum(bytes_read) < 1000


# --------------------------------------------------------------------------- threads and speed


def test_eight_threads_delivering_fifty_each_get_400_distinct_uids(store: Store) -> None:
    """400 parallel deliveries (while another thread reads) give UIDs 1..400 and 400 files."""
    start = threading.Barrier(9)
    results: list[int] = []
    errors: list[BaseException] = []

    def deliver_fifty(thread: int) -> None:
        try:
            start.wait()
            for n in range(50):
                results.append(store.deliver(ALICE, make_message(f"t{thread} n{n}")).uid)
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    def read_meanwhile() -> None:
        try:
            start.wait()
            for _ in range(20):
                store.frame(ALICE)
                store.messages(ALICE)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=deliver_fifty, args=(t,)) for t in range(8)]
    threads.append(threading.Thread(target=read_meanwhile))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(results) == list(range(1, 401))
    assert len(list((maildir(store) / "new").iterdir())) == 400
    listed = store.messages(ALICE)
    assert [m.uid for m in listed] == list(range(1, 401))
    assert [(m.uid, m.key) for m in Store(store.root).messages(ALICE)] == [
        (m.uid, m.key) for m in listed
    ]


def test_messages_of_5000_is_served_from_the_cache_when_nothing_changed(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second messages() on an unchanged folder of 5,000 lists no directory and stats no file."""
    new = maildir(store) / "new"
    body = make_message()
    for n in range(5000):
        (new / f"{1_700_000_000 + n}.M0P1Q{n}.test,S={len(body)}").write_bytes(body)
    # The cache trusts a listing only if the directories were older than a moment
    # (see MTIME_GRACE_SECONDS). Make them an hour old instead of waiting.
    an_hour_ago = time.time() - 3600
    for sub in ("new", "cur"):
        os.utime(maildir(store) / sub, (an_hour_ago, an_hour_ago))
    assert len(store.messages(ALICE)) == 5000

    calls = {"scandir": 0, "listdir": 0, "stat": 0}

    def counting(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return real(*args, **kwargs)

        return wrapper

    for name in calls:
        monkeypatch.setattr(os, name, counting(name, getattr(os, name)))
    listed = store.messages(ALICE)
    assert len(listed) == 5000 and listed[-1].uid == 5000
    assert calls["scandir"] == 0 and calls["listdir"] == 0
    assert calls["stat"] < 10  # a few directory stats, not one per file

    (new / "9999999999.late").write_bytes(body)  # a change is still noticed
    assert store.messages(ALICE)[-1].uid == 5001
    assert calls["scandir"] > 0


def test_add_flags_many_marks_every_message_and_skips_missing_uids(tmp_path: Path) -> None:
    """add_flags_many flags several messages at once and ignores a UID that is gone."""
    store = Store(tmp_path)
    store.add_account("bulk@north.test")
    uids = [store.deliver("bulk@north.test", b"Subject: %d\r\n\r\nx\r\n" % i).uid for i in range(3)]
    changed = store.add_flags_many("bulk@north.test", "INBOX", [*uids, 999], ["\\Seen"])
    assert [info.uid for info in changed] == uids
    assert all("\\Seen" in info.flags for info in store.messages("bulk@north.test"))


# --------------------------------------------------------------------------- versions and watchers


def test_version_changes_with_every_change_and_only_then(store: Store) -> None:
    """IMAP asks the version before each command: it must move on every change, and
    stay put when nothing changed (or every command would re-read a 20k folder)."""
    seen = [store.version(ALICE)]
    assert store.version(ALICE) == seen[-1]
    info = store.deliver(ALICE, make_message())
    seen.append(store.version(ALICE))
    store.add_flags(ALICE, "INBOX", info.uid, {"\\Seen"})
    seen.append(store.version(ALICE))
    store.add_flags(ALICE, "INBOX", info.uid, {"\\Seen"})  # already there: no change
    assert store.version(ALICE) == seen[-1]
    store.expunge(ALICE, "INBOX", [info.uid])
    seen.append(store.version(ALICE))
    assert len(set(seen)) == len(seen)
    version, messages = store.snapshot(ALICE)
    assert version == seen[-1] and messages == []


def test_version_notices_a_file_moved_by_hand(store: Store) -> None:
    info = store.deliver(ALICE, make_message())
    before = store.version(ALICE)
    target = info.path.parent.parent / "cur" / f"{info.path.name}:2,F"
    os.rename(info.path, target)
    version, messages = store.snapshot(ALICE)
    assert version != before
    assert messages[0].flags == frozenset({"\\Flagged"})


def test_watchers_hear_of_each_change_with_its_folder(store: Store) -> None:
    heard: list[tuple[str, str]] = []
    store.watchers.append(lambda address, folder: heard.append((address, folder)))
    info = store.deliver(ALICE, make_message())
    assert heard == [(ALICE, "INBOX")]
    store.set_flags(ALICE, "INBOX", info.uid, {"\\Flagged"})
    store.copy(ALICE, "INBOX", [info.uid], "Archive")
    store.move(ALICE, "INBOX", [info.uid], "Trash")
    assert heard[1:] == [
        (ALICE, "INBOX"),
        (ALICE, "Archive"),
        (ALICE, "INBOX"),
        (ALICE, "Trash"),
    ]
    heard.clear()
    store.expunge(ALICE, "Trash", [999])  # nothing there: nothing to tell
    assert heard == []


def test_a_failing_watcher_does_not_undo_the_delivery(store: Store) -> None:
    def broken(address: str, folder: str) -> None:
        raise RuntimeError("bug in a watcher")

    store.watchers.append(broken)
    info = store.deliver(ALICE, make_message())
    assert store.read(ALICE, "INBOX", info.uid) == make_message()
