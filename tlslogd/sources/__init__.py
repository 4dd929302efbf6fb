"""Log sources: where lines come from.

Every source hands the pipeline *chunks*: a run of complete lines (each ending in ``\\n``) plus the
position just after the last of them, which the daemon checkpoints so that a restart resumes
exactly there. Sources never parse; they only read, follow and report their health.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class Chunk:
    """Complete log lines and the source position just after them."""

    data: bytes
    position: dict[str, Any]
    lines: int = 0


@dataclass(slots=True)
class SourceHealth:
    ok: bool
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


class Source(Protocol):
    """What the daemon needs from a source."""

    def start(self) -> None:
        """Open the log and fix the starting point, before the daemon reports that it is ready."""
        ...

    def chunks(self) -> AsyncIterator[Chunk]:
        """Yield chunks forever (until :meth:`close`), waiting for new data in between."""
        ...

    def position(self) -> dict[str, Any] | None:
        """Where reading resumes after a restart (None when there is nothing to save)."""
        ...

    def health(self) -> SourceHealth: ...

    def counters(self) -> dict[str, dict[str, int]]:
        """Self-metrics: ``{"bytes_read": {"": n}, "rotations": {"rename": n, ...},
        "read_errors": {"missing": n, ...}}``."""
        ...

    def lag_bytes(self) -> int | None:
        """Bytes written to the log but not read yet (None when unknown)."""
        ...

    def tail_started(self) -> float | None:
        """When (``time.monotonic()``) reading was placed at the end of the log, so that all
        that follows is new; None when it resumed from a position or began at the start."""
        ...

    def reopen(self) -> None:
        """SIGHUP: drop open handles and find the log again from its path."""
        ...

    def close(self) -> None: ...
