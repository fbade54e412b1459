"""SMTP through a real lab: submission, relay via DNS MX, delivery, and the refusals.

Driven by Python's smtplib and raw sockets against servers on 127.0.0.1.
"""

from __future__ import annotations

import base64
import email
import smtplib
import socket
import ssl
import time
from email.message import EmailMessage

import pytest

import mailkit_edu as mk

from .conftest import FAST

ALICE, BOB = "alice@north.test", "bob@north.test"
CAROL, DAVE = "carol@south.test", "dave@south.test"


def password(lab: mk.Lab, address: str) -> str:
    return lab.account(address).password


def message(sender: str, to: str, subject: str, body: str = "Hello!\n") -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg.set_content(body)
    return msg


def submit(lab: mk.Lab, sender: str, rcpts: list[str], msg: EmailMessage | bytes) -> dict:
    domain = sender.rpartition("@")[2]
    with smtplib.SMTP("127.0.0.1", lab.port(f"msa.{domain}"), timeout=10) as smtp:
        smtp.login(sender, password(lab, sender))
        if isinstance(msg, bytes):
            return smtp.sendmail(sender, rcpts, msg)
        return smtp.send_message(msg, sender, rcpts)


def read_stored(lab: mk.Lab, address: str, subject: str) -> email.message.Message:
    box = lab.mailbox(address)
    rows = box[box["subject"] == subject]
    assert len(rows) == 1, box
    with open(rows.iloc[0]["file"], "rb") as f:
        return email.message_from_binary_file(f)


def wait_for_subject(lab: mk.Lab, address: str, subject: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        box = lab.mailbox(address)
        if (box["subject"] == subject).any():
            return read_stored(lab, address, subject)
        time.sleep(0.02)
    raise AssertionError(f"{subject!r} never reached {address}; queue:\n{lab.queue()}")


class Raw:
    """A raw-socket SMTP client: send lines, read replies, nothing hidden."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")

    def reply(self) -> list[str]:
        lines = []
        while True:
            line = self.file.readline().decode("utf-8", "replace").rstrip("\r\n")
            if not line:
                raise ConnectionError("closed")
            lines.append(line)
            if line[3:4] != "-":
                return lines

    def send(self, data: bytes | str) -> list[str]:
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data if data.endswith(b"\n") else data + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


# -- the journey -----------------------------------------------------------------


def test_cross_domain_delivery_with_both_received_headers(lab):
    """A message submitted at north's MSA lands in carol's Maildir at south with
    the MSA's and the MX's Received: headers, Return-Path and Delivered-To."""
    submit(lab, ALICE, [CAROL], message(ALICE, CAROL, "journey 1"))
    stored = wait_for_subject(lab, CAROL, "journey 1")
    received = stored.get_all("Received")
    assert len(received) == 2
    assert "by mx.south.test" in received[0]  # newest on top
    assert "by msa.north.test" in received[1] and "with ESMTPA" in received[1]
    assert stored["Return-Path"] == f"<{ALICE}>"
    assert stored["Delivered-To"] == CAROL
    assert stored.get_payload().strip() == "Hello!"
    box = lab.mailbox(CAROL)
    path = box[box["subject"] == "journey 1"].iloc[0]["file"]
    assert "/new/" in str(path)


def test_mx_lookup_shows_in_the_transcript(lab):
    """The relay asks the lab DNS for the recipient domain's MX, and the query
    and answer are transcript rows of protocol DNS."""
    submit(lab, BOB, [DAVE], message(BOB, DAVE, "journey dns"))
    wait_for_subject(lab, DAVE, "journey dns")
    dns_rows = lab.transcript(protocol="DNS")
    questions = dns_rows[dns_rows["direction"] == "C"]["line"].tolist()
    answers = dns_rows[dns_rows["direction"] == "S"]["line"].tolist()
    assert "south.test. IN MX?" in questions
    assert "south.test. 300 IN MX 10 mx.south.test." in answers
    assert "mx.south.test. IN A?" in questions


def test_transcript_has_every_line_of_a_submission_once(lab):
    """Each client line and each reply of a submission appears once, in order,
    with command and code columns filled."""
    before = len(lab.transcript())
    submit(lab, ALICE, [BOB], message(ALICE, BOB, "transcript check"))
    wait_for_subject(lab, BOB, "transcript check")
    rows = lab.transcript().iloc[before:]
    msa = rows[rows["server"] == "msa.north.test"]
    sessions = msa["session"].unique()
    assert len(sessions) == 1
    commands = msa[msa["direction"] == "C"]["command"].dropna().tolist()
    assert commands == ["EHLO", "AUTH", "MAIL", "RCPT", "DATA", "QUIT"]
    codes = msa[msa["direction"] == "S"]["code"].tolist()
    assert codes[0] == "220" and "235" in codes and codes[-1] == "221"
    data_lines = msa[(msa["direction"] == "C") & msa["command"].isna()]["line"].tolist()
    assert "Subject: transcript check" in data_lines and data_lines[-1] == "."
    # The relay's session at the MX is recorded by the MX, once.
    mx = rows[(rows["server"] == "mx.north.test") & (rows["direction"] == "C")]
    transaction = [c for c in mx["command"].dropna() if c in ("MAIL", "RCPT", "DATA")]
    assert transaction == ["MAIL", "RCPT", "DATA"]


def test_ehlo_advertises_the_extensions(lab):
    """The MSA's EHLO lists SIZE, 8BITMIME, SMTPUTF8, PIPELINING,
    ENHANCEDSTATUSCODES, STARTTLS and AUTH PLAIN LOGIN; the MX offers no AUTH."""
    with smtplib.SMTP("127.0.0.1", lab.port("msa.north.test"), timeout=10) as smtp:
        smtp.ehlo("client.test")
        for ext in ("size", "8bitmime", "smtputf8", "pipelining", "enhancedstatuscodes"):
            assert smtp.has_extn(ext), ext
        assert smtp.has_extn("starttls")
        assert set(smtp.esmtp_features["auth"].split()) == {"PLAIN", "LOGIN"}
        assert smtp.esmtp_features["size"] == str(10 * 1024 * 1024)
    with smtplib.SMTP("127.0.0.1", lab.port("mx.north.test"), timeout=10) as smtp:
        smtp.ehlo("client.test")
        assert not smtp.has_extn("auth")
        code, text = smtp.docmd("AUTH", "PLAIN")
        assert code == 503


# -- the MSA's rules ----------------------------------------------------------------


def test_msa_demands_auth_before_mail(lab):
    """MAIL FROM without AUTH at the MSA gets 530 5.7.0."""
    with smtplib.SMTP("127.0.0.1", lab.port("msa.north.test"), timeout=10) as smtp:
        smtp.ehlo("client.test")
        code, text = smtp.mail(ALICE)
        assert code == 530 and text.startswith(b"5.7.0")


def test_msa_refuses_a_wrong_password_with_535(lab):
    """AUTH with a wrong password gets 535 5.7.8, and the session can still try again."""
    with smtplib.SMTP("127.0.0.1", lab.port("msa.north.test"), timeout=10) as smtp:
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            smtp.login(ALICE, "not-the-password")
        assert info.value.smtp_code == 535
        assert smtp.login(ALICE, password(lab, ALICE))[0] == 235


def test_auth_login_and_unknown_user(lab):
    """AUTH LOGIN by hand works with the 'Username:'/'Password:' challenges; an
    unknown user gets 535."""
    raw = Raw(lab.port("msa.north.test"))
    try:
        raw.reply()
        raw.send("EHLO raw.test")
        assert raw.send("AUTH LOGIN") == ["334 " + base64.b64encode(b"Username:").decode()]
        assert raw.send(base64.b64encode(b"nobody@north.test"))[0].startswith("334")
        assert raw.send(base64.b64encode(b"x"))[0].startswith("535 5.7.8")
        raw.send("AUTH LOGIN")
        raw.send(base64.b64encode(ALICE.encode()))
        assert raw.send(base64.b64encode(password(lab, ALICE).encode()))[0].startswith("235")
    finally:
        raw.close()


def test_msa_refuses_someone_elses_sender(lab):
    """An authenticated user cannot use another account's address as MAIL FROM (553)."""
    with smtplib.SMTP("127.0.0.1", lab.port("msa.north.test"), timeout=10) as smtp:
        smtp.login(ALICE, password(lab, ALICE))
        code, _ = smtp.mail(BOB)
        assert code == 553


def test_bad_base64_in_auth_plain(lab):
    """AUTH PLAIN with invalid base64 gets 501 and no Python text reaches the wire."""
    raw = Raw(lab.port("msa.north.test"))
    try:
        raw.reply()
        raw.send("EHLO raw.test")
        reply = raw.send("AUTH PLAIN !!!notbase64")
        assert reply[0].startswith("501")
        assert raw.send("NOOP")[0].startswith("250")
    finally:
        raw.close()


def test_oversized_message_gets_552(fresh_lab):
    """A message over the SIZE limit is refused with 552, whether declared in
    MAIL FROM or only discovered during DATA."""
    lab = fresh_lab
    limit = 10 * 1024 * 1024
    with smtplib.SMTP("127.0.0.1", lab.port("msa.north.test"), timeout=30) as smtp:
        smtp.login(ALICE, password(lab, ALICE))
        code, _ = smtp.mail(ALICE, [f"SIZE={limit + 1}"])
        assert code == 552
        smtp.rset()
        big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * (limit // 1000 + 10)
        assert smtp.mail(ALICE)[0] == 250  # no SIZE declared
        assert smtp.rcpt(CAROL)[0] == 250
        code, text = smtp.data(big)
        assert code == 552 and text.startswith(b"5.3.4")
    assert lab.queue().empty


# -- the MX's rules: no open relay ------------------------------------------------------

RELAY_TRICKS = [
    "<@mx.south.test:eve@elsewhere.test>",
    "<eve%elsewhere.test@south.test>",
    "<elsewhere.test!eve@south.test>",
    '<"eve@elsewhere.test"@south.test>',
    "<carol@south.test.>",
    "<carol@[127.0.0.1]>",
    "<eve@elsewhere.test>",
    "<carol@north.test>",
]


@pytest.mark.parametrize("path", RELAY_TRICKS)
def test_mx_refuses_relay_tricks(lab, path):
    """The MX answers 550 (or 554) to every relay trick and to other domains."""
    raw = Raw(lab.port("mx.south.test"))
    try:
        raw.reply()
        raw.send("EHLO attacker.test")
        assert raw.send("MAIL FROM:<eve@elsewhere.test>")[0].startswith("250")
        reply = raw.send(f"RCPT TO:{path}")[0]
        assert reply[:3] in ("550", "554"), reply
        assert raw.send("DATA")[0].startswith("503")  # nothing was accepted
    finally:
        raw.close()


def test_mx_refuses_unknown_users_and_accepts_null_sender(lab):
    """The MX says 550 5.1.1 for an unknown local user and accepts MAIL FROM:<>."""
    raw = Raw(lab.port("mx.south.test"))
    try:
        raw.reply()
        raw.send("EHLO other.test")
        assert raw.send("MAIL FROM:<>")[0].startswith("250")
        assert raw.send("RCPT TO:<nobody@south.test>")[0].startswith("550 5.1.1")
        assert raw.send("RCPT TO:<CAROL@South.Test>")[0].startswith("250")
    finally:
        raw.close()


# -- bad input --------------------------------------------------------------------------


def test_garbage_then_a_healthy_client(lab):
    """Garbage bytes, NUL, invalid UTF-8, a 100 kB line and commands out of order get
    RFC reply codes without Python text, and the next client is served normally."""
    raw = Raw(lab.port("msa.north.test"))
    replies = []
    try:
        raw.reply()
        replies += raw.send(b"\x00\xff\xfe garbage\r\n")
        replies += raw.send(b"EHLO \xc3\x28 bad-utf8\r\n")
        replies += raw.send(b"A" * 100_000 + b"\r\n")
        replies += raw.send("RCPT TO:<carol@south.test>")
        replies += raw.send("DATA")
        replies += raw.send("FOO bar")
        replies += raw.send("MAIL")
    finally:
        raw.close()
    codes = [r[:3] for r in replies if r[3:4] == " "]
    assert all(code[0] in "245" for code in codes), replies
    assert "500" in codes and "503" in codes
    text = " ".join(replies)
    for word in ("Traceback", "Exception", 'File "', "Error)"):
        assert word not in text, replies
    submit(lab, ALICE, [BOB], message(ALICE, BOB, "after garbage"))
    wait_for_subject(lab, BOB, "after garbage")


def test_no_exception_text_on_the_wire(lab):
    """No reply the lab's SMTP servers ever sent contains Python exception text."""
    rows = lab.transcript(protocol="SMTP")
    server_lines = rows[rows["direction"] == "S"]["line"]
    assert not server_lines.str.contains("Traceback|Exception|\\(\\w+Error\\)", regex=True).any()


# -- TLS --------------------------------------------------------------------------------


def test_require_tls_demands_starttls_before_auth():
    """With require_tls=True AUTH before STARTTLS gets 530; after STARTTLS with the
    lab CA verified, AUTH and submission work."""
    with mk.start_lab(require_tls=True, **FAST) as lab:
        port = lab.port("msa.north.test")
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.ehlo("client.test")
            assert not smtp.has_extn("auth")
            code, text = smtp.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0a\0b").decode())
            assert code == 530
            context = ssl.create_default_context(cafile=str(lab.ca_file))
            context.check_hostname = True
            smtp._host = "msa.north.test"  # verify the certificate's name
            smtp.starttls(context=context)
            smtp.ehlo("client.test")
            assert "PLAIN" in smtp.esmtp_features["auth"]
            smtp.login(ALICE, password(lab, ALICE))
            smtp.send_message(message(ALICE, CAROL, "over tls"))
        stored = wait_for_subject(lab, CAROL, "over tls")
        assert "with ESMTPSA" in stored.get_all("Received")[1]


def test_mask_secrets_hides_auth():
    """With mask_secrets=True the AUTH line's base64 is masked in the transcript;
    by default it is shown (base64 is not encryption)."""
    for masked in (False, True):
        with mk.start_lab(mask_secrets=masked, **FAST) as lab:
            with smtplib.SMTP("127.0.0.1", lab.port("msa.north.test"), timeout=10) as smtp:
                smtp.login(ALICE, password(lab, ALICE))
            rows = lab.transcript(server="msa.north.test")
            auth = rows[rows["command"] == "AUTH"]["line"].iloc[0]
            secret = base64.b64encode(f"\0{ALICE}\0{password(lab, ALICE)}".encode()).decode()
            assert (secret in auth) is not masked
            assert ("********" in auth) is masked


def test_invalid_recipients_at_the_msa(lab):
    """The MSA refuses a recipient that is not valid UTF-8 or has no proper domain,
    and keeps serving the session."""
    raw = Raw(lab.port("msa.north.test"))
    try:
        raw.reply()
        raw.send("EHLO raw.test")
        raw.send("AUTH PLAIN " + base64.b64encode(f"\0{ALICE}\0alice-secret".encode()).decode())
        assert raw.send(f"MAIL FROM:<{ALICE}>")[0].startswith("250")
        assert raw.send(b"RCPT TO:<\xff\xfe@south.test>\r\n")[0].startswith("553 5.6.7")
        assert raw.send("RCPT TO:<carol@-bad-.test>")[0].startswith("553")
        assert raw.send("RCPT TO:<carol@south.test>")[0].startswith("250")
        assert raw.send("RSET")[0].startswith("250")
    finally:
        raw.close()


def test_injected_greeting_closes_the_connection(fresh_lab):
    """inject(command="CONNECT") replaces the greeting; with a 554 the server hangs up."""
    lab = fresh_lab
    lab.inject("mx.south.test", command="CONNECT", reply="554 5.3.2 Not accepting mail today")
    raw = Raw(lab.port("mx.south.test"))
    try:
        assert raw.reply() == ["554 5.3.2 Not accepting mail today"]
        with pytest.raises((ConnectionError, OSError)):
            raw.send("EHLO x.test")
    finally:
        raw.close()
    raw = Raw(lab.port("mx.south.test"))  # the fault fired once: the next client is greeted
    try:
        assert raw.reply()[0].startswith("220 mx.south.test")
    finally:
        raw.close()


def test_help_lists_the_verbs(lab):
    """HELP answers 250 with the verbs, the overridden ones included."""
    with smtplib.SMTP("127.0.0.1", lab.port("msa.north.test"), timeout=10) as smtp:
        smtp.ehlo("x.test")
        text = smtp.help().decode()
        for verb in ("EHLO", "HELO", "AUTH", "MAIL", "RCPT", "DATA", "QUIT"):
            assert verb in text


def test_idle_connection_gets_421_and_is_closed():
    """An idle client is told 421 4.4.2 and disconnected; the line is in the transcript."""
    with mk.start_lab(idle_timeout=0.3, **FAST) as lab:
        raw = Raw(lab.port("mx.north.test"))
        try:
            raw.reply()
            assert raw.reply()[0].startswith("421 4.4.2")
            with pytest.raises((ConnectionError, OSError)):
                raw.send("NOOP")
        finally:
            raw.close()
        codes = lab.transcript(server="mx.north.test")["code"].tolist()
        assert codes == ["220", "421"]


def test_tls_handshake_garbage_then_a_healthy_client(lab):
    """Garbage instead of a TLS ClientHello after STARTTLS drops that connection only."""
    raw = Raw(lab.port("msa.north.test"))
    try:
        raw.reply()
        raw.send("EHLO raw.test")
        assert raw.send("STARTTLS")[0].startswith("220")
        raw.sock.sendall(b"this is not TLS\r\n" * 10)
        with pytest.raises((ConnectionError, OSError)):
            raw.reply()
    finally:
        raw.close()
    submit(lab, ALICE, [BOB], message(ALICE, BOB, "after tls garbage"))
    wait_for_subject(lab, BOB, "after tls garbage")


def test_help_does_not_use_up_an_injected_reply(fresh_lab):
    """HELP MAIL only looks the verb up: the reply injected for MAIL still fires on MAIL."""
    lab = fresh_lab
    lab.inject("mx.north.test", command="MAIL", reply="452 4.3.1 Insufficient storage")
    raw = Raw(lab.port("mx.north.test"))
    try:
        raw.reply()
        raw.send("EHLO x.test")
        assert raw.send("HELP MAIL")[0].startswith("250")
        assert raw.send("MAIL FROM:<a@b.test>") == ["452 4.3.1 Insufficient storage"]
        assert raw.send("MAIL FROM:<a@b.test>")[0].startswith("250")
    finally:
        raw.close()


def test_a_second_starttls_is_refused(lab):
    """STARTTLS inside TLS gets 503, and the encrypted session goes on."""
    raw = Raw(lab.port("msa.north.test"))
    try:
        raw.reply()
        raw.send("EHLO raw.test")
        assert raw.send("STARTTLS")[0].startswith("220")
        context = ssl.create_default_context(cafile=str(lab.ca_file))
        raw.sock = context.wrap_socket(raw.sock, server_hostname="msa.north.test")
        raw.file = raw.sock.makefile("rb")
        raw.send("EHLO raw.test")
        assert raw.send("STARTTLS")[0].startswith("503 5.5.1")
        assert raw.send("NOOP")[0].startswith("250")
    finally:
        raw.close()


def test_an_msa_knows_only_its_own_providers_users(lab):
    """Alice is north's user: south's MSA does not know her password (535), just as
    south's POP3 and IMAP do not."""
    with (
        smtplib.SMTP("127.0.0.1", lab.port("msa.south.test"), timeout=10) as smtp,
        pytest.raises(smtplib.SMTPAuthenticationError) as refused,
    ):
        smtp.login(ALICE, password(lab, ALICE))
    assert refused.value.smtp_code == 535
    with smtplib.SMTP("127.0.0.1", lab.port("msa.north.test"), timeout=10) as smtp:
        assert smtp.login(ALICE, password(lab, ALICE))[0] == 235
