"""``tlslogd demo``: replay the real Postfix log shipped inside the package at a live pace, in a
loop, with its timestamps moved to the present, so a newcomer sees every endpoint working
without a mail server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any

from tlslogd.parse import Timestamps
from tlslogd.sources import Chunk, SourceHealth

SAMPLE = "sample-maillog.log"


def sample_lines() -> list[str]:
    """The embedded sample: a real log of Postfix 3.7 sending and receiving over TLS and in
    plaintext (scenarios of every kind tlslogd reads)."""
    text = resources.files("tlslogd").joinpath("data", SAMPLE).read_text(encoding="utf-8")
    return text.splitlines()


class DemoSource:
    """Replays the sample at ``speed`` times its original pace, forever."""

    def __init__(
        self,
        *,
        speed: float = 1.0,
        pause: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lines = sample_lines()
        stamps = Timestamps()
        self._offsets = [stamps.bsd(line[:15]) or 0.0 for line in self._lines]
        first = self._offsets[0]
        self._offsets = [t - first for t in self._offsets]
        self._speed = speed
        self._pause = pause
        self._clock = clock
        self._bytes = 0
        self._loops = 0
        self._closed = False

    def start(self) -> None:
        return None

    async def chunks(self) -> AsyncIterator[Chunk]:
        while not self._closed:
            start = self._clock()
            batch: list[str] = []
            for line, offset in zip(self._lines, self._offsets, strict=True):
                due = start + offset / self._speed
                wait = due - self._clock()
                if wait > 0:
                    if batch:
                        yield self._chunk(batch)
                        batch = []
                    await asyncio.sleep(wait)
                if self._closed:
                    return
                stamp = time.strftime("%b %d %H:%M:%S", time.localtime(self._clock()))
                batch.append(stamp + line[15:] + "\n")
            if batch:
                yield self._chunk(batch)
            self._loops += 1
            await asyncio.sleep(self._pause)

    def _chunk(self, lines: list[str]) -> Chunk:
        data = "".join(lines).encode()
        self._bytes += len(data)
        return Chunk(data, {"demo_loops": self._loops}, len(lines))

    def position(self) -> dict[str, Any] | None:
        return None

    def health(self) -> SourceHealth:
        return SourceHealth(True, "", {"source": "demo", "loops": self._loops})

    def counters(self) -> dict[str, dict[str, int]]:
        return {"bytes_read": {"": self._bytes}, "rotations": {}, "read_errors": {}}

    def lag_bytes(self) -> int | None:
        return 0

    def tail_started(self) -> float | None:
        return None

    def reopen(self) -> None:
        return None

    def close(self) -> None:
        self._closed = True
