"""The one-way pipeline every command shares: text -> parse -> correlate -> aggregate.

``tlslogd run`` feeds it the chunks its source reads, ``tlslogd report`` and ``tlslogd parse``
feed it files, so a file replayed and the same file tailed give identical numbers.
"""

from __future__ import annotations

from collections.abc import Callable

from tlslogd.events import Event, Unrecognised
from tlslogd.parse import Parser
from tlslogd.sessions import Correlator
from tlslogd.stats import Stats


class Pipeline:
    def __init__(
        self,
        parser: Parser,
        correlator: Correlator,
        stats: Stats,
        *,
        since: float | None = None,
        until: float | None = None,
        on_unrecognised: Callable[[Unrecognised], None] | None = None,
    ) -> None:
        self.parser = parser
        self.correlator = correlator
        self.stats = stats
        self.since = since
        self.until = until
        self.on_unrecognised = on_unrecognised

    def feed(self, data: bytes, sink: Callable[[Event], None] | None = None) -> int:
        """Process a chunk of complete lines (bytes as read; invalid UTF-8 is replaced)."""
        return self.feed_text(data.decode("utf-8", "replace"), sink)

    def feed_text(self, text: str, sink: Callable[[Event], None] | None = None) -> int:
        """Process a chunk of complete lines; returns how many lines it held. ``sink`` gets
        every event once the correlator has annotated it (``tlslogd parse``)."""
        lines = text.count("\n")
        if text and not text.endswith("\n"):
            lines += 1
        events = unrecognised = 0
        feed = self.correlator.feed
        emit = self._emit()
        first = last = None
        for ev in self.parser.scan(text, with_lines=sink is not None):
            if type(ev) is Unrecognised:
                unrecognised += 1
                if self.on_unrecognised is not None:
                    self.on_unrecognised(ev)
                if sink is not None:
                    sink(ev)
                continue
            events += 1
            if first is None:
                first = ev
            last = ev
            feed(ev, emit)
            if sink is not None:
                sink(ev)
        if first is not None and last is not None and self.since is None and self.until is None:
            # the period the log covers, also where no event counted (relay=none deliveries,
            # tlsproxy lines only): once a chunk, not once an outcome
            self.stats.saw(first.ts, last.ts)
        # rsyslog's "message repeated N times" makes N events of one line
        self.stats.add_lines(lines, min(events, lines - unrecognised), unrecognised)
        return lines

    def finish(self) -> None:
        """The input is complete (``tlslogd report``, ``advise``): count what the correlator
        still holds back waiting for more lines."""
        self.correlator.finish(self._emit())

    def _emit(self) -> Callable[[Event], None]:
        return self.stats.add if self.since is None and self.until is None else self._in_window

    def _in_window(self, outcome: Event) -> None:
        ts = outcome.ts
        if ts is not None and (
            (self.since is not None and ts < self.since)
            or (self.until is not None and ts >= self.until)
        ):
            return
        self.stats.saw(ts, ts)  # a window's period is that of the outcomes it counted
        self.stats.add(outcome)
