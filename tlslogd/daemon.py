"""Wiring and lifecycle of ``tlslogd run``: one asyncio loop owns all state.

The loop runs three things: the source feeding chunks through the pipeline, uvicorn serving the
HTTP side, and a timer that checkpoints the durable state and pings systemd's watchdog. The only
other thread is watchdog's file observer, which does nothing but wake the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

import uvicorn
from publicsuffixlist import PublicSuffixList

from tlslogd import __version__, summary
from tlslogd.advise import Thresholds, advise
from tlslogd.config import Settings
from tlslogd.events import Unrecognised
from tlslogd.metrics import registry
from tlslogd.parse import Parser
from tlslogd.peers import PeerTable
from tlslogd.pipeline import Pipeline
from tlslogd.sdnotify import SystemdNotifier
from tlslogd.sessions import Correlator, LocalNetworks
from tlslogd.sources import Source
from tlslogd.state import StateStore
from tlslogd.stats import Stats
from tlslogd.statuspage import render_status
from tlslogd.web import App
from tlslogd.webconfig import Endpoint, WebConfig, WebConfigError, load_web_config

log = logging.getLogger("tlslogd")

STATE_FILE = "state.db"
_BACKLOG_CHECKPOINT_SECONDS = 5.0  # between checkpoints while a backlog is read
_UNRECOGNISED_SAMPLES = 10  # log this many unrecognised lines, then one in every 1000
# control characters of a line quoted in tlslogd's own log, escaped: a binary file appended to
# the maillog must not write terminal escapes or NULs into the journal
_ESCAPE = {c: f"\\x{c:02x}" for c in (*range(32), *range(127, 160))}


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon's handlers write the final
    checkpoint before anything exits."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listen(host: str, port: int) -> socket.socket:
    """The HTTP socket, bound before uvicorn starts: an address in use or not on this machine
    is an error message here, not uvicorn's exit from inside the event loop."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class Daemon:
    """The running daemon. Also the view the metrics collector and the web app read."""

    def __init__(
        self,
        settings: Settings,
        *,
        source_factory: Callable[[str, dict[str, Any] | None], Source] | None = None,
        notifier: SystemdNotifier | None = None,
        audit: Callable[[], list[tuple[str, str]]] | None = None,
        web: WebConfig | None = None,
    ) -> None:
        self.settings = settings
        self.top_peers = settings.top_peers
        self.notifier = notifier or SystemdNotifier(None)
        self._audit = audit
        self._config_checks: list[tuple[str, str]] = []
        # the endpoint first: a web config whose files do not load stops start-up before the
        # state is opened (and locked)
        self.app = App(self)
        self.endpoint = Endpoint(self.app, web)
        self.store = StateStore(settings.state_dir / STATE_FILE, log)
        self.stats = Stats(peers=PeerTable(settings.max_peers), label_cap=settings.label_cap)
        self.correlator = Correlator(
            ttl=settings.session_ttl,
            max_entries=settings.max_sessions,
            is_local=LocalNetworks(settings.local_networks).is_local,
        )
        self.pipeline = Pipeline(
            Parser(), self.correlator, self.stats, on_unrecognised=self._unrecognised
        )
        if settings.log in ("journald", "demo"):
            self.source_kind = "journald" if settings.log == "journald" else "file:demo"
        else:  # the same file under another spelling (relative, ./) is the same source
            self.source_kind = f"file:{os.path.abspath(settings.log)}"
        position = self._restore()
        factory = source_factory or self._make_source
        self.source = factory(self.source_kind, position)
        self.registry = registry(self)
        self._started = time.time()
        self._last_read: float | None = None
        self._checkpoint_ts: float | None = None
        self._checkpoint_error: str | None = None
        self._dirty = False
        self._held: bytes | None = None  # a chunk read, waiting for a checkpoint to finish
        self._tail_seen: float | None = None
        self._unrecognised_seen = 0
        self._candidates: dict[str, int] = {}
        self._psl = PublicSuffixList()
        self._stop = asyncio.Event()
        # the log reader and the checkpoint take turns with the pipeline's state
        self._turn = asyncio.Lock()

    # -- state -----------------------------------------------------------------------------------

    def _restore(self) -> dict[str, Any] | None:
        saved = self.store.load()
        if saved is None:
            self.stats.since = self.store.created
            return None
        self.stats.restore(saved.stats)
        self.stats.peers.load(saved.peers)
        self.stats.destinations.load(saved.destinations)
        if saved.source != self.source_kind:
            log.warning(
                "the state in %s followed %s, now following %s: keeping totals and peers, "
                "starting a new position",
                self.store.path,
                saved.source,
                self.source_kind,
            )
            return None
        self.correlator.restore(saved.sessions)
        log.info("resuming from the checkpoint of %s", summary.iso(saved.saved_at))
        return saved.position

    def checkpoint(self) -> None:
        """Write position, sessions, totals and changed peers in one transaction, at once."""
        for _ in self._checkpoint_steps():
            pass

    async def checkpoint_in_turns(self) -> None:
        """The same transaction, a batch of rows at a time, serving HTTP requests in between:
        under a flood of new peer names thousands of rows change between checkpoints, and
        writing them takes up to a second. The log is not read meanwhile, so the checkpoint
        still holds one moment's state."""
        async with self._turn:
            steps = self._checkpoint_steps()
            try:
                for _ in steps:
                    await asyncio.sleep(0)
            finally:
                steps.close()  # cancelled at shutdown: roll back, for the final checkpoint

    def _checkpoint_steps(self) -> Generator[None, None, None]:
        position = self.source.position()
        if position is None:
            return
        peers = self.stats.peers
        dests = self.stats.destinations
        saved_at = time.time()
        try:
            yield from self.store.saving(
                saved_at=saved_at,
                source=self.source_kind,
                position=position,
                sessions=self.correlator.snapshot(),
                stats=self.stats.durable(),
                peers=((k, e.to_json()) for k in peers.dirty if (e := peers.get(k)) is not None),
                removed_peers=list(peers.removed),
                destinations=(
                    (k, d.to_json()) for k in dests.dirty if (d := dests.get(k)) is not None
                ),
                removed_destinations=list(dests.removed),
            )
        except Exception as exc:  # disk full, read-only file system...: keep running, say so
            if self._checkpoint_error is None:
                log.error("cannot write the checkpoint to %s: %s", self.store.path, exc)
            self._checkpoint_error = str(exc)
            return
        self._checkpoint_ts = saved_at
        if self._checkpoint_error is not None:
            log.info("checkpoints work again")
        self._checkpoint_error = None
        peers.saved()
        dests.saved()
        self._dirty = False

    def _make_source(self, kind: str, position: dict[str, Any] | None) -> Source:
        s = self.settings
        if kind == "journald":
            from tlslogd.sources.journal import JournalSource

            return JournalSource(
                position=position,
                from_start=s.from_start,
                units=s.journal_units,
                identifiers=s.journal_identifiers,
                journal_args=[f"--directory={s.journal_directory}"] if s.journal_directory else [],
                max_chunk_bytes=s.batch_bytes,
            )
        from tlslogd.sources.file import FileSource

        return FileSource(
            s.log,
            position=position,
            from_start=s.from_start,
            poll_interval=s.poll_interval,
            max_chunk_bytes=s.batch_bytes,
        )

    def _unrecognised(self, ev: Unrecognised) -> None:
        self._unrecognised_seen += 1
        n = self._unrecognised_seen
        if n <= _UNRECOGNISED_SAMPLES or n % 1000 == 0:
            text = (ev.line or "")[:300].translate(_ESCAPE)
            log.warning("unrecognised log line (%d so far): %s", n, text)

    # -- what the collector and the web app read ------------------------------------------------

    def source_counters(self) -> dict[str, dict[str, int]]:
        return self.source.counters()

    def source_up(self) -> bool:
        return self.source.health().ok

    def lag_bytes(self) -> int | None:
        return self.source.lag_bytes()

    def last_read(self) -> float | None:
        return self._last_read

    def checkpoint_time(self) -> float | None:
        return self._checkpoint_ts

    def config_checks(self) -> list[tuple[str, str]]:
        return self._config_checks

    def policy_candidates(self) -> dict[str, int]:
        return self._candidates

    def _refresh_candidates(self) -> None:
        end = self.stats.last_event_ts
        if end is None:
            return
        s = self.settings
        # over a full destination table its tens of thousands of short-lived containers set
        # off full collections of the daemon's heap, half of its time; they hold no cycles
        collecting = gc.isenabled()
        gc.disable()
        try:
            result = advise(
                self.stats.destinations,
                self.stats.peers,
                since=end - s.advise_window_days * 86400,
                until=end + 1,
                thresholds=Thresholds(s.advise_min_deliveries, s.advise_min_days),
                evidence=summary.handshake_evidence(self.stats.totals),
                psl=self._psl,
            )
        finally:
            if collecting:
                gc.enable()
        self._candidates = result.counts()

    def health(self) -> tuple[bool, dict[str, Any]]:
        h = self.source.health()
        ok = h.ok and self._checkpoint_error is None
        reason = h.reason or (
            f"cannot write checkpoints: {self._checkpoint_error}" if self._checkpoint_error else ""
        )
        return ok, {
            "status": "ok" if ok else "unhealthy",
            "reason": reason,
            "source": self.source_kind,
            "detail": h.detail,
            "lag_bytes": self.source.lag_bytes(),
            "last_read": summary.iso(self._last_read),
            "last_checkpoint": summary.iso(self._checkpoint_ts),
        }

    def summary(self) -> dict[str, Any]:
        ok, health = self.health()
        stats = self.stats
        return {
            "version": __version__,
            "since": summary.iso(stats.since),
            "totals": dict(stats.totals),
            "durable": summary.durable(stats),
            "log": {**health, "healthy": ok, "position": self.source.position()},
            "process": {
                "started": summary.iso(self._started),
                "lines": dict(stats.lines),
                "sessions_active": len(self.correlator),
                "peers_tracked": len(stats.peers),
            },
            "adoption": summary.adoption(stats),
            "handshakes": {label: summary.census(stats, label) for label in summary.CENSUS_LABELS},
            "failures": summary.failures(stats),
            "inbound_by_program": summary.by_program(stats),
            "peers": {
                "tracked": len(stats.peers),
                "by_category": {c: having for c, (_, _, having) in stats.peers.top(0).items()},
                "legacy_last_30d": summary.legacy_recent(stats),  # peers, inbound, outbound
                "protocol_failures": summary.protocol_failure_peers(stats),
            },
            "config_checks": [{"check": c, "status": s} for c, s in self._config_checks],
        }

    def peer_rows(
        self, category: str | None, since: float | None, limit: int, sort: str
    ) -> tuple[int, list[dict[str, Any]]]:
        rows = self.stats.peers.query(category=category, since=since, sort=sort, limit=10**9)
        return len(rows), [self.stats.peers.row(p) for p in rows[:limit]]

    def status_page(self) -> str:
        return render_status(self.summary(), summary.peers(self.stats, limit=10))

    # -- lifecycle -------------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        host, port = self.settings.host_port
        try:
            sock = _listen(host, port)
        except OSError as exc:
            self.source.close()
            self.store.close()
            log.error("cannot listen on %s: %s", self.settings.listen, exc.strerror or exc)
            return 1
        self.source.start()  # after the listen address is ours: a busy port is the only message
        server = _Server(self._uvicorn_config(host, port))
        serving = asyncio.create_task(server.serve(sockets=[sock]), name="http")
        while not server.started:
            if serving.done():
                self.store.close()
                log.error("cannot serve on %s: see the message above", self.settings.listen)
                return 1
            await asyncio.sleep(0.01)
        self._run_audit()
        log.info(
            "tlslogd %s following %s, serving %s://%s",
            __version__,
            self.source_kind,
            "https" if self.endpoint.context is not None else "http",
            self.settings.listen,
        )
        self.notifier.ready(f"following {self.settings.log}")
        reading = asyncio.create_task(self._consume(), name="source")
        ticking = asyncio.create_task(self._tick(), name="timer")
        stopping = asyncio.create_task(self._stop.wait())
        await asyncio.wait({reading, stopping, serving}, return_when=asyncio.FIRST_COMPLETED)
        self.notifier.stopping()
        await self._wind_up(reading, ticking)
        self.source.close()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        self.store.close()
        if reading.done() and not reading.cancelled() and reading.exception() is not None:
            log.error("reading the log failed: %s", reading.exception())
            return 1
        log.info("stopped; checkpoint written")
        return 0

    async def _wind_up(self, *tasks: asyncio.Task[None]) -> None:
        """Stop reading and the timer, then write the final checkpoint -- before the source is
        closed, which forgets its position. A checkpoint cut short rolls back; a chunk the
        source handed out while one was being written is counted first, as the source's
        position is already past it."""
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._feed_held()
        self.checkpoint()

    def _uvicorn_config(self, host: str, port: int) -> uvicorn.Config:
        return self.endpoint.uvicorn_config(
            host,
            port,
            lifespan="off",
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=1,
        )

    async def _consume(self) -> None:
        async for chunk in self.source.chunks():
            began = self.source.tail_started()
            if began is not None and began != self._tail_seen:
                # placed at the end of the log (no usable saved position): what came before
                # is not read, so the stream begins there, whatever a restored state said
                self._tail_seen = began
                self.correlator.stream_start = None
            if began is not None and self.correlator.stream_start is None:
                # read from the end of the log: everything from then on is new, however long
                # the log stayed quiet (or held other programs' lines only) before this chunk
                self.correlator.quiet_start = time.monotonic() - began
            self._held = chunk.data  # the source's position is past it from now on
            async with self._turn:  # not while a checkpoint is being written
                self._feed_held()
            await asyncio.sleep(0)

    def _feed_held(self) -> None:
        if self._held is None:
            return
        data, self._held = self._held, None
        self.pipeline.feed(data)
        self._last_read = time.time()
        self._dirty = True

    async def _tick(self) -> None:
        interval = self.settings.checkpoint_interval
        watchdog = self.notifier.watchdog_interval()
        step = min(interval, watchdog / 2) if watchdog else interval
        next_status = next_advice = next_checkpoint = 0.0
        while True:
            await asyncio.sleep(step)
            now = time.monotonic()
            # more than a batch behind: a backlog (a busy live log is always a little behind)
            backlog = (self.source.lag_bytes() or 0) > self.settings.batch_bytes
            # a checkpoint writes every peer changed since the last one, tens of milliseconds
            # while a backlog is read, during which scrapes wait: then only every few seconds
            # (a crash re-reads those seconds of backlog from the previous checkpoint)
            if self._dirty and (not backlog or now >= next_checkpoint):
                await self.checkpoint_in_turns()
                next_checkpoint = now + _BACKLOG_CHECKPOINT_SECONDS
            self.notifier.watchdog()
            # the policy candidates take tens of milliseconds, and a few hundred over a full
            # destination table (10,000), during which scrapes wait: every five minutes (they
            # move by days of evidence), and not while catching up on a backlog
            if now >= next_advice and not backlog:
                next_advice = now + 300
                self._refresh_candidates()
            if now >= next_status:
                next_status = now + 10
                totals = self.stats.totals
                self.notifier.status(
                    f"{totals['lines']} lines, {totals['tls_handshakes']} handshakes, "
                    f"{totals['plaintext_deliveries']} plaintext deliveries; "
                    f"{'source ok' if self.source_up() else self.source.health().reason}"
                )

    def _reload(self) -> None:
        log.info("SIGHUP: reopening %s, reloading the web config and the audit", self.source_kind)
        self.notifier.reloading()
        self.source.reopen()
        if self.settings.web_config is not None:
            try:
                self.endpoint.reload(load_web_config(self.settings.web_config))
            except (WebConfigError, OSError, ssl.SSLError) as exc:
                log.error("kept the current web config: %s", exc)
        self._run_audit()
        self.notifier.ready()

    def _run_audit(self) -> None:
        if self._audit is None:
            return
        try:
            self._config_checks = self._audit()
        except Exception as exc:
            log.error("the Postfix configuration audit failed: %s", exc)
