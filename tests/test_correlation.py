"""Correlation on real logs with known truth, and scenario goldens built from real line shapes."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.conftest import DATA, LAB_LOG, LAB_SINK_LOG, REFERENCE_TIME, wild_block
from tlslogd.events import Delivery, Event, MessageReceived, SessionEnd
from tlslogd.parse import Parser, library_reason
from tlslogd.pipeline import Pipeline
from tlslogd.sessions import Correlator, LocalNetworks
from tlslogd.stats import Stats
from tlslogd.summary import adoption, failures


def replay(
    text: str, *, local: tuple[str, ...] = (), complete: bool = False
) -> tuple[Pipeline, list[Event]]:
    """``text`` through the pipeline. ``complete``: it is a whole log, as ``tlslogd report``
    reads a file, so what the correlator still holds at its end is counted."""
    pipe = Pipeline(
        Parser(reference_time=REFERENCE_TIME),
        Correlator(is_local=LocalNetworks(local).is_local),
        Stats(),
    )
    events: list[Event] = []
    pipe.feed_text(text, events.append)
    if complete:
        pipe.finish()
    return pipe, events


def deliveries(events: list[Event]) -> list[Delivery]:
    return [e for e in events if isinstance(e, Delivery)]


def relay_addr(d: Delivery) -> str:
    return d.relay.split("[", 1)[1].split("]", 1)[0]


def test_lab_log_every_next_hop_matches_its_known_truth() -> None:
    _, events = replay(LAB_LOG.read_text())
    sent = [d for d in deliveries(events) if d.status == "sent"]
    by_hop: dict[str, set[str]] = {}
    for d in sent:
        by_hop.setdefault(relay_addr(d), set()).add(d.tls)
    assert by_hop.pop("127.0.0.3") == {"no"}
    assert by_hop.pop("127.0.0.4") == {"no"}
    assert by_hop.pop("127.0.0.14") == {"no"}  # plaintext after a failed handshake
    assert set(by_hop) >= {"127.0.0.2", "127.0.0.5", "127.0.0.8", "127.0.0.10", "::1"}
    assert all(tls == {"yes"} for tls in by_hop.values()), by_hop
    offered = {relay_addr(d) for d in sent if d.offered}
    assert offered == {"127.0.0.4", "127.0.0.14"}


def test_lab_log_deliveries_held_back_by_tls_are_counted_by_the_failures_reason() -> None:
    # every deferral in the lab log is TLS's doing: an encrypt policy against a server without
    # STARTTLS, a verify policy against a self-signed certificate, and the handshakes that
    # failed on the protocol version before the plaintext retry (whose failure says "protocol",
    # and so does the deferral it held back, not its "Cannot start TLS" text's "handshake")
    pipe, events = replay(LAB_LOG.read_text(), complete=True)
    held = Counter(d.reason for d in deliveries(events) if d.status == "deferred")
    assert held == {"not_offered": 8, "certificate": 19, "protocol": 7}
    assert pipe.stats.counters["tls_held"] == {
        ("smtp", "postfix/smtp", "deferred", reason): n for reason, n in held.items()
    }
    assert pipe.stats.totals["tls_held_deliveries"] == sum(held.values())


def test_mail_held_back_by_tls_without_a_connection_is_counted() -> None:
    # real Postfix logs: a TLS policy that cannot be used defers with relay=none, and so does a
    # destination Postfix suspended after "TLS is required, but was not offered"
    pipe, _ = replay((DATA / "real" / "postfix-3.7-policy.log").read_text(), complete=True)
    assert pipe.stats.counters["tls_held"] == {("smtp", "postfix/smtp", "deferred", "policy"): 8}
    assert pipe.stats.counters["deliveries"] == {}  # no connection: no delivery attempt
    pipe, _ = replay((DATA / "real" / "postfix-3.7-no-tlsproxy.log").read_text(), complete=True)
    suspended = ("error", "postfix/error", "deferred", "not_offered")
    assert pipe.stats.counters["tls_held"][suspended] == 4


def test_lab_log_counts_each_handshake_once_as_the_receiving_side_saw_it() -> None:
    # tlsproxy repeats the smtp client's handshakes and "reused" is not a handshake: the sink
    # logged exactly one "established from" per connection the main instance opened.
    pipe, _ = replay(LAB_LOG.read_text())
    sink = LAB_SINK_LOG.read_text()
    sink_handshakes = sink.count("TLS connection established from")
    assert pipe.stats.totals["tls_handshakes_outbound"] == sink_handshakes == 55


def test_lab_log_reused_tls_connections_are_tls_deliveries() -> None:
    _, events = replay(LAB_LOG.read_text())
    reused = [d for d in deliveries(events) if d.conn_use]
    assert len(reused) == 6
    assert {d.tls for d in reused} == {"yes"}


def test_lab_log_inbound_sessions_and_failures() -> None:
    pipe, events = replay(LAB_LOG.read_text())
    sessions = Counter((e.program, e.starttls) for e in events if isinstance(e, SessionEnd))
    assert sessions[("postfix/smtps/smtpd", "implicit")] == 2
    assert sessions[("postfix/smtpd", "failed")] == 4
    assert sessions[("postfix/submission/smtpd", "not_used")] == 1
    reasons = pipe.stats.reasons["inbound"]
    # two TLSv1/TLSv1.1 clients refused, one hung up, one sent garbage: one failure each
    assert reasons == {"protocol": 2, "lost_connection": 1, "handshake": 1}
    messages = Counter(e.tls for e in events if isinstance(e, MessageReceived))
    assert messages == {"yes": 46, "no": 3}


def test_lab_log_plaintext_fallback_is_one_failure_then_an_offered_plaintext_delivery() -> None:
    lines = [
        line
        for line in LAB_LOG.read_text().splitlines()
        if "postfix/smtp[30077]" in line and "20:06:18" in line
    ]
    pipe, events = replay("\n".join(lines) + "\n")
    assert pipe.stats.reasons["outbound"]["protocol"] == 1
    fallback = [d for d in deliveries(events) if d.relay.startswith("127.0.0.14")]
    assert [(d.status, d.tls, d.offered) for d in fallback] == [("sent", "no", True)]


T0 = "Dec  1 10:00:00 mx"


def log(*lines: str) -> str:
    return "\n".join(lines) + "\n"


def test_a_handshake_covers_every_recipient_of_its_delivery_but_not_the_next_message() -> None:
    text = log(
        f"{T0} postfix/smtp[100]: Trusted TLS connection established to mx.example.com[192.0.2.25]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
        f"{T0} postfix/smtp[100]: 4F1A2B3C4D: to=<a@example.com>, relay=mx.example.com[192.0.2.25]:25, delay=0.5, delays=0.1/0/0.2/0.2, dsn=2.0.0, status=sent (250 ok)",
        f"{T0} postfix/smtp[100]: 4F1A2B3C4D: to=<b@example.com>, relay=mx.example.com[192.0.2.25]:25, delay=0.5, delays=0.1/0/0.2/0.2, dsn=2.0.0, status=sent (250 ok)",
        "Dec  1 10:00:05 mx postfix/smtp[100]: 5A1B2C3D4E: to=<c@example.com>, relay=mx.example.com[192.0.2.25]:25, delay=0.4, delays=0.1/0/0.2/0.1, dsn=2.0.0, status=sent (250 ok)",
    )
    _, events = replay(
        "Dec  1 09:59:00 mx postfix/master[1]: daemon started -- version 3.7.11, configuration /etc/postfix\n"
        + text
    )
    assert [d.tls for d in deliveries(events)] == ["yes", "yes", "no"]
    assert deliveries(events)[0].tls_protocol == "TLSv1.3"


def test_a_stale_handshake_of_a_reused_pid_is_not_inherited() -> None:
    text = log(
        "Dec  1 09:00:00 mx postfix/master[1]: daemon started -- version 3.7.11, configuration /etc/postfix",
        "Dec  1 10:00:00 mx postfix/smtp[100]: Trusted TLS connection established to mx.example.com[192.0.2.25]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
        # that process exits without delivering; twenty minutes later a new process gets pid 100
        "Dec  1 10:20:00 mx postfix/smtp[100]: 6C1D2E3F4A: to=<d@example.com>, relay=mx.example.com[192.0.2.25]:25, delay=0.3, delays=0.1/0/0.1/0.1, dsn=2.0.0, status=sent (250 ok)",
    )
    _, events = replay(text)
    assert [d.tls for d in deliveries(events)] == ["no"]


def test_reading_that_starts_mid_session_says_unknown_never_a_guess() -> None:
    text = log(
        # the handshake of this connection was logged before the first line we read
        "Dec  1 10:00:00 mx postfix/smtp[100]: 4F1A2B3C4D: to=<a@example.com>, relay=mx.example.com[192.0.2.25]:25, delay=3.2, delays=0.1/0/1.5/1.6, dsn=2.0.0, status=sent (250 ok)",
        # another process's handshake: this smtp service logs them (smtp_tls_loglevel >= 1)
        "Dec  1 10:01:00 mx postfix/smtp[102]: Trusted TLS connection established to mx.example.org[192.0.2.26]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
        # a connection set up well after we started: no handshake line means plaintext
        "Dec  1 10:05:00 mx postfix/smtp[101]: 5A1B2C3D4E: to=<b@example.net>, relay=mx.example.net[198.51.100.7]:25, delay=0.4, delays=0.1/0/0.2/0.1, dsn=2.0.0, status=sent (250 ok)",
        "Dec  1 10:05:01 mx postfix/smtpd[200]: 6B1C2D3E4F: client=mail.example.org[203.0.113.5]",
        "Dec  1 10:05:02 mx postfix/smtpd[200]: disconnect from mail.example.org[203.0.113.5] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
    )
    _, events = replay(text)
    assert [d.tls for d in deliveries(events)] == ["unknown", "no"]
    received = [e for e in events if isinstance(e, MessageReceived)]
    assert [m.tls for m in received] == ["unknown"]
    ends = [e for e in events if isinstance(e, SessionEnd)]
    assert [e.starttls for e in ends] == ["unknown"]


def test_postfix_3_11_tls_field_decides() -> None:
    start = "Dec  1 09:00:00 mx postfix/master[1]: daemon started -- version 3.11.0, configuration /etc/postfix"
    rows = [
        ("may", "yes"),
        ("may:none", "no"),
        ("none", "no"),
        ("dane:halfdane", "yes"),
        ("!encrypt", "no"),
        ("may?", "unknown"),
        ("verify/requiretls", "yes"),
    ]
    lines = [start]
    for i, (feature, _) in enumerate(rows):
        lines.append(
            f"Dec  1 10:00:{i:02d} mx postfix/smtp[{300 + i}]: 4F1A2B3C{i:02d}: to=<x@example.com>, relay=mx.example.com[192.0.2.25]:25, delay=0.5, delays=0.1/0/0.2/0.2, tls={feature}, dsn=2.0.0, status=sent (250 ok)"
        )
    _, events = replay(log(*lines))
    assert [d.tls for d in deliveries(events)] == [want for _, want in rows]


def test_several_mx_hosts_the_last_handshake_is_the_one_that_delivered() -> None:
    text = log(
        "Dec  1 09:00:00 mx postfix/master[1]: daemon started -- version 3.7.11, configuration /etc/postfix",
        "Dec  1 10:00:00 mx postfix/smtp[100]: SSL_connect error to mx1.example.com[192.0.2.25]:25: -1",
        "Dec  1 10:00:00 mx postfix/smtp[100]: warning: TLS library problem: error:0A000410:SSL routines::sslv3 alert handshake failure:../ssl/record/rec_layer_s3.c:1584:SSL alert number 40:",
        "Dec  1 10:00:00 mx postfix/smtp[100]: 4F1A2B3C4D: Cannot start TLS: handshake failure",
        "Dec  1 10:00:01 mx postfix/smtp[100]: Untrusted TLS connection established to mx2.example.com[192.0.2.26]:25: TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)",
        "Dec  1 10:00:02 mx postfix/smtp[100]: 4F1A2B3C4D: to=<a@example.com>, relay=mx2.example.com[192.0.2.26]:25, delay=2, delays=0.1/0/1.2/0.7, dsn=2.0.0, status=sent (250 ok)",
    )
    pipe, events = replay(text)
    [d] = deliveries(events)
    assert (d.tls, d.tls_protocol, d.tls_trust) == ("yes", "TLSv1.2", "untrusted")
    assert pipe.stats.totals["tls_failures"] == 1


def test_replaying_in_any_chunking_gives_the_same_numbers() -> None:
    text = LAB_LOG.read_text()
    whole, _ = replay(text)
    lines = text.splitlines(keepends=True)
    pipe = Pipeline(
        Parser(reference_time=REFERENCE_TIME),
        Correlator(is_local=LocalNetworks(()).is_local),
        Stats(),
    )
    for i in range(0, len(lines), 7):
        pipe.feed_text("".join(lines[i : i + 7]))
    assert pipe.stats.totals == whole.stats.totals
    assert pipe.stats.counters == whole.stats.counters


def test_without_handshake_lines_the_starttls_counters_decide_received_messages() -> None:
    """smtpd_tls_loglevel = 0 (Postfix's default) logs no handshake summary: the lab log
    without its smtpd summaries, as such a server writes it. Messages are decided when their
    session ends, by its ``starttls=`` counter, as if the summaries were there -- except the
    two smtps (wrapper-mode) sessions, whose TLS only a summary line shows: unknown, neither
    plaintext nor a client that "never used STARTTLS"."""
    full = LAB_LOG.read_text()
    level0 = "".join(
        line
        for line in full.splitlines(keepends=True)
        if not ("/smtpd[" in line and "TLS connection established from" in line)
    )
    _, with_summaries = replay(full)
    _, without = replay(level0)

    def received(events: list[Event]) -> Counter[str]:
        return Counter(e.tls for e in events if isinstance(e, MessageReceived))

    assert received(with_summaries) == {"yes": 46, "no": 3}
    smtps = sum(
        1
        for e in with_summaries
        if isinstance(e, MessageReceived) and e.program == "postfix/smtps/smtpd"
    )
    assert smtps == 2
    assert received(without) == {"yes": 46 - smtps, "no": 3, "unknown": smtps}
    ends = [e for e in without if isinstance(e, SessionEnd) and "/smtps/" in e.program]
    assert ends and {e.starttls for e in ends} == {"unknown"}


def test_a_message_is_decided_at_the_end_of_its_session_when_no_handshake_was_logged() -> None:
    # docker-mailserver/docker-mailserver#663: a submission session logged with
    # smtpd_tls_loglevel = 0 (the compose prefix as posted)
    text = (
        "mail_1  | Jul 24 15:58:26 mail postfix/submission/smtpd[1058]: connect from "
        "myrtesting_web_1.myrtesting_default[172.19.0.6]\n"
        "mail_1  | Jul 24 15:58:26 mail postfix/submission/smtpd[1058]: 518F058BB5: "
        "client=myrtesting_web_1.myrtesting_default[172.19.0.6], sasl_method=PLAIN, "
        "sasl_username=noreply@myrescoop.com\n"
    )
    end = (
        "mail_1  | Jul 24 15:58:26 mail postfix/submission/smtpd[1058]: disconnect from "
        "myrtesting_web_1.myrtesting_default[172.19.0.6] ehlo=2 starttls=1 auth=1 mail=1 "
        "rcpt=1 data=1 quit=1 commands=8\n"
    )
    pipe, _ = replay(text)
    assert pipe.stats.totals["messages_received"] == 0  # held until the session ends
    pipe.feed_text(end)
    assert pipe.stats.totals["messages_received"] == 1
    assert pipe.stats.totals["tls_messages_received"] == 1
    unfinished, _ = replay(text, complete=True)
    assert unfinished.stats.counters["received"] == {
        ("smtpd", "postfix/submission/smtpd", "unknown", "remote"): 1
    }


def sample_lines(name: str, *needles: str) -> str:
    """The real lines of an annotated sample file that contain any of ``needles``."""
    text = (DATA / "samples" / name).read_text()
    return "".join(
        line + "\n"
        for line in text.splitlines()
        if not line.startswith("#") and any(n in line for n in needles)
    )


def test_a_message_a_content_filter_reinjects_is_not_received_again() -> None:
    # mailcow/mailcow#740: a before-queue filter; smtpd logs "NOQUEUE: client=" in the client's
    # TLS session, and the message comes back from the filter with orig_client= (XFORWARD)
    text = sample_lines("wild-sessions.log", "Gameserver postfix/smtpd[2751")
    assert "orig_client=" in text and "NOQUEUE: client=" in text
    pipe, events = replay(text, complete=True)
    received = [e for e in events if isinstance(e, MessageReceived)]
    assert [(e.queue_id, e.orig_client) for e in received] == [
        ("NOQUEUE", None),
        ("9A38C20B01", "Gameserver.services[185.101.93.86]"),
    ]
    # the excerpt ends before the filter's verdict (proxy-accept): nothing is received yet,
    # and the re-injected copy is never counted
    assert pipe.stats.counters["received"] == {}
    # the copy came from the filter on loopback: local, as its scope says where parse shows it
    _, events = replay(text, local=("127.0.0.0/8",))
    (copy,) = [e for e in events if isinstance(e, MessageReceived) and e.orig_client]
    assert copy.scope == "local"


def test_local_agents_are_local_and_soft_bounces_are_deferrals() -> None:
    local = sample_lines("wild-deliveries.log", "relay=local,", "relay=dovecot,")
    _, events = replay(local)
    assert {(d.relay, d.scope, d.tls) for d in deliveries(events)} == {
        ("local", "local", "no"),
        ("dovecot", "local", "no"),
    }
    soft = sample_lines("wild-deliveries.log", "status=SOFTBOUNCE")
    pipe, _ = replay(soft)
    assert adoption(pipe.stats)["outbound"]["deferred"] == soft.count("\n") == 6


def test_sessions_of_local_clients_are_local_not_inbound_adoption() -> None:
    """The lab log's clients are all on loopback: with the default local networks every
    session and message is local (a content filter handing mail back looks just like that), is
    counted as such, and lists nobody as a client that should use STARTTLS."""
    remote, _ = replay(LAB_LOG.read_text())
    local, events = replay(LAB_LOG.read_text(), local=("127.0.0.0/8", "::1/128"))
    ends = [e for e in events if isinstance(e, SessionEnd)]
    assert ends and {e.scope for e in ends} == {"local"}
    assert {e.scope for e in events if isinstance(e, MessageReceived)} == {"local"}
    totals = local.stats.totals
    assert totals["local_sessions"] == totals["sessions"] == remote.stats.totals["sessions"]
    assert totals["local_messages_received"] == totals["messages_received"] == 49
    assert totals["tls_sessions"] == totals["plaintext_sessions"] == 0
    assert adoption(local.stats)["inbound"]["sessions"] == {}
    assert adoption(local.stats)["inbound"]["sessions_local"] == totals["sessions"]
    assert local.stats.peers.query(category="inbound_no_starttls") == []
    assert remote.stats.peers.query(category="inbound_no_starttls") != []


def test_without_any_smtp_handshake_line_deliveries_are_unknown_not_plaintext() -> None:
    """smtp_tls_loglevel = 0 (Postfix's default), or a log filtered with grep: no smtp process
    ever logs a handshake, so the absence of one says nothing. The lab log without its outbound
    summaries: no delivery is called plaintext, except those after "Host offered STARTTLS"."""
    level0 = "".join(
        line
        for line in LAB_LOG.read_text().splitlines(keepends=True)
        if not ("/smtp[" in line and "TLS connection " in line)
    )
    _, events = replay(level0)
    sent = [d for d in deliveries(events) if d.status == "sent" and d.scope == "remote"]
    assert {d.tls for d in sent if not d.offered} == {"unknown"}
    assert {relay_addr(d) for d in sent if d.tls == "no"} == {"127.0.0.4", "127.0.0.14"}
    assert all(d.offered for d in sent if d.tls == "no")


def test_lmtp_is_local_wherever_the_mailbox_store_runs() -> None:
    line = sample_lines("wild-deliveries.log", "relay=mail.tubui.xyz[103.124.94.220]:7025")
    pipe, events = replay(line)
    assert [(d.service, d.scope) for d in deliveries(events)] == [("lmtp", "local")]
    assert pipe.stats.peers.query(category="plaintext_out") == []


def test_repeated_messages_never_make_line_counts_negative() -> None:
    # darold/sendmailanalyzer#30: rsyslog's "message repeated 2 times: [...]" makes three
    # events of one line
    text = sample_lines("wild-headers.log", "svcenmta01 postfix/smtpd[11557]")
    lines = text.count("\n")
    pipe, _ = replay(text)
    counted = pipe.stats.lines
    assert min(counted.values()) >= 0
    assert sum(counted.values()) == pipe.stats.totals["lines"] == lines


def test_a_before_queue_filter_receives_the_message_when_it_accepts_it() -> None:
    # Proxmox Mail Gateway: NOQUEUE: client= in the client's session, the filter re-injects the
    # message with orig_client=, then proxy-accept: one message, in the client's session
    accepted = wild_block("sessions.log", "file id 10470110152")
    pipe, _ = replay(accepted)
    assert pipe.stats.totals["messages_received"] == 1
    assert pipe.stats.counters["received"] == {("smtpd", "postfix/smtpd", "unknown", "remote"): 1}
    # modoboa/modoboa#2564: the filter timed out, proxy-reject at the end of DATA: none
    rejected = wild_block("sessions.log", "modoboa/modoboa/issues/2564")
    assert "NOQUEUE: client=" in rejected and "proxy-reject: END-OF-MESSAGE" in rejected
    pipe, events = replay(rejected, complete=True)
    assert pipe.stats.totals["messages_received"] == 0
    assert [e.accepted for e in events if isinstance(e, MessageReceived)] == [False]


def test_when_our_own_tls_engine_is_off_its_clients_are_not_blamed() -> None:
    """void-packages#4686: smtpd logs 'disabling TLS support' (counted once, engine); then a
    client's STARTTLS fails in that process (the session lines of docker-mailserver#620, put in
    the same process): one engine failure, no failure of the client's, session failed."""
    engine = sample_lines("wild-failures.log", "warning: disabling TLS support").strip()
    session = [
        line
        for line in wild_block("sessions.log", "docker-mailserver/issues/620").splitlines(True)
        if "SSL_accept" not in line and "TLS library problem" not in line
    ]
    text = (
        engine
        + "\n"
        + "".join(
            line.replace("May 23", "Aug 29").replace(
                "mail postfix/smtpd[5982]", "localhost postfix/smtpd[2397]"
            )
            for line in session
        )
    )
    pipe, _ = replay(text, complete=True)
    assert pipe.stats.totals["tls_failures"] == 1
    assert failures(pipe.stats)["inbound"] == {"engine": 1}
    assert pipe.stats.peers.query(category="tls_failure") == []
    assert adoption(pipe.stats)["inbound"]["sessions"] == {"failed": 1}


def test_a_handshake_attempt_shows_the_engine_of_a_reused_pid_works() -> None:
    """void-packages#4686's smtpd disabled TLS at its start; hours later a new smtpd on the
    same pid (the lab's real lines, put on that pid) starts a handshake that fails for an old
    protocol. A process without TLS never attempts one: that failure is the client's."""
    engine = sample_lines("wild-failures.log", "warning: disabling TLS support").strip()
    client = "".join(
        line.replace("Nov 25 20:06:11 mx", "Aug 29 16:10:02 localhost").replace("29991", "2397")
        for line in LAB_LOG.read_text().splitlines(True)[238:243]
    )
    assert client.count("postfix/smtpd[2397]") == 5 and "SSL_accept error" in client
    pipe, _ = replay(engine + "\n" + client, complete=True)
    assert failures(pipe.stats)["inbound"] == {"engine": 1, "protocol": 1}
    assert [p.key for p in pipe.stats.peers.query(category="tls_failure")] == ["localhost"]
    assert pipe.correlator.snapshot()["engine_down"] == []


def test_an_smtps_client_dropped_because_our_tls_is_broken_is_a_failed_session() -> None:
    """sovereign#31: the smtps smtpd's key does not match its certificate (logged when the
    process starts), then a wrapper-mode client is dropped. Postfix 2.9 logs no counters: the
    session failed, by our doing (engine), not "unknown"; the process's own failure counts once
    and the dropped client's once."""
    pipe, events = replay(
        wild_block("sessions.log", "sovereign/sovereign/issues/31"), complete=True
    )
    (end,) = [e for e in events if isinstance(e, SessionEnd)]
    assert end.starttls == "failed"
    assert adoption(pipe.stats)["inbound"]["sessions"] == {"failed": 1}
    assert failures(pipe.stats)["inbound"] == {"engine": 2}
    assert [p.key for p in pipe.stats.peers.query(category="tls_failure")] == ["80.83.52.2"]


def test_an_sni_certificate_that_does_not_load_is_one_engine_failure_of_the_session() -> None:
    """mailcow#3407: smtpd cannot load the SNI certificate the client asked for and aborts its
    handshake; the SSL_accept error, the library's "callback failed" and the lost connection
    are that one failure, ours (engine), counted once and for the client's session. The process
    is not broken for its next clients, which may ask for no SNI name."""
    block = wild_block("sessions.log", "mailcow/mailcow-dockerized/issues/3407")
    pipe, _ = replay(block, complete=True)
    assert pipe.stats.totals["tls_failures"] == 1
    assert failures(pipe.stats)["inbound"] == {"engine": 1}
    assert adoption(pipe.stats)["inbound"]["sessions"] == {"failed": 1}
    (peer,) = pipe.stats.peers.query(category="tls_failure")
    assert "mail-lj1-x231.google.com" in peer.key
    # the next client of the same process whose handshake fails is counted as its own failure
    again = "".join(
        line
        for line in block.splitlines(True)
        if "SNI data" not in line and "not replacing" not in line
    )
    pipe, _ = replay(block + again.replace("14:02:29", "14:02:31"), complete=True)
    assert failures(pipe.stats)["inbound"] == {"engine": 1, "handshake": 1}


def test_an_alert_after_starttls_succeeded_is_a_cipher_failure_of_a_tls_session() -> None:
    """docker-mailserver#732: GMX sends alert 71 (insufficient security) and leaves; the
    counters say STARTTLS succeeded (no handshake summary at smtpd_tls_loglevel 0)."""
    pipe, _ = replay(wild_block("sessions.log", "docker-mailserver/issues/732"), complete=True)
    assert adoption(pipe.stats)["inbound"]["sessions"] == {"used": 1}
    assert failures(pipe.stats)["inbound"] == {"cipher": 1}


def test_a_policy_map_entry_postfix_cannot_use_names_the_mx_of_the_destination() -> None:
    """postfix-mta-sts-resolver#66: the map's warning names the next-hop domain, the policy
    lookup after it the MX host: one policy failure, for the MX."""
    pipe, _ = replay(
        wild_block("failures.log", "postfix-mta-sts-resolver/issues/66"), complete=True
    )
    assert failures(pipe.stats)["outbound"] == {"policy": 1}
    (peer,) = pipe.stats.peers.query(category="tls_failure")
    assert peer.key == "gmail-smtp-in.l.google.com"
    # alone, the map's warning names the next-hop domain
    pipe, _ = replay(sample_lines("wild-failures.log", '"!SSLv3": missing'), complete=True)
    assert [p.key for p in pipe.stats.peers.query(category="tls_failure")] == ["gmail.com"]


def test_a_client_is_not_blamed_for_a_starttls_its_smtpd_never_offered() -> None:
    """Postfix 3.7 (the policy log): two plaintext sessions with EHLO and no STARTTLS, from an
    smtpd of which no client ever used or tried STARTTLS: whether it was offered is unknown, so
    the client is not listed as one that never used it. After a session of the same smtpd that
    did use STARTTLS (the lab's first, same host and tag), the same client declined it."""
    policy = (DATA / "real" / "postfix-3.7-policy.log").read_text()
    pipe, _ = replay(policy, complete=True)
    assert adoption(pipe.stats)["inbound"]["sessions"] == {"not_used": 2}
    assert pipe.stats.peers.query(category="inbound_no_starttls") == []
    lab = LAB_LOG.read_text().splitlines(keepends=True)
    first_tls = [line for line in lab[:7] if "postfix/smtpd[29878]" in line]
    assert "starttls=1" in first_tls[-1] and "connect from" in first_tls[0]
    pipe, _ = replay("".join(first_tls) + policy, complete=True)
    assert adoption(pipe.stats)["inbound"]["sessions"] == {"used": 1, "not_used": 2}
    assert [p.key for p in pipe.stats.peers.query(category="inbound_no_starttls")] == ["127.0.0.1"]


def test_a_failed_certificate_check_at_loglevel_0_is_a_tls_delivery() -> None:
    """Postfix 2.5.5 relaying through Gmail at smtp_tls_loglevel 0: no summary, only the failed
    certificate check (logged at any level before 2.9), then the mail is sent to that server.
    The handshake happened and the mail went over it, untrusted; no failure is counted."""
    pipe, events = replay(wild_block("deliveries.log", "file id 57034376962"), complete=True)
    (delivery,) = deliveries(events)
    assert (delivery.status, delivery.tls, delivery.tls_trust) == ("sent", "yes", "untrusted")
    assert pipe.stats.totals["tls_failures"] == 0


def test_an_smtps_session_without_counters_used_implicit_tls() -> None:
    """hardware/mailserver#127: an smtps client rejected at CONNECT after its handshake; the
    disconnect has no command counters, the service's name says wrapper mode."""
    _, events = replay(wild_block("sessions.log", "hardware/mailserver/issues/127"))
    (end,) = [e for e in events if isinstance(e, SessionEnd)]
    assert (end.starttls, end.tls_protocol) == ("implicit", "TLSv1.2")


def test_unexpected_eof_after_a_completed_handshake_is_not_a_failure() -> None:
    """OpenSSL 3 with Postfix before 3.7.4 logs 'unexpected eof while reading' when a client
    hangs up without close_notify (mlan/docker-postfix#1), here after the lab's first smtps
    handshake in the same process: the session used TLS and nothing failed. A bad record MAC
    right after the handshake (2012, RC4-MD5) broke TLS with that peer and still counts."""
    eof = sample_lines("wild-failures.log", "rec_layer_s3.c:320:").strip()
    lab = LAB_LOG.read_text().splitlines(keepends=True)
    first = next(line for line in lab if "postfix/smtps/smtpd" in line and "connect from" in line)
    tag = first.split(": ", 1)[0].split()[-1]  # postfix/smtps/smtpd[PID]
    session = [line for line in lab if f" {tag}: " in line]
    session = session[: next(i for i, s in enumerate(session) if "disconnect from" in s) + 1]
    assert "TLS connection established" in session[1]
    header = session[1].split(": ", 1)[0]  # the same process, at the handshake's time
    moved = header + ": " + eof.split("]: ", 1)[1] + "\n"
    pipe, _ = replay("".join(session[:-1]) + moved + session[-1])
    assert pipe.stats.totals["tls_failures"] == 0
    assert adoption(pipe.stats)["inbound"]["sessions"] == {"implicit": 1}


def test_a_dane_only_refusal_without_a_connection_is_one_policy_failure() -> None:
    # Zuplu/postfix-tlspol#8: dane-only logs nothing before this deferral (relay=none)
    pipe, _ = replay(sample_lines("wild-failures.log", "non DNSSEC destination"), complete=True)
    assert failures(pipe.stats)["outbound"] == {"policy": 1}


def test_a_server_that_offered_starttls_is_listed_whatever_became_of_the_message() -> None:
    # a relay on 587 under a none policy that bounced the message: offered, not used
    pipe, events = replay(wild_block("deliveries.log", "file id 56814097892"))
    (delivery,) = deliveries(events)
    assert (delivery.status, delivery.tls, delivery.offered) == ("bounced", "no", True)
    assert [p.key for p in pipe.stats.peers.query(category="offered_not_used")] == [
        "smtp.office365.com"
    ]
    assert pipe.stats.peers.query(category="plaintext_out") == []  # nothing was sent


def test_an_smtp_client_without_its_tls_engine_is_one_engine_failure_not_the_servers() -> None:
    # 2009 forum excerpt: the CA file does not load, then the queue-file note and the deferral
    # repeat "our TLS engine is unavailable" for the relay it could not use TLS with
    pipe, _ = replay(wild_block("failures.log", "file id 56773467987"), complete=True)
    assert failures(pipe.stats)["outbound"] == {"engine": 1}
    assert pipe.stats.peers.query(category="tls_failure") == []


def test_a_key_that_does_not_match_our_certificate_is_one_engine_failure_of_the_process() -> None:
    # 2009 forum excerpt: the smtp client logs the key it cannot use, OpenSSL's "key values
    # mismatch" and that it cannot load its certificate and key: one failure, ours
    pipe, _ = replay(wild_block("failures.log", "file id 57169664590"), complete=True)
    assert failures(pipe.stats)["outbound"] == {"engine": 1}


def test_port_465_without_wrapper_mode_is_a_hint_not_a_failure_of_the_process() -> None:
    # Postfix logs the hint before it connects to port 465 without smtp_tls_wrappermode. Mailu#1558
    # shows it alone: no delivery follows in the excerpt, so nothing says it failed; the smtp
    # process's TLS engine works all the same
    pipe, _ = replay(wild_block("failures.log", "Mailu/Mailu/issues/1558"), complete=True)
    assert failures(pipe.stats)["outbound"] == {}
    assert pipe.correlator.snapshot()["engine_down"] == []


def test_port_465_without_wrapper_mode_to_a_server_speaking_plaintext_is_no_tls_failure() -> None:
    # an Exchange server speaks plaintext on 465: the delivery reaches DATA and is refused for
    # a reason that is not TLS's
    pipe, events = replay(wild_block("failures.log", "file id 45089524895"), complete=True)
    assert failures(pipe.stats)["outbound"] == {}
    assert [(d.status, d.tls_failed) for d in deliveries(events)] == [("bounced", False)] * 2


def test_port_465_without_wrapper_mode_to_an_implicit_tls_server_holds_the_mail() -> None:
    # a real Postfix delivering to its own smtps port without smtp_tls_wrappermode: the client
    # waits for a greeting, the server for a handshake. One failure of ours (engine) that held
    # the message back, the server's side of it (lost connection), and the retry still running
    # when the log ends is no failure
    pipe, events = replay(
        (DATA / "real" / "postfix-3.7-wrappermode.log").read_text(), complete=True
    )
    assert failures(pipe.stats) == {"inbound": {"lost_connection": 1}, "outbound": {"engine": 1}}
    (deferral,) = deliveries(events)
    assert (deferral.status, deferral.reason, deferral.tls_failed) == ("deferred", "engine", True)
    assert pipe.stats.totals["tls_held_deliveries"] == 1


def test_a_new_process_on_a_reused_pid_counts_its_own_engine_failure() -> None:
    # the 2009 forum excerpt's three start-up lines are one failure; the same pid failing the
    # same way a week later (the same lines, dated a week on) is a second process's failure
    block = wild_block("failures.log", "file id 57169664590")
    pipe, _ = replay(block + block.replace("Aug 11 10:22:57", "Aug 18 10:22:57"), complete=True)
    assert failures(pipe.stats)["outbound"] == {"engine": 2}


def test_a_refusal_of_our_plaintext_after_our_own_tls_broke_is_not_the_servers_failure() -> None:
    # 2010 forum excerpt: the smtp client's own certificate does not load ("disabling TLS
    # support"), so it speaks plaintext to Gmail, which answers 530 5.7.0 "Must issue a STARTTLS
    # command first": one failure, ours (engine), and Gmail is not a failing peer
    pipe, events = replay(wild_block("deliveries.log", "file id 57117213810"), complete=True)
    assert failures(pipe.stats)["outbound"] == {"engine": 1}
    assert pipe.stats.peers.query(category="tls_failure") == []
    (bounce,) = deliveries(events)
    # held back by our engine failure, as the failures say
    assert (bounce.status, bounce.reason) == ("bounced", "engine")
    assert pipe.stats.counters["tls_held"] == {("smtp", "postfix/smtp", "bounced", "engine"): 1}


def test_a_server_refusing_our_plaintext_is_a_rejected_failure_of_that_delivery() -> None:
    # Gmail refuses a relay's plaintext MAIL FROM (2011 forum excerpt)
    pipe, events = replay(wild_block("deliveries.log", "file id 56790860895"), complete=True)
    assert failures(pipe.stats)["outbound"] == {"rejected": 1}
    (bounce,) = deliveries(events)
    assert (bounce.status, bounce.tls_failed) == ("bounced", True)
    (peer,) = pipe.stats.peers.query(category="tls_failure")
    assert peer.host == "smtp.gmail.com"


def test_before_postfix_3_a_session_without_a_handshake_did_not_use_tls() -> None:
    """No command counters before Postfix 3.0: where the smtpd instance logs its handshakes, a
    whole session without one is a session without TLS, as its message is."""
    _, events = replay(wild_block("sessions.log", "file id 4698961437"))
    ends = [e.starttls for e in events if isinstance(e, SessionEnd)]
    assert ends == ["used", "used", "used", "not_used"]
    received = [e.tls for e in events if isinstance(e, MessageReceived)]
    assert received == ["yes", "yes", "no"]


def test_a_lost_connection_after_starttls_of_a_session_before_the_log_is_unknown() -> None:
    """The excerpt begins with the end of a session whose handshake is not in it: unknown, no
    failure; the next session of the same process logged its handshake and used TLS."""
    pipe, events = replay(wild_block("sessions.log", "file id 57174686511"), complete=True)
    assert [e.starttls for e in events if isinstance(e, SessionEnd)] == ["unknown", "used"]
    assert pipe.stats.totals["tls_failures"] == 0


def test_a_library_problem_after_the_handshake_names_the_peer_of_the_handshake() -> None:
    """2012 forum excerpt (copy stored as file id 56704989151): a bad record MAC right after
    the handshake, the poster's lines without the disconnect: the failure names the client."""
    text = "".join(
        line
        for line in wild_block("failures.log", "file id 56704989151").splitlines(True)
        if "[1366]" in line
    )
    pipe, _ = replay(text, complete=True)
    assert [p.key for p in pipe.stats.peers.query(category="tls_failure")] == ["209.85.213.47"]


def test_a_message_rejected_at_the_end_of_data_is_not_received() -> None:
    """i-MSCP's ClamAV plugin README: smtpd logged the queue ID, then cleanup logged the milter's
    rejection at the end of DATA (the excerpt ends there): nothing was received."""
    pipe, events = replay(wild_block("sessions.log", "i-MSCP/plugins"), complete=True)
    assert pipe.stats.totals["messages_received"] == 0
    (message,) = [e for e in events if isinstance(e, MessageReceived)]
    assert (message.queue_id, message.tls, message.accepted) == ("0A618260345", "yes", False)


REJECTED_THEN_ACCEPTED = (DATA / "real" / "postfix-3.7-header-check.log").read_text()


def test_a_session_goes_on_after_a_rejected_message_and_its_next_one_is_received() -> None:
    # real Postfix 3.7: header_checks rejected the session's first message, the second was queued
    pipe, events = replay(REJECTED_THEN_ACCEPTED)
    assert pipe.stats.totals["messages_received"] == 1
    assert pipe.stats.counters["received"] == {("smtpd", "postfix/smtpd", "yes", "remote"): 1}
    messages = {e.queue_id: e.accepted for e in events if isinstance(e, MessageReceived)}
    assert messages == {"79E9523C0A6": False, "7A36A23C0A6": True}


def test_a_queued_message_waits_for_its_session_and_survives_a_checkpoint() -> None:
    """The accepted message is counted when its session ends, also when tlslogd restarted
    (checkpoint, then a new correlator) between its queue ID and the disconnect; so is the
    rejected one, as not received."""
    lines = REJECTED_THEN_ACCEPTED.splitlines(True)
    before, after = "".join(lines[:5]), "".join(lines[5:])
    pipe, _ = replay(before)
    assert pipe.stats.totals["messages_received"] == 0  # the session may still reject it
    saved = json.loads(json.dumps(pipe.correlator.snapshot()))
    restarted = Correlator()
    restarted.restore(saved)
    stats = Stats()
    Pipeline(Parser(reference_time=REFERENCE_TIME), restarted, stats).feed_text(after)
    assert stats.counters["received"] == {("smtpd", "postfix/smtpd", "yes", "remote"): 1}
    assert stats.totals["messages_not_received"] == 1  # the rejected one, before the restart


def test_a_rejected_message_of_a_session_without_handshake_lines_is_not_received() -> None:
    # the same real session as smtpd_tls_loglevel = 0 logs it: no handshake line, so both
    # messages wait for the session's STARTTLS counter; the rejected one is not counted then
    lines = [x for x in REJECTED_THEN_ACCEPTED.splitlines(True) if "TLS connection" not in x]
    pipe, events = replay("".join(lines))
    assert pipe.stats.counters["received"] == {("smtpd", "postfix/smtpd", "yes", "remote"): 1}
    messages = {e.queue_id: (e.tls, e.accepted) for e in events if isinstance(e, MessageReceived)}
    assert messages == {"79E9523C0A6": ("yes", False), "7A36A23C0A6": ("yes", True)}


def test_a_message_whose_data_did_not_complete_is_not_received() -> None:
    """Real Postfix 3.7: a STARTTLS session queues one message, then the client leaves in the
    middle of the second one's DATA (data=1/2); a plaintext session leaves in the middle of its
    only DATA (data=0/1). No line names the lost messages: the counters do."""
    pipe, events = replay((DATA / "real" / "postfix-3.7-lost-data.log").read_text())
    assert pipe.stats.counters["received"] == {("smtpd", "postfix/smtpd", "yes", "remote"): 1}
    messages = {e.queue_id: (e.tls, e.accepted) for e in events if isinstance(e, MessageReceived)}
    assert messages == {
        "5BDDA2223FC": ("yes", True),
        "5C83A2221E5": ("yes", False),
        "5CEE7222400": ("no", False),
    }


def test_a_session_that_sent_no_data_received_nothing() -> None:
    # a content filter (clamsmtpd) found a virus and abandoned the transaction with RSET: its
    # session's counters have no data= at all
    pipe, _ = replay(wild_block("sessions.log", "file id 13955259326"))
    assert pipe.stats.totals["messages_received"] == 0
    # rspamd's milter refused the GTUBE test message at the end of DATA: data=0/1
    pipe, _ = replay(wild_block("sessions.log", "file id 15971589077"))
    assert pipe.stats.totals["messages_received"] == 0


def test_a_message_sent_with_bdat_is_received() -> None:
    # BDAT (CHUNKING) sessions count chunks in bdat= and have no data= counter
    pipe, events = replay(wild_block("sessions.log", "file id 16397914485"))
    assert pipe.stats.counters["received"] == {("smtpd", "postfix/smtpd", "no", "remote"): 1}
    assert [e.accepted for e in events if isinstance(e, MessageReceived)] == [True]


def test_messages_of_abandoned_transactions_are_not_received() -> None:
    """Real Postfix 3.7, one session each: a message queued over TLS and one in plaintext;
    MAIL/RCPT/QUIT probes (no data= counter) in plaintext and over TLS; a client lost after
    RCPT; RSET then a message; a message too large then one queued; a header_checks REJECT
    then one queued; a message sent with BDAT (bdat=1) and a BDAT cut short (bdat=0/1).
    qmgr queued six: three over TLS, three in plaintext."""
    text = (DATA / "real" / "postfix-3.7-abandoned.log").read_text()
    queued = [line.split(": ")[1] for line in text.splitlines() if "(queue active)" in line]
    pipe, events = replay(text)
    assert pipe.stats.counters["received"] == {
        ("smtpd", "postfix/smtpd", "yes", "remote"): 3,
        ("smtpd", "postfix/smtpd", "no", "remote"): 3,
    }
    accepted = [e for e in events if isinstance(e, MessageReceived) and e.accepted]
    assert len(accepted) == len(queued) == 6
    # the counters do not say which of the RSET session's two messages was queued: the
    # session's last one is the one taken as abandoned
    assert {e.queue_id for e in accepted} ^ set(queued) == {"372F524C643", "3755424C643"}


def test_a_message_qmqpd_received_is_counted_at_once() -> None:
    """qmqpd logs client= but no session smtpd would end: nothing to wait for. A header check's
    DISCARD, in the same real log, is not received (the client was told it was delivered)."""
    lines = (DATA / "real" / "postfix-3.7-discard-qmqp.log").read_text().splitlines(True)
    pipe, events = replay("".join(lines[:8]))  # up to qmqpd's client=, before its disconnect
    assert pipe.stats.counters["received"] == {("qmqpd", "postfix/qmqpd", "unknown", "remote"): 1}
    assert not any(pipe.correlator.holds(e) for e in events)
    discarded = [e for e in events if isinstance(e, MessageReceived) and e.service == "smtpd"]
    assert [(e.queue_id, e.accepted) for e in discarded] == [("6223025C05C", False)]


def test_a_session_of_more_messages_than_it_holds_still_drops_its_cut_one() -> None:
    """A relay pushing 101 messages over one connection, the last one cut in DATA (the session
    of postfix-3.7-lost-data.log, with more queue IDs): 100 received, whatever the session could
    hold back."""
    session = (DATA / "real" / "postfix-3.7-lost-data.log").read_text().splitlines(True)[2:10]
    connect, tls, client = session[:3]
    lost, disconnect = session[6], session[7]
    assert "lost connection after DATA" in lost and " data=1/2 " in disconnect
    clients = [client.replace("5BDDA2223FC", f"{0x10000000000 + i:X}") for i in range(101)]
    counters = disconnect.replace("mail=2 rcpt=2 data=1/2", "mail=101 rcpt=101 data=100/101")
    pipe, _ = replay("".join([connect, tls, *clients, lost, counters]))
    assert pipe.stats.totals["messages_received"] == 100


def test_a_rejection_names_the_message_of_its_own_log_host() -> None:
    # the real header-check session logged by two hosts with the same queue IDs, interleaved:
    # each host's rejection drops its own first message
    mx = REJECTED_THEN_ACCEPTED.splitlines(True)
    mx2 = [line.replace(" mx postfix/", " mx2 postfix/") for line in mx]
    pipe, events = replay("".join(mx2[:3] + mx[:3] + mx2[3:] + mx[3:]))
    assert pipe.stats.totals["messages_received"] == 2
    accepted = {(e.host, e.queue_id): e.accepted for e in events if isinstance(e, MessageReceived)}
    assert accepted == {
        ("mx2", "79E9523C0A6"): False,
        ("mx", "79E9523C0A6"): False,
        ("mx2", "7A36A23C0A6"): True,
        ("mx", "7A36A23C0A6"): True,
    }


def test_a_message_of_a_session_that_began_before_the_log_takes_the_session_counters() -> None:
    """lightmeter's test log 27 begins inside two sessions: the one whose counters say
    starttls=1 queued its message over TLS; the one without a STARTTLS counter cannot be told
    from implicit TLS whose handshake is not in the excerpt."""
    _, events = replay(wild_block("sessions.log", "27_one_sent_one_received"), complete=True)
    messages = {e.queue_id: e.tls for e in events if isinstance(e, MessageReceived)}
    assert messages == {"4FA51DFCAD": "unknown", "DF1C3EB916": "yes"}
    sessions = [e.starttls for e in events if isinstance(e, SessionEnd)]
    assert sessions == ["unknown", "used"]


def test_dh_parameters_that_do_not_load_are_a_warning_not_a_failure() -> None:
    """docker-mailserver PR 1200: an empty dhparams.pem. smtpd warns, prints the OpenSSL error
    and goes on with Postfix's compiled-in DH parameters: not a TLS failure."""
    pipe, events = replay(wild_block("failures.log", "docker-mailserver/pull/1200"), complete=True)
    assert [e.kind for e in events] == ["tls_fallback", "tls_failure"]
    assert pipe.stats.totals["tls_failures"] == 0


def test_no_protocols_available_is_our_own_protocol_setting() -> None:
    """starttls-everywhere's sample: OpenSSL found no protocol version our settings allow and
    sent nothing. One failure of our TLS engine, not a peer that needs an old protocol."""
    pipe, events = replay(wild_block("failures.log", "pierky/starttls-everywhere"), complete=True)
    assert pipe.stats.reasons["outbound"] == {"engine": 1}
    assert not [p.key for p in pipe.stats.peers.query(category="legacy_protocol")]
    (delivery,) = [e for e in events if isinstance(e, Delivery)]
    assert (delivery.status, delivery.tls_failed) == ("deferred", True)


def test_a_weak_server_dh_group_is_a_cipher_failure() -> None:
    """msimerson/postfix-parser's fixture (message part only): OpenSSL 1.0 refused the server's
    DH group as too small, as it refuses parameters below its security level."""
    (line,) = [
        x
        for x in wild_block("failures.log", "msimerson/postfix-parser").splitlines()
        if "dh key" in x
    ]
    assert library_reason(line) == "cipher"


@pytest.mark.parametrize("name", ["postfix-3.7-dh-empty.log", "postfix-3.7-dh-missing.log"])
def test_real_postfix_with_dh_parameters_that_do_not_load_counts_no_failure(name: str) -> None:
    # Postfix 3.7 / OpenSSL 3: an empty or missing DH parameter file, then two STARTTLS sessions
    pipe, events = replay((DATA / "real" / name).read_text(), complete=True)
    assert pipe.stats.totals["tls_failures"] == 0
    assert [e.starttls for e in events if isinstance(e, SessionEnd)] == ["used", "used"]
    assert [e.tls for e in events if isinstance(e, MessageReceived)] == ["yes", "yes"]


def test_connection_reuse_without_tlsproxy_is_our_engine_not_the_servers_handshake() -> None:
    # real Postfix 3.7: smtp_tls_connection_reuse = yes, no tlsproxy in master.cf. Each attempt
    # to the STARTTLS server logs that tlsproxy cannot be reached, then "Cannot start TLS"
    pipe, _ = replay((DATA / "real" / "postfix-3.7-no-tlsproxy.log").read_text(), complete=True)
    assert pipe.stats.reasons["outbound"] == {"engine": 8, "not_offered": 4}
    # each attempt to the STARTTLS server failed by our doing, and says so
    reasons = {p.key: p.reasons for p in pipe.stats.peers.query(category="tls_failure")}
    assert reasons == {"127.0.0.2": {"engine": 8}, "127.0.0.3": {"not_offered": 4}}


def test_starttls_refused_because_our_engine_is_off_is_a_failed_session_counted_once() -> None:
    """Postfix 2.6 forum log: smtpd disabled TLS at start (its key does not load), a client tried
    STARTTLS four times and hung up each time. One engine failure for the process, four failed
    sessions, and the client is not blamed."""
    pipe, events = replay(wild_block("sessions.log", "file id 56970456181"), complete=True)
    assert pipe.stats.reasons["inbound"] == {"engine": 1}
    ends = [e.starttls for e in events if isinstance(e, SessionEnd) and "192.168.10.6" in e.peer]
    assert ends == ["failed"] * 4
    assert not list(pipe.stats.peers.query(category="tls_failure"))


def test_handshake_summaries_pasted_without_a_tag_among_tagged_lines_are_counted() -> None:
    """kumina/postfix_exporter PR 58 and grok patterns issue 197 quote summaries without their
    syslog header; put among the lab log's tagged lines (an excerpt pasted into a log), they
    name no process, but they are unrecognised lines, not silently ignored ones."""
    pasted = wild_block("tls-summaries.log", "postfix_exporter/pull/58") + wild_block(
        "tls-summaries.log", "postfix-grok-patterns/issues/197"
    )
    lab = LAB_LOG.read_text().splitlines(True)
    pipe, events = replay("".join(lab[:40]) + pasted + "".join(lab[40:80]))
    assert pipe.stats.totals["unrecognised_lines"] == 2
    assert sorted(e.line for e in events if e.kind == "unrecognised") == sorted(pasted.splitlines())


def test_lines_copied_out_of_a_log_viewer_box_count_as_the_log() -> None:
    # docker-mailserver pod logs copied from k9s, every line boxed in "│ ... │": the submission
    # session over TLS, its message, and the delivery to Gmail over TLSv1.3
    pipe, events = replay(
        wild_block("headers.log", "k3s-single-node-multi-cluster-iac"), complete=True
    )
    assert pipe.stats.totals["unrecognised_lines"] == 0
    assert adoption(pipe.stats)["inbound"]["sessions"] == {"used": 1}
    assert adoption(pipe.stats)["inbound"]["messages"] == {"yes": 1}
    (delivery,) = deliveries(events)
    assert (delivery.status, delivery.tls, delivery.tls_protocol) == ("sent", "yes", "TLSv1.3")
    assert delivery.status_text is not None and delivery.status_text.endswith("- gsmtp")
