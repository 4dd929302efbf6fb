"""Property tests: the parser never raises, handshake lines round-trip, tables stay bounded."""

from __future__ import annotations

import itertools
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from publicsuffixlist import PublicSuffixList

from tests.conftest import LAB_LOG, REFERENCE_TIME
from tlslogd.events import TlsEstablished
from tlslogd.parse import Parser
from tlslogd.peers import PeerTable
from tlslogd.pipeline import Pipeline
from tlslogd.sessions import Correlator, LocalNetworks
from tlslogd.stats import Stats

LAB_LINES = LAB_LOG.read_text().splitlines()
PSL = PublicSuffixList()


def pipeline(max_sessions: int = 10_000, max_peers: int = 10_000) -> Pipeline:
    return Pipeline(
        Parser(reference_time=REFERENCE_TIME),
        Correlator(max_entries=max_sessions, is_local=LocalNetworks(()).is_local),
        Stats(peers=PeerTable(max_peers=max_peers, psl=PSL)),
    )


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4000))
def test_no_bytes_make_the_pipeline_raise(data: bytes) -> None:
    pipeline().feed(data)


def mutate(line: str, cut: int, insert: str) -> str:
    cut = cut % (len(line) + 1)
    return line[:cut] + insert + line[cut:]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(LAB_LINES),
    st.integers(min_value=0, max_value=400),
    st.text(alphabet=string.printable + "\x00[]:<>()/\u00e9\ufffd", max_size=30),
    st.booleans(),
)
def test_damaged_real_lines_never_make_the_parser_raise(
    line: str, cut: int, insert: str, truncate: bool
) -> None:
    """Real lines cut short (syslog truncation), with junk inserted anywhere, NULs, brackets."""
    text = line[: cut % (len(line) + 1)] if truncate else mutate(line, cut, insert)
    pipe = pipeline()
    pipe.feed_text(text + "\n")
    pipe.parser.parse_line(text)


def test_a_megabyte_line_and_nul_bytes_are_handled() -> None:
    pipe = pipeline()
    long_reply = "x" * (1 << 20)
    lines = [
        f"Dec  1 10:00:00 mx postfix/smtp[1]: 4F1A2B3C4D: to=<a@example.com>, relay=mx.example.com[192.0.2.25]:25, delay=1, delays=0.1/0/0.4/0.5, dsn=5.0.0, status=bounced (host said: {long_reply})",
        "Dec  1 10:00:00 mx postfix/smtpd[2]: connect from a\x00b[192.0.2.1]",
        "Dec  1 10:00:00 mx postfix/smtpd[2]: Anonymous TLS connection established from a\x00b[192.0.2.1]: TLSv1.3 with cipher X\x00 (256/256 bits)",
    ]
    assert pipe.feed_text("\n".join(lines) + "\n") == 3
    assert pipe.stats.totals["deliveries"] == 1
    assert pipe.stats.totals["tls_handshakes"] == 1


TRUST = st.sampled_from(["Anonymous", "Untrusted", "Trusted", "Verified", ""])
PROTOCOLS = st.sampled_from(["TLSv1.3", "TLSv1.2", "TLSv1.1", "TLSv1", "SSLv3"])
CIPHER = st.from_regex(r"[A-Z0-9][A-Z0-9_-]{2,40}", fullmatch=True)
LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
HOSTS = st.lists(LABEL, min_size=1, max_size=4).map(".".join)
IPV4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
IPV6 = st.lists(st.from_regex(r"[0-9a-f]{1,4}", fullmatch=True), min_size=3, max_size=8).map(
    lambda parts: ":".join(parts[:2]) + "::" + parts[-1]
)


@settings(max_examples=300)
@given(
    trust=TRUST,
    outbound=st.booleans(),
    host=st.one_of(HOSTS, st.just("unknown")),
    addr=st.one_of(IPV4, IPV6),
    port=st.integers(1, 65535),
    protocol=PROTOCOLS,
    cipher=CIPHER,
    bits=st.integers(0, 512),
    alg=st.integers(0, 512),
    kex=st.sampled_from(
        [
            None,
            ("X25519", None),
            ("x25519", None),
            ("ECDHE", "P-256"),
            ("X25519MLKEM768", None),
            ("DHE", "2048 bits"),
        ]
    ),
    sni=st.one_of(st.none(), HOSTS),
    program=st.sampled_from(
        [
            "postfix/smtp",
            "postfix-out/smtp",
            "postfix/relay/smtp",
            "postfix/smtpd",
            "postfix/submission/smtpd",
        ]
    ),
    pid=st.integers(1, 4_000_000),
)
def test_generated_handshake_lines_parse_back_to_their_fields(
    trust: str,
    outbound: bool,
    host: str,
    addr: str,
    port: int,
    protocol: str,
    cipher: str,
    bits: int,
    alg: int,
    kex: tuple[str, str | None] | None,
    sni: str | None,
    program: str,
    pid: int,
) -> None:
    peer = f"{host}[{addr}]" + (f":{port}" if outbound else "")
    way = "to" if outbound else "from"
    sni_text = f" to {sni}" if sni and not outbound else ""
    suffix = ""
    if kex is not None:
        suffix = f" key-exchange {kex[0]}" + (f" ({kex[1]})" if kex[1] else "")
    trust_text = f"{trust} " if trust else ""
    line = (
        f"Dec  1 10:00:00 mx {program}[{pid}]: {trust_text}TLS connection established {way} "
        f"{peer}{sni_text}: {protocol} with cipher {cipher} ({bits}/{alg} bits){suffix}"
    )
    ev = Parser(reference_time=REFERENCE_TIME).parse_line(line)
    assert isinstance(ev, TlsEstablished)
    assert (ev.program, ev.pid, ev.peer, ev.protocol, ev.cipher) == (
        program,
        pid,
        peer,
        protocol,
        cipher,
    )
    assert (ev.cipher_bits, ev.cipher_alg_bits) == (bits, alg)
    assert ev.direction == ("outbound" if outbound else "inbound")
    assert ev.trust == (trust.lower() or "none")
    assert ev.sni == (sni if sni and not outbound else None)
    if kex is None:
        assert ev.key_exchange is None
    else:
        assert ev.key_exchange is not None and ev.key_exchange.upper().startswith(
            kex[0].upper()[:3]
        )


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 100_000), min_size=1, max_size=600), st.integers(10, 50))
def test_session_and_peer_tables_never_exceed_their_caps(pids: list[int], cap: int) -> None:
    pipe = pipeline(max_sessions=cap, max_peers=cap)
    lines = []
    for i, pid in enumerate(pids):  # sessions open in more processes than the table holds
        lines.append(
            f"Dec  1 10:00:{i % 60:02d} mx postfix/smtpd[{pid}]: connect from c{pid}.example.net[192.0.2.{i % 250}]"
        )
    pipe.feed_text("\n".join(lines) + "\n")
    assert len(pipe.correlator) <= cap
    lines = []
    for i, pid in enumerate(pids):  # and end, each with its own client
        lines.append(
            f"Dec  1 10:01:{i % 60:02d} mx postfix/smtpd[{pid}]: disconnect from c{pid}.example.net[192.0.2.{i % 250}] ehlo=1 quit=1 commands=2"
        )
    pipe.feed_text("\n".join(lines) + "\n")
    assert len(pipe.correlator) <= cap
    assert len(pipe.stats.peers) <= cap
    # a peer evicted and seen again is added again, so there are at least this many evictions
    assert pipe.stats.peers.evictions >= len(set(pids)) - cap


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, len(LAB_LINES) - 1), min_size=1, max_size=20, unique=True))
def test_counters_never_decrease_whatever_the_chunking(cuts: list[int]) -> None:
    pipe = pipeline()
    previous: dict[str, int] = {}
    bounds = [0, *sorted(cuts), len(LAB_LINES)]
    for a, b in itertools.pairwise(bounds):
        pipe.feed_text("\n".join(LAB_LINES[a:b]) + "\n")
        totals = dict(pipe.stats.totals)
        assert all(totals[k] >= previous.get(k, 0) for k in totals)
        previous = totals
    whole = pipeline()
    whole.feed_text("\n".join(LAB_LINES) + "\n")
    assert pipe.stats.totals == whole.stats.totals


@given(
    st.lists(
        st.tuples(
            st.integers(0, 60),
            st.sampled_from(["plaintext_out", "offered_not_used", "tls_failure"]),
        ),
        max_size=400,
    ),
    st.integers(5, 30),
    st.integers(0, 8),
)
def test_peer_ranking_equals_a_full_sort_whatever_was_evicted(
    events: list[tuple[int, str]], cap: int, n: int
) -> None:
    table = PeerTable(max_peers=cap, psl=PSL)
    for i, (peer, category) in enumerate(events):
        entry = table.touch(f"mx{peer}.example.net[192.0.2.{peer}]:25", float(i))
        assert entry is not None
        table.count(entry, category)
    assert len(table) <= cap
    for category, (best, rest, having) in table.top(n).items():
        everyone = sorted(
            (p for p in table if p.counts.get(category)),
            key=lambda p: (p.counts[category], p.last_seen),
            reverse=True,
        )
        assert [p.key for p in best] == [p.key for p in everyone[:n]]
        assert rest == sum(p.counts[category] for p in everyone[n:])
        assert having == len(everyone)
