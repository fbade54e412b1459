"""Tests of IMAP mailbox names (mailkit_edu.imapmailboxes): wire names, LIST, subscriptions.

Pure tests: no sockets and no lab; the subscription tests use a store in tmp_path.
"""

from __future__ import annotations

import ast
import threading
import time
from pathlib import Path

import pytest

from mailkit_edu import imapmailboxes
from mailkit_edu.imapmailboxes import (
    DEFAULT_SUBSCRIPTIONS,
    HIERARCHY_DELIMITER,
    MailboxNameError,
    Subscriptions,
    empty_pattern_reply,
    list_attributes,
    list_matches,
    to_store,
    to_wire,
)
from mailkit_edu.store import InvalidName, NoSuchAccount, Store

ALICE = "alice@north.test"

#: The folders of a fresh account plus a small hierarchy and two non-ASCII names.
FOLDERS = [
    "INBOX",
    "Archive",
    "Drafts",
    "Entwürfe",
    "Junk",
    "Sent",
    "Trash",
    "Work",
    "Work.Projects",
    "Work.Projects.2024",
    "Work.Reports",
    "日本語",
]


# --------------------------------------------------------------------------- the module


def test_public_api_is_pinned() -> None:
    """The names other modules may import are exactly these."""
    assert sorted(imapmailboxes.__all__) == sorted(
        [
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
    )


def test_imports_no_io_frameworks() -> None:
    """The module imports only the standard library, the store and the parser (no asyncio)."""
    tree = ast.parse(Path(imapmailboxes.__file__).read_text(encoding="utf-8"))
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & {"asyncio", "socket", "ssl", "ipywidgets"}
    assert {m for m in imported if m and m.startswith("mailkit_edu")} == {
        "mailkit_edu.imapparse",
        "mailkit_edu.store",
    }


def test_delimiter_is_the_stores() -> None:
    """IMAP shows the store's own delimiter, so names need no translation of levels."""
    assert HIERARCHY_DELIMITER == "."


def test_mailbox_name_error_is_a_value_error() -> None:
    """Callers that catch ValueError also catch bad mailbox names."""
    assert issubclass(MailboxNameError, ValueError)


# --------------------------------------------------------------------------- to_store / to_wire


@pytest.mark.parametrize(
    ("wire", "store"),
    [
        ("INBOX", "INBOX"),
        ("Work.Projects", "Work.Projects"),
        ("Entw&APw-rfe", "Entwürfe"),
        ("&ZeVnLIqe-", "日本語"),
        ("&-", "&"),
        ("R&-D", "R&D"),
        ("Work.Entw&APw-rfe", "Work.Entwürfe"),
    ],
)
def test_wire_and_store_names_round_trip(wire: str, store: str) -> None:
    """Modified UTF-7 on the wire decodes to the store name and encodes back unchanged."""
    assert to_store(wire) == store
    assert to_wire(store) == wire


@pytest.mark.parametrize("wire", ["inbox", "Inbox", "iNbOx"])
def test_inbox_in_any_case(wire: str) -> None:
    """RFC 3501 §5.1: "INBOX" is case-insensitive, also as the first level."""
    assert to_store(wire) == "INBOX"
    assert to_store(wire + ".Lists") == "INBOX.Lists"


def test_other_names_keep_their_case() -> None:
    """Names other than INBOX are case-sensitive."""
    assert to_store("work") == "work"
    assert to_store("Work") == "Work"


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ("../x", "no level may be empty"),
        ("..", "no level may be empty"),
        ("a..b", "no level may be empty"),
        (".hidden", "no level may be empty"),
        ("Work.", "no level may be empty"),
        ("", "it is empty"),
        ("a/b", "'/'"),
        ("a\\b", "'\\'"),
        ("a*", "'*'"),
        ("a%", "'%'"),
        ("&AAE-", "control characters"),  # U+0001 hidden in base64
        ("x" * 201, "longer than 200 bytes"),
    ],
)
def test_names_the_store_refuses(wire: str, reason: str) -> None:
    """Names the store would refuse raise MailboxNameError with a readable reason."""
    with pytest.raises(MailboxNameError, match="is not a valid mailbox name") as caught:
        to_store(wire)
    assert reason in str(caught.value)


@pytest.mark.parametrize(
    "wire",
    ["&Jjo", "&Jjo!-", "Entwürfe", "&AGE-", "&APw", "a\x01b"],
)
def test_invalid_modified_utf7(wire: str) -> None:
    """Unclosed or bad base64, raw 8-bit, base64-encoded ASCII and controls are refused."""
    with pytest.raises(MailboxNameError, match="is not a valid mailbox name"):
        to_store(wire)


def test_error_message_is_printable_ascii_and_short() -> None:
    """The error message can go on the wire as it is: 7-bit, printable, bounded in length."""
    with pytest.raises(MailboxNameError) as caught:
        to_store("日本語/" + "x" * 5000)
    message = str(caught.value)
    assert all(" " <= ch <= "~" for ch in message)
    assert len(message) < 300


# --------------------------------------------------------------------------- LIST


def test_star_matches_everything() -> None:
    """``*`` matches every name at every level; INBOX comes first, the rest sorted."""
    assert list_matches("", "*", FOLDERS) == ["INBOX", *sorted(FOLDERS[1:])]


def test_percent_stays_on_one_level() -> None:
    """``%`` does not match the delimiter, so only top-level names are listed."""
    assert list_matches("", "%", FOLDERS) == [
        "INBOX",
        "Archive",
        "Drafts",
        "Entwürfe",
        "Junk",
        "Sent",
        "Trash",
        "Work",
        "日本語",
    ]


def test_pattern_with_a_level() -> None:
    """``Work.%`` lists the children of Work, not Work itself or its grandchildren."""
    assert list_matches("", "Work.%", FOLDERS) == ["Work.Projects", "Work.Reports"]
    assert list_matches("", "Work.*", FOLDERS) == [
        "Work.Projects",
        "Work.Projects.2024",
        "Work.Reports",
    ]


def test_reference_is_joined_to_the_pattern() -> None:
    """RFC 3501 §6.3.8: LIST "Work." "%" is LIST "" "Work.%"."""
    assert list_matches("Work.", "%", FOLDERS) == ["Work.Projects", "Work.Reports"]
    assert list_matches("Work.", "Projects", FOLDERS) == ["Work.Projects"]


def test_wildcards_in_the_middle() -> None:
    """Wildcards work anywhere in a pattern, not only at the end."""
    assert list_matches("", "W%.P*", FOLDERS) == ["Work.Projects", "Work.Projects.2024"]
    assert list_matches("", "*s", FOLDERS) == ["Drafts", "Work.Projects", "Work.Reports"]
    assert list_matches("", "%r%", FOLDERS) == ["Archive", "Drafts", "Entwürfe", "Trash", "Work"]


@pytest.mark.parametrize("pattern", ["inbox", "INBOX", "Inbox", "inBOX"])
def test_inbox_pattern_in_any_case(pattern: str) -> None:
    """The pattern "inbox" in any case lists INBOX, spelled "INBOX"."""
    assert list_matches("", pattern, FOLDERS) == ["INBOX"]


def test_inbox_prefix_in_any_case() -> None:
    """A leading "inbox" level in any case means INBOX, also before a wildcard."""
    folders = ["INBOX", "INBOX.Lists", "INBOX.Lists.python"]
    assert list_matches("", "inbox.%", folders) == ["INBOX.Lists"]
    assert list_matches("inbox.", "*", folders) == ["INBOX.Lists", "INBOX.Lists.python"]
    assert list_matches("", "inbox*", folders) == folders


def test_other_names_match_case_sensitively() -> None:
    """Names other than INBOX are compared case-sensitively."""
    assert list_matches("", "work", FOLDERS) == []
    assert list_matches("", "Work", FOLDERS) == ["Work"]
    assert list_matches("", "inb*", FOLDERS) == []  # "inb" is not a whole level


def test_no_match() -> None:
    """A pattern that matches nothing gives an empty list (the core answers only OK)."""
    assert list_matches("", "Nope", FOLDERS) == []
    assert list_matches("Nope.", "%", FOLDERS) == []


def test_patterns_arrive_in_modified_utf7() -> None:
    """The pattern is a wire name; the matches are store names."""
    assert list_matches("", "Entw&APw-*", FOLDERS) == ["Entwürfe"]
    assert list_matches("", "&ZeVnLIqe-", FOLDERS) == ["日本語"]
    assert list_matches("", "R&-D", ["INBOX", "R&D"]) == ["R&D"]


def test_bad_modified_utf7_in_a_pattern() -> None:
    """A pattern that is not modified UTF-7 raises MailboxNameError."""
    with pytest.raises(MailboxNameError, match="not a valid mailbox pattern"):
        list_matches("", "&Jjo", FOLDERS)
    with pytest.raises(MailboxNameError):
        list_matches("&Jjo", "%", FOLDERS)


def test_empty_pattern_matches_nothing() -> None:
    """``LIST "" ""`` is not a search: list_matches returns nothing, see empty_pattern_reply."""
    assert list_matches("", "", FOLDERS) == []


def test_empty_pattern_reply() -> None:
    """``LIST "" ""`` is answered with ``* LIST (\\Noselect) "." ""``."""
    assert empty_pattern_reply() == (["\\Noselect"], "")


def test_missing_parent_is_listed() -> None:
    """A folder whose parent was deleted still shows the parent, for the core to mark \\Noselect."""
    folders = ["INBOX", "Work.Projects"]
    assert list_matches("", "%", folders) == ["INBOX", "Work"]
    assert list_matches("", "*", folders) == ["INBOX", "Work", "Work.Projects"]
    assert list_attributes("Work", folders, special_use=False) == ["\\Noselect", "\\HasChildren"]


def test_many_wildcards_stay_fast() -> None:
    """A hostile pattern full of wildcards cannot make matching slow (no backtracking)."""
    folders = ["INBOX", "a" * 190, "a." * 90 + "a"]
    pattern = "*a%" * 2000 + "b"
    started = time.perf_counter()
    assert list_matches("", pattern, folders) == []
    assert list_matches("", "*a" * 150 + "*", folders) == ["a" * 190]
    assert time.perf_counter() - started < 1.0


# --------------------------------------------------------------------------- attributes


def test_attributes_with_and_without_children() -> None:
    """RFC 3348: a folder with sub-folders has \\HasChildren, the others \\HasNoChildren."""
    assert list_attributes("Work", FOLDERS, special_use=False) == ["\\HasChildren"]
    assert list_attributes("Work.Projects", FOLDERS, special_use=False) == ["\\HasChildren"]
    assert list_attributes("Work.Reports", FOLDERS, special_use=False) == ["\\HasNoChildren"]
    assert list_attributes("INBOX", FOLDERS, special_use=False) == ["\\HasNoChildren"]


def test_a_name_that_only_starts_alike_is_no_child() -> None:
    """ "Workshop" is not a child of "Work": a child starts with "Work."."""
    assert list_attributes("Work", ["INBOX", "Work", "Workshop"], special_use=False) == [
        "\\HasNoChildren"
    ]


@pytest.mark.parametrize("special_use", [True, False])
@pytest.mark.parametrize(
    ("name", "attribute"),
    [
        ("Sent", "\\Sent"),
        ("Drafts", "\\Drafts"),
        ("Trash", "\\Trash"),
        ("Junk", "\\Junk"),
        ("Archive", "\\Archive"),
    ],
)
def test_special_use_attributes_always(name: str, attribute: str, special_use: bool) -> None:
    """RFC 6154 §2: the special-use attribute is sent whether or not the client asked."""
    assert list_attributes(name, FOLDERS, special_use=special_use) == [
        "\\HasNoChildren",
        attribute,
    ]


def test_special_use_only_at_the_top_level() -> None:
    """Only the store's special folders get RFC 6154 attributes, not "Work.Sent"."""
    folders = ["INBOX", "Sent", "Sent.2023", "Work", "Work.Sent"]
    assert list_attributes("Sent", folders, special_use=True) == ["\\HasChildren", "\\Sent"]
    assert list_attributes("Work.Sent", folders, special_use=True) == ["\\HasNoChildren"]


# --------------------------------------------------------------------------- subscriptions


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A store with Alice's account (INBOX and the special-use folders)."""
    store = Store(tmp_path / "mail")
    store.add_account(ALICE)
    return store


def test_new_account_is_subscribed_to_inbox_and_special_folders(store: Store) -> None:
    """Without a file the defaults apply, and reading them writes nothing."""
    subscriptions = Subscriptions(store, ALICE)
    assert subscriptions.names() == ["INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash"]
    assert set(DEFAULT_SUBSCRIPTIONS) == set(subscriptions.names())
    assert not subscriptions.path.exists()


def test_file_is_beside_the_inbox(store: Store) -> None:
    """The file is ROOT/<address>/Maildir/subscriptions, one name per line, like Dovecot."""
    subscriptions = Subscriptions(store, ALICE)
    subscriptions.subscribe("Entwürfe")
    assert subscriptions.path == store.root / ALICE / "Maildir" / "subscriptions"
    lines = subscriptions.path.read_text(encoding="utf-8").splitlines()
    assert lines == ["INBOX", "Archive", "Drafts", "Entwürfe", "Junk", "Sent", "Trash"]


def test_subscriptions_persist_across_objects(store: Store) -> None:
    """A new object (a new session, a restarted lab) sees the changes of the old one."""
    first = Subscriptions(store, ALICE)
    first.subscribe("Work.Projects")
    first.unsubscribe("Junk")
    again = Subscriptions(Store(store.root), ALICE)
    assert again.names() == ["INBOX", "Archive", "Drafts", "Sent", "Trash", "Work.Projects"]


def test_subscribing_twice_is_harmless(store: Store) -> None:
    """SUBSCRIBE of a subscribed name leaves one entry."""
    subscriptions = Subscriptions(store, ALICE)
    subscriptions.subscribe("Work")
    subscriptions.subscribe("Work")
    assert subscriptions.names().count("Work") == 1


def test_unsubscribing_a_name_not_subscribed_is_no_error(store: Store) -> None:
    """UNSUBSCRIBE of a name that is not subscribed succeeds and changes nothing."""
    subscriptions = Subscriptions(store, ALICE)
    subscriptions.unsubscribe("Nope")
    assert subscriptions.names() == list(Subscriptions(store, ALICE).names())
    assert "Nope" not in subscriptions.names()


def test_inbox_can_be_unsubscribed_in_any_case(store: Store) -> None:
    """Names go through the store's spelling, so "inbox" unsubscribes INBOX."""
    subscriptions = Subscriptions(store, ALICE)
    subscriptions.unsubscribe("inbox")
    assert "INBOX" not in subscriptions.names()
    subscriptions.subscribe("Inbox")
    assert subscriptions.names()[0] == "INBOX"


def test_folder_need_not_exist(store: Store) -> None:
    """RFC 3501 §6.3.6: a name can be subscribed whether or not the folder exists."""
    subscriptions = Subscriptions(store, ALICE)
    subscriptions.subscribe("Later")
    assert "Later" in subscriptions.names()


def test_invalid_names_are_refused(store: Store) -> None:
    """The store's name rules apply to subscriptions too."""
    subscriptions = Subscriptions(store, ALICE)
    for bad in ("../x", "a/b", "", "a..b"):
        with pytest.raises(InvalidName):
            subscriptions.subscribe(bad)


def test_unknown_account(store: Store) -> None:
    """Subscriptions belong to an existing account."""
    with pytest.raises(NoSuchAccount):
        Subscriptions(store, "nobody@north.test")


def test_hand_edited_file_is_read_leniently(store: Store) -> None:
    """Blank or invalid lines that a student typed are skipped, and inbox is INBOX."""
    subscriptions = Subscriptions(store, ALICE)
    subscriptions.path.write_text("inbox\n\n../etc\nWork\nWork\n", encoding="utf-8")
    assert subscriptions.names() == ["INBOX", "Work"]


def test_rewrite_leaves_no_temporary_files(store: Store) -> None:
    """The atomic rewrite renames its temporary file over the old one."""
    subscriptions = Subscriptions(store, ALICE)
    subscriptions.subscribe("A")
    subscriptions.unsubscribe("A")
    maildir = store.root / ALICE / "Maildir"
    assert not list(maildir.glob("subscriptions.tmp.*"))


def test_concurrent_subscribes_lose_nothing(store: Store) -> None:
    """Threads with separate objects share one lock per file, so no update is lost."""

    def subscribe(number: int) -> None:
        Subscriptions(store, ALICE).subscribe(f"F{number}")

    threads = [threading.Thread(target=subscribe, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    names = Subscriptions(store, ALICE).names()
    assert {f"F{n}" for n in range(20)} <= set(names)


def test_lsub_uses_list_matches(store: Store) -> None:
    """LSUB is LIST over the subscriptions; an unsubscribed parent is listed as \\Noselect."""
    subscriptions = Subscriptions(store, ALICE)
    subscriptions.subscribe("News.comp.mail")
    names = subscriptions.names()
    assert list_matches("", "News.%", names) == ["News.comp"]
    assert list_attributes("News.comp", names, special_use=False) == [
        "\\Noselect",
        "\\HasChildren",
    ]
