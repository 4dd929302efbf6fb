"""The daemon's checkpoint under a flood of new peer names, in the middle of a backlog: written a
batch of rows at a time with other tasks (the HTTP side) served in between, while reading waits,
so that the saved position and the saved counts are of one moment -- also when the daemon is
stopped halfway through it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from tlslogd.config import Settings
from tlslogd.daemon import Daemon

SESSIONS = 20_000  # 40,000 lines, a backlog that takes a while; as many peers, 40 batches of rows


def sessions(first: int, count: int) -> str:
    """Plaintext sessions of ``count`` distinct clients (the shape of smtpd's real lines)."""
    out = []
    for i in range(first, first + count):
        peer = f"client{i}.example.net[10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}]"
        pid = 20000 + i % 5000
        out.append(f"Nov 25 21:52:41 mx postfix/smtpd[{pid}]: connect from {peer}\n")
        out.append(
            f"Nov 25 21:52:41 mx postfix/smtpd[{pid}]: disconnect from {peer}"
            " ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5\n"
        )
    return "".join(out)


def settings(tmp_path: Path) -> Settings:
    return Settings(
        log=str(tmp_path / "mail.log"),
        state_dir=tmp_path / "state",
        from_start=True,
        local_networks=[],
    )


def mid_backlog(
    tmp_path: Path, scenario: Callable[[Daemon, asyncio.Task[None]], Awaitable[None]]
) -> Daemon:
    """Run ``scenario`` once the daemon has read a quarter of a backlog it goes on reading."""
    (tmp_path / "mail.log").write_text(sessions(0, SESSIONS))
    daemon = Daemon(settings(tmp_path))

    async def run() -> None:
        daemon.source.start()
        reading = asyncio.create_task(daemon._consume())
        try:
            async with asyncio.timeout(30):
                while daemon.stats.totals["lines"] < SESSIONS // 2:
                    await asyncio.sleep(0)
            await scenario(daemon, reading)
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)

    try:
        asyncio.run(run())
    finally:
        daemon.source.close()
        daemon.store.close()
    return daemon


def lines_before(path: Path, offset: int) -> int:
    return path.read_bytes()[:offset].count(b"\n")


def test_a_large_checkpoint_takes_turns_with_other_tasks_and_holds_one_moment(
    tmp_path: Path,
) -> None:
    seen: list[int] = []  # lines counted, at each turn another task got during the checkpoint

    async def scenario(daemon: Daemon, reading: asyncio.Task[None]) -> None:
        writing = asyncio.create_task(daemon.checkpoint_in_turns())
        await asyncio.sleep(0)
        while not writing.done():
            seen.append(daemon.stats.totals["lines"])
            await asyncio.sleep(0)
        await writing
        saved = daemon.store.load()
        assert saved is not None
        # the saved position is exactly where the saved counts stop
        assert lines_before(tmp_path / "mail.log", saved.position["offset"]) == seen[0]
        assert saved.stats["totals"]["lines"] == seen[0]
        assert len(saved.peers) == seen[0] // 2

    mid_backlog(tmp_path, scenario)
    assert len(seen) > 10  # a turn after each batch of rows
    assert set(seen) == {seen[0]}  # nothing was read meanwhile


def test_stopping_during_a_checkpoint_loses_no_line(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"

    async def scenario(daemon: Daemon, reading: asyncio.Task[None]) -> None:
        writing = asyncio.create_task(daemon.checkpoint_in_turns())
        for _ in range(5):  # a few batches written; the reader waits with the next chunk
            await asyncio.sleep(0)
        await daemon._wind_up(reading, writing)  # what SIGTERM does
        assert writing.cancelled()  # rolled back, then the final checkpoint was written
        saved = daemon.store.load()
        assert saved is not None
        counted = daemon.stats.totals["lines"]
        assert lines_before(log, saved.position["offset"]) == counted
        assert saved.stats["totals"]["lines"] == counted

    mid_backlog(tmp_path, scenario)
    resumed = Daemon(settings(tmp_path))

    async def rest() -> None:
        resumed.source.start()
        reading = asyncio.create_task(resumed._consume())
        async with asyncio.timeout(30):
            while resumed.stats.totals["lines"] < 2 * SESSIONS:
                await asyncio.sleep(0.01)
        await resumed._wind_up(reading)

    try:
        asyncio.run(rest())
    finally:
        resumed.source.close()
        resumed.store.close()
    assert resumed.stats.totals["lines"] == 2 * SESSIONS
