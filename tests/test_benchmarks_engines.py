"""The regular-expression engine comparison runs, and measures the scan the parser runs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ENGINES = Path(__file__).resolve().parent.parent / "benchmarks" / "engines.py"


def test_engines_table_counts_what_the_parser_finds(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("engines", ENGINES)
    assert spec is not None and spec.loader is not None
    engines = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("engines", engines)
    spec.loader.exec_module(engines)
    assert engines.main(["--lines", "3000", "--runs", "1"]) == 0
    rows = {
        cells[1]: cells[2:]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| ") and (cells := [c.strip() for c in line.split("|")])[2][0].isdigit()
    }
    floor = rows["Python read loop, text (the floor)"]
    assert floor[3] == "3,000"
    scan = rows["re: tlslogd's scan (_MESSAGE.finditer)"]
    assert scan[2] == "1.00"
    # the scan finds exactly the lines the whole parser turns into events
    assert scan[3] == rows["the whole parser (Parser.scan), for scale"][3]
    assert 0 < int(scan[3].replace(",", "")) < 3000
