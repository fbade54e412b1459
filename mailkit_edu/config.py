"""Who lives in the lab: its mail domains and their accounts.

Role
    Turns what a user passes to ``start_lab(domains=...)`` into plain, frozen
    :class:`Domain` and :class:`Account` values, checked once. The default lab
    has two providers under the reserved ``.test`` top-level domain (RFC 2606),
    so a message really crosses from one provider to another.

This module must not import asyncio, sockets or any server module.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["DEFAULT_DOMAINS", "Account", "Domain", "parse_domains"]

#: The default lab: two providers, two people each. Passwords are simple on
#: purpose: the lab listens on 127.0.0.1 only, and learners type them by hand.
DEFAULT_DOMAINS: dict[str, dict[str, str]] = {
    "north.test": {"alice": "alice-secret", "bob": "bob-secret"},
    "south.test": {"carol": "carol-secret", "dave": "dave-secret"},
}

_LOCAL_PART = re.compile(r"^[a-z0-9](?:[a-z0-9._+-]{0,62}[a-z0-9])?$")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"^{_LABEL}(?:\.{_LABEL})+$")


@dataclass(frozen=True)
class Account:
    """One mailbox: the full address is the login name everywhere (SMTP, POP3, IMAP)."""

    address: str
    password: str

    @property
    def local_part(self) -> str:
        return self.address.rpartition("@")[0]

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


@dataclass(frozen=True)
class Domain:
    """One mail provider of the lab, e.g. ``north.test``, with its accounts."""

    name: str
    accounts: tuple[Account, ...]


def parse_domains(spec: Mapping[str, Mapping[str, str] | Iterable[str]] | None) -> list[Domain]:
    """Check and normalise a ``domains=`` argument.

    ``{"north.test": {"alice": "pw", ...}, ...}`` gives passwords explicitly;
    ``{"north.test": ["alice", "bob"], ...}`` makes each password ``<name>-secret``.
    """
    if spec is None:
        spec = DEFAULT_DOMAINS
    if not spec:
        raise ValueError("a lab needs at least one domain")
    domains: list[Domain] = []
    for raw_name, people in spec.items():
        name = str(raw_name).strip().lower().rstrip(".")
        if not _DOMAIN.match(name):
            raise ValueError(f"{raw_name!r} is not a valid domain name (e.g. 'north.test')")
        if isinstance(people, Mapping):
            pairs = [(str(k), str(v)) for k, v in people.items()]
        else:
            pairs = [(str(k), f"{str(k).lower()}-secret") for k in people]
        if not pairs:
            raise ValueError(f"domain {name!r} has no accounts")
        accounts = []
        for local, password in pairs:
            local = local.strip().lower()
            if "@" in local:  # a full address was given
                local, _, dom = local.partition("@")
                if dom != name:
                    raise ValueError(f"account {local}@{dom} listed under domain {name}")
            if not _LOCAL_PART.match(local):
                raise ValueError(
                    f"{local!r} is not a valid account name: use letters, digits and . _ + -"
                )
            if not password:
                raise ValueError(f"account {local}@{name} needs a password")
            accounts.append(Account(f"{local}@{name}", password))
        domains.append(Domain(name, tuple(accounts)))
    names = [d.name for d in domains]
    if len(set(names)) != len(names):
        raise ValueError("a domain is listed twice")
    return domains
