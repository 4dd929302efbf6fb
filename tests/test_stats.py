"""Stats' bounds on what /metrics exports: its number of series, and series across restarts."""

from __future__ import annotations

from tests.conftest import LAB_LOG, REFERENCE_TIME
from tlslogd.parse import Parser
from tlslogd.pipeline import Pipeline
from tlslogd.sessions import Correlator, LocalNetworks
from tlslogd.stats import MAX_SERIES, OTHER, SERIES_RETENTION_SECONDS, Stats

LAB_TEXT = LAB_LOG.read_text()
HANDSHAKE = next(
    line for line in LAB_TEXT.splitlines(True) if "TLS connection established from" in line
)


def replay(text: str, stats: Stats) -> Stats:
    Pipeline(
        Parser(reference_time=REFERENCE_TIME),
        Correlator(is_local=LocalNetworks(()).is_local),
        stats,
    ).feed_text(text)
    return stats


def restarted(stats: Stats, **kwargs: int) -> Stats:
    """The next process: a new Stats restored from this one's checkpoint."""
    nxt = Stats(**kwargs)
    nxt.restore(stats.durable())
    return nxt


def crafted(protocols: int, ciphers: int) -> str:
    """A local user's logger lines: a real handshake line with every protocol and cipher name
    combination, each under the label cap on its own."""
    return "".join(
        HANDSHAKE.replace("TLSv1.2", f"TLSv9.{p}").replace(
            "ECDHE-RSA-AES128-GCM-SHA256", f"CIPHER-{c}"
        )
        for p in range(protocols)
        for c in range(ciphers)
    )


def test_label_combinations_cannot_multiply_the_series() -> None:
    stats = replay(crafted(60, 60), Stats())
    assert sum(len(c) for c in stats.counters.values()) == MAX_SERIES + 1
    series = stats.counters["handshakes"]
    # past the limit, the log-text labels of a new combination are folded, never dropped
    folded = {k: n for k, n in series.items() if k[4] == OTHER}
    assert list(folded.values()) == [3600 - MAX_SERIES]
    ((direction, service, program, trust, _, cipher, _),) = folded
    assert (direction, service, program, trust, cipher) == ("inbound", OTHER, OTHER, OTHER, OTHER)
    assert stats.cap.folded["cipher"] == 3600 - MAX_SERIES
    # the next process's series count from those it exports again
    again = replay(crafted(60, 60).replace("CIPHER-", "NEW-"), restarted(stats))
    assert sum(len(c) for c in again.counters.values()) == MAX_SERIES + 1


def test_every_series_stays_exported_across_restarts_without_mail() -> None:
    first = replay(LAB_TEXT, Stats())
    exported = {f: set(c) for f, c in first.counters.items()}
    second = restarted(first)
    third = restarted(second)
    for family, keys in exported.items():
        assert set(third.counters[family]) == keys, family
        assert set(third.counters[family].values()) <= {0}, family


def test_series_idle_for_the_retention_period_are_dropped_at_the_next_restart() -> None:
    first = replay(LAB_TEXT, Stats())
    assert first.last_event_ts is not None
    later = restarted(first)
    later.saw(None, first.last_event_ts + SERIES_RETENTION_SECONDS - 60)
    assert restarted(later).counters["deliveries"]  # within the period: kept
    later.saw(None, first.last_event_ts + SERIES_RETENTION_SECONDS + 60)
    gone = restarted(later)
    assert gone.counters["deliveries"] == {}
    # the counts themselves are durable: the summaries still have them
    assert gone.since_created("deliveries") == first.counters["deliveries"]


def test_the_label_cap_holds_across_restarts() -> None:
    """Each process used to start its label cap afresh, so every restart let label_cap more
    crafted values in; the values of restored series now take their places under it."""
    first = replay(crafted(1, 5), Stats(label_cap=4))
    assert {k[5] for k in first.counters["handshakes"]} == {
        "CIPHER-0",
        "CIPHER-1",
        "CIPHER-2",
        "CIPHER-3",
        OTHER,
    }
    second = restarted(first, label_cap=4)
    replay(crafted(1, 8).replace("CIPHER-", "NEW-CIPHER-"), second)
    counted = {k[5]: n for k, n in second.counters["handshakes"].items() if n}
    assert counted == {OTHER: 8}
