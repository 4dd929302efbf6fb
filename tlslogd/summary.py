"""What the three questions' answers look like as data: adoption, censuses, failures, peers.

Pure functions over :class:`~tlslogd.stats.Stats`, shared by ``tlslogd report``, the JSON API
and the status page, so all three say the same thing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from tlslogd.peers import CATEGORIES
from tlslogd.stats import Stats

CENSUS_LABELS = {"protocol": 4, "cipher": 5, "trust": 3, "key_exchange": 6}
LOGLEVEL_SETTINGS = {"inbound": "smtpd_tls_loglevel", "outbound": "smtp_tls_loglevel"}
PROTOCOL_SETTINGS = {"inbound": "smtpd_tls_protocols", "outbound": "smtp_tls_protocols"}


def iso(ts: float | None) -> str | None:
    if not ts:  # None, or 0.0: what the tables keep for lines without a log time
        return None
    return dt.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def percent(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 2) if whole else None


def adoption(stats: Stats) -> dict[str, Any]:
    """TLS adoption since the state was created (over a report's window for ``report``)."""
    sent: dict[str, int] = {"yes": 0, "no": 0, "unknown": 0}
    local_sent = local_networks = 0
    deferred = bounced = 0
    for (service, _, status, tls, scope), n in stats.since_created("deliveries").items():
        if status == "sent":
            if scope == "remote":
                sent[tls] = sent.get(tls, 0) + n
            else:
                local_sent += n
                if service != "lmtp":  # LMTP is local wherever it goes; SMTP by local_networks
                    local_networks += n
        elif status in ("deferred", "softbounce"):  # soft_bounce = yes: kept queued
            deferred += n
        elif status == "bounced":
            bounced += n
    sessions, local_sessions = _remote_by(stats.since_created("sessions"))
    received, local_received = _remote_by(stats.since_created("received"))
    offered_plain = sum(
        n
        for (_, _, status), n in stats.since_created("offered_plaintext").items()
        if status == "sent"
    )
    tls_sessions = sessions.get("used", 0) + sessions.get("implicit", 0)
    decided_sessions = tls_sessions + sessions.get("not_used", 0) + sessions.get("failed", 0)
    return {
        "outbound": {
            "sent_remote": sent,
            "sent_local": local_sent,
            "sent_local_networks": local_networks,
            "deferred": deferred,
            "bounced": bounced,
            "offered_plaintext_sent": offered_plain,
            # deferred or bounced for a TLS reason (remote servers)
            "held_by_tls": sum(stats.since_created("tls_held").values()),
            "tls_percent": percent(sent["yes"], sent["yes"] + sent["no"]),
        },
        "inbound": {
            "sessions": sessions,
            "sessions_local": local_sessions,
            "tls_session_percent": percent(tls_sessions, decided_sessions),
            "messages": received,
            "messages_local": local_received,
            "tls_message_percent": percent(
                received.get("yes", 0), received.get("yes", 0) + received.get("no", 0)
            ),
        },
    }


def _remote_by(counter: dict[tuple[str, ...], int]) -> tuple[dict[str, int], int]:
    """An inbound family (keys ending in ``outcome, scope``): remote counts by outcome, and
    the local total."""
    remote: dict[str, int] = {}
    local = 0
    for (*_, outcome, scope), n in counter.items():
        if scope == "remote":
            remote[outcome] = remote.get(outcome, 0) + n
        else:
            local += n
    return remote, local


def census(stats: Stats, label: str) -> dict[str, dict[str, int]]:
    """Handshakes by direction and one label (protocol, cipher, trust, key_exchange)."""
    index = CENSUS_LABELS[label]
    out: dict[str, dict[str, int]] = {"inbound": {}, "outbound": {}}
    for key, n in stats.since_created("handshakes").items():
        bucket = out.setdefault(key[0], {})
        value = key[index] or "(not logged)"
        bucket[value] = bucket.get(value, 0) + n
    return {d: dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))) for d, c in out.items()}


def failures(stats: Stats) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {"inbound": {}, "outbound": {}}
    for (direction, _, _, reason), n in stats.since_created("failures").items():
        bucket = out.setdefault(direction, {})
        bucket[reason] = bucket.get(reason, 0) + n
    return out


def by_program(stats: Stats) -> dict[str, dict[str, int]]:
    """Inbound sessions per syslog tag (submission vs port 25) by STARTTLS use."""
    out: dict[str, dict[str, int]] = {}
    for (_, _, program, starttls, scope), n in stats.since_created("sessions").items():
        if scope != "remote":
            continue
        bucket = out.setdefault(program, {})
        bucket[starttls] = bucket.get(starttls, 0) + n
    return out


def peers(stats: Stats, limit: int = 20) -> dict[str, list[dict[str, Any]]]:
    return {
        category: [stats.peers.row(p) for p in stats.peers.query(category=category, limit=limit)]
        for category in CATEGORIES
    }


def handshake_evidence(totals: Mapping[str, int]) -> dict[str, str]:
    """Per direction, from the durable totals: ``logged`` (handshake summaries seen),
    ``not_logged`` (traffic but not one summary: loglevel 0, Postfix's default, where nobody on
    TLSv1 cannot be told from summaries that are not written) or ``no_traffic``."""
    traffic = {
        "inbound": totals.get("sessions", 0) - totals.get("local_sessions", 0),
        "outbound": sum(
            totals.get(k, 0)
            for k in ("tls_deliveries", "plaintext_deliveries", "unknown_tls_deliveries")
        ),
    }
    return {
        d: "logged" if totals.get(f"tls_handshakes_{d}") else "not_logged" if n else "no_traffic"
        for d, n in traffic.items()
    }


def unknown_note(direction: str, unknown: int, total: int, evidence: Mapping[str, str]) -> str:
    """Why the TLS use of many deliveries (outbound) or sessions (inbound) is unknown, when they
    are a tenth or more of them and so change what the percentage means; else ''."""
    if not unknown or unknown * 10 < total:
        return ""
    what = "deliveries" if direction == "outbound" else "sessions"
    if evidence.get(direction) == "not_logged":
        why = f"no {direction} handshake is logged: set {LOGLEVEL_SETTINGS[direction]} = 1"
    else:
        why = "they began before the log does, or their Postfix instance has logged no handshake"
    return f"TLS use unknown for {unknown} of {total} {what} ({why})"


def legacy_verdict(evidence: Mapping[str, str]) -> list[str]:
    """What can be said when no peer used a legacy protocol: the directions where that is
    known, and why the others are not."""
    known = [d for d, e in evidence.items() if e == "logged"]
    out = []
    if len(known) == 2:
        out.append(
            "nobody: safe to disable TLSv1 and TLSv1.1 "
            "(smtpd_tls_protocols = >=TLSv1.2, smtp_tls_protocols = >=TLSv1.2)"
        )
    elif known:
        out.append(
            f"nobody {known[0]}: safe to disable TLSv1 and TLSv1.1 there "
            f"({PROTOCOL_SETTINGS[known[0]]} = >=TLSv1.2)"
        )
    return out + legacy_unknown(evidence)


def legacy_unknown(evidence: Mapping[str, str]) -> list[str]:
    """One sentence per direction whose legacy-protocol peers cannot be known."""
    return [
        f"{d}: cannot tell, no {d} handshake is logged (set {LOGLEVEL_SETTINGS[d]} = 1)"
        for d, e in evidence.items()
        if e == "not_logged"
    ]


LEGACY_RECENT_DAYS = 30


def legacy_recent(stats: Stats) -> dict[str, int]:
    """Peers whose last TLSv1/TLSv1.1/SSLv3 handshake is in the log's last 30 days: those a
    protocol change would break now (a client on TLSv1.3 since then would not notice); in all
    and by the direction of their legacy handshakes (a peer can be both)."""
    out = {"peers": 0, "inbound": 0, "outbound": 0}
    if stats.last_event_ts is None:
        return out
    since = stats.last_event_ts - LEGACY_RECENT_DAYS * 86400
    for peer in stats.peers.query(category="legacy_protocol", since=since, limit=10**9):
        out["peers"] += 1
        for direction in peer.legacy_directions or ():
            if direction in out:
                out[direction] += 1
    return out


def protocol_failure_peers(stats: Stats) -> int:
    """Peers whose TLS failed on the protocol version (``unsupported protocol``, ``version too
    low``): the current protocol settings may already refuse what they need, TLSv1/TLSv1.1 for
    an old client, so "who breaks" has already happened to them."""
    return sum(1 for peer in stats.peers if peer.reasons and peer.reasons.get("protocol"))


def durable(stats: Stats) -> dict[str, Any]:
    """The durable side: totals and censuses since the state was created."""
    return {
        "since": iso(stats.since),
        "first_event": iso(stats.first_event_ts),
        "last_event": iso(stats.last_event_ts),
        "totals": dict(stats.totals),
        "protocols": stats.protocols,
        "failure_reasons": stats.reasons,
    }
