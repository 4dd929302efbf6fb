"""The status page at ``/``: ``render_status`` on summaries built from the real lab log, and the
page as a browser renders it, checked against the JSON API of the same running daemon."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DATA, LAB_LOG
from tlslogd import summary as summaries
from tlslogd.config import Settings
from tlslogd.daemon import Daemon
from tlslogd.sources import Chunk, SourceHealth
from tlslogd.statuspage import REFRESH_SECONDS, STALE_AFTER, render_status

ROOT = Path(__file__).parent.parent
ARTIFACTS = ROOT / "artifacts"
LAB_TEXT = LAB_LOG.read_text()
LAB_LINES = len(LAB_TEXT.splitlines())
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Real line shapes (Postfix 3.x) for what the lab log does not contain: a client on TLSv1, a
# post-quantum hybrid key exchange, and a hostile relay name.
EXTRA_LINES = """\
Nov 25 20:07:01 mx postfix/smtpd[4001]: connect from old.example.net[192.0.2.66]
Nov 25 20:07:01 mx postfix/smtpd[4001]: Anonymous TLS connection established from old.example.net[192.0.2.66]: TLSv1 with cipher ECDHE-RSA-AES256-SHA (256/256 bits)
Nov 25 20:07:02 mx postfix/smtpd[4001]: disconnect from old.example.net[192.0.2.66] ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7
Nov 25 20:07:03 mx postfix/smtp[4002]: Trusted TLS connection established to mx.pq.example[192.0.2.77]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519MLKEM768 server-signature RSA-PSS (2048 bits) server-digest SHA256
Nov 25 20:07:03 mx postfix/smtp[4002]: 1A2B3C4D5E: to=<a@pq.example>, relay=mx.pq.example[192.0.2.77]:25, delay=0.2, delays=0.01/0.01/0.1/0.08, dsn=2.0.0, status=sent (250 2.0.0 Ok)
"""
HOSTILE_PEER = "<script>alert(1)</script>"
HOSTILE_CIPHER = '"><svg/onload=alert(2)>'
HOSTILE_LINES = f"""\
Nov 25 20:07:04 mx postfix/smtp[4003]: 2A2B3C4D5E: to=<a@evil.example>, relay={HOSTILE_PEER}[192.0.2.99]:25, delay=0.2, delays=0.01/0.01/0.1/0.08, dsn=2.0.0, status=sent (250 2.0.0 Ok)
Nov 25 20:07:05 mx postfix/smtpd[4004]: Anonymous TLS connection established from mail.example.org[192.0.2.98]: TLSv1.2 with cipher {HOSTILE_CIPHER} (128/128 bits)
"""


# -- reading the page -----------------------------------------------------------------------

_VOID = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "source",
    "wbr",
}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    def text(self) -> str:
        parts = [c if isinstance(c, str) else c.text() for c in self.children]
        return re.sub(r"\s+", " ", "".join(parts)).strip()

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.walk()

    def find(self, tag: str | None = None, **attrs: str | None) -> list[Node]:
        """Descendants with this tag whose attributes (``data_key`` is ``data-key``) match;
        ``None`` only asks for the attribute to be there."""
        wanted = {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()}
        return [
            n
            for n in self.walk()
            if (tag is None or n.tag == tag)
            and all(k in n.attrs and (v is None or n.attrs[k] == v) for k, v in wanted.items())
        ]


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


class Page:
    def __init__(self, html: str) -> None:
        self.html = html
        builder = _TreeBuilder()
        builder.feed(html)
        builder.close()
        self.root = builder.root

    def find(self, tag: str | None = None, **attrs: str | None) -> list[Node]:
        return self.root.find(tag, **attrs)

    def by_id(self, ident: str) -> Node:
        found = self.find(id=ident)
        assert len(found) == 1, f"#{ident}: {len(found)} elements"
        return found[0]

    def has(self, ident: str) -> bool:
        return bool(self.find(id=ident))

    def value(self, ident: str) -> float:
        return float(self.by_id(ident).attrs["data-value"])

    def census(self, label: str, direction: str, key: str) -> int:
        (row,) = self.find("tr", data_census=label, data_direction=direction, data_key=key)
        (cell,) = row.find("td", data_value=None)
        return int(cell.attrs["data-value"])

    def peers(self, category: str) -> list[tuple[str, int]]:
        rows = self.by_id(f"peers-{category}").find("tr", data_peer=None)
        return [(r.attrs["data-peer"], int(r.attrs["data-count"])) for r in rows]


# -- summaries from the real lab log ----------------------------------------------------------


class StubSource:
    """A source that reads nothing and reports what a test asks it to."""

    def __init__(self, path: Path, health: SourceHealth, lag: int | None) -> None:
        self.path = path
        self._health = health
        self._lag = lag

    async def chunks(self) -> AsyncIterator[Chunk]:
        for chunk in ():
            yield chunk

    def position(self) -> dict[str, Any] | None:
        return {"path": str(self.path), "offset": len(LAB_TEXT.encode())}

    def health(self) -> SourceHealth:
        return self._health

    def counters(self) -> dict[str, dict[str, int]]:
        return {"bytes_read": {"": 0}, "rotations": {}, "read_errors": {}}

    def lag_bytes(self) -> int | None:
        return self._lag

    def tail_started(self) -> float | None:
        return None

    def reopen(self) -> None:
        return None

    def close(self) -> None:
        return None


def build(
    tmp_path: Path,
    text: str = "",
    health: SourceHealth | None = None,
    lag: int | None = 0,
    local_networks: tuple[str, ...] = (),
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """What the daemon hands ``render_status`` after reading ``text`` through its pipeline."""
    log = tmp_path / "mail.log"
    settings = Settings(
        log=str(log), state_dir=tmp_path / "state", local_networks=list(local_networks)
    )
    source = StubSource(log, health or SourceHealth(True, "", {"path": str(log)}), lag)
    daemon = Daemon(settings, source_factory=lambda kind, position: source)
    try:
        daemon.pipeline.feed(text.encode())
        return daemon.summary(), summaries.peers(daemon.stats, limit=10)
    finally:
        daemon.store.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Page]:
    summary, peers = build(tmp_path_factory.mktemp("lab"), LAB_TEXT)
    return summary, Page(render_status(summary, peers))


def test_lab_adoption_figures_are_the_summary_s(lab: tuple[dict[str, Any], Page]) -> None:
    summary, page = lab
    out = summary["adoption"]["outbound"]
    assert page.value("outbound-tls-percent") == out["tls_percent"] == 85.71
    assert page.by_id("outbound-tls-percent").text() == "85.7 %"
    assert page.value("outbound-tls") == out["sent_remote"]["yes"] == 42
    assert page.value("outbound-plaintext") == out["sent_remote"]["no"] == 7
    assert page.value("outbound-unknown") == 0
    assert page.value("outbound-offered-plaintext") == out["offered_plaintext_sent"] == 3
    # every deferral of the lab is TLS's doing (encrypt and verify policies, the fallback)
    assert page.value("outbound-held-by-tls") == out["held_by_tls"] == 34
    inbound = summary["adoption"]["inbound"]
    assert page.value("inbound-tls-percent") == inbound["tls_session_percent"] == 85.71
    for key, n in {"used": 46, "implicit": 2, "not_used": 4, "failed": 4}.items():
        assert page.value(f"inbound-{key}") == inbound["sessions"][key] == n
    assert page.value("messages-tls-percent") == inbound["tls_message_percent"] == 93.88
    assert page.value("messages-tls") == 46
    assert page.value("messages-plaintext") == 3


def test_the_messages_card_says_how_many_queue_ids_were_not_received(tmp_path: Path) -> None:
    # the real Postfix log of abandoned transactions: 12 queue IDs, 6 of them queued
    text = (DATA / "real" / "postfix-3.7-abandoned.log").read_text()
    page = Page(render_status(*build(tmp_path, text)))
    assert (page.value("messages-tls"), page.value("messages-plaintext")) == (3, 3)
    assert page.value("messages-not-received") == 6


def test_a_lab_on_loopback_is_told_how_to_count_its_peers(tmp_path: Path) -> None:
    """With the default local networks, every peer of the loopback lab is local: the page says
    so, and how to count them, instead of showing empty figures without a word."""
    summary, peers = build(tmp_path, LAB_TEXT, local_networks=("127.0.0.0/8", "::1/128"))
    page = Page(render_status(summary, peers))
    assert page.value("outbound-local") == 49
    assert page.value("inbound-local") == 56
    assert page.value("messages-local") == summary["adoption"]["inbound"]["messages_local"] > 0
    html = render_status(summary, peers)
    assert html.count("set <code>local_networks = []</code>") == 2
    (programs,) = page.find("section", id="by-program")
    assert "No remote inbound sessions; 56 from local clients" in programs.text()
    (totals,) = page.find("section", id="totals")
    assert "remote inbound sessions over TLS" in totals.text()
    assert "… from local clients" in totals.text()
    assert "local_networks = []" not in render_status(*build(tmp_path / "r", LAB_TEXT))


def test_lab_censuses_failures_programs_and_totals(lab: tuple[dict[str, Any], Page]) -> None:
    summary, page = lab
    handshakes = summary["handshakes"]
    for label, census in handshakes.items():
        for direction, counts in census.items():
            for key, n in counts.items():
                assert page.census(label, direction, key) == n, (label, direction, key)
    assert page.census("protocol", "outbound", "TLSv1.3") == 48
    assert page.census("trust", "outbound", "untrusted") == 20
    (cert,) = page.find("tr", data_reason="certificate")
    assert [c.attrs["data-value"] for c in cert.find("td")] == ["0", "19"]
    assert "certificate missing" in cert.text()
    (submission,) = page.find("tr", data_program="postfix/submission/smtpd")
    cells = {
        c.attrs["data-key"]: int(c.attrs["data-value"])
        for c in submission.find("td", data_key=None)
    }
    assert cells == {"used": 4, "implicit": 0, "not_used": 1, "failed": 0}
    assert "80.0 %" in submission.text()
    for key, n in summary["durable"]["totals"].items():
        (cell,) = page.find("td", data_total=key)
        assert int(cell.attrs["data-value"]) == n
    assert page.find("td", data_total="lines")[0].attrs["data-value"] == str(LAB_LINES)


def test_lab_peers_with_links_to_the_full_lists(lab: tuple[dict[str, Any], Page]) -> None:
    summary, page = lab
    assert page.peers("plaintext_out") == [("127.0.0.3", 4), ("127.0.0.4", 2), ("127.0.0.14", 1)]
    assert page.peers("offered_not_used") == [("127.0.0.4", 2), ("127.0.0.14", 1)]
    assert page.peers("inbound_no_starttls") == [("localhost", 3), ("::1", 1)]
    assert page.peers("tls_failure")[0] == ("127.0.0.9", 10)
    assert page.peers("legacy_protocol") == []
    for category, n in summary["peers"]["by_category"].items():
        section = page.by_id(f"peers-{category}")
        assert section.find("a", href=f"/api/v1/peers?category={category}")
        assert page.value(f"peers-{category}-count") == n
    (row,) = page.by_id("peers-tls_failure").find("tr", data_peer="127.0.0.13")
    assert "protocol ×5" in row.text()
    assert re.search(r"\d{4}-11-25 20:06:38", row.text())
    plain = page.by_id("peers-plaintext_out").find("tr", data_peer="127.0.0.3")[0]
    assert "0 of 4 delivery attempts over TLS" in plain.text()


def test_lab_has_no_legacy_protocols_nobody_safe_to_disable(
    lab: tuple[dict[str, Any], Page],
) -> None:
    _, page = lab
    verdict = page.by_id("legacy-verdict")
    assert verdict.attrs["data-state"] == "safe"
    assert verdict.text() == "Nobody — safe to disable"
    # the lab already refuses TLSv1/TLSv1.1: the clients that offered only those failed
    assert page.value("legacy-protocol-failures") == 3
    assert page.value("legacy-peers") == 0
    assert page.find("a", href="/api/v1/peers?category=legacy_protocol")
    assert not page.find("tr", class_="legacy")
    assert page.by_id("log-status").attrs["data-state"] == "ok"
    for banner in ("banner-log", "banner-stale", "banner-empty"):
        assert not page.has(banner)
    assert page.by_id("banner-offline").attrs.get("hidden") == ""


def test_legacy_protocol_peers_and_post_quantum_key_exchange(tmp_path: Path) -> None:
    summary, peers = build(tmp_path, LAB_TEXT + EXTRA_LINES)
    page = Page(render_status(summary, peers))
    verdict = page.by_id("legacy-verdict")
    assert verdict.attrs["data-state"] == "in-use"
    link = page.by_id("legacy-peers")
    assert link.tag == "a"
    # the log's last 30 days (log time), as the count: not the 30 days before now
    last = dt.datetime.fromisoformat(summary["durable"]["last_event"]).timestamp()
    since = int(last - 30 * 86400)
    assert link.attrs["href"] == f"/api/v1/peers?category=legacy_protocol&since={since}"
    assert page.value("legacy-peers") == 1 and link.text() == "1 peer"
    assert page.value("legacy-inbound") == 1 and not page.has("legacy-outbound")
    (card,) = page.find("section", aria_labelledby="h-legacy")
    assert "Of them: 1 client (smtpd_tls_protocols)." in card.text()
    # outbound handshakes are logged and none used them: that setting can change now
    assert (
        "smtp_tls_protocols = >=TLSv1.2 breaks no one" in page.by_id("legacy-safe-outbound").text()
    )
    assert not page.has("legacy-safe-inbound")
    (old,) = page.by_id("peers-legacy_protocol").find("tr", data_peer="old.example.net")
    assert "TLSv1 ×1 · as a client" in old.text()
    (legacy,) = page.find("tr", data_census="protocol", data_direction="inbound", data_key="TLSv1")
    assert legacy.attrs["class"] == "legacy" and "legacy" in legacy.text()  # not colour alone
    assert page.census("protocol", "inbound", "TLSv1") == 1
    assert page.peers("legacy_protocol") == [("old.example.net", 1)]
    (row,) = page.by_id("peers-legacy_protocol").find("tr", data_peer="old.example.net")
    assert "example.net" in row.text() and "TLSv1 ×1" in row.text()
    (pq,) = page.find("tr", data_census="key_exchange", data_key="X25519MLKEM768")
    assert "post-quantum" in pq.text()
    assert page.census("key_exchange", "outbound", "X25519MLKEM768") == 1


def without_summaries(text: str, direction: str) -> str:
    """``text`` as Postfix writes it with that direction's TLS loglevel at 0: no handshake
    summary (``TLS connection established from``/``to``)."""
    needle = "TLS connection established " + ("from" if direction == "inbound" else "to")
    return "".join(line for line in text.splitlines(keepends=True) if needle not in line)


def test_legacy_verdict_only_where_handshakes_are_logged(tmp_path: Path) -> None:
    """smtpd_tls_loglevel = 0 (Postfix's default) logs no inbound summary: nobody on TLSv1
    inbound cannot be told from nothing logged, so only the outbound side is called safe."""
    summary, peers = build(tmp_path / "in", without_summaries(LAB_TEXT, "inbound"))
    page = Page(render_status(summary, peers))
    verdict = page.by_id("legacy-verdict")
    assert verdict.attrs["data-state"] == "partial"
    assert verdict.text() == "Nobody outbound; inbound unknown"
    (card,) = page.find("section", aria_labelledby="h-legacy")
    assert "smtp_tls_protocols = >=TLSv1.2" in card.text()
    assert "smtpd_tls_protocols" not in card.text()
    assert "set smtpd_tls_loglevel = 1 in main.cf" in page.by_id("legacy-unknown").text()
    (protocols,) = page.find("section", id="census-protocol")
    assert "No inbound handshake is logged: set smtpd_tls_loglevel = 1." in protocols.text()
    # the lab log was read from its start: figures count from its first event, in log time
    assert re.search(r"Counted since \d{4}-11-25 20:06:08", page.by_id("peers-tls_failure").text())

    assert not page.has("outbound-unknown-note") and not page.has("inbound-unknown-note")

    both = without_summaries(without_summaries(LAB_TEXT, "inbound"), "outbound")
    summary, peers = build(tmp_path / "both", both)
    page = Page(render_status(summary, peers))
    assert page.by_id("legacy-verdict").attrs["data-state"] == "not-logged"
    assert page.by_id("legacy-verdict").text() == "Cannot tell"
    unknown = page.by_id("legacy-unknown").text()
    assert "smtpd_tls_loglevel = 1 and smtp_tls_loglevel = 1" in unknown
    note = page.by_id("outbound-unknown-note").text()
    assert note.startswith("TLS use unknown for") and "set smtp_tls_loglevel = 1" in note


def test_a_peer_that_used_tlsv1_long_ago_does_not_block_disabling_it(tmp_path: Path) -> None:
    """The TLSv1 client's session 46 days before the rest of the log: nobody would break now."""
    old_session = "".join(
        line.replace("Nov 25", "Oct 10", 1) for line in EXTRA_LINES.splitlines(keepends=True)[:3]
    )
    summary, peers = build(tmp_path, old_session + LAB_TEXT)
    assert summary["peers"]["by_category"]["legacy_protocol"] == 1
    assert summary["peers"]["legacy_last_30d"] == {"peers": 0, "inbound": 0, "outbound": 0}
    page = Page(render_status(summary, peers))
    verdict = page.by_id("legacy-verdict")
    assert verdict.attrs["data-state"] == "safe"
    (card,) = page.find("section", aria_labelledby="h-legacy")
    assert "No peer used TLSv1 or TLSv1.1 in the last 30 days of the log" in card.text()
    assert page.by_id("legacy-earlier").text() == (
        "1 peer used them earlier, none in the last 30 days of the log."
    )


def test_empty_summary_says_no_data_yet(tmp_path: Path) -> None:
    summary, peers = build(tmp_path)
    html = render_status(summary, peers)
    page = Page(html)
    for ident in ("outbound-tls-percent", "inbound-tls-percent", "messages-tls-percent"):
        assert page.by_id(ident).text() == "–"
        assert "data-value" not in page.by_id(ident).attrs
    assert page.value("outbound-plaintext") == 0
    assert page.by_id("legacy-verdict").attrs["data-state"] == "no-data"
    assert "--from-start" in page.by_id("banner-empty").text()
    assert "No inbound handshakes yet." in page.by_id("census-protocol").text()
    assert "No TLS failures." in page.by_id("failures").text()
    for category in summary["peers"]["by_category"]:
        assert page.peers(category) == []
        assert "None." in page.by_id(f"peers-{category}").text()
    assert page.by_id("log-status").attrs["data-state"] == "ok"


def test_hostile_names_from_the_log_are_escaped(tmp_path: Path) -> None:
    summary, peers = build(tmp_path, LAB_TEXT + HOSTILE_LINES)
    assert HOSTILE_CIPHER in summary["handshakes"]["cipher"]["inbound"]
    assert HOSTILE_PEER in [p["peer"] for p in peers["plaintext_out"]]
    summary["inbound_by_program"]['postfix/<i onmouseover="x">'] = {"used": 1}
    summary["log"]["reason"] = "<b>bad</b>"
    summary["log"]["healthy"] = False
    html = render_status(summary, peers)
    assert "<script>alert" not in html and "<svg" not in html and "<i " not in html
    assert "<b>bad" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    page = Page(html)
    # the names survive escaping: a reader sees exactly what the log said
    assert (HOSTILE_PEER, 1) in page.peers("plaintext_out")
    assert page.census("cipher", "inbound", HOSTILE_CIPHER) == 1
    assert "<b>bad</b>" in page.by_id("banner-log").text()
    assert len(page.find("script")) == 1  # the page's own


def test_missing_log_banner_with_the_reason(tmp_path: Path) -> None:
    reason = "waiting for /var/log/mail.log to appear"
    summary, peers = build(tmp_path, health=SourceHealth(False, reason), lag=None)
    page = Page(render_status(summary, peers))
    banner = page.by_id("banner-log")
    assert banner.attrs["role"] == "alert"
    assert reason in banner.text()
    assert page.by_id("log-status").attrs["data-state"] == "unhealthy"
    assert not page.has("banner-empty") and not page.has("banner-stale")
    assert page.find("title")[0].text().startswith("⚠")


def test_stale_banner_when_the_log_grows_and_nothing_is_read(tmp_path: Path) -> None:
    summary, peers = build(tmp_path, LAB_TEXT, lag=4096)
    now = time.time()

    def state(lag: int | None, last_read: float | None, started: float) -> tuple[str, Page]:
        doc = json.loads(json.dumps(summary))
        doc["log"]["lag_bytes"] = lag
        doc["log"]["last_read"] = summaries.iso(last_read)
        doc["process"]["started"] = summaries.iso(started)
        page = Page(render_status(doc, peers, now=now))
        return page.by_id("log-status").attrs["data-state"], page

    long_ago = now - STALE_AFTER - 240
    stale, page = state(4096, long_ago, long_ago)
    assert stale == "stale"
    banner = page.by_id("banner-stale")
    assert banner.attrs["role"] == "alert"
    assert "nothing read for 5 min." in banner.text() and "4.0 KiB" in banner.text()
    assert state(4096, None, long_ago)[0] == "stale"  # never read anything since the start
    assert state(4096, now - 10, long_ago)[0] == "ok"  # catching up: read 10 s ago
    assert state(0, long_ago, long_ago)[0] == "ok"  # a quiet mail server: nothing to read
    assert state(None, long_ago, long_ago)[0] == "ok"  # no lag known (journal)
    assert state(4096, None, now - 5)[0] == "ok"  # just started
    assert not state(0, long_ago, long_ago)[1].has("banner-stale")


def test_page_is_self_contained_accessible_and_refreshes(lab: tuple[dict[str, Any], Page]) -> None:
    _, page = lab
    html = page.html
    (root,) = page.find("html")
    assert root.attrs["lang"] == "en"
    assert page.find("meta", name="viewport")
    (refresh,) = page.find("meta", http_equiv="refresh")
    assert refresh.attrs["content"] == str(REFRESH_SECONDS)
    assert f'<noscript><meta http-equiv="refresh" content="{REFRESH_SECONDS}"></noscript>' in html
    # nothing from elsewhere: no external scripts, styles, fonts or images
    # (the icon is an empty data: URL, so that the browser does not ask for /favicon.ico)
    assert [link.attrs for link in page.find("link")] == [{"rel": "icon", "href": "data:,"}]
    assert not page.find("img") and not page.find("iframe")
    assert all("src" not in s.attrs for s in page.find("script"))
    assert not re.search(r"url\(|@import|https?://", html)
    # one h1, a heading in every section, headers in every table
    assert len(page.find("h1")) == 1
    for section in page.find("section"):
        assert section.find("h2"), section.attrs
    for table in page.find("table"):
        assert table.find("th"), table.attrs
    ids = [n.attrs["id"] for n in page.find(id=None)]
    assert len(ids) == len(set(ids))
    labelled = {n.attrs["aria-labelledby"] for n in page.find("section", aria_labelledby=None)}
    assert labelled <= set(ids)


# -- the page in a real browser ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RunningDaemon:
    """``tlslogd run`` as a subprocess on 127.0.0.1, stopped by pid."""

    def __init__(self, log: Path, state: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [
            sys.executable,
            "-m",
            "tlslogd",
            "run",
            "--log",
            str(log),
            "--from-start",
            "--local-networks",
            "",
            "--state-dir",
            str(state),
            "--listen",
            f"127.0.0.1:{self.port}",
        ]
        env = {**os.environ, "TLSLOGD_POLL_INTERVAL": "0.2", "TLSLOGD_CHECKPOINT_INTERVAL": "0.2"}
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def json(self, path: str) -> Any:
        status, body = self.get(path)
        assert status == 200, (path, status, body)
        return json.loads(body)

    def wait_for(self, done: Any, what: str, timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            with contextlib.suppress(OSError):
                summary = self.json("/api/v1/summary")
                if done(summary):
                    return summary
            time.sleep(0.1)
        raise AssertionError(f"daemon never {what}")

    def output(self) -> str:
        if self.proc.poll() is None or self.proc.stdout is None:
            return "(still running)"
        return self.proc.stdout.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def daemons() -> Iterator[list[RunningDaemon]]:
    started: list[RunningDaemon] = []
    yield started
    for d in started:
        d.stop()


def chromium(url: str, profile: Path, *args: str) -> str:
    """Run headless Chromium once in its own process group, stopped by that group's id."""
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
        url,
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=90)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # helper processes left behind, if any
        proc.wait()
    assert proc.returncode == 0, err[-2000:]
    return out


def screenshot(url: str, tmp_path: Path, name: str, width: int, height: int) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    path.unlink(missing_ok=True)
    chromium(
        url, tmp_path / f"profile-{name}", f"--screenshot={path}", f"--window-size={width},{height}"
    )
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    assert struct.unpack(">II", data[16:24]) == (width, height)
    assert len(data) > 20_000, f"{path} is {len(data)} bytes: an empty page?"
    print(f"status page screenshot: {path}")
    return path


browser = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
)


@browser
@pytest.mark.slow
def test_browser_renders_the_figures_of_the_json_api(
    tmp_path: Path, daemons: list[RunningDaemon]
) -> None:
    log = tmp_path / "mail.log"
    log.write_text(LAB_TEXT)
    d = RunningDaemon(log, tmp_path / "state")
    daemons.append(d)
    d.wait_for(lambda s: s["totals"]["lines"] >= LAB_LINES, f"read the {LAB_LINES} lines")

    dom = chromium(d.url + "/", tmp_path / "profile-dom", "--dump-dom")
    summary = d.json("/api/v1/summary")
    top_plaintext = d.json("/api/v1/peers?category=plaintext_out&limit=1")["peers"][0]
    page = Page(dom)

    out = summary["adoption"]["outbound"]
    assert page.value("outbound-tls-percent") == out["tls_percent"] == 85.71
    assert page.by_id("outbound-tls-percent").text() == f"{out['tls_percent']:.1f} %"
    assert page.value("outbound-plaintext") == out["sent_remote"]["no"] == 7
    assert page.by_id("outbound-plaintext").text() == "7"
    inbound = summary["adoption"]["inbound"]
    assert page.value("inbound-tls-percent") == inbound["tls_session_percent"]
    assert page.by_id("inbound-tls-percent").text() == f"{inbound['tls_session_percent']:.1f} %"
    for direction in ("inbound", "outbound"):
        expected = summary["handshakes"]["protocol"][direction]["TLSv1.3"]
        assert page.census("protocol", direction, "TLSv1.3") == expected
    assert page.peers("plaintext_out")[0] == (
        top_plaintext["peer"],
        top_plaintext["counts"]["plaintext_out"],
    )
    assert page.by_id("legacy-verdict").text() == "Nobody — safe to disable"
    assert page.by_id("log-status").attrs["data-state"] == "ok"
    assert not page.has("banner-log") and not page.has("banner-stale")
    assert page.by_id("banner-offline").attrs.get("hidden") == ""  # the refresh script is quiet

    screenshot(d.url + "/", tmp_path, "statuspage-wide.png", 1280, 2400)
    screenshot(d.url + "/", tmp_path, "statuspage-phone.png", 390, 2000)


@browser
@pytest.mark.slow
def test_browser_shows_the_banner_when_the_log_is_missing(
    tmp_path: Path, daemons: list[RunningDaemon]
) -> None:
    log = tmp_path / "missing" / "mail.log"
    d = RunningDaemon(log, tmp_path / "state")
    daemons.append(d)
    summary = d.wait_for(lambda s: not s["log"]["healthy"], "reported the missing log")
    assert d.get("/healthz")[0] == 503

    page = Page(chromium(d.url + "/", tmp_path / "profile-dom", "--dump-dom"))
    banner = page.by_id("banner-log")
    assert summary["log"]["reason"] in banner.text()
    assert str(log) in banner.text()
    assert page.by_id("log-status").attrs["data-state"] == "unhealthy"
    screenshot(d.url + "/", tmp_path, "statuspage-missing-log.png", 1280, 1000)


@contextlib.contextmanager
def page_server(answer: Callable[[int], str | None]) -> Iterator[str]:
    """A local server for ``/`` that Chromium fetches: ``answer(n)`` gives the page of the n-th
    request (from 1), or None for a 503; other paths are 404. Yields the page's URL."""
    served = 0

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            nonlocal served
            if self.path != "/":
                self.send_error(404)
                return
            served += 1
            page = answer(served)
            if page is None:
                self.send_error(503)
                return
            body = page.encode()
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@browser
@pytest.mark.slow
def test_browser_page_refreshes_itself_and_says_when_tlslogd_stops_answering(
    tmp_path: Path,
) -> None:
    """The inline script re-fetches the page and swaps it in; when the server stops answering it
    keeps the last figures and shows a banner (Chromium's virtual time runs the timers)."""
    summary, peers = build(tmp_path, LAB_TEXT)
    later = json.loads(json.dumps(summary))
    later["adoption"]["outbound"]["sent_remote"]["no"] = 8
    pages = [render_status(summary, peers), render_status(later, peers)]
    requests: list[int] = []

    def answer(n: int) -> str | None:
        requests.append(n)
        return pages[n - 1] if n <= len(pages) else None

    with page_server(answer) as url:
        budget = f"--virtual-time-budget={(len(pages) * REFRESH_SECONDS + 5) * 1000}"
        page = Page(chromium(url, tmp_path / "profile", budget, "--dump-dom"))
    assert len(requests) == len(pages) + 1
    assert page.value("outbound-plaintext") == 8  # the second answer was swapped in
    offline = page.by_id("banner-offline")
    assert "hidden" not in offline.attrs and "not answering" in offline.text()


@browser
@pytest.mark.slow
def test_browser_refresh_keeps_the_focused_link_and_the_scroll_position(tmp_path: Path) -> None:
    """A keyboard user on the second of two links to the same address (the failing peers' JSON,
    also linked from the legacy card at the top) stays there across the refresh, and the page
    does not scroll back to the top. A probe script added to the served page focuses the link
    and records, every second, which section holds the focus and how far the page is scrolled
    (the document element survives the swap of the body)."""
    summary, peers = build(tmp_path, LAB_TEXT)
    probe = (
        "<script>addEventListener('load',()=>{"
        "const l=document.querySelectorAll('[href=\"/api/v1/peers?category=tls_failure\"]');"
        "l[l.length-1].focus();const y0=scrollY;"
        "setInterval(()=>{const e=document.documentElement,a=document.activeElement;"
        "e.dataset.focus=(a&&a.closest('section')||{}).id||'none';"
        "e.dataset.scrolled=String(scrollY>0&&scrollY===y0)},1000)})"
        "</script></head>"
    )
    page_html = render_status(summary, peers).replace("</head>", probe, 1)
    served: list[int] = []

    def answer(n: int) -> str:
        served.append(n)
        return page_html

    with page_server(answer) as url:
        budget = f"--virtual-time-budget={(REFRESH_SECONDS + 3) * 1000}"
        dom = chromium(url, tmp_path / "profile", "--window-size=1200,900", budget, "--dump-dom")
    assert served == [1, 2]  # the page, then one refresh
    head = dom[: dom.index(">", dom.index("<html")) + 1]
    assert 'data-focus="peers-tls_failure"' in head, head
    assert 'data-scrolled="true"' in head, head


def test_mail_held_back_by_tls_is_told_apart_from_the_deferrals_over_a_connection(
    tmp_path: Path,
) -> None:
    # the real log of connection reuse without tlsproxy: 12 deferrals over a connection, and 4
    # more for a destination Postfix suspended ("delivery temporarily suspended: TLS is
    # required"), without one. All 16 were TLS's doing; the page must not say "16 of 12"
    text = (DATA / "real" / "postfix-3.7-no-tlsproxy.log").read_text()
    summary, peers = build(tmp_path, text)
    page = Page(render_status(summary, peers))
    assert summary["adoption"]["outbound"]["deferred"] == 12
    assert (
        page.value("outbound-held-by-tls") == summary["adoption"]["outbound"]["held_by_tls"] == 16
    )
    assert "16 delivery attempts held back by TLS" in page.by_id("outbound-held-by-tls").text()
    # the failing peers' reasons say what they mean on hover
    assert 'title="our own TLS engine or configuration is broken">engine</span>' in render_status(
        summary, peers
    )
