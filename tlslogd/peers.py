"""The bounded peer table: which remote servers and clients did what, durable across restarts.

One entry per peer, keyed by its host name (lower case) or, when it has none (``unknown[addr]``,
IP-literal next hops), its address. Entries are kept in least-recently-seen order and the
oldest is dropped past the cap, so a flood of hostile names cannot grow memory without bound.
"""

from __future__ import annotations

import heapq
import ipaddress
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from publicsuffixlist import PublicSuffixList

from tlslogd.changes import ChangeTracking
from tlslogd.events import split_peer

CATEGORIES = (
    "plaintext_out",  # outbound deliveries sent without TLS
    "offered_not_used",  # outbound: sent in plaintext although the server offered STARTTLS
    "legacy_protocol",  # TLSv1, TLSv1.1, SSLv3 handshakes, either direction
    "inbound_no_starttls",  # clients that spoke EHLO and never used STARTTLS
    "tls_failure",  # failed TLS attempts
)

_MAX_ADDRS = 4
_MAX_KEY = 255


@dataclass(slots=True)
class PeerEntry:
    key: str
    host: str | None
    domain: str | None  # registrable domain; None until computed, "" when there is none
    first_seen: float
    last_seen: float
    addrs: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # category -> events
    # category -> log time of its last event: "since" asks when a peer last did that, not when
    # it was last seen at all (a client on TLSv1.3 today may have used TLSv1 months ago)
    category_last_seen: dict[str, float] = field(default_factory=dict)
    deliveries: int = 0  # outbound deliveries (any status)
    tls_deliveries: int = 0
    sessions: int = 0  # inbound smtpd sessions
    tls_sessions: int = 0
    # the tallies few peers have are created on first use (None until then): three empty
    # dicts per peer were a tenth of the memory of a table of 100,000 hostile peers
    protocols: dict[str, int] | None = None  # legacy protocol -> handshakes
    # direction -> legacy handshakes: which setting breaks it, smtpd_ or smtp_tls_protocols
    legacy_directions: dict[str, int] | None = None
    reasons: dict[str, int] | None = None  # failure reason -> failures
    last_protocol: str | None = None
    last_cipher: str | None = None

    def seen(self, category: str | None) -> float:
        """When the peer last had an event of ``category`` (of any kind when None)."""
        if category is None:
            return self.last_seen
        return self.category_last_seen.get(category, self.last_seen)

    def to_json(self) -> dict[str, Any]:
        return {
            "peer": self.key,
            "host": self.host,
            "addresses": list(self.addrs),
            "domain": self.domain or None,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "counts": {c: self.counts.get(c, 0) for c in CATEGORIES},
            "category_last_seen": {
                c: self.category_last_seen[c] for c in CATEGORIES if c in self.category_last_seen
            },
            "deliveries": self.deliveries,
            "tls_deliveries": self.tls_deliveries,
            "sessions": self.sessions,
            "tls_sessions": self.tls_sessions,
            "legacy_protocols": dict(self.protocols or {}),
            "legacy_directions": dict(self.legacy_directions or {}),
            "failure_reasons": dict(self.reasons or {}),
            "last_protocol": self.last_protocol,
            "last_cipher": self.last_cipher,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PeerEntry:
        return cls(
            key=data["peer"],
            host=data.get("host"),
            domain=data.get("domain"),
            first_seen=float(data["first_seen"]),
            last_seen=float(data["last_seen"]),
            addrs=list(data.get("addresses", [])),
            counts={k: int(v) for k, v in data.get("counts", {}).items() if v},
            category_last_seen={k: float(v) for k, v in data.get("category_last_seen", {}).items()},
            deliveries=int(data.get("deliveries", 0)),
            tls_deliveries=int(data.get("tls_deliveries", 0)),
            sessions=int(data.get("sessions", 0)),
            tls_sessions=int(data.get("tls_sessions", 0)),
            protocols=dict(data.get("legacy_protocols") or {}) or None,
            legacy_directions={k: int(v) for k, v in (data.get("legacy_directions") or {}).items()}
            or None,
            reasons=dict(data.get("failure_reasons") or {}) or None,
            last_protocol=data.get("last_protocol"),
            last_cipher=data.get("last_cipher"),
        )


def tally(counts: dict[str, int] | None, key: str) -> dict[str, int]:
    """``counts`` with one more ``key``; a peer's tallies are created on first use."""
    if counts is None:
        counts = {}
    counts[key] = counts.get(key, 0) + 1
    return counts


def row_seen(row: dict[str, Any], category: str) -> Any:
    """:meth:`PeerEntry.seen` of a peer as the API writes it (:meth:`PeerEntry.to_json`)."""
    return (row.get("category_last_seen") or {}).get(category, row.get("last_seen"))


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _identify(peer: str) -> tuple[str, str | None, str | None]:
    """(key, host, address) of a peer as logged; the key is the host name in lower case, or the
    address when there is no name (``unknown[addr]``, IP-literal next hops)."""
    host: str | None
    addr: str | None
    host, addr, _ = split_peer(peer)
    if host is not None and addr is None and _is_address(host):
        host, addr = None, host  # "Host offered STARTTLS: [192.0.2.1]" (IP-literal next hop)
    if host in (None, "unknown") or (addr is not None and host == addr):
        host = None
    if addr in ("unknown", None) or "/" in (addr or ""):
        addr = None
    host = host.lower() if host else None
    return (host or addr or "")[:_MAX_KEY], host, addr


class PeerTable(ChangeTracking):
    """Peers by key, least recently seen first, with what the next checkpoint must write and
    delete (:class:`ChangeTracking`)."""

    def __init__(self, max_peers: int = 10_000, psl: PublicSuffixList | None = None) -> None:
        super().__init__()
        self.max_peers = max_peers
        self._psl = psl  # loaded on first use: reading the list takes a moment
        self._peers: OrderedDict[str, PeerEntry] = OrderedDict()
        self.evictions = 0
        self._idents: dict[str, tuple[str, str | None, str | None]] = {}
        # per category, the count of every peer that has one: what a scrape ranks
        self._ranked: dict[str, dict[str, int]] = {c: {} for c in CATEGORIES}

    def __len__(self) -> int:
        return len(self._peers)

    def __iter__(self) -> Iterator[PeerEntry]:
        return iter(self._peers.values())

    def get(self, key: str) -> PeerEntry | None:
        return self._peers.get(key)

    def touch(self, peer: str | None, ts: float | None) -> PeerEntry | None:
        """The entry for a peer as logged (``host[addr]:port``, ``[addr]:port`` or a bare host
        name), created if needed and marked as just seen."""
        if peer is None:
            return None
        ident = self._idents.get(peer)
        if ident is None:
            ident = _identify(peer)
            if len(self._idents) > 8192:
                self._idents.clear()
            self._idents[peer] = ident
        key, host, addr = ident
        if not key:
            return None
        now = ts if ts is not None else 0.0
        entry = self._peers.get(key)
        if entry is None:
            entry = PeerEntry(key, host, None, now, now)
            self._peers[key] = entry
            self.created(key)
            if len(self._peers) > self.max_peers:
                old, gone = self._peers.popitem(last=False)
                self._unrank(gone)
                self.evictions += 1
                self.dropped(old)
        else:
            self._peers.move_to_end(key)
            if now > entry.last_seen:
                entry.last_seen = now
        if addr is not None and addr not in entry.addrs:
            if len(entry.addrs) >= _MAX_ADDRS:
                entry.addrs.pop(0)
            entry.addrs.append(addr)
        self.dirty.add(key)
        return entry

    def domain_of(self, entry: PeerEntry) -> str | None:
        """The peer's registrable domain (``mx2.example.co.uk`` -> ``example.co.uk``), computed
        on first use: the public suffix list is loaded only when someone asks."""
        if entry.domain is None:
            entry.domain = self._domain(entry.host) or ""
        return entry.domain or None

    def row(self, entry: PeerEntry) -> dict[str, Any]:
        """The peer as the JSON API shows it."""
        self.domain_of(entry)
        return entry.to_json()

    def _domain(self, host: str | None) -> str | None:
        if not host or _is_address(host) or "." not in host:
            return None
        if self._psl is None:
            self._psl = PublicSuffixList()
        try:
            return self._psl.privatesuffix(host.lower()) or host.lower()
        except (ValueError, UnicodeError):
            return None

    def count(self, entry: PeerEntry, category: str) -> None:
        """One more event of a category for a peer, just touched (at its ``last_seen``)."""
        n = entry.counts[category] = entry.counts.get(category, 0) + 1
        entry.category_last_seen[category] = entry.last_seen
        self._ranked[category][entry.key] = n

    def _unrank(self, entry: PeerEntry) -> None:
        for category in entry.counts:
            self._ranked[category].pop(entry.key, None)

    def top(self, n: int) -> dict[str, tuple[list[PeerEntry], int, int]]:
        """Per category: the ``n`` peers with most events of it (the most recently seen first
        among equals), the sum of the others' events, and how many peers have any."""
        out = {}
        peers = self._peers
        for category, ranked in self._ranked.items():
            if n <= 0:
                keys = []
            elif len(ranked) <= n:
                keys = list(ranked)
            else:
                # the n-th largest count, then every peer at or above it: a C-speed pass
                floor = heapq.nlargest(n, ranked.values())[-1]
                keys = [k for k, c in ranked.items() if c >= floor]
            candidates = [peers[k] for k in keys]
            candidates.sort(key=lambda p: (p.counts[category], p.last_seen), reverse=True)
            best = candidates[:n]
            rest = sum(ranked.values()) - sum(p.counts[category] for p in best)
            out[category] = (best, rest, len(ranked))
        return out

    def query(
        self,
        *,
        category: str | None = None,
        since: float | None = None,
        sort: str = "count",
        limit: int = 100,
    ) -> list[PeerEntry]:
        """Peers with events of ``category`` (any peer when None), and of them those seen
        since ``since``: with a category, seen with an event of that category (and sorted by
        when they last were, for ``last_seen``)."""
        rows = [
            p
            for p in self._peers.values()
            if (category is None or p.counts.get(category))
            and (since is None or p.seen(category) >= since)
        ]
        if sort == "last_seen":
            rows.sort(key=lambda p: p.seen(category), reverse=True)
        elif sort == "peer":
            rows.sort(key=lambda p: p.key)
        elif category is not None:
            rows.sort(key=lambda p: (p.counts.get(category, 0), p.seen(category)), reverse=True)
        else:
            rows.sort(key=lambda p: (sum(p.counts.values()), p.last_seen), reverse=True)
        return rows[:limit]

    def load(self, rows: list[dict[str, Any]]) -> None:
        """Restore from the checkpoint, oldest-seen first."""
        self._peers.clear()
        for ranked in self._ranked.values():
            ranked.clear()
        for row in sorted(rows, key=lambda r: float(r["last_seen"])):
            entry = PeerEntry.from_json(row)
            self._peers[entry.key] = entry
        self.saved()
        while len(self._peers) > self.max_peers:  # a smaller max_peers than when saved
            self.dropped(self._peers.popitem(last=False)[0])
        for entry in self._peers.values():
            for category, n in entry.counts.items():
                if n and category in self._ranked:
                    self._ranked[category][entry.key] = n
