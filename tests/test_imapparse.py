"""Tests of the IMAP command parser (mailkit_edu.imapparse): command bytes in, typed objects out.

Pure tests: no sockets, no lab, no files. Property tests use hypothesis, kept small.
"""

from __future__ import annotations

import ast
import dataclasses
import logging
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailkit_edu import imapparse
from mailkit_edu.imapparse import (
    MAX_LINE,
    MAX_LITERAL,
    MAX_NESTING,
    Append,
    Authenticate,
    Capability,
    Check,
    Close,
    Command,
    Copy,
    Create,
    Delete,
    Enable,
    Examine,
    Expunge,
    Fetch,
    FetchAttribute,
    Idle,
    List,
    Literal,
    Login,
    Logout,
    Lsub,
    Move,
    Namespace,
    Noop,
    ParseError,
    Rename,
    Search,
    SearchKey,
    Section,
    Select,
    SequenceSet,
    StartTLS,
    Status,
    Store,
    Subscribe,
    Unselect,
    Unsubscribe,
    UnsupportedCharset,
    command_tag,
    decode_mutf7,
    encode_mutf7,
    literal_at_end,
    parse_command,
)

FAST = settings(max_examples=200, deadline=None)


def parse(data: str | bytes) -> Command:
    return parse_command(data.encode() if isinstance(data, str) else data)


def error_of(data: str | bytes) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse(data)
    return info.value


def key(op: str, *args) -> SearchKey:
    return SearchKey(op, args)


def criteria(text: str) -> SearchKey:
    command = parse("s SEARCH " + text)
    assert isinstance(command, Search)
    return command.criteria


def attributes(text: str) -> tuple[FetchAttribute, ...]:
    command = parse("f FETCH 1 " + text)
    assert isinstance(command, Fetch)
    return command.attributes


# --------------------------------------------------------------------------- the module


def test_module_is_pure_standard_library():
    """imapparse imports only the standard library: no I/O modules, no other mailkit module."""
    tree = ast.parse(Path(imapparse.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, "imapparse must not import other mailkit_edu modules"
            imported.add((node.module or "").split(".")[0])
        elif isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
    assert not imported & {"asyncio", "socket", "ssl", "threading", "ipywidgets"}
    assert imported <= {"__future__", "base64", "binascii", "dataclasses", "datetime"} | {
        "logging",
        "re",
        "collections",
        "typing",
    }


def test_every_exported_name_exists():
    """Every name in __all__ is defined in the module."""
    for name in imapparse.__all__:
        assert hasattr(imapparse, name), name


def test_commands_are_frozen():
    """A parsed command cannot be changed afterwards (frozen dataclasses)."""
    command = parse("a1 SELECT INBOX")
    with pytest.raises(dataclasses.FrozenInstanceError):
        command.mailbox = "Other"  # type: ignore[misc]


# --------------------------------------------------------------------------- simple commands


@pytest.mark.parametrize(
    "cls",
    [Capability, Noop, Logout, StartTLS, Namespace, Check, Close, Unselect, Expunge, Idle],
)
def test_commands_without_arguments(cls):
    """Each argument-less command parses to its class, with the tag and the wire name."""
    command = parse(f"t1 {cls.name}")
    assert type(command) is cls
    assert command.tag == "t1"
    assert command.name == cls.name


@pytest.mark.parametrize("name", ["noop", "NoOp", "NOOP"])
def test_command_names_are_case_insensitive(name):
    """Command names are read in any case (RFC 3501 §9: the grammar is case-insensitive)."""
    assert isinstance(parse(f"a {name}"), Noop)


@pytest.mark.parametrize("tag", ["a1", "A001", "x.y-z]", "$tag!", "0"])
def test_tags_may_hold_astring_characters(tag):
    """A tag is any ASTRING-CHARs but "+", including "]" and punctuation."""
    assert parse(f"{tag} NOOP").tag == tag


@pytest.mark.parametrize("data", ["+a NOOP", "a+ NOOP", "* NOOP", "a(1 NOOP", 'a"1 NOOP'])
def test_invalid_tags_are_refused_without_a_tag(data):
    """A tag with "+", "*", "(" or a quote is invalid, so the answer is "* BAD"."""
    error = error_of(data)
    assert error.tag is None
    assert error.response().startswith("* BAD ")


@pytest.mark.parametrize("name", ["NOOP", "CAPABILITY", "CLOSE", "IDLE"])
def test_argument_less_commands_refuse_arguments(name):
    """NOOP x and the like are refused with the tag and the syntax line."""
    error = error_of(f"a7 {name} extra")
    assert error.tag == "a7"
    assert "too many arguments" in error.message


# --------------------------------------------------------------------------- strings, LOGIN


def test_login_with_atoms():
    """LOGIN reads two atoms as user name and password."""
    command = parse("a LOGIN alice@north.test s3cret")
    assert command == Login("a", "alice@north.test", "s3cret")


def test_login_with_quoted_strings_and_escapes():
    """Quoted strings keep spaces; \\\\ and \\" are the only escapes (RFC 3501 §4.3)."""
    command = parse(r'a LOGIN "alice" "pa ss\"wo\\rd"')
    assert command.userid == "alice"
    assert command.password == 'pa ss"wo\\rd'


def test_login_password_is_hidden_from_repr():
    """repr(Login) shows the user but not the password (so logs do not leak it)."""
    text = repr(parse("a LOGIN alice topsecret"))
    assert "alice" in text and "topsecret" not in text


def test_login_with_synchronizing_literals():
    """{n} literals carry strings with any characters, even CRLF (RFC 3501 §4.3)."""
    command = parse(b"a LOGIN {5}\r\nalice {8}\r\nab\r\ncd e")
    assert command == Login("a", "alice", "ab\r\ncd e")


def test_login_with_non_synchronizing_literals():
    """{n+} literals (RFC 7888 LITERAL+) parse like synchronizing ones."""
    assert parse(b"a LOGIN {5+}\r\nalice {6+}\r\nsecret") == Login("a", "alice", "secret")


def test_quoted_string_may_hold_utf8():
    """8-bit octets in a quoted string are fine when they are UTF-8."""
    assert parse('a LOGIN "jürgen" x'.encode()).userid == "jürgen"


def test_literal_may_be_empty():
    """{0} is an empty string."""
    assert parse(b'a LOGIN {0}\r\n ""') == Login("a", "", "")


# --------------------------------------------------------------------------- AUTHENTICATE, ENABLE


def test_authenticate_without_initial_response():
    """AUTHENTICATE PLAIN alone: the mechanism, upper-cased, and no initial response."""
    assert parse("a AUTHENTICATE plain") == Authenticate("a", "PLAIN", None)


def test_authenticate_with_initial_response():
    """RFC 4959: the initial response is kept as sent, base64 text in bytes."""
    command = parse("a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==")
    assert command.initial_response == b"AGFsaWNlAHNlY3JldA=="
    assert "AGFsaWNl" not in repr(command)


def test_authenticate_with_empty_initial_response():
    """RFC 4959 §3: "=" stands for an empty initial response."""
    assert parse("a AUTHENTICATE PLAIN =").initial_response == b"="


@pytest.mark.parametrize("response", ["abc", "ab=c", "a$bc", "===="])
def test_authenticate_refuses_bad_base64(response):
    """An initial response that is not base64 is refused."""
    assert "base64" in error_of(f"a AUTHENTICATE PLAIN {response}").message


def test_enable():
    """ENABLE takes one or more capability names, upper-cased (RFC 5161)."""
    assert parse("a ENABLE utf8=accept CONDSTORE") == Enable("a", ("UTF8=ACCEPT", "CONDSTORE"))
    assert "missing" in error_of("a ENABLE").message


# --------------------------------------------------------------------------- mailboxes


@pytest.mark.parametrize("cls", [Select, Examine, Create, Delete, Subscribe, Unsubscribe])
def test_mailbox_commands(cls):
    """Each one-mailbox command reads an atom, a quoted string or a literal."""
    assert parse(f"a {cls.name} Work") == cls("a", "Work")
    assert parse(f'a {cls.name.lower()} "Old Mail"') == cls("a", "Old Mail")
    assert parse(f"a {cls.name} {{4}}\r\nNews".encode()) == cls("a", "News")


@pytest.mark.parametrize("spelling", ["INBOX", "inbox", "InBoX", '"iNbOx"'])
def test_inbox_in_any_case_is_inbox(spelling):
    """RFC 3501 §5.1: INBOX is case-insensitive, so it always comes back as "INBOX"."""
    assert parse(f"a SELECT {spelling}").mailbox == "INBOX"


def test_other_mailbox_names_stay_as_sent():
    """Other names keep their case and stay in modified UTF-7; "]" is allowed unquoted."""
    assert parse("a SELECT Inbox.Work").mailbox == "Inbox.Work"
    assert parse("a CREATE Entw&APw-rfe").mailbox == "Entw&APw-rfe"
    assert parse("a CREATE [Gmail]/Sent").mailbox == "[Gmail]/Sent"


def test_rename():
    """RENAME reads the old and the new name."""
    assert parse('a RENAME "Old Stuff" Archive') == Rename("a", "Old Stuff", "Archive")


@pytest.mark.parametrize(
    ("data", "reference", "pattern"),
    [
        ('a LIST "" *', "", "*"),
        ('a LIST "" %', "", "%"),
        ("a LIST ~/Mail/ %/Work*", "~/Mail/", "%/Work*"),
        ('a LIST "" "Sent Items"', "", "Sent Items"),
        ("a LIST inbox [Gmail]/%", "INBOX", "[Gmail]/%"),
    ],
)
def test_list_with_wildcards(data, reference, pattern):
    """LIST reads a reference and a pattern, which may hold the wildcards * and %."""
    assert parse(data) == List("a", reference, pattern)


def test_list_with_special_use_options():
    """RFC 6154: the selection option and the return option SPECIAL-USE, in any case."""
    command = parse('a LIST (special-use) "" * RETURN (SPECIAL-USE children)')
    assert command.selection_options == ("SPECIAL-USE",)
    assert command.return_options == ("SPECIAL-USE", "CHILDREN")
    assert parse('a LIST "" % RETURN ()').return_options == ()


@pytest.mark.parametrize(
    "data",
    [
        'a LIST (BOGUS) "" *',
        'a LIST (RECURSIVEMATCH) "" *',
        'a LIST "" ("a" "b")',
        'a LIST "" * (SPECIAL-USE)',
        'a LIST "" * RETURN (STATUS)',
        'a LIST ""',
        "a LIST",
    ],
)
def test_list_errors(data):
    """Unknown options, RECURSIVEMATCH alone, several patterns, a missing RETURN or pattern."""
    assert error_of(data).tag == "a"


def test_lsub():
    """LSUB reads a reference and a pattern."""
    assert parse('a LSUB "" Work/%') == Lsub("a", "", "Work/%")


def test_status():
    """STATUS reads a mailbox and its items, upper-cased (RFC 3501 §6.3.10)."""
    command = parse("a STATUS inbox (messages RECENT uidnext UIDVALIDITY unseen)")
    assert command == Status(
        "a", "INBOX", ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN")
    )


@pytest.mark.parametrize("data", ["a STATUS INBOX ()", "a STATUS INBOX (SIZE)", "a STATUS INBOX"])
def test_status_errors(data):
    """STATUS needs at least one known item."""
    assert error_of(data).tag == "a"


# --------------------------------------------------------------------------- APPEND


def test_append_minimal():
    """APPEND mailbox {n}: no flags, no date, the message as octets."""
    command = parse(b"a APPEND Drafts {10}\r\nHello\r\nBye")
    assert command == Append("a", "Drafts", (), None, b"Hello\r\nBye")


def test_append_with_flags_date_and_literal():
    """APPEND with a flag list, a date-time with its zone and the message literal."""
    message = b"Subject: hi\r\n\r\nK\xc3\xb6ln\r\n"
    data = b'a APPEND "Sent" (\\Seen $Forwarded) "17-Jul-1996 02:44:25 -0700" {%d}\r\n%s' % (
        len(message),
        message,
    )
    command = parse(data)
    assert command.mailbox == "Sent"
    assert command.flags == ("\\Seen", "$Forwarded")
    assert command.date == datetime(1996, 7, 17, 2, 44, 25, tzinfo=timezone(-timedelta(hours=7)))
    assert command.message == message


def test_append_with_non_synchronizing_literal_and_space_padded_day():
    """APPEND accepts {n+} and the day written " 7" (date-day-fixed)."""
    command = parse(b'a APPEND INBOX " 7-Feb-2024 23:59:01 +0530" {3+}\r\nabc')
    assert command.date == datetime(2024, 2, 7, 23, 59, 1, tzinfo=timezone(timedelta(hours=5.5)))
    assert command.message == b"abc"
    assert command.flags == ()


def test_append_with_empty_flag_list():
    """An empty flag list () is allowed."""
    assert parse(b"a APPEND INBOX () {1}\r\nx").flags == ()


@pytest.mark.parametrize(
    "data",
    [
        b'a APPEND INBOX "hello"',
        b"a APPEND INBOX",
        b"a APPEND INBOX (\\Seen)",
        b'a APPEND INBOX "31-Feb-2024 10:00:00 +0000" {1}\r\nx',
        b'a APPEND INBOX "1-Foo-2024 10:00:00 +0000" {1}\r\nx',
        b'a APPEND INBOX "1-Feb-2024 25:00:00 +0000" {1}\r\nx',
        b'a APPEND INBOX "1-Feb-2024 10:00:00 +0099" {1}\r\nx',
        b'a APPEND INBOX "1-Feb-2024 10:00:00" {1}\r\nx',
        b"a APPEND INBOX (\\Recent) {1}\r\nx",
        b"a APPEND INBOX {1}\r\nx extra",
    ],
)
def test_append_errors(data):
    """APPEND refuses a quoted message, a missing literal, bad dates, \\Recent, extra text."""
    assert error_of(data).tag == "a"


# --------------------------------------------------------------------------- UID, COPY, MOVE


def test_expunge_and_uid_expunge():
    """EXPUNGE has no arguments; UID EXPUNGE (RFC 4315) has a UID set and uid=True."""
    assert parse("a EXPUNGE") == Expunge("a")
    command = parse("a UID EXPUNGE 3000:3002,3005")
    assert command == Expunge("a", SequenceSet.parse("3000:3002,3005"), uid=True)
    assert command.name == "EXPUNGE"
    assert error_of("a EXPUNGE 1:3").tag == "a"
    assert "missing" in error_of("a UID EXPUNGE").message


@pytest.mark.parametrize("cls", [Copy, Move])
def test_copy_and_move(cls):
    """COPY and MOVE (RFC 6851) read a sequence set and a mailbox; UID sets uid=True."""
    assert parse(f'a {cls.name} 2:4 "Old Mail"') == cls("a", SequenceSet.parse("2:4"), "Old Mail")
    command = parse(f"a uid {cls.name.lower()} 1:* inbox")
    assert command == cls("a", SequenceSet.parse("1:*"), "INBOX", uid=True)


@pytest.mark.parametrize("name", ["NOOP", "SELECT INBOX", "UID 1", "LOGIN a b"])
def test_uid_goes_only_before_its_commands(name):
    """UID is only a prefix of COPY, MOVE, FETCH, SEARCH, STORE and EXPUNGE."""
    error = error_of(f"a UID {name}")
    assert error.tag == "a"
    assert "UID goes before" in error.message


# --------------------------------------------------------------------------- FETCH


def test_fetch_single_attribute_and_list():
    """FETCH takes one attribute bare or several in parentheses, in any case."""
    assert attributes("flags") == (FetchAttribute("FLAGS"),)
    names = [a.name for a in attributes("(UID rfc822.size ENVELOPE BODYSTRUCTURE BODY)")]
    assert names == ["UID", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE", "BODY"]


def test_fetch_every_simple_attribute():
    """Every attribute without a section of RFC 3501 §6.4.5 is known."""
    names = "ENVELOPE FLAGS INTERNALDATE RFC822 RFC822.HEADER RFC822.SIZE RFC822.TEXT BODY"
    names += " BODYSTRUCTURE UID"
    assert [a.name for a in attributes(f"({names})")] == names.split()


@pytest.mark.parametrize(
    ("macro", "names"),
    [
        ("ALL", ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"]),
        ("fast", ["FLAGS", "INTERNALDATE", "RFC822.SIZE"]),
        ("Full", ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"]),
    ],
)
def test_fetch_macros_are_expanded(macro, names):
    """ALL, FAST and FULL arrive expanded into their attributes (RFC 3501 §6.4.5)."""
    assert [a.name for a in attributes(macro)] == names


@pytest.mark.parametrize(
    ("wire", "section", "partial", "response_name"),
    [
        ("BODY[]", Section(), None, "BODY[]"),
        ("BODY[]<0.2048>", Section(), (0, 2048), "BODY[]<0>"),
        ("BODY.PEEK[]", Section(), None, "BODY[]"),
        ("body[header]", Section((), "HEADER"), None, "BODY[HEADER]"),
        ("BODY[TEXT]<100.50>", Section((), "TEXT"), (100, 50), "BODY[TEXT]<100>"),
        ("BODY[1]", Section((1,)), None, "BODY[1]"),
        ("BODY[1.2.3]", Section((1, 2, 3)), None, "BODY[1.2.3]"),
        ("BODY[2.MIME]", Section((2,), "MIME"), None, "BODY[2.MIME]"),
        ("BODY[3.HEADER]", Section((3,), "HEADER"), None, "BODY[3.HEADER]"),
        ("BODY[4.1.TEXT]", Section((4, 1), "TEXT"), None, "BODY[4.1.TEXT]"),
        (
            "BODY.PEEK[HEADER.FIELDS (Subject from)]",
            Section((), "HEADER.FIELDS", ("SUBJECT", "FROM")),
            None,
            "BODY[HEADER.FIELDS (SUBJECT FROM)]",
        ),
        (
            "BODY.PEEK[1.HEADER.FIELDS (SUBJECT)]<0.100>",
            Section((1,), "HEADER.FIELDS", ("SUBJECT",)),
            (0, 100),
            "BODY[1.HEADER.FIELDS (SUBJECT)]<0>",
        ),
        (
            "BODY[HEADER.FIELDS.NOT (Received DKIM-Signature)]",
            Section((), "HEADER.FIELDS.NOT", ("RECEIVED", "DKIM-SIGNATURE")),
            None,
            "BODY[HEADER.FIELDS.NOT (RECEIVED DKIM-SIGNATURE)]",
        ),
    ],
)
def test_fetch_sections_and_partials(wire, section, partial, response_name):
    """Every section form of RFC 3501 §6.4.5, with partials and the response name (§7.4.2)."""
    (attribute,) = attributes(wire)
    assert attribute.name == "BODY"
    assert attribute.section == section
    assert attribute.partial == partial
    assert attribute.peek == wire.upper().startswith("BODY.PEEK")
    assert attribute.response_name() == response_name


def test_fetch_attribute_str_is_the_wire_form():
    """str(FetchAttribute) writes the item as a client sends it, PEEK and partial included."""
    wire = "BODY.PEEK[1.HEADER.FIELDS (SUBJECT)]<0.100>"
    assert str(attributes(wire)[0]) == wire
    assert attributes(str(attributes(wire)[0])) == attributes(wire)


def test_fetch_simple_attributes_answer_under_their_own_name():
    """response_name of FLAGS or RFC822.HEADER is the name itself."""
    assert [a.response_name() for a in attributes("(FLAGS RFC822.HEADER)")] == [
        "FLAGS",
        "RFC822.HEADER",
    ]


def test_fetch_header_list_with_quoted_and_literal_names():
    """Header field names are astrings: quoted strings and literals work too."""
    (attribute,) = attributes(b'BODY[HEADER.FIELDS ("x-spam" {7}\r\nSubject)]'.decode())
    assert attribute.section.fields == ("X-SPAM", "SUBJECT")


def test_uid_fetch_with_several_attributes():
    """UID FETCH keeps the set as written and sets uid=True."""
    command = parse("a UID FETCH 4:2,7:* (UID FLAGS BODY.PEEK[])")
    assert command.uid is True
    assert str(command.sequence_set) == "2:4,7:*"
    assert len(command.attributes) == 3


@pytest.mark.parametrize(
    "wire",
    [
        "(FLAGS ALL)",
        "BODY.PEEK",
        "BODY[MIME]",
        "BODY[1.]",
        "BODY[0]",
        "BODY[HEADER.FIELDS]",
        "BODY[HEADER.FIELDS ()]",
        "BODY[HEADERS]",
        "BODY[TEXT]<0.0>",
        "BODY[TEXT]<0>",
        "BODY[TEXT",
        "RFC822[]",
        "FLAGS[]",
        "BINARY[1]",
        "(FLAGS",
        "()",
        "(FLAGS  UID)",
    ],
)
def test_fetch_errors(wire):
    """Macros in lists, PEEK without section, MIME without part, bad partials and names."""
    assert error_of(f"a FETCH 1 {wire}").tag == "a"


def test_fetch_needs_attributes():
    """FETCH without attributes names what is missing and shows the syntax."""
    message = error_of("a FETCH 1:*").message
    assert "missing" in message and "syntax" in message


# --------------------------------------------------------------------------- STORE


@pytest.mark.parametrize(
    ("item", "mode", "silent"),
    [
        ("FLAGS", "", False),
        ("+FLAGS", "+", False),
        ("-flags", "-", False),
        ("FLAGS.SILENT", "", True),
        ("+FLAGS.SILENT", "+", True),
        ("-Flags.Silent", "-", True),
    ],
)
def test_store_modes(item, mode, silent):
    """STORE reads replace (""), add ("+") or remove ("-"), and .SILENT."""
    command = parse(f"a STORE 1:3 {item} (\\Seen)")
    assert (command.mode, command.silent, command.flags) == (mode, silent, ("\\Seen",))


def test_store_flags_bare_or_in_a_list():
    """Flags may come in parentheses or bare; system flags get their RFC spelling."""
    command = parse("a STORE 1 +FLAGS \\seen \\ANSWERED $Junk")
    assert command.flags == ("\\Seen", "\\Answered", "$Junk")
    command = parse("a UID STORE 5 FLAGS (\\Deleted \\draft \\Flagged Work)")
    flags = ("\\Deleted", "\\Draft", "\\Flagged", "Work")
    assert command == Store("a", SequenceSet.parse("5"), "", False, flags, uid=True)


def test_store_empty_list_clears():
    """FLAGS () is allowed: it removes every flag."""
    assert parse("a STORE 1 FLAGS ()").flags == ()


@pytest.mark.parametrize(
    "data",
    [
        "a STORE 1 FLAGS (\\Recent)",
        "a STORE 1 +FLAGS \\Recent",
        "a STORE 1 FLAGS (\\Important)",
        'a STORE 1 FLAGS ("quoted")',
        "a STORE 1 FLAGS (\\)",
        "a STORE 1 LABELS (x)",
        "a STORE 1 +FLAGS",
        "a STORE 1 *FLAGS (\\Seen)",
        "a STORE 1 FLAGS (\\Seen",
    ],
)
def test_store_errors(data):
    """\\Recent and unknown system flags, non-atom keywords, bad items and missing flags."""
    assert error_of(data).tag == "a"


def test_recent_flag_message_explains():
    """The error for \\Recent tells why: only the server sets it."""
    assert "server" in error_of("a STORE 1 FLAGS (\\Recent)").message


# --------------------------------------------------------------------------- SEARCH


def test_search_single_keys_without_arguments():
    """Each key without arguments parses, in any case."""
    for op in [
        "ALL ANSWERED DELETED DRAFT FLAGGED NEW OLD RECENT SEEN UNANSWERED UNDELETED",
        "UNDRAFT UNFLAGGED UNSEEN",
    ]:
        for word in op.split():
            assert criteria(word.lower()) == key(word)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('BCC "bob"', key("BCC", "bob")),
        ("BODY hello", key("BODY", "hello")),
        ('CC "a b"', key("CC", "a b")),
        ("FROM alice@north.test", key("FROM", "alice@north.test")),
        ('SUBJECT "say \\"hi\\""', key("SUBJECT", 'say "hi"')),
        ("TEXT {5}\r\nhello", key("TEXT", "hello")),
        ("TO bob", key("TO", "bob")),
        ('HEADER Message-ID "<1@x>"', key("HEADER", "MESSAGE-ID", "<1@x>")),
        ("KEYWORD $Junk", key("KEYWORD", "$Junk")),
        ("UNKEYWORD Work", key("UNKEYWORD", "Work")),
        ("LARGER 1000", key("LARGER", 1000)),
        ("SMALLER 0", key("SMALLER", 0)),
        ("BEFORE 1-Feb-1994", key("BEFORE", date(1994, 2, 1))),
        ('ON "01-feb-1994"', key("ON", date(1994, 2, 1))),
        ("SINCE 29-Feb-2024", key("SINCE", date(2024, 2, 29))),
        ("SENTBEFORE 31-Dec-1999", key("SENTBEFORE", date(1999, 12, 31))),
        ("SENTON 1-Jan-2000", key("SENTON", date(2000, 1, 1))),
        ("SENTSINCE 15-Jun-2020", key("SENTSINCE", date(2020, 6, 15))),
        ("UID 1:100,200:*", key("UID", SequenceSet.parse("1:100,200:*"))),
        ("2,4:6", key("SEQUENCE-SET", SequenceSet.parse("2,4:6"))),
        ("*", key("SEQUENCE-SET", SequenceSet.parse("*"))),
        ("NOT SEEN", key("NOT", key("SEEN"))),
        ("OR SEEN FLAGGED", key("OR", key("SEEN"), key("FLAGGED"))),
    ],
)
def test_search_keys_with_arguments(text, expected):
    """Each key of RFC 3501 §6.4.4 with its arguments: strings, dates, numbers, sets, keys."""
    assert criteria(text) == expected


def test_search_several_keys_are_an_and():
    """Several keys all have to match: they form one AND."""
    assert criteria("UNSEEN FROM bob 1:5") == key(
        "AND", key("UNSEEN"), key("FROM", "bob"), key("SEQUENCE-SET", SequenceSet.parse("1:5"))
    )


def test_search_nested_not_or_and_parentheses():
    """NOT, OR and parentheses nest to any depth (up to the limit)."""
    found = criteria('OR (FROM "bob" SINCE 1-Feb-1994) NOT (OR SEEN (DELETED UID 1:*))')
    assert found == key(
        "OR",
        key("AND", key("FROM", "bob"), key("SINCE", date(1994, 2, 1))),
        key(
            "NOT",
            key(
                "OR",
                key("SEEN"),
                key("AND", key("DELETED"), key("UID", SequenceSet.parse("1:*"))),
            ),
        ),
    )


def test_search_group_of_one_key_is_that_key():
    """Parentheses around a single key only group: (SEEN) is SEEN."""
    assert criteria("((SEEN))") == key("SEEN")


def test_search_key_str_parses_back():
    """str(SearchKey) is valid SEARCH syntax that parses to the same tree."""
    text = 'OR (FROM "b\\"ob" SINCE 1-Feb-1994) NOT (OR SEEN (DELETED UID 1:*)) HEADER X-A "1"'
    text += " KEYWORD $Junk TEXT {4}\r\na\r\nb"
    first = criteria(text)
    assert criteria(str(first)) == first
    assert str(criteria("OR (FROM bob) (NOT SEEN)")) == "OR (FROM bob) (NOT SEEN)"


def test_search_charset_utf8_with_literal():
    """CHARSET UTF-8 allows non-ASCII strings, also in a literal."""
    text = "Köln".encode()
    command = parse(b"a SEARCH CHARSET utf-8 SUBJECT {%d}\r\n%s" % (len(text), text))
    assert command.charset == "UTF-8"
    assert command.criteria == key("SUBJECT", "Köln")


def test_search_without_charset_is_none():
    """Without CHARSET, charset is None (US-ASCII is meant)."""
    assert parse("a SEARCH ALL").charset is None
    assert parse("a SEARCH CHARSET US-ASCII ALL").charset == "US-ASCII"


def test_search_unknown_charset_is_badcharset():
    """RFC 3501 §6.4.4: an unknown charset gives NO [BADCHARSET (US-ASCII UTF-8)]."""
    error = error_of("a SEARCH CHARSET ISO-8859-1 ALL")
    assert isinstance(error, UnsupportedCharset)
    assert "[BADCHARSET" in error.message
    assert error.response().startswith("a NO [BADCHARSET (US-ASCII UTF-8)]")


def test_search_non_ascii_needs_charset_utf8():
    """Non-ASCII search text without CHARSET UTF-8 is refused."""
    assert "CHARSET UTF-8" in error_of('a SEARCH SUBJECT "Köln"'.encode()).message


def test_uid_search():
    """UID SEARCH sets uid=True."""
    command = parse("a UID SEARCH UNSEEN")
    assert command == Search("a", None, key("UNSEEN"), uid=True)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "BOGUS",
        "FROM",
        "OR SEEN",
        "NOT",
        "BEFORE 32-Jan-2000",
        "BEFORE 1-Foo-2000",
        "BEFORE 2000-01-01",
        'ON "1-Feb-1994',
        "LARGER big",
        "LARGER 4294967296",
        "LARGER *",
        "KEYWORD \\Seen",
        "UID 0:5",
        "(SEEN",
        "SEEN)",
        "()",
        "CHARSET UTF-8",
    ],
)
def test_search_errors(text):
    """Unknown keys, missing arguments, invalid dates and numbers, unbalanced parentheses."""
    assert error_of(f"a SEARCH {text}".rstrip()).tag == "a"


def test_search_nesting_is_limited():
    """Keys nested deeper than MAX_NESTING are refused instead of exhausting the stack."""
    assert criteria("NOT " * (MAX_NESTING - 1) + "SEEN").op == "NOT"
    assert "nested" in error_of("a SEARCH " + "NOT " * (MAX_NESTING + 1) + "SEEN").message
    assert "nested" in error_of("a SEARCH " + "(" * 1000 + "SEEN" + ")" * 1000).message


# --------------------------------------------------------------------------- sequence sets


@pytest.mark.parametrize(
    ("text", "largest", "numbers"),
    [
        ("1", 5, [1]),
        ("2:4", 5, [2, 3, 4]),
        ("4:2", 5, [2, 3, 4]),
        ("*", 5, [5]),
        ("3:*", 5, [3, 4, 5]),
        ("*:3", 5, [3, 4, 5]),
        ("1,3:4,2", 5, [1, 2, 3, 4]),
        ("7:*", 5, [5]),
        ("9", 5, []),
        ("1:*", 0, []),
        ("1:4294967295", 3, [1, 2, 3]),
    ],
)
def test_sequence_set_resolve(text, largest, numbers):
    """resolve gives sorted unique numbers up to largest; n:* with n > largest gives largest."""
    assert SequenceSet.parse(text).resolve(largest) == numbers


def test_sequence_set_keeps_ranges():
    """A huge range is two numbers, not four billion: it is expanded only by resolve."""
    whole = SequenceSet.parse("1:4294967295")
    assert whole.ranges == ((1, 4294967295),)
    assert whole.contains(4294967295, 4294967295)
    assert not whole.contains(0, 10)


def test_sequence_set_str_and_repr():
    """str writes the set back in its normalised form; repr shows it too."""
    assert str(SequenceSet.parse("4:2,*,*:7,3:3")) == "2:4,*,7:*,3"
    assert repr(SequenceSet.parse("1:*")) == "SequenceSet('1:*')"


def test_sequence_set_highest_written():
    """highest_written is the largest number written out, * not counted."""
    assert SequenceSet.parse("3,10:*,7").highest_written == 10
    assert SequenceSet.parse("*").highest_written == 0


@pytest.mark.parametrize(
    "text",
    ["0", "0:5", "1:0", "1:", ":1", "*:*:*", ",", "1,,2", "1,", "01", "4294967296", "a", "1-3", ""],
)
def test_sequence_set_errors(text):
    """0, empty elements, extra colons, leading zeros, too large numbers: ParseError."""
    with pytest.raises(ParseError):
        SequenceSet.parse(text)


def test_zero_in_a_command_names_the_problem():
    """FETCH 0 is refused with a message that says numbers start at 1."""
    error = error_of("a FETCH 0 FLAGS")
    assert error.tag == "a" and "start at 1" in error.message


@st.composite
def sequence_set_texts(draw, high: int = 2**32 - 1) -> str:
    number = st.one_of(st.just("*"), st.integers(1, high).map(str))
    item = st.one_of(number, st.tuples(number, number).map(":".join))
    return ",".join(draw(st.lists(item, min_size=1, max_size=6)))


@FAST
@given(sequence_set_texts())
def test_sequence_sets_round_trip_through_str(text):
    """Any valid sequence set parses, and str() of it parses back to an equal set."""
    parsed = SequenceSet.parse(text)
    assert SequenceSet.parse(str(parsed)) == parsed


@FAST
@given(sequence_set_texts(high=20), st.integers(0, 25))
def test_resolve_agrees_with_naive_expansion(text, largest):
    """resolve equals expanding every range naively (with * = largest) cut to 1..largest."""
    naive: set[int] = set()
    for item in text.split(","):
        ends = [largest if end == "*" else int(end) for end in item.split(":")]
        naive.update(n for n in range(min(ends), max(ends) + 1) if 1 <= n <= largest)
    parsed = SequenceSet.parse(text)
    assert parsed.resolve(largest) == sorted(naive)
    assert all(parsed.contains(n, largest) == (n in naive) for n in range(0, 27))


# --------------------------------------------------------------------------- literals


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"a LOGIN {5}", Literal(5, True)),
        (b"a LOGIN alice {12+}", Literal(12, False)),
        (b"a APPEND INBOX (\\Seen) {0}", Literal(0, True)),
        (b" {310}", Literal(310, True)),
        (b"a NOOP", None),
        (b"a SELECT foo}", None),
        (b'a LOGIN alice "pass{5}"', None),
        (b'a LOGIN alice "x\\" {5}"', None),
        (b'a LOGIN "a\\\\" {5}', Literal(5, True)),
        (b"", None),
    ],
)
def test_literal_at_end(line, expected):
    """literal_at_end finds {n} and {n+} at the end of a line, but not inside quotes."""
    assert literal_at_end(line) == expected


@pytest.mark.parametrize("line", [b"a LOGIN {}", b"a LOGIN {5x}", b"a LOGIN {+}", b"a LOGIN {-1}"])
def test_literal_at_end_refuses_malformed_announcements(line):
    """A malformed {..} at the end is an error, with the tag of the line."""
    with pytest.raises(ParseError) as info:
        literal_at_end(line)
    assert info.value.tag == "a"


@pytest.mark.parametrize("size", [str(MAX_LITERAL + 1), "1" + "0" * 30, "9" * 5000])
def test_literal_at_end_refuses_too_large_before_reading(size):
    """A literal over MAX_LITERAL is refused from its announcement alone, however long."""
    for plus in ("", "+"):
        with pytest.raises(ParseError) as info:
            literal_at_end(f"a APPEND INBOX {{{size}{plus}}}".encode())
        assert "[TOOBIG]" in info.value.message
        assert info.value.tag == "a"
    assert literal_at_end(f"a APPEND INBOX {{{MAX_LITERAL}}}".encode()) == Literal(
        MAX_LITERAL, True
    )


def test_literal_at_end_refuses_overlong_lines():
    """A line longer than MAX_LINE is refused."""
    with pytest.raises(ParseError):
        literal_at_end(b"a LOGIN " + b"x" * MAX_LINE)


def test_command_tag():
    """command_tag reads the tag of a first line, and None for a continuation line."""
    assert command_tag(b"a1 LOGIN {5}") == "a1"
    assert command_tag(b" {6}") is None
    assert command_tag(b"a+ NOOP") is None


@pytest.mark.parametrize(
    "data",
    [
        b"a LOGIN {5}\r\nali",
        b"a LOGIN {5} alice x",
        b"a LOGIN {5}\nalice x",
        b"a LOGIN {2}\r\na\0 x",
        b"a LOGIN {2}\r\n\xff\xfe x",
        b"a LOGIN {" + str(MAX_LITERAL + 1).encode() + b"}\r\nx y",
    ],
)
def test_literal_errors_in_commands(data):
    """Short literals, a {n} not ending its line, NUL, non-UTF-8 text, oversized: ParseError."""
    assert error_of(data).tag == "a"


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("data", "tag", "words"),
    [
        (b"", None, "empty"),
        (b" NOOP", None, "missing tag"),
        (b"a1", "a1", "missing"),
        (b"a1 ", "a1", "expected a command"),
        (b"a1 FROBNICATE", "a1", "unknown command"),
        (b"a1 SELECT", "a1", "missing a mailbox"),
        (b"a1 SELECT INBOX extra", "a1", "too many arguments"),
        (b"a1 SELECT  INBOX", "a1", "found a space"),
        (b'a1 LOGIN "alice pass', "a1", "unterminated"),
        (b'a1 LOGIN "al\\ice" x', "a1", "invalid escape"),
        (b'a1 LOGIN "al\\', "a1", "invalid escape"),
        (b"a1 SELECT caf\xc3\xa9", "a1", "8-bit"),
        (b"a1 SELECT \xff", "a1", "8-bit"),
        (b'a1 SELECT "\xff"', "a1", "UTF-8"),
        (b"a1 FETCH 1 (FLAGS UID", "a1", "unbalanced"),
        (b"a1 NOOP\r\n", "a1", "CRLF"),
        (b"a1 SELECT a\tb", "a1", "control character"),
        (b"\xff NOOP", None, "tag"),
        (b"GARBAGE", "GARBAGE", "missing"),
        (b"a1 SELECT INBOX ", "a1", "space at the end"),
        (b"a1 STORE 1 FLAGS (\\Recent)", "a1", "server only"),
        (b"a1 SEARCH LARGER 99999999999", "a1", "larger than"),
        (b"a1 LOGIN {1}\r\n\0 x", "a1", "NUL"),
    ],
)
def test_bad_input_gives_clear_errors(data, tag, words):
    """Each kind of bad input gives a ParseError with the tag (if any) and a clear message."""
    error = error_of(data)
    assert error.tag == tag
    assert words in error.message
    assert error.message.isascii() and error.message.isprintable()
    assert "Traceback" not in error.message and "Error" not in error.message


def test_parse_error_response_lines():
    """ParseError.response() is the reply line: with the tag, or with * when it is unknown."""
    assert ParseError("bad thing", "a1").response() == "a1 BAD bad thing"
    assert ParseError("bad thing").response() == "* BAD bad thing"


def test_error_messages_show_client_input_safely():
    """Client input in a message is printable ASCII and shortened."""
    message = error_of(b"a " + b"X" * 500).message
    assert len(message) < 120 and "..." in message


def test_unexpected_exceptions_become_parse_errors(monkeypatch, caplog):
    """A bug inside the parser becomes "could not parse command", logged locally."""

    def broken(cls, r, tag, uid):
        raise KeyError("bug")

    monkeypatch.setattr(Noop, "parse", classmethod(broken))
    with caplog.at_level(logging.ERROR, logger="mailkit_edu.imapparse"):
        error = error_of("a9 NOOP")
    assert error.message == "could not parse command"
    assert error.tag == "a9"
    assert "KeyError" in caplog.text


@FAST
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_parse_errors(data):
    """parse_command on random bytes returns a command or raises ParseError, nothing else."""
    try:
        assert isinstance(parse_command(data), Command)
    except ParseError as error:
        assert error.message.isascii()


TOKENS = [
    "a1",
    " ",
    "UID",
    "FETCH",
    "SEARCH",
    "STORE",
    "APPEND",
    "LIST",
    "LOGIN",
    "1:*",
    "*",
    "0",
    "(",
    ")",
    "[",
    "]",
    "<0.5>",
    '"',
    "\\",
    "{3}\r\n",
    "{2+}\r\n",
    "BODY.PEEK",
    "HEADER.FIELDS",
    "NOT",
    "OR",
    "FLAGS",
    "+FLAGS.SILENT",
    "\\Seen",
    "1-Feb-1994",
    "INBOX",
    "RETURN",
    "é",
]


@FAST
@given(st.lists(st.sampled_from(TOKENS), max_size=25))
def test_command_like_noise_raises_only_parse_errors(tokens):
    """Near-miss commands made of IMAP tokens return a command or raise only ParseError."""
    data = "a1 " + "".join(tokens)
    try:
        assert isinstance(parse(data.encode()), Command)
    except ParseError as error:
        assert error.message.isascii()


# --------------------------------------------------------------------------- modified UTF-7


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("INBOX", "INBOX"),
        ("Entwürfe", "Entw&APw-rfe"),
        ("日本語", "&ZeVnLIqe-"),
        ("&", "&-"),
        ("Tom & Jerry", "Tom &- Jerry"),
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
        ("📬", "&2D3c7A-"),
        ("", ""),
    ],
)
def test_mutf7_examples(text, encoded):
    """Known encodings, among them the example of RFC 3501 §5.1.3, both ways."""
    assert encode_mutf7(text) == encoded
    assert decode_mutf7(encoded) == text


@pytest.mark.parametrize(
    "name",
    [
        "&ZeVnLIqe",  # not closed by "-"
        "&Jjo!-",  # "!" is not base64
        "&AGE-",  # "a" (printable ASCII) must not be encoded
        "&AOR-",  # "ä" is &AOQ-: the last base64 digit has bits left over
        "&2D0-",  # a lone high surrogate
        "&A-",  # too short to be UTF-16
        "Entwürfe",  # 8-bit characters are never written directly
        "a\tb",  # neither are control characters
    ],
)
def test_mutf7_invalid_names(name):
    """decode_mutf7 raises ValueError for names no encoder could have written."""
    with pytest.raises(ValueError):
        decode_mutf7(name)


@FAST
@given(st.text(max_size=40))
def test_mutf7_round_trips_any_text(text):
    """decode(encode(text)) == text, and the encoding is printable ASCII only."""
    encoded = encode_mutf7(text)
    assert all(" " <= char <= "~" for char in encoded)
    assert decode_mutf7(encoded) == text
