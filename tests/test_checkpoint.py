"""The daemon's checkpoint under a flood of new peer names: written a batch of rows at a time,
with the HTTP side served in between, while the log waits -- and rolled back when cut short."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from tlslogd.config import Settings
from tlslogd.daemon import Daemon

PEERS = 3000  # six batches of rows


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


def with_daemon(tmp_path: Path, scenario: Callable[[Daemon], Awaitable[None]]) -> None:
    log = tmp_path / "mail.log"
    log.write_text(sessions(0, PEERS))
    settings = Settings(
        log=str(log), state_dir=tmp_path / "state", from_start=True, local_networks=[]
    )
    daemon = Daemon(settings)

    async def run() -> None:
        daemon.source.start()
        reading = asyncio.create_task(daemon._consume())
        try:
            await until(lambda: daemon.stats.totals["lines"] == 2 * PEERS)
            await scenario(daemon)
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)

    try:
        asyncio.run(run())
    finally:
        daemon.source.close()
        daemon.store.close()


async def until(condition: Callable[[], bool], timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def test_a_large_checkpoint_takes_turns_with_requests_and_holds_one_moment(
    tmp_path: Path,
) -> None:
    log = tmp_path / "mail.log"
    seen: list[int] = []  # lines read, at each turn another task got while the checkpoint ran

    async def scenario(daemon: Daemon) -> None:
        read = log.stat().st_size
        with log.open("a") as f:
            f.write(sessions(PEERS, 10))  # arrives while the checkpoint is being written
        writing = asyncio.create_task(daemon.checkpoint_in_turns())
        while not writing.done():
            seen.append(daemon.stats.totals["lines"])
            await asyncio.sleep(0)
        await writing
        saved = daemon.store.load()
        assert saved is not None
        assert saved.position["offset"] == read
        assert len(saved.peers) == PEERS
        # and the log is read on afterwards
        await until(lambda: daemon.stats.totals["lines"] == 2 * (PEERS + 10))

    with_daemon(tmp_path, scenario)
    assert len(seen) >= PEERS // 500  # a turn after each batch of rows
    assert set(seen) == {2 * PEERS}  # nothing was read meanwhile


def test_a_checkpoint_cut_short_by_shutdown_leaves_the_previous_one(tmp_path: Path) -> None:
    async def scenario(daemon: Daemon) -> None:
        writing = asyncio.create_task(daemon.checkpoint_in_turns())
        for _ in range(3):
            await asyncio.sleep(0)
        writing.cancel()
        await asyncio.gather(writing, return_exceptions=True)
        assert writing.cancelled()
        assert daemon.store.load() is None  # rolled back: no half-written checkpoint
        daemon.checkpoint()  # what the daemon does when it stops
        saved = daemon.store.load()
        assert saved is not None
        assert len(saved.peers) == PEERS

    with_daemon(tmp_path, scenario)
