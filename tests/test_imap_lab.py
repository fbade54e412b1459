"""IMAP through a real lab: imaplib, raw sockets and the shared store, against 127.0.0.1.

Most tests share one module lab and start from an empty INBOX (``clear``); the tests
that change settings (TLS required, masked secrets, autologout, restarts) start labs
of their own.
"""

from __future__ import annotations

import base64
import imaplib
import logging
import re
import select
import socket
import ssl
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

import mailkit_edu as mk

from .conftest import FAST
from .test_pop3_lab import pop, put
from .test_smtp_lab import ALICE, BOB, CAROL, DAVE, message, submit, wait_for_subject

NORTH, SOUTH = "imap.north.test", "imap.south.test"
#: Words that would mean Python's own error text reached the wire.
PYTHON_TEXT = ("Traceback", "Error:", "Exception", "SERVERBUG")


# -- helpers ---------------------------------------------------------------------------


class Wire:
    """A raw-socket IMAP client: bytes out, response lines in, nothing hidden.

    A response line that announces a literal (``{n}`` at its end) is returned with the
    literal's octets and the rest of the line, as one string.
    """

    def __init__(self, port: int, *, timeout: float = 5.0) -> None:
        self.sock: socket.socket = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = bytearray()
        self.received = bytearray()  # every octet the server sent
        self.sent = bytearray()  # every octet we sent
        self.greeting = self.line()

    def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        if not data.endswith(b"\n"):
            data += b"\r\n"
        self.sent += data
        self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        self.received += data
        return bool(data)

    def _readline(self) -> bytes:
        while b"\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError(f"the server closed the connection ({bytes(self.buffer)!r})")
        end = self.buffer.index(b"\n") + 1
        line = bytes(self.buffer[:end])
        del self.buffer[:end]
        return line

    def _read(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise ConnectionError("the server closed the connection inside a literal")
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def line(self) -> str:
        text = self._readline()
        while match := re.search(rb"\{(\d+)\}\r\n\Z", text):
            text += self._read(int(match.group(1)))
            text += self._readline()
        return text.decode("utf-8", "replace").removesuffix("\r\n")

    def until(self, tag: str) -> list[str]:
        """Every line up to and including the tagged status line of ``tag``."""
        lines = []
        while True:
            lines.append(self.line())
            if lines[-1].startswith(f"{tag} "):
                return lines

    def run(self, tag: str, command: str) -> list[str]:
        """Send one command (its last CRLF added) and read up to its tagged reply."""
        self.send(f"{tag} {command}\r\n")
        return self.until(tag)

    def quiet(self, seconds: float) -> bool:
        """True if the server sends nothing for ``seconds`` (and does not close)."""
        if self.buffer:
            return False
        readable, _, _ = select.select([self.sock], [], [], seconds)
        return not readable

    def until_closed(self, timeout: float = 3.0) -> list[str]:
        """The lines the server sends before it closes the connection."""
        self.sock.settimeout(timeout)
        lines = []
        try:
            while True:
                lines.append(self.line())
        except ConnectionError:  # the end of the stream, or a reset after it
            return lines
        except TimeoutError:
            raise AssertionError(f"the server did not close the connection; got {lines}") from None

    def starttls(self, context: ssl.SSLContext, hostname: str) -> None:
        assert not self.buffer, "bytes sent before the TLS handshake"
        self.sock = context.wrap_socket(self.sock, server_hostname=hostname)

    def close(self) -> None:
        self.sock.close()


def login(lab: mk.Lab, address: str) -> Wire:
    """A raw connection to the address's IMAP server, logged in."""
    wire = Wire(lab.port(server_of(address)))
    reply = wire.run("L1", f"LOGIN {address} {lab.account(address).password}")
    assert reply[-1].startswith("L1 OK"), reply
    return wire


def server_of(address: str) -> str:
    return f"imap.{address.rpartition('@')[2]}"


def imap(lab: mk.Lab, address: str) -> imaplib.IMAP4:
    """An imaplib client, logged in (use it with ``with``: it logs out at the end)."""
    client = imaplib.IMAP4("127.0.0.1", lab.port(server_of(address)), timeout=10)
    client.login(address, lab.account(address).password)
    return client


def clear(lab: mk.Lab, address: str, folder: str = "INBOX") -> None:
    """Empty a folder straight in the store, so a test starts from nothing."""
    lab.store.expunge(address, folder, [info.uid for info in lab.store.messages(address, folder)])


def subjects(lab: mk.Lab, address: str) -> list[str]:
    return lab.mailbox(address).query("folder == 'INBOX'")["subject"].tolist()


def flags_of(lab: mk.Lab, address: str, subject: str) -> set[str]:
    row = lab.mailbox(address).query("folder == 'INBOX' and subject == @subject")
    return set(row["flags"].item().split())


def last_exchange(lab: mk.Lab, client: imaplib.IMAP4, server: str) -> list[str]:
    """From the transcript: the server lines that answered ``client``'s last command."""
    tag = client.tagpre.decode() + str(client.tagnum - 1)
    rows = lab.transcript(server=server)
    start = rows.index[(rows["direction"] == "C") & rows["line"].str.startswith(f"{tag} ")][-1]
    after = rows.loc[start:]
    lines = after[(after["session"] == rows.loc[start, "session"]) & (after["direction"] == "S")]
    lines = lines["line"].tolist()
    return lines[: next(i for i, line in enumerate(lines) if line.startswith(f"{tag} ")) + 1]


def uid_flags(client: imaplib.IMAP4) -> dict[int, set[str]]:
    """{uid: flags} of the selected mailbox, by UID FETCH (\\Recent left out)."""
    client.response("FETCH")  # drop the FETCH news imaplib kept from earlier commands
    typ, data = client.uid("FETCH", "1:*", "(UID FLAGS)")
    assert typ == "OK", data
    found = {}
    for item in data:
        match = re.search(rb"UID (\d+) FLAGS \(([^)]*)\)", item)
        assert match, item
        found[int(match.group(1))] = set(match.group(2).decode().split()) - {"\\Recent"}
    return found


def untagged(line: str) -> tuple[str, int, set[str] | None]:
    """``* 2 FETCH (FLAGS (\\Seen))`` -> ("FETCH", 2, {"\\Seen"}) (\\Recent left out);
    ``* 1 EXPUNGE`` -> ("EXPUNGE", 1, None)."""
    match = re.fullmatch(r"\* (\d+) FETCH \(FLAGS \(([^)]*)\)\)", line)
    if match:
        return "FETCH", int(match.group(1)), set(match.group(2).split()) - {"\\Recent"}
    match = re.fullmatch(r"\* (\d+) (EXPUNGE|EXISTS)", line)
    assert match, line
    return match.group(2), int(match.group(1)), None


def tree(path: Path) -> dict[str, int]:
    """Every file and directory below ``path``, with file sizes (directories: -1)."""
    return {
        str(p.relative_to(path)): (p.stat().st_size if p.is_file() else -1)
        for p in sorted(path.rglob("*"))
    }


def session_rows(lab: mk.Lab, server: str, before: int) -> pd.DataFrame:
    """The transcript rows of the first session that started after row ``before``."""
    rows = lab.transcript(server=server)
    return rows[rows["session"] == rows.iloc[before]["session"]]


def assert_clear_refusal(line: str, tag: str = r"[A-Za-z0-9.]+|\*") -> None:
    """A refusal a person can read: tag, BAD/NO/BYE and printable ASCII text."""
    assert re.fullmatch(rf"(?:{tag}) (?:BAD|NO|BYE) \S.*", line), line
    assert line.isascii() and line.isprintable(), line
    assert not any(word in line for word in PYTHON_TEXT), line


def assert_no_python_text(lab: mk.Lab) -> None:
    """No IMAP server line carries Python's error text (tracebacks, exception names)."""
    rows = lab.transcript(protocol="IMAP")
    lines = rows[rows["direction"] == "S"]["line"]
    leaked = [line for line in lines if any(word in line for word in PYTHON_TEXT)]
    assert not leaked, leaked


@pytest.fixture(autouse=True)
def no_logged_errors(caplog):
    """The server logs no error (an unexpected exception) during any test here."""
    with caplog.at_level(logging.ERROR, logger="mailkit_edu"):
        yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


# -- the servers -----------------------------------------------------------------------


def test_imap_servers_are_in_the_lab(lab):
    """Each domain has an IMAP server (role imap, protocol IMAP, on 127.0.0.1) with a DNS A
    record; it greets as itself and knows only its own domain's accounts."""
    servers = lab.servers.set_index("name")
    records = {(n, t) for n, t in lab.zone.frame()[["name", "type"]].values}
    for domain in ("north.test", "south.test"):
        row = servers.loc[f"imap.{domain}"]
        assert (row["role"], row["protocol"], row["host"], row["domain"]) == (
            "imap",
            "IMAP",
            "127.0.0.1",
            domain,
        )
        assert row["running"] and row["port"] == lab.port(f"imap.{domain}") > 0
        assert (f"imap.{domain}.", "A") in records
        wire = Wire(lab.port(f"imap.{domain}"))
        try:
            assert wire.greeting.startswith("* OK [CAPABILITY IMAP4rev1 ")
            assert wire.greeting.endswith(f"imap.{domain} IMAP4rev1 ready")
        finally:
            wire.close()
    wire = Wire(lab.port(SOUTH))  # alice's password is no good at south
    try:
        reply = wire.run("a1", f"LOGIN {ALICE} {lab.account(ALICE).password}")
        assert reply == ["a1 NO [AUTHENTICATIONFAILED] invalid user name or password"]
    finally:
        wire.close()


# -- mail in, mail out: the store is shared ---------------------------------------------


def test_smtp_delivery_then_imap_fetch(lab):
    """A message submitted over SMTP is fetched over IMAP exactly as stored (both Received
    lines); BODY.PEEK leaves it unseen, BODY[TEXT] marks it \\Seen in the store."""
    clear(lab, CAROL)
    submit(lab, ALICE, [CAROL], message(ALICE, CAROL, "to read over imap", "Hello, IMAP!\n"))
    wait_for_subject(lab, CAROL, "to read over imap")
    row = lab.mailbox(CAROL).query("folder == 'INBOX'")
    stored = Path(row["file"].item()).read_bytes()
    with imap(lab, CAROL) as client:
        assert client.select("INBOX") == ("OK", [b"1"])
        typ, data = client.uid("SEARCH", None, 'SUBJECT "to read over imap"')
        assert (typ, data) == ("OK", [str(row["uid"].item()).encode()])
        typ, data = client.fetch("1", "(RFC822.SIZE BODY.PEEK[])")
        assert typ == "OK"
        assert f"RFC822.SIZE {len(stored)} ".encode() in data[0][0]
        assert data[0][1] == stored
        assert stored.count(b"Received: from") == 2 and b"Hello, IMAP!" in stored
        assert "\\Seen" not in flags_of(lab, CAROL, "to read over imap")
        typ, data = client.fetch("1", "(BODY[TEXT])")
        assert typ == "OK" and data[0][1].strip() == b"Hello, IMAP!"
        assert b"\\Seen" in data[0][0] + data[1]  # the FETCH tells of the new flag
    assert "\\Seen" in flags_of(lab, CAROL, "to read over imap")


def test_pop3_deletion_and_imap_expunge_share_the_store(lab):
    """A POP3 DELE+QUIT reaches an open IMAP session as ``* 1 EXPUNGE`` at its NOOP, and
    a message expunged over IMAP is gone from the next POP3 session."""
    clear(lab, CAROL)
    for subject in ("pop deletes me", "imap expunges me", "stays"):
        put(lab, CAROL, subject)
    with imap(lab, CAROL) as client:
        client.select("INBOX")
        session = pop(lab, CAROL)
        session.dele(1)
        session.quit()
        assert client.noop()[0] == "OK"
        assert last_exchange(lab, client, SOUTH)[:-1] == ["* 1 EXPUNGE"]
        typ, data = client.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        got = [item[1].strip() for item in data if isinstance(item, tuple)]
        assert got == [b"Subject: imap expunges me", b"Subject: stays"]
        client.store("1", "+FLAGS", "(\\Deleted)")
        assert client.expunge()[0] == "OK"
        assert last_exchange(lab, client, SOUTH)[:-1] == ["* 1 EXPUNGE"]
    assert subjects(lab, CAROL) == ["stays"]
    session = pop(lab, CAROL)
    try:
        assert session.stat()[0] == 1
        assert b"Subject: stays" in session.retr(1)[1]
        listing = session.uidl()[1]
        uid = lab.mailbox(CAROL)["uid"].item()
        assert len(listing) == 1 and listing[0].split()[1].endswith(f".{uid}".encode())
    finally:
        session.quit()


def test_two_sessions_see_each_others_flags_and_expunges_at_noop(lab):
    """Two imaplib sessions on one INBOX: flags and expunges made by one reach the other
    as untagged FETCH and EXPUNGE at its next NOOP, but no EXPUNGE comes during its FETCH
    (RFC 3501 §7.4.1: message numbers must not move under a FETCH)."""
    clear(lab, ALICE)
    for subject in ("one", "two", "three"):
        put(lab, ALICE, subject)
    with imap(lab, ALICE) as first, imap(lab, ALICE) as second:
        first.select("INBOX")
        second.select("INBOX")
        first.store("2", "+FLAGS", "(\\Flagged)")
        first.store("1", "+FLAGS", "(\\Deleted)")
        assert first.expunge()[0] == "OK"
        assert last_exchange(lab, first, NORTH)[:-1] == ["* 1 EXPUNGE"]
        second.noop()
        news = [untagged(line) for line in last_exchange(lab, second, NORTH)[:-1]]
        # "two" is message 2 before the EXPUNGE and message 1 after it
        assert news in (
            [("EXPUNGE", 1, None), ("FETCH", 1, {"\\Flagged"})],
            [("FETCH", 2, {"\\Flagged"}), ("EXPUNGE", 1, None)],
        ), news
        first.store("2", "+FLAGS", "(\\Deleted)")  # "three"
        first.expunge()
        assert second.fetch("1:*", "(UID)")[0] == "OK"
        lines = last_exchange(lab, second, NORTH)
        assert [line.split(" (")[0] for line in lines[:-1]] == ["* 1 FETCH", "* 2 FETCH"]
        assert not any("EXPUNGE" in line for line in lines)
        second.noop()
        assert last_exchange(lab, second, NORTH)[:-1] == ["* 2 EXPUNGE"]
        second.store("1", "+FLAGS", "(\\Seen)")  # and the other way round
        first.noop()
        news = [untagged(line) for line in last_exchange(lab, first, NORTH)[:-1]]
        assert news == [("FETCH", 1, {"\\Flagged", "\\Seen"})]
        assert uid_flags(first) == uid_flags(second)
    assert subjects(lab, ALICE) == ["two"]
    assert flags_of(lab, ALICE, "two") == {"\\Flagged", "\\Seen"}


def test_idle_pushes_changes_at_once_and_done_ends_it(lab):
    """IDLE (RFC 2177) over a raw socket: ``+ idling``; a delivery is pushed as
    ``* n EXISTS`` within a second, another session's flag as ``* n FETCH``; DONE ends it
    with the IDLE's tagged OK, and the session goes on."""
    clear(lab, ALICE)
    put(lab, ALICE, "before idle")
    wire = login(lab, ALICE)
    try:
        wire.run("s1", "SELECT INBOX")
        wire.send("i1 IDLE")
        assert wire.line() == "+ idling"
        assert wire.quiet(0.2)  # nothing to say yet
        start = time.monotonic()
        put(lab, ALICE, "during idle")
        assert wire.line() == "* 2 EXISTS"
        assert time.monotonic() - start < 1.0
        assert re.fullmatch(r"\* [0-2] RECENT", wire.line())
        with imap(lab, ALICE) as other:
            other.select("INBOX")
            other.store("1", "+FLAGS", "(\\Flagged)")
            assert untagged(wire.line()) == ("FETCH", 1, {"\\Flagged"})
        wire.send("DONE")
        assert wire.until("i1") == ["i1 OK IDLE terminated"]
        assert wire.run("n1", "NOOP") == ["n1 OK NOOP completed"]
    finally:
        wire.close()


def test_mail_that_arrives_after_the_server_started_is_recent_for_the_first_session(
    fresh_lab,
):
    """RFC 3501 §2.3.2: \\Recent means "this session is the first session to have been
    notified about this message". A message delivered to a running lab before anyone
    looked is therefore \\Recent for the first SELECT, and for no later session."""
    lab = fresh_lab
    put(lab, ALICE, "brand new")
    with imap(lab, ALICE) as first:
        first.select("INBOX")
        assert first.response("RECENT") == ("RECENT", [b"1"])
        typ, data = first.fetch("1", "(FLAGS)")
        assert typ == "OK" and b"\\Recent" in data[0], data
    with imap(lab, ALICE) as second:
        second.select("INBOX")
        assert second.response("RECENT") == ("RECENT", [b"0"])


def test_uidvalidity_uids_and_flags_survive_a_restart(tmp_path):
    """Restart a lab on the same folder: same UIDVALIDITY, same UIDs, same flags (keywords
    too), and the UID of an expunged last message is never given again (RFC 3501
    §2.3.1.1)."""
    with mk.start_lab(tmp_path, **FAST) as lab:
        for subject in ("a", "b", "c", "d"):
            put(lab, ALICE, subject)
        with imap(lab, ALICE) as client:
            client.select("INBOX")
            client.store("1", "+FLAGS", "(\\Seen \\Answered)")
            client.store("3", "+FLAGS", "(\\Flagged $Work)")
            client.store("4", "+FLAGS", "(\\Deleted)")
            client.expunge()
            before = uid_flags(client)
            uidvalidity = client.response("UIDVALIDITY")[1]
    with mk.start_lab(tmp_path, **FAST) as lab, imap(lab, ALICE) as client:
        client.select("INBOX")
        assert client.response("UIDVALIDITY")[1] == uidvalidity
        assert client.response("UIDNEXT")[1] == [b"5"]
        after = uid_flags(client)
        put(lab, ALICE, "e")
        client.noop()
        assert max(uid_flags(client)) == 5
    assert before == {1: {"\\Seen", "\\Answered"}, 2: set(), 3: {"\\Flagged", "$Work"}}
    assert after == before


# -- names that must not leave the account ------------------------------------------------

ESCAPES = [
    "../bob@north.test",
    "../../bob@north.test/Maildir",
    "/etc",
    "/etc/passwd",
    "a/b",
    "INBOX/../../bob@north.test",
    "..",
    "&AC8-etc",  # "/etc" in modified UTF-7
    "&AC4ALgAv-bob@north.test",  # "../bob@north.test" in modified UTF-7
]
OTHER_USERS = ["bob@north.test", "~bob", "~bob/INBOX", "#user.bob", "carol@south.test"]


def test_folder_names_cannot_reach_outside_the_account(lab):
    """Paths (``../``, ``/etc``, names with ``/``, also in modified UTF-7) and other users'
    mailboxes are refused by every command that takes a name; no file of any account
    changes, bob's and carol's mail included."""
    clear(lab, ALICE)
    put(lab, ALICE, "mine")
    clear(lab, BOB)
    put(lab, BOB, "bob's own")
    bob_before = lab.mailbox(BOB)
    files_before = tree(lab.path / "mail")
    folders_before = lab.store.folders(ALICE)
    wire = login(lab, ALICE)
    replies = []
    try:
        wire.run("s0", "SELECT INBOX")
        for n, name in enumerate(ESCAPES + OTHER_USERS):
            quoted = '"' + name + '"'
            commands = [
                f"STATUS {quoted} (MESSAGES)",
                f"APPEND {quoted} {{6+}}\r\nx: y\r\n",
                f"COPY 1 {quoted}",
                f"MOVE 1 {quoted}",
                f"EXAMINE {quoted}",
                f"SELECT {quoted}",
                "SELECT INBOX",
            ]
            if name in ESCAPES:  # a name of the user's own could be created; these not
                commands[:0] = [
                    f"CREATE {quoted}",
                    f"RENAME Archive {quoted}",
                    f"DELETE {quoted}",
                    f"SUBSCRIBE {quoted}",
                ]
            for m, command in enumerate(commands):
                tag = f"e{n}x{m}"
                lines = wire.run(tag, command)
                if command != "SELECT INBOX":
                    replies.append((command, lines[-1]))
                    # ten BADs in a row end a session: one good command between them
                    assert wire.run(f"{tag}n", "NOOP")[-1] == f"{tag}n OK NOOP completed"
    finally:
        wire.close()
    for command, reply in replies:
        assert re.match(r"e\d+x\d+ (NO|BAD) ", reply), (command, reply)
        assert_clear_refusal(reply)
    assert tree(lab.path / "mail") == files_before
    assert lab.store.folders(ALICE) == folders_before
    pd.testing.assert_frame_equal(lab.mailbox(BOB), bob_before)
    assert subjects(lab, ALICE) == ["mine"]
    assert_no_python_text(lab)


# -- literals and APPEND ----------------------------------------------------------------


def test_a_synchronizing_literal_gets_a_continuation_and_literal_plus_none(lab):
    """``{n}`` (RFC 3501 §7.5): the server sends ``+`` and waits for the octets; ``{n+}``
    (LITERAL+, RFC 7888): the client sends at once and the first reply is the tagged one."""
    clear(lab, ALICE)
    password = lab.account(ALICE).password
    wire = Wire(lab.port(NORTH))
    try:
        assert "LITERAL+" in wire.greeting.split()
        wire.send("l1 LOGIN {16}")
        assert wire.line().startswith("+")
        assert wire.quiet(0.2)  # waits for the literal
        wire.send(f"{ALICE} {{{len(password)}}}")
        assert wire.line().startswith("+")
        wire.send(password)
        assert wire.line().startswith("l1 OK [CAPABILITY ")
    finally:
        wire.close()
    wire = Wire(lab.port(NORTH))
    try:
        wire.send(f"l2 LOGIN {{16+}}\r\n{ALICE} {{{len(password)}+}}\r\n{password}\r\n")
        assert wire.line().startswith("l2 OK [CAPABILITY ")
        # a literal's octets are data, never commands, whatever they look like
        body = b"Subject: tricky\r\n\r\nx1 LOGOUT\r\n{5}\r\n"
        wire.send(b"l3 APPEND INBOX {%d+}\r\n%s\r\n" % (len(body), body))
        assert re.fullmatch(r"l3 OK \[APPENDUID \d+ \d+\] APPEND completed", wire.line())
        assert wire.run("l4", "NOOP") == ["l4 OK NOOP completed"]
    finally:
        wire.close()
    stored = lab.mailbox(ALICE).query("subject == 'tricky'")["file"].item()
    assert Path(stored).read_bytes() == body


def test_append_with_flags_and_date_then_fetch_internaldate(lab):
    """APPEND with flags and a date-time (RFC 3501 §6.3.11): APPENDUID names the new
    UID, FETCH gives back the same instant as INTERNALDATE, the flags and the octets."""
    clear(lab, ALICE)
    sent = b"From: a@b.test\r\nSubject: appended\r\n\r\nkept as sent\r\n"
    with imap(lab, ALICE) as client:
        typ, data = client.append(
            "INBOX", "(\\Flagged $Later)", '"04-Jul-2021 09:30:00 +0200"', sent
        )
        assert typ == "OK", data
        match = re.fullmatch(rb"\[APPENDUID (\d+) (\d+)\] APPEND completed", data[0])
        assert match, data
        uidvalidity, uid = int(match.group(1)), match.group(2).decode()
        assert uidvalidity == lab.store.uidvalidity(ALICE, "INBOX")
        client.select("INBOX")
        typ, data = client.uid("FETCH", uid, "(INTERNALDATE FLAGS BODY.PEEK[])")
        assert typ == "OK"
        head = data[0][0].decode()
        date = re.search(r'INTERNALDATE "([ 0-9]\d-\w{3}-\d{4} \d\d:\d\d:\d\d [+-]\d{4})"', head)
        assert date, head
        when = datetime.strptime(date.group(1).strip(), "%d-%b-%Y %H:%M:%S %z")
        assert when == datetime(2021, 7, 4, 7, 30, tzinfo=UTC)
        flags = re.search(r"FLAGS \(([^)]*)\)", head + data[1].decode()).group(1).split()
        assert set(flags) - {"\\Recent"} == {"\\Flagged", "$Later"}
        assert data[0][1] == sent
    assert flags_of(lab, ALICE, "appended") == {"\\Flagged", "$Later"}
    stored = Path(lab.mailbox(ALICE)["file"].item())
    assert stored.stat().st_mtime == datetime(2021, 7, 4, 7, 30, tzinfo=UTC).timestamp()


# -- TLS -------------------------------------------------------------------------------


def test_starttls_with_the_lab_ca(lab):
    """imaplib upgrades with STARTTLS, verifying the certificate of imap.north.test against
    the lab CA; after TLS, STARTTLS is no longer offered and login works."""
    clear(lab, ALICE)
    put(lab, ALICE, "over tls")
    with imaplib.IMAP4("127.0.0.1", lab.port(NORTH), timeout=10) as client:
        assert "STARTTLS" in client.capabilities
        context = ssl.create_default_context(cafile=str(lab.ca_file))
        client.host = NORTH  # imaplib checks the certificate against this name
        client.starttls(context)
        assert isinstance(client.sock, ssl.SSLSocket)
        names = {value for kind, value in client.sock.getpeercert()["subjectAltName"]}
        assert NORTH in names
        assert "STARTTLS" not in client.capabilities  # asked again after the handshake
        client.login(ALICE, lab.account(ALICE).password)
        assert client.select("INBOX") == ("OK", [b"1"])
    commands = lab.transcript(server=NORTH)["command"].dropna().tolist()
    assert "STARTTLS" in commands


def test_starttls_twice_is_bad_and_plaintext_sent_before_the_handshake_is_dropped(lab):
    """A second STARTTLS gets BAD (RFC 3501 §6.2.1). A command pipelined after STARTTLS,
    before the handshake, is not run: it is shown as discarded."""
    context = ssl.create_default_context(cafile=str(lab.ca_file))
    wire = Wire(lab.port(NORTH))
    try:
        wire.send(f"t1 STARTTLS\r\nt2 LOGIN {ALICE} {lab.account(ALICE).password}\r\n")
        assert wire.line() == "t1 OK Begin TLS negotiation now"
        wire.starttls(context, NORTH)
        reply = wire.run("t3", "STARTTLS")
        assert len(reply) == 1 and reply[0].startswith("t3 BAD ")
        reply = wire.run("t4", "SELECT INBOX")  # the injected LOGIN did not happen
        assert len(reply) == 1 and reply[0].startswith("t4 BAD ")
        caps = wire.run("t5", "CAPABILITY")
        assert caps[0].startswith("* CAPABILITY ") and "STARTTLS" not in caps[0].split()
    finally:
        wire.close()
    lines = lab.transcript(server=NORTH)["line"].tolist()
    assert any(line.endswith("[discarded: sent before TLS]") for line in lines)
    assert f"t2 LOGIN {ALICE} {lab.account(ALICE).password}" not in lines


def test_require_tls_disables_login_until_starttls():
    """With require_tls=True: LOGINDISABLED and no AUTH=PLAIN before STARTTLS (RFC 3501
    §6.2.3), LOGIN and AUTHENTICATE get NO; after STARTTLS both are offered and LOGIN works."""
    with mk.start_lab(require_tls=True, **FAST) as lab:
        put(lab, ALICE, "secret")
        with imaplib.IMAP4("127.0.0.1", lab.port(NORTH), timeout=10) as client:
            assert "LOGINDISABLED" in client.capabilities
            assert "AUTH=PLAIN" not in client.capabilities
            with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
                client.login(ALICE, lab.account(ALICE).password)
            token = base64.b64encode(f"\0{ALICE}\0{lab.account(ALICE).password}".encode())
            with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
                client.authenticate("PLAIN", lambda _: base64.b64decode(token))
            client.host = NORTH
            client.starttls(ssl.create_default_context(cafile=str(lab.ca_file)))
            assert "LOGINDISABLED" not in client.capabilities
            assert "AUTH=PLAIN" in client.capabilities
            assert client.login(ALICE, lab.account(ALICE).password)[0] == "OK"
            assert client.select("INBOX") == ("OK", [b"1"])
        rows = lab.transcript(server=NORTH)
        replies = rows[rows["direction"] == "S"]["line"].tolist()
        refused = [line for line in replies if " NO [PRIVACYREQUIRED] " in line]
        assert len(refused) == 2


def test_stopping_the_server_drops_plain_and_tls_connections(fresh_lab):
    """lab.stop_server drops every connection, as a crash would: a plain one and one after
    STARTTLS both read the end of the stream, and the server forgets both at once."""
    lab = fresh_lab
    server = lab.server(NORTH)
    plain = Wire(lab.port(NORTH))
    secure = Wire(lab.port(NORTH))
    try:
        assert secure.run("t1", "STARTTLS") == ["t1 OK Begin TLS negotiation now"]
        secure.starttls(ssl.create_default_context(cafile=str(lab.ca_file)), NORTH)
        assert secure.run("t2", "NOOP") == ["t2 OK NOOP completed"]
        assert len(server.connections) == 2
        lab.stop_server(NORTH)
        assert plain.until_closed() == []
        assert secure.until_closed() == []
        deadline = time.monotonic() + 1.0
        while server.connections and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not server.connections, f"{len(server.connections)} connection(s) still open"
        lab.start_server(NORTH)
        login(lab, ALICE).close()
    finally:
        plain.close()
        secure.close()


# -- secrets, faults and timers ----------------------------------------------------------


@pytest.fixture(scope="module")
def masked_lab():
    with mk.start_lab(mask_secrets=True, **FAST) as lab:
        yield lab


def test_the_password_shows_unless_secrets_are_masked(lab, masked_lab):
    """By default the LOGIN line shows the password; with mask_secrets=True no form of
    login shows it (LOGIN, LOGIN with a literal, AUTHENTICATE PLAIN with and without an
    initial response), nor its base64 token."""
    for each in (lab, masked_lab):
        wire = login(each, ALICE)
        wire.close()
    password = lab.account(ALICE).password
    shown = lab.transcript(server=NORTH)["line"].tolist()
    assert f"L1 LOGIN {ALICE} {password}" in shown
    token = base64.b64encode(f"\0{ALICE}\0{password}".encode()).decode()
    wire = Wire(masked_lab.port(NORTH))
    try:
        wire.send(f"m1 LOGIN {ALICE} {{{len(password)}}}")
        assert wire.line().startswith("+")
        wire.send(password)
        assert wire.line().startswith("m1 OK")
    finally:
        wire.close()
    wire = Wire(masked_lab.port(NORTH))
    try:
        assert wire.run("m2", f"AUTHENTICATE PLAIN {token}")[-1].startswith("m2 OK")
    finally:
        wire.close()
    wire = Wire(masked_lab.port(NORTH))
    try:
        wire.send("m3 AUTHENTICATE PLAIN")
        assert wire.line().startswith("+")
        wire.send(token)
        assert wire.until("m3")[-1].startswith("m3 OK")
    finally:
        wire.close()
    lines = masked_lab.transcript(server=NORTH)["line"].tolist()
    assert f"L1 LOGIN {ALICE} ********" in lines
    assert not [line for line in lines if password in line or token in line]


def test_mask_secrets_hides_a_password_that_follows_a_literal_user_name(masked_lab):
    """``LOGIN {16}`` + ``alice@north.test alice-secret``: the password is on the line after
    the literal, and it must be masked too."""
    lab = masked_lab
    password = lab.account(ALICE).password
    wire = Wire(lab.port(NORTH))
    try:
        wire.send(f"m4 LOGIN {{{len(ALICE)}+}}\r\n{ALICE} {password}\r\n")
        assert wire.line().startswith("m4 OK")
    finally:
        wire.close()
    lines = lab.transcript(server=NORTH)["line"].tolist()
    assert not [line for line in lines if password in line], "the password is in the transcript"


def test_injected_replies(lab):
    """lab.inject makes the next FETCH answer NO (the server adds the tag); the FETCH after
    it works. An injected ``* BYE`` greeting closes the connection; the next one is normal."""
    clear(lab, ALICE)
    put(lab, ALICE, "flaky")
    lab.inject(NORTH, "FETCH", "NO [UNAVAILABLE] try later")
    with imap(lab, ALICE) as client:
        client.select("INBOX")
        assert client.fetch("1", "(FLAGS)") == ("NO", [b"[UNAVAILABLE] try later"])
        typ, data = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and data[0][1].strip() == b"Subject: flaky"
    lab.inject(NORTH, "CONNECT", "* BYE [UNAVAILABLE] down for maintenance")
    wire = Wire(lab.port(NORTH))
    try:
        assert wire.greeting == "* BYE [UNAVAILABLE] down for maintenance"
        assert wire.until_closed() == []
    finally:
        wire.close()
    login(lab, ALICE).close()  # once only
    with pytest.raises(ValueError):
        lab.inject(NORTH, "FETCH", "451 not imap")
    with pytest.raises(ValueError):
        lab.inject(NORTH, "CONNECT", "+OK not imap")


def test_autologout_says_bye_and_loses_nothing():
    """With imap_autologout=0.5 an idle connection gets ``* BYE`` and is closed after half a
    second (not before); a talking one stays; flags stored before stay, and a message
    marked \\Deleted is not expunged by the logout."""
    with mk.start_lab(imap_autologout=0.5, **FAST) as lab:
        put(lab, ALICE, "read")
        put(lab, ALICE, "deleted, not expunged")
        idle = login(lab, ALICE)
        busy = login(lab, BOB)
        try:
            idle.run("s1", "SELECT INBOX")
            idle.run("s2", "STORE 1 +FLAGS (\\Seen)")
            idle.run("s3", "STORE 2 +FLAGS (\\Deleted)")
            start = time.monotonic()
            n = 0
            while time.monotonic() - start < 1.2:
                n += 1
                assert busy.run(f"n{n}", "NOOP") == [f"n{n} OK NOOP completed"]
                time.sleep(0.15)
            bye = idle.until_closed()
            assert len(bye) == 1 and bye[0].startswith("* BYE "), bye
            assert_clear_refusal(bye[0])
            assert busy.run("n0", "NOOP") == ["n0 OK NOOP completed"]
        finally:
            idle.close()
            busy.close()
        rows = lab.transcript(server=NORTH)
        said = rows[rows["line"] == "s3 STORE 2 +FLAGS (\\Deleted)"]["time"].item()
        closed = rows[rows["line"] == bye[0]]["time"].item()
        assert 0.45 <= (closed - said).total_seconds() < 1.0
        assert subjects(lab, ALICE) == ["read", "deleted, not expunged"]
        assert flags_of(lab, ALICE, "read") == {"\\Seen"}
        assert flags_of(lab, ALICE, "deleted, not expunged") == {"\\Deleted"}


# -- bad input -------------------------------------------------------------------------


def test_garbage_and_unbalanced_input_get_bad_and_the_session_goes_on(lab):
    """Garbage bytes, bad tags, unbalanced parentheses and quotes, bad escapes and deep
    nesting: each gets one clear BAD (tagged when the tag could be read), and the
    session still works afterwards."""
    clear(lab, ALICE)
    put(lab, ALICE, "survivor")
    inputs = [
        b"\x00\xff\xfe garbage\r\n",
        b"\r\n",
        b"* NOOP\r\n",
        b"+ NOOP\r\n",
        b"g1\r\n",
        b"g2 FROBNICATE\r\n",
        b"g3 FETCH 1 (FLAGS\r\n",
        b"g4 FETCH 1 FLAGS)\r\n",
        b"g5 FETCH 1 BODY[HEADER.FIELDS (SUBJECT]\r\n",
        b'g6 SELECT "INBOX\r\n',
        b'g7 SEARCH SUBJECT "a\\q"\r\n',
        b"g8 SEARCH " + b"(" * 500 + b"ALL" + b")" * 500 + b"\r\n",
        b"g9 NOOP extra\r\n",
    ]
    wire = login(lab, ALICE)
    try:
        wire.run("s1", "SELECT INBOX")
        for data in inputs:
            wire.send(data)
            reply = wire.line()
            tag = data.split(b" ")[0].strip().decode("ascii", "replace")
            expected = tag if re.fullmatch(r"g\d", tag) else r"\*"
            assert_clear_refusal(reply, expected)
            assert reply.split()[1] == "BAD", (data, reply)
            assert wire.run("ok", "NOOP") == ["ok OK NOOP completed"]  # one line each, alive
        wire.run("s2", "SELECT INBOX")
        reply = wire.run("f1", "FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert "Subject: survivor" in reply[0] and reply[-1] == "f1 OK FETCH completed"
    finally:
        wire.close()
    assert_no_python_text(lab)


def test_ten_bad_commands_in_a_row_end_the_session(lab):
    """A confused client that sends only bad commands is told BYE after the tenth."""
    wire = Wire(lab.port(NORTH))
    try:
        for n in range(9):
            assert wire.run(f"b{n}", "WHAT") == [f"b{n} BAD unknown command WHAT"]
        wire.send("b9 WHAT")
        rest = wire.until_closed()
        assert rest[0] == "b9 BAD unknown command WHAT"
        assert len(rest) == 2 and rest[1].startswith("* BYE ")
        assert_clear_refusal(rest[1])
    finally:
        wire.close()
    assert_no_python_text(lab)


@pytest.mark.parametrize("form", ["{99999999999}", "{99999999999+}"])
def test_a_huge_literal_is_refused_before_reading(lab, form):
    """A literal announced larger than the server accepts gets BAD (without a ``+``
    continuation for the synchronizing form) and the server closes: its octets could
    otherwise be read as commands."""
    wire = Wire(lab.port(NORTH))
    try:
        wire.send(f"h1 LOGIN {ALICE} {form}")
        rest = wire.until_closed()
        assert len(rest) == 2, rest
        assert rest[0].startswith("h1 BAD ") and "TOOBIG" in rest[0]
        assert rest[1].startswith("* BYE ")
        for line in rest:
            assert_clear_refusal(line)
    finally:
        wire.close()
    healthy = login(lab, ALICE)
    healthy.close()
    assert_no_python_text(lab)


def test_a_literal_that_never_arrives_holds_only_its_own_connection(lab):
    """After ``{12}`` and the ``+``, the server waits for the octets; meanwhile another
    client is served. When the octets come, the command completes."""
    password = lab.account(ALICE).password
    waiting = Wire(lab.port(NORTH))
    try:
        waiting.send(f"w1 LOGIN {ALICE} {{{len(password)}}}")
        assert waiting.line().startswith("+")
        waiting.sock.sendall(password[:4].encode())  # a part, then nothing
        other = login(lab, BOB)
        try:
            assert other.run("o1", "SELECT INBOX")[-1] == "o1 OK [READ-WRITE] SELECT completed"
            assert other.run("o2", "NOOP") == ["o2 OK NOOP completed"]
        finally:
            other.close()
        assert waiting.quiet(0.3)
        waiting.send(password[4:] + "\r\n")
        assert waiting.line().startswith("w1 OK [CAPABILITY ")
    finally:
        waiting.close()


def test_invalid_sequence_sets_are_bad(lab):
    """``0``, ``1:``, ``*:*:*``, a number past 2^32-1 and a message number past the last
    (RFC 3501 §9) get BAD, for FETCH, STORE, COPY and UID FETCH; nothing changes."""
    clear(lab, ALICE)
    put(lab, ALICE, "only one")
    wire = login(lab, ALICE)
    try:
        wire.run("s1", "SELECT INBOX")
        n = 0
        for sequence in ("0", "1:", "*:*:*", "1,,2", "4294967296", "2", "a"):
            for command in ("FETCH {} FLAGS", "STORE {} +FLAGS (\\Deleted)", "COPY {} Archive"):
                n += 1
                reply = wire.run(f"q{n}", command.format(sequence))
                assert len(reply) == 1 and reply[0].startswith(f"q{n} BAD "), reply
                assert_clear_refusal(reply[0])
            if sequence != "2":  # a UID past the last is no error: the set is just empty
                n += 1
                reply = wire.run(f"q{n}", f"UID FETCH {sequence} FLAGS")
                assert len(reply) == 1 and reply[0].startswith(f"q{n} BAD "), reply
            wire.run("ok", "NOOP")
    finally:
        wire.close()
    assert flags_of(lab, ALICE, "only one") == set()
    assert lab.mailbox(ALICE).query("folder == 'Archive'").empty
    assert_no_python_text(lab)


def test_fetch_of_a_section_that_does_not_exist_is_an_empty_string(lab):
    """BODY[7] of a one-part message is the empty string (RFC 3501 §6.4.5 asks for no
    error), and BODY.PEEK[7] too; the FETCH ends OK."""
    clear(lab, ALICE)
    put(lab, ALICE, "one part")
    wire = login(lab, ALICE)
    try:
        wire.run("s1", "SELECT INBOX")
        for tag, item in (("p1", "BODY.PEEK[7]"), ("p2", "BODY[7]"), ("p3", "BODY.PEEK[1.7.2]")):
            reply = wire.run(tag, f"FETCH 1 ({item})")
            assert reply[-1] == f"{tag} OK FETCH completed"
            section = item.replace(".PEEK", "")
            assert re.match(rf'\* 1 FETCH \({re.escape(section)} (\{{0\}}\r\n|"")', reply[0])
    finally:
        wire.close()


def test_commands_in_the_wrong_state_are_refused(lab):
    """Each state refuses the commands of the others (RFC 3501 §3, §6) with text that names
    the command, and the session is not disturbed."""
    password = lab.account(ALICE).password
    steps = [
        ("refuse", ["SELECT INBOX", "FETCH 1 FLAGS", "IDLE", "EXPUNGE", "CLOSE", 'LSUB "" *']),
        ("run", [f"LOGIN {ALICE} {password}"]),
        ("refuse", ["FETCH 1 FLAGS", "STORE 1 +FLAGS (\\Seen)", "EXPUNGE", "SEARCH ALL"]),
        ("refuse", [f"LOGIN {ALICE} {password}", "AUTHENTICATE PLAIN", "STARTTLS"]),
        ("run", ["SELECT INBOX"]),
        ("refuse", [f"LOGIN {ALICE} {password}", "AUTHENTICATE PLAIN", "STARTTLS"]),
        ("run", ["NOOP"]),
    ]
    wire = Wire(lab.port(NORTH))
    n = 0
    try:
        for what, commands in steps:
            for command in commands:
                n += 1
                reply = wire.run(f"w{n}", command)
                if what == "run":
                    assert reply[-1].startswith(f"w{n} OK"), reply
                    continue
                assert len(reply) == 1 and reply[0].startswith((f"w{n} BAD ", f"w{n} NO "))
                assert command.split()[0] in reply[0], reply
                assert_clear_refusal(reply[0])
    finally:
        wire.close()
    assert_no_python_text(lab)


@pytest.mark.parametrize("how", ["in one line", "without an end"])
def test_an_overlong_line_gets_bad_then_bye(lab, how):
    """A command line over 64 KiB gets a tagged BAD saying so, then ``* BYE`` saying why,
    and the connection closes; nothing of it is run."""
    wire = Wire(lab.port(NORTH))
    try:
        if how == "in one line":
            wire.sock.sendall(b"o1 NOOP " + b"x" * 60_000)  # no CRLF yet ...
            time.sleep(0.1)
            wire.sock.sendall(b"x" * 10_000 + b"\r\n")  # ... and now
        else:
            wire.sock.sendall(b"o1 NOOP " + b"x" * 70_000)  # and nothing more
        rest = wire.until_closed()
        assert len(rest) == 2, rest
        assert rest[0].startswith("o1 BAD ") and "too long" in rest[0]
        assert rest[1].startswith("* BYE ")
        assert "literal" not in rest[1], f"no literal was sent, but the server says: {rest[1]}"
        for line in rest:
            assert_clear_refusal(line)
    finally:
        wire.close()
    login(lab, ALICE).close()
    assert_no_python_text(lab)


def test_wrong_passwords_are_answered_late_and_alike():
    """A wrong password, an unknown user and another domain's user all get the same NO
    [AUTHENTICATIONFAILED], after the delay, while other clients are served at once; the
    fifth failure ends the connection."""
    with mk.start_lab(**{**FAST, "auth_failure_delay": 0.3}) as lab:
        wire = Wire(lab.port(NORTH))
        other = login(lab, BOB)
        try:
            start = time.monotonic()
            wire.send(f"w1 LOGIN {ALICE} wrong-password")
            assert other.run("o1", "NOOP") == ["o1 OK NOOP completed"]
            assert time.monotonic() - start < 0.2  # the delay holds one connection only
            assert wire.line() == "w1 NO [AUTHENTICATIONFAILED] invalid user name or password"
            assert time.monotonic() - start >= 0.28
            strangers = (
                ("w2", "nobody@north.test x"),
                ("w3", f"{CAROL} {lab.account(CAROL).password}"),
            )
            for tag, who in strangers:
                assert wire.run(tag, f"LOGIN {who}") == [
                    f"{tag} NO [AUTHENTICATIONFAILED] invalid user name or password"
                ]
            wire.run("w4", f"LOGIN {ALICE} wrong-again")
            wire.send(f"w5 LOGIN {ALICE} still-wrong")
            rest = wire.until_closed()
            assert rest[0].startswith("w5 NO [AUTHENTICATIONFAILED]")
            assert len(rest) == 2 and rest[1].startswith("* BYE ")
        finally:
            wire.close()
            other.close()
        login(lab, ALICE).close()


def test_200_idle_connections_while_a_client_works(lab):
    """200 connections that only say hello and wait: a normal client is still served;
    then each of the 200 gets a clear BAD for a bad command, and the server still works."""
    clear(lab, BOB)
    put(lab, BOB, "busy day")
    port = lab.port(NORTH)
    idle: list[Wire] = []
    try:
        for _ in range(200):
            idle.append(Wire(port))
        assert all(w.greeting.startswith("* OK [CAPABILITY ") for w in idle)
        with imap(lab, BOB) as client:
            assert client.select("INBOX") == ("OK", [b"1"])
            typ, data = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            assert typ == "OK" and data[0][1].strip() == b"Subject: busy day"
        for n, wire in enumerate(idle):
            wire.send(f"z{n} FROB")
        for n, wire in enumerate(idle):
            assert wire.line() == f"z{n} BAD unknown command FROB"
    finally:
        for wire in idle:
            wire.close()
    with imap(lab, BOB) as client:
        assert client.select("INBOX") == ("OK", [b"1"])
    assert_no_python_text(lab)


# -- the transcript ----------------------------------------------------------------------


def test_every_line_of_a_session_is_in_the_transcript_once_in_order(lab):
    """Each line the client sent (literal lines included) and each line the server sent
    (its literal's lines included) is one transcript row, in the order they crossed."""
    clear(lab, DAVE)
    before = len(lab.transcript(server=SOUTH))
    wire = Wire(lab.port(SOUTH))
    expected = [("S", wire.greeting)]
    body = b"Subject: in the transcript\r\n\r\nline one\r\nline two\r\n"
    steps = [
        [f"t1 LOGIN {DAVE} {lab.account(DAVE).password}"],
        [f"t2 APPEND INBOX (\\Draft) {{{len(body)}}}", body.decode() + "\r\n"],
        ["t3 SELECT INBOX"],
        ["t4 FETCH 1 (FLAGS BODY[])"],
        ["t5 LOGOUT"],
    ]
    try:
        for step in steps:
            for part in step:
                wire.send(part)
                expected += [("C", line) for line in part.removesuffix("\r\n").split("\r\n")]
                tag = step[0].split()[0]
                while True:
                    line = wire.line()
                    expected += [("S", piece) for piece in line.split("\r\n")]
                    if line.startswith(("+", f"{tag} ")):
                        break
        assert wire.until_closed() == []
    finally:
        wire.close()
    rows = session_rows(lab, SOUTH, before)
    assert list(zip(rows["direction"], rows["line"], strict=True)) == expected
    assert wire.received.decode().split("\r\n")[:-1] == [
        line for direction, line in expected if direction == "S"
    ]
    commands = rows[rows["direction"] == "C"]["command"].dropna().tolist()
    assert commands == ["LOGIN", "APPEND", "SELECT", "FETCH", "LOGOUT"]
    codes = rows[rows["line"].str.match(r"t\d ")]["code"].dropna().tolist()
    assert codes == ["OK"] * 5
