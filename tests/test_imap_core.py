"""Tests of the IMAP4rev1 protocol core (mailkit_edu.imap): a command in, a Response out.

Pure tests: no sockets, no asyncio, no lab. Each test gets a Store of its own (a copy of
one template Maildir tree, made once per module, so the tests stay fast) and asserts
on the protocol lines and on the state of the store. Every response goes through
:func:`send`, which checks that no line carries Python error text and reads every
``* n FETCH (...)`` line back with a small parser of the IMAP syntax (RFC 3501 §9), so
the size of each literal must equal the octets that follow it.

The template INBOX (UIDs 1, 2, 3)::

    1  LUNCH   From Bob, To Alice, Cc Carol  \\Seen \\Answered    01-Jan-2024
    2  REPORT  multipart/mixed, from Carol     \\Flagged project   10-Jan-2024
    3  NOTE    From Dave, To Bob               (no flags)          20-Jan-2024

Two sessions on one store share one :class:`RecentFlags`, as the server's do.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailkit_edu.imap import IMAPSession, RecentFlags, Response, State
from mailkit_edu.imapmailboxes import Subscriptions
from mailkit_edu.store import INBOX, Store

ALICE = "alice@north.test"
BOB = "bob@north.test"
GHOST = "ghost@north.test"  # has a password but no mailbox
PASSWORDS = {ALICE: "alice-secret", BOB: "bob secret with spaces", GHOST: "ghost-secret"}
HOST = "imap.north.test"

LUNCH = (
    b"From: Bob <bob@north.test>\r\n"
    b"To: alice@north.test\r\n"
    b"Cc: carol@south.test\r\n"
    b"Subject: Lunch plans\r\n"
    b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
    b"Message-ID: <lunch@north.test>\r\n"
    b"X-Tag: alpha\r\n"
    b"\r\n"
    b"Pizza at noon?\r\n"
)
REPORT_HEADER = (
    b"From: Carol <carol@south.test>\r\n"
    b"To: alice@north.test\r\n"
    b"Subject: Quarterly report\r\n"
    b"Date: Wed, 10 Jan 2024 09:30:00 +0100\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="BOUNDARY"\r\n'
    b"\r\n"
)
REPORT_TEXT = (
    b"--BOUNDARY\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Numbers are up.\r\n"
    b"--BOUNDARY\r\n"
    b"Content-Type: text/html\r\n"
    b"\r\n"
    b"<p>Numbers are up.</p>\r\n"
    b"--BOUNDARY--\r\n"
)
REPORT = REPORT_HEADER + REPORT_TEXT
NOTE = (
    b"From: dave@north.test\r\n"
    b"To: bob@north.test\r\n"
    b"Subject: Note\r\n"
    b"Date: Sat, 20 Jan 2024 10:00:00 +0000\r\n"
    b"\r\n"
    b"Short.\r\n"
)
FRESH = b"Subject: fresh\r\n\r\nnew one\r\n"


def noon(year: int, month: int, day: int) -> float:
    return datetime(year, month, day, 12, tzinfo=UTC).timestamp()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Maildir tree every test starts from (built once: delivery fsyncs)."""
    root = tmp_path_factory.mktemp("template") / "store"
    mail = Store(root)
    mail.add_account(ALICE)
    mail.deliver(ALICE, LUNCH, flags=["\\Seen", "\\Answered"], internaldate=noon(2024, 1, 1))
    mail.deliver(ALICE, REPORT, flags=["\\Flagged", "project"], internaldate=noon(2024, 1, 10))
    mail.deliver(ALICE, NOTE, internaldate=noon(2024, 1, 20))
    return root


def _copy_file(source: str, target: str) -> None:
    """Messages are hard-linked (a Maildir never writes a message file again, and a link
    keeps the mtime, the INTERNALDATE); the store's own files are copied."""
    if Path(source).parent.name in ("cur", "new"):
        os.link(source, target)
    else:
        shutil.copyfile(source, target)


def copy_of(template: Path, root: Path) -> Store:
    shutil.copytree(template, root, copy_function=_copy_file)
    return Store(root)


def state_of(store: Store) -> list[object]:
    """Everything a test could change: folders, messages, flags, subscriptions."""
    return [
        store.accounts(),
        {
            folder: [(i.uid, i.flags, i.size) for i in store.messages(ALICE, folder)]
            for folder in store.folders(ALICE)
        },
        Subscriptions(store, ALICE).names(),
    ]


@pytest.fixture(scope="module")
def shared(template: Path, tmp_path_factory: pytest.TempPathFactory):
    """One store for the tests marked @readonly (copying a Maildir costs mkdirs)."""
    mail = copy_of(template, tmp_path_factory.mktemp("shared") / "store")
    mail.add_account(BOB)
    before = state_of(mail)
    yield mail
    assert state_of(mail) == before, "a @readonly test changed the shared store"


def readonly(test):
    """The test changes no mail: it may use the module's shared store."""
    test.readonly = True
    return test


@pytest.fixture
def store(request: pytest.FixtureRequest, template: Path, tmp_path: Path) -> Store:
    """A store of the test's own, or the shared one for a @readonly test."""
    if getattr(request.function, "readonly", False):
        return request.getfixturevalue("shared")
    return copy_of(template, tmp_path / "store")


def old_news(store: Store) -> RecentFlags:
    """\\Recent as if an earlier session had seen every message there is now."""
    recent = RecentFlags()
    for folder in store.folders(ALICE):
        recent.claim(ALICE, folder, [info.uid for info in store.messages(ALICE, folder)])
    return recent


@pytest.fixture
def recent(store: Store) -> RecentFlags:
    """One server's \\Recent memory, shared by the sessions of a test; nothing new yet."""
    return old_news(store)


# --------------------------------------------------------------------------- helpers

_PYTHON_TEXT = re.compile(rb"Traceback|File \"|\b\w+(Error|Exception)\b|line \d+, in ")
_FETCH_LINE = re.compile(rb"\* (\d+) FETCH \(")


def new_session(store: Store, recent: RecentFlags | None = None, **options) -> IMAPSession:
    return IMAPSession(
        store,
        PASSWORDS,
        hostname=HOST,
        recent=recent if recent is not None else old_news(store),
        **options,
    )


def send(session: IMAPSession, command: str | bytes, *, exact: bool = False) -> Response:
    """One command; the response with its lines read (a FETCH generator runs here)."""
    data = command.encode("utf-8") if isinstance(command, str) else command
    response = session.receive_exact(data) if exact else session.receive(data)
    response.lines = list(response.lines)
    assert response.lines, f"no line at all for {data!r}"
    for line in response.lines:
        check_line(line)
    return response


def run(session: IMAPSession, command: str | bytes, *, exact: bool = False) -> list[str]:
    """The lines of the response to one command, as text."""
    return [line.decode("utf-8") for line in send(session, command, exact=exact).lines]


def check_line(line: bytes) -> None:
    """No Python in a reply; a FETCH line must parse, literals of the announced size."""
    assert isinstance(line, bytes)
    assert not _PYTHON_TEXT.search(line), f"Python error text on the wire: {line!r}"
    assert line[:1] in (b"*", b"+") or re.match(rb"[^\s(){%*\"\\+]+ ", line), line
    if _FETCH_LINE.match(line):
        parse_fetch(line)
    else:
        assert b"\r" not in line and b"\n" not in line, f"a line break in {line!r}"


def ok(lines: list[str], tag: str) -> list[str]:
    """Assert the response ends ``<tag> OK``; the untagged lines before it."""
    assert lines[-1].startswith(f"{tag} OK"), lines
    return lines[:-1]


def last(lines: list[str]) -> str:
    return lines[-1]


def logged_in(store: Store, recent: RecentFlags | None = None, **options) -> IMAPSession:
    session = new_session(store, recent, **options)
    assert run(session, f"L1 LOGIN {ALICE} alice-secret")[-1].startswith("L1 OK")
    return session


def selected(
    store: Store, recent: RecentFlags | None = None, mailbox: str = "INBOX", *, examine=False
) -> IMAPSession:
    session = logged_in(store, recent)
    verb = "EXAMINE" if examine else "SELECT"
    lines = run(session, f"S1 {verb} {mailbox}")
    assert lines[-1].startswith("S1 OK"), lines
    return session


def uids(store: Store, folder: str = INBOX) -> list[int]:
    return [info.uid for info in store.messages(ALICE, folder)]


def flags(store: Store, uid: int, folder: str = INBOX) -> set[str]:
    return set(store.get(ALICE, folder, uid).flags)


def message_file(store: Store, uid: int, folder: str = INBOX) -> Path:
    """The file of a message in the Maildir (cur/ or new/), found by its unique name."""
    key = store.get(ALICE, folder, uid).key
    directory = store.maildir_path(ALICE, folder)
    [path] = [path for sub in ("cur", "new") for path in (directory / sub).glob(key + "*")]
    return path


def codes(lines: list[str]) -> dict[str, str]:
    """Response codes of untagged OK lines: {"UIDNEXT": "4", "PERMANENTFLAGS": "(...)"}."""
    found = {}
    for line in lines:
        match = re.match(r"\* OK \[([A-Z-]+)(?: ([^\]]*))?\]", line)
        if match:
            found[match.group(1)] = match.group(2) or ""
    return found


def search_result(lines: list[str], tag: str) -> list[int]:
    ok(lines, tag)
    found = [line for line in lines if line.startswith("* SEARCH")]
    assert len(found) == 1, lines
    return [int(word) for word in found[0].split()[2:]]


# --------------------------------------------------------------------------- a reader of IMAP data


def parse_fetch(line: bytes | str) -> tuple[int, dict[str, object]]:
    """``* n FETCH (NAME value ...)`` -> (n, {NAME: value}); atoms are str, strings bytes."""
    data = line.encode("utf-8") if isinstance(line, str) else line
    match = _FETCH_LINE.match(data)
    assert match, data
    items, end = _parse_list(data, match.end())
    assert end == len(data), f"octets after the FETCH data: {data[end:]!r}"
    assert len(items) % 2 == 0, items
    names = items[0::2]
    assert all(isinstance(name, str) for name in names), names
    return int(match.group(1)), dict(zip(names, items[1::2], strict=True))


def parse_values(data: bytes | str) -> list[object]:
    """Space-separated IMAP values, e.g. the rest of a LIST or STATUS line."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    items, end = _parse_list(b"(" + raw + b")", 1)
    assert end == len(raw) + 2
    return items


def _parse_list(data: bytes, i: int) -> tuple[list[object], int]:
    """The items of a parenthesised list whose "(" ends before ``i``."""
    items: list[object] = []
    while True:
        assert i < len(data), f"unclosed list in {data!r}"
        char = data[i : i + 1]
        if char == b")":
            return items, i + 1
        if char == b" ":
            assert items, f"a space after '(' at {i} in {data!r}"
            i += 1
            continue
        if char == b"(":
            item, i = _parse_list(data, i + 1)
            items.append(item)
            continue  # ")(" is allowed: body-type-mpart joins bodies without a space
        if char == b'"':
            quoted = re.compile(rb'"((?:[^"\\\r\n]|\\["\\])*)"').match(data, i)
            assert quoted, f"bad quoted string at {i}: {data[i : i + 40]!r}"
            items.append(re.sub(rb"\\(.)", rb"\1", quoted.group(1)))
            i = quoted.end()
        elif char == b"{":
            announced = re.compile(rb"\{(\d+)\}\r\n").match(data, i)
            assert announced, f"bad literal at {i}: {data[i : i + 40]!r}"
            size, start = int(announced.group(1)), announced.end()
            assert start + size <= len(data), "the literal is longer than the line"
            items.append(data[start : start + size])
            i = start + size
        else:
            j = i
            while j < len(data) and data[j : j + 1] not in (b" ", b"(", b")"):
                if data[j : j + 1] == b"[":  # BODY[HEADER.FIELDS (SUBJECT)]<0>
                    j = data.index(b"]", j)
                j += 1
            atom = data[i:j]
            assert atom and b"\r" not in atom and b"\n" not in atom, data[i : i + 40]
            items.append(None if atom == b"NIL" else atom.decode("ascii"))
            i = j
        assert data[i : i + 1] in (b" ", b")"), (
            f"no space or ')' after a value at {i}: {data[i : i + 40]!r} "
            "(a literal's size that does not match its octets?)"
        )


def fetched(lines: list[str]) -> dict[int, dict[str, object]]:
    """Every FETCH line of a response, merged per message number."""
    result: dict[int, dict[str, object]] = {}
    for line in lines:
        if _FETCH_LINE.match(line.encode("utf-8")):
            number, items = parse_fetch(line)
            result.setdefault(number, {}).update(items)
    return result


def told_flags(lines: list[str]) -> dict[int, set[str]]:
    """The flags the client was last told, per message number, in these lines."""
    return {n: set(items["FLAGS"]) for n, items in fetched(lines).items() if "FLAGS" in items}


def numbers_to_uids(session: IMAPSession, tag: str = "U1") -> list[int]:
    """What the client now believes: message n has UID uids[n - 1] (a FETCH 1:* (UID))."""
    lines = run(session, f"{tag} FETCH 1:* (UID)")
    assert not any(" EXPUNGE" in line for line in lines), lines
    items = fetched(ok(lines, tag))
    return [int(items[n]["UID"]) for n in sorted(items)]


# --------------------------------------------------------------------------- greeting, CAPABILITY


def capabilities_in(line: str) -> list[str]:
    match = re.search(r"\[CAPABILITY ([^\]]*)\]", line) or re.match(r"\* CAPABILITY (.*)", line)
    assert match, line
    return match.group(1).split()


@readonly
def test_greeting_is_one_ok_line_with_capabilities(store):
    lines = [line.decode() for line in new_session(store).greeting().lines]
    assert len(lines) == 1
    assert lines[0].startswith("* OK [CAPABILITY IMAP4rev1 ")
    assert HOST in lines[0]
    caps = capabilities_in(lines[0])
    for cap in ("IMAP4rev1", "IDLE", "UIDPLUS", "MOVE", "NAMESPACE", "LITERAL+", "SASL-IR"):
        assert cap in caps
    assert "AUTH=PLAIN" in caps
    assert "STARTTLS" not in caps and "LOGINDISABLED" not in caps


@readonly
@pytest.mark.parametrize(
    ("tls_available", "tls_active", "starttls"),
    [(False, False, False), (True, False, True), (True, True, False)],
)
def test_starttls_is_offered_only_when_available_and_not_active(
    store, tls_available, tls_active, starttls
):
    session = new_session(store, tls_available=tls_available, tls_active=tls_active)
    greeting = session.greeting().lines[0].decode()
    lines = ok(run(session, "c1 CAPABILITY"), "c1")
    assert len(lines) == 1
    for caps in (capabilities_in(greeting), capabilities_in(lines[0])):
        assert ("STARTTLS" in caps) is starttls
        assert "AUTH=PLAIN" in caps and "LOGINDISABLED" not in caps


@readonly
def test_require_tls_disables_login_until_starttls(store):
    session = new_session(store, require_tls=True, tls_available=True)
    caps = capabilities_in(session.greeting().lines[0].decode())
    assert "LOGINDISABLED" in caps and "STARTTLS" in caps and "AUTH=PLAIN" not in caps
    assert capabilities_in(ok(run(session, "c1 CAPABILITY"), "c1")[0]) == caps

    response = send(session, f"a1 LOGIN {ALICE} alice-secret")
    assert [line.decode() for line in response.lines] == [
        "a1 NO [PRIVACYREQUIRED] LOGIN is disabled before STARTTLS on this server"
    ]
    assert not response.failed_login
    plain = base64.b64encode(f"\0{ALICE}\0alice-secret".encode()).decode()
    assert last(run(session, f"a2 AUTHENTICATE PLAIN {plain}")).startswith(
        "a2 NO [PRIVACYREQUIRED]"
    )
    assert session.state is State.NOT_AUTHENTICATED

    response = send(session, "a3 STARTTLS")
    assert [line.decode() for line in response.lines] == ["a3 OK Begin TLS negotiation now"]
    assert response.start_tls and not response.close
    session.tls_started()
    caps = capabilities_in(ok(run(session, "a4 CAPABILITY"), "a4")[0])
    assert "AUTH=PLAIN" in caps
    assert "LOGINDISABLED" not in caps and "STARTTLS" not in caps
    assert last(run(session, f"a5 LOGIN {ALICE} alice-secret")).startswith("a5 OK")
    assert session.state is State.AUTHENTICATED


@readonly
def test_starttls_refused_when_not_available_or_already_active(store):
    assert last(run(new_session(store), "t1 STARTTLS")).startswith("t1 BAD")
    active = new_session(store, tls_available=True, tls_active=True)
    response = send(active, "t2 STARTTLS")
    assert response.lines[-1].startswith(b"t2 BAD") and not response.start_tls


@readonly
def test_capability_after_login_has_no_auth_mechanisms_or_starttls(store):
    session = logged_in(store, tls_available=True)
    for state_tag in ("c1", "c2"):
        caps = capabilities_in(ok(run(session, f"{state_tag} CAPABILITY"), state_tag)[0])
        assert "IMAP4rev1" in caps and "IDLE" in caps
        assert not any(cap.startswith("AUTH=") for cap in caps)
        assert "STARTTLS" not in caps and "LOGINDISABLED" not in caps
        run(session, "s1 SELECT INBOX")


# --------------------------------------------------------------------------- LOGIN


@readonly
def test_login_succeeds_with_capabilities_in_the_ok(store):
    session = new_session(store)
    response = send(session, f"a1 LOGIN {ALICE} alice-secret")
    assert len(response.lines) == 1
    line = response.lines[0].decode()
    assert line.startswith("a1 OK [CAPABILITY IMAP4rev1 ") and line.endswith("LOGIN completed")
    assert not response.failed_login and not response.close
    assert session.state is State.AUTHENTICATED


@readonly
@pytest.mark.parametrize(
    "command",
    [
        "a1 LOGIN ALICE@North.Test alice-secret",
        f'a1 LOGIN "{ALICE}" "alice-secret"',
        f"a1 LOGIN {{{len(ALICE)}}}\r\n{ALICE} {{12}}\r\nalice-secret",
    ],
    ids=["case", "quoted", "literals"],
)
def test_login_spellings(store, command):
    session = new_session(store)
    assert last(run(session, command)).startswith("a1 OK")
    assert session.state is State.AUTHENTICATED


@readonly
def test_login_password_with_spaces_quoted(store):
    session = new_session(store)
    assert last(run(session, f'a1 LOGIN {BOB} "bob secret with spaces"')).startswith("a1 OK")


@readonly
@pytest.mark.parametrize(
    "command",
    [f"a1 LOGIN {ALICE} wrong", "a1 LOGIN nobody@north.test alice-secret"],
    ids=["wrong-password", "unknown-user"],
)
def test_login_failure_is_authenticationfailed_with_the_same_words(store, command):
    session = new_session(store)
    response = send(session, command)
    assert [line.decode() for line in response.lines] == [
        "a1 NO [AUTHENTICATIONFAILED] invalid user name or password"
    ]
    assert response.failed_login and not response.close
    assert session.state is State.NOT_AUTHENTICATED


@readonly
def test_five_failed_logins_end_with_bye_and_close(store):
    session = new_session(store)
    for attempt in range(4):
        response = send(session, f"a{attempt} LOGIN {ALICE} wrong{attempt}")
        assert response.failed_login and not response.close
    response = send(session, f"a4 LOGIN {ALICE} wrong4")
    lines = [line.decode() for line in response.lines]
    assert lines[0].startswith("a4 NO [AUTHENTICATIONFAILED]")
    assert any(line.startswith("* BYE") for line in lines)
    assert response.close
    assert session.state is State.LOGOUT
    # even the right password is too late now
    response = send(session, f"a5 LOGIN {ALICE} alice-secret")
    assert response.close and response.lines[0].startswith(b"* BYE")
    assert session.state is State.LOGOUT


@readonly
def test_login_of_an_account_without_a_mailbox_is_no(store):
    session = new_session(store)
    line = last(run(session, f"a1 LOGIN {GHOST} ghost-secret"))
    assert line.startswith("a1 NO")
    assert session.state is State.NOT_AUTHENTICATED


# --------------------------------------------------------------------------- AUTHENTICATE PLAIN


def plain(authzid: str, authcid: str, password: str) -> str:
    return base64.b64encode(f"{authzid}\0{authcid}\0{password}".encode()).decode()


@readonly
def test_authenticate_plain_with_initial_response(store):
    session = new_session(store)
    lines = run(session, f"a1 AUTHENTICATE PLAIN {plain('', ALICE, 'alice-secret')}")
    assert len(lines) == 1
    assert lines[0].startswith("a1 OK [CAPABILITY IMAP4rev1 ")
    assert session.state is State.AUTHENTICATED and session.user == ALICE


@readonly
def test_authenticate_plain_with_a_continuation(store):
    session = new_session(store)
    response = send(session, "a1 AUTHENTICATE PLAIN")
    assert [line.decode() for line in response.lines] == ["+ "]
    assert session.expecting_sasl
    assert session.state is State.NOT_AUTHENTICATED
    lines = run(session, plain("", ALICE, "alice-secret"))
    assert len(lines) == 1 and lines[0].startswith("a1 OK")
    assert not session.expecting_sasl
    assert session.state is State.AUTHENTICATED


@readonly
def test_authenticate_plain_authzid_equal_to_authcid_is_fine(store):
    session = new_session(store)
    lines = run(session, f"a1 AUTHENTICATE plain {plain(ALICE, ALICE, 'alice-secret')}")
    assert lines[-1].startswith("a1 OK")
    assert session.state is State.AUTHENTICATED and session.user == ALICE


@readonly
def test_authenticate_cancelled_with_star_is_bad(store):
    session = new_session(store)
    run(session, "a1 AUTHENTICATE PLAIN")
    lines = run(session, "*")
    assert len(lines) == 1 and lines[0].startswith("a1 BAD")
    assert not session.expecting_sasl
    assert session.state is State.NOT_AUTHENTICATED
    # the session goes on: the next line is a command again
    assert last(run(session, "a2 NOOP")).startswith("a2 OK")


@readonly
@pytest.mark.parametrize("initial", [True, False], ids=["sasl-ir", "continuation"])
@pytest.mark.parametrize(
    "answer",
    ["%%%not base64%%%", "YWJj", base64.b64encode(b"only\0two").decode()],
    ids=["not-base64", "no-nul", "two-parts"],
)
def test_authenticate_with_a_malformed_answer_is_bad(store, initial, answer):
    session = new_session(store)
    if initial:
        lines = run(session, f"a1 AUTHENTICATE PLAIN {answer}")
    else:
        run(session, "a1 AUTHENTICATE PLAIN")
        lines = run(session, answer)
    assert len(lines) == 1 and lines[0].startswith("a1 BAD"), lines
    assert session.state is State.NOT_AUTHENTICATED and not session.expecting_sasl


@readonly
def test_authenticate_as_someone_else_is_refused(store):
    session = new_session(store)
    response = send(session, f"a1 AUTHENTICATE PLAIN {plain(BOB, ALICE, 'alice-secret')}")
    line = response.lines[-1].decode()
    assert line.startswith("a1 NO [AUTHORIZATIONFAILED]")
    assert session.state is State.NOT_AUTHENTICATED and session.user is None


@readonly
def test_authenticate_with_a_wrong_password_is_a_failed_login(store):
    session = new_session(store)
    run(session, "a1 AUTHENTICATE PLAIN")
    response = send(session, plain("", ALICE, "wrong"))
    assert response.lines[-1].decode().startswith("a1 NO [AUTHENTICATIONFAILED]")
    assert response.failed_login
    for attempt in range(2, 6):
        response = send(session, f"a{attempt} AUTHENTICATE PLAIN {plain('', ALICE, 'x')}")
    assert response.close and session.state is State.LOGOUT


@readonly
def test_authenticate_with_an_unknown_mechanism_is_no(store):
    session = new_session(store)
    assert last(run(session, "a1 AUTHENTICATE CRAM-MD5")).startswith("a1 NO")
    assert not session.expecting_sasl


# --------------------------------------------------------------------------- states and bad input


def state_session(store: Store, state: str) -> IMAPSession:
    if state == "not-authenticated":
        return new_session(store)
    if state == "authenticated":
        return logged_in(store)
    return selected(store)


@readonly
@pytest.mark.parametrize(
    ("state", "command"),
    [
        ("not-authenticated", "x1 SELECT INBOX"),
        ("not-authenticated", 'x1 LIST "" *'),
        ("not-authenticated", "x1 APPEND INBOX {3+}\r\nabc"),
        ("not-authenticated", "x1 IDLE"),
        ("not-authenticated", "x1 FETCH 1 FLAGS"),
        ("authenticated", "x1 FETCH 1 FLAGS"),
        ("authenticated", "x1 STORE 1 +FLAGS (\\Seen)"),
        ("authenticated", "x1 SEARCH ALL"),
        ("authenticated", "x1 EXPUNGE"),
        ("authenticated", "x1 CLOSE"),
        ("authenticated", "x1 UNSELECT"),
        ("authenticated", "x1 COPY 1 Archive"),
        ("authenticated", "x1 UID FETCH 1 FLAGS"),
        ("authenticated", f"x1 LOGIN {ALICE} alice-secret"),
        ("authenticated", "x1 AUTHENTICATE PLAIN"),
        ("authenticated", "x1 STARTTLS"),
        ("selected", f"x1 LOGIN {ALICE} alice-secret"),
    ],
)
def test_a_command_in_the_wrong_state_is_bad_with_a_clear_text(store, state, command):
    session = state_session(store, state)
    before = session.state
    lines = run(session, command, exact=True)
    assert len(lines) == 1, lines
    name = command.split()[1] if command.split()[1] != "UID" else command.split()[2]
    assert lines[0].startswith(f"x1 BAD {name} is only valid"), lines
    assert session.state is before
    assert not session.expecting_sasl and not session.idling


@readonly
@pytest.mark.parametrize("state", ["not-authenticated", "authenticated", "selected"])
def test_capability_and_noop_work_in_every_state(store, state):
    session = state_session(store, state)
    assert len(ok(run(session, "n1 NOOP"), "n1")) == 0
    assert ok(run(session, "n2 CAPABILITY"), "n2")[0].startswith("* CAPABILITY IMAP4rev1")


@readonly
def test_ten_bad_commands_in_a_row_end_with_bye_and_close(store):
    session = new_session(store)
    for n in range(9):
        response = send(session, f"b{n} FETCH 1 FLAGS")
        assert response.lines[-1].startswith(b"b%d BAD" % n) and not response.close
    response = send(session, "b9 BOGUS")
    lines = [line.decode() for line in response.lines]
    assert lines[0].startswith("b9 BAD")
    assert lines[-1].startswith("* BYE")
    assert response.close and session.state is State.LOGOUT
    assert send(session, "c1 NOOP").lines[0].startswith(b"* BYE")


@readonly
def test_a_good_command_resets_the_bad_count(store):
    session = new_session(store)
    for _ in range(3):
        for n in range(9):
            assert not send(session, f"b{n} FOO").close
        assert last(run(session, "n1 NOOP")).startswith("n1 OK")
    assert session.state is State.NOT_AUTHENTICATED


@readonly
@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b" ",
        b"a1",
        b"a1 ",
        b"\xff\xfe\x00 garbage",
        b"\x80\x81 NOOP",
        b"a1 \x00\x01\x02",
        b"a1 BOGUS command",
        b"a1 UID NOOP",
        b"a1 FETCH",
        b"a1 LOGIN {5}",
        b"a1 LOGIN {99}\r\nshort",
        b'a1 SELECT "INBOX',
        b"a1 FETCH 1 BODY[1.2.x]",
        b"a1 FETCH 1 (FLAGS",
        b"a1 SEARCH (((((",
        b"+ x",
        b"(((",
        b"* OK hello",
        b"a1 STORE 1 +FLAGS (\\Seen",
        b"a1 APPEND INBOX {3}\r\nab",
        b"a1 " + b"\xc3\x28" * 50,
        b"*" * 5000,
    ],
)
def test_garbage_gets_bad_and_never_python_text(store, garbage):
    for session in (new_session(store), selected(store)):
        response = send(session, garbage, exact=True)
        lines = [line.decode("utf-8", "replace") for line in response.lines]
        assert len(lines) == 1, lines
        assert re.match(r"(\*|a1) BAD \S", lines[0]), lines
        assert not response.close
        assert last(run(session, "n1 NOOP")).startswith("n1 OK")


def test_store_failure_is_serverbug_without_python_text(store, monkeypatch):
    session = selected(store)

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire at /secret/path")

    monkeypatch.setattr(store, "read", broken)
    lines = run(session, "f1 FETCH 1 BODY[]")
    assert lines[-1] == "f1 NO [SERVERBUG] internal server error"
    assert not any("secret" in line or "fire" in line for line in lines)
    monkeypatch.setattr(store, "messages", broken)
    lines = run(session, "s1 STATUS Archive (MESSAGES)")
    assert lines[-1].startswith("s1 NO [SERVERBUG]")
    assert not any("secret" in line for line in lines)
    assert session.state is State.SELECTED


def test_check_and_a_command_typed_with_its_crlf(store):
    session = selected(store)
    assert run(session, "k1 CHECK") == ["k1 OK CHECK completed"]
    assert run(session, "n1 NOOP\r\n") == ["n1 OK NOOP completed"]
    store.deliver(ALICE, FRESH)
    assert run(session, "k2 CHECK") == ["* 4 EXISTS", "* 1 RECENT", "k2 OK CHECK completed"]


# --------------------------------------------------------------------------- LOGOUT


@readonly
@pytest.mark.parametrize("state", ["not-authenticated", "authenticated", "selected"])
def test_logout_says_bye_then_ok_and_closes(store, state):
    session = state_session(store, state)
    response = send(session, "z1 LOGOUT")
    lines = [line.decode() for line in response.lines]
    assert len(lines) == 2
    assert lines[0].startswith("* BYE")
    assert lines[1] == "z1 OK LOGOUT completed"
    assert response.close
    assert session.state is State.LOGOUT and session.selected is None
    after = send(session, "z2 NOOP")
    assert after.close and after.lines[0].startswith(b"* BYE")


def test_logout_does_not_expunge(store):
    session = selected(store)
    run(session, "s1 STORE 1 +FLAGS.SILENT (\\Deleted)")
    run(session, "z1 LOGOUT")
    assert uids(store) == [1, 2, 3]


# --------------------------------------------------------------------------- SELECT, EXAMINE


@readonly
def test_select_responses(store):
    session = logged_in(store)
    lines = run(session, "s1 SELECT INBOX")
    assert lines[-1] == "s1 OK [READ-WRITE] SELECT completed"
    flags_line = next(line for line in lines if line.startswith("* FLAGS"))
    listed = flags_line.removeprefix("* FLAGS (").removesuffix(")").split()
    for flag in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "project"):
        assert flag in listed
    assert "* 3 EXISTS" in lines
    assert "* 0 RECENT" in lines
    found = codes(lines)
    assert found["UNSEEN"] == "2"  # the first message without \Seen
    permanent = found["PERMANENTFLAGS"].strip("()").split()
    assert "\\*" in permanent and "\\Seen" in permanent and "\\Deleted" in permanent
    assert "\\Recent" not in permanent
    assert int(found["UIDVALIDITY"]) == store.uidvalidity(ALICE, INBOX)
    assert int(found["UIDNEXT"]) == store.uidnext(ALICE, INBOX) == 4
    assert session.state is State.SELECTED
    assert session.selected is not None and session.selected.folder == INBOX


def test_select_without_unseen_messages_sends_no_unseen(store):
    for uid in (2, 3):
        store.add_flags(ALICE, INBOX, uid, ["\\Seen"])
    lines = run(logged_in(store), "s1 SELECT INBOX")
    assert "UNSEEN" not in codes(lines)


@readonly
def test_select_inbox_in_any_case_and_an_empty_folder(store):
    session = logged_in(store)
    assert "* 3 EXISTS" in ok(run(session, "s1 SELECT inbox"), "s1")
    lines = ok(run(session, "s2 SELECT Sent"), "s2")
    assert "* 0 EXISTS" in lines
    assert codes(lines)["UIDNEXT"] == "1"
    assert session.selected.folder == "Sent"


@readonly
def test_examine_responses(store):
    session = logged_in(store)
    lines = run(session, "e1 EXAMINE INBOX")
    assert lines[-1] == "e1 OK [READ-ONLY] EXAMINE completed"
    assert "* 3 EXISTS" in lines
    found = codes(lines)
    assert found["PERMANENTFLAGS"] == "()"
    assert int(found["UIDVALIDITY"]) == store.uidvalidity(ALICE, INBOX)
    assert session.state is State.SELECTED and session.selected.read_only


@readonly
@pytest.mark.parametrize("verb", ["SELECT", "EXAMINE"])
def test_a_failed_select_leaves_no_mailbox_selected(store, verb):
    """RFC 3501 §6.3.1: a failed SELECT deselects the mailbox that was selected."""
    session = selected(store)
    lines = run(session, f"s2 {verb} Nope")
    assert len(lines) == 1 and lines[0].startswith("s2 NO [NONEXISTENT]")
    assert session.state is State.AUTHENTICATED and session.selected is None
    assert last(run(session, "f1 FETCH 1 FLAGS")).startswith("f1 BAD")


@pytest.mark.parametrize(
    "command",
    [
        "x1 STORE 1 +FLAGS (\\Deleted)",
        "x1 UID STORE 1 FLAGS ()",
        "x1 EXPUNGE",
        "x1 UID EXPUNGE 1:*",
        "x1 MOVE 1 Archive",
    ],
)
def test_examine_forbids_changes(store, command):
    store.add_flags(ALICE, INBOX, 3, ["\\Deleted"])
    session = selected(store, examine=True)
    lines = run(session, command)
    assert lines[-1].startswith("x1 NO [READ-ONLY]")
    assert uids(store) == [1, 2, 3]
    assert flags(store, 1) == {"\\Seen", "\\Answered"}
    assert flags(store, 3) == {"\\Deleted"}
    assert uids(store, "Archive") == []


def test_examine_allows_copy(store):
    session = selected(store, examine=True)
    assert last(run(session, "c1 COPY 1 Archive")).startswith("c1 OK [COPYUID ")
    assert len(uids(store, "Archive")) == 1


@readonly
def test_examine_fetch_body_does_not_set_seen(store):
    session = selected(store, examine=True)
    lines = ok(run(session, "f1 FETCH 2:3 (BODY[] RFC822.TEXT)"), "f1")
    items = fetched(lines)
    assert items[3]["BODY[]"] == NOTE
    assert all("FLAGS" not in item for item in items.values())
    assert "\\Seen" not in flags(store, 2) and "\\Seen" not in flags(store, 3)


def test_examine_shows_recent_without_taking_it(store, recent):
    recent.claim(ALICE, INBOX, [1, 2, 3])  # a session saw these; what comes next is recent
    store.deliver(ALICE, FRESH)
    examiner = logged_in(store, recent)
    assert "* 1 RECENT" in run(examiner, "e1 EXAMINE INBOX")
    assert "\\Recent" in told_flags(run(examiner, "f1 FETCH 4 FLAGS"))[4]
    assert last(run(examiner, "f2 FETCH 4 BODY[]")).startswith("f2 OK")
    assert "\\Seen" not in flags(store, 4)
    first = logged_in(store, recent)
    assert "* 1 RECENT" in run(first, "s1 SELECT INBOX")  # EXAMINE left it to be taken
    second = logged_in(store, recent)
    assert "* 0 RECENT" in run(second, "s1 SELECT INBOX")


@readonly
def test_after_a_restart_every_message_is_recent_once(store):
    """RFC 3501 §2.3.2: when the server cannot tell whether another session was told
    about a message first, the message SHOULD be considered recent."""
    restarted = RecentFlags()  # a new server process: it knows nothing of earlier sessions
    first = logged_in(store, restarted)
    assert "* 3 RECENT" in run(first, "s1 SELECT INBOX")
    assert search_result(run(first, "q1 SEARCH RECENT"), "q1") == [1, 2, 3]
    second = logged_in(store, restarted)
    assert "* 0 RECENT" in run(second, "s1 SELECT INBOX")


# --------------------------------------------------------------------------- CREATE, DELETE, RENAME


def test_create_makes_missing_parents_and_drops_a_trailing_delimiter(store):
    session = logged_in(store)
    assert run(session, "c1 CREATE Work.Projects.") == ["c1 OK CREATE completed"]
    folders = store.folders(ALICE)
    assert "Work.Projects" in folders and "Work" in folders
    assert "Work.Projects." not in folders


def test_create_in_selected_state_and_modified_utf7_names(store):
    session = selected(store)
    ok(run(session, "c1 CREATE Entw&APw-rfe"), "c1")
    assert "Entwürfe" in store.folders(ALICE)
    lines = ok(run(session, 'l1 LIST "" Entw*'), "l1")
    assert lines == ['* LIST (\\HasNoChildren) "." "Entw&APw-rfe"']


@readonly
@pytest.mark.parametrize("name", ['"a/b"', "a..b", '"Work%"'])
def test_a_name_the_store_refuses_is_no_cannot_not_bad(store, name):
    """RFC 3501 §6.3.3: a CREATE the server cannot do is NO; BAD is for syntax errors
    (and ten BADs in a row would end the session)."""
    session = logged_in(store)
    for tag in ("c1", "c2"):
        lines = run(session, f"{tag} CREATE {name}")
        assert len(lines) == 1 and lines[0].startswith(f"{tag} NO [CANNOT]"), lines
    assert not any("/" in f or ".." in f or "%" in f for f in store.folders(ALICE))


@readonly
def test_a_name_that_is_not_modified_utf7_is_bad(store):
    lines = run(logged_in(store), "c1 CREATE &Jjo")  # an unterminated base64 run
    assert len(lines) == 1 and lines[0].startswith("c1 BAD "), lines


@readonly
@pytest.mark.parametrize("name", ["INBOX", "inbox", "Sent"])
def test_create_an_existing_mailbox_is_no(store, name):
    lines = run(logged_in(store), f"c1 CREATE {name}")
    assert len(lines) == 1 and lines[0].startswith("c1 NO [ALREADYEXISTS]")


def test_delete_removes_the_mailbox_and_its_messages(store):
    session = logged_in(store)
    run(session, "c1 CREATE Work")
    store.deliver(ALICE, NOTE, folder="Work")
    old_uidvalidity = store.uidvalidity(ALICE, "Work")
    assert run(session, "d1 DELETE Work") == ["d1 OK DELETE completed"]
    assert "Work" not in store.folders(ALICE)
    ok(run(session, "c2 CREATE Work"), "c2")
    lines = run(session, "s1 SELECT Work")
    assert "* 0 EXISTS" in lines
    # RFC 3501 §6.3.4: the new incarnation must not reuse the old UIDs
    found = codes(lines)
    assert int(found["UIDVALIDITY"]) != old_uidvalidity or int(found["UIDNEXT"]) > 1


def test_delete_keeps_children_and_lists_the_parent_noselect(store):
    session = logged_in(store)
    run(session, "c1 CREATE Work.Projects")
    ok(run(session, "d1 DELETE Work"), "d1")
    assert "Work.Projects" in store.folders(ALICE) and "Work" not in store.folders(ALICE)
    lines = ok(run(session, 'l1 LIST "" Work*'), "l1")
    assert lines == [
        '* LIST (\\Noselect \\HasChildren) "." "Work"',
        '* LIST (\\HasNoChildren) "." "Work.Projects"',
    ]
    assert last(run(session, "d2 DELETE Work")).startswith("d2 NO")


@readonly
@pytest.mark.parametrize(
    ("command", "code"),
    [
        ("d1 DELETE INBOX", ""),
        ("d1 DELETE inbox", ""),
        ("d1 DELETE Nope", "[NONEXISTENT]"),
    ],
)
def test_delete_refusals(store, command, code):
    lines = run(logged_in(store), command)
    assert len(lines) == 1 and lines[0].startswith(f"d1 NO {code}".rstrip()), lines
    assert INBOX in store.folders(ALICE)


def test_delete_of_the_selected_mailbox_is_refused_and_it_stays(store):
    session = logged_in(store)
    run(session, "c1 CREATE Work")
    store.deliver(ALICE, NOTE, folder="Work")
    run(session, "s1 SELECT Work")
    lines = run(session, "d1 DELETE Work")
    assert lines[-1].startswith("d1 NO [INUSE]")
    assert "Work" in store.folders(ALICE) and len(uids(store, "Work")) == 1
    assert session.state is State.SELECTED


def test_rename_moves_messages_and_children(store):
    session = logged_in(store)
    run(session, "c1 CREATE Work.Projects")
    info = store.deliver(ALICE, NOTE, folder="Work")
    assert run(session, "r1 RENAME Work Play") == ["r1 OK RENAME completed"]
    folders = store.folders(ALICE)
    assert "Play" in folders and "Play.Projects" in folders
    assert "Work" not in folders and "Work.Projects" not in folders
    assert uids(store, "Play") == [info.uid]
    assert store.read(ALICE, "Play", info.uid) == NOTE


@readonly
@pytest.mark.parametrize(
    ("command", "code"),
    [
        ("r1 RENAME INBOX Old", "[CANNOT]"),
        ("r1 RENAME Nope Other", "[NONEXISTENT]"),
        ("r1 RENAME Sent Trash", "[ALREADYEXISTS]"),
    ],
)
def test_rename_refusals(store, command, code):
    before = store.folders(ALICE)
    lines = run(logged_in(store), command)
    assert len(lines) == 1 and lines[0].startswith(f"r1 NO {code}"), lines
    assert store.folders(ALICE) == before


# --------------------------------------------------------------------------- SUBSCRIBE, LSUB, LIST


def list_entries(lines: list[str], verb: str = "LIST") -> dict[str, list[str]]:
    """{mailbox name as sent: attributes} of the LIST (or LSUB) lines; checks the delimiter."""
    entries = {}
    for line in lines:
        if line.startswith(f"* {verb} "):
            attributes, delimiter, name = parse_values(line.removeprefix(f"* {verb} "))
            assert delimiter == b"."
            entries[name.decode() if isinstance(name, bytes) else name] = attributes
    return entries


def test_subscribe_unsubscribe_and_lsub(store):
    session = logged_in(store)
    defaults = list_entries(ok(run(session, 'l1 LSUB "" *'), "l1"), "LSUB")
    assert set(defaults) == {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"}
    run(session, "c1 CREATE Work")
    assert run(session, "s1 SUBSCRIBE Work") == ["s1 OK SUBSCRIBE completed"]
    assert run(session, "u1 UNSUBSCRIBE Sent") == ["u1 OK UNSUBSCRIBE completed"]
    lsub = list_entries(ok(run(session, 'l2 LSUB "" *'), "l2"), "LSUB")
    assert "Work" in lsub and "Sent" not in lsub
    assert "Work" in Subscriptions(store, ALICE).names()
    assert "Sent" in store.folders(ALICE)  # unsubscribing keeps the mailbox


@readonly
def test_subscribe_to_a_missing_mailbox_is_no(store):
    lines = run(logged_in(store), "s1 SUBSCRIBE Nope")
    assert len(lines) == 1 and lines[0].startswith("s1 NO")
    assert "Nope" not in Subscriptions(store, ALICE).names()


def test_lsub_percent_shows_an_unsubscribed_parent_as_noselect(store):
    """RFC 3501 §6.3.9: foo.bar subscribed, foo not: LSUB "" % gives foo \\Noselect."""
    session = logged_in(store)
    run(session, "c1 CREATE Work.Projects")
    run(session, "s1 SUBSCRIBE Work.Projects")
    entries = list_entries(ok(run(session, 'l1 LSUB "" %'), "l1"), "LSUB")
    assert "\\Noselect" in entries["Work"]
    assert "Work.Projects" not in entries


@readonly
def test_lsub_and_list_with_an_empty_pattern(store):
    session = logged_in(store)
    assert ok(run(session, 'l1 LIST "" ""'), "l1") == ['* LIST (\\Noselect) "." ""']
    assert ok(run(session, 'l2 LSUB "" ""'), "l2") == ['* LSUB (\\Noselect) "." ""']


def test_list_star_lists_every_folder_with_special_use_attributes(store):
    session = logged_in(store)
    run(session, "c1 CREATE Work.Projects")
    lines = ok(run(session, 'l1 LIST "" *'), "l1")
    entries = list_entries(lines)
    assert set(entries) == {
        "INBOX",
        "Archive",
        "Drafts",
        "Junk",
        "Sent",
        "Trash",
        "Work",
        "Work.Projects",
    }
    assert len(lines) == len(entries)  # each once
    for name, attribute in [
        ("Sent", "\\Sent"),
        ("Drafts", "\\Drafts"),
        ("Trash", "\\Trash"),
        ("Junk", "\\Junk"),
        ("Archive", "\\Archive"),
    ]:
        assert attribute in entries[name]
    assert "\\HasChildren" in entries["Work"]
    assert "\\HasNoChildren" in entries["Work.Projects"]
    assert not any(a in entries["INBOX"] for a in ("\\Sent", "\\Noselect"))


def test_list_percent_stops_at_the_delimiter(store):
    session = logged_in(store)
    run(session, "c1 CREATE Work.Projects.Old")
    top = list_entries(ok(run(session, 'l1 LIST "" %'), "l1"))
    assert "Work" in top and "INBOX" in top
    assert not any("." in name for name in top)
    assert list(list_entries(ok(run(session, 'l2 LIST "" Work.%'), "l2"))) == ["Work.Projects"]
    assert list(list_entries(ok(run(session, 'l3 LIST "Work." %'), "l3"))) == ["Work.Projects"]
    deep = list_entries(ok(run(session, 'l4 LIST "Work." *'), "l4"))
    assert list(deep) == ["Work.Projects", "Work.Projects.Old"]
    assert list(list_entries(ok(run(session, 'l5 LIST "" inbox'), "l5"))) == ["INBOX"]
    assert ok(run(session, 'l6 LIST "" Nothing*'), "l6") == []


def test_list_selection_subscribed(store):
    session = logged_in(store)
    run(session, "c1 CREATE Work")
    run(session, "c2 CREATE Play")
    run(session, "s1 SUBSCRIBE Work")
    Subscriptions(store, ALICE).subscribe("Ghost")  # subscribed, never created
    entries = list_entries(ok(run(session, 'l1 LIST (SUBSCRIBED) "" *'), "l1"))
    assert "Play" not in entries
    assert all("\\Subscribed" in attributes for attributes in entries.values())
    assert "Work" in entries and "INBOX" in entries
    assert "\\NonExistent" in entries["Ghost"]  # RFC 5258 §3.1
    assert "\\NonExistent" not in entries["Work"]


def test_list_return_subscribed_and_special_use(store):
    session = logged_in(store)
    run(session, "c1 CREATE Work")
    entries = list_entries(ok(run(session, 'l1 LIST "" * RETURN (SUBSCRIBED)'), "l1"))
    assert "Work" in entries
    assert "\\Subscribed" in entries["INBOX"] and "\\Subscribed" not in entries["Work"]
    special = list_entries(ok(run(session, 'l2 LIST (SPECIAL-USE) "" *'), "l2"))
    assert set(special) == {"Sent", "Drafts", "Trash", "Junk", "Archive"}
    returned = list_entries(ok(run(session, 'l3 LIST "" * RETURN (SPECIAL-USE)'), "l3"))
    assert "\\Sent" in returned["Sent"] and "Work" in returned


@readonly
def test_namespace(store):
    lines = run(logged_in(store), "n1 NAMESPACE")
    assert lines == ['* NAMESPACE (("" ".")) NIL NIL', "n1 OK NAMESPACE completed"]


@readonly
def test_enable_answers_enabled_with_nothing_enabled(store):
    for session in (logged_in(store), selected(store)):
        assert run(session, "e1 ENABLE CONDSTORE UTF8=ACCEPT") == [
            "* ENABLED",
            "e1 OK ENABLE completed",
        ]
    assert last(run(new_session(store), "e2 ENABLE CONDSTORE")).startswith("e2 BAD")


# --------------------------------------------------------------------------- STATUS


def status_values(lines: list[str]) -> tuple[str, dict[str, int]]:
    line = next(line for line in lines if line.startswith("* STATUS "))
    name, items = parse_values(line.removeprefix("* STATUS "))
    values = {str(k): int(v) for k, v in zip(items[0::2], items[1::2], strict=True)}
    return (name.decode() if isinstance(name, bytes) else name), values


def test_status_values_match_the_store(store, recent):
    recent.claim(ALICE, INBOX, [1, 2, 3])
    store.deliver(ALICE, FRESH)
    session = logged_in(store, recent)
    lines = run(session, "s1 STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)")
    assert lines[-1] == "s1 OK STATUS completed"
    name, values = status_values(lines)
    assert name == "INBOX"
    assert values == {
        "MESSAGES": 4,
        "RECENT": 1,
        "UIDNEXT": store.uidnext(ALICE, INBOX),
        "UIDVALIDITY": store.uidvalidity(ALICE, INBOX),
        "UNSEEN": sum(1 for info in store.messages(ALICE) if "\\Seen" not in info.flags),
    }
    assert values["UIDNEXT"] == 5 and values["UNSEEN"] == 3
    # STATUS only looks: the message is still recent for the next SELECT
    assert "* 1 RECENT" in run(session, "s2 SELECT INBOX")


@readonly
@pytest.mark.parametrize("item", ["MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN"])
def test_status_each_item_alone(store, item):
    lines = ok(run(logged_in(store), f"s1 STATUS Archive ({item})"), "s1")
    name, values = status_values(lines)
    assert name == "Archive"
    expected = {
        "MESSAGES": 0,
        "RECENT": 0,
        "UIDNEXT": 1,
        "UIDVALIDITY": store.uidvalidity(ALICE, "Archive"),
        "UNSEEN": 0,
    }
    assert values == {item: expected[item]}


@readonly
def test_status_of_a_missing_mailbox_is_no(store):
    lines = run(logged_in(store), "s1 STATUS Nope (MESSAGES)")
    assert len(lines) == 1 and lines[0].startswith("s1 NO [NONEXISTENT]")


def test_status_in_selected_state_sees_changes(store):
    session = selected(store)
    run(session, "s0 STORE 2 +FLAGS (\\Seen)")
    _, values = status_values(run(session, "s1 STATUS INBOX (MESSAGES UNSEEN)"))
    assert values == {"MESSAGES": 3, "UNSEEN": 1}


# --------------------------------------------------------------------------- APPEND


def append(session: IMAPSession, tag: str, head: str, message: bytes) -> list[str]:
    command = f"{tag} APPEND {head} {{{len(message)}}}\r\n".encode() + message
    return run(session, command, exact=True)


def appenduid(line: str) -> tuple[int, int]:
    match = re.match(r"\S+ OK \[APPENDUID (\d+) (\d+)\] ", line)
    assert match, line
    return int(match.group(1)), int(match.group(2))


def test_append_with_flags_and_date(store):
    session = logged_in(store)
    lines = append(
        session, "a1", 'Archive (\\Seen \\Flagged $Work) "17-Jul-1996 02:44:25 -0700"', FRESH
    )
    assert len(lines) == 1
    uidvalidity, uid = appenduid(lines[0])
    assert uidvalidity == store.uidvalidity(ALICE, "Archive")
    assert uids(store, "Archive") == [uid]
    info = store.get(ALICE, "Archive", uid)
    assert set(info.flags) == {"\\Seen", "\\Flagged", "$Work"}
    assert store.read(ALICE, "Archive", uid) == FRESH
    assert info.internaldate == datetime(1996, 7, 17, 9, 44, 25, tzinfo=UTC).timestamp()
    run(session, "s1 SELECT Archive")
    items = fetched(ok(run(session, "f1 FETCH 1 (INTERNALDATE RFC822.SIZE)"), "f1"))
    assert items[1]["INTERNALDATE"] == b"17-Jul-1996 09:44:25 +0000"
    assert items[1]["RFC822.SIZE"] == str(len(FRESH))


def test_append_without_flags_or_date(store):
    session = logged_in(store)
    uidvalidity, uid = appenduid(append(session, "a1", "INBOX", FRESH)[-1])
    assert (uidvalidity, uid) == (store.uidvalidity(ALICE, INBOX), 4)
    assert flags(store, 4) == set()
    assert abs(store.get(ALICE, INBOX, 4).internaldate - datetime.now(UTC).timestamp()) < 60


def test_append_with_a_literal_plus(store):
    session = logged_in(store)
    command = f"a1 APPEND Drafts (\\Draft) {{{len(FRESH)}+}}\r\n".encode() + FRESH
    lines = run(session, command, exact=True)
    _, uid = appenduid(lines[-1])
    assert store.read(ALICE, "Drafts", uid) == FRESH
    assert flags(store, uid, "Drafts") == {"\\Draft"}


@readonly
def test_append_to_a_missing_mailbox_is_trycreate(store):
    lines = append(logged_in(store), "a1", "Nope", FRESH)
    assert len(lines) == 1 and lines[0].startswith("a1 NO [TRYCREATE]")
    assert "Nope" not in store.folders(ALICE)


@readonly
def test_append_with_a_bad_flag_is_bad(store):
    lines = append(logged_in(store), "a1", "INBOX (\\Bogus)", FRESH)
    assert lines[-1].startswith("a1 BAD")
    assert uids(store) == [1, 2, 3]


def test_append_to_the_selected_mailbox_announces_it(store):
    session = selected(store)
    lines = append(session, "a1", "INBOX", FRESH)
    assert "* 4 EXISTS" in lines
    assert lines[-1].startswith("a1 OK [APPENDUID ")
    assert numbers_to_uids(session) == [1, 2, 3, 4]


# --------------------------------------------------------------------------- FETCH


@readonly
def test_fetch_flags_internaldate_and_size(store):
    session = selected(store)
    items = fetched(ok(run(session, "f1 FETCH 1:3 (FLAGS INTERNALDATE RFC822.SIZE)"), "f1"))
    assert set(items[1]["FLAGS"]) == {"\\Seen", "\\Answered"}
    assert set(items[2]["FLAGS"]) == {"\\Flagged", "project"}
    assert items[3]["FLAGS"] == []
    assert items[1]["INTERNALDATE"] == b"01-Jan-2024 12:00:00 +0000"
    assert items[3]["INTERNALDATE"] == b"20-Jan-2024 12:00:00 +0000"
    for number, message in ((1, LUNCH), (2, REPORT), (3, NOTE)):
        assert int(items[number]["RFC822.SIZE"]) == len(message)
        assert int(items[number]["RFC822.SIZE"]) == len(store.read(ALICE, INBOX, number))


@readonly
def test_fetch_envelope(store):
    session = selected(store)
    envelope = fetched(ok(run(session, "f1 FETCH 1 ENVELOPE"), "f1"))[1]["ENVELOPE"]
    assert len(envelope) == 10
    date, subject, sender_from, sender, reply_to, to, cc, bcc, in_reply_to, message_id = envelope
    assert date == b"Mon, 1 Jan 2024 10:00:00 +0000"
    assert subject == b"Lunch plans"
    assert sender_from == [[b"Bob", None, b"bob", b"north.test"]]
    assert sender == sender_from and reply_to == sender_from  # RFC 3501 §7.4.2 defaults
    assert to == [[None, None, b"alice", b"north.test"]]
    assert cc == [[None, None, b"carol", b"south.test"]]
    assert bcc is None and in_reply_to is None
    assert message_id == b"<lunch@north.test>"


@readonly
def test_fetch_bodystructure_and_body_of_a_multipart(store):
    session = selected(store)
    items = fetched(ok(run(session, "f1 FETCH 2 (BODYSTRUCTURE BODY)"), "f1"))[2]
    structure, body = items["BODYSTRUCTURE"], items["BODY"]
    for value in (structure, body):
        text_part, html_part = value[0], value[1]
        assert [part.upper() for part in text_part[:2]] == [b"TEXT", b"PLAIN"]
        assert html_part[1].upper() == b"HTML"
        assert value[2].upper() == b"MIXED"
        assert int(text_part[6]) == len(b"Numbers are up.")  # body-fld-octets
    assert len(body) == 3  # BODY has no extension data
    assert len(structure) > 3  # BODYSTRUCTURE has (RFC 3501 §7.4.2)
    assert [p.upper() for p in structure[3][0::2]] == [b"BOUNDARY"]


@readonly
def test_fetch_body_sections(store):
    session = selected(store)
    command = (
        "f1 FETCH 2 (BODY.PEEK[] BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY.PEEK[1] "
        "BODY.PEEK[2] BODY.PEEK[1.MIME] BODY.PEEK[HEADER.FIELDS (SUBJECT)] "
        "BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT DATE)])"
    )
    items = fetched(ok(run(session, command), "f1"))[2]
    assert items["BODY[]"] == REPORT
    assert items["BODY[HEADER]"] == REPORT_HEADER
    assert items["BODY[TEXT]"] == REPORT_TEXT
    assert items["BODY[1]"] == b"Numbers are up."
    assert items["BODY[2]"] == b"<p>Numbers are up.</p>"
    assert items["BODY[1.MIME]"] == b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    assert items["BODY[HEADER.FIELDS (SUBJECT)]"] == b"Subject: Quarterly report\r\n\r\n"
    rest = items["BODY[HEADER.FIELDS.NOT (SUBJECT DATE)]"]
    assert b"Subject:" not in rest and b"Date:" not in rest and b"From: Carol" in rest
    assert "FLAGS" not in items


@readonly
def test_fetch_body_one_of_a_single_part_message_is_its_text(store):
    items = fetched(ok(run(selected(store), "f1 FETCH 3 BODY.PEEK[1]"), "f1"))[3]
    assert items["BODY[1]"] == b"Short.\r\n"


@readonly
def test_fetch_partials(store):
    session = selected(store)
    command = "f1 FETCH 1 (BODY.PEEK[]<0.10> BODY.PEEK[TEXT]<6.2> BODY.PEEK[]<5000.10>)"
    items = fetched(ok(run(session, command), "f1"))[1]
    assert items["BODY[]<0>"] == LUNCH[:10]
    assert items["BODY[TEXT]<6>"] == b"at"
    assert items["BODY[]<5000>"] == b""  # RFC 3501 §6.4.5: beyond the end is empty


def test_fetch_body_sets_seen_and_reports_flags(store):
    session = selected(store)
    assert "\\Seen" not in flags(store, 3)
    lines = ok(run(session, "f1 FETCH 3 BODY[]"), "f1")
    assert len(lines) == 1
    items = fetched(lines)[3]
    assert items["BODY[]"] == NOTE
    assert "\\Seen" in items["FLAGS"]
    assert flags(store, 3) == {"\\Seen"}
    assert told_flags(run(session, "f2 FETCH 3 FLAGS"))[3] == {"\\Seen"}


@readonly
def test_fetch_body_peek_does_not_set_seen(store):
    session = selected(store)
    items = fetched(ok(run(session, "f1 FETCH 3 (BODY.PEEK[] BODY.PEEK[TEXT])"), "f1"))[3]
    assert items["BODY[]"] == NOTE and items["BODY[TEXT]"] == b"Short.\r\n"
    assert "FLAGS" not in items
    assert flags(store, 3) == set()
    assert ok(run(session, "n1 NOOP"), "n1") == []


@pytest.mark.parametrize(
    ("item", "content", "sets_seen"),
    [
        ("RFC822", NOTE, True),
        ("RFC822.HEADER", NOTE[: NOTE.index(b"\r\n\r\n") + 4], False),
        ("RFC822.TEXT", b"Short.\r\n", True),
    ],
)
def test_fetch_rfc822_items(store, item, content, sets_seen):
    session = selected(store)
    items = fetched(ok(run(session, f"f1 FETCH 3 {item}"), "f1"))[3]
    assert items[item] == content
    assert ("FLAGS" in items) is sets_seen
    assert ("\\Seen" in flags(store, 3)) is sets_seen


@readonly
@pytest.mark.parametrize(
    ("macro", "names"),
    [
        ("ALL", {"FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"}),
        ("FAST", {"FLAGS", "INTERNALDATE", "RFC822.SIZE"}),
        ("FULL", {"FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"}),
    ],
)
def test_fetch_macros(store, macro, names):
    session = selected(store)
    items = fetched(ok(run(session, f"f1 FETCH 1:3 {macro}"), "f1"))
    assert sorted(items) == [1, 2, 3]
    for item in items.values():
        assert set(item) == names
    assert flags(store, 3) == set()  # no macro sets \Seen


def test_uid_fetch_includes_the_uid_and_uses_uids(store):
    store.expunge(ALICE, INBOX, [1])
    session = selected(store)  # message 1 is UID 2, message 2 is UID 3
    lines = ok(run(session, "f1 UID FETCH 3 FLAGS"), "f1")
    assert len(lines) == 1
    number, items = parse_fetch(lines[0])
    assert number == 2 and items["UID"] == "3" and items["FLAGS"] == []
    lines = ok(run(session, "f2 UID FETCH 1:* (UID RFC822.SIZE)"), "f2")
    assert {n: int(items["UID"]) for n, items in fetched(lines).items()} == {1: 2, 2: 3}


@readonly
def test_uid_fetch_of_missing_uids_is_just_ok(store):
    session = selected(store)
    assert run(session, "f1 UID FETCH 50:60 FLAGS") == ["f1 OK FETCH completed"]
    assert run(session, "f2 UID FETCH 7 BODY[]") == ["f2 OK FETCH completed"]
    # RFC 3501 §6.4.8: 50:* always includes the last message
    lines = ok(run(session, "f3 UID FETCH 50:* FLAGS"), "f3")
    assert list(fetched(lines)) == [3]


@readonly
@pytest.mark.parametrize(
    ("sequence", "numbers"),
    [
        ("1:*", [1, 2, 3]),
        ("*", [3]),
        ("3:1", [1, 2, 3]),
        ("*:2", [2, 3]),
        ("3,1", [1, 3]),
        ("2,1:2,2", [1, 2]),
        ("2:2", [2]),
    ],
)
def test_fetch_sequence_sets(store, sequence, numbers):
    lines = ok(run(selected(store), f"f1 FETCH {sequence} (UID)"), "f1")
    found = [parse_fetch(line)[0] for line in lines]
    assert sorted(found) == numbers and len(found) == len(set(found))
    assert all(int(parse_fetch(line)[1]["UID"]) == parse_fetch(line)[0] for line in lines)


@readonly
@pytest.mark.parametrize("sequence", ["4", "0", "1:4", "2,9", "0:*"])
def test_fetch_outside_the_mailbox_is_bad(store, sequence):
    session = selected(store)
    lines = run(session, f"f1 FETCH {sequence} (FLAGS BODY[])")
    assert len(lines) == 1 and lines[0].startswith("f1 BAD"), lines
    assert flags(store, 3) == set()


def test_fetch_a_message_deleted_from_disk_ends_expungeissued(store):
    session = selected(store)
    message_file(store, 2).unlink()  # behind the core's back
    lines = run(session, "f1 FETCH 1:3 (UID BODY.PEEK[])")
    assert lines[-1].startswith("f1 NO [EXPUNGEISSUED]")
    items = fetched(lines)
    assert items[1]["BODY[]"] == LUNCH and items[3]["BODY[]"] == NOTE
    assert 2 not in items or "BODY[]" not in items[2]
    assert not any("EXPUNGE" in line and line.startswith("*") for line in lines)
    assert "* 2 EXPUNGE" in ok(run(session, "n1 NOOP"), "n1")
    assert numbers_to_uids(session) == [1, 3]


def test_fetch_literals_with_8bit_and_empty_values(store):
    message = "Subject: Grüße\r\n\r\nSchöne Grüße\r\n".encode()
    store.deliver(ALICE, message)
    session = selected(store)
    command = "f1 FETCH 4 (BODY.PEEK[] BODY.PEEK[TEXT]<900.9> ENVELOPE)"
    items = fetched(ok(run(session, command), "f1"))[4]
    assert items["BODY[]"] == message
    assert items["BODY[TEXT]<900>"] == b""
    assert items["ENVELOPE"][1] == "Grüße".encode()  # 8-bit: sent as a literal


# --------------------------------------------------------------------------- STORE


def test_store_replace_add_and_remove(store):
    session = selected(store)
    lines = ok(run(session, "s1 STORE 1 FLAGS (\\Flagged \\Draft)"), "s1")
    assert told_flags(lines) == {1: {"\\Flagged", "\\Draft"}}
    assert flags(store, 1) == {"\\Flagged", "\\Draft"}
    lines = ok(run(session, "s2 STORE 1:2 +FLAGS (\\Seen)"), "s2")
    assert told_flags(lines) == {
        1: {"\\Flagged", "\\Draft", "\\Seen"},
        2: {"\\Flagged", "project", "\\Seen"},
    }
    assert flags(store, 2) == {"\\Flagged", "project", "\\Seen"}
    lines = ok(run(session, "s3 STORE 2 -FLAGS (\\Flagged project)"), "s3")
    assert told_flags(lines) == {2: {"\\Seen"}}
    assert flags(store, 2) == {"\\Seen"}
    assert ok(run(session, "s4 STORE 3 FLAGS ()"), "s4") == ["* 3 FETCH (FLAGS ())"]
    assert flags(store, 3) == set()


def test_store_silent_sends_no_fetch(store):
    session = selected(store)
    assert run(session, "s1 STORE 1:3 +FLAGS.SILENT (\\Deleted)") == ["s1 OK STORE completed"]
    assert all("\\Deleted" in flags(store, uid) for uid in (1, 2, 3))
    assert run(session, "s2 STORE 1 FLAGS.SILENT ()") == ["s2 OK STORE completed"]
    assert flags(store, 1) == set()
    assert run(session, "s3 STORE 2 -FLAGS.SILENT (\\Deleted)") == ["s3 OK STORE completed"]
    assert flags(store, 2) == {"\\Flagged", "project"}
    assert ok(run(session, "n1 NOOP"), "n1") == []  # our own changes are no news


def test_store_keywords(store):
    session = selected(store)
    lines = ok(run(session, "s1 STORE 3 +FLAGS ($Work urgent)"), "s1")
    assert told_flags(lines) == {3: {"$Work", "urgent"}}
    assert flags(store, 3) == {"$Work", "urgent"}
    lines = run(logged_in(store), "s2 SELECT INBOX")
    listed = next(line for line in lines if line.startswith("* FLAGS"))
    assert "$Work" in listed and "urgent" in listed
    assert search_result(run(session, "k1 SEARCH KEYWORD urgent"), "k1") == [3]


@readonly
def test_store_of_recent_is_refused_and_changes_nothing(store):
    session = selected(store)
    lines = run(session, "s1 STORE 3 +FLAGS (\\Recent)")
    assert len(lines) == 1 and lines[0].startswith("s1 BAD")
    assert flags(store, 3) == set()


@readonly
@pytest.mark.parametrize("flag", ["\\Bogus", "\\Important", "\\"])
def test_store_of_an_invalid_system_flag_is_bad(store, flag):
    session = selected(store)
    lines = run(session, f"s1 STORE 3 +FLAGS ({flag})")
    assert len(lines) == 1 and lines[0].startswith("s1 BAD")
    assert flags(store, 3) == set()


def test_uid_store_includes_the_uid(store):
    store.expunge(ALICE, INBOX, [1])
    session = selected(store)
    lines = ok(run(session, "s1 UID STORE 3 +FLAGS (\\Seen)"), "s1")
    assert len(lines) == 1
    number, items = parse_fetch(lines[0])
    assert number == 2 and items["UID"] == "3" and set(items["FLAGS"]) == {"\\Seen"}
    assert flags(store, 3) == {"\\Seen"}
    assert run(session, "s2 UID STORE 99 +FLAGS (\\Seen)") == ["s2 OK STORE completed"]


def test_store_keeps_recent_in_the_flags_it_reports(store, recent):
    recent.claim(ALICE, INBOX, [1, 2, 3])
    store.deliver(ALICE, FRESH)
    session = selected(store, recent)
    lines = ok(run(session, "s1 STORE 4 FLAGS (\\Flagged)"), "s1")
    assert told_flags(lines) == {4: {"\\Flagged", "\\Recent"}}
    assert flags(store, 4) == {"\\Flagged"}


@readonly
def test_store_beyond_exists_is_bad(store):
    lines = run(selected(store), "s1 STORE 4 +FLAGS (\\Seen)")
    assert len(lines) == 1 and lines[0].startswith("s1 BAD")


# --------------------------------------------------------------------------- SEARCH


@pytest.fixture(scope="module")
def searcher(template: Path, tmp_path_factory: pytest.TempPathFactory) -> IMAPSession:
    """One session for every SEARCH test (SEARCH changes nothing). Its INBOX:
    1 LUNCH, 2 REPORT, 3 NOTE (\\Deleted \\Draft), 4 FRESH (\\Recent here, 01-Feb-2024)."""
    mail = copy_of(template, tmp_path_factory.mktemp("search") / "store")
    mail.set_flags(ALICE, INBOX, 3, ["\\Deleted", "\\Draft"])
    recent = RecentFlags()
    recent.claim(ALICE, INBOX, [1, 2, 3])
    mail.deliver(ALICE, FRESH, internaldate=noon(2024, 2, 1))
    return selected(mail, recent)


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        ("ALL", [1, 2, 3, 4]),
        ("ANSWERED", [1]),
        ("UNANSWERED", [2, 3, 4]),
        ("DELETED", [3]),
        ("UNDELETED", [1, 2, 4]),
        ("DRAFT", [3]),
        ("UNDRAFT", [1, 2, 4]),
        ("FLAGGED", [2]),
        ("UNFLAGGED", [1, 3, 4]),
        ("SEEN", [1]),
        ("UNSEEN", [2, 3, 4]),
        ("NEW", [4]),
        ("OLD", [1, 2, 3]),
        ("RECENT", [4]),
        ("KEYWORD project", [2]),
        ("UNKEYWORD project", [1, 3, 4]),
        ("BEFORE 10-Jan-2024", [1]),
        ("ON 10-Jan-2024", [2]),
        ("SINCE 10-Jan-2024", [2, 3, 4]),
        ("SENTBEFORE 10-Jan-2024", [1]),
        ("SENTON 10-Jan-2024", [2]),
        ("SENTSINCE 10-Jan-2024", [2, 3]),
        ("FROM bob", [1]),
        ("FROM CAROL", [2]),
        ("TO bob", [3]),
        ("CC carol", [1]),
        ("BCC carol", []),
        ("SUBJECT report", [2]),
        ('SUBJECT "LUNCH PLANS"', [1]),
        ("HEADER X-Tag alpha", [1]),
        ('HEADER X-Tag ""', [1]),
        ("HEADER Message-ID lunch@", [1]),
        ("BODY pizza", [1]),
        ("BODY numbers", [2]),
        ("BODY Subject", []),
        ("TEXT subject", [1, 2, 3, 4]),
        ("TEXT pizza", [1]),
        ("NOT SEEN", [2, 3, 4]),
        ("OR SEEN FLAGGED", [1, 2]),
        ("NOT OR SEEN FLAGGED", [3, 4]),
        ("OR (SEEN ANSWERED) DRAFT", [1, 3]),
        ("SEEN UNSEEN", []),
        ("(SEEN ANSWERED)", [1]),
        ("2:3", [2, 3]),
        ("2,4", [2, 4]),
        ("*", [4]),
        ("3:*", [3, 4]),
        ("1:* UNDELETED", [1, 2, 4]),
        ("UID 2:3", [2, 3]),
        ("UID *", [4]),
        ("CHARSET UTF-8 SUBJECT note", [3]),
        ("charset us-ascii from dave", [3]),
    ],
)
def test_search_keys(searcher, criteria, expected):
    assert search_result(run(searcher, f"q1 SEARCH {criteria}"), "q1") == expected


def test_search_larger_and_smaller_use_the_size(searcher):
    sizes = {info.uid: info.size for info in searcher.store.messages(ALICE)}
    note = sizes[3]
    larger = [uid for uid, size in sizes.items() if size > note]
    smaller = [uid for uid, size in sizes.items() if size < note]
    assert larger and smaller
    assert search_result(run(searcher, f"q1 SEARCH LARGER {note}"), "q1") == larger
    assert search_result(run(searcher, f"q2 SEARCH SMALLER {note}"), "q2") == smaller
    assert search_result(
        run(searcher, f"q3 SEARCH LARGER {note - 1} SMALLER {note + 1}"), "q3"
    ) == [3]


def test_search_with_no_match_is_a_bare_search_line(searcher):
    assert run(searcher, "q1 SEARCH SUBJECT nothing-like-this") == [
        "* SEARCH",
        "q1 OK SEARCH completed",
    ]


def test_uid_search_answers_uids(store):
    store.expunge(ALICE, INBOX, [1])
    session = selected(store)  # 1 -> UID 2, 2 -> UID 3
    assert search_result(run(session, "q1 SEARCH FLAGGED"), "q1") == [1]
    assert search_result(run(session, "q2 UID SEARCH FLAGGED"), "q2") == [2]
    assert search_result(run(session, "q3 UID SEARCH ALL"), "q3") == [2, 3]
    assert search_result(run(session, "q4 UID SEARCH UID 3:*"), "q4") == [3]
    assert search_result(run(session, "q5 UID SEARCH 2"), "q5") == [3]


def test_search_charset_utf8_finds_non_ascii_text(store):
    store.deliver(
        ALICE,
        "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nSchöne Grüße\r\n".encode(),
    )
    session = selected(store)
    word = "Grüß".encode()
    command = b"q1 SEARCH CHARSET UTF-8 SUBJECT {%d}\r\n" % len(word) + word
    assert search_result(run(session, command), "q1") == [4]
    assert search_result(run(session, 'q2 SEARCH CHARSET UTF-8 BODY "schöne"'), "q2") == [4]


@readonly
def test_search_unknown_charset_is_badcharset(store):
    lines = run(selected(store), "q1 SEARCH CHARSET KOI8-R ALL")
    assert len(lines) == 1
    assert lines[0].startswith("q1 NO [BADCHARSET")
    assert "UTF-8" in lines[0]


@readonly
@pytest.mark.parametrize(
    "criteria", ["BOGUS", 'SUBJECT "schöne"', "BEFORE 32-Jan-2024", "LARGER big", "OR SEEN", ""]
)
def test_search_malformed_is_bad(store, criteria):
    lines = run(selected(store), f"q1 SEARCH {criteria}".rstrip())
    assert len(lines) == 1 and lines[0].startswith("q1 BAD"), lines


# ------------------------------------------------------------------- EXPUNGE, CLOSE, UNSELECT


def apply_expunges(numbers: list[int], lines: list[str]) -> list[int]:
    """What a client does with ``* n EXPUNGE`` lines, in order (RFC 3501 §7.4.1)."""
    known = list(numbers)
    for line in lines:
        match = re.fullmatch(r"\* (\d+) EXPUNGE", line)
        if match:
            del known[int(match.group(1)) - 1]
    return known


def test_expunge_responses_keep_the_numbers_right(store):
    for message in (FRESH, FRESH):
        store.deliver(ALICE, message)  # UIDs 4 and 5
    for uid in (1, 3, 4):
        store.add_flags(ALICE, INBOX, uid, ["\\Deleted"])
    session = selected(store)
    lines = ok(run(session, "x1 EXPUNGE"), "x1")
    assert all(re.fullmatch(r"\* \d+ EXPUNGE", line) for line in lines), lines
    assert len(lines) == 3
    assert apply_expunges([1, 2, 3, 4, 5], lines) == [2, 5]
    assert uids(store) == [2, 5]
    assert numbers_to_uids(session) == [2, 5]
    assert run(session, "x2 EXPUNGE") == ["x2 OK EXPUNGE completed"]


def test_uid_expunge_removes_only_the_set(store):
    for uid in (1, 2, 3):
        store.add_flags(ALICE, INBOX, uid, ["\\Deleted"])
    session = selected(store)
    lines = ok(run(session, "x1 UID EXPUNGE 2:3"), "x1")
    assert apply_expunges([1, 2, 3], lines) == [1]
    assert uids(store) == [1]
    assert numbers_to_uids(session) == [1]


def test_uid_expunge_leaves_messages_without_deleted(store):
    store.add_flags(ALICE, INBOX, 2, ["\\Deleted"])
    session = selected(store)
    assert ok(run(session, "x1 UID EXPUNGE 1:*"), "x1") == ["* 2 EXPUNGE"]
    assert uids(store) == [1, 3]


def test_close_expunges_silently_and_deselects(store):
    store.add_flags(ALICE, INBOX, 2, ["\\Deleted"])
    session = selected(store)
    assert run(session, "c1 CLOSE") == ["c1 OK CLOSE completed"]
    assert uids(store) == [1, 3]
    assert session.state is State.AUTHENTICATED and session.selected is None
    assert last(run(session, "f1 FETCH 1 FLAGS")).startswith("f1 BAD")


def test_close_after_examine_does_not_expunge(store):
    store.add_flags(ALICE, INBOX, 2, ["\\Deleted"])
    session = selected(store, examine=True)
    assert run(session, "c1 CLOSE") == ["c1 OK CLOSE completed"]
    assert uids(store) == [1, 2, 3]
    assert session.state is State.AUTHENTICATED


def test_unselect_does_not_expunge(store):
    session = selected(store)
    run(session, "s1 STORE 2 +FLAGS.SILENT (\\Deleted)")
    assert run(session, "u1 UNSELECT") == ["u1 OK UNSELECT completed"]
    assert uids(store) == [1, 2, 3] and "\\Deleted" in flags(store, 2)
    assert session.state is State.AUTHENTICATED and session.selected is None


# --------------------------------------------------------------------------- COPY, MOVE


def copyuid(text: str) -> tuple[int, list[int], list[int]]:
    match = re.search(r"\[COPYUID (\d+) ([\d,:]+) ([\d,:]+)\]", text)
    assert match, text

    def expand(uid_set: str) -> list[int]:
        result = []
        for part in uid_set.split(","):
            low, _, high = part.partition(":")
            result += range(int(low), int(high or low) + 1)
        return result

    return int(match.group(1)), expand(match.group(2)), expand(match.group(3))


def test_copy_reports_copyuid_matching_the_store(store):
    session = selected(store)
    lines = run(session, "c1 COPY 2:3 Archive")
    assert len(lines) == 1 and lines[0].startswith("c1 OK [COPYUID ")
    uidvalidity, source, target = copyuid(lines[0])
    assert uidvalidity == store.uidvalidity(ALICE, "Archive")
    assert source == [2, 3]
    assert target == uids(store, "Archive")
    for old, new in zip(source, target, strict=True):
        assert store.read(ALICE, "Archive", new) == store.read(ALICE, INBOX, old)
        assert flags(store, new, "Archive") == flags(store, old)
        old_date = store.get(ALICE, INBOX, old).internaldate
        assert store.get(ALICE, "Archive", new).internaldate == pytest.approx(old_date, abs=1)
    assert uids(store) == [1, 2, 3]  # COPY leaves the source alone


def test_uid_copy(store):
    store.expunge(ALICE, INBOX, [1])
    session = selected(store)
    lines = run(session, "c1 UID COPY 3 Trash")
    _, source, target = copyuid(lines[-1])
    assert source == [3] and target == uids(store, "Trash")
    assert run(session, "c2 UID COPY 77 Trash")[-1].startswith("c2 OK")
    assert len(uids(store, "Trash")) == 1


@readonly
def test_copy_to_a_missing_mailbox_is_trycreate(store):
    lines = run(selected(store), "c1 COPY 1 Nope")
    assert len(lines) == 1 and lines[0].startswith("c1 NO [TRYCREATE]")
    assert "Nope" not in store.folders(ALICE)


@readonly
def test_copy_beyond_exists_is_bad(store):
    lines = run(selected(store), "c1 COPY 5 Archive")
    assert len(lines) == 1 and lines[0].startswith("c1 BAD")
    assert uids(store, "Archive") == []


def test_move_copyuid_then_expunges_then_ok(store):
    session = selected(store)
    lines = run(session, "m1 MOVE 1,3 Archive")
    assert lines[0].startswith("* OK [COPYUID ")
    uidvalidity, source, target = copyuid(lines[0])
    assert uidvalidity == store.uidvalidity(ALICE, "Archive")
    assert source == [1, 3] and target == uids(store, "Archive")
    expunges = lines[1:-1]
    assert all(re.fullmatch(r"\* \d+ EXPUNGE", line) for line in expunges), lines
    assert apply_expunges([1, 2, 3], expunges) == [2]
    assert lines[-1].startswith("m1 OK")
    assert uids(store) == [2]
    assert store.read(ALICE, "Archive", target[0]) == LUNCH
    assert store.read(ALICE, "Archive", target[1]) == NOTE
    assert flags(store, target[0], "Archive") == {"\\Seen", "\\Answered"}
    assert numbers_to_uids(session) == [2]


def test_uid_move(store):
    store.expunge(ALICE, INBOX, [1])
    session = selected(store)
    lines = run(session, "m1 UID MOVE 3 Trash")
    _, source, target = copyuid(lines[0])
    assert source == [3] and target == uids(store, "Trash")
    assert lines[1:-1] == ["* 2 EXPUNGE"]
    assert uids(store) == [2]


@readonly
def test_move_to_a_missing_mailbox_is_trycreate_and_moves_nothing(store):
    lines = run(selected(store), "m1 MOVE 1:* Nope")
    assert len(lines) == 1 and lines[0].startswith("m1 NO [TRYCREATE]")
    assert uids(store) == [1, 2, 3]


# --------------------------------------------------------------------------- two sessions


def test_flag_changes_of_another_session_come_at_the_next_command(store, recent):
    a, b = selected(store, recent), selected(store, recent)
    run(a, "s1 STORE 3 +FLAGS (\\Flagged)")
    lines = ok(run(b, "n1 NOOP"), "n1")
    assert lines == ["* 3 FETCH (FLAGS (\\Flagged))"]
    assert ok(run(b, "n2 NOOP"), "n2") == []  # told once
    run(a, "s2 STORE 1 FLAGS ()")
    lines = ok(run(b, "q1 SEARCH ALL"), "q1")  # FETCH news may come with SEARCH
    assert "* 1 FETCH (FLAGS ())" in lines


def test_expunge_of_another_session_is_told_at_noop_not_during_fetch_store_search(store, recent):
    """RFC 3501 §7.4.1: no EXPUNGE while answering FETCH, STORE or SEARCH."""
    a, b = selected(store, recent), selected(store, recent)
    run(a, "s1 STORE 2 +FLAGS.SILENT (\\Deleted)")
    ok(run(a, "x1 EXPUNGE"), "x1")
    assert uids(store) == [1, 3]
    for command in ("f1 FETCH 1:* (FLAGS)", "s1 STORE 1 +FLAGS (\\Flagged)", "q1 SEARCH ALL"):
        lines = run(b, command)
        assert lines[-1].startswith(command.split()[0] + " OK"), lines
        assert not any(line.endswith(" EXPUNGE") for line in lines), (command, lines)
    assert "* SEARCH 1 2 3" in run(b, "q2 SEARCH ALL")  # numbers still those of B's view
    # the expunged message itself can no longer be read or changed (RFC 2180 §4.1.2)
    lines = run(b, "f2 FETCH 2 BODY[]")
    assert lines[-1].startswith("f2 NO [EXPUNGEISSUED]")
    lines += run(b, "s2 STORE 2 +FLAGS (\\Seen)")
    assert lines[-1].startswith("s2 NO [EXPUNGEISSUED]")
    assert not any(line.endswith(" EXPUNGE") for line in lines), lines
    lines = ok(run(b, "n1 NOOP"), "n1")
    assert lines == ["* 2 EXPUNGE"]
    assert ok(run(b, "n2 NOOP"), "n2") == []
    assert numbers_to_uids(b) == [1, 3]


def test_expunge_and_delivery_together_keep_exists_right(store, recent):
    a, b = selected(store, recent), selected(store, recent)
    run(a, "s1 STORE 1 +FLAGS.SILENT (\\Deleted)")
    run(a, "x1 EXPUNGE")
    store.deliver(ALICE, FRESH)
    lines = ok(run(b, "f1 FETCH 1 FLAGS"), "f1")
    assert "* 4 EXISTS" in lines  # the expunged one still counts until B is told
    assert not any(line.endswith(" EXPUNGE") for line in lines)
    assert ok(run(b, "n1 NOOP"), "n1") == ["* 1 EXPUNGE"]
    assert numbers_to_uids(b) == [2, 3, 4]


def test_delivery_is_announced_and_recent_goes_to_one_session(store, recent):
    a, b = selected(store, recent), selected(store, recent)
    store.deliver(ALICE, FRESH)
    lines_a = ok(run(a, "n1 NOOP"), "n1")
    assert lines_a == ["* 4 EXISTS", "* 1 RECENT"]
    lines_b = ok(run(b, "n1 NOOP"), "n1")
    assert lines_b == ["* 4 EXISTS", "* 0 RECENT"]
    assert "\\Recent" in told_flags(run(a, "f1 FETCH 4 FLAGS"))[4]
    assert "\\Recent" not in told_flags(run(b, "f1 FETCH 4 FLAGS"))[4]
    assert search_result(run(a, "q1 SEARCH RECENT"), "q1") == [4]
    assert search_result(run(b, "q1 SEARCH RECENT"), "q1") == []
    assert "\\Recent" not in flags(store, 4)  # \Recent is never stored
    assert "* 0 RECENT" in run(logged_in(store, recent), "s1 SELECT INBOX")


def test_idle_reports_news_until_done(store, recent):
    a, b = selected(store, recent), selected(store, recent)
    response = send(a, "i1 IDLE")
    assert [line.decode() for line in response.lines] == ["+ idling"]
    assert response.idle and a.idling
    assert a.updates() == []
    store.deliver(ALICE, FRESH)
    assert a.updates() == [b"* 4 EXISTS", b"* 1 RECENT"]
    assert a.updates() == []
    run(b, "s1 STORE 1 +FLAGS (\\Deleted)")
    updates = [line.decode() for line in a.updates()]
    assert len(updates) == 1
    assert told_flags(updates) == {1: {"\\Seen", "\\Answered", "\\Deleted"}}
    run(b, "x1 EXPUNGE")
    assert a.updates() == [b"* 1 EXPUNGE"]  # EXPUNGE is fine during IDLE (RFC 2177)
    assert run(a, "DONE") == ["i1 OK IDLE terminated"]
    assert not a.idling
    assert numbers_to_uids(a) == [2, 3, 4]


def test_idle_done_is_case_insensitive_and_carries_pending_news(store, recent):
    a = selected(store, recent)
    run(a, "i1 IDLE")
    store.deliver(ALICE, FRESH)
    lines = run(a, "done")
    assert lines == ["* 4 EXISTS", "* 1 RECENT", "i1 OK IDLE terminated"]


@readonly
def test_anything_but_done_during_idle_is_bad(store):
    session = selected(store)
    run(session, "i1 IDLE")
    lines = run(session, "n1 NOOP")
    assert len(lines) == 1 and lines[0].startswith("i1 BAD")
    assert not session.idling
    assert run(session, "n2 NOOP") == ["n2 OK NOOP completed"]


def test_idle_in_authenticated_state(store):
    session = logged_in(store)
    assert run(session, "i1 IDLE") == ["+ idling"]
    store.deliver(ALICE, FRESH)
    assert session.updates() == []
    assert run(session, "DONE") == ["i1 OK IDLE terminated"]
    assert session.state is State.AUTHENTICATED


def test_the_selected_mailbox_deleted_by_another_session(store, recent):
    a = logged_in(store, recent)
    run(a, "c1 CREATE Work")
    store.deliver(ALICE, NOTE, folder="Work")
    store.deliver(ALICE, FRESH, folder="Work")
    run(a, "s1 SELECT Work")
    b = logged_in(store, recent)
    assert last(run(b, "d1 DELETE Work")).startswith("d1 OK")
    lines = run(a, "n1 NOOP")
    assert lines[-1] == "n1 OK NOOP completed"
    assert apply_expunges([1, 2], lines[:-1]) == []
    assert not any("SERVERBUG" in line for line in run(a, "n2 NOOP"))
    assert last(run(a, "f1 FETCH 1 FLAGS")).startswith("f1 BAD")


# --------------------------------------------------------------------------- RFC conformance gaps


def test_expunge_removes_a_message_another_session_marked_deleted(store, recent):
    """RFC 3501 §6.4.3: EXPUNGE removes *all* messages that have \\Deleted set."""
    a, b = selected(store, recent), selected(store, recent)
    run(a, "s1 STORE 2 +FLAGS.SILENT (\\Deleted)")
    lines = run(b, "x1 EXPUNGE")
    assert lines[-1].startswith("x1 OK")
    assert uids(store) == [1, 3], lines
    assert "* 2 EXPUNGE" in lines


def test_expunge_keeps_a_message_another_session_undeleted(store, recent):
    """RFC 3501 §6.4.3: only messages that have \\Deleted set *now* are removed."""
    a, b = selected(store, recent), selected(store, recent)
    run(a, "s1 STORE 2 +FLAGS (\\Deleted)")
    assert told_flags(ok(run(b, "n1 NOOP"), "n1")) == {2: {"\\Flagged", "\\Deleted", "project"}}
    run(a, "s2 STORE 2 -FLAGS (\\Deleted)")
    lines = run(b, "x1 EXPUNGE")
    assert uids(store) == [1, 2, 3], lines  # the message is no longer \Deleted: keep it
    assert "* 2 EXPUNGE" not in lines


def test_close_removes_a_message_another_session_marked_deleted(store, recent):
    """RFC 3501 §6.4.2: CLOSE removes all messages that have \\Deleted set."""
    a, b = selected(store, recent), selected(store, recent)
    run(a, "s1 STORE 3 +FLAGS.SILENT (\\Deleted)")
    assert run(b, "c1 CLOSE") == ["c1 OK CLOSE completed"]
    assert uids(store) == [1, 2]


def test_recent_count_drops_when_a_recent_message_is_expunged(store, recent):
    """RFC 3501 §7.3.2: RECENT is the number of messages with \\Recent set."""
    recent.claim(ALICE, INBOX, [1, 2, 3])
    store.deliver(ALICE, FRESH)  # UID 4
    session = selected(store, recent)
    assert search_result(run(session, "q1 SEARCH RECENT"), "q1") == [4]
    run(session, "s1 STORE 4 +FLAGS.SILENT (\\Deleted)")
    run(session, "x1 EXPUNGE")
    store.deliver(ALICE, FRESH)  # UID 5: the only recent message now
    lines = ok(run(session, "n1 NOOP"), "n1")
    assert search_result(run(session, "q2 SEARCH RECENT"), "q2") == [4]
    assert lines == ["* 4 EXISTS", "* 1 RECENT"]


def test_body_fetch_sets_seen_even_if_the_snapshot_already_had_it(store, recent):
    """RFC 3501 §6.4.5: BODY[] sets \\Seen; another session may have cleared it."""
    a, b = selected(store, recent), selected(store, recent)
    run(a, "s1 STORE 3 +FLAGS (\\Seen)")
    run(b, "n1 NOOP")  # B learns of \Seen
    run(a, "s2 STORE 3 -FLAGS (\\Seen)")
    lines = ok(run(b, "f1 FETCH 3 BODY[]"), "f1")
    assert flags(store, 3) == {"\\Seen"}, lines
    assert told_flags(lines)[3] == {"\\Seen"}


def test_body_fetch_reports_the_flags_the_message_really_has(store, recent):
    """RFC 3501 §6.4.5, §7.4.2: the FLAGS sent with BODY[] (or the news after it) must be
    the message's flags; here another session had just added \\Flagged."""
    a, b = selected(store, recent), selected(store, recent)
    run(a, "s1 STORE 3 +FLAGS (\\Flagged)")
    lines = ok(run(b, "f1 FETCH 3 BODY[]"), "f1")
    lines += ok(run(b, "n1 NOOP"), "n1")
    assert flags(store, 3) == {"\\Seen", "\\Flagged"}
    assert told_flags(lines)[3] == {"\\Seen", "\\Flagged"}, lines
