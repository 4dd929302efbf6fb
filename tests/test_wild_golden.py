"""Every block of real wild log lines (tests/data/wild/*.log), read as a whole by the pipeline,
against its reviewed outcome in tests/data/wild/golden.json: events by kind, unrecognised lines,
session outcomes, sent deliveries by TLS and scope, and failures by reason.

The blocks were checked by hand against their lines when they were added; this test keeps what
tlslogd says about them from changing unnoticed. After a deliberate change, regenerate the file
with ``WILD_GOLDEN_UPDATE=1 python3 -m pytest tests/test_wild_golden.py`` and review its diff."""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

import pytest

from tests.conftest import DATA, REFERENCE_TIME
from tlslogd.events import Delivery, Event, SessionEnd
from tlslogd.parse import Parser
from tlslogd.pipeline import Pipeline
from tlslogd.sessions import Correlator
from tlslogd.stats import Stats

WILD = DATA / "wild"
GOLDEN = WILD / "golden.json"
FILES = (
    "sessions.log",
    "deliveries.log",
    "failures.log",
    "tls-summaries.log",
    "misc.log",
    "recent.log",
)


def blocks() -> list[tuple[str, str, str]]:
    """(file, source comment, data lines) of every block, in file order."""
    found: list[tuple[str, str, str]] = []
    for name in FILES:
        source: str | None = None
        lines: list[str] = []
        for line in [*(WILD / name).read_text().splitlines(), ""]:
            if line.startswith("# source:"):
                source, lines = line, []
            elif not line.strip():
                if source is not None and lines:
                    found.append((name, source, "".join(lines)))
                source = None
            elif source is not None and not line.startswith("# "):
                lines.append(line + "\n")
    return found


def outcome(text: str) -> dict[str, Any]:
    """What tlslogd makes of a block, in the terms a user checks."""
    pipe = Pipeline(Parser(reference_time=REFERENCE_TIME), Correlator(), Stats())
    seen: list[Event] = []
    pipe.feed_text(text, seen.append)
    pipe.finish()

    def count(items: list[str]) -> dict[str, int]:
        return dict(sorted(Counter(items).items()))

    return {
        "events": count([e.kind for e in seen]),
        "unrecognised": pipe.stats.totals["unrecognised_lines"],
        "sessions": count([e.starttls or "none" for e in seen if isinstance(e, SessionEnd)]),
        "sent": count(
            [
                f"{e.tls}/{e.scope}"
                for e in seen
                if isinstance(e, Delivery) and e.status == "sent" and e.scope
            ]
        ),
        "failures": {
            f"{direction}/{reason}": n
            for direction, reasons in sorted(pipe.stats.reasons.items())
            for reason, n in sorted(reasons.items())
        },
    }


def current() -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = {}
    for name, source, text in blocks():
        key = f"{name}: {source[len('# source: ') :][:120]}"
        n = 2
        while key in result:  # a source quoted in several blocks
            key = f"{name}: {source[len('# source: ') :][:120]} #{n}"
            n += 1
        result[key] = outcome(text)
    return result


def test_every_wild_block_gives_its_reviewed_outcome() -> None:
    now = current()
    if os.environ.get("WILD_GOLDEN_UPDATE") == "1":
        GOLDEN.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"wrote {GOLDEN}")
    golden = json.loads(GOLDEN.read_text())
    assert sorted(now) == sorted(golden), "blocks added or removed: regenerate and review"
    changed = {key: (golden[key], now[key]) for key in now if now[key] != golden[key]}
    assert not changed, json.dumps(changed, indent=1)
