"""Annotated real log lines: every line under ``tests/data/samples/`` is preceded by the event
the parser must make of it. One test case per line, and a test that fails when a branch of the
parser (a message format or a syslog header shape) has no real sample."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import DATA, REFERENCE_TIME
from tlslogd.events import REASONS
from tlslogd.parse import _BODY, _MESSAGE, _RFC5424, Parser
from tlslogd.records import to_record

SAMPLES = DATA / "samples"


@dataclass
class Sample:
    file: str
    lineno: int
    source: str
    expect: dict[str, Any]
    line: str

    @property
    def id(self) -> str:
        return f"{self.file}:{self.lineno}"


def load_samples() -> list[Sample]:
    samples: list[Sample] = []
    for path in sorted(SAMPLES.glob("*.log")):
        source = ""
        expect: dict[str, Any] | None = None
        for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if raw.startswith("# source:"):
                source = raw[len("# source:") :].strip()
            elif raw.startswith("# expect:"):
                text = raw[len("# expect:") :].strip()
                expect = {"kind": "ignored"} if text == "none" else json.loads(text)
            elif raw.startswith("#") or not raw.strip():
                continue
            else:
                assert expect is not None, f"{path.name}:{lineno}: line without '# expect:'"
                assert source, f"{path.name}:{lineno}: line without '# source:'"
                samples.append(Sample(path.name, lineno, source, expect, raw))
                expect = None
    return samples


ALL = load_samples()


@pytest.mark.parametrize("sample", ALL, ids=[s.id for s in ALL])
def test_sample_parses_to_its_expected_event(sample: Sample) -> None:
    record = to_record(Parser(reference_time=REFERENCE_TIME).parse_line(sample.line))
    got = {key: record.get(key) for key in sample.expect}
    assert got == sample.expect, f"{sample.id} ({sample.source})"


# Shapes of syslog headers tlslogd reads, as a reader would recognise them.
HEADER_SHAPES = {
    "rfc3164 space-padded day": re.compile(r"^[A-Z][a-z]{2}  \d \d\d:\d\d:\d\d \S+ \S+\[\d+\]: "),
    "rfc3164 two-digit day": re.compile(r"^[A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d \S+ \S+\[\d+\]: "),
    "rfc3339 with fraction": re.compile(
        r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\S* \S+ \S+\[\d+\]: "
    ),
    "iso 8601 without fraction": re.compile(
        r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-Z]\S* \S+ \S+\[\d+\]: "
    ),
    "severity column": re.compile(
        r"^\S+(?: +\S+)*? (?:\w+\.)?(?:info|warning|err|notice) \S+\[\d+\]: "
    ),
    "rfc5424": _RFC5424,
    "no timestamp": re.compile(r"^[^ \[]+\[\d+\]: "),
    "a log viewer's box around the line": re.compile(r"^│ .*\]: .*│$"),
}


def test_every_parser_branch_has_a_real_sample() -> None:
    markers = {name for name in _MESSAGE.groupindex if name in Parser()._handlers}
    markers |= {name for name in _MESSAGE.groupindex if name.startswith("unrec")}
    markers.add("rep")  # rsyslog's "message repeated N times: [ ... ]", handled by the scan
    seen: set[str] = set()
    shapes: set[str] = set()
    for sample in ALL:
        m = _MESSAGE.search(sample.line)
        rfc5424 = _RFC5424.match(sample.line)
        if m is None and rfc5424 is not None:
            m = _BODY.match(sample.line, rfc5424.end())
        if m is not None and m.lastgroup:
            seen.add(m.lastgroup)
        shapes |= {name for name, rx in HEADER_SHAPES.items() if rx.search(sample.line)}
    assert sorted(markers - seen) == [], "message formats without a real sample"
    assert sorted(set(HEADER_SHAPES) - shapes) == [], "header shapes without a real sample"


def test_every_failure_reason_has_a_real_sample() -> None:
    reasons = {sample.expect.get("reason") for sample in ALL}
    assert sorted(set(REASONS) - reasons) == [], "failure reasons without a real sample"
