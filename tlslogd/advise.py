"""``tlslogd advise``: TLS policy proposals from the log's own evidence.

For each destination, the deliveries of the window decide: ``secure`` (with a ``match=`` built
from the relay names seen) when every one of enough deliveries over enough days went over TLS
to a Trusted or Verified certificate -- for relays known only by address, whose certificate
name the log does not say, ``encrypt`` now and ``secure`` once the name is checked --,
``encrypt`` when every one went over TLS, removing a
``none`` override when the server offered STARTTLS that we did not use, and ``may`` -- with the
reason -- everywhere else. Never enforcement on thin evidence. It also lists who would break if
TLSv1 and TLSv1.1 were disabled.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from publicsuffixlist import PublicSuffixList

from tlslogd.destinations import (
    DAY,
    DELIVERIES,
    FAILURES,
    FALLBACK,
    LEGACY,
    OFFERED,
    PLAINTEXT,
    SENT,
    STRONG,
    TLS,
    UNKNOWN,
    Destination,
)
from tlslogd.peers import PeerTable
from tlslogd.summary import legacy_unknown, legacy_verdict

LEVELS = ("secure", "encrypt", "remove_none", "may")


@dataclass(slots=True)
class Thresholds:
    min_deliveries: int = 20
    min_days: int = 7


@dataclass(slots=True)
class Proposal:
    destination: str  # the smtp_tls_policy_maps key: a recipient domain, or [address]:port
    domain: str
    level: str  # secure | encrypt | remove_none | may
    policy: str | None  # the map's value now, or None to keep what is there
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Advice:
    since: float | None
    until: float | None
    thresholds: Thresholds
    proposals: list[Proposal]
    legacy_outbound: list[dict[str, Any]]
    legacy_inbound: list[dict[str, Any]]
    evidence: dict[str, str]  # summary.handshake_evidence: where handshakes are logged

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(LEVELS, 0)
        for p in self.proposals:
            out[p.level] += 1
        return out


@functools.lru_cache(maxsize=4096)  # a destination table names the same few hundred days
def _day(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts).astimezone().date().isoformat()


def _match(relays: list[str], psl: PublicSuffixList) -> str | None:
    """``match=`` from relay host names: each registrable domain and its subdomains."""
    domains = set()
    for relay in relays:
        if relay.startswith("["):
            return None
        registrable = psl.privatesuffix(relay) or relay
        domains.add(registrable)
    if not domains:
        return None
    return ":".join(f"{d}:.{d}" for d in sorted(domains))


@dataclass(slots=True)
class _Group:
    """The evidence of every recipient domain that shares one policy key (several domains
    routed to the same [address]:port next hop are one policy entry)."""

    key: str
    domains: list[str]
    row: list[int]
    days: set[int]
    relays: set[str]
    protocols: dict[str, int]
    trust: dict[str, int]


def _key(d: Destination, since: float | None) -> tuple[str, list[str]]:
    first = None if since is None else int(since // DAY)
    relays = sorted(r for r, day in d.relays.items() if first is None or day >= first)
    ip_literal = bool(relays) and all(r.startswith("[") for r in relays)
    if not (ip_literal and len(relays) == 1):
        return d.domain, relays
    address, _, port = relays[0][1:].partition("]")
    if ":" in address:  # Postfix writes an IPv6 next hop as [ipv6:address]
        return f"[ipv6:{address}]{port}", relays
    return relays[0], relays


def _groups(
    destinations: Iterable[Destination], since: float | None, until: float | None
) -> list[_Group]:
    groups: dict[str, _Group] = {}
    for d in destinations:
        row = d.window(since, until)
        if not row[DELIVERIES]:
            continue
        key, relays = _key(d, since)
        g = groups.get(key)
        if g is None:
            g = groups[key] = _Group(key, [], [0] * len(row), set(), set(), {}, {})
        g.domains.append(d.domain)
        g.row = [a + b for a, b in zip(g.row, row, strict=True)]
        g.days.update(d.active_days(since, until))
        g.relays.update(relays)
        for k, v in d.protocols.items():
            g.protocols[k] = g.protocols.get(k, 0) + v
        for k, v in d.trust.items():
            g.trust[k] = g.trust.get(k, 0) + v
    return list(groups.values())


def _propose(g: _Group, t: Thresholds, psl: PublicSuffixList) -> Proposal:
    row = g.row
    days = sorted(g.days)
    relays = sorted(g.relays)
    sent, tls = row[SENT], row[TLS]
    domain = ", ".join(sorted(g.domains))
    evidence = {
        "domains": sorted(g.domains),
        "deliveries": row[DELIVERIES],
        "sent": sent,
        "tls": tls,
        "plaintext": row[PLAINTEXT],
        "unknown": row[UNKNOWN],
        "trusted_or_verified": row[STRONG],
        "tls_failures": row[FAILURES],
        "offered_not_used": row[OFFERED],
        "plaintext_fallbacks": row[FALLBACK],
        "legacy_protocol": row[LEGACY],
        "days": len(days),
        "first_day": _day(days[0] * DAY) if days else None,
        "last_day": _day(days[-1] * DAY) if days else None,
        "relays": relays,
        "protocols": dict(g.protocols),
        "trust": dict(g.trust),
    }

    def proposal(level: str, policy: str | None, reason: str) -> Proposal:
        return Proposal(g.key, domain, level, policy, reason, evidence)

    if row[FALLBACK]:
        return proposal(
            "may",
            None,
            f"TLS failed {_times(row[FAILURES])} and Postfix fell back to plaintext "
            f"{_times(row[FALLBACK])}: fix the TLS failures first",
        )
    if row[OFFERED]:
        failed = (
            f" (TLS also failed {_times(row[FAILURES])}: tlslogd report lists why)"
            if row[FAILURES]
            else ""
        )
        return proposal(
            "remove_none",
            "may",
            f"the server offered STARTTLS {_times(row[OFFERED])} and we sent in plaintext: a "
            f"'none' entry (or smtp_tls_security_level = none) overrides TLS for it; remove "
            f"it{failed}",
        )
    if row[FAILURES] and not tls:
        return proposal(
            "may",
            None,
            f"every TLS attempt failed ({row[FAILURES]} failures, no delivery over TLS): fix "
            "them first (tlslogd report lists the failures by reason)",
        )
    if sent and not tls and row[PLAINTEXT] and not row[FAILURES]:
        # no STARTTLS in its EHLO (Postfix logs nothing else): more mail would not change that
        return proposal("may", None, f"never over TLS: {row[PLAINTEXT]} in plaintext")
    if row[DELIVERIES] < t.min_deliveries or len(days) < t.min_days:
        return proposal(
            "may",
            None,
            f"too little evidence: {_over(row[DELIVERIES], len(days))} "
            f"(enforcement needs at least {t.min_deliveries} over {t.min_days} days)",
        )
    problems = []
    if row[PLAINTEXT]:
        problems.append(f"{row[PLAINTEXT]} in plaintext")
    if row[UNKNOWN]:
        problems.append(f"{row[UNKNOWN]} with unknown TLS")
    if row[FAILURES]:
        problems.append(f"{row[FAILURES]} TLS failures")
    if problems or not sent:
        if not sent:
            why = "no delivery succeeded"
        elif not tls:
            why = "never over TLS: " + ", ".join(problems)
        else:
            why = f"mixed results: {tls} over TLS, " + ", ".join(problems)
        return proposal("may", None, why)
    trust = ", ".join(f"{k} {v}" for k, v in sorted(g.trust.items()))
    if row[STRONG] == tls:
        match = _match(relays, psl)
        if match is not None:
            return proposal(
                "secure",
                f"secure match={match}",
                f"all {_over(sent, len(days))} used TLS with a trusted certificate "
                f"({trust}); check the certificate names before enforcing",
            )
        if set(g.trust) == {"verified"}:
            return proposal(
                "secure",
                None,
                f"all {sent} deliveries were Verified: a policy already enforces certificate "
                "checks for this next hop; keep it",
            )
        return proposal(
            "secure",
            "encrypt",
            f"all {_over(sent, len(days))} used TLS with a trusted certificate "
            f"({trust}), but the relays are addresses and smtp_tls_loglevel = 1 does not log the "
            "certificate's name that 'secure' must match: enforce encryption now, then find the "
            f"name (posttls-finger -c -l secure '{g.key}') and use 'secure match=NAME'",
        )
    return proposal(
        "encrypt",
        "encrypt",
        f"all {_over(sent, len(days))} used TLS, not all with a trusted "
        f"certificate ({trust}): encrypt, not secure",
    )


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def _over(deliveries: int, days: int) -> str:
    """``1 delivery over 1 day``, ``12 deliveries over 3 days``."""
    return (
        f"{deliveries} {'delivery' if deliveries == 1 else 'deliveries'} over "
        f"{days} {'day' if days == 1 else 'days'}"
    )


def advise(
    destinations: Iterable[Destination],
    peers: PeerTable,
    *,
    since: float | None,
    until: float | None,
    thresholds: Thresholds,
    evidence: Mapping[str, str],
    psl: PublicSuffixList | None = None,
) -> Advice:
    psl = psl or PublicSuffixList()
    proposals = []
    legacy_out = []
    for group in _groups(destinations, since, until):
        p = _propose(group, thresholds, psl)
        proposals.append(p)
        if p.evidence["legacy_protocol"]:
            legacy_out.append(
                {
                    "destination": p.destination,
                    "domain": p.domain,
                    "deliveries": p.evidence["legacy_protocol"],
                    "protocols": {
                        k: v
                        for k, v in group.protocols.items()
                        if k in ("TLSv1", "TLSv1.1", "SSLv3")
                    },
                }
            )
    legacy_in = [
        {
            "peer": peer.key,
            "domain": peers.domain_of(peer),
            "handshakes": peer.counts["legacy_protocol"],
            "protocols": dict(peer.protocols or {}),
            "last_seen": _day(peer.last_seen),
        }
        for peer in peers.query(category="legacy_protocol", since=since, limit=len(peers))
        if peer.sessions
    ]
    order = {level: i for i, level in enumerate(LEVELS)}
    proposals.sort(key=lambda p: (order[p.level], -p.evidence["deliveries"], p.destination))
    legacy_out.sort(key=lambda r: -_count(r["deliveries"]))
    legacy_in.sort(key=lambda r: -_count(r["handshakes"]))
    return Advice(since, until, thresholds, proposals, legacy_out, legacy_in, dict(evidence))


def _count(value: Any) -> int:
    return int(value)


def _evidence_line(p: Proposal) -> str:
    e = p.evidence
    protocols = ", ".join(f"{k} {v}" for k, v in sorted(e["protocols"].items()))
    parts = [
        f"{_over(e['deliveries'], e['days'])} ({e['first_day']} to {e['last_day']})",
        f"{e['tls']}/{e['sent']} sent over TLS",
    ]
    if protocols:
        parts.append(protocols)
    if e["relays"]:
        parts.append("relays " + ", ".join(e["relays"]))
    return "; ".join(parts)


def render_policy_map(advice: Advice) -> str:
    """An ``smtp_tls_policy_maps`` fragment ready for review, each entry with its evidence."""
    t = advice.thresholds
    out = [
        "# smtp_tls_policy_maps proposals by tlslogd advise, from the deliveries of "
        f"{_day(advice.since) or 'the whole log'} to {_day(advice.until) or 'now'}.",
        f"# Enforcement needs at least {t.min_deliveries} deliveries over {t.min_days} days, "
        "every one over TLS.",
        "# Keys are next-hop destinations: a recipient domain (MX routing) or [address]:port.",
        "# Review every entry. Before enforcing 'secure', check the server certificate's names,",
        "# e.g. posttls-finger -c -l secure -P /etc/ssl/certs example.com",
        "",
    ]
    for p in advice.proposals:
        if p.level == "may":
            continue
        out.append(f"# {p.domain}: {p.reason}")
        out.append(f"#   {_evidence_line(p)}")
        if p.policy is None:
            out.append(f"# {p.destination}  (keep the current entry)")
        else:
            out.append(f"{p.destination}  {p.policy}")
        out.append("")
    kept = [p for p in advice.proposals if p.level == "may"]
    if kept:
        out.append(f"# Staying at 'may' ({len(kept)}):")
        for p in kept:
            out.append(f"#   {p.destination}: {p.reason}")
        out.append("")
    out.append(render_legacy(advice, prefix="# "))
    return "\n".join(out).rstrip() + "\n"


def render_legacy(advice: Advice, prefix: str = "") -> str:
    lines = [f"{prefix}Who breaks if TLSv1 and TLSv1.1 are disabled (in this window):"]
    if not advice.legacy_outbound and not advice.legacy_inbound:
        said = legacy_verdict(advice.evidence)
        lines += [f"{prefix}  {sentence}" for sentence in said or ["no TLS traffic"]]
        return "\n".join(lines)
    lines += [f"{prefix}  {sentence}" for sentence in legacy_unknown(advice.evidence)]
    for row in advice.legacy_outbound:
        protocols = ", ".join(f"{k} {v}" for k, v in row["protocols"].items())
        lines.append(
            f"{prefix}  outbound {row['destination']}: {row['deliveries']} deliveries ({protocols})"
        )
    for row in advice.legacy_inbound:
        protocols = ", ".join(f"{k} {v}" for k, v in row["protocols"].items())
        lines.append(
            f"{prefix}  inbound client {row['peer']}: {row['handshakes']} handshakes ({protocols})"
        )
    return "\n".join(lines)


def render_table(advice: Advice) -> str:
    out = [
        f"{'destination':<40} {'proposal':<12} {'deliveries':>10} {'TLS':>5} {'days':>4}  reason"
    ]
    for p in advice.proposals:
        e = p.evidence
        out.append(
            f"{p.destination[:40]:<40} {p.level:<12} {e['deliveries']:>10} {e['tls']:>5} "
            f"{e['days']:>4}  {p.reason}"
        )
    out.append("")
    out.append(render_legacy(advice))
    return "\n".join(out) + "\n"


def to_json(advice: Advice) -> str:
    data = {
        "since": _day(advice.since),
        "until": _day(advice.until),
        "thresholds": asdict(advice.thresholds),
        "candidates": advice.counts(),
        "proposals": [asdict(p) for p in advice.proposals],
        "legacy_outbound": advice.legacy_outbound,
        "legacy_inbound": advice.legacy_inbound,
        "handshake_evidence": advice.evidence,
    }
    return json.dumps(data, indent=1) + "\n"
