"""The MUA helpers (mailkit_edu.mua) against real labs on 127.0.0.1.

Each test asserts on what the servers did — the store (``lab.mailbox``, ``lab.store``)
and the transcript — and on the values the helpers return. The module lab has one
account per reading test, so tests do not see each other's mail; tests that stop
servers or change settings start labs of their own.
"""

from __future__ import annotations

import asyncio
import email.policy
import poplib
import socket
import threading
import time

import pytest

import mailkit_edu as mk
from mailkit_edu import mua

from .conftest import FAST

ALICE, BOB = "alice@north.test", "bob@north.test"
CAROL, DAVE = "carol@south.test", "dave@south.test"
#: One mailbox per reading test: POP3 keep, POP3 delete, IMAP, IMAP move, IDLE, idle_wait.
ERIN, FRANK, GRACE, HEIDI, IVAN, JUDY = (
    f"{name}@south.test" for name in ("erin", "frank", "grace", "heidi", "ivan", "judy")
)
MSA, IMAP_SOUTH = "msa.north.test", "imap.south.test"


@pytest.fixture(scope="module")
def lab():
    """One lab for the module, with a mailbox for each reading test."""
    people = ["carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
    with mk.start_lab(
        domains={"north.test": ["alice", "bob"], "south.test": people}, **FAST
    ) as lab:
        yield lab


def pw(lab: mk.Lab, address: str) -> str:
    """The account's password, as the lab has it."""
    return lab.account(address).password


def put(lab: mk.Lab, address: str, subject: str, folder: str = "INBOX") -> int:
    """Deliver straight into the store (as the MX would); the new message's UID."""
    raw = f"From: x@y.test\r\nTo: {address}\r\nSubject: {subject}\r\n\r\nHello.\r\n"
    return lab.store.deliver(address, raw.encode(), folder=folder).uid


def stored_raw(lab: mk.Lab, address: str, subject: str, timeout: float = 10.0) -> bytes:
    """The stored message of ``address`` with ``subject`` (waiting for it to arrive)."""
    deadline = time.monotonic() + timeout
    while True:
        frame = lab.mailbox(address)
        row = frame[frame["subject"] == subject]
        if len(row):
            assert len(row) == 1, frame[["folder", "subject"]]
            return lab.store.read(address, row["folder"].item(), int(row["uid"].item()))
        assert time.monotonic() < deadline, (frame[["folder", "subject"]], lab.queue())
        time.sleep(0.02)


def stored(lab: mk.Lab, address: str, subject: str) -> email.message.EmailMessage:
    """The stored message of ``address`` with ``subject``, parsed."""
    return mua.parse_message(stored_raw(lab, address, subject))


def flags(lab: mk.Lab, address: str, uid: int, folder: str = "INBOX") -> frozenset[str]:
    """The message's flags as the store has them."""
    return frozenset(lab.store.get(address, folder, uid).flags)


def client_lines(lab: mk.Lab, server: str) -> list[str]:
    """Every line a client sent to ``server``, in order."""
    rows = lab.transcript(server=server)
    return rows[rows["direction"] == "C"]["line"].tolist()


def sessions(lab: mk.Lab, server: str) -> int:
    """How many sessions ``server`` has had."""
    return lab.transcript(server=server)["session"].nunique()


# -- addresses and messages (no servers) ------------------------------------------------


def test_parse_addresses_accepts_lists_and_names_the_bad_piece():
    """Address lists split at commas (or semicolons) outside quotes; a malformed piece
    is a MUAError that quotes it."""
    assert mua.parse_addresses("a@x.test, B <b@y.test>") == ["a@x.test", "b@y.test"]
    assert mua.parse_addresses('"Doe, Jo" <jo@x.test>; c@[127.0.0.1],') == [
        "jo@x.test",
        "c@[127.0.0.1]",
    ]
    assert mua.parse_addresses("  ") == []
    for bad, piece in [
        ("carol@", "carol@"),
        ("a@x.test, bob", "bob"),
        ("a@x.test b@y.test", "a@x.test b@y.test"),
        ("a@@x.test", "a@@x.test"),
        ("Bob <>", "Bob <>"),
        ("a@x..test", "a@x..test"),
    ]:
        with pytest.raises(mua.MUAError, match="is not an email address") as caught:
            mua.parse_addresses(bad)
        assert repr(piece) in str(caught.value)


def test_build_message_headers_mime_and_no_bcc():
    """build_message writes From/To/Cc/Subject/Date/Message-ID, encodes a non-ASCII
    subject as RFC 2047 words, uses text/plain utf-8 (multipart/mixed with files), and
    refuses a two-line subject or a bad attachment type."""
    message = mua.build_message(
        "Alice <alice@north.test>", ["carol@south.test"], cc="dave@south.test", subject="Grüße"
    )
    wire = message.as_bytes(policy=email.policy.SMTP)
    assert b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n" in wire
    assert message["Message-ID"].endswith("@north.test>")
    assert message["Date"] and message["Cc"] == "dave@south.test" and "Bcc" not in message
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"
    with_file = mua.build_message(
        ALICE,
        [CAROL],
        body="See the file.",
        attachments=[mua.Attachment("a.csv", b"1,2", "text/csv")],
    )
    assert with_file.get_content_type() == "multipart/mixed"
    assert [p.get_content_type() for p in with_file.iter_parts()] == ["text/plain", "text/csv"]
    with pytest.raises(mua.MUAError, match="one line"):
        mua.build_message(ALICE, [CAROL], subject="two\nlines")
    with pytest.raises(mua.MUAError, match="not a MIME type"):
        mua.build_message(ALICE, [CAROL], attachments=[mua.Attachment("x", b"", "pdf")])


def test_message_parts_prefers_plain_text_strips_html_and_lists_attachments():
    """message_parts gives decoded headers, the text (html without tags when there is
    no plain part) and each attachment's name, type and decoded size."""
    html = (
        b"From: =?utf-8?q?J=C3=B6rg?= <j@x.test>\r\nSubject: Hi\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        b"<html><style>p {color: red}</style><p>Hello <b>you</b></p>"
        b"<p>Bye &amp; ciao</p></html>\r\n"
        b"--b\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="dot.png"\r\n\r\nAAECAw==\r\n--b--\r\n'
    )
    parts = mua.message_parts(html)
    assert ("From", "Jörg <j@x.test>") in parts["headers"]
    assert parts["text"] == "Hello you\n\nBye & ciao"
    assert parts["attachments"] == [("dot.png", "image/png", 4)]
    plain = mua.message_parts(mua.build_message(ALICE, [CAROL], body="Hi ✓").as_bytes())
    assert plain["text"] == "Hi ✓\n" and plain["attachments"] == []


# -- sending ---------------------------------------------------------------------------


def test_send_with_attachment_non_ascii_subject_cc_and_bcc(lab):
    """send() submits over STARTTLS with AUTH; To, Cc and Bcc all get the message, the
    stored headers decode back, the attachment arrives intact, and Bcc is nowhere in it."""
    data = bytes(range(256)) * 8
    result = mua.send(
        lab,
        "Alice <alice@north.test>",
        pw(lab, ALICE),
        to="Carol <carol@south.test>",
        cc=[BOB],
        bcc=DAVE,
        subject="Grüße aus dem Norden ✉",
        body="Schöne Grüße!\n",
        attachments=[mua.Attachment("Bericht März.bin", data)],
    )
    assert result.ok and result.error is None and result.refused == {}
    assert result.code == 250 and "queued as" in result.text
    for address in (CAROL, BOB, DAVE):
        message = stored(lab, address, "Grüße aus dem Norden ✉")
        assert message["Message-ID"] == result.message_id
        assert message["From"] == "Alice <alice@north.test>"
        assert message["To"] == "Carol <carol@south.test>" and message["Cc"] == BOB
        assert "Bcc" not in message
        text, attachment = message.iter_parts()
        assert text.get_content().replace("\r\n", "\n") == "Schöne Grüße!\n"
        assert attachment.get_filename() == "Bericht März.bin"
        assert attachment.get_content() == data
    # Only Dave's own copy names him (Delivered-To:, added by his MX).
    assert DAVE.encode() not in stored_raw(lab, CAROL, "Grüße aus dem Norden ✉")
    assert DAVE.encode() not in stored_raw(lab, BOB, "Grüße aus dem Norden ✉")
    client = client_lines(lab, MSA)
    assert client.index("STARTTLS") < next(i for i, c in enumerate(client) if c.startswith("AUTH"))
    assert f"rcpt TO:<{DAVE}>" in client


def test_send_plain_text_message(lab):
    """Without attachments the stored message is a single text/plain utf-8 part."""
    result = mua.send(lab, BOB, pw(lab, BOB), [CAROL], subject="plain one", body="Just text.")
    assert result.ok, result.error
    message = stored(lab, CAROL, "plain one")
    assert message.get_content_type() == "text/plain"
    assert mua.message_parts(message.as_bytes())["text"] == "Just text.\n"


def test_wrong_password_is_535_in_plain_words_after_one_attempt(lab):
    """A wrong password: ok=False, code 535, an error that says so — and one AUTH only
    (smtplib's login() would try LOGIN after PLAIN failed)."""
    result = mua.send(lab, ALICE, "not-the-password", CAROL, subject="nope")
    assert not result.ok and result.code == 535
    assert result.error.startswith("wrong password") and "535 5.7.8" in result.error
    rows = lab.transcript(server=MSA)
    last = rows[(rows["session"] == rows["session"].max()) & (rows["direction"] == "C")]
    assert [line for line in last["line"] if line.startswith("AUTH")] == [
        "AUTH PLAIN AGFsaWNlQG5vcnRoLnRlc3QAbm90LXRoZS1wYXNzd29yZA=="
    ]


def test_starttls_true_refuses_a_server_that_does_not_offer_it(fresh_lab):
    """starttls=True and an EHLO reply without STARTTLS (injected): no login, no
    message, an error that says why."""
    lab = fresh_lab
    lab.inject(MSA, command="EHLO", reply="250 msa.north.test")
    result = mua.send(lab, ALICE, pw(lab, ALICE), CAROL, subject="tls or nothing", starttls=True)
    assert not result.ok and result.code is None
    assert result.error == (
        "the server msa.north.test does not offer STARTTLS, and starttls=True requires it"
    )
    assert not [line for line in client_lines(lab, MSA) if line.startswith(("AUTH", "mail"))]


def test_refused_recipients_all_or_some(lab):
    """The MSA refuses an address literal (550 5.1.2): with no other recipient that is a
    failure; with an injected 550 for one of two recipients it is a partial success."""
    result = mua.send(lab, ALICE, pw(lab, ALICE), "carol@[127.0.0.1]", subject="literal")
    assert not result.ok and result.code == 550
    assert result.refused["carol@[127.0.0.1]"][0] == 550
    assert "refused every recipient" in result.error and "5.1.2" in result.error

    lab.inject(MSA, command="RCPT", reply="550 5.1.1 <carol@south.test>: no thanks")
    result = mua.send(lab, ALICE, pw(lab, ALICE), [CAROL, DAVE], subject="half of it")
    assert result.ok and result.code == 250
    assert result.refused == {CAROL: (550, "5.1.1 <carol@south.test>: no thanks")}
    stored(lab, DAVE, "half of it")
    assert "half of it" not in lab.mailbox(CAROL)["subject"].tolist()


def test_unknown_recipient_domain_is_accepted_then_bounced(lab):
    """The MSA takes any recipient (RFC 6409); a domain the lab DNS does not know is
    found by the relay, which bounces the message back to the sender."""
    result = mua.send(lab, BOB, pw(lab, BOB), "nobody@nowhere.test", subject="into the void")
    assert result.ok and result.code == 250
    deadline = time.monotonic() + 10
    while "Undelivered Mail Returned to Sender" not in lab.mailbox(BOB)["subject"].tolist():
        assert time.monotonic() < deadline, lab.queue()
        time.sleep(0.02)


def test_malformed_addresses_give_an_error_not_an_exception(lab):
    """send() never raises for bad addresses: it returns the plain-words error and does
    not even connect."""
    before = sessions(lab, MSA)
    for to, words in [("carol@", "'carol@' is not an email address"), ("", "at least one")]:
        result = mua.send(lab, ALICE, pw(lab, ALICE), to, subject="bad")
        assert not result.ok and result.code is None
        assert words in result.error and result.text == result.error
    result = mua.send(lab, "alice", pw(lab, ALICE), CAROL)
    assert not result.ok and "'alice' is not an email address" in result.error
    assert sessions(lab, MSA) == before


def test_require_tls_lab_works_with_starttls_and_refuses_without():
    """With require_tls=True: starttls=None upgrades and works for SMTP, POP3 and IMAP;
    starttls=False gets SMTP 530, POP3 -ERR [AUTH] and IMAP LOGINDISABLED, in plain words,
    without sending the password."""
    with mk.start_lab(require_tls=True, **FAST) as lab:
        password = pw(lab, ALICE)
        assert mua.send(lab, ALICE, password, CAROL, subject="over tls").ok
        result = mua.send(lab, ALICE, password, CAROL, subject="in clear", starttls=False)
        assert not result.ok and result.code == 530
        assert "wants STARTTLS before login" in result.error and "5.7.0" in result.error
        assert not any(password in line for line in lab.transcript(server=MSA)["line"])
        stored(lab, CAROL, "over tls")

        pop3 = mua.POP3Mailbox(lab, CAROL, pw(lab, CAROL), starttls=False).check()
        assert "[AUTH]" in pop3.error and pop3.messages == []
        assert len(mua.POP3Mailbox(lab, CAROL, pw(lab, CAROL)).check().messages) == 1

        found = mua.IMAPMailbox(lab, CAROL, pw(lab, CAROL), starttls=False).check()
        assert "LOGINDISABLED" in found.error
        with mua.IMAPMailbox(lab, CAROL, pw(lab, CAROL)) as box:
            assert [m.subject for m in box.check().messages] == ["over tls"]
            assert box.wait(timeout=0.1) == []  # IDLE on a socket of its own, TLS too
        assert asyncio.run(mua.idle_wait(lab, CAROL, pw(lab, CAROL), timeout=0.1)) == []
        starttls = [line for line in client_lines(lab, IMAP_SOUTH) if line.endswith(" STARTTLS")]
        assert len(starttls) == 3  # check, wait and idle_wait each upgraded


def test_a_message_over_the_size_limit_gets_552():
    """max_message_size=4000: smtplib declares SIZE in MAIL FROM, the MSA answers 552,
    and the error says the message is too big and what the limit is."""
    with mk.start_lab(max_message_size=4000, **FAST) as lab:
        big = mua.Attachment("big.bin", b"x" * 5000)
        result = mua.send(lab, ALICE, pw(lab, ALICE), CAROL, subject="big", attachments=[big])
        assert not result.ok and result.code == 552
        assert "too big" in result.error and "4000 bytes" in result.error
        assert lab.queue().empty
        assert mua.send(lab, ALICE, pw(lab, ALICE), CAROL, subject="small").ok


def test_a_stopped_msa_is_connection_refused_then_works_again(fresh_lab):
    """A stopped MSA: ok=False with 'not answering (connection refused)'; started again
    on the same port, the next send works."""
    lab = fresh_lab
    lab.stop_server(MSA)
    result = mua.send(lab, ALICE, pw(lab, ALICE), CAROL, subject="down")
    assert not result.ok and result.code is None
    assert result.error == "the server msa.north.test is not answering (connection refused)"
    lab.start_server(MSA)
    assert mua.send(lab, ALICE, pw(lab, ALICE), CAROL, subject="up again").ok
    stored(lab, CAROL, "up again")


def test_endpoint_with_a_host_and_port_works_like_the_lab(lab):
    """endpoint() with a host string needs a port and trusts only the system CAs: the
    lab certificate fails verification (plain error); trusting the lab CA for the
    server's name, or not using TLS, works the same as passing the lab."""
    where = mua.endpoint(lab, "msa", ALICE)
    assert where == mua.Endpoint("127.0.0.1", lab.port(MSA), MSA, str(lab.ca_file))
    with pytest.raises(mua.MUAError, match="give the port"):
        mua.endpoint("127.0.0.1", "msa", ALICE)
    with pytest.raises(mua.MUAError, match="role"):
        mua.endpoint(lab, "mx", ALICE)
    bare = mua.endpoint("127.0.0.1", "msa", ALICE, port=lab.port(MSA))
    assert bare == mua.Endpoint("127.0.0.1", lab.port(MSA))

    result = mua.send("127.0.0.1", ALICE, pw(lab, ALICE), CAROL, port=lab.port(MSA))
    assert not result.ok and result.error.startswith("STARTTLS failed: the certificate")
    plain = mua.send("127.0.0.1", ALICE, pw(lab, ALICE), CAROL, subject="by port",
                     port=lab.port(MSA), starttls=False)  # fmt: skip
    assert plain.ok, plain.error
    named = mua.Endpoint("127.0.0.1", lab.port(MSA), MSA, str(lab.ca_file))
    assert mua.send(named, ALICE, pw(lab, ALICE), CAROL, subject="by endpoint").ok
    stored(lab, CAROL, "by port")
    stored(lab, CAROL, "by endpoint")

    pop3 = mua.POP3Mailbox("127.0.0.1", ERIN, pw(lab, ERIN), port=lab.port("pop3.south.test"),
                           starttls=False)  # fmt: skip
    assert pop3.check().error is None
    with mua.IMAPMailbox("127.0.0.1", ERIN, pw(lab, ERIN), port=lab.port(IMAP_SOUTH),
                         starttls=False) as box:  # fmt: skip
        assert box.check().error is None


def test_a_silent_server_is_a_timeout_in_plain_words():
    """A server that accepts the connection and never says a word: every helper gives
    up after its timeout with the same plain words (send and check return them, the
    IMAP methods and IDLE raise them)."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        words = f"the server 127.0.0.1:{port} did not answer within 0.2 s (timeout)"
        result = mua.send("127.0.0.1", ALICE, "pw", CAROL, port=port, timeout=0.2)
        assert not result.ok and result.code is None and result.error == words
        assert (
            mua.POP3Mailbox("127.0.0.1", ALICE, "pw", port=port, timeout=0.2).check().error == words
        )
        box = mua.IMAPMailbox("127.0.0.1", ALICE, "pw", port=port, timeout=0.2)
        assert box.check().error == words
        with pytest.raises(mua.MailServerError, match="timeout"):
            box.wait(timeout=5)
        with pytest.raises(mua.MailServerError, match="timeout"):
            asyncio.run(mua.idle_wait("127.0.0.1", ALICE, "pw", port=port, io_timeout=0.2))


# -- POP3 ------------------------------------------------------------------------------


def test_pop3_keep_downloads_only_what_is_new(lab):
    """keep=True: the first check downloads both messages (raw, decoded summary, size
    from LIST); with their UIDLs as ``known`` the next check finds nothing, then only a
    newcomer. Nothing is deleted; RETR marks the messages \\Seen in the store."""
    uids = [put(lab, ERIN, "pop one"), put(lab, ERIN, "pop two")]
    box = mua.POP3Mailbox(lab, ERIN, pw(lab, ERIN))
    first = box.check()
    assert first.error is None and first.deleted == [] and first.server == "pop3.south.test"
    assert [m.subject for m in first.messages] == ["pop one", "pop two"]
    one = first.messages[0]
    assert one.number == 1 and one.uid is None and one.flags == frozenset()
    assert one.raw.endswith(b"\r\n\r\nHello.\r\n") and one.size == len(one.raw)
    assert one.id == f"{lab.store.uidvalidity(ERIN, 'INBOX')}.{uids[0]}"
    known = [m.id for m in first.messages]
    assert box.check(known=known).messages == []
    put(lab, ERIN, "pop three")
    assert [m.subject for m in box.check(known=known).messages] == ["pop three"]
    assert len(lab.mailbox(ERIN)) == 3
    assert all("\\Seen" in flags(lab, ERIN, uid) for uid in uids)
    assert "RETR 1" in client_lines(lab, "pop3.south.test")


def test_pop3_keep_false_deletes_at_quit_and_errors_are_plain(lab):
    """keep=False deletes what it downloaded (DELE, then QUIT) and reports the ids —
    copies left on the server by earlier checks only with delete_known=True; a wrong
    password or a locked maildrop is an error in plain words and deletes nothing."""
    put(lab, FRANK, "delete me")
    put(lab, FRANK, "me too")
    wrong = mua.POP3Mailbox(lab, FRANK, "wrong").check(keep=False)
    assert wrong.error.startswith("wrong password") and "-ERR [AUTH]" in wrong.error
    other = poplib.POP3("127.0.0.1", lab.port("pop3.south.test"), timeout=5)
    other.user(FRANK)
    other.pass_(pw(lab, FRANK))  # holds the maildrop lock (RFC 1939 §4)
    try:
        locked = mua.POP3Mailbox(lab, FRANK, pw(lab, FRANK)).check(keep=False)
    finally:
        other.quit()
    assert locked.error.startswith("the mailbox is in use") and "[IN-USE]" in locked.error
    assert len(lab.mailbox(FRANK)) == 2
    box = mua.POP3Mailbox(lab, FRANK, pw(lab, FRANK))
    result = box.check(keep=False)
    assert result.error is None
    assert result.deleted == [m.id for m in result.messages] and len(result.deleted) == 2
    assert lab.mailbox(FRANK).empty

    put(lab, FRANK, "left on the server")
    known = [m.id for m in box.check().messages]
    put(lab, FRANK, "newcomer")
    result = box.check(keep=False, known=known)
    assert [m.subject for m in result.messages] == ["newcomer"]
    assert result.deleted == [result.messages[0].id]
    assert lab.mailbox(FRANK)["subject"].tolist() == ["left on the server"]
    result = box.check(keep=False, known=known, delete_known=True)
    assert result.messages == [] and result.deleted == known
    assert lab.mailbox(FRANK).empty


# -- IMAP ------------------------------------------------------------------------------


def test_imap_folders_check_fetch_and_flags(lab):
    """folders() starts with INBOX; check() lists every message sorted by UID without
    setting \\Seen; fetch(peek=True) leaves \\Seen unset in the store, fetch() sets it;
    set_flag adds and removes a flag and returns the server's new flags."""
    first, second = put(lab, GRACE, "imap one"), put(lab, GRACE, "=?utf-8?q?Gr=C3=BC=C3=9Fe?=")
    with mua.IMAPMailbox(lab, GRACE, pw(lab, GRACE)) as box:
        names = box.folders()
        assert names[0] == "INBOX" and {"Sent", "Trash", "Archive"} <= set(names)
        found = box.check()
        assert found.error is None and found.server == IMAP_SOUTH and found.deleted == []
        assert [(m.uid, m.id, m.subject) for m in found.messages] == [
            (first, str(first), "imap one"),
            (second, str(second), "Grüße"),
        ]
        assert found.messages[0].size == lab.store.get(GRACE, "INBOX", first).size
        assert found.messages[0].raw is None
        assert "\\Seen" not in flags(lab, GRACE, first)

        peeked = box.fetch(first, peek=True)
        assert peeked.raw == lab.store.read(GRACE, "INBOX", first)
        assert "\\Seen" not in peeked.flags and "\\Seen" not in flags(lab, GRACE, first)
        opened = box.fetch(first)
        assert "\\Seen" in opened.flags and "\\Seen" in flags(lab, GRACE, first)

        assert "\\Flagged" in box.set_flag(second, "\\Flagged")
        assert "\\Flagged" in flags(lab, GRACE, second)
        assert "\\Flagged" not in box.set_flag(second, "\\Flagged", on=False)
        assert "\\Flagged" not in flags(lab, GRACE, second)
        with pytest.raises(mua.MUAError):
            box.set_flag(second, "two words")
    assert "BODY.PEEK[]" in " ".join(client_lines(lab, IMAP_SOUTH))


def test_imap_move_delete_missing_uid_and_bad_folder(lab):
    """move() puts the message in the other folder (UID MOVE), also one with a
    non-ASCII name (modified UTF-7 on the wire); delete() removes it for good
    (\\Deleted + UID EXPUNGE); a missing UID and a missing folder are plain errors."""
    keep, gone = put(lab, HEIDI, "to archive"), put(lab, HEIDI, "to delete")
    lab.store.create_folder(HEIDI, "Entwürfe & Co")
    with mua.IMAPMailbox(lab, HEIDI, pw(lab, HEIDI)) as box:
        assert "Entwürfe & Co" in box.folders()
        box.move(keep, "Entwürfe & Co")
        assert [m.subject for m in box.check("Entwürfe & Co").messages] == ["to archive"]
        box.move(keep, "Archive", folder="Entwürfe & Co")
        box.delete(gone)
        frame = lab.mailbox(HEIDI)
        assert frame[["folder", "subject"]].values.tolist() == [["Archive", "to archive"]]
        assert [m.subject for m in box.check("Archive").messages] == ["to archive"]
        with pytest.raises(mua.MailServerError, match=f"no message with UID {gone}"):
            box.fetch(gone)
        missing = box.check("No Such Folder")
        assert missing.messages == [] and "cannot open the folder 'No Such Folder'" in missing.error
    commands = client_lines(lab, IMAP_SOUTH)
    assert any(line.endswith(' UID MOVE 1 "Entw&APw-rfe &- Co"') for line in commands)
    assert any(f" UID EXPUNGE {gone}" in line for line in commands)


def test_imap_reopens_a_dropped_connection_and_reports_a_wrong_password(fresh_lab):
    """The kept connection drops when the server restarts; the next call connects again.
    A wrong password is a check error in plain words."""
    lab = fresh_lab
    put(lab, CAROL, "before")
    with mua.IMAPMailbox(lab, CAROL, pw(lab, CAROL)) as box:
        assert len(box.check().messages) == 1
        lab.stop_server(IMAP_SOUTH)
        lab.start_server(IMAP_SOUTH)
        put(lab, CAROL, "after")
        assert [m.subject for m in box.check().messages] == ["before", "after"]
    wrong = mua.IMAPMailbox(lab, CAROL, "wrong").check()
    assert wrong.error.startswith("wrong password") and "AUTHENTICATIONFAILED" in wrong.error


# -- IDLE ------------------------------------------------------------------------------


def test_imap_wait_returns_after_a_delivery_from_another_thread(lab):
    """wait() idles until a delivery (from a timer thread) is pushed as EXISTS, ends IDLE
    with DONE and logs out; with nothing happening it returns [] after its timeout."""
    put(lab, IVAN, "old")
    box = mua.IMAPMailbox(lab, IVAN, pw(lab, IVAN))
    timer = threading.Timer(0.3, put, (lab, IVAN, "new"))
    start = time.monotonic()
    timer.start()
    try:
        lines = box.wait(timeout=10)
    finally:
        timer.cancel()
    assert "* 2 EXISTS" in lines and time.monotonic() - start < 5
    start = time.monotonic()
    assert box.wait(timeout=0.3) == []
    assert 0.3 <= time.monotonic() - start < 3
    client = client_lines(lab, IMAP_SOUTH)
    assert client.count("DONE") >= 2 and any(line.endswith(" IDLE") for line in client)


def test_the_idle_dialogue_keeps_news_that_comes_before_the_continuation():
    """The IDLE dialogue has no I/O (the shells do it): scripted, a server that sends
    ``* 2 EXISTS`` before ``+ idling`` (mail that came after SELECT) ends the wait at
    once — DONE, LOGOUT — and that line is the news; the greeting's capabilities are
    used without asking CAPABILITY again."""
    settings = mua._IdleSettings("a@x.test", "pw", mua.Endpoint("127.0.0.1", 143), None)
    steps = mua._idle_dialogue(settings, "INBOX", timeout=5)
    server = iter(
        [
            b"* OK [CAPABILITY IMAP4rev1 IDLE] ready\r\n",
            b"m1 OK LOGIN completed\r\n",
            b"* 1 EXISTS\r\n",
            b"m2 OK [READ-WRITE] SELECT completed\r\n",
            b"* 2 EXISTS\r\n",
            b"+ idling\r\n",
            b"m3 OK IDLE terminated\r\n",
            b"* BYE logging out\r\n",
            b"m4 OK LOGOUT completed\r\n",
        ]
    )
    sent, kinds = [], []
    with pytest.raises(StopIteration) as done:
        step = next(steps)
        while True:
            kinds.append(step.kind)
            if step.kind == "send":
                sent.append(step.data)
            step = steps.send(next(server) if step.kind in ("line", "wait") else None)
    assert done.value.value == ["* 2 EXISTS"]
    assert sent == [
        b'm1 LOGIN "a@x.test" "pw"\r\n',
        b'm2 SELECT "INBOX"\r\n',
        b"m3 IDLE\r\n",
        b"DONE\r\n",
        b"m4 LOGOUT\r\n",
    ]
    assert "ready" in kinds and "wait" not in kinds


def test_idle_wait_under_asyncio_returns_exists_times_out_and_is_cancellable(lab):
    """idle_wait on an asyncio loop: ``ready`` is set at ``+ idling``; a delivery gives
    EXISTS; a timeout gives []; cancelling the task closes its connection (the server
    has no idler left)."""
    server = lab.server(IMAP_SOUTH)

    async def until(condition, what: str) -> None:
        """Wait (at most 5 s) until ``condition()`` holds."""
        deadline = time.monotonic() + 5
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting until {what}"
            await asyncio.sleep(0.01)

    async def scenario() -> None:
        """The three waits, on one event loop."""
        ready = asyncio.Event()
        task = asyncio.create_task(mua.idle_wait(lab, JUDY, pw(lab, JUDY), timeout=10, ready=ready))
        await asyncio.wait_for(ready.wait(), 5)
        await asyncio.to_thread(put, lab, JUDY, "pushed")
        assert "* 1 EXISTS" in await asyncio.wait_for(task, 5)

        assert await mua.idle_wait(lab, JUDY, pw(lab, JUDY), timeout=0.2) == []

        ready = asyncio.Event()
        task = asyncio.create_task(mua.idle_wait(lab, JUDY, pw(lab, JUDY), ready=ready))
        await asyncio.wait_for(ready.wait(), 5)
        await until(lambda: server.idlers, "the server registers the idler")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await until(lambda: not server.idlers, "the server sees the connection end")

    asyncio.run(scenario())
    with pytest.raises(mua.MailServerError, match="wrong password"):
        asyncio.run(mua.idle_wait(lab, JUDY, "wrong", timeout=1))
