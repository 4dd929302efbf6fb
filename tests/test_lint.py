"""Lint and type checks run with the tests, so CI runs them through the one test command."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed")
def test_ruff_check() -> None:
    result = run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed")
def test_ruff_format() -> None:
    result = run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    pytest.importorskip("mypy")
    result = run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_pure_stages_import_no_io_or_server_libraries() -> None:
    """parse, sessions and stats stay pure: they may import only events, each other's data
    types and the standard library (no prometheus_client, asyncio, sqlite3, uvicorn)."""
    forbidden = ("prometheus_client", "asyncio", "sqlite3", "uvicorn", "watchdog", "socket")
    for name in ("parse", "sessions", "stats", "events"):
        source = (ROOT / "tlslogd" / f"{name}.py").read_text()
        for module in forbidden:
            assert f"import {module}" not in source and f"from {module}" not in source, (
                f"tlslogd/{name}.py imports {module}"
            )
