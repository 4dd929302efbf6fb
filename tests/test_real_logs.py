"""Whole real logs (tests/data/real/, see its README.md): Postfix 3.7 and 3.10 writing through
maillog_file and through a real rsyslogd with six output templates. Each test states what an
administrator reading those logs would count by hand."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import DATA, REFERENCE_TIME
from tlslogd.events import Event, SessionEnd, TlsFailure
from tlslogd.parse import Parser
from tlslogd.pipeline import Pipeline
from tlslogd.sessions import Correlator, LocalNetworks
from tlslogd.stats import Stats

REAL = DATA / "real"


class Recorder(Stats):
    """Stats that also keep every outcome of the correlator (what is counted), in order."""

    def __init__(self) -> None:
        super().__init__()
        self.outcomes: list[Event] = []

    def add(self, ev: Event) -> None:
        self.outcomes.append(ev)
        super().add(ev)


def replay(path: Path) -> tuple[Pipeline, list[Event]]:
    stats = Recorder()
    pipe = Pipeline(
        Parser(reference_time=REFERENCE_TIME),
        Correlator(is_local=LocalNetworks(()).is_local),
        stats,
    )
    pipe.feed(path.read_bytes())
    return pipe, stats.outcomes


def failures(events: list[Event]) -> Counter[tuple[str, str]]:
    return Counter((e.direction, e.reason) for e in events if isinstance(e, TlsFailure))


@pytest.mark.parametrize("path", sorted(REAL.glob("*.log")), ids=lambda p: p.name)
def test_every_line_is_read(path: Path) -> None:
    pipe, _ = replay(path)
    lines = path.read_bytes().count(b"\n")
    assert pipe.stats.totals["lines"] == lines
    truncated = path.name.startswith("rsyslog-truncated")
    assert (pipe.stats.totals["unrecognised_lines"] > 0) == truncated


# the queue IDs smtpd and qmqpd logged (not a content filter's re-injection, counted in its
# client's session), and those qmgr took into its active queue: what was really received
_QUEUE_ID = r"(?:smtpd|qmqpd)\[\d+\]: ([0-9A-F]{6,}): client=(?![^\n]*orig_client=)"
_QUEUED = r"qmgr\[\d+\]: ([0-9A-F]{6,}): from="
POSTFIX_LOGS = sorted([*REAL.glob("postfix-*.log"), DATA / "lab" / "maillog.log"])


@pytest.mark.parametrize("path", POSTFIX_LOGS, ids=lambda p: p.name)
def test_received_messages_are_those_qmgr_queued(path: Path) -> None:
    """A queue ID smtpd logged counts as received when the message reached qmgr: not when a
    check refused or discarded it, nor when the client left or reset before DATA ended."""
    text = path.read_text(errors="replace")
    logged = set(re.findall(_QUEUE_ID, text))
    queued = logged & set(re.findall(_QUEUED, text))
    pipe, _ = replay(path)
    assert pipe.stats.totals["messages_received"] == len(queued)
    assert pipe.stats.totals["messages_not_received"] == len(logged - queued)


SAME_STREAM = [
    "rsyslog-fileformat.log",
    "rsyslog-container.log",
    "rsyslog-busybox.log",
    "rsyslog-rfc5424.log",
]


@pytest.mark.parametrize("name", SAME_STREAM)
def test_one_message_stream_counts_the_same_in_every_syslog_format(name: str) -> None:
    reference, _ = replay(REAL / "rsyslog-traditional.log")
    pipe, _ = replay(REAL / name)
    expected = dict(reference.stats.totals)
    got = dict(pipe.stats.totals)
    if name == "rsyslog-rfc5424.log":
        # the tag is cut to "postfix": tlsproxy's "DISCONNECT [addr]:port" cannot be told
        # from postscreen's, and nothing needs it
        expected["events"] -= 4
    assert got == expected


def test_rfc5424_cut_tag_tells_tlsproxy_handshakes_from_the_smtp_clients() -> None:
    """tlsproxy logs its handshake, then the smtp client that asked for the connection logs it
    again: with the tag cut to "postfix" only tlsproxy's CONNECT line just before tells them
    apart. Here the real lines of four reused connections, in the order a busy tlsproxy logs
    them: every CONNECT first, then the handshakes."""
    lines = (REAL / "rsyslog-rfc5424.log").read_text().splitlines(keepends=True)[113:127]
    connects = [line for line in lines if "CONNECT to" in line]
    assert len(connects) == 4
    text = "".join(connects + [line for line in lines if line not in connects])
    stats = Recorder()
    Pipeline(
        Parser(reference_time=REFERENCE_TIME), Correlator(is_local=lambda _: False), stats
    ).feed_text(text)
    handshakes = [e for e in stats.outcomes if e.kind == "tls_established"]
    assert len(handshakes) == 4
    assert {e.service for e in handshakes} == {"smtp"}
    assert {e.pid for e in handshakes} == {16538, 16543, 16545, 16549}


@pytest.mark.parametrize("fmt", ["short-full", "short-unix", "short-monotonic"])
def test_journalctl_output_counts_the_same_as_the_maillog(fmt: str) -> None:
    reference, _ = replay(REAL / "postfix-3.7-rare.log")
    pipe, events = replay(REAL / f"journalctl-{fmt}.log")
    assert pipe.stats.totals == reference.stats.totals
    if fmt == "short-monotonic":
        assert {e.ts for e in events} == {None}  # no wall clock in that format
    else:  # whole seconds: the journal kept lines of one second apart by a microsecond each
        seconds = {e.ts for e in replay(REAL / "postfix-3.7-rare.log")[1]}
        assert {int(e.ts or 0) for e in events} == seconds


@pytest.mark.parametrize("language", ["de", "fr"])
def test_journalctl_month_names_of_other_locales(language: str) -> None:
    """``Dez 05``, ``déc. 05``: journalctl -o short under a German or French locale, ten days
    after the maillog's lines. Same numbers, and every timestamp read."""
    reference, _ = replay(REAL / "postfix-3.7-rare.log")
    stats = Recorder()
    pipe = Pipeline(
        Parser(reference_time=REFERENCE_TIME + 30 * 86400),
        Correlator(is_local=LocalNetworks(()).is_local),
        stats,
    )
    pipe.feed((REAL / f"journalctl-short-{language}.log").read_bytes())
    assert pipe.stats.totals == reference.stats.totals
    seconds = {e.ts for e in replay(REAL / "postfix-3.7-rare.log")[1]}
    assert {(e.ts or 0) - 10 * 86400 for e in stats.outcomes} == seconds


def test_rfc5424_without_slash_infers_the_daemon_from_the_message() -> None:
    _, events = replay(REAL / "rsyslog-rfc5424.log")
    by_kind = {(e.kind, e.service) for e in events}
    assert ("session_end", "smtpd") in by_kind
    assert ("tls_established", "smtpd") in by_kind
    assert ("tls_established", "smtp") in by_kind
    assert all(e.program == "postfix" for e in events)
    ends = [e for e in events if isinstance(e, SessionEnd)]
    assert Counter(e.starttls for e in ends) == {"used": 16, "not_used": 2, "failed": 3}


def test_rfc5424_cut_tag_library_problems_of_smtpd_sessions_are_inbound() -> None:
    """``warning: TLS library problem`` does not say whose it is; with the tag cut to "postfix"
    the process' open smtpd session does, as ``tlslogd parse`` prints it."""
    text = (REAL / "rsyslog-rfc5424.log").read_text()
    printed: list[Event] = []
    Pipeline(
        Parser(reference_time=REFERENCE_TIME), Correlator(is_local=lambda _: False), Stats()
    ).feed_text(text, printed.append)
    smtpd_pids = {e.pid for e in printed if e.kind == "session_start"}
    library = [e for e in printed if isinstance(e, TlsFailure) and e.source == "library"]
    assert library and all(e.pid in smtpd_pids for e in library)
    assert {(e.direction, e.service) for e in library} == {("inbound", "smtpd")}


def test_rfc5424_with_slash_keeps_the_program() -> None:
    pipe, events = replay(REAL / "rsyslog-rfc5424-slash.log")
    assert {e.program for e in events} >= {"postfix/smtpd", "postfix/smtp"}
    assert pipe.stats.totals["tls_handshakes_outbound"] == 10
    assert pipe.stats.totals["sessions"] == 21


def test_a_log_saved_with_crlf_line_ends_reads_the_same(tmp_path: Path) -> None:
    """A maillog copied through a Windows machine: the same counts, and ``parse`` prints each
    line without the carriage return, as it was logged."""
    original = DATA / "lab" / "maillog.log"
    crlf = tmp_path / "maillog.log"
    crlf.write_bytes(original.read_bytes().replace(b"\n", b"\r\n"))
    reference, _ = replay(original)
    pipe, _ = replay(crlf)
    assert pipe.stats.totals == reference.stats.totals
    parser = Parser(reference_time=REFERENCE_TIME)
    text = crlf.read_bytes().decode()
    assert "\r\n" in text
    logged = set(original.read_text().splitlines())
    lines = [e.line for e in parser.scan(text, with_lines=True)]
    assert len(lines) == reference.stats.totals["events"]
    assert all(line in logged for line in lines)


def test_repeated_message_reduction_expands_to_every_repetition() -> None:
    text = (REAL / "rsyslog-repeated.log").read_text()
    # "message repeated 2 times: [ connect from ...]" is two more sessions starting
    assert text.count("message repeated 2 times: [ connect from") == 1
    events = list(Parser(reference_time=REFERENCE_TIME).scan(text))
    starts = sum(1 for e in events if e.kind == "session_start")
    assert starts == text.count(": connect from ") + 2
    assert not any(e.kind == "unrecognised" for e in events)


def test_unusable_tls_policies_count_once_per_deferred_attempt() -> None:
    """Two malformed smtp_tls_policy_maps entries: each attempt logs what is wrong with the
    entry, the policy lookup failure and a deferral with relay=none; that is one failure, with
    the destination's host and both warnings, and no delivery that could have used TLS."""
    text = (REAL / "postfix-3.7-policy.log").read_text()
    deferrals = text.count("status=deferred (client TLS configuration problem)")
    assert deferrals == 8
    pipe, events = replay(REAL / "postfix-3.7-policy.log")
    found = [e for e in events if isinstance(e, TlsFailure)]
    assert failures(events) == {("outbound", "policy"): deferrals}
    assert Counter(e.peer for e in found) == {"127.0.0.12": 4, "127.0.0.13": 4}
    assert all("smtp_tls_policy_maps" in e.detail for e in found)
    assert sum("invalid attribute name" in e.detail for e in found) == 4
    assert pipe.stats.totals["unrecognised_lines"] == 0


def test_postfix_3_10_inbound_failures_have_their_causes() -> None:
    _, events = replay(REAL / "postfix-3.10-trixie.log")
    inbound = {r: n for (d, r), n in failures(events).items() if d == "inbound"}
    assert inbound == {
        "protocol": 3,  # TLSv1 (twice) and TLSv1.1 clients against >=TLSv1.2
        "cipher": 1,  # a client offering only X25519MLKEM768: "no suitable key share"
        "lost_connection": 1,  # STARTTLS, then the client hung up
        "handshake": 1,  # garbage instead of a ClientHello: "wrong version number"
    }


def test_silence_after_a_completed_handshake_is_not_a_tls_failure() -> None:
    # "NOQUEUE: timeout after STARTTLS" (3.10) and "timeout after STARTTLS" (3.7) follow a
    # successful handshake; the session's counters say starttls=1
    for name in ("postfix-3.10-trixie.log", "postfix-3.7-rare.log"):
        _, events = replay(REAL / name)
        slow = [e for e in events if "/slow/" in e.program]
        assert [e.reason for e in slow if isinstance(e, TlsFailure)] == (
            [] if name.startswith("postfix-3.10") else ["timeout"]  # 3.7: no ClientHello at all
        )
        ends = [e for e in slow if isinstance(e, SessionEnd)]
        assert ends and all(e.starttls in ("used", "failed") for e in ends)


def test_silence_after_the_handshake_without_summaries_is_not_a_failure(tmp_path: Path) -> None:
    # smtpd_tls_loglevel = 0 logs no summary: the counters alone say the handshake succeeded
    text = (REAL / "postfix-3.7-rare.log").read_text().splitlines()
    session = [line for line in text[93:97] if "TLS connection established" not in line]
    assert any("timeout after STARTTLS" in line for line in session)
    path = tmp_path / "loglevel0.log"
    path.write_text("\n".join(session) + "\n")
    _, events = replay(path)
    assert [e for e in events if isinstance(e, TlsFailure)] == []
    assert [e.starttls for e in events if isinstance(e, SessionEnd)] == ["used"]


def test_postscreen_tls_failures_take_the_library_reason() -> None:
    _, events = replay(REAL / "postfix-3.7-rare.log")
    proxy = [e for e in events if isinstance(e, TlsFailure) and e.service == "tlsproxy"]
    assert [(e.direction, e.peer) for e in proxy] == [
        ("inbound", "[127.0.0.21]:47883"),
        ("inbound", "[127.0.0.22]:33847"),
    ]
    assert "wrong version number" in proxy[0].detail
    assert "wrong version number" not in proxy[1].detail  # a hang-up: no library warning


def test_client_certificate_failures_are_certificate_failures() -> None:
    _, events = replay(REAL / "postfix-3.7-rare.log")
    ccert = [e for e in events if isinstance(e, TlsFailure) and "/ccert/" in e.program]
    assert [e.reason for e in ccert] == ["certificate", "certificate"]
    assert "No client certificate presented" in ccert[0].detail
    assert "Client certificate not trusted" in ccert[1].detail


def test_sink_saw_every_handshake_the_main_instance_made() -> None:
    main, _ = replay(REAL / "postfix-3.10-trixie.log")
    sink_text = (REAL / "postfix-3.10-trixie.sink.log").read_text()
    assert main.stats.totals["tls_handshakes_outbound"] == sink_text.count(
        "TLS connection established from"
    )
