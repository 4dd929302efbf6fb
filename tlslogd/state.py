"""Durable state in SQLite (WAL): the log position, the session table, the durable totals and the
peer table, all written in one transaction per checkpoint.

After a restart -- SIGTERM or ``kill -9`` -- the daemon restores all of it and resumes reading
right after the last checkpointed line, so no line is lost or counted twice in the durable
totals. A state file that is corrupt or not tlslogd's is moved aside with a clear message.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import sqlite3
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

SCHEMA_VERSION = 1
APP_ID = "tlslogd"
# rows a checkpoint writes between pauses: about 20 ms of serialising and inserting
_BATCH_ROWS = 500

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    saved_at REAL NOT NULL,
    source TEXT NOT NULL,
    position TEXT NOT NULL,
    sessions TEXT NOT NULL,
    stats TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS peers (key TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS destinations (key TEXT PRIMARY KEY, data TEXT NOT NULL);
"""


class StateError(Exception):
    pass


def _batches(items: Iterable[T]) -> Iterator[list[T]]:
    it = iter(items)
    while batch := list(itertools.islice(it, _BATCH_ROWS)):
        yield batch


@dataclass(slots=True)
class Saved:
    """What the last checkpoint holds."""

    saved_at: float
    source: str
    position: dict[str, Any]
    sessions: dict[str, Any]
    stats: dict[str, Any]
    peers: list[dict[str, Any]]
    destinations: list[dict[str, Any]]


def _load(db: sqlite3.Connection) -> Saved | None:
    row = db.execute(
        "SELECT saved_at, source, position, sessions, stats FROM checkpoint WHERE id=1"
    ).fetchone()
    if row is None:
        return None
    peers = [json.loads(r[0]) for r in db.execute("SELECT data FROM peers")]
    destinations = [json.loads(r[0]) for r in db.execute("SELECT data FROM destinations")]
    return Saved(
        float(row[0]),
        row[1],
        json.loads(row[2]),
        json.loads(row[3]),
        json.loads(row[4]),
        peers,
        destinations,
    )


def read_saved(path: Path) -> Saved | None:
    """The last checkpoint of a state file, opened read-only (a running daemon may be writing
    it; SQLite's WAL lets both work). None when there is no checkpoint yet; StateError when
    the file is not a readable tlslogd state file."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return _load(db)
        finally:
            db.close()
    except (sqlite3.Error, ValueError) as exc:
        raise StateError(f"{path}: not a usable tlslogd state file ({exc})") from exc


class StateStore:
    """The daemon's state file, its own: a second daemon on the same file would mix two logs'
    totals and positions in it, so the store holds an exclusive lock (``state.db.lock``) while
    it is open, and a second daemon on the same state directory refuses to start."""

    def __init__(self, path: Path, logger: logging.Logger | None = None) -> None:
        self.path = path
        self.log = logger or logging.getLogger("tlslogd.state")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = self._lock()
        except (FileExistsError, NotADirectoryError):
            directory = self.path.parent
            blocker = next((p for p in (directory, *directory.parents) if p.exists()), directory)
            raise StateError(
                f"state_dir = {directory}: {blocker} is not a directory "
                "(expected a directory tlslogd can write)"
            ) from None
        except PermissionError as exc:
            raise StateError(
                f"state_dir = {self.path.parent}: {exc.filename} is not writable by this user "
                f"(uid {os.getuid()}); expected a directory tlslogd can write"
            ) from None
        try:
            self._db = self._open()
        except BaseException:
            os.close(self._lock_fd)
            raise

    def _lock(self) -> int:
        lock = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StateError(
                f"{self.path} is in use by another tlslogd (pid {holder}): give each daemon "
                "its own state_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=2000")
        return db

    def _open(self) -> sqlite3.Connection:
        try:
            db = self._connect()
            self._check(db)
            return db
        except (sqlite3.DatabaseError, StateError) as exc:
            aside = self.path.with_name(f"{self.path.name}.bad-{time.strftime('%Y%m%dT%H%M%S')}")
            self.log.error(
                "state file %s is unusable (%s); moved it to %s and starting with empty state",
                self.path,
                exc,
                aside,
            )
            for suffix in ("", "-wal", "-shm"):
                src = Path(str(self.path) + suffix)
                if src.exists():
                    src.rename(Path(str(aside) + suffix))
            db = self._connect()
            self._check(db)
            return db

    def _check(self, db: sqlite3.Connection) -> None:
        ok = db.execute("PRAGMA quick_check").fetchone()
        if not ok or ok[0] != "ok":
            raise StateError(f"integrity check failed: {ok[0] if ok else 'no answer'}")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "meta" not in tables:
            raise StateError("not a tlslogd state file (no meta table)")
        db.executescript(_SCHEMA)
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if not meta:
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [
                    ("app", APP_ID),
                    ("schema", str(SCHEMA_VERSION)),
                    ("created", str(time.time())),
                ],
            )
            db.execute("COMMIT")
        elif meta.get("app") != APP_ID:
            raise StateError(f"not a tlslogd state file (app={meta.get('app')!r})")
        elif meta.get("schema") != str(SCHEMA_VERSION):
            raise StateError(f"schema {meta.get('schema')} is not {SCHEMA_VERSION}")

    @property
    def created(self) -> float:
        row = self._db.execute("SELECT value FROM meta WHERE key='created'").fetchone()
        return float(row[0]) if row else time.time()

    def load(self) -> Saved | None:
        return _load(self._db)

    def saving(
        self,
        *,
        saved_at: float,
        source: str,
        position: dict[str, Any],
        sessions: dict[str, Any],
        stats: dict[str, Any],
        peers: Iterable[tuple[str, dict[str, Any]]],
        removed_peers: Iterable[str],
        destinations: Iterable[tuple[str, dict[str, Any]]] = (),
        removed_destinations: Iterable[str] = (),
    ) -> Generator[None, None, None]:
        """One atomic checkpoint in steps: a generator that pauses after every
        ``_BATCH_ROWS`` rows it wrote (rows are taken from the iterables as they are written),
        so that its caller can serve other work in between. The transaction commits when the
        generator is exhausted; closed before, it rolls back."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT OR REPLACE INTO checkpoint"
                " (id, saved_at, source, position, sessions, stats) VALUES (1, ?, ?, ?, ?, ?)",
                (saved_at, source, json.dumps(position), json.dumps(sessions), json.dumps(stats)),
            )
            for table, rows, removed in (
                ("peers", peers, removed_peers),
                ("destinations", destinations, removed_destinations),
            ):
                for batch in _batches(rows):
                    db.executemany(
                        f"INSERT OR REPLACE INTO {table} (key, data) VALUES (?, ?)",
                        [(key, json.dumps(data)) for key, data in batch],
                    )
                    yield
                for keys in _batches(removed):
                    db.executemany(f"DELETE FROM {table} WHERE key=?", [(k,) for k in keys])
                    yield
            db.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back already (a full disk does): keep its error, not ours
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._db.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # and with it the lock
            self._lock_fd = -1
