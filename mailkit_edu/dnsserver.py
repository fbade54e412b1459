"""A small authoritative DNS server for the lab's zone, over UDP and TCP.

Role
    The lab's mail servers find each other the way real ones do: to deliver to
    ``bob@south.test`` the MSA asks DNS for the MX records of ``south.test``
    (RFC 5321 §5.1) and connects to the host it is told. This module is that DNS.
    It keeps the lab's records in a :class:`Zone` (thread-safe, so a notebook can
    add a record while the server runs) and answers for them as an
    *authoritative* server: every answer has the AA flag and none has RA, because
    we never ask anyone else. A name the lab does not know is NXDOMAIN.

    Three layers, top to bottom:

    - :class:`Zone`, the data: names, types, values. No sockets.
    - :func:`handle_query`, the protocol: a query in wire format in, the response
      in wire format out (or ``None``: send nothing). Pure and synchronous, so a
      notebook can call it without a socket. It is the one place that writes the
      transcript: the question as a client line, then what is sent as server lines.
    - :class:`DNSServer`, the asyncio shell: a UDP endpoint and a TCP listener on
      the same port, both feeding bytes to :func:`handle_query`.

    On the client side, :func:`lab_resolver`, :func:`lab_async_resolver` and
    :func:`resolve_mx` build dnspython resolvers that ask the lab server and
    nothing else.

RFCs
    - RFC 1034, RFC 1035: the DNS itself; the message format (RFC 1035 §4.1), the
      512-byte UDP limit and the TC bit (§4.2.1), the TCP length prefix (§4.2.2).
    - RFC 2181: clarifications; one TTL per RRset (§5.2), truncation (§9).
    - RFC 2308: negative answers (NXDOMAIN, NODATA) carry the zone's SOA (§3).
    - RFC 6891: EDNS(0); a client may offer to receive more than 512 bytes over UDP.
    - RFC 7766: DNS over TCP; several queries per connection, idle timeouts.
    - RFC 9619: a query asks exactly one question.

Errors
    ::

        Exception
         ├── NoSuchDomain    resolve_mx: the domain does not exist (NXDOMAIN)
         └── ValueError      Zone.add / Zone.remove: a bad name, type or value,
                             or a name outside every origin of the zone

What this module must not import
    ``ipywidgets``, or any ``mailkit_edu`` module other than ``transcript``. It
    never uses the system resolver: nothing here reads ``/etc/resolv.conf`` or
    calls ``socket.getaddrinfo`` on a name; every resolver is built with
    ``configure=False`` and pointed at the lab server alone.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar, cast

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.resolver
import dns.rrset
import pandas as pd

from mailkit_edu.transcript import SessionLog, Transcript

__all__ = [
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
]

logger = logging.getLogger(__name__)

# --- Limits and defaults -------------------------------------------------------------------

#: RFC 1035 §4.1.1: every DNS message starts with a 12-byte header. Without it we
#: cannot even read the query ID, so there is no one to answer.
HEADER_SIZE = 12

#: RFC 1035 §4.2.1: a message over UDP is at most 512 bytes, unless the client
#: offered more with EDNS (RFC 6891).
UDP_MAX_SIZE = 512

#: RFC 6891 §6.2.5: the UDP payload size we advertise and the most we send over UDP,
#: whatever the client offers. 1232 bytes is the value of DNS Flag Day 2020: it fits
#: an IPv6 packet on any link without fragmentation.
EDNS_PAYLOAD = 1232

#: RFC 1035 §4.2.2: over TCP each message is preceded by its length in two bytes,
#: so a message is at most 65535 bytes.
TCP_MAX_SIZE = 65535

#: The largest query we read over TCP, in bytes. A query is a header, one name of at
#: most 255 bytes (RFC 1035 §2.3.4) and perhaps an EDNS record: anything much larger
#: is not a query, and we hang up rather than buffer it.
TCP_MAX_QUERY = 4096

#: RFC 7766 §6.2.3: a server closes TCP connections that stay idle; seconds we wait
#: for the next query (or for the rest of one).
TCP_IDLE_TIMEOUT = 10.0

#: With port 0 the OS picks a free UDP port, but the same TCP port may be taken;
#: :meth:`DNSServer.start` then tries a new UDP port, this many times in all.
BIND_ATTEMPTS = 5

#: TTL of a record added without one, in seconds (RFC 1035 §3.2.1). Short, so a
#: lesson that changes a record sees the change soon in any cache.
DEFAULT_TTL = 300

#: RFC 1035 §3.3.13: the SOA timers, in seconds. The lab has no secondary servers,
#: so they only show students what a real zone carries.
SOA_REFRESH = 3600
SOA_RETRY = 600
SOA_EXPIRE = 86400

#: Order of types within one name in :meth:`Zone.frame` and :meth:`Zone.to_text`:
#: the apex records first, as in a zone file; the rest by type number.
_TYPE_ORDER = {dns.rdatatype.SOA: 0, dns.rdatatype.NS: 1}


# --- The zone: the lab's DNS data ------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What the zone says about one question: the rcode and the sections of a
    response (RFC 1035 §4.1), plus the lab origin the name falls under."""

    rcode: dns.rcode.Rcode
    answers: list[dns.rrset.RRset]
    authority: list[dns.rrset.RRset]
    #: The origin (e.g. ``north.test.``) that holds the name; None when the name is
    #: outside every origin of the lab.
    origin: dns.name.Name | None


class Zone:
    """The lab's DNS data: thread-safe (one :class:`threading.Lock`), and mutable at
    run time (a notebook adds a record while the server runs).

    The zone is a set of *origins* (``north.test``, ``south.test``, ...), each with an
    SOA and NS record at its apex, and the records under them::

        zone = Zone(["north.test"])
        zone.add("north.test", "MX", "10 mx.north.test")
        zone.add("mx.north.test", "A", "127.0.0.1")
        zone.add("north.test", "TXT", '"v=spf1 -all"')

    Names and the names inside values are absolute even without a trailing dot
    (``mx.north.test`` means ``mx.north.test.``). Names compare case-insensitively
    (RFC 1035 §2.3.3). Every change adds one to the SOA serial of the origin
    (RFC 1035 §3.3.13), so students can see that the zone changed.
    """

    def __init__(self, origins: Iterable[str] = (), default_ttl: int = DEFAULT_TTL) -> None:
        self.default_ttl = default_ttl
        self._lock = threading.Lock()
        self._origins: list[dns.name.Name] = []
        # owner name -> type -> the records of that name and type (an RRset's data).
        self._nodes: dict[dns.name.Name, dict[dns.rdatatype.RdataType, dns.rdataset.Rdataset]] = {}
        for origin in origins:
            self.add_origin(origin)

    @property
    def origins(self) -> list[str]:
        """The origins the lab is authoritative for, as absolute names (``north.test.``)."""
        with self._lock:
            return [origin.to_text() for origin in self._origins]

    def add_origin(self, origin: str) -> None:
        """Make the lab authoritative for ``origin`` (e.g. ``"north.test"``).

        Its apex gets the records that define a zone (RFC 1034 §4.2.1): an SOA, and an
        NS naming ``ns.<origin>.``, which gets the address 127.0.0.1. The SOA MINIMUM
        field is ``default_ttl``: how long resolvers may cache a "no such name"
        (RFC 2308 §4). Adding an origin that exists already changes nothing.
        """
        apex = _absolute(origin)
        nameserver = dns.name.from_text("ns", origin=apex)
        hostmaster = dns.name.from_text("hostmaster", origin=apex)
        soa = _rdata(
            dns.rdatatype.SOA,
            f"{nameserver} {hostmaster} 1 {SOA_REFRESH} {SOA_RETRY} {SOA_EXPIRE} "
            f"{self.default_ttl}",
        )
        with self._lock:
            if apex in self._origins:
                return
            self._origins.append(apex)
            self._put(apex, soa, self.default_ttl)
            self._put(apex, _rdata(dns.rdatatype.NS, nameserver.to_text()), self.default_ttl)
            self._put(nameserver, _rdata(dns.rdatatype.A, "127.0.0.1"), self.default_ttl)

    def add(self, name: str, rtype: str, value: str, ttl: int | None = None) -> None:
        """Add one record, e.g. ``add("north.test", "MX", "10 mx.north.test")``.

        ``value`` is written as in a zone file: ``"10 mx.north.test"`` for MX,
        ``"127.0.0.1"`` for A, ``'"v=spf1 -all"'`` for TXT (quoted: unquoted words
        become separate strings). Adding a record that exists changes nothing (an
        RRset is a set, RFC 2181 §5). All records of one name and type share one TTL
        (RFC 2181 §5.2): when they differ, the lowest wins.

        Raises ValueError if the name is outside every origin, if the type or value
        cannot be parsed, or if it would put a CNAME beside other data at one name
        (RFC 1034 §3.6.2).
        """
        owner = _absolute(name)
        rdata = _rdata(_rdtype(rtype), value)
        with self._lock:
            origin = self._origin_of(owner)
            if origin is None:
                raise ValueError(
                    f"{owner} is outside the lab zone (origins: {self._origin_list()})"
                )
            types = set(self._nodes.get(owner, {}))
            is_cname = rdata.rdtype == dns.rdatatype.CNAME
            if (is_cname and types - {dns.rdatatype.CNAME}) or (
                not is_cname and dns.rdatatype.CNAME in types
            ):
                raise ValueError(f"{owner}: a CNAME cannot share its name with other records")
            self._put(owner, rdata, self.default_ttl if ttl is None else ttl)
            if rdata.rdtype != dns.rdatatype.SOA:
                self._bump_serial(origin)

    def remove(self, name: str, rtype: str, value: str | None = None) -> int:
        """Remove the record ``name rtype value``, or every record of that name and type
        when ``value`` is None. Returns how many records were removed (0 if none matched).
        """
        owner = _absolute(name)
        rdtype = _rdtype(rtype)
        rdata = None if value is None else _rdata(rdtype, value)
        with self._lock:
            node = self._nodes.get(owner, {})
            rdataset = node.get(rdtype)
            if rdataset is None:
                return 0
            if rdata is None:
                removed = len(rdataset)
                rdataset.clear()
            elif rdata in rdataset:
                removed = 1
                rdataset.remove(rdata)
            else:
                return 0
            if not rdataset:
                del node[rdtype]
            if not node:
                del self._nodes[owner]
            origin = self._origin_of(owner)
            if origin is not None and rdtype != dns.rdatatype.SOA:
                self._bump_serial(origin)
            return removed

    def answer(self, qname: dns.name.Name | str, rdtype: dns.rdatatype.RdataType | str) -> Answer:
        """Everything an authoritative server says about one question (RFC 1034 §4.3.2):

        - the name is outside every origin: NXDOMAIN (the lab never asks elsewhere);
        - the name has records of that type: NOERROR with them as answers;
        - the name has a CNAME: NOERROR with the CNAME (the client follows it);
        - the name exists without that type: NOERROR and no answers ("NODATA");
        - the name does not exist: NXDOMAIN.

        Negative answers carry the origin's SOA in the authority section, with the
        lower of its TTL and its MINIMUM field as TTL (RFC 2308 §3). A name with no
        records but with names below it exists (RFC 8020). Answers use ``qname``
        as asked (same case) and list records in a stable order (MX by preference).
        """
        qname = qname if isinstance(qname, dns.name.Name) else _absolute(qname)
        rdtype = dns.rdatatype.RdataType.make(rdtype)
        with self._lock:
            origin = self._origin_of(qname)
            if origin is None:
                return Answer(dns.rcode.NXDOMAIN, [], [], None)
            node = self._nodes.get(qname)
            if node is None:
                has_children = any(owner.is_subdomain(qname) for owner in self._nodes)
                rcode = dns.rcode.NOERROR if has_children else dns.rcode.NXDOMAIN
                return Answer(rcode, [], self._negative_soa(origin), origin)
            if rdtype == dns.rdatatype.ANY:
                found = list(node.values())
            elif rdtype in node:
                found = [node[rdtype]]
            elif dns.rdatatype.CNAME in node:
                found = [node[dns.rdatatype.CNAME]]
            else:
                found = []
            answers = [dns.rrset.from_rdata_list(qname, rds.ttl, sorted(rds)) for rds in found]
            authority = [] if answers else self._negative_soa(origin)
            return Answer(dns.rcode.NOERROR, answers, authority, origin)

    def lookup(
        self, qname: dns.name.Name | str, rdtype: dns.rdatatype.RdataType | str
    ) -> tuple[dns.rcode.Rcode, list[dns.rrset.RRset]]:
        """The rcode and the answer RRsets for one question: :meth:`answer`, short."""
        result = self.answer(qname, rdtype)
        return result.rcode, result.answers

    def frame(self) -> pd.DataFrame:
        """The zone as a table, one row per record: name, ttl, class, type, value."""
        rows = [
            (owner.to_text(), ttl, "IN", dns.rdatatype.to_text(rdata.rdtype), rdata.to_text())
            for _origin, owner, ttl, rdata in self._records()
        ]
        return pd.DataFrame(rows, columns=["name", "ttl", "class", "type", "value"])

    def to_text(self) -> str:
        """The zone in zone-file style (RFC 1035 §5), one block per origin."""
        lines: list[str] = []
        current: dns.name.Name | None = None
        for origin, owner, ttl, rdata in self._records():
            if origin != current:
                lines += ["", f"; zone {origin}"] if lines else [f"; zone {origin}"]
                current = origin
            rtype = dns.rdatatype.to_text(rdata.rdtype)
            lines.append(f"{owner.to_text():<24} {ttl:>6} IN {rtype:<5} {rdata.to_text()}")
        return "\n".join(lines) + "\n"

    # -- Internals: callers hold self._lock. -------------------------------------------------

    def _put(self, owner: dns.name.Name, rdata: dns.rdata.Rdata, ttl: int) -> None:
        node = self._nodes.setdefault(owner, {})
        rdataset = node.get(rdata.rdtype)
        if rdataset is None:
            rdataset = node[rdata.rdtype] = dns.rdataset.Rdataset(rdata.rdclass, rdata.rdtype)
        rdataset.add(rdata, ttl)

    def _origin_of(self, name: dns.name.Name) -> dns.name.Name | None:
        """The closest origin that contains ``name``, or None."""
        containing = [origin for origin in self._origins if name.is_subdomain(origin)]
        return max(containing, key=len, default=None)

    def _origin_list(self) -> str:
        return ", ".join(origin.to_text() for origin in self._origins) or "none"

    def _negative_soa(self, origin: dns.name.Name) -> list[dns.rrset.RRset]:
        soa_set = self._nodes.get(origin, {}).get(dns.rdatatype.SOA)
        if not soa_set:
            return []
        soa = next(iter(soa_set))
        return [dns.rrset.from_rdata_list(origin, min(soa_set.ttl, soa.minimum), [soa])]

    def _bump_serial(self, origin: dns.name.Name) -> None:
        node = self._nodes.get(origin, {})
        soa_set = node.get(dns.rdatatype.SOA)
        if soa_set:
            soa = next(iter(soa_set))
            # RFC 1982: serial numbers wrap around at 2**32.
            newer = soa.replace(serial=(soa.serial + 1) % 2**32)
            node[dns.rdatatype.SOA] = dns.rdataset.from_rdata(soa_set.ttl, newer)

    def _records(self) -> list[tuple[dns.name.Name, dns.name.Name, int, dns.rdata.Rdata]]:
        """(origin, owner, ttl, rdata) for every record, in zone-file order."""
        with self._lock:
            snapshot = [
                (origin, owner, rds.rdtype, rds.ttl, sorted(rds))
                for owner, node in self._nodes.items()
                if (origin := self._origin_of(owner)) is not None
                for rds in node.values()
            ]
        # Name order is DNS canonical order (RFC 4034 §6.1): a name comes before the
        # names below it, so each origin's apex leads its block.
        snapshot.sort(key=lambda row: (row[0], row[1], _TYPE_ORDER.get(row[2], 2), row[2]))
        return [
            (origin, owner, ttl, rdata)
            for origin, owner, _rdtype, ttl, rdatas in snapshot
            for rdata in rdatas
        ]


def _absolute(name: str) -> dns.name.Name:
    """``"north.test"`` -> the absolute name ``north.test.`` (a trailing dot is optional)."""
    try:
        return dns.name.from_text(name, origin=dns.name.root)
    except dns.exception.DNSException as exc:
        raise ValueError(f"bad DNS name {name!r}: {exc}") from exc


def _rdtype(rtype: str) -> dns.rdatatype.RdataType:
    try:
        return dns.rdatatype.from_text(rtype)
    except dns.exception.DNSException as exc:
        raise ValueError(f"unknown record type {rtype!r}") from exc


def _rdata(rdtype: dns.rdatatype.RdataType, value: str) -> dns.rdata.Rdata:
    """Parse a record value as written in a zone file; names in it are absolute."""
    try:
        return dns.rdata.from_text(
            dns.rdataclass.IN, rdtype, value, origin=dns.name.root, relativize=False
        )
    except (dns.exception.DNSException, ValueError) as exc:
        kind = dns.rdatatype.to_text(rdtype)
        raise ValueError(f"bad {kind} value {value!r}: {exc}") from exc


# --- The protocol: one query in, one response out -------------------------------------------


def handle_query(
    zone: Zone, wire: bytes, log: SessionLog, *, over_tcp: bool = False
) -> bytes | None:
    """Answer one DNS message from ``zone``; returns the response to send, or None.

    ``wire`` is the message as received (over TCP: without its length prefix). This
    is the server's one read point and one write point: the question goes to ``log``
    as a client line (``north.test. IN MX?``, command ``MX``), then each answer record
    as a server line in zone-file style (code ``NOERROR``), or one line saying why
    there is none (``north.example. IN MX: NXDOMAIN (not in the lab zone)``).

    What a client can send never raises here. Bad input gets an error rcode
    (RFC 1035 §4.1.1): FORMERR for a message that cannot be parsed or that does not
    ask exactly one question (RFC 9619), NOTIMP for an opcode other than QUERY.
    Nothing is sent when there is not even a 12-byte header to take the ID from, or
    when the message is itself a response.

    Over UDP the response is at most 512 bytes, or the EDNS size the client offered
    (up to :data:`EDNS_PAYLOAD`); a longer one is sent without records and with TC
    set, so the client asks again over TCP (RFC 1035 §4.2.1, RFC 2181 §9).

    A bug of ours is not the client's business either: an unexpected exception is
    logged here (with :mod:`logging`) and the client gets a plain SERVFAIL.
    """
    try:
        return _answer_query(zone, wire, log, over_tcp)
    except Exception:
        logger.exception("error answering a DNS query")
        return _error_reply(wire, dns.rcode.SERVFAIL, log, "the server failed on this query")


def _answer_query(zone: Zone, wire: bytes, log: SessionLog, over_tcp: bool) -> bytes | None:
    """:func:`handle_query` without its safety net."""
    try:
        query = dns.message.from_wire(wire)
    except Exception:  # dnspython raises many different exceptions for bad wire data
        log.client(f"<malformed query, {_count(len(wire), 'byte')}>")
        return _error_reply(wire, dns.rcode.FORMERR, log, "the query could not be parsed")
    if query.flags & dns.flags.QR:
        # QR=1 marks a response. Answering one could start an endless exchange
        # between two servers, so it is never answered.
        log.client(f"<a response, not a query: {_count(len(wire), 'byte')}, ignored>")
        return None

    response = dns.message.make_response(query, our_payload=EDNS_PAYLOAD)
    # Authoritative Answer; make_response leaves RA (recursion available) clear.
    response.flags |= dns.flags.AA
    limit = TCP_MAX_SIZE if over_tcp else _udp_limit(query)

    if query.opcode() != dns.opcode.QUERY:
        opcode = dns.opcode.to_text(query.opcode())
        log.client(f"<{opcode} request>", command=opcode)
        response.set_rcode(dns.rcode.NOTIMP)
        return _send(response, log, limit, opcode, " (only standard queries are answered)")
    if len(query.question) != 1:
        asked = f"<query with {_count(len(query.question), 'question')}>"
        log.client(asked)
        response.set_rcode(dns.rcode.FORMERR)
        return _send(response, log, limit, asked, " (a query asks exactly one question)")

    question = query.question[0]
    rtype = dns.rdatatype.to_text(question.rdtype)
    asked = f"{question.name} {dns.rdataclass.to_text(question.rdclass)} {rtype}"
    log.client(f"{asked}?", command=rtype)

    if query.edns > 0:
        response.set_rcode(dns.rcode.BADVERS)
        note = " (only EDNS version 0 is spoken, RFC 6891 §6.1.3)"
    elif question.rdclass != dns.rdataclass.IN:
        response.set_rcode(dns.rcode.REFUSED)
        note = " (the lab zone is class IN only)"
    elif dns.rdatatype.is_metatype(question.rdtype) and question.rdtype != dns.rdatatype.ANY:
        response.set_rcode(dns.rcode.NOTIMP)
        note = " (zone transfers and other meta-queries are not offered)"
    else:
        found = zone.answer(question.name, question.rdtype)
        response.set_rcode(found.rcode)
        response.answer.extend(found.answers)
        response.authority.extend(found.authority)
        if found.origin is None:
            note = " (not in the lab zone)"
        elif found.rcode == dns.rcode.NXDOMAIN:
            note = f" (no such name in {found.origin})"
        else:
            note = ", no records"
    return _send(response, log, limit, asked, note)


def _send(
    response: dns.message.Message, log: SessionLog, limit: int, asked: str, note: str
) -> bytes:
    """Render ``response`` within ``limit`` bytes and record what is sent: one line per
    answer record, or one line ``<asked>: <RCODE><note>`` when there is none."""
    code = dns.rcode.to_text(response.rcode())
    wire, truncated = _render(response, limit)
    if truncated:
        log.server(
            f"{asked}: {code}, truncated (TC): the answer does not fit in {limit} bytes, "
            "ask again over TCP",
            code=code,
        )
    elif response.answer:
        for rrset in response.answer:
            for line in rrset.to_text().splitlines():
                log.server(line, code=code)
    else:
        log.server(f"{asked}: {code}{note}", code=code)
    return wire


def _render(response: dns.message.Message, limit: int) -> tuple[bytes, bool]:
    """Wire format of at most ``limit`` bytes, and whether it had to be truncated.

    RFC 1035 §4.2.1 and RFC 2181 §9: when the records do not fit, send the header
    and question with TC set and no records; the client retries over TCP.
    """
    try:
        return response.to_wire(max_size=limit), False
    except dns.exception.TooBig:
        for section in (response.answer, response.authority, response.additional):
            section.clear()
        response.flags |= dns.flags.TC
        return response.to_wire(max_size=limit), True


def _udp_limit(query: dns.message.Message) -> int:
    """RFC 6891 §6.2.5: the client's EDNS size if it offered one (never below 512)."""
    if query.edns < 0:
        return UDP_MAX_SIZE
    return max(UDP_MAX_SIZE, min(query.payload, EDNS_PAYLOAD))


def _error_reply(wire: bytes, rcode: dns.rcode.Rcode, log: SessionLog, reason: str) -> bytes | None:
    """A bare response with ``rcode``, built from the 12-byte header alone
    (RFC 1035 §4.1.1), for a message we cannot or could not handle."""
    if len(wire) < HEADER_SIZE:
        return None  # not even an ID to answer to
    query_id, flags = struct.unpack_from("!HH", wire)
    if flags & dns.flags.QR:
        return None  # a broken response: responses are never answered
    reply = dns.message.Message(id=query_id)
    reply.flags = dns.flags.QR | (flags & dns.flags.RD)
    reply.set_opcode(dns.opcode.from_flags(flags))
    reply.set_rcode(rcode)
    code = dns.rcode.to_text(rcode)
    log.server(f"{code} ({reason})", code=code)
    return reply.to_wire()


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# --- The server: UDP and TCP on one port ----------------------------------------------------


class _DatagramProtocol(asyncio.DatagramProtocol):
    """DNS over UDP (RFC 1035 §4.2.1): one datagram in, at most one datagram out."""

    transport: asyncio.DatagramTransport

    def __init__(self, server: DNSServer) -> None:
        self._server = server
        #: Done once the socket is really closed, so stop() can wait for it.
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        server = self._server
        try:
            log = server.transcript.open_session(server.server_id)
            reply = handle_query(server.zone, data, log)
            if reply is not None:
                self.transport.sendto(reply, addr)
        except Exception:  # never let one datagram stop the server
            logger.exception("%s: error answering a UDP query from %s", server.name, addr)

    def error_received(self, exc: Exception) -> None:
        # For example ICMP "port unreachable" after answering a client that left.
        logger.debug("%s: UDP error: %s", self._server.name, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


@dataclass
class _Bound:
    """The sockets of a running server."""

    udp: asyncio.DatagramTransport
    udp_protocol: _DatagramProtocol
    tcp: asyncio.Server


class DNSServer:
    """The lab's DNS server: :func:`handle_query` behind UDP and TCP on one port.

    Runs on an asyncio loop (the lab's own loop, in its background thread)::

        server = DNSServer(zone, transcript)
        await server.start()      # server.port is now the port the OS chose
        ...
        await server.stop()

    Each UDP query and each TCP connection is one transcript session.
    """

    role = "dns"
    protocol = "DNS"

    def __init__(
        self,
        zone: Zone,
        transcript: Transcript,
        *,
        name: str = "dns",
        host: str = "127.0.0.1",
        port: int = 0,
        idle_timeout: float = TCP_IDLE_TIMEOUT,
    ) -> None:
        self.zone = zone
        self.transcript = transcript
        self.name = name
        self.host = host
        #: The port asked for (0: let the OS choose); after start(), the bound port.
        self.port = port
        self.idle_timeout = idle_timeout
        self.server_id = transcript.register_server(name, self.role, self.protocol)
        self._requested_port = port
        self._bound: _Bound | None = None
        #: Open TCP connections: the task serving each, and its writer (to close it).
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._bound is not None

    async def start(self) -> None:
        """Bind UDP and TCP on the same port of ``host`` and start answering.

        With port 0, UDP is bound first (the OS picks a free port) and TCP then binds
        that same port; if TCP finds it taken, we start again with a new UDP port,
        up to :data:`BIND_ATTEMPTS` times. Raises OSError if binding fails.
        """
        if self._bound is not None:
            raise RuntimeError(f"{self.name} is already running on port {self.port}")
        loop = asyncio.get_running_loop()
        attempts = BIND_ATTEMPTS if self._requested_port == 0 else 1
        for attempt in range(1, attempts + 1):
            udp, udp_protocol = await loop.create_datagram_endpoint(
                lambda: _DatagramProtocol(self), local_addr=(self.host, self._requested_port)
            )
            port = udp.get_extra_info("sockname")[1]
            try:
                tcp = await asyncio.start_server(self._serve_connection, self.host, port)
            except OSError:
                udp.close()
                await udp_protocol.closed
                if attempt == attempts:
                    raise
                logger.info("%s: TCP port %d is taken, trying another port", self.name, port)
                continue
            self._bound = _Bound(udp, udp_protocol, tcp)
            self.port = port
            self._requested_port = port  # a restart (lab.start_server) binds the same port
            return

    async def stop(self) -> None:
        """Close the UDP socket, the TCP listener and every open TCP connection.

        When it returns the port is free again. Calling it twice, or before
        start(), does nothing.
        """
        bound, self._bound = self._bound, None
        if bound is None:
            return
        bound.tcp.close()
        bound.udp.close()
        # Closing a connection ends its task normally: its next read sees the end of
        # the stream. (Cancelling the tasks instead makes Python 3.11 log an error.)
        for writer in self._connections.values():
            writer.close()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await bound.tcp.wait_closed()
        await bound.udp_protocol.closed

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """One TCP connection (RFC 7766 §6.2.1): length-prefixed queries, answered in
        order, until the client closes, stays idle too long, or sends too much."""
        task = cast("asyncio.Task[None]", asyncio.current_task())
        self._connections[task] = writer
        log = self.transcript.open_session(self.server_id)
        try:
            # Send each answer at once rather than wait to fill a packet (Nagle's algorithm).
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while self._bound is not None:
                wire = await self._read_message(reader, log)
                if wire is None:
                    break
                reply = handle_query(self.zone, wire, log, over_tcp=True)
                if reply is not None:
                    # RFC 1035 §4.2.2: the message is preceded by its length, two bytes.
                    writer.write(struct.pack("!H", len(reply)) + reply)
                    await writer.drain()
        except ConnectionError:
            pass  # the client went away
        except Exception:  # never let one connection stop the server
            logger.exception("%s: error on a TCP connection", self.name)
        finally:
            del self._connections[task]
            writer.close()

    async def _read_message(self, reader: asyncio.StreamReader, log: SessionLog) -> bytes | None:
        """Read one length-prefixed message (RFC 1035 §4.2.2); None when the client has
        closed, has been idle for ``idle_timeout`` seconds (RFC 7766 §6.2.3), or
        announces more than :data:`TCP_MAX_QUERY` bytes."""
        try:
            prefix = await asyncio.wait_for(reader.readexactly(2), self.idle_timeout)
            (length,) = struct.unpack("!H", prefix)
            if length > TCP_MAX_QUERY:
                log.client(f"<query of {length} bytes, over the limit of {TCP_MAX_QUERY}>")
                return None
            return await asyncio.wait_for(reader.readexactly(length), self.idle_timeout)
        except (asyncio.IncompleteReadError, TimeoutError):
            return None


# --- Clients that ask the lab and nobody else -----------------------------------------------

_Resolver = TypeVar("_Resolver", bound=dns.resolver.BaseResolver)


def _point_at_lab(resolver: _Resolver, host: str, port: int, timeout: float) -> _Resolver:
    resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port)]
    resolver.timeout = timeout  # per attempt
    resolver.lifetime = timeout  # for the whole resolution
    resolver.search = []  # "north.test" means north.test. and nothing else
    resolver.use_search_by_default = False
    resolver.cache = None  # every question goes to the server: a lesson sees changes at once
    return resolver


def lab_resolver(host: str, port: int, timeout: float = 2.0) -> dns.resolver.Resolver:
    """A dnspython resolver that asks only the lab server at ``host:port``.

    ``configure=False``: the system's ``/etc/resolv.conf`` is never read, so no
    question leaves the machine. No search domains and no cache.
    """
    return _point_at_lab(dns.resolver.Resolver(configure=False), host, port, timeout)


def lab_async_resolver(host: str, port: int, timeout: float = 2.0) -> dns.asyncresolver.Resolver:
    """The asyncio twin of :func:`lab_resolver`."""
    return _point_at_lab(dns.asyncresolver.Resolver(configure=False), host, port, timeout)


class NoSuchDomain(Exception):
    """The domain does not exist (NXDOMAIN): mail to it must bounce."""

    def __init__(self, domain: str) -> None:
        super().__init__(f"{domain}: no such domain (NXDOMAIN)")
        self.domain = domain


async def resolve_mx(resolver: dns.asyncresolver.Resolver, domain: str) -> list[tuple[int, str]]:
    """The mail exchangers of ``domain`` as ``(preference, host)``, lowest preference
    first (RFC 5321 §5.1), hosts in lower case without the trailing dot::

        [(10, "mx.north.test"), (20, "mx2.north.test")]

    Equal preferences are ordered by name, so the lab is repeatable (RFC 5321 asks
    senders to shuffle them). Returns ``[]`` when the domain exists but has no MX:
    the sender may then use its address as an implicit MX (RFC 5321 §5.1). A "null
    MX" (RFC 7505: the domain takes no mail) comes back as ``[(0, ".")]``.

    Raises :class:`NoSuchDomain` on NXDOMAIN; dnspython's timeouts and errors pass
    through unchanged.
    """
    try:
        answer = await resolver.resolve(domain, "MX", search=False)
    except dns.resolver.NXDOMAIN as exc:
        raise NoSuchDomain(domain) from exc
    except dns.resolver.NoAnswer:
        return []
    return sorted(
        (mx.preference, mx.exchange.canonicalize().to_text(omit_final_dot=True)) for mx in answer
    )
