"""The peer table's time questions and the peers API's parameters."""

from __future__ import annotations

import pytest
from publicsuffixlist import PublicSuffixList

from tlslogd.peers import PeerEntry, PeerTable, row_seen
from tlslogd.since import BadRequest
from tlslogd.web import peers_query

DAY = 86400.0
T0 = 1_790_000_000.0
PSL = PublicSuffixList()


def test_since_with_a_category_asks_when_that_category_last_happened() -> None:
    """A client that used TLSv1 55 days ago and TLSv1.3 yesterday is not among the peers that
    used a legacy protocol in the last 30 days, though it was seen yesterday."""
    table = PeerTable(psl=PSL)
    old = table.touch("old.example.com[192.0.2.7]", T0)
    assert old is not None
    table.count(old, "legacy_protocol")
    table.touch("old.example.com[192.0.2.7]", T0 + 55 * DAY)  # a TLSv1.3 session
    recent = table.touch("new.example.net[198.51.100.1]", T0 + 50 * DAY)
    assert recent is not None
    table.count(recent, "legacy_protocol")
    since = T0 + 25 * DAY
    assert [p.key for p in table.query(category="legacy_protocol", since=since)] == [
        "new.example.net"
    ]
    assert {p.key for p in table.query(category="legacy_protocol")} == {
        "old.example.com",
        "new.example.net",
    }
    assert {p.key for p in table.query(since=since)} == {"old.example.com", "new.example.net"}
    assert table.row(old)["category_last_seen"] == {"legacy_protocol": T0}


def test_category_times_survive_the_checkpoint_and_old_rows_fall_back_to_last_seen() -> None:
    table = PeerTable(psl=PSL)
    entry = table.touch("mx.example.org[203.0.113.5]:25", T0)
    assert entry is not None
    table.count(entry, "plaintext_out")
    table.touch("mx.example.org[203.0.113.5]:25", T0 + DAY)
    saved = entry.to_json()
    restored = PeerEntry.from_json(saved)
    assert restored.category_last_seen == {"plaintext_out": T0}
    del saved["category_last_seen"]  # a checkpoint written before the field existed
    again = PeerTable(psl=PSL)
    again.load([saved])
    assert [p.key for p in again.query(category="plaintext_out", since=T0 + DAY)] == [
        "mx.example.org"
    ]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"catgory": ["legacy_protocol"]}, "unknown parameter 'catgory'"),
        ({"category": [""]}, "category=''"),
        ({"category": ["legacy"]}, "category='legacy'"),
        ({"limit": ["0"]}, "limit='0'"),
        ({"sort": ["newest"]}, "sort='newest'"),
        ({"since": ["yesterday"]}, "since='yesterday'"),
        ({"since": ["nan"]}, "since='nan'"),
        ({"since": ["-inf"]}, "since='-inf'"),
        ({"since": ["1e999"]}, "since='1e999'"),
        ({"since": [""]}, "since=''"),
        ({"limit": [""]}, "limit=''"),
        ({"sort": [""]}, "sort=''"),
        ({"category": ["tls_failure", "plaintext_out"]}, "category given 2 times"),
    ],
)
def test_a_bad_peers_parameter_is_refused_with_what_was_expected(
    query: dict[str, list[str]], message: str
) -> None:
    with pytest.raises(BadRequest, match="expected") as caught:
        peers_query(query, T0)
    assert str(caught.value).startswith(message)


def test_peers_parameters_as_documented() -> None:
    assert peers_query({}, T0) == (None, None, 100, "count")
    assert peers_query(
        {"category": ["tls_failure"], "since": ["7d"], "limit": ["5"], "sort": ["last_seen"]}, T0
    ) == ("tls_failure", T0 - 7 * DAY, 5, "last_seen")


def test_a_category_is_sorted_and_shown_by_when_that_category_last_happened() -> None:
    """A server that got mail in plaintext on day 0 and has had only TLS since: among the
    plaintext peers it is the one longest ago, and its row says day 0, not its last sighting."""
    table = PeerTable(psl=PSL)
    fixed = table.touch("mx.fixed.example[192.0.2.1]", T0)
    assert fixed is not None
    table.count(fixed, "plaintext_out")
    table.touch("mx.fixed.example[192.0.2.1]", T0 + 9 * DAY)  # TLS deliveries since
    still = table.touch("mx.still.example[192.0.2.2]", T0 + 2 * DAY)
    assert still is not None
    table.count(still, "plaintext_out")
    rows = table.query(category="plaintext_out", sort="last_seen")
    assert [p.key for p in rows] == ["mx.still.example", "mx.fixed.example"]
    assert row_seen(table.row(fixed), "plaintext_out") == T0
    assert fixed.seen("plaintext_out") == T0 and fixed.seen(None) == T0 + 9 * DAY


def test_only_saved_peers_are_deleted_when_evicted() -> None:
    """A flood of new names churns the table between two checkpoints: the peers created and
    evicted in between were never saved, so the checkpoint has nothing to delete for them."""
    table = PeerTable(max_peers=2)
    table.touch("a.example[192.0.2.1]", 1.0)
    table.touch("b.example[192.0.2.2]", 2.0)
    table.saved()  # a checkpoint has a and b
    for i, name in enumerate(("c", "d", "e", "f")):
        table.touch(f"{name}.example[192.0.2.{10 + i}]", 3.0 + i)
    assert table.removed == {"a.example", "b.example"}
    assert table.dirty == {"e.example", "f.example"}
    # a is back before the next checkpoint (evicting e, never saved): its row is replaced
    table.touch("a.example[192.0.2.1]", 9.0)
    assert table.removed == {"b.example"} and "a.example" in table.dirty
    table.touch("g.example[192.0.2.20]", 10.0)  # evicts f, never saved
    table.touch("h.example[192.0.2.21]", 11.0)  # evicts a, whose saved row must go
    assert table.removed == {"b.example", "a.example"}


def test_rows_beyond_a_smaller_cap_are_deleted_at_the_next_checkpoint() -> None:
    big = PeerTable(max_peers=3)
    for i, name in enumerate(("a", "b", "c")):
        big.touch(f"{name}.example[192.0.2.{i + 1}]", float(i))
    small = PeerTable(max_peers=2)
    small.load([p.to_json() for p in big])
    assert [p.key for p in small] == ["b.example", "c.example"]
    assert small.removed == {"a.example"} and not small.dirty
