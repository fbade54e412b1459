"""Tests of the POP3 protocol core (mailkit_edu.pop3): a line in, a Response out.

Pure tests: no sockets, no lab. Each test builds a Store in its own ``tmp_path``.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import logging
from pathlib import Path

import pytest

from mailkit_edu import pop3
from mailkit_edu.pop3 import (
    MAX_BAD_LINES,
    MaildropLocks,
    POP3Session,
    Response,
    State,
    dot_stuff,
    message_lines,
)
from mailkit_edu.store import INBOX, Store

ALICE = "alice@north.test"
BOB = "bob@north.test"
PASSWORDS = {ALICE: "alice-secret", BOB: "bob secret with spaces"}
TIMESTAMP = "<4242.1700000000@pop3.north.test>"

MSG1 = (
    b"From: bob@north.test\r\nTo: alice@north.test\r\nSubject: one\r\n\r\n"
    b"Hello Alice.\r\n.hidden dot line\r\nBye.\r\n"
)
MSG2 = b"Subject: two\r\n\r\nLine 1\r\nLine 2\r\nLine 3\r\n"
MSG3 = b"Subject: three\r\n\r\nThird.\r\n"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    mail = Store(tmp_path / "store")
    mail.add_account(ALICE)
    mail.add_account(BOB)
    for message in (MSG1, MSG2, MSG3):
        mail.deliver(ALICE, message)
    return mail


@pytest.fixture
def locks() -> MaildropLocks:
    return MaildropLocks()


def new_session(store: Store, locks: MaildropLocks | None = None, **options) -> POP3Session:
    options.setdefault("banner_timestamp", TIMESTAMP)
    return POP3Session(
        store, PASSWORDS, hostname="pop3.north.test", locks=locks or MaildropLocks(), **options
    )


def say(session: POP3Session, line: str | bytes) -> Response:
    return session.receive_line(line.encode() if isinstance(line, str) else line)


def first(response: Response) -> str:
    return response.lines[0].decode()


def logged_in(store: Store, locks: MaildropLocks | None = None, **options) -> POP3Session:
    session = new_session(store, locks, **options)
    session.greeting()
    assert first(say(session, f"USER {ALICE}")).startswith("+OK")
    assert first(say(session, "PASS alice-secret")).startswith("+OK")
    return session


def uids(store: Store) -> list[int]:
    return [info.uid for info in store.messages(ALICE, INBOX)]


# --------------------------------------------------------------------------- shape


def test_module_imports_no_io():
    """The core is sans-I/O: it imports no asyncio, socket, ssl, threading or ipywidgets."""
    tree = ast.parse(Path(pop3.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            imported.add((node.module or "").split(".")[0])
    assert not imported & {"asyncio", "socket", "ssl", "threading", "ipywidgets"}


def test_every_verb_declares_its_syntax_and_states():
    """Each RFC verb has a pop3_ method whose rule names the verb and at least one state."""
    table = pop3.verb_table(POP3Session)
    verbs = "USER PASS APOP AUTH STAT LIST RETR DELE NOOP RSET QUIT TOP UIDL CAPA STLS"
    assert set(table) == set(verbs.split())
    for verb, name in table.items():
        rule = getattr(POP3Session, name).rule
        assert rule.syntax.split()[0] == verb and rule.states


def test_response_reads_as_text():
    """A Response shows its lines as text, and its flags after them, for a notebook."""
    response = Response([b"+OK bye"], close=True)
    assert response.text() == str(response) == "+OK bye"
    assert repr(response) == "+OK bye\n[then: close]"


def test_dot_stuff_and_message_lines():
    """Helpers: a leading dot is doubled; CRLF and bare LF both end a line."""
    assert dot_stuff(b".x") == b"..x" and dot_stuff(b"x.") == b"x."
    assert message_lines(b"a\r\nb\nc") == [b"a", b"b", b"c"]
    assert message_lines(b"a\r\n\r\n") == [b"a", b""]


def test_maildrop_locks():
    """A maildrop lock is exclusive, case-insensitive, and free again after release."""
    locks = MaildropLocks()
    assert locks.acquire(ALICE) and not locks.acquire(ALICE.upper())
    assert locks.locked(ALICE)
    locks.release(ALICE)
    assert not locks.locked(ALICE) and locks.acquire(ALICE)


# --------------------------------------------------------------------------- AUTHORIZATION


def test_greeting_carries_the_apop_timestamp(store):
    """The greeting is +OK with the timestamp APOP uses (RFC 1939 §4, §7)."""
    assert first(new_session(store).greeting()) == f"+OK POP3 server ready {TIMESTAMP}"
    default = POP3Session(store, PASSWORDS, hostname="pop3.north.test", locks=MaildropLocks())
    assert default.timestamp.startswith("<") and default.timestamp.endswith("@pop3.north.test>")


def test_user_pass_logs_in_and_reports_the_maildrop(store):
    """USER+PASS with the full address locks the maildrop and reports count and size."""
    session = new_session(store)
    say(session, f"USER {ALICE.upper()}")
    reply = first(say(session, "PASS alice-secret"))
    size = len(MSG1) + len(MSG2) + len(MSG3)
    assert reply == f"+OK maildrop locked and ready (3 messages, {size} octets)"
    assert session.state is State.TRANSACTION and session.user == ALICE


def test_user_reveals_nothing(store):
    """USER answers +OK for any name, so it does not tell which addresses exist."""
    assert first(say(new_session(store), "USER nobody@north.test")).startswith("+OK")


def test_wrong_password_and_unknown_user_get_the_same_answer(store):
    """A wrong password and an unknown user both get -ERR [AUTH] with failed_login set."""
    for user, password in [(ALICE, "wrong"), ("nobody@north.test", "alice-secret")]:
        session = new_session(store)
        say(session, f"USER {user}")
        reply = say(session, f"PASS {password}")
        assert first(reply) == "-ERR [AUTH] invalid user name or password"
        assert reply.failed_login and session.state is State.AUTHORIZATION


def test_pass_without_user(store):
    """PASS before USER is refused, and is not counted as a failed password."""
    reply = say(new_session(store), "PASS alice-secret")
    assert first(reply) == "-ERR send USER first" and not reply.failed_login


def test_password_may_contain_spaces(store):
    """PASS takes the rest of the line as the password, spaces included (RFC 1939 §7)."""
    session = new_session(store)
    say(session, f"USER {BOB}")
    assert first(say(session, "PASS bob secret with spaces")).startswith("+OK maildrop locked")


def test_second_session_gets_in_use_until_quit(store, locks):
    """The maildrop lock: a second login gets [IN-USE]; after QUIT the lock is free."""
    one = logged_in(store, locks)
    two = new_session(store, locks)
    say(two, f"USER {ALICE}")
    reply = say(two, "PASS alice-secret")
    assert first(reply) == "-ERR [IN-USE] maildrop already locked by another session"
    assert two.state is State.AUTHORIZATION
    say(one, "QUIT")
    assert not locks.locked(ALICE)
    say(two, f"USER {ALICE}")
    assert first(say(two, "PASS alice-secret")).startswith("+OK")


def test_quit_in_authorization_closes_without_update(store):
    """QUIT before login answers +OK and closes; nothing reaches UPDATE."""
    session = new_session(store)
    reply = say(session, "QUIT")
    assert first(reply).startswith("+OK") and reply.close
    assert session.closed and session.state is State.AUTHORIZATION


def test_apop_right_and_wrong_digest(store):
    """APOP logs in with md5(timestamp + password) and refuses a wrong digest or user."""
    digest = hashlib.md5((TIMESTAMP + "alice-secret").encode()).hexdigest()
    wrong = new_session(store)
    reply = say(wrong, f"APOP {ALICE} {'0' * 32}")
    assert first(reply) == "-ERR [AUTH] invalid user name or password" and reply.failed_login
    assert say(wrong, f"APOP nobody@north.test {digest}").failed_login
    session = new_session(store)
    assert first(say(session, f"APOP {ALICE} {digest}")).startswith("+OK maildrop locked")
    assert session.user == ALICE


def plain(authzid: str, authcid: str, password: str) -> str:
    return base64.b64encode(f"{authzid}\0{authcid}\0{password}".encode()).decode()


def test_auth_plain_with_initial_response(store):
    """AUTH PLAIN with an initial response logs in in one line (RFC 5034 §4)."""
    session = new_session(store)
    reply = say(session, f"AUTH PLAIN {plain('', ALICE, 'alice-secret')}")
    assert first(reply).startswith("+OK maildrop locked") and session.user == ALICE


def test_auth_plain_with_continuation(store):
    """AUTH PLAIN alone answers "+ " and reads the response from the next line."""
    session = new_session(store)
    assert say(session, "auth plain").lines == [b"+ "]
    assert session.expecting_sasl
    reply = say(session, plain(ALICE, ALICE, "alice-secret") + "\r\n")
    assert first(reply).startswith("+OK") and not session.expecting_sasl


def test_auth_cancelled_with_star(store):
    """A "*" line cancels the SASL exchange and the next line is a command again."""
    session = new_session(store)
    say(session, "AUTH PLAIN")
    assert first(say(session, "*")) == "-ERR authentication cancelled"
    assert not session.expecting_sasl
    assert first(say(session, "CAPA")).startswith("+OK")


def test_auth_plain_bad_base64(store):
    """Bad base64, as initial response or continuation, gets -ERR [AUTH] and no crash."""
    session = new_session(store)
    expected = "-ERR [AUTH] invalid base64 in AUTH response"
    assert first(say(session, "AUTH PLAIN not*base64")) == expected
    say(session, "AUTH PLAIN")
    assert first(say(session, b"\xff\xfe garbage")) == expected


def test_auth_plain_authzid_and_shape(store):
    """The authzid must be empty or the user's own; a response must have three parts."""
    session = new_session(store)
    reply = first(say(session, f"AUTH PLAIN {plain(BOB, ALICE, 'alice-secret')}"))
    assert reply.startswith("-ERR [AUTH]") and "authzid" in reply
    assert first(say(session, "AUTH PLAIN =")).startswith("-ERR [AUTH] PLAIN wants")
    wrong = say(session, f"AUTH PLAIN {plain('', ALICE, 'nope')}")
    assert wrong.failed_login and session.state is State.AUTHORIZATION


def test_auth_lists_mechanisms_and_refuses_others(store):
    """Bare AUTH lists PLAIN; any other mechanism is unsupported."""
    session = new_session(store)
    assert say(session, "AUTH").lines == [b"+OK", b"PLAIN", b"."]
    assert first(say(session, "AUTH CRAM-MD5")) == "-ERR unsupported SASL mechanism"


# --------------------------------------------------------------------------- TLS


def test_require_tls_refuses_plaintext_login_until_tls_started(store):
    """With require_tls, USER, PASS and AUTH are refused until tls_started()."""
    session = new_session(store, require_tls=True, tls_available=True)
    for line in (f"USER {ALICE}", "PASS alice-secret", "AUTH PLAIN"):
        reply = first(say(session, line))
        assert reply.startswith("-ERR [AUTH]") and reply.endswith("use STLS first")
    reply = say(session, "STLS")
    assert reply.lines == [b"+OK Begin TLS negotiation"] and reply.start_tls
    session.tls_started()
    say(session, f"USER {ALICE}")
    assert first(say(session, "PASS alice-secret")).startswith("+OK maildrop locked")


def test_require_tls_still_allows_apop(store):
    """APOP works before TLS: it never sends the password itself."""
    session = new_session(store, require_tls=True, tls_available=True)
    digest = hashlib.md5((TIMESTAMP + "alice-secret").encode()).hexdigest()
    assert first(say(session, f"APOP {ALICE} {digest}")).startswith("+OK")


def test_tls_started_forgets_user(store):
    """A USER sent before STLS is forgotten once TLS starts (RFC 2595 §4)."""
    session = new_session(store, tls_available=True)
    say(session, f"USER {ALICE}")
    say(session, "STLS")
    session.tls_started()
    assert first(say(session, "PASS alice-secret")) == "-ERR send USER first"


def test_stls_refusals(store):
    """STLS is refused without TLS, a second time, and after login."""
    assert first(say(new_session(store), "STLS")).startswith("-ERR STLS is not available")
    active = new_session(store, tls_available=True, tls_active=True)
    assert first(say(active, "STLS")) == "-ERR command not permitted when TLS active"
    session = logged_in(store, tls_available=True)
    assert first(say(session, "STLS")) == (
        "-ERR STLS is only valid before login (AUTHORIZATION state)"
    )


def capabilities(session: POP3Session) -> list[str]:
    lines = [line.decode() for line in say(session, "CAPA").lines]
    assert lines[0] == "+OK Capability list follows" and lines[-1] == "."
    return lines[1:-1]


def test_capa_before_and_after_login(store):
    """CAPA lists USER, SASL and STLS only before login; the rest in both states."""
    session = new_session(store, tls_available=True)
    assert capabilities(session) == [
        "TOP",
        "UIDL",
        "USER",
        "SASL PLAIN",
        "RESP-CODES",
        "AUTH-RESP-CODE",
        "PIPELINING",
        "STLS",
        "IMPLEMENTATION mailkit-edu",
    ]
    session = logged_in(store, tls_available=True)
    after = capabilities(session)
    assert "USER" not in after and "SASL PLAIN" not in after and "STLS" not in after
    assert "TOP" in after and "UIDL" in after


def test_capa_with_require_tls(store):
    """With require_tls and no TLS yet, CAPA hides USER and SASL and offers STLS."""
    session = new_session(store, require_tls=True, tls_available=True)
    before = capabilities(session)
    assert "USER" not in before and "SASL PLAIN" not in before and "STLS" in before
    session.tls_started()
    after = capabilities(session)
    assert "USER" in after and "SASL PLAIN" in after and "STLS" not in after


# --------------------------------------------------------------------------- TRANSACTION


def test_stat_list_and_list_one(store):
    """STAT counts the messages; LIST gives each size, or one, with a final "."."""
    session = logged_in(store)
    sizes = [len(MSG1), len(MSG2), len(MSG3)]
    assert first(say(session, "STAT")) == f"+OK 3 {sum(sizes)}"
    assert say(session, "LIST").lines == [
        f"+OK 3 messages ({sum(sizes)} octets)".encode(),
        f"1 {sizes[0]}".encode(),
        f"2 {sizes[1]}".encode(),
        f"3 {sizes[2]}".encode(),
        b".",
    ]
    assert first(say(session, "LIST 2")) == f"+OK 2 {sizes[1]}"


def test_numbering_stays_fixed_after_dele(store):
    """DELE only marks: the other messages keep their numbers, and STAT/LIST/UIDL skip it."""
    session = logged_in(store)
    assert first(say(session, "DELE 2")) == "+OK message 2 deleted"
    assert first(say(session, "STAT")) == f"+OK 2 {len(MSG1) + len(MSG3)}"
    listed = [line.split()[0] for line in say(session, "LIST").lines[1:-1]]
    assert listed == [b"1", b"3"]
    assert [line.split()[0] for line in say(session, "UIDL").lines[1:-1]] == [b"1", b"3"]
    assert first(say(session, "LIST 3")) == f"+OK 3 {len(MSG3)}"
    for verb in ("RETR 2", "TOP 2 0", "LIST 2", "UIDL 2", "DELE 2"):
        assert first(say(session, verb)) == "-ERR message 2 is deleted"
    assert len(uids(store)) == 3  # nothing is gone before QUIT


def test_dele_and_quit_remove_from_the_store(store, locks):
    """QUIT after DELE enters UPDATE, expunges the marked messages and frees the lock."""
    before = uids(store)
    session = logged_in(store, locks)
    say(session, "DELE 1")
    say(session, "DELE 3")
    reply = say(session, "QUIT")
    assert first(reply) == "+OK pop3.north.test POP3 server signing off (2 messages deleted)"
    assert reply.close and session.closed and session.state is State.UPDATE
    assert uids(store) == [before[1]]
    assert not locks.locked(ALICE)


def test_connection_lost_deletes_nothing_and_releases_the_lock(store, locks):
    """A drop without QUIT never reaches UPDATE: nothing is deleted, the lock is freed."""
    session = logged_in(store, locks)
    say(session, "DELE 1")
    session.connection_lost()
    assert len(uids(store)) == 3
    assert session.closed and session.state is State.TRANSACTION
    assert not locks.locked(ALICE)
    session.connection_lost()  # a second call is harmless
    assert logged_in(store, locks).state is State.TRANSACTION


def test_rset_unmarks_every_message(store):
    """RSET unmarks all DELE marks, so QUIT deletes nothing."""
    session = logged_in(store)
    say(session, "DELE 1")
    say(session, "DELE 2")
    total = len(MSG1) + len(MSG2) + len(MSG3)
    assert first(say(session, "RSET")) == f"+OK maildrop has 3 messages ({total} octets)"
    assert first(say(session, "RETR 1")).startswith("+OK")
    assert first(say(session, "QUIT")).endswith("(0 messages deleted)")
    assert len(uids(store)) == 3


def test_quit_store_failure_still_closes(store, locks, monkeypatch, caplog):
    """If the store cannot expunge, QUIT says -ERR [SYS/TEMP], closes, and frees the lock."""
    session = logged_in(store, locks)
    say(session, "DELE 1")

    def broken(*args, **kwargs):
        raise OSError("disk on fire")

    monkeypatch.setattr(store, "expunge", broken)
    with caplog.at_level(logging.ERROR, logger="mailkit_edu.pop3"):
        reply = say(session, "QUIT")
    assert reply.lines == [b"-ERR [SYS/TEMP] some deleted messages not removed"]
    assert reply.close and not locks.locked(ALICE)
    assert "disk on fire" in caplog.text


def test_noop(store):
    """NOOP answers a bare +OK."""
    assert say(logged_in(store), "NOOP").lines == [b"+OK"]


def test_uidl_is_stable_across_sessions_and_stores(store, locks):
    """UIDL gives "<uidvalidity>.<uid>" ids, equal in a new session and a new Store."""
    session = logged_in(store, locks)
    listing = say(session, "UIDL").lines
    validity = store.uidvalidity(ALICE, INBOX)
    assert listing[0] == b"+OK unique-id listing follows" and listing[-1] == b"."
    assert listing[1:-1] == [
        f"{n} {validity}.{uid}".encode() for n, uid in enumerate(uids(store), 1)
    ]
    assert first(say(session, "UIDL 2")) == f"+OK 2 {validity}.{uids(store)[1]}"
    for line in listing[1:-1]:
        unique_id = line.split()[1]
        assert len(unique_id) <= 70 and all(0x21 <= byte <= 0x7E for byte in unique_id)
    say(session, "QUIT")
    assert say(logged_in(store, locks), "UIDL").lines == listing
    fresh = Store(store.root)
    assert say(logged_in(fresh), "UIDL").lines == listing


def test_retr_sends_the_message_dot_stuffed(store):
    """RETR sends "+OK size octets", each line, a "." line stuffed to "..", then "."."""
    reply = say(logged_in(store), "RETR 1")
    assert reply.lines == [
        f"+OK {len(MSG1)} octets".encode(),
        b"From: bob@north.test",
        b"To: alice@north.test",
        b"Subject: one",
        b"",
        b"Hello Alice.",
        b"..hidden dot line",
        b"Bye.",
        b".",
    ]


def test_retr_of_bare_lf_message_is_sent_as_lines(store):
    """A message stored with bare LF is sent line by line, so the shell ends each with CRLF."""
    store.deliver(ALICE, b"Subject: bare\n\nfirst\nsecond")
    reply = say(logged_in(store), "RETR 4")
    assert reply.lines[1:] == [b"Subject: bare", b"", b"first", b"second", b"."]
    assert all(b"\r" not in line and b"\n" not in line for line in reply.lines)


def test_retr_marks_seen_at_quit_and_top_does_not(store):
    """RETR marks the message \\Seen in the store (IMAP sees it read) when the session
    ends with QUIT; TOP does not; a session cut off marks nothing."""
    first_uid, second_uid = uids(store)[:2]
    dropped = logged_in(store)
    say(dropped, "RETR 2")
    dropped.connection_lost()
    assert "\\Seen" not in store.get(ALICE, INBOX, second_uid).flags
    session = logged_in(store)
    say(session, "TOP 1 1")
    say(session, "RETR 2")
    assert "\\Seen" not in store.get(ALICE, INBOX, second_uid).flags  # not before QUIT
    say(session, "QUIT")
    assert "\\Seen" not in store.get(ALICE, INBOX, first_uid).flags
    assert "\\Seen" in store.get(ALICE, INBOX, second_uid).flags


def test_top_header_blank_line_and_n_body_lines(store):
    """TOP n 0 gives the header and the blank line; a large n gives the whole body."""
    session = logged_in(store)
    assert say(session, "TOP 2 0").lines == [
        b"+OK top of message follows",
        b"Subject: two",
        b"",
        b".",
    ]
    assert say(session, "TOP 2 2").lines[-3:] == [b"Line 1", b"Line 2", b"."]
    assert say(session, "TOP 2 999").lines[1:] == [
        b"Subject: two",
        b"",
        b"Line 1",
        b"Line 2",
        b"Line 3",
        b".",
    ]
    assert say(session, "TOP 1 2").lines[-2:] == [b"..hidden dot line", b"."]


def test_top_of_a_message_without_body(store):
    """TOP of a message with no blank line sends all its header lines."""
    store.deliver(ALICE, b"Subject: only a header\r\n")
    reply = say(logged_in(store), "TOP 4 5")
    assert reply.lines[1:] == [b"Subject: only a header", b"."]


def test_message_expunged_by_someone_else(store):
    """A message IMAP expunged after login answers -ERR [SYS/PERM]; the rest still works."""
    session = logged_in(store)
    store.expunge(ALICE, INBOX, [uids(store)[0]])
    expected = "-ERR [SYS/PERM] message 1 is no longer in the maildrop"
    assert first(say(session, "RETR 1")) == expected
    assert first(say(session, "TOP 1 0")) == expected
    assert first(say(session, "DELE 1")).startswith("+OK")
    assert first(say(session, "QUIT")).startswith("+OK")
    assert len(uids(store)) == 2


def test_new_mail_waits_for_the_next_session(store):
    """The message list is a snapshot taken at login; later mail is not numbered in."""
    session = logged_in(store)
    store.deliver(ALICE, b"Subject: late\r\n\r\nLate.\r\n")
    assert first(say(session, "STAT")).startswith("+OK 3 ")
    assert first(say(session, "RETR 4")) == "-ERR no such message, only 3 in maildrop"


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("RETR 0", "-ERR no such message, only 3 in maildrop"),
        ("RETR 99999", "-ERR no such message, only 3 in maildrop"),
        ("RETR -1", "-ERR a message number is a decimal number, not -1"),
        ("LIST x", "-ERR a message number is a decimal number, not x"),
        ("DELE 1.0", "-ERR a message number is a decimal number, not 1.0"),
        ("TOP 1 -5", "-ERR the line count must be a number 0 or more, not -5"),
        ("TOP 1", "-ERR syntax: TOP msg n"),
        ("RETR", "-ERR syntax: RETR msg"),
        ("RETR 1 2", "-ERR syntax: RETR msg"),
        ("RETR  1", "-ERR syntax: RETR msg"),
        ("STAT 1", "-ERR syntax: STAT"),
        ("LIST 1 2", "-ERR syntax: LIST [msg]"),
    ],
)
def test_bad_arguments(store, line, reply):
    """Arguments that are not a message number in range, or too many or few, get -ERR."""
    assert say(logged_in(store), line).lines == [reply.encode()]


@pytest.mark.parametrize("verb", ["STAT", "LIST", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 0"])
def test_transaction_verbs_need_login(store, verb):
    """Verbs of the TRANSACTION state are refused before login, with the reason."""
    name = verb.split()[0]
    assert first(say(new_session(store), verb)) == (
        f"-ERR {name} is only valid after login (TRANSACTION state)"
    )


@pytest.mark.parametrize("verb", [f"USER {ALICE}", "PASS x", "APOP a b", "AUTH", "STLS"])
def test_authorization_verbs_only_before_login(store, verb):
    """Login verbs (and STLS) are refused after login, with the reason."""
    name = verb.split()[0]
    assert first(say(logged_in(store, tls_available=True), verb)) == (
        f"-ERR {name} is only valid before login (AUTHORIZATION state)"
    )


def test_verbs_are_case_insensitive_and_crlf_is_optional(store):
    """Verbs match in any case; a line may end in CRLF, LF or nothing."""
    session = logged_in(store)
    for line in (b"stat\r\n", b"Stat\n", b"sTaT"):
        assert session.receive_line(line).lines[0].startswith(b"+OK 3 ")


def test_unknown_and_empty_commands(store):
    """An unknown verb and an empty line each get a clear -ERR."""
    session = new_session(store)
    assert first(say(session, "FOO bar")) == "-ERR unknown command FOO"
    assert first(say(session, "\r\n")) == "-ERR empty command line"


def test_line_longer_than_255_octets(store):
    """A command line over 255 octets with its CRLF is refused (RFC 2449 §4); 255 is fine."""
    session = new_session(store)
    longest = "USER " + "a" * (255 - 2 - 5)
    assert first(say(session, longest + "\r\n")).startswith("+OK")
    reply = first(say(session, longest + "a\r\n"))
    assert reply == "-ERR line too long (RFC 2449 allows 255 octets)"


@pytest.mark.parametrize("line", [b"\xff\xfe\x00garbage", b"USER al\x00ice", "RETR ①".encode()])
def test_garbage_bytes_get_err_not_an_exception(store, line):
    """Non-ASCII and control bytes in a command line get -ERR, never an exception."""
    assert say(new_session(store), line).lines == [b"-ERR a command line must be printable ASCII"]


def test_ten_bad_lines_in_a_row_close_the_session(store, locks):
    """The tenth -ERR in a row closes the session and frees the lock; a +OK resets the count."""
    session = logged_in(store, locks)
    for _ in range(MAX_BAD_LINES - 1):
        assert not say(session, "BOGUS").close
    assert first(say(session, "NOOP")) == "+OK"
    for _ in range(MAX_BAD_LINES - 1):
        assert not say(session, b"\x01\x02").close
    reply = say(session, "RETR 0")
    assert reply.lines == [b"-ERR too many errors, closing"] and reply.close
    assert session.closed and not locks.locked(ALICE)
    assert len(uids(store)) == 3


def test_a_closed_session_answers_only_quit(store):
    """After QUIT, QUIT still gets +OK and anything else says the session is closed."""
    session = logged_in(store)
    say(session, "QUIT")
    assert first(say(session, "QUIT")).startswith("+OK") and say(session, "QUIT").close
    assert first(say(session, "STAT")) == "-ERR the session is closed"


def test_unexpected_errors_stay_off_the_wire(store, monkeypatch, caplog):
    """A bug becomes -ERR [SYS/TEMP] internal server error; the traceback is only logged."""
    session = logged_in(store)

    def broken(*args, **kwargs):
        raise RuntimeError("secret /path/to/maildir")

    monkeypatch.setattr(store, "read", broken)
    with caplog.at_level(logging.ERROR, logger="mailkit_edu.pop3"):
        reply = say(session, "RETR 1")
    assert reply.lines == [b"-ERR [SYS/TEMP] internal server error"]
    assert "secret /path/to/maildir" in caplog.text
    assert first(say(session, "STAT")).startswith("+OK")


def test_replies_say_one_message_not_one_messages(store):
    """Counts in replies read naturally: "1 message", "2 messages"."""
    store.expunge(ALICE, INBOX, uids(store)[1:])
    session = logged_in(store)
    assert first(say(session, "LIST")) == f"+OK 1 message ({len(MSG1)} octets)"
    say(session, "DELE 1")
    assert first(say(session, "QUIT")).endswith("(1 message deleted)")
