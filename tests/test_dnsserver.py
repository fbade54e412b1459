"""Tests of the lab's DNS server (``mailkit_edu.dnsserver``).

Three layers, as in the rest of the package: the :class:`Zone` alone (no sockets),
:func:`handle_query` alone (bytes in, bytes out), and a real :class:`DNSServer` on
127.0.0.1, port 0, on a private asyncio loop per test, asked by dnspython and by
raw sockets. Every socket and query has a timeout; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import dns.asyncquery
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset
import pytest

from mailkit_edu import dnsserver
from mailkit_edu.dnsserver import (
    DNSServer,
    NoSuchDomain,
    Zone,
    handle_query,
    lab_async_resolver,
    lab_resolver,
    resolve_mx,
)
from mailkit_edu.transcript import Transcript

#: Seconds any one socket operation or DNS query may take.
TIMEOUT = 2.0
#: Seconds a whole test's coroutine may take.
TEST_LIMIT = 30.0

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one test's coroutine on its own private event loop, with an overall limit."""
    return asyncio.run(asyncio.wait_for(coro, TEST_LIMIT))


def lab_zone() -> Zone:
    """Two provider domains, as the default lab has; MX records added out of order."""
    zone = Zone(["north.test", "south.test"])
    zone.add("north.test", "MX", "20 mx2.north.test")
    zone.add("north.test", "MX", "10 mx.north.test")
    zone.add("mx.north.test", "A", "127.0.0.1")
    zone.add("mx2.north.test", "A", "127.0.0.2")
    zone.add("north.test", "TXT", '"v=spf1 -all"')
    zone.add("mail.north.test", "CNAME", "mx.north.test")
    return zone


@asynccontextmanager
async def serving(zone: Zone | None = None, **options: Any) -> AsyncIterator[DNSServer]:
    """A started server on 127.0.0.1, port 0, with its own transcript; stopped on exit."""
    server = DNSServer(zone or lab_zone(), Transcript(), **options)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def ask_udp(server: DNSServer, qname: str, rdtype: str, **query: Any) -> dns.message.Message:
    request = dns.message.make_query(qname, rdtype, **query)
    return await dns.asyncquery.udp(request, server.host, port=server.port, timeout=TIMEOUT)


async def ask_tcp(server: DNSServer, qname: str, rdtype: str) -> dns.message.Message:
    request = dns.message.make_query(qname, rdtype)
    return await dns.asyncquery.tcp(request, server.host, port=server.port, timeout=TIMEOUT)


def udp_exchange(port: int, datagrams: list[bytes], replies: int) -> list[bytes]:
    """Send raw datagrams from one socket, then read ``replies`` datagrams back."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT)
        for datagram in datagrams:
            sock.sendto(datagram, ("127.0.0.1", port))
        return [sock.recv(65535) for _ in range(replies)]


async def open_tcp(server: DNSServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(server.host, server.port), TIMEOUT)


async def tcp_exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, wire: bytes
) -> dns.message.Message:
    """One length-prefixed query and its answer on an open TCP connection."""
    writer.write(struct.pack("!H", len(wire)) + wire)
    await writer.drain()
    (length,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), TIMEOUT))
    return dns.message.from_wire(await asyncio.wait_for(reader.readexactly(length), TIMEOUT))


def rows(server: DNSServer) -> list[tuple[str, str, str | None, str | None]]:
    """The server's transcript as (direction, line, command, code) tuples, in order."""
    frame = server.transcript.frame()
    columns = frame[["direction", "line", "command", "code"]].astype(object)
    columns = columns.where(columns.notna(), None)  # missing command/code: None, not NaN
    return list(columns.itertuples(index=False, name=None))


# --- The zone alone --------------------------------------------------------------------------


def test_lookup_distinguishes_answers_nodata_and_nxdomain() -> None:
    """Zone.lookup answers records, says NOERROR with no answers for a missing type,
    and NXDOMAIN for missing names and names outside every origin."""
    zone = lab_zone()
    rcode, answers = zone.lookup(dns.name.from_text("mx.north.test"), dns.rdatatype.A)
    assert rcode == dns.rcode.NOERROR
    assert [rr.to_text() for rr in answers[0]] == ["127.0.0.1"]
    assert zone.lookup(dns.name.from_text("north.test"), dns.rdatatype.AAAA) == (
        dns.rcode.NOERROR,
        [],
    )
    assert zone.lookup(dns.name.from_text("nope.north.test"), "A")[0] == dns.rcode.NXDOMAIN
    assert zone.lookup(dns.name.from_text("north.example"), "A")[0] == dns.rcode.NXDOMAIN


def test_name_with_only_children_exists() -> None:
    """A name with no records but with names below it exists (NOERROR, RFC 8020)."""
    zone = lab_zone()
    zone.add("_dmarc.mail.south.test", "TXT", '"v=DMARC1; p=none"')
    assert zone.lookup(dns.name.from_text("mail.south.test"), "TXT") == (dns.rcode.NOERROR, [])


def test_add_rejects_names_outside_the_zone_and_bad_values() -> None:
    """Zone.add raises ValueError for a name outside every origin, an unknown type,
    an unparsable value, and a CNAME beside other data."""
    zone = lab_zone()
    with pytest.raises(ValueError, match="outside the lab zone"):
        zone.add("mx.example.com", "A", "127.0.0.1")
    with pytest.raises(ValueError, match="unknown record type"):
        zone.add("north.test", "NOPE", "1")
    with pytest.raises(ValueError, match="bad A value"):
        zone.add("www.north.test", "A", "not-an-address")
    with pytest.raises(ValueError, match="CNAME"):
        zone.add("mail.north.test", "A", "127.0.0.1")


def test_remove_counts_records_and_bumps_the_serial() -> None:
    """Zone.remove returns how many records went, and each change raises the SOA serial."""
    zone = lab_zone()

    def serial() -> int:
        _, answers = zone.lookup(dns.name.from_text("north.test"), "SOA")
        return next(iter(answers[0])).serial

    before = serial()
    assert zone.remove("north.test", "MX", "10 mx.north.test") == 1
    assert zone.remove("north.test", "MX", "10 mx.north.test") == 0
    assert serial() == before + 1
    zone.add("north.test", "MX", "30 mx3.north.test")
    assert zone.remove("north.test", "MX") == 2
    assert zone.remove("nothing.north.test", "A") == 0
    assert zone.lookup(dns.name.from_text("north.test"), "MX") == (dns.rcode.NOERROR, [])


def test_frame_and_text_show_every_record() -> None:
    """Zone.frame has the five documented columns and Zone.to_text has one line per record."""
    zone = lab_zone()
    frame = zone.frame()
    assert list(frame.columns) == ["name", "ttl", "class", "type", "value"]
    mx = frame[frame["type"] == "MX"]
    assert list(mx["value"]) == ["10 mx.north.test.", "20 mx2.north.test."]
    assert set(frame["name"]) >= {"north.test.", "ns.north.test.", "south.test."}
    # Each origin starts with its SOA and NS, as in a zone file.
    assert list(frame["type"][:2]) == ["SOA", "NS"]
    text = zone.to_text()
    assert "; zone north.test." in text and "; zone south.test." in text
    records = [line for line in text.splitlines() if line and not line.startswith(";")]
    assert len(records) == len(frame)


# --- The protocol alone: bytes in, bytes out ----------------------------------------------------


def test_handle_query_needs_no_socket() -> None:
    """handle_query turns a query's bytes into an authoritative answer's bytes, no socket
    involved, and drops a message too short to carry an ID."""
    transcript = Transcript()
    log = transcript.open_session(transcript.register_server("dns", "dns", "DNS"))
    query = dns.message.make_query("north.test", "MX")
    reply = handle_query(lab_zone(), query.to_wire(), log)
    assert reply is not None
    response = dns.message.from_wire(reply)
    assert response.id == query.id
    assert response.flags & dns.flags.AA
    assert not response.flags & dns.flags.RA
    assert response.question == query.question
    assert handle_query(lab_zone(), b"\x00", log) is None


# --- A real server -----------------------------------------------------------------------------


def test_resolve_mx_sorts_by_preference() -> None:
    """resolve_mx returns (preference, host) pairs, lowest preference first, no final dot."""

    async def scenario() -> list[tuple[int, str]]:
        zone = lab_zone()
        zone.add("north.test", "MX", "5 backup.north.test")
        async with serving(zone) as server:
            return await resolve_mx(lab_async_resolver(server.host, server.port), "north.test")

    assert run(scenario()) == [
        (5, "backup.north.test"),
        (10, "mx.north.test"),
        (20, "mx2.north.test"),
    ]


def test_resolve_mx_is_empty_for_a_domain_without_mx() -> None:
    """resolve_mx returns [] for a domain that exists but has no MX records."""

    async def scenario() -> list[tuple[int, str]]:
        async with serving() as server:
            return await resolve_mx(lab_async_resolver(server.host, server.port), "south.test")

    assert run(scenario()) == []


def test_a_and_txt_answers() -> None:
    """The server answers A and TXT questions with the zone's records."""

    async def scenario() -> tuple[list[str], list[bytes]]:
        async with serving() as server:
            resolver = lab_async_resolver(server.host, server.port)
            a = await resolver.resolve("mx2.north.test", "A")
            txt = await resolver.resolve("north.test", "TXT")
            return [rr.address for rr in a], [s for rr in txt for s in rr.strings]

    assert run(scenario()) == (["127.0.0.2"], [b"v=spf1 -all"])


def test_cname_is_answered_without_chasing() -> None:
    """A question about a name with a CNAME gets the CNAME record itself."""

    async def scenario() -> dns.message.Message:
        async with serving() as server:
            return await ask_udp(server, "mail.north.test", "A")

    response = run(scenario())
    assert [rrset.rdtype for rrset in response.answer] == [dns.rdatatype.CNAME]
    assert next(iter(response.answer[0])).target.to_text() == "mx.north.test."


def test_names_are_case_insensitive() -> None:
    """Mixed-case questions find the zone's lower-case names (RFC 1035 §2.3.3)."""

    async def scenario() -> dns.message.Message:
        async with serving() as server:
            return await ask_udp(server, "Mx.NoRtH.TeSt", "A")

    response = run(scenario())
    assert response.rcode() == dns.rcode.NOERROR
    assert [rr.to_text() for rr in response.answer[0]] == ["127.0.0.1"]


def test_udp_and_tcp_answer_on_the_same_port() -> None:
    """One port answers the same question over UDP and over TCP, authoritatively."""

    async def scenario() -> tuple[dns.message.Message, dns.message.Message]:
        async with serving() as server:
            return await ask_udp(server, "north.test", "MX"), await ask_tcp(
                server, "north.test", "MX"
            )

    over_udp, over_tcp = run(scenario())
    assert over_udp.answer == over_tcp.answer
    assert len(over_udp.answer[0]) == 2
    for response in (over_udp, over_tcp):
        assert response.flags & dns.flags.AA
        assert not response.flags & dns.flags.RA


def test_out_of_zone_is_nxdomain_without_the_system_resolver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A name outside the lab zone is NXDOMAIN from the lab server alone: the system
    resolver (resolv.conf, getaddrinfo) is never consulted."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the system resolver was used")

    async def scenario() -> tuple[dns.message.Message, NoSuchDomain]:
        async with serving() as server:
            for target, attribute in [
                (socket, "getaddrinfo"),
                (socket, "gethostbyname"),
                (dns.resolver.BaseResolver, "read_resolv_conf"),
                (dns.resolver, "get_default_resolver"),
            ]:
                monkeypatch.setattr(target, attribute, forbidden)
            response = await ask_udp(server, "example.com", "A")
            with pytest.raises(NoSuchDomain) as caught:
                await resolve_mx(lab_async_resolver(server.host, server.port), "north.example")
            return response, caught.value

    response, error = run(scenario())
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.flags & dns.flags.AA
    assert response.answer == [] and response.authority == []
    assert error.domain == "north.example"


def test_nodata_and_nxdomain_in_the_zone_carry_the_soa() -> None:
    """Negative answers for names inside an origin carry that origin's SOA (RFC 2308 §3)."""

    async def scenario() -> tuple[dns.message.Message, dns.message.Message]:
        async with serving() as server:
            return await ask_udp(server, "north.test", "AAAA"), await ask_udp(
                server, "nope.north.test", "A"
            )

    nodata, nxdomain = run(scenario())
    assert nodata.rcode() == dns.rcode.NOERROR and nodata.answer == []
    assert nxdomain.rcode() == dns.rcode.NXDOMAIN and nxdomain.answer == []
    for response in (nodata, nxdomain):
        (soa,) = response.authority
        assert soa.rdtype == dns.rdatatype.SOA
        assert soa.name == dns.name.from_text("north.test")


def test_records_added_and_removed_at_run_time_are_seen() -> None:
    """A record added (from another thread) while the server runs is answered at once,
    and is gone once removed."""

    async def scenario() -> list[dns.message.Message]:
        zone = lab_zone()
        async with serving(zone) as server:
            seen = [await ask_udp(server, "www.north.test", "A")]
            await asyncio.to_thread(zone.add, "www.north.test", "A", "127.0.0.9")
            seen.append(await ask_udp(server, "www.north.test", "A"))
            await asyncio.to_thread(zone.remove, "www.north.test", "A")
            seen.append(await ask_udp(server, "www.north.test", "A"))
            return seen

    before, during, after = run(scenario())
    assert before.rcode() == dns.rcode.NXDOMAIN
    assert [rr.to_text() for rr in during.answer[0]] == ["127.0.0.9"]
    assert after.rcode() == dns.rcode.NXDOMAIN


def test_transcript_rows_in_order() -> None:
    """Each query is one session in the transcript: the question (command = type) first,
    then one line per answer record or one line saying why there is none (code = rcode)."""

    async def scenario() -> DNSServer:
        async with serving() as server:
            await ask_udp(server, "north.test", "MX")
            await ask_udp(server, "north.test", "AAAA")
            await ask_udp(server, "north.example", "MX")
            return server

    server = run(scenario())
    assert rows(server) == [
        ("C", "north.test. IN MX?", "MX", None),
        ("S", "north.test. 300 IN MX 10 mx.north.test.", None, "NOERROR"),
        ("S", "north.test. 300 IN MX 20 mx2.north.test.", None, "NOERROR"),
        ("C", "north.test. IN AAAA?", "AAAA", None),
        ("S", "north.test. IN AAAA: NOERROR, no records", None, "NOERROR"),
        ("C", "north.example. IN MX?", "MX", None),
        ("S", "north.example. IN MX: NXDOMAIN (not in the lab zone)", None, "NXDOMAIN"),
    ]
    frame = server.transcript.frame()
    assert frame["session"].nunique() == 3
    assert set(frame["role"]) == {"dns"} and set(frame["protocol"]) == {"DNS"}


def test_garbage_datagrams_then_a_healthy_query() -> None:
    """Random bytes and a cut-off query get FORMERR, a 1-byte datagram gets nothing, and
    the next real query is still answered."""
    healthy = dns.message.make_query("mx.north.test", "A")
    cut_off = healthy.to_wire()[:20]  # the header is whole, the question is not
    noise = bytearray(random.Random(2024).randbytes(40))
    noise[2] &= 0x7F  # QR=0: it claims to be a query ...
    noise[4:6] = b"\xff\xff"  # ... with 65535 questions it does not have

    async def scenario() -> tuple[DNSServer, list[bytes]]:
        async with serving() as server:
            datagrams = [b"\x00", cut_off, bytes(noise), healthy.to_wire()]
            replies = await asyncio.to_thread(udp_exchange, server.port, datagrams, 3)
            return server, replies

    server, replies = run(scenario())
    first, second, third = (dns.message.from_wire(reply) for reply in replies)
    assert (first.id, first.rcode()) == (healthy.id, dns.rcode.FORMERR)
    assert (second.id, second.rcode()) == (int.from_bytes(noise[:2]), dns.rcode.FORMERR)
    assert third.id == healthy.id
    assert [rr.to_text() for rr in third.answer[0]] == ["127.0.0.1"]
    assert rows(server)[:4] == [
        ("C", "<malformed query, 1 byte>", None, None),
        ("C", "<malformed query, 20 bytes>", None, None),
        ("S", "FORMERR (the query could not be parsed)", None, "FORMERR"),
        ("C", "<malformed query, 40 bytes>", None, None),
    ]


def test_other_opcodes_and_two_questions_are_refused() -> None:
    """An opcode other than QUERY gets NOTIMP and a query with two questions gets FORMERR."""
    notify = dns.message.make_query("north.test", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    two = dns.message.make_query("north.test", "A")
    two.question = [*two.question, dns.rrset.RRset(two.question[0].name, 1, dns.rdatatype.MX)]

    async def scenario() -> list[bytes]:
        async with serving() as server:
            return await asyncio.to_thread(
                udp_exchange, server.port, [notify.to_wire(), two.to_wire()], 2
            )

    first, second = (dns.message.from_wire(reply) for reply in run(scenario()))
    assert first.rcode() == dns.rcode.NOTIMP
    assert second.rcode() == dns.rcode.FORMERR


def test_internal_error_gives_servfail_and_no_python_on_the_wire(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug while answering is logged locally; the client gets a bare SERVFAIL and the
    server goes on answering."""
    zone = lab_zone()
    real_answer = zone.answer

    def broken(*args: object) -> None:
        raise RuntimeError("secret internal detail")

    async def scenario() -> tuple[DNSServer, dns.message.Message, dns.message.Message]:
        async with serving(zone) as server:
            monkeypatch.setattr(zone, "answer", broken)
            failed = await ask_udp(server, "north.test", "MX")
            monkeypatch.setattr(zone, "answer", real_answer)
            return server, failed, await ask_udp(server, "north.test", "MX")

    server, failed, healthy = run(scenario())
    assert failed.rcode() == dns.rcode.SERVFAIL
    assert b"secret" not in failed.to_wire()
    assert healthy.rcode() == dns.rcode.NOERROR
    assert "secret internal detail" in caplog.text
    assert not any("secret" in line for _, line, _, _ in rows(server))


def test_big_udp_answers_are_truncated_and_tcp_carries_them() -> None:
    """Over UDP an answer larger than 512 bytes (or the client's EDNS size) comes back
    with TC set and no records; EDNS raises the limit; TCP carries the whole answer."""
    zone = lab_zone()
    for number in range(15):  # about 800 bytes: more than 512, less than EDNS_PAYLOAD
        zone.add("big.north.test", "TXT", f'"line {number:02} of a long text record........"')

    async def scenario() -> list[dns.message.Message]:
        async with serving(zone) as server:
            return [
                await ask_udp(server, "big.north.test", "TXT"),
                await ask_udp(server, "big.north.test", "TXT", use_edns=0, payload=4096),
                await ask_tcp(server, "big.north.test", "TXT"),
            ]

    plain, edns, over_tcp = run(scenario())
    assert plain.flags & dns.flags.TC and plain.answer == []
    assert not edns.flags & dns.flags.TC and len(edns.answer[0]) == 15
    assert not over_tcp.flags & dns.flags.TC and len(over_tcp.answer[0]) == 15


def test_tcp_two_queries_on_one_connection() -> None:
    """One TCP connection carries several length-prefixed queries, answered in order
    (RFC 7766 §6.2.1), and they form one transcript session."""
    first = dns.message.make_query("north.test", "MX")
    second = dns.message.make_query("mx.north.test", "A")

    async def scenario() -> tuple[DNSServer, list[dns.message.Message]]:
        async with serving() as server:
            reader, writer = await open_tcp(server)
            try:
                answers = [
                    await tcp_exchange(reader, writer, first.to_wire()),
                    await tcp_exchange(reader, writer, second.to_wire()),
                ]
            finally:
                writer.close()
            return server, answers

    server, (mx, a) = run(scenario())
    assert mx.id == first.id and len(mx.answer[0]) == 2
    assert a.id == second.id and [rr.to_text() for rr in a.answer[0]] == ["127.0.0.1"]
    assert server.transcript.frame()["session"].nunique() == 1


def test_tcp_garbage_then_a_healthy_query() -> None:
    """Over TCP a cut-off query gets FORMERR and the same connection still answers the
    next query; a length over TCP_MAX_QUERY makes the server hang up."""
    healthy = dns.message.make_query("north.test", "TXT")

    async def scenario() -> tuple[dns.message.Message, dns.message.Message, bytes]:
        async with serving() as server:
            reader, writer = await open_tcp(server)
            try:
                formerr = await tcp_exchange(reader, writer, healthy.to_wire()[:14])
                answer = await tcp_exchange(reader, writer, healthy.to_wire())
                writer.write(struct.pack("!H", dnsserver.TCP_MAX_QUERY + 1))
                end = await asyncio.wait_for(reader.read(), TIMEOUT)
            finally:
                writer.close()
            return formerr, answer, end

    formerr, answer, end = run(scenario())
    assert formerr.rcode() == dns.rcode.FORMERR
    assert answer.rcode() == dns.rcode.NOERROR and answer.answer
    assert end == b""


def test_silent_tcp_client_does_not_block_others() -> None:
    """A TCP client that sends a length prefix and then nothing does not stop other
    clients (UDP or TCP) from being answered, and stop() closes its connection."""

    async def scenario() -> tuple[dns.message.Message, dns.message.Message, bytes]:
        async with serving() as server:
            reader, writer = await open_tcp(server)
            writer.write(struct.pack("!H", 40))  # announces 40 bytes, sends none
            await writer.drain()
            over_udp = await ask_udp(server, "north.test", "MX")
            over_tcp = await ask_tcp(server, "north.test", "MX")
            await server.stop()
            end = await asyncio.wait_for(reader.read(), TIMEOUT)
            writer.close()
            return over_udp, over_tcp, end

    over_udp, over_tcp, end = run(scenario())
    assert over_udp.rcode() == over_tcp.rcode() == dns.rcode.NOERROR
    assert end == b""


def test_idle_tcp_connection_is_closed() -> None:
    """The server closes a TCP connection that stays idle past its idle timeout
    (RFC 7766 §6.2.3)."""

    async def scenario() -> bytes:
        async with serving(idle_timeout=0.1) as server:
            reader, writer = await open_tcp(server)
            try:
                return await asyncio.wait_for(reader.read(), TIMEOUT)
            finally:
                writer.close()

    assert run(scenario()) == b""


def test_stop_frees_the_port_and_is_idempotent() -> None:
    """stop() may be called before start() and twice after; once stopped, the same port
    can be bound again, by a plain socket and by a new server on UDP and TCP."""

    async def scenario() -> tuple[dns.message.Message, dns.message.Message]:
        zone = lab_zone()
        server = DNSServer(zone, Transcript())
        await server.stop()
        await server.start()
        await ask_tcp(server, "north.test", "MX")
        await server.stop()
        await server.stop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", server.port))
        async with serving(zone, port=server.port) as again:
            assert again.port == server.port
            return await ask_udp(again, "north.test", "MX"), await ask_tcp(
                again, "north.test", "MX"
            )

    over_udp, over_tcp = run(scenario())
    assert over_udp.rcode() == over_tcp.rcode() == dns.rcode.NOERROR


def test_start_fails_cleanly_when_the_tcp_port_is_taken() -> None:
    """With an explicit port whose TCP side is taken, start() raises OSError and leaves
    no UDP socket behind."""

    async def scenario(port: int) -> None:
        with pytest.raises(OSError):
            await DNSServer(lab_zone(), Transcript(), port=port).start()

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run(scenario(port))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))


def test_port_zero_retries_when_tcp_bind_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """With port 0, a TCP bind that fails makes start() try again on a new UDP port."""
    real_start_server = asyncio.start_server
    calls: list[int] = []

    async def fail_once(*args: Any, **kwargs: Any) -> asyncio.Server:
        calls.append(args[2])
        if len(calls) == 1:
            raise OSError("address already in use (simulated)")
        return await real_start_server(*args, **kwargs)

    async def scenario() -> dns.message.Message:
        monkeypatch.setattr(asyncio, "start_server", fail_once)
        async with serving() as server:
            assert server.port == calls[-1]
            return await ask_tcp(server, "north.test", "MX")

    assert run(scenario()).rcode() == dns.rcode.NOERROR
    assert len(calls) == 2


def test_sync_lab_resolver_asks_only_the_lab() -> None:
    """lab_resolver (blocking, for notebook cells) resolves through the lab server, with
    no search domains and no cache."""

    async def scenario() -> tuple[list[str], dns.resolver.Resolver, int]:
        async with serving() as server:
            resolver = lab_resolver(server.host, server.port)
            answer = await asyncio.to_thread(resolver.resolve, "mx.north.test", "A")
            return [rr.address for rr in answer], resolver, server.port

    addresses, resolver, port = run(scenario())
    assert addresses == ["127.0.0.1"]
    assert resolver.search == [] and resolver.cache is None
    assert [(ns.address, ns.port) for ns in resolver.nameservers] == [("127.0.0.1", port)]


def test_public_api() -> None:
    """The module's public names are exactly the documented ones."""
    assert set(dnsserver.__all__) == {
        "DEFAULT_TTL",
        "EDNS_PAYLOAD",
        "TCP_IDLE_TIMEOUT",
        "TCP_MAX_QUERY",
        "TCP_MAX_SIZE",
        "UDP_MAX_SIZE",
        "Answer",
        "DNSServer",
        "NoSuchDomain",
        "Zone",
        "handle_query",
        "lab_async_resolver",
        "lab_resolver",
        "resolve_mx",
    }
