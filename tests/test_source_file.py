"""FileSource: following a log by its path with real files, rotations and restarts."""

from __future__ import annotations

import asyncio
import grp
import gzip
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tlslogd.sources import Chunk
from tlslogd.sources.file import FileSource

REPO = Path(__file__).resolve().parent.parent
NOBODY = 65534


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


Factory = Callable[..., FileSource]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make(clock: FakeClock) -> Iterator[Factory]:
    """Build sources reading synchronously (no watcher), closed after the test."""
    made: list[FileSource] = []

    def factory(path: Path, **options: Any) -> FileSource:
        options.setdefault("position", None)
        options.setdefault("from_start", True)
        options.setdefault("watch", False)
        options.setdefault("clock", clock)
        source = FileSource(path, **options)
        made.append(source)
        return source

    yield factory
    for source in made:
        source.close()


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "mail.log"


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def read_all(source: FileSource) -> list[Chunk]:
    chunks = []
    while (chunk := source.read_available()) is not None:
        chunks.append(chunk)
    return chunks


def drain(source: FileSource) -> bytes:
    return b"".join(chunk.data for chunk in read_all(source))


def lines(*numbers: int, prefix: str = "line") -> bytes:
    return b"".join(f"{prefix} {n}\n".encode() for n in numbers)


def read_then_stop(make: Factory, log: Path) -> dict[str, Any]:
    """Lines 1 and 2 in the log, read by a source that then stops: its saved position."""
    log.write_bytes(lines(1, 2))
    first = make(log)
    chunk = first.read_available()
    assert chunk is not None and chunk.data == lines(1, 2)
    first.close()
    return chunk.position


def gzip_away(path: Path, gz: Path) -> None:
    """Compress a rotated log and remove it, as logrotate's compress and postfix logrotate do."""
    with path.open("rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    path.unlink()


# --------------------------------------------------------------------------- complete lines


def test_partial_line_waits_for_its_newline(make: Factory, log: Path) -> None:
    append(log, b"first li")
    source = make(log)
    assert source.read_available() is None

    append(log, b"ne\nsecond")
    chunk = source.read_available()
    assert chunk is not None
    assert (chunk.data, chunk.lines, chunk.position["offset"]) == (b"first line\n", 1, 11)
    assert source.read_available() is None

    append(log, b" line\n")
    chunk = source.read_available()
    assert chunk is not None
    assert (chunk.data, chunk.position["offset"]) == (b"second line\n", 23)
    assert source.counters()["bytes_read"] == {"": 23}


no_newline = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b""))


@settings(max_examples=60, deadline=None)
@given(
    body=st.lists(no_newline, max_size=30),
    unfinished=no_newline,
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=20),
    max_chunk=st.integers(min_value=1, max_value=64),
)
def test_any_chunking_of_the_stream_gives_the_same_lines(
    tmp_path_factory: pytest.TempPathFactory,
    body: list[bytes],
    unfinished: bytes,
    cuts: list[int],
    max_chunk: int,
) -> None:
    complete = b"".join(line + b"\n" for line in body)
    stream = complete + unfinished
    bounds = sorted({0, len(stream), *(cut % (len(stream) + 1) for cut in cuts)})
    log = tmp_path_factory.mktemp("chunking") / "mail.log"
    log.write_bytes(b"")
    source = FileSource(log, position=None, from_start=True, max_chunk_bytes=max_chunk, watch=False)
    try:
        chunks = []
        for start, end in itertools.pairwise(bounds):
            append(log, stream[start:end])
            if (chunk := source.read_available()) is not None:
                chunks.append(chunk)
        chunks += read_all(source)
    finally:
        source.close()
    assert b"".join(chunk.data for chunk in chunks) == complete
    for chunk in chunks:
        assert chunk.data.endswith(b"\n")
        assert chunk.lines == chunk.data.count(b"\n")
        assert len(chunk.data) <= max_chunk or chunk.lines == 1
    if chunks:
        assert chunks[-1].position["offset"] == len(complete)


def test_nul_and_invalid_utf8_bytes_pass_through(make: Factory, log: Path) -> None:
    data = b"a\x00b\n\xff\xfe\xc3(\n\x00\n\xe2\x82\n"
    log.write_bytes(data)
    assert drain(make(log)) == data


def test_megabyte_lines_come_through_whole(make: Factory, log: Path) -> None:
    data = b"".join(bytes([c]) * (1 << 20) + b"\n" for c in b"abc")
    log.write_bytes(data)
    source = make(log)
    chunks = read_all(source)
    assert b"".join(c.data for c in chunks) == data
    assert chunks[-1].position["offset"] == len(data)
    assert source.counters()["read_errors"]["long_line"] == 0


def test_line_longer_than_the_limit_is_cut(make: Factory, log: Path) -> None:
    log.write_bytes(b"a\n" + b"x" * 5000 + b"\nb\n")
    source = make(log, max_line_bytes=1000)
    assert drain(source) == b"a\n" + b"x" * 1000 + b"\nb\n"

    append(log, b"y" * 3000)
    assert source.read_available() is None
    append(log, b"y" * 3000 + b"\nz\n")
    chunks = read_all(source)
    assert b"".join(c.data for c in chunks) == b"y" * 1000 + b"\nz\n"
    assert chunks[-1].position["offset"] == log.stat().st_size
    assert source.counters()["read_errors"]["long_line"] == 2


def test_backlog_comes_in_bounded_chunks(make: Factory, log: Path) -> None:
    data = b"".join(b"%098d\n" % n for n in range(5 * (1 << 20) // 99))
    log.write_bytes(data)
    source = make(log, max_chunk_bytes=1 << 20)
    chunks = read_all(source)
    assert len(chunks) >= 5
    assert all(len(c.data) <= 1 << 20 and c.data.endswith(b"\n") for c in chunks)
    assert b"".join(c.data for c in chunks) == data
    assert sum(c.lines for c in chunks) == data.count(b"\n")


# ----------------------------------------------------------------------------- where to start


def test_from_start_reads_the_existing_file(make: Factory, log: Path) -> None:
    log.write_bytes(lines(1, 2))
    assert drain(make(log, from_start=True)) == lines(1, 2)


def test_without_position_starts_at_the_end_on_a_line_boundary(make: Factory, log: Path) -> None:
    log.write_bytes(lines(1, 2) + b"unfini")
    source = make(log, from_start=False)
    assert source.read_available() is None
    append(log, b"shed\n" + lines(3))
    assert drain(source) == b"unfinished\n" + lines(3)


def test_without_position_at_the_end_of_a_complete_file(make: Factory, log: Path) -> None:
    log.write_bytes(lines(1, 2))
    source = make(log, from_start=False)
    assert source.read_available() is None
    assert source.lag_bytes() == 0
    append(log, lines(3))
    assert drain(source) == lines(3)


@pytest.mark.parametrize("from_start", [True, False])
def test_restart_from_saved_position_same_file(make: Factory, log: Path, from_start: bool) -> None:
    log.write_bytes(lines(*range(10)))
    first = make(log, max_chunk_bytes=30)
    chunk = first.read_available()
    assert chunk is not None
    seen = chunk.data
    first.close()

    append(log, lines(10, 11))
    second = make(log, position=chunk.position, from_start=from_start)
    assert seen + drain(second) == lines(*range(12))


def test_restart_after_rotation_while_down(make: Factory, log: Path) -> None:
    log.write_bytes(lines(1, 2))
    first = make(log)
    position = read_all(first)[-1].position
    first.close()

    append(log, lines(3, 4))
    log.rename(log.with_name("mail.log.1"))
    log.write_bytes(lines(5, prefix="new"))
    second = make(log, position=position)
    assert drain(second) == lines(3, 4) + lines(5, prefix="new")
    assert second.counters()["rotations"]["rename"] == 1


def test_restart_finds_a_date_suffixed_rotated_file(make: Factory, log: Path) -> None:
    log.write_bytes(lines(1))
    first = make(log)
    position = read_all(first)[-1].position
    first.close()

    append(log, lines(2))
    log.rename(log.with_name("mail.log-20251125"))
    log.write_bytes(lines(3))
    assert drain(make(log, position=position)) == lines(2, 3)


def test_restart_when_rotated_file_is_gone_warns_of_lost_lines(
    make: Factory, log: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log.write_bytes(lines(1))
    first = make(log)
    position = read_all(first)[-1].position
    first.close()

    append(log, lines(2))
    replacement = log.with_name("replacement")
    replacement.write_bytes(lines(3))
    replacement.replace(log)
    with caplog.at_level(logging.WARNING):
        assert drain(make(log, position=position)) == lines(3)
    assert "lines may have been lost between offset 7" in caplog.text


def test_restart_after_truncation_while_down(make: Factory, log: Path) -> None:
    log.write_bytes(lines(1, 2, 3))
    first = make(log)
    position = read_all(first)[-1].position
    first.close()

    os.truncate(log, 0)
    append(log, lines(9))
    second = make(log, position=position)
    assert drain(second) == lines(9)
    assert second.counters()["rotations"]["truncate"] == 1


def test_restart_with_position_of_a_different_file(make: Factory, log: Path) -> None:
    log.write_bytes(lines(1, 2))
    first = make(log)
    position = read_all(first)[-1].position
    first.close()

    with open(log, "r+b") as f:
        f.write(b"other 1\nother 2\nother 3\n")
    second = make(log, position=position, from_start=False)
    assert drain(second) == b"other 1\nother 2\nother 3\n"
    assert second.counters()["rotations"]["truncate"] == 1


def test_unusable_saved_position_is_ignored(
    make: Factory, log: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log.write_bytes(lines(1))
    with caplog.at_level(logging.WARNING):
        source = make(log, position={"offset": "far"}, from_start=True)
    assert drain(source) == lines(1)
    assert "ignoring unusable saved position" in caplog.text


# ---------------------------------------------------------------------------------- rotations


def test_rename_and_create_delivers_late_lines_of_the_old_file_first(
    make: Factory, log: Path, clock: FakeClock
) -> None:
    rotated = log.with_name("mail.log.1")
    log.write_bytes(lines(1, 2))
    source = make(log, rotate_grace=5.0)
    assert drain(source) == lines(1, 2)

    log.rename(rotated)
    log.write_bytes(b"")
    append(rotated, lines(3))
    assert drain(source) == lines(3)
    assert source.counters()["rotations"]["rename"] == 1

    append(rotated, lines(4) + b"unfinished")
    append(log, lines(5, prefix="new"))
    chunks = read_all(source)
    assert [c.data for c in chunks] == [lines(4), lines(5, prefix="new")]
    position = chunks[-1].position
    assert json.loads(json.dumps(position)) == position
    draining = position["draining"]
    assert (draining["path"], draining["ino"]) == (str(rotated), rotated.stat().st_ino)

    clock.advance(5.0)
    chunk = source.read_available()
    assert chunk is not None
    assert chunk.data == b"unfinished\n"
    assert "draining" not in chunk.position
    assert chunk.position["ino"] == log.stat().st_ino
    append(rotated, lines(99, prefix="too late"))
    append(log, lines(6, prefix="new"))
    assert drain(source) == lines(6, prefix="new")
    assert source.counters()["rotations"] == {"rename": 1, "delete": 0, "truncate": 0}


def test_restart_during_the_rotation_grace_period(
    make: Factory, log: Path, clock: FakeClock
) -> None:
    rotated = log.with_name("mail.log.1")
    log.write_bytes(lines(1))
    first = make(log)
    drain(first)
    log.rename(rotated)
    log.write_bytes(b"")
    assert first.read_available() is None
    append(rotated, lines(2))
    append(log, lines(3, prefix="new"))
    chunk = first.read_available()
    assert chunk is not None
    assert chunk.data == lines(2)
    assert chunk.position["draining"]["offset"] == rotated.stat().st_size
    first.close()

    append(rotated, lines(4))
    second = make(log, position=chunk.position)
    assert drain(second) == lines(4) + lines(3, prefix="new")


def test_delete_and_create(make: Factory, log: Path, clock: FakeClock) -> None:
    log.write_bytes(lines(1))
    source = make(log)
    assert drain(source) == lines(1)

    append(log, lines(2) + b"cut short")
    log.unlink()
    # still open: its lines are read, and its unfinished line once nobody can write it any more
    assert drain(source) == lines(2)
    assert source.counters()["rotations"]["delete"] == 1
    health = source.health()
    assert health.ok
    assert health.reason == f"waiting for {log} to be created again after rotation"

    log.write_bytes(lines(3, prefix="new"))
    assert drain(source) == lines(3, prefix="new")
    clock.advance(6.0)
    assert drain(source) == b"cut short\n"
    assert source.health().ok
    assert source.counters()["read_errors"]["missing"] == 0


def test_a_file_deleted_while_catching_up_is_read_to_its_end(
    make: Factory, log: Path, clock: FakeClock
) -> None:
    """logrotate's compress without delaycompress (or postfix logrotate) removes the rotated
    file while tlslogd is still behind: the open file still holds the unread lines."""
    backlog = b"".join(lines(n) for n in range(1, 5001))
    log.write_bytes(backlog)
    source = make(log, max_chunk_bytes=4096)
    first = source.read_available()
    assert first is not None and len(first.data) <= 4096
    rotated = log.with_name("mail.log.1")
    log.rename(rotated)
    log.write_bytes(b"")
    rotated.unlink()
    clock.advance(10.0)  # the next read checks the path first
    assert first.data + drain(source) == backlog
    assert source.counters()["rotations"]["delete"] == 1


def test_deleted_and_not_recreated_is_reported_after_the_grace(
    make: Factory, log: Path, clock: FakeClock
) -> None:
    log.write_bytes(lines(1))
    source = make(log, rotate_grace=5.0)
    drain(source)
    log.unlink()
    assert source.read_available() is None
    assert source.health().ok

    clock.advance(6.0)
    assert source.read_available() is None
    assert not source.health().ok
    assert source.counters()["read_errors"]["missing"] == 1


def test_copytruncate(make: Factory, log: Path) -> None:
    log.write_bytes(lines(1, 2, 3))
    source = make(log)
    assert drain(source) == lines(1, 2, 3)

    shutil.copy(log, log.with_name("mail.log.1"))
    with open(log, "r+b") as f:
        f.truncate(0)
    append(log, lines(4))
    assert drain(source) == lines(4)
    assert source.counters()["rotations"]["truncate"] == 1


def test_copytruncate_reads_what_only_the_copy_holds(make: Factory, log: Path) -> None:
    """Lines written after tlslogd's last read and before logrotate copied the file are only in
    the copy (mail.log.1): they are read from there, then the truncated log."""
    log.write_bytes(lines(1, 2))
    source = make(log)
    assert drain(source) == lines(1, 2)

    append(log, lines(3) + b"half of line 4")
    shutil.copy(log, log.with_name("mail.log.1"))
    with open(log, "r+b") as f:
        f.truncate(0)
    append(log, lines(5))
    assert drain(source) == lines(3) + b"half of line 4\n" + lines(5)
    assert source.counters()["rotations"]["truncate"] == 1


def test_truncation_refilled_past_the_old_offset_is_noticed(make: Factory, log: Path) -> None:
    log.write_bytes(lines(1))
    source = make(log)
    assert drain(source) == lines(1)

    os.truncate(log, 0)
    append(log, lines(2, 3, 4, prefix="after truncation"))
    assert drain(source) == lines(2, 3, 4, prefix="after truncation")
    assert source.counters()["rotations"]["truncate"] == 1


def test_truncation_to_a_smaller_size(make: Factory, log: Path) -> None:
    log.write_bytes(lines(1, 2, 3, 4))
    source = make(log)
    drain(source)

    os.truncate(log, 7)
    assert drain(source) == lines(1)
    assert source.counters()["rotations"]["truncate"] == 1
    append(log, lines(5))
    assert drain(source) == lines(5)


def test_periodic_check_notices_rotation_while_old_file_keeps_growing(
    make: Factory, log: Path, clock: FakeClock
) -> None:
    rotated = log.with_name("mail.log.1")
    log.write_bytes(lines(1))
    source = make(log, poll_interval=2.0, max_chunk_bytes=7)
    assert drain(source) == lines(1)
    log.rename(rotated)
    log.write_bytes(lines(9, prefix="new"))
    append(rotated, lines(2, 3))

    chunk = source.read_available()
    assert chunk is not None
    assert chunk.data == lines(2)
    assert source.counters()["rotations"]["rename"] == 0
    clock.advance(2.0)
    chunk = source.read_available()
    assert chunk is not None
    assert chunk.data == lines(3)
    assert source.counters()["rotations"]["rename"] == 1
    assert drain(source) == lines(9, prefix="new")


# ------------------------------------------------------------------------ missing, permissions


def test_missing_file_is_waited_for(
    make: Factory, log: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = make(log, from_start=False)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert source.read_available() is None
    health = source.health()
    assert not health.ok
    assert health.reason == f"waiting for {log} to appear"
    assert source.counters()["read_errors"]["missing"] == 1
    assert caplog.text.count("to appear") == 1

    log.write_bytes(lines(1, 2))
    assert drain(source) == lines(1, 2)
    assert source.health().ok


def test_other_errors_are_reported_once_and_retried(
    make: Factory, log: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log.mkdir()
    source = make(log)
    with caplog.at_level(logging.WARNING):
        assert source.read_available() is None
        assert source.read_available() is None
    health = source.health()
    assert not health.ok
    assert health.reason == f"cannot open {log}: {log} is not a regular file"
    assert source.counters()["read_errors"]["io"] == 1
    assert caplog.text.count("not a regular file") == 1

    log.rmdir()
    log.write_bytes(lines(1))
    assert drain(source) == lines(1)
    assert source.health().ok


AS_NOBODY = r"""
import json, os, sys
from tlslogd.sources.file import FileSource

os.setgroups([])
os.setgid(int(sys.argv[2]))
os.setuid(int(sys.argv[2]))
source = FileSource(sys.argv[1], position=None, from_start=True, watch=False)


def report():
    chunk = source.read_available()
    health = source.health()
    result = {
        "data": None if chunk is None else chunk.data.decode(),
        "ok": health.ok,
        "reason": health.reason,
        "errors": source.counters()["read_errors"],
    }
    print(json.dumps(result), flush=True)


report()
report()
sys.stdin.readline()
report()
source.close()
"""


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory every user can search (pytest's own temporary directories are private)."""
    with tempfile.TemporaryDirectory(dir="/tmp") as name:
        os.chmod(name, 0o755)
        yield Path(name)


def read_as_nobody(path: Path, fix: Callable[[], None]) -> tuple[list[dict[str, Any]], str]:
    """Read ``path`` as user nobody: twice, then again after ``fix()``."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen(
        [sys.executable, "-c", AS_NOBODY, str(path), str(NOBODY)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as child:
        try:
            assert child.stdout is not None and child.stdin is not None
            reports = [json.loads(child.stdout.readline()) for _ in range(2)]
            fix()
            child.stdin.write("go\n")
            child.stdin.flush()
            reports.append(json.loads(child.stdout.readline()))
            _, stderr = child.communicate(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
    return reports, stderr


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to user nobody")


@needs_root
def test_unreadable_file_names_user_and_fix(public_dir: Path) -> None:
    log = public_dir / "mail.log"
    log.write_bytes(lines(1))
    os.chown(log, 0, grp.getgrnam("adm").gr_gid)
    log.chmod(0o640)  # Debian's /var/log/mail.log: root:adm 0640

    reports, stderr = read_as_nobody(log, lambda: log.chmod(0o644))
    denied = reports[0]
    assert not denied["ok"]
    assert "user nobody (uid 65534)" in denied["reason"]
    assert f"read permission on {log}" in denied["reason"]
    assert "usermod -aG adm nobody" in denied["reason"]
    assert reports[1]["errors"]["permission"] == 1
    assert stderr.count("usermod -aG adm") == 1


@needs_root
def test_a_file_no_group_may_read_gets_an_acl_as_the_fix(public_dir: Path) -> None:
    log = public_dir / "maillog"
    log.write_bytes(lines(1))
    log.chmod(0o600)  # root:root 0600, as some distributions write /var/log/maillog

    reports, _ = read_as_nobody(log, lambda: log.chmod(0o644))
    reason = reports[0]["reason"]
    assert f"setfacl -m u:nobody:r {log}" in reason
    assert "usermod" not in reason
    assert reports[2]["ok"]
    assert reports[2]["ok"]
    assert reports[2]["data"] == lines(1).decode()


@needs_root
def test_unsearchable_directory_is_named(public_dir: Path) -> None:
    private = public_dir / "private"
    private.mkdir(mode=0o700)
    log = private / "mail.log"
    log.write_bytes(lines(1))
    log.chmod(0o644)

    reports, _ = read_as_nobody(log, lambda: private.chmod(0o755))
    reason = reports[0]["reason"]
    assert f"lacks search (execute) permission on directory {private};" in reason
    assert f"setfacl -m u:nobody:x {private}" in reason  # root:root 0700
    assert reports[2]["ok"]
    assert reports[2]["data"] == lines(1).decode()


# ------------------------------------------------------------------------ lag, health, reopen


def test_lag_bytes(make: Factory, log: Path, clock: FakeClock) -> None:
    log.write_bytes(b"abcd\n" * 20)
    source = make(log, max_chunk_bytes=30)
    assert source.lag_bytes() is None
    source.read_available()
    assert source.lag_bytes() == 70
    drain(source)
    assert source.lag_bytes() == 0
    append(log, b"abc")
    assert source.read_available() is None
    assert source.lag_bytes() == 3
    append(log, b"\n")
    drain(source)

    rotated = log.with_name("mail.log.1")
    log.rename(rotated)
    log.write_bytes(b"")
    assert source.read_available() is None
    append(rotated, b"x" * 9 + b"\n")
    append(log, b"y" * 6 + b"\n")
    assert source.lag_bytes() == 17


def test_health_detail(make: Factory, log: Path) -> None:
    log.write_bytes(lines(1) + b"partial")
    source = make(log)
    drain(source)
    health = source.health()
    assert health.ok
    assert health.detail == {
        "path": str(log),
        "offset": 7,
        "size": 14,
        "inode": log.stat().st_ino,
    }


def test_reopen_keeps_the_position(make: Factory, log: Path) -> None:
    log.write_bytes(lines(1, 2) + b"half")
    source = make(log)
    assert drain(source) == lines(1, 2)
    source.reopen()
    append(log, b" line\n")
    assert drain(source) == b"half line\n"
    assert source.counters()["bytes_read"] == {"": log.stat().st_size}


def test_reopen_after_rotation_reads_the_rest_of_the_old_file(make: Factory, log: Path) -> None:
    log.write_bytes(lines(1))
    source = make(log)
    drain(source)
    append(log, lines(2))
    log.rename(log.with_name("mail.log.1"))
    log.write_bytes(lines(3, prefix="new"))
    source.reopen()
    assert drain(source) == lines(2) + lines(3, prefix="new")


# ----------------------------------------------------------------------------------- async


def run_chunks(scenario: Callable[[], Any]) -> Any:
    """Run ``scenario`` in an event loop and check that it leaves no thread behind."""
    before = set(threading.enumerate())
    result = asyncio.run(scenario())
    assert set(threading.enumerate()) == before
    return result


def test_watch_delivers_an_append_long_before_the_poll(log: Path) -> None:
    log.write_bytes(lines(1))

    async def scenario() -> tuple[bytes, float]:
        source = FileSource(log, position=None, from_start=True, poll_interval=30.0)
        threads = threading.active_count()
        chunks = source.chunks()
        first = await asyncio.wait_for(anext(chunks), 5)
        assert first.data == lines(1)
        assert threading.active_count() > threads
        waiting = asyncio.ensure_future(anext(chunks))
        await asyncio.sleep(0.2)  # the reader found nothing new and went to sleep
        assert not waiting.done()
        started = time.monotonic()
        append(log, lines(2))
        chunk = await asyncio.wait_for(waiting, 2)
        elapsed = time.monotonic() - started
        source.close()
        with pytest.raises(StopAsyncIteration):
            await anext(chunks)
        return chunk.data, elapsed

    data, elapsed = run_chunks(scenario)
    assert data == lines(2)
    assert elapsed < 2


def test_watchdogs_race_after_a_replaced_watch_is_not_an_error_in_the_journal(
    log: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Replacing the watch (appends on or off) can leave watchdog's old emitter thread one read
    that logs an ERROR about an inactive thread; harmless, and dropped. Its other messages
    still come through."""
    log.write_bytes(lines(1))
    watchdog_log = logging.getLogger("watchdog.observers.inotify")

    async def scenario() -> None:
        source = FileSource(log, position=None, from_start=True, poll_interval=30.0)
        chunks = source.chunks()
        await asyncio.wait_for(anext(chunks), 5)
        watchdog_log.error("InotifyEmitter.queue_events() called when the thread is inactive")
        watchdog_log.error("inotify watch limit reached")
        source.close()

    with caplog.at_level(logging.ERROR, logger="watchdog"):
        run_chunks(scenario)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("watchdog")] == [
        "inotify watch limit reached"
    ]


def test_watch_notices_rotation(log: Path) -> None:
    log.write_bytes(lines(1))

    async def scenario() -> list[bytes]:
        source = FileSource(log, position=None, from_start=True, poll_interval=30.0)
        chunks = source.chunks()
        seen = [(await asyncio.wait_for(anext(chunks), 5)).data]
        log.rename(log.with_name("mail.log.1"))
        log.write_bytes(lines(2, prefix="new"))
        seen.append((await asyncio.wait_for(anext(chunks), 2)).data)
        source.close()
        return seen

    assert run_chunks(scenario) == [lines(1), lines(2, prefix="new")]


def test_without_watch_the_poll_delivers(log: Path) -> None:
    log.write_bytes(b"")

    async def scenario() -> bytes:
        threads = threading.active_count()
        source = FileSource(log, position=None, from_start=True, poll_interval=0.2, watch=False)
        chunks = source.chunks()
        waiting = asyncio.ensure_future(anext(chunks))
        await asyncio.sleep(0.05)
        assert threading.active_count() == threads
        append(log, lines(1))
        chunk = await asyncio.wait_for(waiting, 2)
        source.close()
        return chunk.data

    assert run_chunks(scenario) == lines(1)


def test_close_ends_the_iterator_and_stops_the_observer(log: Path) -> None:
    log.write_bytes(b"")

    async def scenario() -> None:
        source = FileSource(log, position=None, from_start=True, poll_interval=30.0)
        chunks = source.chunks()
        waiting = asyncio.ensure_future(anext(chunks))
        await asyncio.sleep(0.1)
        source.close()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiting, 2)
        assert source.health().reason == "closed"

    run_chunks(scenario)


def test_other_tasks_run_while_a_backlog_is_read(log: Path) -> None:
    log.write_bytes((b"x" * 99 + b"\n") * 20_000)

    async def scenario() -> tuple[int, int]:
        source = FileSource(log, position=None, from_start=True, max_chunk_bytes=1 << 16)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.ensure_future(ticker())
        received = 0
        async for chunk in source.chunks():
            received += len(chunk.data)
            if received == log.stat().st_size:
                source.close()
        task.cancel()
        return received, ticks

    received, ticks = run_chunks(scenario)
    assert received == 2_000_000
    assert ticks >= 20


def test_a_backlog_is_read_without_pausing_between_chunks(log: Path) -> None:
    # Once caught up the reader lets new lines gather for `coalesce` seconds before it reads
    # again; while a backlog remains it must not pause at all.
    log.write_bytes((b"y" * 99 + b"\n") * 20_000)

    async def scenario() -> int:
        source = FileSource(
            log, position=None, from_start=True, max_chunk_bytes=1 << 16, coalesce=30.0
        )
        chunks = source.chunks()
        received = 0
        while received < 2_000_000:
            received += len((await asyncio.wait_for(anext(chunks), 5)).data)
        source.close()
        return received

    assert run_chunks(scenario) == 2_000_000


def test_lines_written_one_by_one_do_not_wake_the_reader_each(
    log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # syslog daemons write a line at a time: while lines flow, the reader reads every
    # `coalesce` seconds and file-system events for appends are not even delivered
    from tlslogd.sources import file as file_source

    delivered = 0
    original = file_source._Wakeup.on_any_event

    def counting(self: Any, event: Any) -> None:
        nonlocal delivered
        delivered += 1
        original(self, event)

    monkeypatch.setattr(file_source._Wakeup, "on_any_event", counting)
    log.write_bytes(b"")

    async def scenario() -> int:
        source = FileSource(log, position=None, from_start=True, poll_interval=30.0)
        chunks = source.chunks()
        first = asyncio.ensure_future(anext(chunks))
        await asyncio.sleep(0.1)
        received = 0

        async def write() -> None:
            for i in range(300):
                append(log, b"line %d\n" % i)
                await asyncio.sleep(0.005)

        writer = asyncio.ensure_future(write())
        received += (await asyncio.wait_for(first, 5)).lines
        while received < 300:
            received += (await asyncio.wait_for(anext(chunks), 5)).lines
        await writer
        source.close()
        return received

    assert run_chunks(scenario) == 300
    assert delivered < 30  # 300 writes


def test_two_rotations_while_stopped_read_every_file_in_order(
    make: Factory, log: Path, clock: FakeClock
) -> None:
    """Stopped at mail.log; meanwhile it was rotated twice (mail.log -> .1 -> .2): the rest of
    .2, then all of .1, then the new mail.log, nothing skipped or read twice."""
    log.write_bytes(lines(1, 2))
    first = make(log)
    chunk = first.read_available()
    assert chunk is not None and chunk.data == lines(1, 2)
    first.close()

    one, two = log.with_name("mail.log.1"), log.with_name("mail.log.2")
    append(log, lines(3))
    log.rename(one)
    log.write_bytes(lines(4, prefix="middle"))
    one.rename(two)
    log.rename(one)
    log.write_bytes(lines(5, prefix="new"))
    (log.parent / "mail.log.3.gz").write_bytes(b"")  # compressed: named in a warning only

    second = make(log, position=chunk.position)
    assert drain(second) == lines(3) + lines(4, prefix="middle") + lines(5, prefix="new")
    assert second.counters()["read_errors"]["lost"] == 1  # the compressed one


def test_postfix_logrotate_while_stopped_is_counted_as_lost_lines(make: Factory, log: Path) -> None:
    """``postfix logrotate`` (maillog_file) renames the log and gzips it at once: the lines
    written after tlslogd stopped are only in the .gz, which the daemon cannot follow."""
    position = read_then_stop(make, log)

    append(log, lines(3))
    rotated = log.with_name("mail.log.20261126-105000")
    log.rename(rotated)
    gzip_away(rotated, rotated.with_name(rotated.name + ".gz"))
    log.write_bytes(lines(4, prefix="new"))

    second = make(log, position=position)
    assert drain(second) == lines(4, prefix="new")
    assert second.counters()["read_errors"]["lost"] == 1  # the .gz, whatever the new inode


def test_a_rotated_file_compressed_with_nothing_unread_is_not_counted_as_lost(
    make: Factory, log: Path
) -> None:
    """gzip keeps the file's time: a compressed log last written before tlslogd's last read
    held nothing it had not read."""
    position = read_then_stop(make, log)
    written = position["read_at"] - 60
    os.utime(log, (written, written))
    rotated = log.with_name("mail.log.20261126-105000")
    log.rename(rotated)
    gzip_away(rotated, rotated.with_name(rotated.name + ".gz"))
    os.utime(rotated.with_name(rotated.name + ".gz"), (written, written))
    log.write_bytes(lines(4, prefix="new"))

    second = make(log, position=position)
    assert drain(second) == lines(4, prefix="new")
    assert second.counters()["read_errors"]["lost"] == 0


def test_copytruncate_while_stopped_reads_the_rest_from_the_copy(make: Factory, log: Path) -> None:
    log.write_bytes(lines(1, 2))
    first = make(log)
    chunk = first.read_available()
    assert chunk is not None and chunk.data == lines(1, 2)
    first.close()

    append(log, lines(3, 4))  # written while tlslogd is not running, then rotated by copying
    shutil.copy(log, log.with_name("mail.log.1"))
    with open(log, "r+b") as f:
        f.truncate(0)
    append(log, lines(5, prefix="new"))

    second = make(log, position=chunk.position)
    assert drain(second) == lines(3, 4) + lines(5, prefix="new")
    assert second.counters()["rotations"]["truncate"] == 1


def test_a_rotated_file_is_read_when_the_new_log_reuses_the_old_inode(
    make: Factory, log: Path
) -> None:
    """Stopped; the log was rotated to mail.log.1, which was then rotated on and compressed,
    and the new mail.log got the freed inode number back: mail.log.1 (written to since) is
    read before the new log, nothing skipped."""
    position = read_then_stop(make, log)
    ino = log.stat().st_ino
    append(log, lines(3))
    old = log.with_name("mail.log.0")
    log.rename(old)
    one = log.with_name("mail.log.1")
    one.write_bytes(lines(4, prefix="middle"))
    gzip_away(old, log.with_name("mail.log.2.gz"))
    log.write_bytes(lines(5, prefix="new"))
    if log.stat().st_ino != ino:
        pytest.skip("this file system did not hand the inode number out again")

    second = make(log, position=position)
    assert drain(second) == lines(4, prefix="middle") + lines(5, prefix="new")
    assert second.counters()["read_errors"]["lost"] == 1  # line 3, in the .gz


def test_rotated_twice_and_the_saved_file_compressed_reads_the_next_one_before_the_log(
    make: Factory, log: Path
) -> None:
    """Stopped at mail.log; rotated twice while stopped, and the file tlslogd was reading was
    compressed on the second rotation: its rest is lost (counted), mail.log.1 is read before the
    new mail.log, each once."""
    position = read_then_stop(make, log)

    one = log.with_name("mail.log.1")
    append(log, lines(3))
    log.rename(one)
    log.write_bytes(lines(4, prefix="middle"))
    saved_ino = one.stat().st_ino
    gzip_away(one, log.with_name("mail.log.2.gz"))
    log.with_name("other.log").write_bytes(b"")  # takes the freed inode number, if it comes back
    log.rename(one)
    log.write_bytes(lines(5, prefix="new"))
    if log.stat().st_ino == saved_ino:
        pytest.skip("the new log got the saved file's inode number")

    second = make(log, position=position)
    assert drain(second) == lines(4, prefix="middle") + lines(5, prefix="new")
    assert second.counters()["read_errors"]["lost"] == 1
