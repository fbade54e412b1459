"""Tests of the FETCH layer (mailkit_edu.imapmessage): stored bytes in, IMAP fragments out.

Pure tests: no sockets, no store. Expected ENVELOPE and BODYSTRUCTURE strings are
written out in full, as RFC 3501 §7.4.2 spells them, and every fragment is also read
back with a small parser of the IMAP response syntax (RFC 3501 §9) below.
"""

from __future__ import annotations

import ast
import datetime
import re
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from mailkit_edu import imapmessage
from mailkit_edu.imapmessage import MessageView, fetch_date, literal, nstring
from mailkit_edu.imapparse import Section


def msg(text: str) -> bytes:
    """A message written with \\n in the test, stored with CRLF."""
    return text.replace("\n", "\r\n").encode("utf-8")


def parse_imap(data: bytes) -> object:
    """Read one IMAP value: NIL -> None, number -> int, string -> bytes, list -> list."""
    value, end = _read(data, 0)
    assert end == len(data), f"trailing octets: {data[end:]!r}"
    return value


def _read(data: bytes, i: int) -> tuple[object, int]:
    if data.startswith(b"NIL", i):
        return None, i + 3
    if data[i : i + 1] == b"(":
        items: list[object] = []
        i += 1
        while data[i : i + 1] != b")":
            if items and data[i : i + 1] == b" ":
                i += 1
            item, i = _read(data, i)
            items.append(item)
        return items, i + 1
    if data[i : i + 1] == b'"':
        match = re.compile(rb'"((?:[^"\\\r\n]|\\["\\])*)"').match(data, i)
        assert match, data[i:]
        return re.sub(rb"\\(.)", rb"\1", match.group(1)), match.end()
    if data[i : i + 1] == b"{":
        match = re.compile(rb"\{(\d+)\}\r\n").match(data, i)
        assert match, data[i:]
        start = match.end()
        return data[start : start + int(match.group(1))], start + int(match.group(1))
    match = re.compile(rb"\d+").match(data, i)
    assert match, data[i:]
    return int(match.group()), match.end()


# --------------------------------------------------------------------------- messages

#: The message of RFC 3501 §7.4.2's example: 92 lines, 3028 octets of body.
RFC_BODY = ("x" * 114 + "\r\n") + ("y" * 30 + "\r\n") * 91
RFC_MESSAGE = msg(
    "Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\n"
    "From: Terry Gray <gray@cac.washington.edu>\n"
    "Subject: IMAP4rev1 WG mtg summary and minutes\n"
    "To: imap@cac.washington.edu\n"
    "cc: minutes@CNRI.Reston.VA.US,\n"
    "    John Klensin <KLENSIN@MIT.EDU>\n"
    "Message-Id: <B27397-0100000@cac.washington.edu>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\n"
    "\n"
) + RFC_BODY.encode("ascii")

ALTERNATIVE = msg(
    "From: bob@north.test\n"
    "Subject: alt\n"
    'Content-Type: multipart/alternative; boundary="alt"\n'
    "\n"
    "This is the preamble.\n"
    "--alt\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "\n"
    "Hello\n"
    "--alt\n"
    "Content-Type: text/html; charset=utf-8\n"
    "Content-Transfer-Encoding: quoted-printable\n"
    "\n"
    "<p>Hello</p>\n"
    "--alt--\n"
    "The epilogue.\n"
)

PDF_BASE64 = (
    "JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSL0ZpbHRlci9GbGF0ZURl\nY29kZT4+\n"
)
MIXED = msg(
    "From: Alice <alice@north.test>\n"
    "To: bob@south.test\n"
    "Subject: report\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/mixed; boundary=XYZ\n"
    "\n"
    "--XYZ\n"
    "\n"
    "See the attachment.\n"
    "--XYZ\n"
    'Content-Type: application/pdf; name="report.pdf"\n'
    "Content-Transfer-Encoding: base64\n"
    "Content-ID: <pdf1@north.test>\n"
    "Content-Description: The report\n"
    'Content-Disposition: attachment; filename="report.pdf"\n'
    "Content-Language: en, fr\n"
    "Content-Location: http://north.test/report.pdf\n"
    "\n" + PDF_BASE64 + "--XYZ--\n"
)

NESTED = msg(
    "Subject: nested\n"
    "Content-Type: multipart/mixed; boundary=b\n"
    "\n"
    "--b\n"
    "Content-Type: text/plain\n"
    "\n"
    "Part one.\n"
    "--b\n"
    "Content-Type: multipart/alternative; boundary=b1\n"
    "\n"
    "--b1\n"
    "Content-Type: text/plain; charset=us-ascii\n"
    "\n"
    "Plain two.\n"
    "--b1\n"
    "Content-Type: text/html; charset=us-ascii\n"
    "\n"
    "<b>Two</b>\n"
    "--b1--\n"
    "\n"
    "--b--\n"
)

INNER = (
    "From: Carol <carol@east.test>\n"
    "Subject: inner\n"
    "Date: Mon, 7 Feb 1994 21:52:25 -0800\n"
    "\n"
    "Inner body.\n"
    "Second line.\n"
)
FORWARD = msg(
    "From: dave@west.test\n"
    "Subject: Fwd: inner\n"
    "Content-Type: multipart/mixed; boundary=fw\n"
    "\n"
    "--fw\n"
    "Content-Type: text/plain\n"
    "\n"
    "Forwarded below.\n"
    "--fw\n"
    "Content-Type: message/rfc822\n"
    "\n" + INNER + "--fw--\n"
)


# --------------------------------------------------------------------------- strings


def test_nstring_quotes_escapes_and_literals() -> None:
    """nstring gives NIL, a quoted string with \\ and \" escaped, or a literal for 8-bit/CRLF."""
    assert nstring(None) == b"NIL"
    assert nstring("plain") == b'"plain"'
    assert nstring('say "hi" \\o/') == b'"say \\"hi\\" \\\\o/"'
    assert nstring("Grüße") == b"{7}\r\nGr\xc3\xbc\xc3\x9fe"
    assert nstring(b"two\r\nlines") == b"{10}\r\ntwo\r\nlines"
    assert literal(b"") == b"{0}\r\n"


def test_fetch_date_is_rfc3501_date_time() -> None:
    """fetch_date writes INTERNALDATE as "dd-Mon-yyyy hh:mm:ss +0000" with English months."""
    assert fetch_date(837596665) == b'"17-Jul-1996 09:44:25 +0000"'
    assert fetch_date(0) == b'"01-Jan-1970 00:00:00 +0000"'


# --------------------------------------------------------------------------- ENVELOPE


def test_envelope_of_the_rfc3501_example() -> None:
    """The envelope of RFC 3501's example message is exactly the one the RFC shows."""
    assert MessageView(RFC_MESSAGE).envelope() == (
        b'("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev1 WG mtg summary and minutes" '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'((NIL NIL "imap" "cac.washington.edu")) '
        b'((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU")) '
        b'NIL NIL "<B27397-0100000@cac.washington.edu>")'
    )


def test_envelope_groups_use_start_and_end_markers() -> None:
    """A group is (NIL NIL "name" NIL), its members, then (NIL NIL NIL NIL) (RFC 3501 §9)."""
    view = MessageView(
        msg(
            "From: a@x.test\n"
            "To: Friends: alice@a.test, Bob <bob@b.test>;, carol@c.test\n"
            "Cc: Undisclosed recipients:;\n\n"
        )
    )
    to, cc = parse_imap(view.envelope())[5:7]
    assert to == [
        [None, None, b"Friends", None],
        [None, None, b"alice", b"a.test"],
        [b"Bob", None, b"bob", b"b.test"],
        [None, None, None, None],
        [None, None, b"carol", b"c.test"],
    ]
    assert cc == [[None, None, b"Undisclosed recipients", None], [None, None, None, None]]


def test_envelope_missing_headers_are_nil_and_sender_defaults_to_from() -> None:
    """Absent headers are NIL; Sender and Reply-To fall back to From when absent."""
    assert MessageView(msg("Subject: x\n\nbody\n")).envelope() == (
        b'(NIL "x" NIL NIL NIL NIL NIL NIL NIL NIL)'
    )
    view = MessageView(msg("From: a@x.test\nSender: s@y.test\nIn-Reply-To: <1@x>\n\n"))
    assert view.envelope() == (
        b'(NIL NIL ((NIL NIL "a" "x.test")) ((NIL NIL "s" "y.test")) ((NIL NIL "a" "x.test")) '
        b'NIL NIL NIL "<1@x>" NIL)'
    )


def test_envelope_quotes_non_ascii_and_encoded_words() -> None:
    """Quotes are escaped, 8-bit text is a literal, RFC 2047 words stay encoded, routes kept."""
    view = MessageView(
        msg(
            'From: "Alice \\"Al\\" Liddell" <alice@wonder.test>\n'
            "Subject: Grüße\n"
            "To: =?utf-8?q?J=C3=BCrgen?= <j@de.test>, old@style.test (Old Style)\n"
            "Bcc: <@relay.test:route@x.test>, nohost\n\n"
        )
    )
    envelope = view.envelope()
    assert envelope.startswith(
        b'(NIL {7}\r\nGr\xc3\xbc\xc3\x9fe (("Alice \\"Al\\" Liddell" NIL "alice" "wonder.test"))'
    )
    fields = parse_imap(envelope)
    assert fields[5] == [
        [b"=?utf-8?q?J=C3=BCrgen?=", None, b"j", b"de.test"],
        [b"Old Style", None, b"old", b"style.test"],
    ]
    assert fields[7] == [[None, b"@relay.test", b"route", b"x.test"], [None, None, b"nohost", b""]]


# --------------------------------------------------------------------------- BODYSTRUCTURE


def test_bodystructure_of_the_rfc3501_example() -> None:
    """A text/plain message gives RFC 3501's example body, and NIL extension data."""
    view = MessageView(RFC_MESSAGE)
    assert view.bodystructure(extensible=False) == (
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92)'
    )
    assert view.bodystructure() == (
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92 NIL NIL NIL NIL)'
    )


def test_bodystructure_defaults_to_text_plain_us_ascii() -> None:
    """Without Content-Type a message is text/plain; charset=us-ascii, 7BIT (RFC 2045)."""
    assert MessageView(b"Subject: x\r\n\r\nabc").bodystructure(False) == (
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3 1)'
    )


def test_bodystructure_multipart_alternative() -> None:
    """Parts follow each other without a space, then the subtype and the multipart extension."""
    view = MessageView(ALTERNATIVE)
    assert view.bodystructure(extensible=False) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 5 1)'
        b'("TEXT" "HTML" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 12 1) "ALTERNATIVE")'
    )
    assert view.bodystructure() == (
        b'(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 5 1 NIL NIL NIL NIL)'
        b'("TEXT" "HTML" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 12 1 NIL NIL NIL NIL)'
        b' "ALTERNATIVE" ("BOUNDARY" "alt") NIL NIL NIL)'
    )


def test_bodystructure_mixed_with_base64_attachment() -> None:
    """An attachment has id, description, BASE64, its size, disposition, language, location."""
    size = len(PDF_BASE64.replace("\n", "\r\n")) - 2  # the last CRLF belongs to the delimiter
    assert MessageView(MIXED).bodystructure() == (
        b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 19 1 NIL NIL NIL NIL)'
        b'("APPLICATION" "PDF" ("NAME" "report.pdf") "<pdf1@north.test>" "The report" "BASE64" '
        + str(size).encode()
        + b' NIL ("ATTACHMENT" ("FILENAME" "report.pdf")) ("en" "fr") '
        b'"http://north.test/report.pdf") "MIXED" ("BOUNDARY" "XYZ") NIL NIL NIL)'
    )


def test_bodystructure_nested_multipart() -> None:
    """A multipart inside a multipart nests as a list, even when one boundary prefixes another."""
    assert MessageView(NESTED).bodystructure(extensible=False) == (
        b'(("TEXT" "PLAIN" NIL NIL NIL "7BIT" 9 1)'
        b'(("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 10 1)'
        b'("TEXT" "HTML" ("CHARSET" "us-ascii") NIL NIL "7BIT" 10 1) "ALTERNATIVE") "MIXED")'
    )


def test_bodystructure_message_rfc822_part() -> None:
    """A message/rfc822 part carries the inner envelope, body structure and its line count."""
    inner_size = len(INNER.replace("\n", "\r\n")) - 2
    assert MessageView(FORWARD).bodystructure(extensible=False) == (
        b'(("TEXT" "PLAIN" NIL NIL NIL "7BIT" 16 1)'
        b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" ' + str(inner_size).encode() + b" "
        b'("Mon, 7 Feb 1994 21:52:25 -0800" "inner" (("Carol" NIL "carol" "east.test")) '
        b'(("Carol" NIL "carol" "east.test")) (("Carol" NIL "carol" "east.test")) '
        b"NIL NIL NIL NIL NIL) "
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 25 2) 6) "MIXED")'
    )


def test_fragments_parse_as_imap_values() -> None:
    """Every envelope and body structure of the sample messages reads back as one IMAP list."""
    for data in (RFC_MESSAGE, ALTERNATIVE, MIXED, NESTED, FORWARD):
        view = MessageView(data)
        for fragment in (view.envelope(), view.bodystructure(), view.bodystructure(False)):
            assert isinstance(parse_imap(fragment), list)


# --------------------------------------------------------------------------- sections


def test_section_header_and_text() -> None:
    """HEADER is the header with its blank line, TEXT the body; together the whole message."""
    view = MessageView(ALTERNATIVE)
    header = view.section(Section(text="HEADER"))
    assert header.endswith(b'boundary="alt"\r\n\r\n') and header == view.header_bytes()
    assert view.section(Section(text="TEXT")) == view.text_bytes()
    assert header + view.text_bytes() == view.section(None) == ALTERNATIVE


def test_section_header_fields_in_message_order() -> None:
    """HEADER.FIELDS matches names case-insensitively, keeps message order, adds the blank line."""
    view = MessageView(msg("subject: first\nTo: x@y\nFrom: a@b\n  folded\nSubject: again\n\nB\n"))
    fields = view.section(Section(text="HEADER.FIELDS", fields=("SUBJECT", "FROM")))
    assert fields == b"subject: first\r\nFrom: a@b\r\n  folded\r\nSubject: again\r\n\r\n"
    assert view.section(Section(text="HEADER.FIELDS", fields=("X-NONE",))) == b"\r\n"


def test_section_header_fields_not() -> None:
    """HEADER.FIELDS.NOT keeps every other field, then the blank line."""
    view = MessageView(msg("Subject: s\nTo: x@y\nFrom: a@b\n\nB\n"))
    assert view.section(Section(text="HEADER.FIELDS.NOT", fields=("SUBJECT", "FROM"))) == (
        b"To: x@y\r\n\r\n"
    )


def test_section_parts_and_mime() -> None:
    """BODY[1] is a part's body without the CRLF before the delimiter; 1.MIME is its header."""
    view = MessageView(ALTERNATIVE)
    assert view.section(Section(parts=(1,))) == b"Hello"
    assert view.section(Section(parts=(1,), text="MIME")) == (
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    assert view.section(Section(parts=(2,))) == b"<p>Hello</p>"


def test_section_part_one_of_a_single_part_message_is_its_body() -> None:
    """For a message that is not multipart, part 1 is the body (RFC 3501 §6.4.5)."""
    view = MessageView(RFC_MESSAGE)
    assert view.section(Section(parts=(1,))) == RFC_BODY.encode()
    assert view.section(Section(parts=(2,))) == b""


def test_section_nested_parts() -> None:
    """2.1 and 2.2 address the parts of the multipart that is part 2."""
    view = MessageView(NESTED)
    assert view.section(Section(parts=(1,))) == b"Part one."
    assert view.section(Section(parts=(2, 1))) == b"Plain two."
    assert view.section(Section(parts=(2, 2), text="MIME")) == (
        b"Content-Type: text/html; charset=us-ascii\r\n\r\n"
    )
    assert view.section(Section(parts=(2,))).startswith(b"--b1\r\n")


def test_section_message_rfc822_part() -> None:
    """HEADER and TEXT after a message/rfc822 part number apply to the message inside it."""
    view = MessageView(FORWARD)
    inner = INNER.replace("\n", "\r\n").encode()[:-2]
    assert view.section(Section(parts=(2,))) == inner
    assert view.section(Section(parts=(2,), text="HEADER")) == inner.split(b"\r\n\r\n")[0] + (
        b"\r\n\r\n"
    )
    assert view.section(Section(parts=(2,), text="TEXT")) == b"Inner body.\r\nSecond line."
    assert view.section(Section(parts=(2, 1))) == b"Inner body.\r\nSecond line."
    assert view.section(Section(parts=(2,), text="HEADER.FIELDS", fields=("SUBJECT",))) == (
        b"Subject: inner\r\n\r\n"
    )


def test_section_partial() -> None:
    """<start.count> slices the octets; a start past the end gives the empty string."""
    view = MessageView(ALTERNATIVE)
    assert view.section(None, (0, 5)) == b"From:"
    assert view.section(Section(parts=(1,)), (1, 3)) == b"ell"
    assert view.section(Section(parts=(1,)), (3, 100)) == b"lo"
    assert view.section(None, (10_000, 5)) == b""
    whole = b"".join(view.section(None, (i, 7)) for i in range(0, view.size, 7))
    assert whole == ALTERNATIVE


def test_section_that_does_not_exist_is_empty() -> None:
    """A missing part, or HEADER of a part that is no message, is the empty string."""
    view = MessageView(NESTED)
    assert view.section(Section(parts=(3,))) == b""
    assert view.section(Section(parts=(2, 5))) == b""
    assert view.section(Section(parts=(1, 1))) == b""
    assert view.section(Section(parts=(1,), text="HEADER")) == b""
    assert view.section(Section(parts=(0,))) == b""


# --------------------------------------------------------------------------- size, malformed


def test_size_counts_bare_lf_as_crlf() -> None:
    """A file with bare LF is read as CRLF: size and sections count the octets sent."""
    view = MessageView(b"Subject: lf\n\nline 1\nline 2\n")
    assert view.section(None) == b"Subject: lf\r\n\r\nline 1\r\nline 2\r\n"
    assert view.size == 31
    assert view.bodystructure(False).endswith(b'"7BIT" 16 2)')


def test_malformed_mime_is_one_text_part() -> None:
    """A multipart without boundary, or whose boundary never appears, is read as text/plain."""
    no_param = MessageView(msg("Content-Type: multipart/mixed\n\n--x\n\nhi\n--x--\n"))
    never = MessageView(msg("Content-Type: multipart/mixed; boundary=zz\n\n--x\n\nhi\n"))
    broken = MessageView(msg("Content-Type: text\nno colon here\n\nhi\n"))
    for view in (no_param, never, broken):
        assert view.bodystructure(False).startswith(b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII")')
        assert view.section(Section(parts=(1,))) == view.text_bytes()


def test_unclosed_multipart_and_broken_addresses_do_not_raise() -> None:
    """A multipart without its close delimiter ends at the end; odd addresses still parse."""
    view = MessageView(
        msg(
            'From: "unterminated <a@b\nTo: <x@y, (comment\n'
            "Content-Type: multipart/mixed; boundary=q\n\n--q\n\nonly\n"
        )
    )
    assert view.section(Section(parts=(1,))) == b"only\r\n"
    assert isinstance(parse_imap(view.envelope()), list)


def test_deep_nesting_is_bounded() -> None:
    """Messages nested far deeper than MAX_MIME_DEPTH parse without recursion errors."""
    data = b"Subject: bottom\r\n\r\nbottom\r\n"
    for _ in range(imapmessage.MAX_MIME_DEPTH * 3):
        data = b"Content-Type: message/rfc822\r\n\r\n" + data
    view = MessageView(data)
    assert isinstance(parse_imap(view.bodystructure()), list)
    assert view.section(Section(parts=(1,) * 50)) != b""


# --------------------------------------------------------------------------- SEARCH helpers


def test_header_decodes_encoded_words() -> None:
    """header() returns every value of a field, unfolded and RFC 2047 decoded."""
    view = MessageView(
        msg("Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= aus\n  Wien\nX-A: 1\nx-a: 2\nSubject: =?x?q?\n\n")
    )
    assert view.header("subject") == ["Grüße aus  Wien", "=?x?q?"]
    assert view.header("X-A") == ["1", "2"]
    assert view.header("Missing") == []


def test_sent_date() -> None:
    """sent_date is the Date: header's own calendar date, or None when missing or invalid."""
    assert MessageView(RFC_MESSAGE).sent_date() == datetime.date(1996, 7, 17)
    assert MessageView(msg("Date: Mon, 31 Feb 2020 10:00 +0000\n\n")).sent_date() is None
    assert MessageView(msg("Date: soon\n\n")).sent_date() is None
    assert MessageView(msg("Subject: none\n\n")).sent_date() is None


def test_internal_text_decodes_all_text_parts() -> None:
    """internal_text undoes base64 and quoted-printable and decodes charsets of text parts."""
    view = MessageView(
        msg(
            "Content-Type: multipart/mixed; boundary=m\n\n"
            "--m\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
            "R3LDvMOfZQ==\n"
            "--m\nContent-Type: text/plain; charset=iso-8859-1\n"
            "Content-Transfer-Encoding: quoted-printable\n\ncaf=E9\n"
            "--m\nContent-Type: image/png\nContent-Transfer-Encoding: base64\n\niVBORw0K\n"
            "--m\nContent-Type: text/plain; charset=no-such-charset\n\nplain\n--m--\n"
        )
    )
    assert view.internal_text() == "Grüße\ncafé\nplain"
    assert "Inner body." in MessageView(FORWARD).internal_text()


# --------------------------------------------------------------------------- properties

MIME_LINES = st.sampled_from(
    [
        b"Content-Type: multipart/mixed; boundary=b",
        b"Content-Type: multipart/digest; boundary=b1",
        b'Content-Type: message/rfc822; x="',
        b"Content-Type: text/plain; charset=\xff",
        b"Content-Transfer-Encoding: base64",
        b"Content-Disposition: attachment; filename=a",
        b"Content-Language: ,",
        b"From: a <b@c>, g: ;",
        b"Date: Mon, 7 Feb 1994 21:52:25 -0800",
        b"Subject: =?utf-8?b?w7w=?=",
        b"--b",
        b"--b--",
        b"--b1",
        b"\xc3\xa9 (",
        b" folded",
        b"",
    ]
)
MIME_LIKE = st.lists(MIME_LINES | st.binary(max_size=8), max_size=30).map(
    lambda lines: b"\n".join(lines)
)


def _exercise(view: MessageView) -> None:
    for extensible in (True, False):
        assert isinstance(parse_imap(view.bodystructure(extensible)), list)
    assert isinstance(parse_imap(view.envelope()), list)
    for parts in ((), (1,), (2,), (1, 1), (2, 1), (3, 2, 1)):
        for text in (None, "HEADER", "TEXT", "MIME"):
            view.section(Section(parts=parts, text=text), (1, 10))
        view.section(Section(parts=parts, text="HEADER.FIELDS.NOT", fields=("FROM",)))
    view.header_bytes()
    view.text_bytes()
    view.internal_text()
    view.header("Subject")
    view.sent_date()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | MIME_LIKE)
def test_any_bytes_give_a_view_that_never_raises(data: bytes) -> None:
    """Any octets give a view whose BODY[] is the CRLF-normalised input and that never raises."""
    view = MessageView(data)
    normalised = re.sub(rb"(?<!\r)\n", b"\r\n", data)
    assert imapmessage.crlf_normalise(data) == normalised
    assert view.section(None) == normalised
    assert view.size == len(normalised)
    assert view.header_bytes() + view.text_bytes() == normalised
    _exercise(view)


def test_module_imports_only_pure_modules() -> None:
    """The module imports no asyncio, socket, ssl, threading or ipywidgets (it is pure code)."""
    tree = ast.parse(Path(imapmessage.__file__).read_text(encoding="utf-8"))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not imported & {"asyncio", "socket", "ssl", "threading", "ipywidgets"}


def test_public_api() -> None:
    """The public names of the module are pinned."""
    assert sorted(imapmessage.__all__) == [
        "MAX_MIME_DEPTH",
        "MessageView",
        "crlf_normalise",
        "fetch_date",
        "literal",
        "nstring",
    ]
