"""JournalSource: following the systemd journal through journalctl.

Most tests write a real journal file with systemd-journal-remote (from journal export format)
and follow it with the real journalctl. A few use a stand-in journalctl script for what a real
one cannot be made to do on demand (flood its standard error, ignore SIGTERM, print a record whose
MESSAGE it left out).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tlslogd.events import TlsEstablished
from tlslogd.parse import Parser
from tlslogd.sources import Chunk
from tlslogd.sources.journal import (
    STOP_TIMEOUT,
    FieldError,
    JournalSource,
    local_time,
    record_line,
)

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "journal"
NOBODY = 65534

JOURNALCTL = shutil.which("journalctl")
JOURNAL_REMOTE = next(
    (
        path
        for path in (
            "/lib/systemd/systemd-journal-remote",
            "/usr/lib/systemd/systemd-journal-remote",
        )
        if os.access(path, os.X_OK)
    ),
    None,
)
needs_journal = pytest.mark.skipif(
    JOURNALCTL is None or JOURNAL_REMOTE is None,
    reason="needs journalctl and systemd-journal-remote (Debian packages systemd and "
    "systemd-journal-remote) to write and read a real journal file",
)
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to user nobody")

BOOT_A = "0f0e0d0c0b0a09080706050403020100"
BOOT_B = "8d8c8b8a898887868584838281807f7e"
T0 = 1736064187118402  # 2025-01-05T08:03:07.118402Z
TLS = (
    "Anonymous TLS connection established from localhost[127.0.0.1]: TLSv1.3 with cipher "
    "TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature RSA-PSS "
    "(2048 bits) server-digest SHA256"
)


# ------------------------------------------------------------------------ writing a journal


@dataclass
class Entry:
    message: str | bytes
    unit: str = "postfix@-.service"
    identifier: str | None = "postfix/smtpd"
    pid: int | None = 1234
    host: str = "mx1"
    comm: str = "smtpd"
    boot: str = BOOT_A


def _field(name: str, value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    try:
        raw.decode()
        plain = b"\n" not in raw
    except UnicodeDecodeError:
        plain = False
    if plain:
        return name.encode() + b"=" + raw + b"\n"
    return name.encode() + b"\n" + struct.pack("<Q", len(raw)) + raw + b"\n"


class Journal:
    """A journal file written by systemd-journal-remote; entries are one second apart."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0

    @property
    def arg(self) -> str:
        return f"--file={self.path}"

    def append(self, *entries: Entry) -> list[str]:
        """Write the entries; their lines as JournalSource makes them (the time zone is UTC)."""
        records: list[bytes] = []
        lines: list[str] = []
        for entry in entries:
            usec = T0 + self.count * 1_000_000
            fields: list[tuple[str, str | bytes]] = [
                ("__REALTIME_TIMESTAMP", str(usec)),
                ("__MONOTONIC_TIMESTAMP", str(5_000_000 + self.count * 1_000_000)),
                ("_BOOT_ID", entry.boot),
                ("_HOSTNAME", entry.host),
                ("_SYSTEMD_UNIT", entry.unit),
                ("_COMM", entry.comm),
                ("_TRANSPORT", "syslog"),
            ]
            if entry.identifier is not None:
                fields.append(("SYSLOG_IDENTIFIER", entry.identifier))
            if entry.pid is not None:
                fields += [("_PID", str(entry.pid)), ("SYSLOG_PID", str(entry.pid))]
            fields.append(("MESSAGE", entry.message))
            records.append(b"".join(_field(n, v) for n, v in fields) + b"\n")
            self.count += 1
            tag = entry.identifier or entry.comm
            head = f"{tag}[{entry.pid}]" if entry.pid is not None else tag
            message = entry.message
            if isinstance(message, bytes):
                message = message.decode("utf-8", "replace")
            body = message.replace("\n", " ")
            lines.append(f"{local_time(str(usec))} {entry.host} {head}: {body}\n")
        assert JOURNAL_REMOTE is not None
        subprocess.run(
            [JOURNAL_REMOTE, f"--output={self.path}", "-"],
            input=b"".join(records),
            capture_output=True,
            check=True,
        )
        return [
            line for line, entry in zip(lines, entries, strict=True) if entry.unit != OTHER_UNIT
        ]

    def cursors(self) -> list[str]:
        """The cursors of all records, whatever their unit."""
        assert JOURNALCTL is not None
        out = subprocess.run(
            [JOURNALCTL, self.arg, "--merge", "--output=json", "--no-pager"],
            capture_output=True,
            check=True,
        ).stdout
        return [json.loads(line)["__CURSOR"] for line in out.splitlines()]


OTHER_UNIT = "cron.service"


def postfix(n: int, start: int = 0, **options: Any) -> list[Entry]:
    return [
        Entry(f"connect from client{i}.example[192.0.2.{i % 250 + 1}]", **options)
        for i in range(start, start + n)
    ]


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "system.journal")


Factory = Callable[..., JournalSource]


@pytest.fixture
def make() -> Iterator[Factory]:
    """Sources with a short restart delay, closed after the test."""
    made: list[JournalSource] = []

    def factory(**options: Any) -> JournalSource:
        options.setdefault("position", None)
        options.setdefault("from_start", True)
        options.setdefault("restart_delay", 0.2)
        source = JournalSource(**options)
        made.append(source)
        return source

    yield factory
    for source in made:
        source.close()


# ---------------------------------------------------------------------------------- following


@contextlib.asynccontextmanager
async def following(source: JournalSource) -> AsyncIterator[AsyncIterator[Chunk]]:
    chunks = source.chunks()
    try:
        yield chunks
    finally:
        source.close()
        await chunks.aclose()


async def take(chunks: AsyncIterator[Chunk], lines: int, timeout: float = 20) -> list[Chunk]:
    """Chunks until they hold ``lines`` lines."""
    got: list[Chunk] = []
    async with asyncio.timeout(timeout):
        while sum(c.lines for c in got) < lines:
            got.append(await anext(chunks))
    return got


def text(chunks: list[Chunk]) -> list[str]:
    return b"".join(c.data for c in chunks).decode().splitlines(keepends=True)


async def quiet(chunks: AsyncIterator[Chunk], seconds: float) -> None:
    """Nothing comes for ``seconds`` (the iterator is finished afterwards)."""
    waiting = asyncio.ensure_future(anext(chunks))
    await asyncio.sleep(seconds)
    assert not waiting.done()
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting


async def until(check: Callable[[], bool], timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ------------------------------------------------------------------------------ conversion


def quirks() -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / "quirks.jsonl").read_text().splitlines()]


QUIRK_LINES = [
    f"2025-01-05T08:03:07.118402+00:00 mx1 postfix/smtpd[1234]: {TLS}\n",
    "2025-01-05T08:03:08.118402+00:00 mx1 postfix/smtpd[1234]: warning: non-UTF-8 data from "
    "client: caf\ufffd \ufffd\n",
    "2025-01-05T08:03:09.118402+00:00 mx1 postfix/smtpd[1234]: warning: first line second line\n",
    "2025-01-05T08:03:10.118402+00:00 mx1 smtpd[1240]: disconnect from localhost[127.0.0.1] "
    "ehlo=2 starttls=1 quit=1 commands=4\n",
    "2025-01-05T08:03:11.118402+00:00 mx1 postfix/postfix-script: starting the Postfix mail "
    "system\n",
    None,
    "2025-01-05T08:03:13.118402+00:00 mx1 postfix/qmgr[1251]: 4BC2A1E0F3: removed\n",
]


def test_lines_of_real_journalctl_json_records() -> None:
    for record, expected in zip(quirks(), QUIRK_LINES, strict=True):
        if expected is None:
            with pytest.raises(FieldError) as failure:
                record_line(record)
            assert failure.value.name == "MESSAGE"
        else:
            assert record_line(record).decode() == expected


def test_local_time_with_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "CET-1CEST,M3.5.0,M10.5.0/3")
    time.tzset()
    try:
        record = {
            "__REALTIME_TIMESTAMP": "1736064187118402",
            "_HOSTNAME": "mx1",
            "SYSLOG_IDENTIFIER": "postfix/smtpd",
            "_PID": "1234",
            "MESSAGE": "connect from localhost[127.0.0.1]",
        }
        assert record_line(record) == (
            b"2025-01-05T09:03:07.118402+01:00 mx1 postfix/smtpd[1234]: connect from "
            b"localhost[127.0.0.1]\n"
        )
        assert local_time("1751706187000001") == "2025-07-05T11:03:07.000001+02:00"
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, "T mx1 postfix/smtpd[77]: hello\n"),
        ({"SYSLOG_PID": "x"}, "T mx1 postfix/smtpd[88]: hello\n"),
        ({"SYSLOG_PID": None, "_PID": None}, "T mx1 postfix/smtpd: hello\n"),
        ({"SYSLOG_IDENTIFIER": None}, "T mx1 smtpd[77]: hello\n"),
        ({"SYSLOG_IDENTIFIER": None, "_COMM": None}, "T mx1 -[77]: hello\n"),
        ({"_HOSTNAME": None}, "T - postfix/smtpd[77]: hello\n"),
        ({"_HOSTNAME": "mail host"}, "T mail_host postfix/smtpd[77]: hello\n"),
        ({"MESSAGE": "a\nb\r\nc\n\n"}, "T mx1 postfix/smtpd[77]: a b\r c\n"),
        ({"MESSAGE": [104, 105, 10, 255]}, "T mx1 postfix/smtpd[77]: hi \ufffd\n"),
        ({"MESSAGE": [[104, 105], "other"]}, "T mx1 postfix/smtpd[77]: hi\n"),
        ({"MESSAGE": ""}, "T mx1 postfix/smtpd[77]: \n"),
    ],
)
def test_record_fields(change: dict[str, Any], expected: str) -> None:
    record: dict[str, Any] = {
        "__REALTIME_TIMESTAMP": "1736064187118402",
        "_HOSTNAME": "mx1",
        "SYSLOG_IDENTIFIER": "postfix/smtpd",
        "SYSLOG_PID": "77",
        "_PID": "88",
        "_COMM": "smtpd",
        "MESSAGE": "hello",
    }
    record.update(change)
    record = {k: v for k, v in record.items() if v is not None}
    stamp = "2025-01-05T08:03:07.118402+00:00"
    assert record_line(record).decode() == expected.replace("T", stamp, 1)


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"MESSAGE": None}, "MESSAGE"),
        ({"MESSAGE": 5}, "MESSAGE"),
        ({"__REALTIME_TIMESTAMP": None}, "__REALTIME_TIMESTAMP"),
        ({"__REALTIME_TIMESTAMP": "soon"}, "__REALTIME_TIMESTAMP"),
        ({"__REALTIME_TIMESTAMP": "9" * 30}, "__REALTIME_TIMESTAMP"),
    ],
)
def test_unusable_fields(change: dict[str, Any], name: str) -> None:
    record = {"__REALTIME_TIMESTAMP": "1736064187118402", "MESSAGE": "hello", **change}
    with pytest.raises(FieldError) as failure:
        record_line(record)
    assert failure.value.name == name


# ------------------------------------------------------------------------- command and position


def test_command_line() -> None:
    source = JournalSource(
        position={"cursor": "s=1;i=2"},
        from_start=False,
        units=["postfix.service", "postfix@-.service"],
        identifiers=["postfix/smtpd"],
        journalctl="/usr/bin/journalctl",
        journal_args=["--directory=/srv/journal"],
    )
    assert source.command() == [
        "/usr/bin/journalctl",
        "--follow",
        "--merge",
        "--output=json",
        "--output-fields=MESSAGE,SYSLOG_IDENTIFIER,SYSLOG_PID,_PID,_COMM,_HOSTNAME,_SYSTEMD_UNIT",
        "--no-pager",
        "--all",
        "--unit=postfix.service",
        "--unit=postfix@-.service",
        "--identifier=postfix/smtpd",
        "--directory=/srv/journal",
        "--cursor=s=1;i=2",
        "--lines=all",
    ]
    assert JournalSource(position=None, from_start=True).command()[-1] == "--lines=all"
    assert JournalSource(position=None, from_start=False).command()[-1] == "--lines=0"


def test_unit_globs_are_matched_by_the_source() -> None:
    """journalctl would expand the glob once, against the units already in the journal."""
    command = JournalSource(position=None, from_start=True, identifiers=["postfix/smtpd"]).command()
    assert not [arg for arg in command if arg.startswith("--unit")]
    assert "--identifier=postfix/smtpd" in command


def test_position_before_the_start() -> None:
    assert JournalSource(position=None, from_start=False).position() is None
    assert JournalSource(position=None, from_start=True).position() == {"cursor": None}
    saved = {"cursor": "s=abc;i=5"}
    assert JournalSource(position=saved, from_start=False).position() == saved
    start = JournalSource(position={"cursor": None}, from_start=False)
    assert start.position() == {"cursor": None}
    assert start.command()[-1] == "--lines=all"
    health = JournalSource(position=None, from_start=True).health()
    assert not health.ok
    assert health.reason == "journalctl not started yet"


@pytest.mark.parametrize("raw", [{"cursor": 5}, {"cursor": "a b"}, {"cursor": ""}, {}])
def test_unusable_saved_position_is_ignored(
    raw: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        source = JournalSource(position=raw, from_start=False)
    assert source.position() is None
    assert "ignoring unusable saved journal position" in caplog.text


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        JournalSource(position=None, from_start=True, max_chunk_bytes=0)
    with pytest.raises(ValueError):
        JournalSource(position=None, from_start=True, restart_delay=-1)


# --------------------------------------------------------------------- a real journal file


@needs_journal
def test_lines_of_a_real_journal_and_the_unit_filter(journal: Journal, make: Factory) -> None:
    expected = journal.append(
        Entry(TLS),
        Entry("noise", unit=OTHER_UNIT, identifier="CRON", pid=4321, comm="cron"),
        Entry(b"warning: bad client data \xff\xfe end", pid=1235),
        Entry("warning: first line\nsecond line", pid=1236),
        Entry("connect from localhost[127.0.0.1]", identifier=None, pid=1237),
        Entry("starting the Postfix mail system", identifier="postfix/postfix-script", pid=None),
        Entry(
            "TLS connection established to mx.example[192.0.2.1]:25",
            unit="postfix.service",
            identifier="postfix/smtp",
            pid=1300,
            comm="smtp",
        ),
    )
    source = make(journal_args=[journal.arg])

    async def scenario() -> list[Chunk]:
        async with following(source) as chunks:
            return await take(chunks, 6)

    chunks = asyncio.run(scenario())
    got = text(chunks)
    assert got == [
        f"2025-01-05T08:03:07.118402+00:00 mx1 postfix/smtpd[1234]: {TLS}\n",
        "2025-01-05T08:03:09.118402+00:00 mx1 postfix/smtpd[1235]: warning: bad client data "
        "\ufffd\ufffd end\n",
        "2025-01-05T08:03:10.118402+00:00 mx1 postfix/smtpd[1236]: warning: first line second "
        "line\n",
        "2025-01-05T08:03:11.118402+00:00 mx1 smtpd[1237]: connect from localhost[127.0.0.1]\n",
        "2025-01-05T08:03:12.118402+00:00 mx1 postfix/postfix-script: starting the Postfix mail "
        "system\n",
        "2025-01-05T08:03:13.118402+00:00 mx1 postfix/smtp[1300]: TLS connection established to "
        "mx.example[192.0.2.1]:25\n",
    ]
    assert len(chunks) == 1  # the backlog comes in one chunk
    assert chunks[0].lines == 6
    assert chunks[0].position == {"cursor": journal.cursors()[-1]}
    assert source.counters()["bytes_read"][""] == len(chunks[0].data)

    assert got == expected
    tls = next(Parser().scan(chunks[0].data.decode()))
    assert isinstance(tls, TlsEstablished)
    assert (tls.host, tls.program, tls.pid, tls.protocol) == (
        "mx1",
        "postfix/smtpd",
        1234,
        "TLSv1.3",
    )
    assert tls.ts == pytest.approx(T0 / 1e6)


@needs_journal
def test_units_are_globs_and_identifiers_narrow_them(journal: Journal, make: Factory) -> None:
    journal.append(
        Entry("a", unit="postfix@-.service"),
        Entry("b", unit="postfix@out.service", identifier="postfix-out/smtp"),
        Entry("c", unit="postfix.service"),
    )

    async def lines(count: int, **options: Any) -> list[str]:
        async with following(make(journal_args=[journal.arg], **options)) as chunks:
            got = [line.rsplit(" ", 1)[1] for line in text(await take(chunks, count))]
            await quiet(chunks, 0.3)
            return got

    assert asyncio.run(lines(2, units=["postfix@*.service"])) == ["a\n", "b\n"]
    assert asyncio.run(lines(1, identifiers=["postfix-out/smtp"])) == ["b\n"]
    assert asyncio.run(lines(2, units=[], identifiers=["postfix/smtpd"])) == ["a\n", "c\n"]


@needs_journal
def test_resuming_at_every_saved_cursor_loses_and_repeats_nothing(
    journal: Journal, make: Factory
) -> None:
    entries = [*postfix(3), Entry("cron", unit=OTHER_UNIT), *postfix(3, start=3)]
    expected = journal.append(*entries)
    first = make(journal_args=[journal.arg], max_chunk_bytes=1)

    async def read_all() -> list[Chunk]:
        async with following(first) as chunks:
            return await take(chunks, 6)

    chunks = asyncio.run(read_all())
    assert [c.lines for c in chunks] == [1] * 6  # one line per chunk at this chunk size
    assert text(chunks) == expected
    for done, chunk in enumerate(chunks, start=1):
        resumed = make(journal_args=[journal.arg], position=chunk.position, from_start=False)

        async def rest(source: JournalSource = resumed, count: int = 6 - done) -> list[str]:
            async with following(source) as more:
                got = text(await take(more, count)) if count else []
                await quiet(more, 0.5)  # nothing after the last record
                return got

        assert asyncio.run(rest()) == expected[done:]


@needs_journal
def test_resuming_at_a_cursor_whose_record_is_filtered_out_loses_nothing(
    journal: Journal, make: Factory
) -> None:
    """journalctl --after-cursor would skip the first record after a record of another unit."""
    expected = journal.append(*postfix(2), Entry("cron", unit=OTHER_UNIT), *postfix(2, start=2))
    cron_cursor = journal.cursors()[2]
    source = make(journal_args=[journal.arg], position={"cursor": cron_cursor})

    async def scenario() -> list[str]:
        async with following(source) as chunks:
            return text(await take(chunks, 2))

    assert asyncio.run(scenario()) == expected[2:]


@needs_journal
def test_resuming_at_a_cursor_whose_record_was_vacuumed_loses_nothing(
    tmp_path: Path, make: Factory
) -> None:
    directory = tmp_path / "journal"
    directory.mkdir()
    old = Journal(directory / "system@0001.journal")
    old.append(*postfix(2))
    cursor = old.cursors()[-1]
    current = Journal(directory / "system.journal")
    current.count = old.count
    expected = current.append(*postfix(3, start=2))
    old.path.unlink()  # journald removed the older file while tlslogd was not running
    source = make(journal_args=[f"--directory={directory}"], position={"cursor": cursor})

    async def scenario() -> list[str]:
        async with following(source) as chunks:
            return text(await take(chunks, 3))

    assert asyncio.run(scenario()) == expected


@needs_journal
def test_resuming_after_a_reboot_reads_the_rest_of_the_previous_boot(
    journal: Journal, make: Factory
) -> None:
    """journalctl --follow shows the last boot only, unless --merge is given."""
    expected = journal.append(*postfix(3), *postfix(2, start=3, boot=BOOT_B))
    source = make(journal_args=[journal.arg], position={"cursor": journal.cursors()[0]})

    async def scenario() -> list[str]:
        async with following(source) as chunks:
            return text(await take(chunks, 4))

    assert asyncio.run(scenario()) == expected[1:]


@needs_journal
def test_from_start_reads_every_boot_then_follows(journal: Journal, make: Factory) -> None:
    old = journal.append(*postfix(2), *postfix(2, start=2, boot=BOOT_B))
    source = make(journal_args=[journal.arg], from_start=True)

    async def scenario() -> tuple[list[str], list[str], float]:
        async with following(source) as chunks:
            backlog = text(await take(chunks, 4))
            waiting = asyncio.ensure_future(take(chunks, 2))
            await asyncio.sleep(0.3)
            started = time.monotonic()
            new = journal.append(*postfix(2, start=4, boot=BOOT_B))
            appended = text(await waiting)
            assert appended == new
            return backlog, appended, time.monotonic() - started

    backlog, _, delay = asyncio.run(scenario())
    assert backlog == old
    assert delay < 5


@needs_journal
def test_default_start_reads_only_new_records(journal: Journal, make: Factory) -> None:
    journal.append(*postfix(3))
    last = journal.cursors()[-1]
    source = make(journal_args=[journal.arg], from_start=False)
    assert source.position() is None
    source.start()
    # the position is known before any new record arrives, so it can be checkpointed, and
    # the records logged between start() and the first read are not skipped
    assert source.position() == {"cursor": last}
    new = journal.append(*postfix(2, start=3))

    async def scenario() -> list[str]:
        async with following(source) as chunks:
            got = text(await take(chunks, 2))
            await quiet(chunks, 0.5)
            return got

    assert asyncio.run(scenario()) == new
    assert source.position() == {"cursor": journal.cursors()[-1]}


@needs_journal
def test_a_unit_matching_a_glob_that_first_logs_after_the_start_is_followed(
    journal: Journal, make: Factory
) -> None:
    journal.append(Entry("cron", unit=OTHER_UNIT))
    cron = journal.cursors()[0]
    source = make(journal_args=[journal.arg], from_start=False)

    async def scenario() -> list[str]:
        async with following(source) as chunks:
            waiting = asyncio.ensure_future(take(chunks, 2))
            await until(lambda: source.position() is not None)
            assert source.position() == {"cursor": cron}
            new = journal.append(*postfix(2, unit="postfix@out.service"))
            got = text(await waiting)
            assert got == new
            return got

    asyncio.run(scenario())


@needs_journal
def test_a_backlog_comes_in_bounded_chunks(journal: Journal, make: Factory) -> None:
    expected = journal.append(*postfix(400))
    size = len(expected[0]) * 50 + 10

    async def read(max_chunk_bytes: int) -> list[Chunk]:
        source = make(journal_args=[journal.arg], max_chunk_bytes=max_chunk_bytes)
        async with following(source) as chunks:
            return await take(chunks, 400)

    small = asyncio.run(read(size))
    assert text(small) == expected
    assert all(len(c.data) <= size + len(expected[0]) for c in small)
    assert len(small) <= 10
    assert all(c.data.count(b"\n") == c.lines for c in small)
    assert len(asyncio.run(read(1 << 20))) <= 3  # batched, not one chunk per record


@needs_journal
def test_a_message_of_100_kilobytes_comes_whole(journal: Journal, make: Factory) -> None:
    message = "4BC2A1E0F3: message-id=<" + "x" * 100_000 + "@example.org>"
    expected = journal.append(Entry(message, identifier="postfix/cleanup"))
    source = make(journal_args=[journal.arg])

    async def scenario() -> list[str]:
        async with following(source) as chunks:
            return text(await take(chunks, 1))

    assert asyncio.run(scenario()) == expected
    assert source.counters()["read_errors"]["journal_field"] == 0


@needs_journal
def test_a_new_journal_file_in_the_directory_is_followed(tmp_path: Path, make: Factory) -> None:
    directory = tmp_path / "journal"
    directory.mkdir()
    first = Journal(directory / "system.journal")
    old = first.append(*postfix(2))
    source = make(journal_args=[f"--directory={directory}"])

    async def scenario() -> list[str]:
        async with following(source) as chunks:
            assert text(await take(chunks, 2)) == old
            waiting = asyncio.ensure_future(take(chunks, 2))
            await asyncio.sleep(0.3)
            second = Journal(directory / "system@0001.journal")
            second.count = first.count  # later records, as after journald rotated its file
            new = second.append(*postfix(2, start=2))
            got = text(await waiting)
            assert got == new
            return got

    asyncio.run(scenario())


@needs_journal
def test_close_ends_the_chunks_and_leaves_no_process(journal: Journal, make: Factory) -> None:
    journal.append(*postfix(1))
    source = make(journal_args=[journal.arg])

    async def scenario() -> int:
        chunks = source.chunks()
        await take(chunks, 1)
        health = source.health()
        assert health.ok, health.reason
        pid = health.detail["pid"]
        assert alive(pid)
        waiting = asyncio.ensure_future(anext(chunks))
        await asyncio.sleep(0.2)
        source.close()
        assert not alive(pid)
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiting, 5)
        return pid

    asyncio.run(scenario())
    health = source.health()
    assert not health.ok
    assert health.reason == "closed"
    assert health.detail["pid"] is None
    assert source.counters()["read_errors"]["journal"] == 0


@needs_journal
def test_cancelling_the_reader_stops_journalctl(journal: Journal, make: Factory) -> None:
    journal.append(*postfix(1))
    source = make(journal_args=[journal.arg])

    async def scenario() -> int:
        chunks = source.chunks()
        await take(chunks, 1)
        pid: int = source.health().detail["pid"]
        reader = asyncio.ensure_future(anext(chunks))
        await asyncio.sleep(0.2)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        return pid

    assert not alive(asyncio.run(scenario()))


@needs_journal
def test_reopen_restarts_from_the_last_cursor(journal: Journal, make: Factory) -> None:
    journal.append(*postfix(3))
    source = make(journal_args=[journal.arg])

    async def scenario() -> None:
        async with following(source) as chunks:
            await take(chunks, 3)
            old_pid = source.health().detail["pid"]
            waiting = asyncio.ensure_future(take(chunks, 2))
            await asyncio.sleep(0.2)
            source.reopen()
            assert not alive(old_pid)
            await until(lambda: source.health().detail["pid"] not in (None, old_pid))
            new = journal.append(*postfix(2, start=3))
            assert text(await waiting) == new  # nothing read twice
            assert source.health().ok

    asyncio.run(scenario())
    assert source.counters()["read_errors"]["journal"] == 0


@needs_journal
def test_journalctl_exits_and_is_restarted_at_the_cursor(tmp_path: Path, make: Factory) -> None:
    """A journal file that does not exist yet: journalctl exits with an error, again and again,
    until the file is there."""
    journal = Journal(tmp_path / "later.journal")
    source = make(journal_args=[journal.arg], restart_delay=0.1)

    async def scenario() -> list[str]:
        async with following(source) as chunks:
            waiting = asyncio.ensure_future(take(chunks, 2))
            await until(lambda: source.counters()["read_errors"]["journal"] >= 2)
            health = source.health()
            assert not health.ok
            assert "journalctl exited with status 1" in health.reason
            assert "No such file or directory" in health.reason
            assert "restarting in 0.1 s" in health.reason
            new = journal.append(*postfix(2))
            got = text(await waiting)
            assert got == new
            await until(lambda: source.health().ok, timeout=5)
            return got

    asyncio.run(scenario())


@needs_journal
def test_a_cursor_journalctl_rejects_is_dropped(
    journal: Journal, make: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    expected = journal.append(*postfix(2))
    source = make(journal_args=[journal.arg], position={"cursor": "not-a-cursor"})

    async def scenario() -> list[str]:
        async with following(source) as chunks:
            return text(await take(chunks, 2))

    with caplog.at_level(logging.WARNING):
        assert asyncio.run(scenario()) == expected  # from_start: from the beginning
    assert "journalctl rejected the saved cursor not-a-cursor" in caplog.text
    assert source.counters()["read_errors"]["journal"] == 1


def test_start_without_journalctl_follows_from_the_end(tmp_path: Path, make: Factory) -> None:
    source = make(journalctl=str(tmp_path / "no-journalctl"), from_start=False)
    source.start()
    assert source.position() is None
    assert source.command()[-1] == "--lines=0"
    assert "not found" in source.health().reason
    assert source.counters()["read_errors"]["journal"] == 1


def test_missing_journalctl(tmp_path: Path, make: Factory) -> None:
    source = make(journalctl=str(tmp_path / "no-journalctl"), restart_delay=0.05)

    async def scenario() -> None:
        async with following(source) as chunks:
            waiting = asyncio.ensure_future(anext(chunks))
            await until(lambda: source.counters()["read_errors"]["journal"] >= 3)
            health = source.health()
            assert not health.ok
            assert health.reason == (
                f"{tmp_path / 'no-journalctl'} not found: reading the journal needs journalctl "
                "(Debian package systemd)"
            )
            assert not waiting.done()
            source.close()
            with pytest.raises(StopAsyncIteration):
                await asyncio.wait_for(waiting, 5)

    asyncio.run(scenario())


# --------------------------------------------------------------------------- permissions


AS_NOBODY = r"""
import asyncio, json, os, sys
from tlslogd.sources.journal import JournalSource

os.setgroups([])
os.setgid(int(sys.argv[2]))
os.setuid(int(sys.argv[2]))


async def main():
    source = JournalSource(
        position=None, from_start=True, journal_args=[f"--directory={sys.argv[1]}"],
        restart_delay=0.1,
    )
    chunks = source.chunks()
    waiting = asyncio.ensure_future(anext(chunks))
    while source.counters()["read_errors"]["permission"] == 0:
        await asyncio.sleep(0.02)
    health = source.health()
    print(json.dumps({"ok": health.ok, "reason": health.reason}), flush=True)
    chunk = await asyncio.wait_for(waiting, 30)
    health = source.health()
    print(json.dumps({"ok": health.ok, "data": chunk.data.decode()}), flush=True)
    source.close()
    await chunks.aclose()


asyncio.run(main())
"""


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory every user can search (pytest's own temporary directories are private)."""
    with tempfile.TemporaryDirectory(dir="/tmp") as name:
        os.chmod(name, 0o755)
        yield Path(name)


@needs_journal
@needs_root
def test_unreadable_journal_names_the_user_and_the_group(public_dir: Path) -> None:
    journal = Journal(public_dir / "system.journal")
    expected = journal.append(*postfix(1))
    journal.path.chmod(0o640)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen(
        [sys.executable, "-c", AS_NOBODY, str(public_dir), str(NOBODY)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as child:
        try:
            assert child.stdout is not None
            denied = json.loads(child.stdout.readline())
            journal.path.chmod(0o644)
            allowed = json.loads(child.stdout.readline())
            _, stderr = child.communicate(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
    assert not denied["ok"]
    assert denied["reason"].startswith("journalctl cannot read the journal as user nobody")
    assert "No journal files were opened due to insufficient permissions" in denied["reason"]
    assert "usermod -aG systemd-journal nobody" in denied["reason"]
    assert allowed == {"ok": True, "data": "".join(expected)}
    assert child.returncode == 0, stderr


# ---------------------------------------------------------------- a stand-in journalctl


def stand_in(tmp_path: Path, body: str) -> str:
    """An executable that plays journalctl: ``body`` is Python."""
    script = tmp_path / "journalctl"
    script.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    script.chmod(0o755)
    return str(script)


RECORD = {
    "__CURSOR": "s=1;i=1",
    "__REALTIME_TIMESTAMP": str(T0),
    "_HOSTNAME": "mx1",
    "SYSLOG_IDENTIFIER": "postfix/smtpd",
    "_PID": "1234",
    "_SYSTEMD_UNIT": "postfix@-.service",
    "MESSAGE": "connect from localhost[127.0.0.1]",
}
RECORD_LINE = (
    "2025-01-05T08:03:07.118402+00:00 mx1 postfix/smtpd[1234]: connect from localhost[127.0.0.1]\n"
)


def test_a_flood_on_standard_error_neither_blocks_nor_floods_the_log(
    tmp_path: Path, make: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    journalctl = stand_in(
        tmp_path,
        f"""
        import json, sys, time
        sys.stderr.write("Hint: You are currently not seeing messages from other users and the system.\\n")
        for i in range(20000):
            sys.stderr.write(f"noise {{i}} " + "x" * 60 + "\\n")
        sys.stderr.flush()
        print(json.dumps({RECORD!r}), flush=True)
        time.sleep(60)
        """,
    )
    source = make(journalctl=journalctl)

    async def scenario() -> list[str]:
        async with following(source) as chunks:
            got = text(await take(chunks, 1))
            health = source.health()
            assert not health.ok  # records come, but not all of them
            assert "not seeing messages from other users" in health.reason
            assert "usermod -aG systemd-journal" in health.reason
            return got

    with caplog.at_level(logging.WARNING):
        assert asyncio.run(scenario()) == [RECORD_LINE]
    stderr_logs = [r for r in caplog.records if r.getMessage().startswith("journalctl: ")]
    assert 5 <= len(stderr_logs) <= 12
    assert source.counters()["read_errors"]["permission"] == 1


def test_journalctl_that_ignores_sigterm_is_killed(tmp_path: Path, make: Factory) -> None:
    journalctl = stand_in(
        tmp_path,
        f"""
        import json, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print(json.dumps({RECORD!r}), flush=True)
        time.sleep(60)
        """,
    )
    source = make(journalctl=journalctl)

    async def scenario() -> tuple[int, float]:
        chunks = source.chunks()
        await take(chunks, 1)
        pid: int = source.health().detail["pid"]
        started = time.monotonic()
        source.close()
        elapsed = time.monotonic() - started
        await chunks.aclose()
        return pid, elapsed

    pid, elapsed = asyncio.run(scenario())
    assert not alive(pid)
    assert STOP_TIMEOUT - 0.5 <= elapsed <= STOP_TIMEOUT + 2


def test_records_without_a_usable_message_are_skipped_and_counted(
    tmp_path: Path, make: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    """The captured output of a real journalctl without --all, replayed: the record whose
    MESSAGE it left out (null) gives no line, is counted, logged once, and passed over."""
    records = quirks()
    records.append({**records[5], "__CURSOR": records[5]["__CURSOR"] + "-again"})
    replay = tmp_path / "records.jsonl"
    replay.write_text("".join(json.dumps(r) + "\n" for r in records) + "not json\n")
    journalctl = stand_in(
        tmp_path,
        f"""
        import sys, time
        sys.stdout.write(open({str(replay)!r}).read())
        sys.stdout.flush()
        time.sleep(60)
        """,
    )
    source = make(journalctl=journalctl)

    async def scenario() -> list[Chunk]:
        async with following(source) as chunks:
            got = await take(chunks, 6)
            await until(lambda: source.counters()["read_errors"]["journal_field"] == 3)
            assert source.health().ok
            return got

    with caplog.at_level(logging.WARNING):
        chunks = asyncio.run(scenario())
    assert text(chunks) == [line for line in QUIRK_LINES if line is not None]
    last_line, last_record = records[6]["__CURSOR"], records[7]["__CURSOR"]
    assert chunks[-1].position["cursor"] in (last_line, last_record)
    # the last record gave no line, but reading resumes after it
    assert source.position() == {"cursor": last_record}
    assert caplog.text.count("MESSAGE is missing or was left out by journalctl") == 1
    assert caplog.text.count("is not valid JSON") == 1


# ------------------------------------------------------------------------------ the daemon


@needs_journal
def test_daemon_follows_a_journal_directory_by_identifier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``tlslogd run --log journald`` configured as for a Postfix in a container whose journal
    comes from elsewhere: ``journal_directory`` and ``journal_identifiers`` instead of units.
    Scraped over HTTP, before and after a record arrives while it runs."""
    from tests.test_daemon import Daemon, metric

    directory = tmp_path / "journal"
    directory.mkdir()
    journal = Journal(directory / "system.journal")
    unit = "docker.service"
    journal.append(
        Entry("connect from localhost[127.0.0.1]", unit=unit),
        Entry(TLS, unit=unit),
        Entry(TLS.replace("from", "to", 1), unit=unit, identifier="postfix-out/smtp"),
    )
    monkeypatch.setenv("TLSLOGD_JOURNAL_DIRECTORY", str(directory))
    monkeypatch.setenv("TLSLOGD_JOURNAL_UNITS", "[]")
    monkeypatch.setenv("TLSLOGD_JOURNAL_IDENTIFIERS", '["postfix/smtpd"]')
    daemon = Daemon(Path("journald"), tmp_path / "state", "--from-start").start()
    try:
        assert daemon.wait_lines(2)["tls_handshakes"] == 1
        journal.append(Entry(TLS, unit=unit, pid=1235))
        assert daemon.wait_lines(3)["tls_handshakes"] == 2
        _, body = daemon.get("/metrics")
        assert metric(body, "tlslogd_tls_handshakes_total", direction="inbound") == 2
        assert metric(body, "tlslogd_tls_handshakes_total", direction="outbound") == 0
        status, health = daemon.get("/healthz")
        assert status == 200, health
    finally:
        daemon.kill()
