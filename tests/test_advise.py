"""``tlslogd advise``: policy proposals from the lab log's known truth and from constructed
logs built from real line shapes (thresholds, failures, mixed relays, protocol retirement)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from publicsuffixlist import PublicSuffixList

from tests.conftest import DATA, LAB_LOG, REFERENCE_TIME, tlslogd
from tlslogd import summary
from tlslogd.advise import Advice, Thresholds, advise, render_policy_map
from tlslogd.destinations import COLUMNS, FALLBACK, Destination
from tlslogd.parse import Parser
from tlslogd.peers import PeerTable
from tlslogd.pipeline import Pipeline
from tlslogd.sessions import Correlator, LocalNetworks
from tlslogd.stats import Stats

PSL = PublicSuffixList()
DEFAULT = Thresholds()


def run_advise(text: str, thresholds: Thresholds = DEFAULT) -> Advice:
    pipe = Pipeline(
        Parser(reference_time=REFERENCE_TIME),
        Correlator(is_local=LocalNetworks(()).is_local),
        Stats(peers=PeerTable(psl=PSL)),
    )
    pipe.feed_text(text)
    stats = pipe.stats
    assert stats.last_event_ts is not None
    return advise(
        stats.destinations,
        stats.peers,
        since=stats.last_event_ts - 30 * 86400,
        until=stats.last_event_ts + 1,
        thresholds=thresholds,
        evidence=summary.handshake_evidence(stats.totals),
        psl=PSL,
    )


def by_destination(advice: Advice) -> dict[str, tuple[str, str | None]]:
    return {p.destination: (p.level, p.policy) for p in advice.proposals}


def test_lab_log_each_next_hop_gets_the_proposal_its_truth_supports() -> None:
    advice = run_advise(LAB_LOG.read_text(), Thresholds(min_deliveries=1, min_days=1))
    got = by_destination(advice)
    # verified under the lab's existing 'secure' policy: keep it
    assert got["[127.0.0.8]:2525"] == ("secure", None)
    # trusted, but an IP-literal next hop: a 'secure' candidate, 'encrypt' until the
    # certificate's name (which the log does not say) is checked
    assert got["[127.0.0.2]:2525"] == ("secure", "encrypt")
    assert got["[ipv6:::1]:2525"] == ("secure", "encrypt")  # Postfix's IPv6 next-hop syntax
    assert got["[127.0.0.5]:2525"] == ("encrypt", "encrypt")  # untrusted (self-signed)
    assert got["[127.0.0.10]:2525"] == ("encrypt", "encrypt")  # anonymous cipher
    assert got["[127.0.0.3]:2525"][0] == "may"  # never offers TLS
    assert got["[127.0.0.4]:2525"] == ("remove_none", "may")  # offered under a 'none' policy
    assert got["[127.0.0.14]:2525"][0] == "may"  # plaintext after failed handshakes
    assert got["[127.0.0.7]:2525"][0] == "may"  # TLS required but not offered
    assert advice.legacy_outbound == [] and advice.legacy_inbound == []
    fragment = render_policy_map(advice)
    assert "[127.0.0.2]:2525  encrypt" in fragment.splitlines()
    assert "#   nobody: safe to disable TLSv1 and TLSv1.1 (" in fragment.splitlines()[-1]


def test_default_thresholds_never_enforce_on_the_lab_logs_thin_evidence() -> None:
    advice = run_advise(LAB_LOG.read_text())
    assert {p.level for p in advice.proposals} == {"may", "remove_none"}


DAY = "Nov {day:2d} {hour:02d}:00:{second:02d}"


def delivery_lines(
    day: int,
    n: int,
    *,
    relay: str,
    domain: str = "example.com",
    trust: str = "Trusted",
    protocol: str = "TLSv1.3",
    tls: bool = True,
    pid: int = 3000,
) -> list[str]:
    lines = []
    for i in range(n):
        stamp = DAY.format(day=day, hour=10 + i % 10, second=i % 60)
        host = relay.split("[", 1)[0]
        if tls:
            lines.append(
                f"{stamp} mx postfix/smtp[{pid + i}]: {trust} TLS connection established to {relay}:25: {protocol} with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"
            )
        lines.append(
            f"{stamp} mx postfix/smtp[{pid + i}]: 4F{day:02d}{i:04d}A: to=<user{i}@{domain}>, relay={relay}:25, delay=0.4, delays=0.1/0/0.2/0.1, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 1234 {host})"
        )
    return lines


def build(*groups: list[str]) -> str:
    start = "Nov  1 00:00:00 mx postfix/master[1]: daemon started -- version 3.7.11, configuration /etc/postfix"
    lines = [start, *[line for group in groups for line in group]]
    lines.sort(key=lambda line: (int(line[4:6]), line[7:15]))
    return "\n".join(lines) + "\n"


def test_weeks_of_trusted_tls_to_named_relays_propose_secure_with_a_match_from_their_names() -> (
    None
):
    text = build(
        *(delivery_lines(day, 3, relay="mx1.example.com[192.0.2.25]") for day in range(2, 12)),
        *(
            delivery_lines(day, 1, relay="mx2.mail.example.com[192.0.2.26]", pid=5000)
            for day in range(3, 9)
        ),
    )
    [p] = run_advise(text).proposals
    assert (p.destination, p.level) == ("example.com", "secure")
    assert p.policy == "secure match=example.com:.example.com"
    assert p.evidence["deliveries"] == 36 and p.evidence["days"] == 10
    assert p.evidence["relays"] == ["mx1.example.com", "mx2.mail.example.com"]


def test_untrusted_certificates_propose_encrypt_not_secure() -> None:
    text = build(
        *(
            delivery_lines(
                day,
                3,
                relay="mx.example.net[198.51.100.7]",
                domain="example.net",
                trust="Untrusted",
            )
            for day in range(2, 12)
        )
    )
    [p] = run_advise(text).proposals
    assert (p.level, p.policy) == ("encrypt", "encrypt")


def test_one_plaintext_delivery_in_the_window_keeps_may() -> None:
    tls = [
        delivery_lines(day, 3, relay="mx.example.org[203.0.113.9]", domain="example.org")
        for day in range(2, 12)
    ]
    plain = delivery_lines(
        12, 1, relay="mx.example.org[203.0.113.9]", domain="example.org", tls=False, pid=9000
    )
    [p] = run_advise(build(*tls, plain)).proposals
    assert p.level == "may" and "1 in plaintext" in p.reason


def test_one_failure_in_the_window_keeps_may() -> None:
    tls = [
        delivery_lines(day, 3, relay="mx.example.org[203.0.113.9]", domain="example.org")
        for day in range(2, 12)
    ]
    failure = [
        "Nov 12 09:00:00 mx postfix/smtp[777]: SSL_connect error to mx.example.org[203.0.113.9]:25: -1",
        "Nov 12 09:00:00 mx postfix/smtp[777]: 4FFAILA: to=<z@example.org>, relay=mx.example.org[203.0.113.9]:25, delay=0.2, delays=0.1/0/0.1/0, dsn=4.7.5, status=deferred (Cannot start TLS: handshake failure)",
    ]
    [p] = run_advise(build(*tls, failure)).proposals
    assert p.level == "may" and "1 TLS failures" in p.reason


def test_a_destination_seen_on_too_few_days_keeps_may() -> None:
    [p] = run_advise(build(delivery_lines(5, 40, relay="mx.example.com[192.0.2.25]"))).proposals
    assert p.level == "may" and "over 1 day " in p.reason


def test_legacy_protocols_list_who_breaks() -> None:
    text = build(
        *(
            delivery_lines(day, 3, relay="old.example.com[192.0.2.80]", protocol="TLSv1")
            for day in range(2, 4)
        ),
        [
            "Nov  5 10:00:00 mx postfix/smtpd[4000]: connect from legacy.example.net[198.51.100.80]",
            "Nov  5 10:00:00 mx postfix/smtpd[4000]: Anonymous TLS connection established from legacy.example.net[198.51.100.80]: TLSv1.1 with cipher ECDHE-RSA-AES256-SHA (256/256 bits)",
            "Nov  5 10:00:01 mx postfix/smtpd[4000]: disconnect from legacy.example.net[198.51.100.80] ehlo=2 starttls=1 quit=1 commands=4",
        ],
    )
    advice = run_advise(text)
    assert [r["destination"] for r in advice.legacy_outbound] == ["example.com"]
    assert advice.legacy_outbound[0]["protocols"] == {"TLSv1": 6}
    assert [r["peer"] for r in advice.legacy_inbound] == ["legacy.example.net"]
    assert advice.legacy_inbound[0]["protocols"] == {"TLSv1.1": 1}


def test_advise_command_on_files_and_on_the_daemons_state_agree(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text(LAB_LOG.read_text())
    args = ["--min-deliveries", "1", "--min-days", "1", "--format", "json"]
    from_files = subprocess.run(
        [sys.executable, "-m", "tlslogd", "advise", "--local-networks", "", *args, str(log)],
        capture_output=True,
        text=True,
        check=True,
    )
    state = tmp_path / "state"
    from tests.test_daemon import Daemon

    d = Daemon(log, state, "--from-start").start()
    try:
        d.wait_lines(LAB_LOG.read_text().count("\n"))
        d.stop()
    finally:
        d.kill()
    from_state = subprocess.run(
        [sys.executable, "-m", "tlslogd", "advise", "--state-dir", str(state), *args],
        capture_output=True,
        text=True,
        check=True,
    )
    files, saved = json.loads(from_files.stdout), json.loads(from_state.stdout)
    assert files["proposals"] == saved["proposals"]
    # secure: the six lab-CA next hops (five known by address only); encrypt: .5 and .10
    assert files["candidates"] == {"secure": 6, "encrypt": 2, "remove_none": 1, "may": 6}


def test_advise_on_a_state_file_that_is_not_tlslogds_is_one_clear_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    for content in (b"random bytes, not a database" * 40, None):
        db = state / "state.db"
        db.unlink(missing_ok=True)
        if content is not None:
            db.write_bytes(content)
        else:  # a SQLite file of another program
            other = sqlite3.connect(db)
            other.execute("CREATE TABLE something (x)")
            other.commit()
            other.close()
        result = tlslogd("advise", "--state-dir", str(state))
        assert result.returncode == 2
        assert result.stderr.startswith(f"tlslogd: {db}: not a usable tlslogd state file (")
        assert "Traceback" not in result.stderr


def test_a_plaintext_retry_after_a_failed_handshake_counts_that_failure() -> None:
    """Postfix 3.10 (trixie): two attempts of one message to [127.0.99.6]:2526, each after an
    SSL_connect error; the first deferred, the second retried in plaintext and sent. Both
    attempts' TLS failed, as the report counts them, not only the deferred one."""
    log = DATA / "real" / "postfix-3.10-trixie.log"
    text = log.read_text()
    assert text.count("SSL_connect error to 127.0.99.6[127.0.99.6]:2526") == 2
    result = tlslogd("advise", "--local-networks", "", "--format=json", str(log))
    assert result.returncode == 0
    (proposal,) = [
        p for p in json.loads(result.stdout)["proposals"] if p["destination"] == "[127.0.99.6]:2526"
    ]
    assert proposal["evidence"]["tls_failures"] == 2
    assert proposal["evidence"]["offered_not_used"] == 1
    assert proposal["reason"].startswith(
        "TLS failed 2 times and Postfix fell back to plaintext once"
    )
    assert proposal["evidence"]["plaintext_fallbacks"] == 1


def test_a_server_without_starttls_is_never_over_tls_whatever_the_evidence() -> None:
    # the lab's 127.0.0.3 offers no STARTTLS: 4 deliveries, all plaintext; more mail would not
    # make it a candidate, so "too little evidence" would mislead
    result = tlslogd("advise", "--local-networks", "", str(LAB_LOG))
    assert result.returncode == 0
    line = next(x for x in result.stdout.splitlines() if "[127.0.0.3]:2525:" in x)
    assert line.endswith("never over TLS: 4 in plaintext")


def test_a_none_policy_with_failures_is_not_called_a_fallback() -> None:
    """Plaintext to a server that offered STARTTLS, under a 'none' entry, and separately some
    failed TLS attempts that were deferred: no plaintext delivery followed a failed attempt, so
    this is the 'none' entry at work, not Postfix falling back."""
    relay = "mx.example.org[203.0.113.9]"
    offered = [
        f"Nov {day:2d} 10:00:00 mx postfix/smtp[{4000 + day}]: Host offered STARTTLS: [mx.example.org]"
        for day in range(2, 5)
    ]
    plain = [
        line
        for day in range(2, 5)
        for line in delivery_lines(
            day, 1, relay=relay, domain="example.org", tls=False, pid=4000 + day
        )
    ]
    failure = [
        "Nov  5 09:00:00 mx postfix/smtp[777]: SSL_connect error to mx.example.org[203.0.113.9]:25: -1",
        "Nov  5 09:00:00 mx postfix/smtp[777]: 4FFAILA: to=<z@example.org>, relay=mx.example.org[203.0.113.9]:25, delay=0.2, delays=0.1/0/0.1/0, dsn=4.7.5, status=deferred (Cannot start TLS: handshake failure)",
    ]
    [p] = run_advise(build(offered, plain, failure)).proposals
    assert (p.level, p.policy) == ("remove_none", "may")
    assert "fell back" not in p.reason and "TLS also failed once" in p.reason
    assert (p.evidence["offered_not_used"], p.evidence["plaintext_fallbacks"]) == (3, 0)


def test_destination_rows_saved_before_the_fallback_column_keep_their_advice() -> None:
    """A state saved by an older tlslogd has 9 columns per day: the fallback count is estimated
    as before (plaintext to a server offering STARTTLS, up to the failures), so an upgrade does
    not turn 'fix the TLS failures' into 'remove the none entry'."""
    saved = {
        "domain": "example.org",
        "first_seen": 1.0,
        "last_seen": 2.0,
        "days": {"20000": [3, 1, 0, 1, 0, 0, 2, 1, 0], "20001": [2, 2, 2, 0, 0, 0, 0, 0, 0]},
    }
    entry = Destination.from_json(saved)
    assert entry.days[20000][FALLBACK] == 1 and entry.days[20001][FALLBACK] == 0
    assert all(len(row) == COLUMNS for row in entry.days.values())
    assert Destination.from_json(entry.to_json()).days == entry.days
