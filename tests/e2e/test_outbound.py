"""Outbound: how main's smtp client delivered to each kind of remote server (harness.PEERS).

Message names refer to ``conftest.PHASE_1``, ``WHILE_STOPPED`` and ``PHASE_2``. Where Postfix's
timing decides how often something is logged (retries, new or reused TLS connections), the
expected count is taken from the log.
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import CACHE_BURST, REUSE_BURST, Run
from tests.e2e.harness import PEERS

pytestmark = pytest.mark.e2e


def addr(kind: str) -> str:
    return PEERS[kind].addr


def count(run: Run, *needles: str, program: str = "postfix/smtp") -> int:
    """Lines of ``program`` (main's smtp client) that contain every needle."""
    return sum(
        1
        for line in run.log_lines()
        if f" {program}[" in line and all(needle in line for needle in needles)
    )


def test_outbound_handshakes_are_counted_by_trust(run: Run) -> None:
    handshakes = 'tlslogd_tls_handshakes_total{direction="outbound",trust="%s"}'
    reuse_connections = count(run, f"TLS connection established to {run.lab.relay('reuse')}")
    verify_attempts = count(
        run, f"Untrusted TLS connection established to {run.lab.relay('verifyfail')}"
    )
    expected = {
        # in-tls12, the held session and the bounces of encrypt-not-offered, plaintext-refused
        # and verify-fails to the "tls" peer, in-ipv6-tls to [::1], and each new connection to
        # the reuse peer
        "trusted": 6 + reuse_connections,
        # in-tls13 to the self-signed peer, and every attempt of verify-fails
        "untrusted": 1 + verify_attempts,
        "verified": 1,  # submission, to a peer under "secure match="
        "anonymous": 1,  # smtps, to the TLSv1.2 peer (an ADH cipher)
    }
    seen = {trust: run.wait_total(handshakes % trust, n) for trust, n in expected.items()}
    assert seen == expected
    protocol = 'tlslogd_tls_handshakes_total{direction="outbound",protocol="TLSv1.2"}'
    assert run.total(protocol) == 1


def test_tls_deliveries_are_joined_to_their_handshakes(run: Run) -> None:
    sent = 'tlslogd_deliveries_total{status="sent",tls="yes",scope="remote"}'
    assert run.wait_total(sent, 9 + REUSE_BURST) == 9 + REUSE_BURST
    assert run.total('tlslogd_deliveries_total{tls="unknown"}') == 0
    peers = run.peers()
    seen = {
        kind: (peers[addr(kind)]["tls_deliveries"], peers[addr(kind)]["last_protocol"])
        for kind in ("tls", "selfsigned", "verified", "tls12", "v6", "reuse")
    }
    assert seen == {
        "tls": (5, "TLSv1.3"),  # in-tls12, the held session, three bounces
        "selfsigned": (1, "TLSv1.3"),
        "verified": (1, "TLSv1.3"),
        "tls12": (1, "TLSv1.2"),
        "v6": (1, "TLSv1.3"),
        "reuse": (REUSE_BURST, "TLSv1.3"),
    }


def test_reused_tls_connections_are_not_new_handshakes(run: Run) -> None:
    relay = run.lab.relay("reuse")
    new = count(run, f"TLS connection established to {relay}")
    reused = count(run, f"TLS connection reused to {relay}")
    assert reused >= 1  # back-to-back messages took the cached connection
    assert new + reused == REUSE_BURST
    # tlsproxy logs each handshake it makes for the smtp client again
    assert count(run, f"TLS connection established to {relay}", program="postfix/tlsproxy") == new
    assert run.total('tlslogd_tls_handshakes_total{service="tlsproxy"}') == 0
    peer = run.peers()[addr("reuse")]
    assert (peer["deliveries"], peer["tls_deliveries"]) == (REUSE_BURST, REUSE_BURST)


def test_delivery_to_a_server_without_starttls_is_plaintext(run: Run) -> None:
    # in-plaintext and in-ipv6-plaintext to the "plain" peer; policy-none twice and the
    # fallback to servers that offered STARTTLS; the burst to the "cached" peer
    sent = 'tlslogd_deliveries_total{status="sent",tls="no",scope="remote"}'
    assert run.wait_total(sent, 5 + CACHE_BURST) == 5 + CACHE_BURST
    plaintext = run.peers("plaintext_out")
    assert {p: e["counts"]["plaintext_out"] for p, e in plaintext.items()} == {
        addr("plain"): 2,
        addr("offering"): 2,
        addr("fallback"): 1,
        addr("cached"): CACHE_BURST,
    }
    assert plaintext[addr("plain")]["counts"]["offered_not_used"] == 0


def test_deliveries_over_a_cached_plaintext_connection_are_plaintext(run: Run) -> None:
    # Postfix caches a TLS connection only through tlsproxy, which then logs "TLS connection
    # reused": a delivery with conn_use= and no such line went over a plaintext connection
    relay = run.lab.relay("cached")
    assert count(run, f"relay={relay}, conn_use=") >= 1  # a later message took the cache
    assert count(run, f"relay={relay}, ") == CACHE_BURST
    peer = run.peers()[addr("cached")]
    assert (peer["deliveries"], peer["tls_deliveries"]) == (CACHE_BURST, 0)
    assert peer["counts"]["plaintext_out"] == CACHE_BURST
    assert run.total('tlslogd_deliveries_total{tls="unknown"}') == 0


def test_a_server_offering_starttls_under_policy_none_is_listed(run: Run) -> None:
    # policy-none, policy-none-again, the fallback's plaintext retry and plaintext-refused
    assert run.wait_total("tlslogd_starttls_offered_total", 4) == 4
    sent = 'tlslogd_offered_plaintext_deliveries_total{status="sent"}'
    assert run.wait_total(sent, 3) == 3
    bounced = 'tlslogd_offered_plaintext_deliveries_total{status="bounced"}'
    assert run.wait_total(bounced, 1) == 1
    peers = run.peers("offered_not_used")
    assert {p: e["counts"]["offered_not_used"] for p, e in peers.items()} == {
        addr("offering"): 2,
        addr("fallback"): 1,
        addr("demands"): 1,
    }
    gauge = f'tlslogd_top_peer_events{{category="offered_not_used",peer="{addr("offering")}"}}'
    assert run.wait_now(gauge, 2) == 2


def test_encrypt_policy_against_a_server_without_starttls_fails_not_offered(run: Run) -> None:
    relay = f"relay={run.lab.relay('encrypt')}"
    deferred = count(run, relay, "status=deferred (TLS is required, but was not offered")
    assert deferred >= 2  # the first attempt and at least one retry before it expired
    assert count(run, relay) == deferred  # and nothing else: never sent
    failures = 'tlslogd_tls_failures_total{direction="outbound",reason="not_offered"}'
    assert run.wait_total(failures, deferred) == deferred
    peer = run.peers()[addr("encrypt")]
    assert peer["failure_reasons"] == {"not_offered": deferred}
    assert (peer["deliveries"], peer["tls_deliveries"], peer["counts"]["plaintext_out"]) == (
        deferred,
        0,
        0,
    )


def test_plaintext_refused_by_a_server_that_requires_tls_is_a_failure(run: Run) -> None:
    # a 5xx reply: the message bounces at once
    relay = f"relay={run.lab.relay('demands')}"
    refusal = "status=bounced (host 127.0.0.13[127.0.0.13] said: 530 5.7.0 Must issue a STARTTLS"
    assert count(run, relay, refusal) == count(run, relay) == 1
    failures = 'tlslogd_tls_failures_total{direction="outbound",reason="rejected"}'
    assert run.wait_total(failures, 1) == 1
    peer = run.peers()[addr("demands")]
    assert peer["failure_reasons"] == {"rejected": 1}
    assert (peer["deliveries"], peer["tls_deliveries"], peer["counts"]["plaintext_out"]) == (
        1,
        0,
        0,
    )


def test_certificate_verification_failure_defers_after_the_handshake(run: Run) -> None:
    relay = run.lab.relay("verifyfail")
    deferred = count(run, f"relay={relay}", "status=deferred (Server certificate not verified)")
    assert deferred >= 2
    assert count(run, f"relay={relay}") == deferred  # never sent
    assert count(run, f"certificate verification failed for {relay}") == deferred
    failures = 'tlslogd_tls_failures_total{direction="outbound",reason="certificate"}'
    assert run.wait_total(failures, deferred) == deferred
    # the handshake itself succeeded: these are the only deferred deliveries that used TLS
    assert run.total('tlslogd_deliveries_total{status="deferred",tls="yes"}') == deferred
    peer = run.peers()[addr("verifyfail")]
    assert peer["failure_reasons"] == {"certificate": deferred}
    assert peer["counts"]["plaintext_out"] == 0


def test_handshake_failure_then_plaintext_fallback(run: Run) -> None:
    relay = run.lab.relay("fallback")
    attempts = count(run, f"SSL_connect error to {relay}")
    assert attempts >= 2  # the deferred first attempt, then the retry that falls back
    assert count(run, f"relay={relay}", "status=sent") == 1
    # the client asks for TLSv1.3, the server speaks TLSv1.2 at most
    failures = 'tlslogd_tls_failures_total{direction="outbound",reason="protocol"}'
    assert run.wait_total(failures, attempts) == attempts
    peer = run.peers()[addr("fallback")]
    assert peer["failure_reasons"] == {"protocol": attempts}
    assert (peer["tls_deliveries"], peer["counts"]["plaintext_out"]) == (0, 1)
    assert peer["counts"]["offered_not_used"] == 1


def test_ipv6_delivery_over_tls(run: Run) -> None:
    relay = run.lab.relay("v6")
    assert relay.startswith("::1[::1]:")
    assert count(run, f"TLS connection established to {relay}") == 1
    assert count(run, f"relay={relay}", "status=sent") == 1
    peer = run.peers()["::1"]
    assert (peer["deliveries"], peer["tls_deliveries"], peer["last_protocol"]) == (1, 1, "TLSv1.3")
    assert peer["counts"]["plaintext_out"] == 0
