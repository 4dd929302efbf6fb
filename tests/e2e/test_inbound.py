"""Inbound: what main's smtpd, submission and smtps listeners logged, as Prometheus sees it.

Message names refer to ``conftest.PHASE_1``, ``WHILE_STOPPED`` and ``PHASE_2``; every client
connects from 127.0.0.1 unless it says IPv6 (::1). Counts are over the whole run
(:meth:`Run.total`), across the restart of tlslogd.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.e2e.conftest import Run
from tests.e2e.harness import REJECTED_SUBJECT

pytestmark = pytest.mark.e2e

SMTPD = 'program="postfix/smtpd"'
SUBMISSION = 'program="postfix/submission/smtpd"'
SMTPS = 'program="postfix/smtps/smtpd"'


def test_starttls_handshakes_are_counted_by_protocol(run: Run) -> None:
    handshakes = f'tlslogd_tls_handshakes_total{{direction="inbound",{SMTPD},protocol="%s"}}'
    # in-tls12 asks for TLSv1.2
    assert run.wait_total(handshakes % "TLSv1.2", 1) == 1
    # in-tls13, policy-none, the held session, tls-fallback, in-ipv6-tls, policy-none-again,
    # verify-fails and the four reuse-N
    assert run.wait_total(handshakes % "TLSv1.3", 11) == 11
    assert run.total(f'tlslogd_tls_handshakes_total{{direction="inbound",{SMTPD}}}') == 12


def test_plaintext_sessions_are_counted_as_starttls_not_used(run: Run) -> None:
    # in-plaintext, encrypt-not-offered, plaintext-refused and in-ipv6-plaintext spoke EHLO,
    # never STARTTLS
    assert run.wait_total('tlslogd_sessions_total{starttls="not_used"}', 4) == 4
    assert run.wait_total('tlslogd_received_messages_total{tls="no"}', 4) == 4
    clients = run.peers("inbound_no_starttls")
    assert {p: e["counts"]["inbound_no_starttls"] for p, e in clients.items()} == {
        "127.0.0.1": 3,
        "::1": 1,
    }


def test_tlsv1_and_tlsv1_1_clients_are_refused_for_the_protocol(run: Run) -> None:
    failures = 'tlslogd_tls_failures_total{direction="inbound",reason="protocol"}'
    assert run.wait_total(failures, 2) == 2
    assert run.wait_total(f'tlslogd_sessions_total{{{SMTPD},starttls="failed"}}', 2) == 2
    # refused, so never a legacy handshake
    assert run.total('tlslogd_tls_handshakes_total{protocol=~"SSLv3|TLSv1|TLSv1[.]1"}') == 0
    assert run.peers("tls_failure")["127.0.0.1"]["failure_reasons"] == {"protocol": 2}
    assert run.peers("legacy_protocol") == {}


def test_submission_sessions_use_starttls_and_authenticate(run: Run) -> None:
    assert run.wait_total(f'tlslogd_sessions_total{{{SUBMISSION},starttls="used"}}', 1) == 1
    assert run.total(f'tlslogd_sessions_total{{{SUBMISSION},starttls!="used"}}') == 0
    assert run.wait_total(f'tlslogd_received_messages_total{{{SUBMISSION},tls="yes"}}', 1) == 1
    authenticated = [line for line in run.log_lines() if "/submission/smtpd[" in line]
    assert any("sasl_method=PLAIN" in line for line in authenticated)


def test_smtps_sessions_are_implicit_tls(run: Run) -> None:
    assert run.wait_total(f'tlslogd_sessions_total{{{SMTPS},starttls="implicit"}}', 1) == 1
    assert run.total(f'tlslogd_sessions_total{{{SMTPS},starttls!="implicit"}}') == 0
    assert run.wait_total(f'tlslogd_tls_handshakes_total{{direction="inbound",{SMTPS}}}', 1) == 1
    assert run.wait_total(f'tlslogd_received_messages_total{{{SMTPS},tls="yes"}}', 1) == 1


def test_ipv6_clients_are_told_apart(run: Run) -> None:
    # in-ipv6-tls used STARTTLS, in-ipv6-plaintext did not
    gauge = 'tlslogd_top_peer_events{category="inbound_no_starttls",peer="::1"}'
    assert run.wait_now(gauge, 1) == 1
    client = run.peers()["::1"]
    assert (client["sessions"], client["tls_sessions"]) == (2, 1)


def test_a_session_open_across_the_restart_keeps_its_tls(run: Run) -> None:
    # The held session's handshake and queue ID were logged before the restart, its disconnect
    # after: the second process must still know it used STARTTLS.
    used_now = f'tlslogd_sessions_total{{{SMTPD},starttls="used"}}'
    # held session, tls-fallback, in-ipv6-tls, policy-none-again, verify-fails, reuse-N
    assert run.wait_now(used_now, 9) == 9
    assert run.total("tlslogd_sessions_total") == 20
    assert run.total('tlslogd_sessions_total{starttls="unknown"}') == 0
    assert run.wait_total('tlslogd_received_messages_total{tls="yes"}', 14) == 14


def test_a_message_rejected_at_the_end_of_data_is_not_received(run: Run) -> None:
    # the held session's first message: smtpd logged its queue ID, then main's header_checks
    # refused it (cleanup's "reject: header"), and the session went on with the next one
    lines = run.log_lines()
    rejected = [line for line in lines if f"reject: header Subject: {REJECTED_SUBJECT}" in line]
    assert len(rejected) == 1
    queue_id = rejected[0].split(": reject: ", 1)[0].rsplit(" ", 1)[1]
    parsed = subprocess.run(
        [sys.executable, "-m", "tlslogd", "parse", str(run.maillog)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    records = [json.loads(x) for x in parsed.splitlines()]
    received = {r["queue_id"]: r for r in records if r["kind"] == "message_received"}
    assert (received[queue_id]["tls"], received[queue_id]["accepted"]) == ("yes", False)
    assert [r["queue_id"] for r in records if r["kind"] == "message_rejected"] == [queue_id]
    queued = sum(" client=" in line and "/smtpd[" in line for line in lines)
    assert run.wait_total("tlslogd_received_messages_total", queued - 1) == queued - 1
