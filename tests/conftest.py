"""Shared test setup: log timestamps without a zone are read as UTC, so expectations written
in test data do not depend on the machine's time zone."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ["TZ"] = "UTC"
time.tzset()

DATA = Path(__file__).parent / "data"
LAB_LOG = DATA / "lab" / "maillog.log"
LAB_SINK_LOG = DATA / "lab" / "maillog.sink.log"

# 2026-12-01T00:00:00Z: the reference "now" for logs without a year (the lab log is of Nov 25)
REFERENCE_TIME = 1796083200.0


@pytest.fixture
def lab_log() -> Path:
    return LAB_LOG


def tlslogd(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the command as a user does, in this Python; its output and exit code, never raising."""
    return subprocess.run(
        [sys.executable, "-m", "tlslogd", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def wild_block(name: str, needle: str) -> str:
    """The data lines of the block of tests/data/wild/NAME whose source comment has
    ``needle``."""
    lines: list[str] = []
    inside = False
    for line in (DATA / "wild" / name).read_text().splitlines():
        if line.startswith("# source:"):
            inside = needle in line
        elif not line.strip():
            inside = False
        elif inside and not line.startswith("# "):
            lines.append(line + "\n")
    assert lines, needle
    return "".join(lines)
