"""Follow a log file by its path, across rotations, truncations, restarts and crashes.

The source follows a *path*, not a file descriptor. File-system events (watchdog) only wake it
up: a rotation at any time, an append only when the reader is idle; while lines flow it reads
again every ``coalesce`` seconds, because syslog daemons write line by line and an event per
line would cost more than the lines. What actually happened is always decided by looking at the
file: when a read hits the end of the file
(and at least every ``poll_interval`` seconds) the path is stat-ed and compared with the open
descriptor:

* the path names another inode and the old one still has links: the log was renamed away
  (``rename``). The old descriptor is kept for ``rotate_grace`` seconds and drained first on every
  step, because syslog daemons keep writing to it until they are told to reopen their files; the
  new file is read from its start.
* the old inode has no links left: the log was deleted (``delete``). It is finished and closed,
  and the file that appears at the path is read from its start.
* the same inode became shorter than what was read, or its first line changed: it was truncated,
  typically by ``copytruncate`` (``truncate``), and is read again from its start. The first line
  is also compared after every read past it, so a file truncated and written beyond the old
  offset in between is not read from the middle of a line.

Positions identify a file by device, inode and a hash of its first line (``head``), so a restart
can tell whether the file at the path is still the one it was reading, find a file that was
rotated in the meantime in the same directory, and notice truncation while it was not running.
Only complete lines are handed out, and the offset in a position always sits just past a newline.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import hashlib
import logging
import os
import pwd
import stat
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from watchdog.events import (
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from tlslogd.sources import Chunk, SourceHealth

HEAD_BYTES = 4096
"""At most this many bytes of a file's first line identify it."""

_BACKSCAN_BYTES = 1 << 16
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
# Events that wake the reader: a rotation at any time, an append only while it is idle.
_ROTATION_EVENTS: list[type[FileSystemEvent]] = [FileCreatedEvent, FileMovedEvent, FileDeletedEvent]
_APPEND_EVENTS: list[type[FileSystemEvent]] = [FileModifiedEvent]


_COMPRESSED: Final = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".Z")


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _head_of(fd: int) -> tuple[str, int, bool]:
    """Hash of the first line (at most HEAD_BYTES), its length, and whether it is final."""
    raw = os.pread(fd, HEAD_BYTES, 0)
    newline = raw.find(b"\n")
    if newline >= 0:
        raw = raw[: newline + 1]
    return _digest(raw), len(raw), newline >= 0 or len(raw) == HEAD_BYTES


def _head_matches(fd: int, head: str, head_len: int | None) -> bool:
    if head_len is None:
        return _head_of(fd)[0] == head
    raw = os.pread(fd, head_len, 0) if head_len else b""
    return len(raw) == head_len and _digest(raw) == head


def _line_end(fd: int, size: int) -> int:
    """Offset just past the last newline before ``size`` (0 if there is none)."""
    end = size
    while end > 0:
        start = max(0, end - _BACKSCAN_BYTES)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


def _is_file(tail: _Tail | None, mark: _Mark) -> bool:
    return tail is not None and (tail.dev, tail.ino) == (mark.dev, mark.ino)


def _close_fd(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _ancestors(directory: str) -> list[str]:
    """``/a/b`` -> ``["/", "/a", "/a/b"]``."""
    chain = [directory]
    while (parent := os.path.dirname(chain[-1])) != chain[-1]:
        chain.append(parent)
    return chain[::-1]


def permission_message(path: str) -> str:
    """Explain which user lacks which permission to read ``path``, and the usual fix."""
    uid = os.geteuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    effective = os.access in os.supports_effective_ids
    lacking, target, need, flag = f"read permission on {path}", path, "r", stat.S_IRGRP
    for directory in _ancestors(os.path.dirname(path)):
        if not os.access(directory, os.X_OK, effective_ids=effective):
            lacking = f"search (execute) permission on directory {directory}"
            target, need, flag = directory, "x", stat.S_IXGRP
            break
    return f"user {user} (uid {uid}) lacks {lacking}; {_access_fix(user, target, need, flag)}"


def _access_fix(user: str, target: str, need: str, flag: int) -> str:
    """The usual fix: join the group that may read the file (Debian's adm for /var/log/mail.log);
    where no group may (root:root 0600, as some distributions write /var/log/maillog), an ACL."""
    try:
        st = os.stat(target)
        group = grp.getgrgid(st.st_gid).gr_name
    except (OSError, KeyError):
        group, st = "adm", None
    if st is None or (st.st_gid != 0 and st.st_mode & flag):
        return (
            f"the usual fix is to add {user} to the {group} group "
            f"(usermod -aG {group} {user}) and restart tlslogd"
        )
    return (
        f"no group but root may, so grant it with an ACL (setfacl -m u:{user}:{need} {target}; "
        "for a log file, also in the rotation's postrotate or create step); tlslogd retries "
        "by itself"
    )


@dataclass(slots=True, frozen=True)
class _Mark:
    """A saved position of one file."""

    path: str
    dev: int
    ino: int
    offset: int
    head: str
    head_len: int | None

    @classmethod
    def parse(cls, raw: Any) -> _Mark:
        head_len = raw.get("head_len")
        mark = cls(
            path=str(raw["path"]),
            dev=int(raw["dev"]),
            ino=int(raw["ino"]),
            offset=int(raw["offset"]),
            head=str(raw["head"]),
            head_len=None if head_len is None else int(head_len),
        )
        if mark.offset < 0 or (mark.head_len is not None and mark.head_len < 0):
            raise ValueError("negative offset")
        return mark

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "dev": self.dev,
            "ino": self.ino,
            "offset": self.offset,
            "head": self.head,
            "head_len": self.head_len,
        }


@dataclass(slots=True, eq=False)
class _Tail:
    """An open file being read.

    ``offset`` is just past the last line handed out; ``read_pos`` is where the next read starts.
    In between: the start of an unfinished line, kept in ``pending`` (cut at the line limit, with
    ``overlong`` set, once it grows past it).
    """

    fd: int
    path: str
    dev: int
    ino: int
    head: str
    head_len: int
    head_final: bool
    offset: int = 0
    read_pos: int = 0
    pending: bytearray = field(default_factory=bytearray)
    overlong: bool = False
    deadline: float = 0.0

    def seek(self, offset: int) -> None:
        self.offset = self.read_pos = offset
        self.pending.clear()
        self.overlong = False

    def refresh_head(self) -> None:
        self.head, self.head_len, self.head_final = _head_of(self.fd)

    def mark(self) -> _Mark:
        return _Mark(self.path, self.dev, self.ino, self.offset, self.head, self.head_len)

    def size(self) -> int | None:
        try:
            return os.fstat(self.fd).st_size
        except OSError:
            return None


@dataclass(slots=True, frozen=True)
class _Problem:
    kind: str
    message: str
    during: str


def _replaced_watch_race(record: logging.LogRecord) -> bool:
    """Drop watchdog's ERROR "queue_events() called when the thread is inactive": its emitter
    thread reads once more after :meth:`FileSource._watch_appends` replaced the watch it served.
    The event it drops belonged to the old watch (the new one and the poll see the file); the
    message would only alarm an admin reading the journal."""
    return "called when the thread is inactive" not in record.getMessage()


class _Wakeup(FileSystemEventHandler):
    """Runs in watchdog's observer thread: wakes the reader for events on the log's names."""

    def __init__(self, prefix: str, wake: Callable[[], object]) -> None:
        super().__init__()
        self._prefix = prefix
        self._wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        for name in (event.src_path, event.dest_path):
            if name and os.path.basename(os.fsdecode(name)).startswith(self._prefix):
                self._wake()
                return


class FileSource:
    """Lines of the log file at ``path``, followed across rotations.

    ``position`` is a position taken from an earlier chunk; when given it decides where reading
    resumes and ``from_start`` is not used. Without it, ``from_start`` reads the existing file from
    its start, otherwise reading starts at its end.

    A chunk holds at most ``max_chunk_bytes`` unless a single line is longer than that. A line
    longer than ``max_line_bytes`` is cut to that length (plus its newline).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        position: dict[str, Any] | None,
        from_start: bool,
        poll_interval: float = 2.0,
        max_chunk_bytes: int = 1 << 20,
        max_line_bytes: int = 4 << 20,
        rotate_grace: float = 5.0,
        coalesce: float = 0.1,
        watch: bool = True,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        if poll_interval <= 0 or max_chunk_bytes < 1 or max_line_bytes < 1 or rotate_grace < 0:
            raise ValueError(
                "poll_interval must be > 0, max_chunk_bytes and max_line_bytes >= 1, "
                "rotate_grace >= 0"
            )
        self._path = os.path.abspath(os.fspath(path))
        self._dir, self._name = os.path.split(self._path)
        self._from_start = from_start
        self._poll_interval = poll_interval
        self._max_chunk = max_chunk_bytes
        self._max_line = max_line_bytes
        self._grace = rotate_grace
        self._coalesce = coalesce
        self._read_full = False  # the last read filled its buffer: more is waiting
        self._watch = watch
        self._clock = clock
        self._tail_started: float | None = None
        self._log = logger or logging.getLogger(__name__)

        self._saved: _Mark | None = None
        self._saved_draining: _Mark | None = None
        self._saved_at: float | None = None
        if position is not None:
            self._saved, self._saved_draining = self._parse_position(position)
            read_at = position.get("read_at")
            self._saved_at = float(read_at) if isinstance(read_at, (int, float)) else None
        # rotated files written to while tlslogd was not running, to read before the path's
        self._backlog: list[str] = []
        self._started = False
        self._closed = False
        self._current: _Tail | None = None
        self._draining: _Tail | None = None
        self._last_check = 0.0
        self._quiet_until = float("-inf")
        self._problem: _Problem | None = None
        self._long_line_logged = False

        self._bytes_read = 0
        self._rotations = {"rename": 0, "delete": 0, "truncate": 0}
        self._errors = {"missing": 0, "permission": 0, "io": 0, "long_line": 0, "lost": 0}

        self._observer: BaseObserver | None = None
        self._wakeup: _Wakeup | None = None
        self._observed: ObservedWatch | None = None
        self._appends_watched = False
        self._wake: Callable[[], object] | None = None

    # ----------------------------------------------------------------------------- public API

    def start(self) -> None:
        """Decide where reading starts (a file's end, without a saved position) now rather than
        at the first read, so lines appended after start-up are not skipped."""
        if not self._started and not self._closed:
            self._start()

    def read_available(self) -> Chunk | None:
        """One bounded read step; None when there is nothing new."""
        if self._closed:
            return None
        if not self._started:
            self._start()
            if not self._started:
                return None
        return self._step()

    async def chunks(self) -> AsyncIterator[Chunk]:
        """Yield chunks until :meth:`close`, sleeping until the log changes when idle."""
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def wake() -> None:  # watchdog's thread: one wake-up per idle period is enough
            if not changed.is_set():
                loop.call_soon_threadsafe(changed.set)

        self._wake = wake
        if self._watch:
            self._start_observer(wake)
        try:
            while not self._closed:
                changed.clear()
                chunk = self.read_available()
                if chunk is not None:
                    # Lines are flowing: read again after a moment instead of being woken for
                    # every write (syslog daemons write line by line; each event costs watchdog
                    # far more than reading the lines it announces).
                    self._watch_appends(False)
                    yield chunk
                    await asyncio.sleep(0 if self._read_full else self._coalesce)
                    continue
                if self._watch_appends(True):
                    continue  # armed just now: look once more for a write made before that
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), self._poll_interval)
        finally:
            self._stop_observer()
            self._wake = None

    def position(self) -> dict[str, Any] | None:
        """Where reading would resume; None before the first read when there is nothing saved."""
        if not self._started:
            if self._saved is None:
                return None
            return self._marks_to_dict(self._saved, self._saved_draining)
        return self._live_position()

    def health(self) -> SourceHealth:
        detail = self._detail()
        if self._closed:
            return SourceHealth(ok=False, reason="closed", detail=detail)
        if self._problem is not None:
            return SourceHealth(ok=False, reason=self._problem.message, detail=detail)
        if not self._started:
            return SourceHealth(ok=False, reason=f"{self._path} not opened yet", detail=detail)
        if self._current is None:
            reason = f"waiting for {self._path} to be created again after rotation"
            return SourceHealth(ok=True, reason=reason, detail=detail)
        return SourceHealth(ok=True, detail=detail)

    def counters(self) -> dict[str, dict[str, int]]:
        return {
            "bytes_read": {"": self._bytes_read},
            "rotations": dict(self._rotations),
            "read_errors": dict(self._errors),
        }

    def tail_started(self) -> float | None:
        return self._tail_started

    def lag_bytes(self) -> int | None:
        tails = [t for t in (self._draining, self._current) if t is not None]
        if not tails:
            return None
        lag = 0
        for tail in tails:
            size = tail.size()
            if size is None:
                return None
            lag += max(0, size - tail.offset)
        return lag

    def reopen(self) -> None:
        """Close the descriptors and find the file again from its path, keeping the position."""
        if self._closed or not self._started:
            return
        current, draining = self._current, self._draining
        self._saved = current.mark() if current is not None else self._fresh_mark()
        self._saved_draining = draining.mark() if draining is not None else None
        for tail in (current, draining):
            if tail is not None:
                self._bytes_read -= tail.read_pos - tail.offset
                _close_fd(tail.fd)
        self._current = self._draining = None
        self._started = False
        self._log.info("reopening %s", self._path)

    def close(self) -> None:
        """Release the files, stop the observer and end :meth:`chunks`."""
        if self._closed:
            return
        self._closed = True
        self._stop_observer()
        if self._wake is not None:
            self._wake()
        for tail in (self._current, self._draining):
            if tail is not None:
                _close_fd(tail.fd)
        self._current = self._draining = None

    # ------------------------------------------------------------------------------ positions

    def _parse_position(self, raw: dict[str, Any]) -> tuple[_Mark | None, _Mark | None]:
        try:
            main = _Mark.parse(raw)
            draining = raw.get("draining")
            return main, None if draining is None else _Mark.parse(draining)
        except (KeyError, TypeError, ValueError, AttributeError):
            self._log.warning("ignoring unusable saved position for %s: %r", self._path, raw)
            return None, None

    def _live_position(self) -> dict[str, Any]:
        current, draining = self._current, self._draining
        result = self._marks_to_dict(
            current.mark() if current is not None else self._fresh_mark(),
            draining.mark() if draining is not None else None,
        )
        # wall-clock time of this position: rotated files written to after it were not read
        result["read_at"] = time.time()
        return result

    def _fresh_mark(self) -> _Mark:
        """The position meaning: whatever file appears at the path, read it from its start."""
        return _Mark(self._path, 0, 0, 0, "", 0)

    @staticmethod
    def _marks_to_dict(main: _Mark, draining: _Mark | None) -> dict[str, Any]:
        result = main.as_dict()
        if draining is not None:
            result["draining"] = draining.as_dict()
        return result

    def _detail(self) -> dict[str, Any]:
        current = self._current
        detail: dict[str, Any] = {
            "path": self._path,
            "offset": current.offset if current else None,
            "size": current.size() if current else None,
            "inode": current.ino if current else None,
        }
        if current is not None and current.path != self._path:
            detail["reading"] = current.path
        if self._draining is not None:
            detail["draining"] = {
                "path": self._draining.path,
                "offset": self._draining.offset,
                "size": self._draining.size(),
                "inode": self._draining.ino,
            }
        return detail

    # ------------------------------------------------------------------------------- problems

    def _report(self, kind: str, message: str, during: str) -> None:
        """Record a problem; a new one (not the one already current) is logged and counted."""
        problem = _Problem(kind, message, during)
        if problem != self._problem:
            self._errors[kind] += 1
            self._log.warning("%s", message)
        self._problem = problem

    def _resolve(self, during: str) -> None:
        if self._problem is not None and self._problem.during == during:
            self._log.info("%s is readable again (was: %s)", self._path, self._problem.message)
            self._problem = None

    def _path_problem(self, exc: OSError) -> None:
        if isinstance(exc, FileNotFoundError):
            if self._clock() >= self._quiet_until:
                self._report("missing", f"waiting for {self._path} to appear", "path")
        elif isinstance(exc, PermissionError):
            self._report("permission", permission_message(self._path), "path")
        else:
            self._report("io", f"cannot open {self._path}: {exc.strerror or exc}", "path")

    def _read_problem(self, tail: _Tail, exc: OSError) -> None:
        self._report("io", f"cannot read {tail.path}: {exc.strerror or exc}", "read")

    # ---------------------------------------------------------------------------------- start

    def _open(self, path: str) -> _Tail:
        fd = os.open(path, _OPEN_FLAGS)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(f"{path} is not a regular file")
            head, head_len, head_final = _head_of(fd)
        except BaseException:
            os.close(fd)
            raise
        return _Tail(fd, path, st.st_dev, st.st_ino, head, head_len, head_final)

    def _start(self) -> None:
        """Find the file to read and where to start, from the saved position if there is one."""
        try:
            current: _Tail | None = self._open(self._path)
        except FileNotFoundError as exc:
            current = None
            self._path_problem(exc)  # reported at once: /healthz must not say ok meanwhile
        except OSError as exc:
            self._path_problem(exc)
            return
        else:
            self._resolve("path")
        saved = self._saved
        replaced = False
        if current is not None:
            try:
                replaced = self._place(current, saved)
            except OSError as exc:
                _close_fd(current.fd)
                self._read_problem(current, exc)
                return
        if saved is not None and saved.ino and (replaced or not _is_file(current, saved)):
            self._backlog = self._rotated_since(
                self._saved_at, skip=(current, saved, self._saved_draining)
            )
            old = None if replaced else self._find(saved)
            if old is not None:
                self._log.info(
                    "%s was rotated while tlslogd was not running; reading the rest of %s first",
                    self._path,
                    old.path,
                )
                if current is not None:
                    _close_fd(current.fd)
                current = old
            elif self._backlog and current is not None:
                # the saved file's rest is gone (or the new log took its inode): the rotated
                # files written to since first, then the new log from its start
                _close_fd(current.fd)
                current = None
        if self._saved_draining is not None:
            self._draining = self._find(self._saved_draining)
            if self._draining is not None:
                self._draining.deadline = self._clock() + self._grace
        self._current = current
        self._saved = self._saved_draining = None
        self._started = True
        self._last_check = self._clock()

    def _place(self, tail: _Tail, saved: _Mark | None) -> bool:
        """Set where to start reading the file found at the path; True when it replaced the
        saved file and no copy of that file's rest was found (it was rotated away, perhaps
        compressed, and the new file got its inode number)."""
        size = os.fstat(tail.fd).st_size
        if saved is None:
            if not self._from_start:
                tail.seek(_line_end(tail.fd, size))
                self._tail_started = self._clock()
            return False
        if not saved.ino or not _is_file(tail, saved):
            return False
        if saved.offset <= size and _head_matches(tail.fd, saved.head, saved.head_len):
            tail.seek(saved.offset)
            return False
        self._rotations["truncate"] += 1
        copy = self._copy_of(saved) if self._saved_draining is None else None
        if copy is not None:  # copytruncate while tlslogd was not running
            self._drain(copy, [], 0.0)
        self._log.warning(
            "%s was truncated or replaced while tlslogd was not running; reading %sit from "
            "the start%s",
            self._path,
            f"the rest of its copy {copy.path}, then " if copy is not None else "",
            ""
            if copy is not None
            else f" (lines written to the old file after offset {saved.offset} were not read)",
        )
        return copy is None

    def _find(self, mark: _Mark) -> _Tail | None:
        """The file of ``mark`` in the log's directory, positioned at its offset."""
        tail = self._open_holding(self._same_inode(mark.dev, mark.ino), mark, same_file=True)
        if tail is None:
            self._log.warning(
                "cannot find %s (inode %d) any more, it was probably compressed or deleted: "
                "lines may have been lost between offset %d and the end of the old file",
                mark.path,
                mark.ino,
                mark.offset,
            )
        return tail

    def _copy_of(self, mark: _Mark) -> _Tail | None:
        """The copy logrotate's copytruncate made of ``mark``'s file before truncating it: a
        rotated file next to the log that starts with the same first line and reaches past the
        last line read; positioned there (at the start of the unfinished line)."""
        if not mark.head_len:
            return None
        paths = [e.path for e in self._siblings() if not e.name.endswith(_COMPRESSED)]
        return self._open_holding(paths, mark, same_file=False)

    def _open_holding(self, paths: list[str], mark: _Mark, *, same_file: bool) -> _Tail | None:
        """The first of ``paths`` that holds ``mark``'s first line and reaches its offset (the
        same file, or else another one: a copy), opened and positioned there."""
        for path in paths:
            try:
                tail = self._open(path)
            except OSError:
                continue
            try:
                found = (
                    _is_file(tail, mark) == same_file
                    and os.fstat(tail.fd).st_size >= mark.offset
                    and _head_matches(tail.fd, mark.head, mark.head_len)
                )
            except OSError:
                found = False
            if found:
                tail.seek(mark.offset)
                return tail
            _close_fd(tail.fd)
        return None

    def _siblings(self) -> list[os.DirEntry[str]]:
        """Rotated copies of the log next to it: ``mail.log.1``, ``mail.log-20251126.gz``."""
        try:
            with os.scandir(self._dir) as entries:
                return [
                    e for e in entries if e.name != self._name and e.name.startswith(self._name)
                ]
        except OSError as exc:
            self._log.warning("cannot list %s: %s", self._dir, exc.strerror or exc)
            return []

    def _rotated_since(
        self, since: float | None, skip: tuple[_Tail | _Mark | None, ...]
    ) -> list[str]:
        """Rotated copies of the log (``mail.log.1``, ``mail.log-20251126``) written to after
        ``since`` (the saved position's wall-clock time), oldest first: files rotated away while
        tlslogd was not running, between the saved file and the one now at the path. Compressed
        ones cannot be followed: they are named in a warning."""
        if since is None:
            return []
        skipped = {(s.dev, s.ino) for s in skip if s is not None}
        found: list[tuple[float, str]] = []
        for entry in self._siblings():
            with contextlib.suppress(OSError):
                st = entry.stat(follow_symlinks=False)
                if (
                    stat.S_ISREG(st.st_mode)
                    and st.st_mtime > since
                    and (st.st_dev, st.st_ino) not in skipped
                ):
                    found.append((st.st_mtime, entry.path))
        found.sort()
        packed = [p for _, p in found if p.endswith(_COMPRESSED)]
        if packed:
            self._errors["lost"] += len(packed)
            self._log.warning(
                "%s: rotated and compressed while tlslogd was not running; its lines are not "
                "read (tlslogd report can read them)",
                ", ".join(packed),
            )
        backlog = [p for _, p in found if not p.endswith(_COMPRESSED)]
        if backlog:
            self._log.info(
                "%s rotated while tlslogd was not running: reading %s before it",
                self._path,
                ", ".join(backlog),
            )
        return backlog

    def _same_inode(self, dev: int, ino: int) -> list[str]:
        """Names in the log's directory of the file with this device and inode."""
        found: list[str] = []
        try:
            with os.scandir(self._dir) as entries:
                for entry in entries:
                    with contextlib.suppress(OSError):
                        if entry.inode() == ino and entry.stat(follow_symlinks=False).st_dev == dev:
                            found.append(entry.path)
        except OSError as exc:
            self._log.warning("cannot list %s: %s", self._dir, exc.strerror or exc)
        return found

    # ---------------------------------------------------------------------------------- steps

    def _step(self) -> Chunk | None:
        out: list[bytes] = []
        while True:
            draining = self._draining
            if draining is not None:
                data = self._read(draining, verify=False)
                if data:
                    out.append(data)
                    return self._emit(out)
                if data is not None:
                    continue
                if self._clock() >= draining.deadline:
                    self._draining = None
                    out.append(self._finish(draining))
                    if any(out):
                        return self._emit(out)
            current = self._current or self._open_current()
            if current is None:
                return self._emit(out)
            checked = self._clock() - self._last_check >= self._poll_interval
            if checked and self._check(current, out):
                if any(out):
                    return self._emit(out)
                continue
            data = self._read(current, verify=True)
            if data:
                out.append(data)
                return self._emit(out)
            if data is not None:
                continue
            if checked or not self._check(current, out) or any(out):
                return self._emit(out)

    def _emit(self, out: list[bytes]) -> Chunk | None:
        data = b"".join(out)
        if not data:
            return None
        return Chunk(data=data, position=self._live_position(), lines=data.count(b"\n"))

    def _open_current(self) -> _Tail | None:
        """Open the next rotated file of the backlog, or the file now at the path, to be read
        from its start."""
        while self._backlog:
            path = self._backlog.pop(0)
            try:
                tail = self._open(path)
            except OSError:
                continue
            self._current = tail
            self._last_check = self._clock()
            return tail
        try:
            tail = self._open(self._path)
        except OSError as exc:
            self._path_problem(exc)
            return None
        self._resolve("path")
        self._log.info("reading %s (inode %d) from the start", self._path, tail.ino)
        self._current = tail
        self._last_check = self._clock()
        return tail

    def _read(self, tail: _Tail, *, verify: bool) -> bytes | None:
        """One read: the complete lines it finished (maybe none), or None at end of file.

        With ``verify``, data read after the first line only counts if the first line is still
        the same afterwards: a file truncated and written past the old offset in between is
        otherwise read from the middle of a line. None then lets the caller find out why.
        """
        pending = len(tail.pending)
        size = self._max_chunk - pending if pending < self._max_chunk else self._max_chunk
        try:
            data = os.pread(tail.fd, size, tail.read_pos)
            past_head = data and verify and tail.read_pos
            if past_head and not _head_matches(tail.fd, tail.head, tail.head_len):
                return None
            if data and not tail.head_final:
                tail.refresh_head()
        except OSError as exc:
            self._read_problem(tail, exc)
            return None
        self._resolve("read")
        self._read_full = len(data) == size
        if not data:
            return None
        return self._consume(tail, data)

    def _consume(self, tail: _Tail, data: bytes) -> bytes:
        first = data.find(b"\n")
        if first < 0:
            self._extend(tail, data)
            tail.read_pos += len(data)
            self._bytes_read += len(data)
            return b""
        if len(tail.pending) >= self._max_chunk:
            # The unfinished line alone fills a chunk: hand it out by itself and read the rest
            # of this block again next time.
            end = rest = first + 1
        else:
            end = data.rfind(b"\n") + 1
            rest = len(data)
        self._extend(tail, data[:first])
        lines = [self._take_pending(tail), self._clip(data[first + 1 : end])]
        tail.offset = tail.read_pos + end
        tail.read_pos += rest
        self._bytes_read += rest
        self._extend(tail, data[end:rest])
        return b"".join(lines)

    def _extend(self, tail: _Tail, data: bytes) -> None:
        if tail.overlong:
            return
        tail.pending += data
        if len(tail.pending) > self._max_line:
            del tail.pending[self._max_line :]
            tail.overlong = True

    def _take_pending(self, tail: _Tail) -> bytes:
        """The unfinished line, now finished."""
        if tail.overlong:
            self._long_lines(1)
        line = bytes(tail.pending) + b"\n"
        tail.pending.clear()
        tail.overlong = False
        return line

    def _clip(self, lines: bytes) -> bytes:
        """Cut lines longer than the limit in a run of complete lines."""
        if len(lines) <= self._max_line + 1:
            return lines
        parts: list[bytes] = []
        start = clipped = 0
        while start < len(lines):
            newline = lines.index(b"\n", start)
            if newline - start > self._max_line:
                parts += (lines[start : start + self._max_line], b"\n")
                clipped += 1
            else:
                parts.append(lines[start : newline + 1])
            start = newline + 1
        if not clipped:
            return lines
        self._long_lines(clipped)
        return b"".join(parts)

    def _long_lines(self, count: int) -> None:
        self._errors["long_line"] += count
        if not self._long_line_logged:
            self._long_line_logged = True
            self._log.warning(
                "%s has lines longer than %d bytes; they are cut to that length",
                self._path,
                self._max_line,
            )

    def _finish(self, tail: _Tail) -> bytes:
        """Close a file that will not grow any more; its unfinished line gets a newline."""
        data = self._take_pending(tail) if tail.pending or tail.overlong else b""
        tail.offset = tail.read_pos
        _close_fd(tail.fd)
        return data

    # ------------------------------------------------------------------------------ rotations

    def _check(self, tail: _Tail, out: list[bytes]) -> bool:
        """Compare the path with the open file; True when that changed what is read next."""
        self._last_check = self._clock()
        try:
            st: os.stat_result | None = os.stat(self._path)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            self._path_problem(exc)
            return False
        self._resolve("path")
        try:
            if st is not None and (st.st_dev, st.st_ino) == (tail.dev, tail.ino):
                return self._check_truncation(tail, st.st_size, out)
            linked = os.fstat(tail.fd).st_nlink > 0
        except OSError as exc:
            self._read_problem(tail, exc)
            return False
        if not linked:
            self._deleted(tail, out)
            return True
        if st is None:
            return False
        self._renamed(tail, out)
        return True

    def _check_truncation(self, tail: _Tail, size: int, out: list[bytes]) -> bool:
        if size >= tail.read_pos and _head_matches(tail.fd, tail.head, tail.head_len):
            return False
        copy = self._copy_of(tail.mark())
        if copy is not None:
            tail.pending.clear()  # the copy holds the unfinished line whole
            tail.overlong = False
            # copytruncate: what was written after the last read is in the copy only
            self._drain(copy, out, 0.0)
        elif tail.pending or tail.overlong:
            out.append(self._take_pending(tail))
        tail.seek(0)
        tail.refresh_head()
        self._rotations["truncate"] += 1
        self._log.info(
            "%s was truncated; reading it again from the start%s",
            self._path,
            f", and the rest of its copy {copy.path}" if copy is not None else "",
        )
        return True

    def _drain(self, tail: _Tail, out: list[bytes], grace: float) -> None:
        """Read ``tail`` to its end before the file at the path, and for ``grace`` seconds more
        (a syslog daemon may still write to it); one such file at a time."""
        if self._draining is not None:
            out.append(self._finish(self._draining))
        tail.deadline = self._clock() + grace
        self._draining = tail

    def _deleted(self, tail: _Tail, out: list[bytes]) -> None:
        """The file has no name any more (deleted, or compressed by the rotation), but is still
        open: read what it holds, as after a rename, while waiting for the path again."""
        self._drain(tail, out, self._grace)
        self._current = None
        self._quiet_until = self._clock() + self._grace
        self._rotations["delete"] += 1
        self._log.info(
            "%s was deleted; reading the rest of the open file, and waiting for it to be "
            "created again",
            self._path,
        )

    def _renamed(self, tail: _Tail, out: list[bytes]) -> None:
        names = self._same_inode(tail.dev, tail.ino)
        if names:
            tail.path = names[0]
        self._drain(tail, out, self._grace)
        self._current = None
        self._rotations["rename"] += 1
        self._log.info(
            "%s was rotated to %s; reading the new file, and the old one for %g s more",
            self._path,
            tail.path,
            self._grace,
        )

    # -------------------------------------------------------------------------------- watching

    def _start_observer(self, wake: Callable[[], object]) -> None:
        logging.getLogger("watchdog.observers.inotify").addFilter(_replaced_watch_race)
        observer = Observer()
        wakeup = self._wakeup = _Wakeup(self._name, wake)
        try:
            self._observed = observer.schedule(wakeup, self._dir, event_filter=_ROTATION_EVENTS)
            observer.start()
        except OSError as exc:
            observer.stop()
            self._observed = None
            self._cannot_watch(exc)
            return
        self._observer = observer
        self._appends_watched = False

    def _watch_appends(self, on: bool) -> bool:
        """Be woken by appends to the log, or only by rotations; True when this armed the
        append watch. watchdog shares one inotify watch per directory and keeps the widest
        event mask it was ever given, so the watch is replaced, not added to."""
        observer, wakeup = self._observer, self._wakeup
        if observer is None or wakeup is None or on == self._appends_watched:
            return False
        events = _ROTATION_EVENTS + _APPEND_EVENTS if on else _ROTATION_EVENTS
        if self._observed is not None:
            observer.unschedule(self._observed)
            self._observed = None
        try:
            self._observed = observer.schedule(wakeup, self._dir, event_filter=events)
        except OSError as exc:
            self._cannot_watch(exc)
            self._stop_observer()
            return False
        self._appends_watched = on
        return on

    def _cannot_watch(self, exc: OSError) -> None:
        self._log.warning(
            "cannot watch %s (%s); checking for new lines every %g s",
            self._dir,
            exc.strerror or exc,
            self._poll_interval,
        )

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        self._observed = None
        if observer is not None:
            observer.stop()
            observer.join()
