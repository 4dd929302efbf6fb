"""The benchmark corpus generator: determinism, ground truth, header shapes, hostile peers."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import re
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

GENERATOR = Path(__file__).resolve().parent.parent / "benchmarks" / "gen_maillog.py"


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_maillog", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_maillog", module)
    spec.loader.exec_module(module)
    return module


def generate(gen: ModuleType, tmp_path: Path, *args: str) -> tuple[bytes, dict]:
    log = tmp_path / "maillog"
    stats = tmp_path / "truth.json"
    assert gen.main(["-o", str(log), "--stats", str(stats), *args]) == 0
    return log.read_bytes(), json.loads(stats.read_text())


def test_same_seed_same_bytes_other_seed_other_bytes(gen: ModuleType, tmp_path: Path) -> None:
    a, _ = generate(gen, tmp_path, "--lines", "3000", "--seed", "11")
    b, _ = generate(gen, tmp_path, "--lines", "3000", "--seed", "11")
    c, _ = generate(gen, tmp_path, "--lines", "3000", "--seed", "12")
    assert a == b
    assert a != c
    assert a.count(b"\n") == 3000


_SUMMARY = re.compile(
    r"\]: (?:\w+ )?TLS connection (?:established|reused) (?:to|from) \S+(?: to \S+)?: (\S+) with "
)
_TAG = re.compile(r" mx1 ([^\s\[\]]+)\[")
_STATUS = re.compile(r": to=<[^>]*>, .*?, status=(\w+) ")


def test_ground_truth_matches_a_recount(gen: ModuleType, tmp_path: Path) -> None:
    data, truth = generate(gen, tmp_path, "--lines", "20000", "--seed", "3")
    lines = data.decode("ascii").splitlines()
    protocols = Counter(m.group(1) for line in lines if (m := _SUMMARY.search(line)))
    statuses = Counter(m.group(1) for line in lines if (m := _STATUS.search(line)))
    offered = sum("]: Host offered STARTTLS: [" in line for line in lines)
    programs = Counter(m.group(1) for line in lines if (m := _TAG.search(line)))

    assert truth["lines"]["total"] == len(lines) == 20000
    assert truth["lines"]["by_program"] == dict(programs)
    assert truth["tls"]["summary_lines"]["by_protocol"] == dict(protocols)
    assert truth["tls"]["summary_lines"]["total"] == sum(protocols.values())
    assert truth["starttls_offered"]["lines"] == offered
    assert truth["deliveries"]["by_status"] == dict(statuses)
    # the corpus has what the benchmark is about
    assert 0.08 < sum(protocols.values()) / len(lines) < 0.14
    assert offered > 0
    assert set(statuses) >= {"sent", "deferred"}
    by_tls = truth["deliveries"]["by_tls"]
    assert by_tls["yes"] > 0 and by_tls["no"] > 0
    outcomes = truth["sessions"]["by_outcome"]
    assert {"used", "implicit", "not_used", "failed"} <= set(outcomes)


def test_handshakes_do_not_count_tlsproxy_repeats_or_reuse(gen: ModuleType, tmp_path: Path) -> None:
    _, truth = generate(gen, tmp_path, "--lines", "60000", "--seed", "2")
    summaries = truth["tls"]["summary_lines"]
    handshakes = truth["tls"]["handshakes"]
    proxy = summaries["by_program"].get("postfix/tlsproxy", 0)
    reused = summaries["by_state"].get("reused", 0)
    assert proxy > 0 and reused > 0
    assert handshakes["total"] == summaries["total"] - proxy - reused
    assert "postfix/tlsproxy" not in handshakes["by_program"]


_MONTHS = "Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec"
_HEADERS = {
    "syslog": re.compile(rf"^(?:{_MONTHS}) [ 1-3]\d \d\d:\d\d:\d\d mx1 [^\s\[\]]+\[\d+\]: \S"),
    "postlog": re.compile(rf"^(?:{_MONTHS}) [0-3]\d \d\d:\d\d:\d\d mx1 [^\s\[\]]+\[\d+\]: \S"),
    "rfc3339": re.compile(
        r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00 mx1 [^\s\[\]]+\[\d+\]: \S"
    ),
}


def _when(mode: str, line: str) -> dt.datetime:
    if mode == "rfc3339":
        return dt.datetime.fromisoformat(line.split(" ", 1)[0]).replace(tzinfo=None)
    return dt.datetime.strptime("2025 " + line[:15], "%Y %b %d %H:%M:%S")


@pytest.mark.parametrize("mode", sorted(_HEADERS))
def test_every_line_has_a_plausible_header(gen: ModuleType, tmp_path: Path, mode: str) -> None:
    start = dt.datetime(2025, 11, 5, 23, 50)
    data, _ = generate(
        gen, tmp_path, "--lines", "6000", "--timestamps", mode, "--start", start.isoformat()
    )
    lines = data.decode("ascii").splitlines()
    bad = [line for line in lines if not _HEADERS[mode].match(line)]
    assert bad == []
    times = [_when(mode, line) for line in lines]
    assert times == sorted(times)
    assert start <= times[0] and times[-1] < start + dt.timedelta(days=1)
    assert times[-1].day == 6  # the corpus crosses midnight
    if mode == "syslog":
        assert lines[0].startswith("Nov  5 ")
    if mode == "postlog":
        assert lines[0].startswith("Nov 05 ")
        assert all(" mx1 postfix/" in line for line in lines)


def test_hostile_peers_are_distinct(gen: ModuleType, tmp_path: Path) -> None:
    n = 40
    data, truth = generate(gen, tmp_path, "--lines", "2000", "--hostile-peers", str(n))
    zones = "|".join(re.escape(z) for z in gen.HOSTILE_ZONES)
    peers = set(re.findall(rf"([a-z0-9-]+\.(?:{zones}))\[([0-9a-f:]+)\]", data.decode("ascii")))
    assert len({name for name, _ in peers}) == n
    assert len({addr for _, addr in peers}) == n
    assert truth["hostile_peers"] == {"requested": n, "seen": n}
