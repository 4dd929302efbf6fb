"""Per-destination evidence: how mail to each recipient domain actually travelled, day by day.

``tlslogd advise`` turns it into TLS policy proposals. One entry per recipient domain (bounded,
least recently seen evicted), with a small counter row per day so any window of the last
``retention_days`` can be judged, the relay names seen (for a ``match=``), and the protocols.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tlslogd.changes import ChangeTracking

# The columns of a day's row.
DELIVERIES = 0  # delivery attempts over a connection (any status)
SENT = 1
TLS = 2  # sent over TLS
PLAINTEXT = 3  # sent without TLS
UNKNOWN = 4  # sent, TLS unknown (tlslogd was not reading when the connection started)
STRONG = 5  # sent over TLS with a Trusted or Verified server certificate
FAILURES = 6  # deliveries after a failed TLS attempt (deferred, bounced, or a plaintext retry)
OFFERED = 7  # sent in plaintext although the server offered STARTTLS
LEGACY = 8  # sent over TLSv1/TLSv1.1/SSLv3
FALLBACK = 9  # sent in plaintext after a failed TLS attempt (opportunistic TLS falling back)
COLUMNS = 10

DAY = 86400.0
_MAX_RELAYS = 8
_MAX_KEY = 255


def _in(day: int, since: float | None, until: float | None) -> bool:
    """Whether day number ``day`` overlaps [since, until)."""
    return (since is None or (day + 1) * DAY > since) and (until is None or day * DAY < until)


@dataclass(slots=True)
class Destination:
    domain: str
    first_seen: float
    last_seen: float
    days: dict[int, list[int]] = field(default_factory=dict)  # day number -> row
    # relay host name, or "[addr]:port" for an IP-literal next hop -> last day seen
    relays: dict[str, int] = field(default_factory=dict)
    protocols: dict[str, int] = field(default_factory=dict)  # protocol -> TLS deliveries
    trust: dict[str, int] = field(default_factory=dict)  # trust level -> TLS deliveries

    def window(self, since: float | None, until: float | None) -> list[int]:
        """Column sums over the days that overlap [since, until) (whole days: the rows are
        daily)."""
        total = [0] * COLUMNS
        for day, row in self.days.items():
            if _in(day, since, until):
                for i, value in enumerate(row):
                    total[i] += value
        return total

    def active_days(self, since: float | None, until: float | None) -> list[int]:
        return sorted(d for d, row in self.days.items() if row[DELIVERIES] and _in(d, since, until))

    def to_json(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "days": {str(d): row for d, row in self.days.items()},
            "relays": dict(self.relays),
            "protocols": dict(self.protocols),
            "trust": dict(self.trust),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Destination:
        return cls(
            domain=data["domain"],
            first_seen=float(data["first_seen"]),
            last_seen=float(data["last_seen"]),
            days={int(d): _row(row) for d, row in data.get("days", {}).items()},
            relays={str(k): int(v) for k, v in data.get("relays", {}).items()},
            protocols={str(k): int(v) for k, v in data.get("protocols", {}).items()},
            trust={str(k): int(v) for k, v in data.get("trust", {}).items()},
        )


def _row(saved: list[Any]) -> list[int]:
    """A saved daily row; one saved before the FALLBACK column existed gets the estimate the
    advice used then: every plaintext delivery to a server offering STARTTLS, up to the
    number of failures, followed a failed attempt."""
    row = [int(v) for v in saved][:COLUMNS]
    if len(row) <= FALLBACK:
        row += [0] * (COLUMNS - len(row))
        row[FALLBACK] = min(row[OFFERED], row[FAILURES])
    return row


class DestinationTable(ChangeTracking):
    """Destinations by recipient domain, least recently seen first, with what the next
    checkpoint must write and delete (:class:`ChangeTracking`)."""

    def __init__(self, max_destinations: int = 10_000, retention_days: int = 90) -> None:
        super().__init__()
        self.max_destinations = max_destinations
        self.retention_days = retention_days
        self._table: OrderedDict[str, Destination] = OrderedDict()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._table)

    def __iter__(self) -> Iterator[Destination]:
        return iter(self._table.values())

    def get(self, domain: str) -> Destination | None:
        return self._table.get(domain)

    def record(
        self,
        recipient: str,
        relay_host: str | None,
        ts: float | None,
        *,
        status: str,
        tls: str,
        offered: bool,
        failure: bool,
        trust: str | None,
        protocol: str | None,
        legacy: bool,
    ) -> None:
        """Count one delivery attempt to ``recipient`` (an address; its domain is the key)."""
        domain = recipient.rpartition("@")[2].strip().lower().rstrip(".")[:_MAX_KEY]
        if not domain or ts is None:
            return
        entry = self._table.get(domain)
        if entry is None:
            entry = Destination(domain, ts, ts)
            self._table[domain] = entry
            self.created(domain)
            if len(self._table) > self.max_destinations:
                old, _ = self._table.popitem(last=False)
                self.evictions += 1
                self.dropped(old)
        else:
            self._table.move_to_end(domain)
            entry.last_seen = max(entry.last_seen, ts)
        day = int(ts // DAY)
        row = entry.days.get(day)
        if row is None:
            row = entry.days[day] = [0] * COLUMNS
            oldest = day - self.retention_days
            for old_day in [d for d in entry.days if d <= oldest]:
                del entry.days[old_day]
        row[DELIVERIES] += 1
        if failure:
            row[FAILURES] += 1
        if status == "sent":
            row[SENT] += 1
            if tls == "yes":
                row[TLS] += 1
                if trust in ("trusted", "verified"):
                    row[STRONG] += 1
                if legacy:
                    row[LEGACY] += 1
                if protocol:
                    entry.protocols[protocol] = entry.protocols.get(protocol, 0) + 1
                if trust:
                    entry.trust[trust] = entry.trust.get(trust, 0) + 1
            elif tls == "no":
                row[PLAINTEXT] += 1
                if offered:
                    row[OFFERED] += 1
                if failure:
                    row[FALLBACK] += 1
            else:
                row[UNKNOWN] += 1
        if relay_host:
            relays = entry.relays
            if relay_host not in relays and len(relays) >= _MAX_RELAYS:
                del relays[min(relays, key=lambda k: relays[k])]
            relays[relay_host] = day
        self.dirty.add(domain)

    def load(self, rows: list[dict[str, Any]]) -> None:
        self._table.clear()
        for row in sorted(rows, key=lambda r: float(r["last_seen"])):
            entry = Destination.from_json(row)
            self._table[entry.domain] = entry
        self.saved()
        while len(self._table) > self.max_destinations:  # a smaller cap than when saved
            self.dropped(self._table.popitem(last=False)[0])
