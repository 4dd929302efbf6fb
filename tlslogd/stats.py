"""Aggregation: counters keyed by small tuples of label values, durable totals, the peer table.

``Stats.add`` takes the correlator's outcomes. The counters are what ``/metrics`` shows (they
start at zero in every process, as Prometheus expects, with every series the previous process
exported already there at zero); ``totals`` and the peer table are durable and are saved with
every checkpoint. Most label values come from log text that a remote peer or a local user can
influence (a crafted cipher or host name), so each label keeps at most ``label_cap`` distinct
values, all families together at most ``MAX_SERIES`` series, and the rest is folded into
``other``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tlslogd.destinations import DestinationTable
from tlslogd.events import (
    INBOUND,
    LEGACY_PROTOCOLS,
    Delivery,
    Event,
    MessageReceived,
    SessionEnd,
    StarttlsOffered,
    TlsEstablished,
    TlsFailure,
    split_peer,
)
from tlslogd.peers import PeerTable, tally

OTHER = "other"

# Label names of each counter family, in key order (see metrics.METRICS).
FAMILIES: dict[str, tuple[str, ...]] = {
    "handshakes": (
        "direction",
        "service",
        "program",
        "trust",
        "protocol",
        "cipher",
        "key_exchange",
    ),
    "failures": ("direction", "service", "program", "reason"),
    "offered": ("service", "program"),
    "deliveries": ("service", "program", "status", "tls", "scope"),
    "offered_plaintext": ("service", "program", "status"),
    "tls_held": ("service", "program", "status", "reason"),
    "sessions": ("direction", "service", "program", "starttls", "scope"),
    "received": ("service", "program", "tls", "scope"),
}

TOTALS = (
    "lines",
    "unrecognised_lines",
    "events",
    "tls_handshakes",
    "tls_handshakes_inbound",
    "tls_handshakes_outbound",
    "legacy_protocol_handshakes",
    "starttls_offered",
    "deliveries",
    "tls_deliveries",
    "plaintext_deliveries",
    "local_plaintext_deliveries",
    "unknown_tls_deliveries",
    "offered_plaintext_deliveries",
    "tls_held_deliveries",
    "tls_failures",
    "sessions",
    "tls_sessions",
    "plaintext_sessions",
    "local_sessions",
    "messages_received",
    "tls_messages_received",
    "local_messages_received",
    "messages_not_received",
)

_KEY_CACHE_MAX = 20_000

# Labels whose values come from a closed set tlslogd defines; every other label holds log text.
_CLOSED_LABELS = frozenset(("direction", "tls", "scope", "starttls", "reason"))
# At most this many series in all counter families together (about 20 ms of /metrics). Each
# label keeps at most ``label_cap`` values, but their combinations could still multiply: past
# this, a new combination has its log-text labels folded into ``other``.
MAX_SERIES = 2000
# A series is exported (at 0 after a restart) while it counted something within this much log
# time: a series that vanished and came back at 1 would hide that first increase.
SERIES_RETENTION_SECONDS = 30 * 86400


class LabelCap:
    """At most ``cap`` distinct values per label name; the rest become ``other``."""

    def __init__(self, cap: int = 64) -> None:
        self.cap = cap
        self._seen: dict[str, set[str]] = {}
        self.folded: dict[str, int] = {}

    def __call__(self, label: str, value: str) -> str:
        seen = self._seen.get(label)
        if seen is None:
            seen = self._seen[label] = set()
        if value in seen:
            return value
        if len(seen) < self.cap:
            seen.add(value)
            return value
        self.folded[label] = self.folded.get(label, 0) + 1
        return OTHER

    def admit(self, label: str, value: str) -> None:
        """A value already counted under its label (restored from a checkpoint): it takes its
        place under the cap."""
        self._seen.setdefault(label, set()).add(value)

    def fold(self, label: str) -> str:
        """A value of ``label`` folded for another reason than its own (too many series)."""
        self._seen.setdefault(label, set())
        self.folded[label] = self.folded.get(label, 0) + 1
        return OTHER

    def folded_counts(self) -> dict[str, int]:
        """Folded values per capped label, 0 for those not folded yet: a counter that exists
        from the label's first value on, so rate() and alerts see its first increase."""
        return {label: self.folded.get(label, 0) for label in self._seen}


class Stats:
    """Everything tlslogd counts. Pure: no I/O, no clock; snapshots are plain data."""

    def __init__(
        self,
        *,
        peers: PeerTable | None = None,
        destinations: DestinationTable | None = None,
        label_cap: int = 64,
    ) -> None:
        self.cap = LabelCap(label_cap)
        self.counters: dict[str, dict[tuple[str, ...], int]] = {f: {} for f in FAMILIES}
        # the counters of earlier processes, from the checkpoint: /metrics starts from zero (a
        # counter's reset), the summaries and the status page go on from where they were
        self.earlier: dict[str, dict[tuple[str, ...], int]] = {f: {} for f in FAMILIES}
        self._keys: dict[str, dict[tuple[str, ...], tuple[str, ...]]] = {f: {} for f in FAMILIES}
        self._series = 0  # series in all counter families
        # log time a restored series last counted something (see SERIES_RETENTION_SECONDS)
        self._counted_at: dict[str, dict[tuple[str, ...], float]] = {f: {} for f in FAMILIES}
        self.lines = {"event": 0, "ignored": 0, "unrecognised": 0}
        self.totals: dict[str, int] = dict.fromkeys(TOTALS, 0)
        self.since: float | None = None  # when the durable totals started (wall clock)
        self.last_event_ts: float | None = None
        self.first_event_ts: float | None = None
        # durable censuses: direction -> protocol -> handshakes, direction -> reason -> failures
        self.protocols: dict[str, dict[str, int]] = {}
        self.reasons: dict[str, dict[str, int]] = {}
        self.peers = peers if peers is not None else PeerTable()
        self.destinations = destinations if destinations is not None else DestinationTable()
        self._dispatch: dict[type[Event], Callable[[Any], None]] = {
            TlsEstablished: self._handshake,
            Delivery: self._delivery,
            SessionEnd: self._session,
            MessageReceived: self._received,
            StarttlsOffered: self._offered,
            TlsFailure: self._failure,
        }

    # -- input -----------------------------------------------------------------------------------

    def add_lines(self, total: int, events: int, unrecognised: int) -> None:
        """Count a chunk's lines by what became of them."""
        self.lines["event"] += events
        self.lines["unrecognised"] += unrecognised
        self.lines["ignored"] += total - events - unrecognised
        self.totals["lines"] += total
        self.totals["events"] += events
        self.totals["unrecognised_lines"] += unrecognised

    def saw(self, first: float | None, last: float | None) -> None:
        """The log period read so far grows by these log times (a chunk's first and last
        events; with a report's window, each counted outcome's)."""
        if first is not None and (self.first_event_ts is None or first < self.first_event_ts):
            self.first_event_ts = first  # files read out of order (report) extend it backwards
        if last is not None and (self.last_event_ts is None or last > self.last_event_ts):
            self.last_event_ts = last

    def add(self, outcome: Event) -> None:
        handler = self._dispatch.get(type(outcome))
        if handler is not None:
            handler(outcome)

    def _count(self, family: str, raw: tuple[str, ...]) -> tuple[str, ...]:
        keys = self._keys[family]
        key = keys.get(raw)
        if key is None:
            cap = self.cap
            key = tuple(
                cap(label, value) for label, value in zip(FAMILIES[family], raw, strict=True)
            )
            if key not in self.counters[family]:
                if self._series >= MAX_SERIES:
                    key = tuple(
                        value if label in _CLOSED_LABELS or value == OTHER else cap.fold(label)
                        for label, value in zip(FAMILIES[family], key, strict=True)
                    )
                if key not in self.counters[family]:
                    self._series += 1
            if len(keys) < _KEY_CACHE_MAX:
                keys[raw] = key
        counter = self.counters[family]
        counter[key] = counter.get(key, 0) + 1
        return key

    def _handshake(self, ev: TlsEstablished) -> None:
        key = self._count(
            "handshakes",
            (
                ev.direction,
                ev.service,
                ev.program,
                ev.trust,
                ev.protocol,
                ev.cipher,
                ev.key_exchange or "",
            ),
        )
        totals = self.totals
        totals["tls_handshakes"] += 1
        totals[
            "tls_handshakes_inbound" if ev.direction == INBOUND else "tls_handshakes_outbound"
        ] += 1
        census = self.protocols.setdefault(ev.direction, {})
        census[key[4]] = census.get(key[4], 0) + 1  # the protocol, capped like the label
        if ev.protocol in LEGACY_PROTOCOLS:
            totals["legacy_protocol_handshakes"] += 1
            peer = self.peers.touch(ev.peer, ev.ts)
            if peer is not None:
                self.peers.count(peer, "legacy_protocol")
                peer.protocols = tally(peer.protocols, ev.protocol)
                peer.legacy_directions = tally(peer.legacy_directions, ev.direction)
                peer.last_protocol, peer.last_cipher = ev.protocol, ev.cipher

    def _delivery(self, ev: Delivery) -> None:
        status = ev.status
        sent = status == "sent"
        totals = self.totals
        if not sent and ev.reason is not None and ev.scope != "local":
            # deferred or bounced because of TLS: a mandatory policy that the server does not
            # meet, a certificate that does not verify, a server that refuses our plaintext;
            # also without a connection (relay=none): a TLS policy that cannot be used, a
            # destination suspended after TLS failures
            self._count("tls_held", (ev.service, ev.program, status, ev.reason))
            totals["tls_held_deliveries"] += 1
        if ev.scope is None:
            return  # relay=none: no connection, so no delivery attempt to count
        self._count("deliveries", (ev.service, ev.program, status, ev.tls, ev.scope))
        totals["deliveries"] += 1
        if sent:
            if ev.tls == "yes":
                totals["tls_deliveries"] += 1
            elif ev.tls == "no":
                totals[
                    "plaintext_deliveries" if ev.scope == "remote" else "local_plaintext_deliveries"
                ] += 1
            else:
                totals["unknown_tls_deliveries"] += 1
        if ev.scope != "remote":
            return  # a content filter or LMTP server may offer STARTTLS and be told not to use it
        if ev.offered:
            self._count("offered_plaintext", (ev.service, ev.program, status))
            if sent:
                totals["offered_plaintext_deliveries"] += 1
        peer = self.peers.touch(ev.relay, ev.ts)
        legacy = ev.tls_protocol in LEGACY_PROTOCOLS
        relay = None
        if peer is not None:
            port = split_peer(ev.relay)[2]
            relay = peer.host or f"[{peer.key}]" + (f":{port}" if port else "")
        self.destinations.record(
            ev.to,
            relay,
            ev.ts,
            status=status,
            tls=ev.tls,
            offered=ev.offered,
            failure=ev.tls_failed,
            trust=ev.tls_trust,
            protocol=ev.tls_protocol,
            legacy=legacy,
        )
        if peer is None:
            return
        peer.deliveries += 1
        if ev.tls == "yes":
            peer.tls_deliveries += 1
            peer.last_protocol, peer.last_cipher = ev.tls_protocol, ev.tls_cipher
        elif ev.tls == "no":
            if sent:
                self.peers.count(peer, "plaintext_out")
            if ev.offered:  # a bounce or deferral talked to it in plaintext just the same
                self.peers.count(peer, "offered_not_used")

    def _session(self, ev: SessionEnd) -> None:
        starttls = ev.starttls or "unknown"
        self._count("sessions", (INBOUND, ev.service, ev.program, starttls, ev.scope))
        totals = self.totals
        totals["sessions"] += 1
        if ev.scope != "remote":
            totals["local_sessions"] += 1
            return  # a content filter handing mail back, a local application: not a peer
        used = starttls in ("used", "implicit")
        if used:
            totals["tls_sessions"] += 1
        elif starttls == "not_used":
            totals["plaintext_sessions"] += 1
        peer = self.peers.touch(ev.peer, ev.ts)
        if peer is None:
            return
        peer.sessions += 1
        if used:
            peer.tls_sessions += 1
            if ev.tls_protocol:
                peer.last_protocol, peer.last_cipher = ev.tls_protocol, ev.tls_cipher
        elif starttls == "not_used" and ev.offered:
            self.peers.count(peer, "inbound_no_starttls")

    def _received(self, ev: MessageReceived) -> None:
        if not ev.accepted:  # refused, discarded or abandoned after smtpd logged its queue ID
            self.totals["messages_not_received"] += 1
            return
        self._count("received", (ev.service, ev.program, ev.tls, ev.scope))
        self.totals["messages_received"] += 1
        if ev.scope != "remote":
            self.totals["local_messages_received"] += 1
        elif ev.tls == "yes":
            self.totals["tls_messages_received"] += 1

    def _offered(self, ev: StarttlsOffered) -> None:
        self._count("offered", (ev.service, ev.program))
        self.totals["starttls_offered"] += 1

    def _failure(self, ev: TlsFailure) -> None:
        self._count("failures", (ev.direction, ev.service, ev.program, ev.reason))
        self.totals["tls_failures"] += 1
        reasons = self.reasons.setdefault(ev.direction, {})
        reasons[ev.reason] = reasons.get(ev.reason, 0) + 1
        peer = self.peers.touch(ev.peer, ev.ts)
        if peer is not None:
            self.peers.count(peer, "tls_failure")
            peer.reasons = tally(peer.reasons, ev.reason)

    def since_created(self, family: str) -> dict[tuple[str, ...], int]:
        """A family's counts since the state was created: earlier processes' and this one's."""
        earlier = self.earlier[family]
        if not earlier:
            return self.counters[family]
        out = dict(earlier)
        for key, n in self.counters[family].items():
            out[key] = out.get(key, 0) + n
        return out

    # -- durable state ---------------------------------------------------------------------------

    def durable(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "totals": dict(self.totals),
            "first_event_ts": self.first_event_ts,
            "last_event_ts": self.last_event_ts,
            "protocols": self.protocols,
            "reasons": self.reasons,
            "counters": {
                f: [[*key, n] for key, n in self.since_created(f).items()] for f in FAMILIES
            },
            # the series this process exports, with the log time each last counted something:
            # the next process exports them from the start
            "counted": {f: self._exported(f) for f in FAMILIES},
        }

    def _exported(self, family: str) -> list[list[Any]]:
        now = self.last_event_ts or 0.0
        counted_at = self._counted_at[family]
        return [
            [*key, now if n else counted_at.get(key, now)]
            for key, n in self.counters[family].items()
        ]

    def restore(self, data: dict[str, Any]) -> None:
        self.since = data.get("since")
        for key, value in data.get("totals", {}).items():
            if key in self.totals:
                self.totals[key] = int(value)
        self.first_event_ts = data.get("first_event_ts")
        self.last_event_ts = data.get("last_event_ts")
        self.protocols = {
            d: {k: int(v) for k, v in c.items()} for d, c in data.get("protocols", {}).items()
        }
        self.reasons = {
            d: {k: int(v) for k, v in c.items()} for d, c in data.get("reasons", {}).items()
        }
        saved = data.get("counters", {})
        for family, labels in FAMILIES.items():
            # rows of another shape (labels added since they were saved) are left out
            self.earlier[family] = {
                tuple(row[:-1]): int(row[-1])
                for row in saved.get(family, [])
                if len(row) == len(labels) + 1
            }
            # the series the last process exported are exported again from the start, at 0:
            # one that reappeared only with its next event, at 1, would hide that increase
            # from Prometheus (no drop, so no counter reset). Those that counted nothing for
            # SERIES_RETENTION_SECONDS of log time are dropped. Their values take their places
            # under the label cap, which thus holds across restarts
            counter = self.counters[family]
            counted_at = self._counted_at[family]
            oldest = (self.last_event_ts or 0.0) - SERIES_RETENTION_SECONDS
            for row in data.get("counted", {}).get(family, []):
                if len(row) == len(labels):  # before the log times were saved
                    row = [*row, self.last_event_ts or 0.0]
                if len(row) != len(labels) + 1 or float(row[-1]) < oldest:
                    continue
                key = tuple(row[:-1])
                if key not in counter:
                    counter[key] = 0
                    self._series += 1
                counted_at[key] = float(row[-1])
                for label, value in zip(labels, key, strict=True):
                    if value != OTHER:
                        self.cap.admit(label, value)
