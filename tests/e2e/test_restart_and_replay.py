"""After a restart in the middle of the traffic, tlslogd's durable totals still equal what
Postfix logged: a replay of the final maillog by ``tlslogd report``, counts taken from the log
itself and from the sink's log, and the sum of both processes' counters in Prometheus."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.e2e.conftest import Run
from tests.e2e.harness import PEERS, tlslogd_json

pytestmark = pytest.mark.e2e

SMTP_CLIENT = re.compile(r" postfix/smtp\[\d+\]: ")
RECEIVED = re.compile(r" postfix/(?:\w+/)?smtpd\[\d+\]: ([0-9A-F]+): client=")
QUEUED = re.compile(r" postfix/qmgr\[\d+\]: ([0-9A-F]+): from=")
SENT = re.compile(r" postfix/smtp\[\d+\]: [0-9A-F]+: to=<[^>]*>, relay=(\S+?), .* status=sent ")


def report(run: Run) -> dict[str, Any]:
    return tlslogd_json("report", "--local-networks", "", str(run.maillog))


@pytest.fixture(scope="module")
def replay(run: Run) -> dict[str, Any]:
    return report(run)


def test_sigterm_stops_tlslogd_cleanly(run: Run) -> None:
    assert run.restart_exit_code == 0


def test_prometheus_saw_every_line_of_both_processes(run: Run) -> None:
    lines = len(run.log_lines())
    assert 0 < run.first_process_lines < lines
    assert run.wait_total("tlslogd_log_lines_total", lines) == lines
    assert run.total('tlslogd_log_lines_total{result="unrecognised"}') == 0


def test_durable_totals_equal_a_replay_of_the_final_maillog(
    run: Run, replay: dict[str, Any]
) -> None:
    assert run.tlslogd.summary()["totals"] == replay["totals"]
    assert report(run) == replay  # a replay is deterministic


def test_durable_censuses_equal_a_replay_of_the_final_maillog(
    run: Run, replay: dict[str, Any]
) -> None:
    durable = run.tlslogd.summary()["durable"]
    assert durable["protocols"] == {
        direction: counts
        for direction, counts in replay["handshakes"]["protocol"].items()
        if counts
    }
    assert durable["failure_reasons"] == {
        direction: counts for direction, counts in replay["failures"].items() if counts
    }


def test_durable_period_equals_a_replay_of_the_final_maillog(
    run: Run, replay: dict[str, Any]
) -> None:
    durable = run.tlslogd.summary()["durable"]
    period = replay["period"]
    assert (durable["first_event"], durable["last_event"]) == (period["first"], period["last"])


def test_durable_totals_match_counts_taken_from_the_maillog(run: Run) -> None:
    lines = run.log_lines()
    client = [line for line in lines if SMTP_CLIENT.search(line)]
    relays = [m.group(1) for line in client if (m := SENT.search(line))]
    plaintext = {run.lab.relay(kind) for kind in ("plain", "offering", "fallback", "cached")}
    queued = {m.group(1) for line in lines if (m := RECEIVED.search(line))}
    # what qmgr took in: not the held session's first message, which main's header_checks refused
    active = {m.group(1) for line in lines if (m := QUEUED.search(line))}
    assert len(queued - active) == 1
    totals = run.tlslogd.summary()["totals"]
    from_log = {
        "lines": len(lines),
        "tls_handshakes_outbound": sum("TLS connection established to " in x for x in client),
        "tls_handshakes_inbound": sum("TLS connection established from " in x for x in lines),
        "starttls_offered": sum("Host offered STARTTLS: [" in x for x in client),
        "sessions": sum(" disconnect from " in x for x in lines),
        "messages_received": len(queued & active),
        "deliveries": sum(", relay=" in x and " to=<" in x for x in client),
        "plaintext_deliveries": sum(r in plaintext for r in relays),
        "tls_deliveries": sum(r not in plaintext for r in relays),
    }
    assert {key: totals[key] for key in from_log} == from_log
    plain = run.lab.relay("plain")
    assert run.peers()[PEERS["plain"].addr]["counts"]["plaintext_out"] == relays.count(plain)


def test_the_sink_logged_as_many_handshakes_as_main(run: Run) -> None:
    sink = run.lab.sink.maillog.read_text().splitlines()
    accepted = sum("TLS connection established from " in line for line in sink)
    assert run.tlslogd.summary()["totals"]["tls_handshakes_outbound"] == accepted


@pytest.mark.parametrize(
    ("total", "expr"),
    [
        ("lines", "tlslogd_log_lines_total"),
        ("tls_handshakes_inbound", 'tlslogd_tls_handshakes_total{direction="inbound"}'),
        ("tls_handshakes_outbound", 'tlslogd_tls_handshakes_total{direction="outbound"}'),
        ("starttls_offered", "tlslogd_starttls_offered_total"),
        ("deliveries", "tlslogd_deliveries_total"),
        ("tls_deliveries", 'tlslogd_deliveries_total{status="sent",tls="yes"}'),
        ("plaintext_deliveries", 'tlslogd_deliveries_total{status="sent",tls="no",scope="remote"}'),
        (
            "offered_plaintext_deliveries",
            'tlslogd_offered_plaintext_deliveries_total{status="sent"}',
        ),
        ("tls_failures", "tlslogd_tls_failures_total"),
        ("sessions", "tlslogd_sessions_total"),
        ("tls_sessions", 'tlslogd_sessions_total{starttls=~"used|implicit"}'),
        ("plaintext_sessions", 'tlslogd_sessions_total{starttls="not_used"}'),
        ("messages_received", "tlslogd_received_messages_total"),
        ("tls_messages_received", 'tlslogd_received_messages_total{tls="yes"}'),
    ],
)
def test_both_processes_counters_add_up_to_the_durable_total(
    run: Run, total: str, expr: str
) -> None:
    expected = run.tlslogd.summary()["totals"][total]
    assert run.wait_total(expr, expected) == expected
