"""Follow the systemd journal (``--log journald``) through ``journalctl``.

The source runs ``journalctl --follow --output=json`` and turns every record into one syslog-style
line that the parser reads like a line of the maillog::

    2025-01-05T09:03:07.118402+01:00 mx1 postfix/smtpd[1234]: connect from ...

Why ``journalctl`` and not the systemd Python bindings: the bindings are a compiled dependency
that pip cannot install into a virtual environment without systemd's headers and a compiler;
``journalctl`` is on every machine with a journal, follows the journal across file rotation and
vacuuming, applies the journal's own access rules (and says so when they stop it), and its JSON
output is a documented, stable interface. journalctl is started with :class:`subprocess.Popen`
and its pipes are read by the event loop, rather than through ``asyncio.create_subprocess_exec``,
so that :meth:`JournalSource.close` can stop and reap it at once, without an event loop, and no
child-watcher thread is started.

The command is::

    journalctl --follow --merge --output=json --output-fields=... --no-pager --all
        --unit=U ... --identifier=I ... JOURNAL_ARGS START

Units and identifiers must both match when both are given. journalctl expands a unit glob
once, against the units already in the journal, so it would miss a unit whose first record comes
later (a Postfix instance started after tlslogd): when a unit is a glob, journalctl gets no
``--unit`` and the source keeps the records whose ``_SYSTEMD_UNIT`` matches one of the units.
JOURNAL_ARGS select other journal files (``--directory=DIR``, or ``--file=FILE`` with an
absolute path: a bare file name makes ``journalctl --follow`` fail). ``--merge`` is there
because since systemd 250 ``--follow`` otherwise shows the last boot only: a daemon started
after a reboot would miss the records written after its saved cursor before the reboot. A
consequence: the journals of other machines kept in the same directory (systemd-journal-remote's,
containers' linked journals) are read too.

START is where reading begins, so that a restart neither loses nor repeats a record:

* with a saved cursor, ``--cursor=CURSOR --lines=all``: journalctl shows the record at the
  cursor again, which is dropped. ``--after-cursor`` is not used because journalctl skips one
  record after seeking there without checking that it is the cursor's own: when that record no
  longer matches (the units changed) or is gone (vacuumed), the first new record would be lost.
  ``--lines=all`` because ``--follow`` otherwise shows only ten records of the backlog before
  waiting for new ones;
* without a position and with ``from_start``, ``--lines=all``;
* without a position otherwise, :meth:`JournalSource.start` runs ``journalctl --lines=1``
  (without ``--follow``) to find the cursor of the last matching record, and following starts
  there: only new records are read, none is skipped between start-up and the first read, and
  the position is known, and checkpointed, before the first new record arrives. When no record
  matches yet, following starts at the beginning of the journal; when that journalctl fails,
  at its end (``--lines=0``).

A position is ``{"cursor": CURSOR}``, the cursor of the last record handed out, or
``{"cursor": None}`` for "the beginning of the journal, nothing read yet".

journalctl's standard error is read as it comes (it can never fill its pipe) and logged at a
limited rate; permission problems it reports make the source unhealthy with a reason that names
the user to add to the ``systemd-journal`` group. When journalctl exits it is started again
after ``restart_delay`` seconds from the last cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fnmatch
import json
import logging
import os
import pwd
import re
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tlslogd.sources import Chunk, SourceHealth

DEFAULT_UNITS = ("postfix.service", "postfix@*.service")

OUTPUT_FIELDS = (
    "MESSAGE",
    "SYSLOG_IDENTIFIER",
    "SYSLOG_PID",
    "_PID",
    "_COMM",
    "_HOSTNAME",
    "_SYSTEMD_UNIT",
)
"""The fields read; journalctl adds ``__CURSOR`` and ``__REALTIME_TIMESTAMP``."""

BATCH_WAIT = 0.05
"""Seconds a chunk waits for more records once it has one."""

MAX_RECORD_BYTES = 1 << 25
"""A JSON record longer than this is dropped (and counted as a field error)."""

STOP_TIMEOUT = 2.0
"""Seconds journalctl gets to exit after SIGTERM before it is killed."""

_PROBE_TIMEOUT = 60.0
_SETTLE = 1.0  # a restarted journalctl that has run this long without error counts as running
_OUTPUT_HIGH_WATER = 1 << 20
_STDERR_LINE_MAX = 4096
_STDERR_BURST = 10
_STDERR_WINDOW = 60.0
_CURSOR_RE = re.compile(r"[\x21-\x7e]{1,4096}")
_PERMISSION_HINTS = (
    "insufficient permissions",
    "permission denied",
    "not seeing messages from",
)
_CURSOR_REJECTED = "failed to seek to cursor"


class FieldError(ValueError):
    """A journal record lacks a field a line needs, or has it in an unusable form."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name} {problem}")
        self.name = name


def _text(value: Any) -> str | None:
    """A field value as text: JSON strings as they are, byte arrays (journalctl's form for
    values that are not valid UTF-8) decoded with replacement, the first of several values."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        if all(type(b) is int and 0 <= b <= 255 for b in value):
            return bytes(value).decode("utf-8", "replace")
        return _text(value[0])
    return None


def _pid(record: Mapping[str, Any]) -> str | None:
    for name in ("SYSLOG_PID", "_PID"):
        value = _text(record.get(name))
        if value is not None and value.isascii() and value.isdigit():
            return value
    return None


def local_time(realtime: Any) -> str:
    """``__REALTIME_TIMESTAMP`` (microseconds since the epoch) as ISO 8601 local time with
    microseconds and the UTC offset."""
    text = _text(realtime)
    if text is None or not text.isascii() or not text.isdigit():
        raise FieldError("__REALTIME_TIMESTAMP", "is missing or not a number")
    seconds, micros = divmod(int(text), 1_000_000)
    try:
        stamp = dt.datetime.fromtimestamp(seconds, dt.UTC).astimezone()
    except (OverflowError, OSError, ValueError) as exc:
        raise FieldError("__REALTIME_TIMESTAMP", "is out of range") from exc
    return stamp.replace(microsecond=micros).isoformat(timespec="microseconds")


def record_line(record: Mapping[str, Any]) -> bytes:
    """The syslog-style line of one ``journalctl --output=json`` record, with its newline.

    ``TIME HOST IDENTIFIER[PID]: MESSAGE``: the identifier falls back to ``_COMM``, the host to
    ``-``, a record without a pid gives ``IDENTIFIER: MESSAGE``, and newlines inside the message
    become spaces so that one record stays one line. A message that journalctl left out
    (``null``, as it does for large fields without ``--all``) raises :class:`FieldError`.
    """
    message = _text(record.get("MESSAGE"))
    if message is None:
        raise FieldError("MESSAGE", "is missing or was left out by journalctl")
    stamp = local_time(record.get("__REALTIME_TIMESTAMP"))
    host = _word(record.get("_HOSTNAME")) or "-"
    tag = _word(record.get("SYSLOG_IDENTIFIER")) or _word(record.get("_COMM")) or "-"
    pid = _pid(record)
    head = f"{tag}[{pid}]" if pid is not None else tag
    body = message.rstrip("\n").replace("\n", " ")
    return f"{stamp} {host} {head}: {body}\n".encode("utf-8", "replace")


def _word(value: Any) -> str:
    """A header field as one word (whitespace inside it would shift the fields after it)."""
    text = _text(value)
    return "_".join(text.split()) if text else ""


def _is_glob(unit: str) -> bool:
    return any(c in unit for c in "*?[")


def _user() -> str:
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def permission_advice(detail: str) -> str:
    """What to do when journalctl reports that it cannot read the journal."""
    user = _user()
    return (
        f"journalctl cannot read the journal as user {user} ({detail}); add {user} to "
        f"the systemd-journal group (usermod -aG systemd-journal {user}; the adm group works "
        f"too) and restart tlslogd"
    )


# ----------------------------------------------------------------------------------- the pipes


class _Output(asyncio.Protocol):
    """journalctl's standard output, buffered until the reader takes it."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.eof = False
        self.ready = asyncio.Event()
        self.transport: asyncio.ReadTransport | None = None
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.ReadTransport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.ready.set()
        if len(self.buffer) > _OUTPUT_HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
            self._paused = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.ready.set()

    async def wait(self, timeout: float | None) -> None:
        """Until there is data or end of file, or ``timeout`` seconds have passed."""
        if self.buffer or self.eof:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ready.wait(), timeout)

    def take(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        self.ready.clear()
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data


class _ErrorLines(asyncio.Protocol):
    """journalctl's standard error, handed on line by line as it arrives."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        self.on_line = on_line
        self.partial = bytearray()
        self.closed = asyncio.Event()
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.partial += data
        *lines, rest = self.partial.split(b"\n")
        self.partial = bytearray(rest[:_STDERR_LINE_MAX])
        for line in lines:
            self._emit(line)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.partial:
            self._emit(self.partial)
            self.partial.clear()
        self.closed.set()

    def _emit(self, line: bytes | bytearray) -> None:
        text = bytes(line[:_STDERR_LINE_MAX]).decode("utf-8", "replace").strip()
        if text:
            self.on_line(text)


@dataclass(slots=True)
class _Said:
    """What one journalctl process said on standard error."""

    permission: str | None = None
    cursor_rejected: bool = False
    last_error: str = ""


@dataclass(slots=True, eq=False)
class _Run:
    """One journalctl process."""

    command: list[str]
    proc: subprocess.Popen[bytes]
    out: _Output
    err: _ErrorLines
    started: float
    said: _Said = field(default_factory=_Said)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT seconds; the process is reaped."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.close_pipes()

    def close_pipes(self) -> None:
        for transport in (self.out.transport, self.err.transport):
            if transport is not None:
                with contextlib.suppress(RuntimeError):  # the event loop is already closed
                    transport.close()

    async def finish(self) -> int:
        """After the end of its output: wait (a bounded time) for the exit and the last words
        on standard error, then make sure it is gone."""
        deadline = time.monotonic() + STOP_TIMEOUT
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.err.closed.wait(), max(0.1, deadline - time.monotonic()))
        self.stop()
        return self.proc.returncode


@dataclass(slots=True)
class _Batch:
    lines: list[bytes] = field(default_factory=list)
    size: int = 0
    cursor: str | None = None
    deadline: float = 0.0


# ---------------------------------------------------------------------------------- the source


class JournalSource:
    """Records of the given units (and identifiers) from the journal, as syslog-style lines.

    ``position`` is a position taken from an earlier chunk; when given it decides where reading
    resumes and ``from_start`` is not used. ``journal_args`` are added to the journalctl command
    line (``--directory=DIR``, ``--file=FILE``...). A chunk holds at most ``max_chunk_bytes``
    unless a single line is longer than that.
    """

    def __init__(
        self,
        *,
        position: dict[str, Any] | None,
        from_start: bool,
        units: Sequence[str] = DEFAULT_UNITS,
        identifiers: Sequence[str] = (),
        journalctl: str = "journalctl",
        journal_args: Sequence[str] = (),
        max_chunk_bytes: int = 1 << 20,
        restart_delay: float = 5.0,
        logger: logging.Logger | None = None,
    ) -> None:
        if max_chunk_bytes < 1 or restart_delay < 0:
            raise ValueError("max_chunk_bytes must be >= 1 and restart_delay >= 0")
        self._from_start = from_start
        self._unit_patterns = tuple(units) if any(_is_glob(u) for u in units) else ()
        self._filters = [] if self._unit_patterns else [f"--unit={u}" for u in units]
        self._filters += [f"--identifier={i}" for i in identifiers]
        self._journalctl = journalctl
        self._journal_args = list(journal_args)
        self._max_chunk = max_chunk_bytes
        self._restart_delay = restart_delay
        self._log = logger or logging.getLogger(__name__)

        self._cursor: str | None = None
        self._anchored = from_start
        if position is not None:
            self._take_position(position)

        self._probed = False
        self._started = False
        self._closed = False
        self._restart_now = False
        self._wake: asyncio.Event | None = None
        self._run: _Run | None = None
        self._problem: str | None = None
        self._field_errors_logged: set[str] = set()
        self._stderr_window = float("-inf")
        self._stderr_logged = 0
        self._stderr_dropped = 0

        self._bytes_read = 0
        self._errors = {"journal": 0, "journal_field": 0, "permission": 0}
        self._tail_started: float | None = None

    # ----------------------------------------------------------------------------- public API

    def command(self) -> list[str]:
        """The journalctl command that follows the journal from the current position (before
        the start, without a position and ``from_start``: from the end of the journal)."""
        return [
            self._journalctl,
            "--follow",
            "--merge",
            *self._common_args(),
            *self._start_args(),
        ]

    def start(self) -> None:
        """Fix where reading starts, now rather than when reading begins (the daemon calls this
        before it reports that it is ready): without a position, and unless ``from_start``,
        after the last matching record already in the journal, so that every record logged
        from now on is read. If journalctl cannot tell, following starts with the records
        that come after journalctl has started."""
        if self._anchored or self._probed or self._closed:
            return
        self._probed = True
        command = [self._journalctl, "--merge", *self._common_args(), "--lines=1"]
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=_PROBE_TIMEOUT,
                check=False,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            self._errors["journal"] += 1
            self._report(f"journalctl --lines=1 took over {_PROBE_TIMEOUT:g} s")
            return
        except OSError as exc:
            self._cannot_run(exc)
            return
        said = _Said()
        for line in result.stderr.decode("utf-8", "replace").splitlines():
            if line.strip():
                self._stderr(said, line.strip())
        if result.returncode != 0:
            self._failed(said, result.returncode, "following the records that come from now on")
            return
        cursor = None
        for raw in result.stdout.splitlines()[-1:]:
            with contextlib.suppress(ValueError, AttributeError):
                cursor = json.loads(raw).get("__CURSOR")
        self._cursor = cursor if isinstance(cursor, str) else None
        self._anchored = True
        self._tail_started = time.monotonic()
        if self._cursor is None:
            self._log.info("no matching journal records yet; reading from the first one")

    async def chunks(self) -> AsyncIterator[Chunk]:
        """Yield chunks until :meth:`close`, restarting journalctl whenever it exits."""
        self.start()
        self._started = True
        self._wake = asyncio.Event()
        try:
            while not self._closed:
                self._restart_now = False
                run = await self._launch()
                if run is not None:
                    async for chunk in self._follow(run):
                        yield chunk
                    await self._ended(run)
                await self._pause(self._restart_delay)
        finally:
            self._stop_run()

    def position(self) -> dict[str, Any] | None:
        """``{"cursor": ...}`` of the last record handed out; None while the start is unknown."""
        return {"cursor": self._cursor} if self._anchored else None

    def health(self) -> SourceHealth:
        run = self._run
        detail: dict[str, Any] = {
            "command": run.command if run is not None else self.command(),
            "pid": run.pid if run is not None else None,
            "cursor": self._cursor,
            "failures": self._errors["journal"],
        }
        if self._closed:
            return SourceHealth(ok=False, reason="closed", detail=detail)
        if run is not None and run.said.permission is not None:
            return SourceHealth(ok=False, reason=run.said.permission, detail=detail)
        if self._problem is not None:
            return SourceHealth(ok=False, reason=self._problem, detail=detail)
        if not self._started or run is None:
            return SourceHealth(ok=False, reason="journalctl not started yet", detail=detail)
        return SourceHealth(ok=True, detail=detail)

    def counters(self) -> dict[str, dict[str, int]]:
        """``bytes_read`` counts the bytes of the lines handed out."""
        return {
            "bytes_read": {"": self._bytes_read},
            "rotations": {},
            "read_errors": dict(self._errors),
        }

    def lag_bytes(self) -> int | None:
        return None

    def tail_started(self) -> float | None:
        return self._tail_started

    def reopen(self) -> None:
        """Restart journalctl from the last cursor."""
        if self._closed or not self._started:
            return
        self._log.info("restarting journalctl from the last cursor")
        self._restart_now = True
        if self._wake is not None:
            self._wake.set()
        if self._run is not None:
            self._run.stop()

    def close(self) -> None:
        """Stop journalctl and end :meth:`chunks`."""
        if self._closed:
            return
        self._closed = True
        if self._wake is not None:
            self._wake.set()
        self._stop_run()

    # ------------------------------------------------------------------------------- starting

    def _take_position(self, raw: dict[str, Any]) -> None:
        cursor = raw.get("cursor", "") if isinstance(raw, dict) else ""
        if cursor is None or (isinstance(cursor, str) and _CURSOR_RE.fullmatch(cursor)):
            self._cursor = cursor
            self._anchored = True
            return
        self._log.warning("ignoring unusable saved journal position: %r", raw)

    def _common_args(self) -> list[str]:
        return [
            "--output=json",
            f"--output-fields={','.join(OUTPUT_FIELDS)}",
            "--no-pager",
            "--all",
            *self._filters,
            *self._journal_args,
        ]

    def _start_args(self) -> list[str]:
        if self._cursor is not None:
            return [f"--cursor={self._cursor}", "--lines=all"]
        return ["--lines=all"] if self._anchored else ["--lines=0"]

    async def _launch(self) -> _Run | None:
        """Start following; None (the problem recorded) when journalctl cannot be started."""
        self.start()
        command = self.command()
        try:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            self._cannot_run(exc)
            return None
        loop = asyncio.get_running_loop()
        out = _Output()
        err = _ErrorLines(lambda line: self._stderr(run.said, line))
        run = _Run(command, proc, out, err, loop.time())
        self._run = run
        assert proc.stdout is not None and proc.stderr is not None
        try:
            await loop.connect_read_pipe(lambda: out, proc.stdout)
            await loop.connect_read_pipe(lambda: err, proc.stderr)
        except BaseException:
            self._stop_run()
            raise
        if self._closed:
            self._stop_run()
            return None
        self._log.debug("started %s (pid %d)", " ".join(command), run.pid)
        return run

    def _cannot_run(self, exc: OSError) -> None:
        self._errors["journal"] += 1
        if isinstance(exc, FileNotFoundError):
            message = (
                f"{self._journalctl} not found: reading the journal needs journalctl "
                f"(Debian package systemd)"
            )
        else:
            message = f"cannot run {self._journalctl}: {exc.strerror or exc}"
        self._report(message)

    # -------------------------------------------------------------------------------- reading

    async def _follow(self, run: _Run) -> AsyncIterator[Chunk]:
        """Chunks of one journalctl run, until its output ends."""
        loop = asyncio.get_running_loop()
        skip = self._cursor
        partial = bytearray()
        discarding = False
        batch = _Batch()
        while True:
            timeout = None
            if batch.lines:
                timeout = max(0.0, batch.deadline - loop.time())
            elif self._problem is not None:
                timeout = max(0.0, run.started + _SETTLE - loop.time())
            await run.out.wait(timeout)
            data = run.out.take()
            if data or loop.time() >= run.started + _SETTLE:
                self._settled()
            start = 0
            while (newline := data.find(b"\n", start)) >= 0:
                raw = data[start:newline]
                start = newline + 1
                if discarding or len(partial) + len(raw) > MAX_RECORD_BYTES:
                    partial.clear()
                    discarding = False
                    self._field_error(f"it is longer than {MAX_RECORD_BYTES} bytes", None)
                    continue
                if partial:
                    partial += raw
                    raw = bytes(partial)
                    partial.clear()
                cursor, line = self._convert(raw)
                if cursor is None:
                    continue
                batch.cursor = cursor
                if skip is not None:
                    first, skip = skip, None
                    if cursor == first:
                        continue
                if line is not None:
                    if not batch.lines:
                        batch.deadline = loop.time() + BATCH_WAIT
                    batch.lines.append(line)
                    batch.size += len(line)
                    if batch.size >= self._max_chunk:
                        yield self._emit(batch)
                        batch = _Batch()
            if not discarding:
                partial += data[start:]
                if len(partial) > MAX_RECORD_BYTES:
                    partial.clear()
                    discarding = True
            if batch.lines and (loop.time() >= batch.deadline or run.out.eof):
                yield self._emit(batch)
                batch = _Batch()
            elif not batch.lines and batch.cursor is not None:
                self._cursor = batch.cursor
            if run.out.eof and not run.out.buffer:
                return

    def _emit(self, batch: _Batch) -> Chunk:
        data = b"".join(batch.lines)
        self._cursor = batch.cursor
        self._bytes_read += len(data)
        return Chunk(data=data, position={"cursor": batch.cursor}, lines=len(batch.lines))

    def _convert(self, raw: bytes) -> tuple[str | None, bytes | None]:
        """The cursor of one JSON record (None if it has none) and its line (None if there is
        no usable line)."""
        try:
            record = json.loads(raw)
        except ValueError:
            self._field_error("it is not valid JSON", None)
            return None, None
        if not isinstance(record, dict):
            self._field_error("it is not a JSON object", None)
            return None, None
        cursor = record.get("__CURSOR")
        if not isinstance(cursor, str):
            self._field_error("it has no __CURSOR", None)
            return None, None
        if self._unit_patterns:
            unit = _text(record.get("_SYSTEMD_UNIT")) or ""
            if not any(fnmatch.fnmatchcase(unit, p) for p in self._unit_patterns):
                return cursor, None
        try:
            return cursor, record_line(record)
        except FieldError as exc:
            self._field_error(str(exc), cursor)
            return cursor, None

    def _field_error(self, problem: str, cursor: str | None) -> None:
        """Count a record that gives no line; log the first of each kind."""
        self._errors["journal_field"] += 1
        if problem in self._field_errors_logged:
            return
        self._field_errors_logged.add(problem)
        self._log.warning(
            "skipping a journal record%s: %s; further records with this problem are only counted",
            f" (cursor {cursor})" if cursor else "",
            problem,
        )

    # ------------------------------------------------------------------------------- problems

    def _stderr(self, said: _Said, line: str) -> None:
        lowered = line.lower()
        if any(hint in lowered for hint in _PERMISSION_HINTS):
            if said.permission is None:
                self._errors["permission"] += 1
                said.permission = permission_advice(line)
                self._log.error("%s", said.permission)
        elif _CURSOR_REJECTED in lowered:
            said.cursor_rejected = True
        said.last_error = line
        self._log_stderr(line)

    def _log_stderr(self, line: str) -> None:
        now = time.monotonic()
        if now - self._stderr_window >= _STDERR_WINDOW:
            if self._stderr_dropped:
                self._log.warning(
                    "journalctl: %d more lines on standard error were not logged",
                    self._stderr_dropped,
                )
            self._stderr_window = now
            self._stderr_logged = self._stderr_dropped = 0
        if self._stderr_logged < _STDERR_BURST:
            self._stderr_logged += 1
            self._log.warning("journalctl: %s", line)
        else:
            self._stderr_dropped += 1

    async def _ended(self, run: _Run) -> None:
        """journalctl's output ended: find out why, unless it was told to stop."""
        code = await run.finish()
        if self._run is run:
            self._run = None
        if self._closed or self._restart_now:
            return
        self._failed(run.said, code, f"restarting in {self._restart_delay:g} s")

    def _failed(self, said: _Said, code: int, then: str) -> None:
        self._errors["journal"] += 1
        if said.cursor_rejected:
            self._log.error(
                "journalctl rejected the saved cursor %s; starting %s",
                self._cursor,
                "from the beginning" if self._from_start else "after the last record",
            )
            self._cursor = None
            self._anchored = self._from_start
            self._probed = False
            self._report(f"journalctl rejected the cursor: {said.last_error}")
            return
        if said.permission is not None:
            self._report(said.permission)
            return
        words = f": {said.last_error}" if said.last_error else ""
        self._report(f"journalctl exited with status {code}{words}; {then}")

    def _report(self, problem: str) -> None:
        """Record a problem; logged unless it is the one already current."""
        if problem != self._problem:
            self._log.warning("%s", problem)
        self._problem = problem

    def _settled(self) -> None:
        if self._problem is not None:
            self._log.info("journalctl is running again (was: %s)", self._problem)
            self._problem = None

    async def _pause(self, seconds: float) -> None:
        """Wait before the next start, cut short by :meth:`reopen` and :meth:`close`."""
        wake = self._wake
        if wake is None or self._closed or self._restart_now:
            return
        wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), seconds)

    def _stop_run(self) -> None:
        run, self._run = self._run, None
        if run is not None:
            run.stop()
