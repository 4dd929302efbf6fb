"""The Prometheus side: the metric contract and a collector that builds every family from the
aggregated state at scrape time."""

from __future__ import annotations

import platform
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple, Protocol

import prometheus_client.registry
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from tlslogd import __version__
from tlslogd.sessions import Correlator
from tlslogd.stats import Stats


class MetricSpec(NamedTuple):
    kind: str  # "counter" | "gauge" | "info"
    help: str
    labels: tuple[str, ...]


# The metric contract the dashboards and alert rules rely on. Counter names are given with their
# ``_total`` suffix as exposed. Every label value comes from log text, so every label is capped
# (see stats.LabelCap): values past the cap are folded into "other" and counted.
METRICS: dict[str, MetricSpec] = {
    "tlslogd_tls_handshakes_total": MetricSpec(
        "counter",
        "Completed TLS handshakes (tlsproxy client-side repeats and reused connections excluded).",
        ("direction", "service", "program", "trust", "protocol", "cipher", "key_exchange"),
    ),
    "tlslogd_tls_failures_total": MetricSpec(
        "counter",
        "Failed or refused TLS, one per failed attempt, by reason.",
        ("direction", "service", "program", "reason"),
    ),
    "tlslogd_starttls_offered_total": MetricSpec(
        "counter",
        "Remote servers that offered STARTTLS which our client did not use: a TLS policy of "
        "none, or Postfix's plaintext retry after a failed handshake.",
        ("service", "program"),
    ),
    "tlslogd_deliveries_total": MetricSpec(
        "counter",
        "Delivery attempts over a connection logged by smtp/lmtp (not relay=none), one per "
        "recipient, by status and whether they went over TLS (mail that went out in "
        'plaintext: status="sent", tls="no").',
        ("service", "program", "status", "tls", "scope"),
    ),
    "tlslogd_offered_plaintext_deliveries_total": MetricSpec(
        "counter",
        "Deliveries sent in plaintext to a server that offered STARTTLS (a TLS policy of none, "
        "or the plaintext retry after a failed handshake).",
        ("service", "program", "status"),
    ),
    "tlslogd_tls_held_deliveries_total": MetricSpec(
        "counter",
        "Deliveries to remote servers deferred or bounced because of TLS, by the failure's "
        "reason: a mandatory TLS policy the server does not meet (not_offered, certificate), a "
        "server that refuses our plaintext (rejected), our own TLS setup (engine), a TLS policy "
        "that cannot be used (policy); also those deferred without a connection (relay=none, "
        "a destination suspended after such failures).",
        ("service", "program", "status", "reason"),
    ),
    "tlslogd_sessions_total": MetricSpec(
        "counter",
        "Finished smtpd sessions by their use of STARTTLS; scope=local for clients in the local "
        "networks (content filters handing mail back, local applications).",
        ("direction", "service", "program", "starttls", "scope"),
    ),
    "tlslogd_received_messages_total": MetricSpec(
        "counter",
        "Messages received by smtpd (queued: not refused or discarded at the end of DATA), by "
        "whether their session used TLS, and its scope; counted when the session ends.",
        ("service", "program", "tls", "scope"),
    ),
    "tlslogd_log_lines_total": MetricSpec(
        "counter", "Log lines read, by what became of them.", ("result",)
    ),
    "tlslogd_log_bytes_read_total": MetricSpec("counter", "Bytes read from the log.", ()),
    "tlslogd_log_rotations_total": MetricSpec(
        "counter", "Log rotations and truncations noticed, by kind.", ("kind",)
    ),
    "tlslogd_log_read_errors_total": MetricSpec(
        "counter",
        "Failures to open or read the log, by kind; lost: rotated log files compressed while "
        "tlslogd was not running, with lines written after its last read.",
        ("error",),
    ),
    "tlslogd_label_values_folded_total": MetricSpec(
        "counter", "Label values folded into 'other' because a label reached its cap.", ("label",)
    ),
    "tlslogd_session_evictions_total": MetricSpec(
        "counter", "Session table entries dropped before their end was logged.", ("reason",)
    ),
    "tlslogd_peer_evictions_total": MetricSpec(
        "counter", "Peers dropped from the bounded peer table (least recently seen first).", ()
    ),
    "tlslogd_last_event_timestamp_seconds": MetricSpec(
        "gauge", "Log timestamp of the last event, in seconds since the epoch.", ()
    ),
    "tlslogd_last_read_timestamp_seconds": MetricSpec(
        "gauge", "Wall-clock time of the last read that returned data.", ()
    ),
    "tlslogd_log_lag_bytes": MetricSpec(
        "gauge", "Bytes written to the log that tlslogd has not read yet.", ()
    ),
    "tlslogd_source_up": MetricSpec(
        "gauge", "1 while the log source is readable and followed, else 0.", ()
    ),
    "tlslogd_checkpoint_timestamp_seconds": MetricSpec(
        "gauge", "Wall-clock time of the last durable checkpoint.", ()
    ),
    "tlslogd_sessions_active": MetricSpec(
        "gauge",
        "Entries in the session table: smtpd sessions in progress, and smtp/lmtp processes "
        "whose last connection is remembered until it expires (they log no session end).",
        (),
    ),
    "tlslogd_peers_tracked": MetricSpec("gauge", "Entries in the peer table.", ()),
    "tlslogd_peers": MetricSpec(
        "gauge",
        "Distinct peers in the peer table with at least one event of a category.",
        ("category",),
    ),
    "tlslogd_top_peer_events": MetricSpec(
        "gauge",
        "Events per peer for the top-N peers of each category since the state was created; "
        'peer="_other" sums the rest.',
        ("category", "peer", "domain"),
    ),
    "tlslogd_top_peer_legacy_handshakes": MetricSpec(
        "gauge",
        "Legacy-protocol handshakes by protocol of the top-N legacy_protocol peers since the "
        "state was created; direction is that of the peer's legacy handshakes: inbound, "
        "outbound, both, or unknown (counted before directions were recorded).",
        ("peer", "domain", "protocol", "direction"),
    ),
    "tlslogd_top_peer_tls_failures": MetricSpec(
        "gauge",
        "TLS failures by reason of the top-N tls_failure peers since the state was created.",
        ("peer", "domain", "reason"),
    ),
    "tlslogd_build_info": MetricSpec(
        "gauge", "Build information (always 1).", ("version", "python")
    ),
    "tlslogd_config_check": MetricSpec(
        "gauge",
        "Postfix TLS configuration audit: 1 for each check's current status (pass, warn, fail).",
        ("check", "status"),
    ),
    "tlslogd_policy_candidates": MetricSpec(
        "gauge",
        "Destinations for which the log's evidence supports a TLS policy level.",
        ("level",),
    ),
}


class MetricsView(Protocol):
    """What the collector reads at scrape time (the daemon implements it)."""

    stats: Stats
    correlator: Correlator
    top_peers: int

    def source_counters(self) -> dict[str, dict[str, int]]: ...

    def source_up(self) -> bool: ...

    def lag_bytes(self) -> int | None: ...

    def last_read(self) -> float | None: ...

    def checkpoint_time(self) -> float | None: ...

    def config_checks(self) -> list[tuple[str, str]]: ...

    def policy_candidates(self) -> dict[str, int]: ...


_COUNTER_FAMILIES = {
    "tlslogd_tls_handshakes_total": "handshakes",
    "tlslogd_tls_failures_total": "failures",
    "tlslogd_starttls_offered_total": "offered",
    "tlslogd_deliveries_total": "deliveries",
    "tlslogd_offered_plaintext_deliveries_total": "offered_plaintext",
    "tlslogd_tls_held_deliveries_total": "tls_held",
    "tlslogd_sessions_total": "sessions",
    "tlslogd_received_messages_total": "received",
}


class Collector(prometheus_client.registry.Collector):
    """Builds every family fresh on each scrape from the daemon's state."""

    def __init__(self, view: MetricsView) -> None:
        self.view = view

    def collect(self) -> Iterator[Metric]:
        view = self.view
        stats = view.stats
        for name, family in _COUNTER_FAMILIES.items():
            spec = METRICS[name]
            metric = CounterMetricFamily(name[: -len("_total")], spec.help, labels=spec.labels)
            for key, value in stats.counters[family].items():
                metric.add_metric(key, value)
            yield metric
        yield self._counter("tlslogd_log_lines_total", stats.lines.items())
        src = view.source_counters()
        yield self._counter(
            "tlslogd_log_bytes_read_total", [((), src.get("bytes_read", {}).get("", 0))]
        )
        rotations = {"rename": 0, "delete": 0, "truncate": 0, **src.get("rotations", {})}
        yield self._counter("tlslogd_log_rotations_total", rotations.items())
        errors = {"missing": 0, "permission": 0, "io": 0, "lost": 0, **src.get("read_errors", {})}
        yield self._counter("tlslogd_log_read_errors_total", errors.items())
        yield self._counter("tlslogd_label_values_folded_total", stats.cap.folded_counts().items())
        yield self._counter("tlslogd_session_evictions_total", view.correlator.evictions.items())
        yield self._counter("tlslogd_peer_evictions_total", [((), stats.peers.evictions)])

        yield self._gauge("tlslogd_last_event_timestamp_seconds", stats.last_event_ts)
        yield self._gauge("tlslogd_last_read_timestamp_seconds", view.last_read())
        yield self._gauge("tlslogd_log_lag_bytes", view.lag_bytes())
        yield self._gauge("tlslogd_source_up", 1 if view.source_up() else 0)
        yield self._gauge("tlslogd_checkpoint_timestamp_seconds", view.checkpoint_time())
        yield self._gauge("tlslogd_sessions_active", len(view.correlator))
        yield self._gauge("tlslogd_peers_tracked", len(stats.peers))
        yield from self._peers(stats, view.top_peers)
        info = GaugeMetricFamily(
            "tlslogd_build_info", METRICS["tlslogd_build_info"].help, labels=("version", "python")
        )
        info.add_metric((__version__, platform.python_version()), 1)
        yield info
        checks = view.config_checks()
        if checks:
            spec = METRICS["tlslogd_config_check"]
            check_family = GaugeMetricFamily("tlslogd_config_check", spec.help, labels=spec.labels)
            for check, status in checks:
                for candidate in ("pass", "warn", "fail"):
                    check_family.add_metric((check, candidate), 1 if candidate == status else 0)
            yield check_family
        candidates = view.policy_candidates()
        if candidates:
            spec = METRICS["tlslogd_policy_candidates"]
            policy = GaugeMetricFamily("tlslogd_policy_candidates", spec.help, labels=spec.labels)
            for level, count in candidates.items():
                policy.add_metric((level,), count)
            yield policy

    def _peers(self, stats: Stats, top: int) -> Iterator[Metric]:
        spec = METRICS["tlslogd_peers"]
        distinct = GaugeMetricFamily("tlslogd_peers", spec.help, labels=spec.labels)
        spec = METRICS["tlslogd_top_peer_events"]
        ranking = GaugeMetricFamily("tlslogd_top_peer_events", spec.help, labels=spec.labels)
        spec = METRICS["tlslogd_top_peer_legacy_handshakes"]
        legacy = GaugeMetricFamily(
            "tlslogd_top_peer_legacy_handshakes", spec.help, labels=spec.labels
        )
        spec = METRICS["tlslogd_top_peer_tls_failures"]
        failures = GaugeMetricFamily("tlslogd_top_peer_tls_failures", spec.help, labels=spec.labels)
        for category, (best, rest, having) in stats.peers.top(top).items():
            distinct.add_metric((category,), having)
            for peer in best:
                domain = stats.peers.domain_of(peer) or ""
                ranking.add_metric((category, peer.key, domain), peer.counts[category])
                if category == "legacy_protocol":
                    ways = peer.legacy_directions or {}
                    direction = "both" if len(ways) > 1 else next(iter(ways), "unknown")
                    for protocol, n in (peer.protocols or {}).items():
                        legacy.add_metric((peer.key, domain, protocol, direction), n)
                elif category == "tls_failure":
                    for reason, n in (peer.reasons or {}).items():
                        failures.add_metric((peer.key, domain, reason), n)
            if having > len(best):
                ranking.add_metric((category, "_other", ""), rest)
        yield distinct
        yield ranking
        yield legacy
        yield failures

    @staticmethod
    def _counter(name: str, values: Iterable[tuple[Any, int | float]]) -> CounterMetricFamily:
        spec = METRICS[name]
        metric = CounterMetricFamily(name[: -len("_total")], spec.help, labels=spec.labels)
        for key, value in values:
            metric.add_metric(key if isinstance(key, tuple) else (key,), value)
        return metric

    @staticmethod
    def _gauge(name: str, value: float | None) -> GaugeMetricFamily:
        spec = METRICS[name]
        metric = GaugeMetricFamily(name, spec.help)
        if value is not None:
            metric.add_metric((), value)
        return metric


def registry(view: MetricsView) -> CollectorRegistry:
    """A registry of tlslogd's own (never the global one) holding the collector."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(Collector(view))
    return reg
