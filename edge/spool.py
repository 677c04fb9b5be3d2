"""The on-disk spool every result passes through: insert, publish, delete only once the broker acked.

SQLite in WAL mode. `synchronous=FULL` by default: in WAL mode NORMAL already survives a `kill -9`
(a commit is in the OS before `commit()` returns), but a station loses power far more often than
a server, and NORMAL may roll back the last commits on power loss, i.e. lose results the line
believes were recorded. FULL syncs the WAL on every commit; the publisher commits in batches (`commit`: all results
waiting at that moment, and the deletion of those acknowledged since the last one, in one
transaction), so the fsync cost is paid per batch, not per result (`onen bench daemon` shows the
throughput and the CPU time per frame with it). `synchronous="NORMAL"` remains a
constructor option for storage where fsync is very slow.

The size cap counts payload bytes plus a per-row overhead. Only when the cap is hit the oldest rows
are dropped; the number is counted and reported through `on_drop` (the daemon publishes an event).
"""

from __future__ import annotations

import fcntl
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from onen.edge.errors import OnenError

if TYPE_CHECKING:
    from onen.edge.config import StationConfig

ROW_OVERHEAD = 64  # bytes of SQLite bookkeeping per row, roughly; keeps many tiny rows honest


class SpoolError(OnenError):
    """The spool file cannot be opened or written."""


def _exclusive_lock(path: Path) -> TextIO:
    """One daemon per spool: two would publish the same results twice. The OS drops the lock if we die."""
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        handle.close()
        raise SpoolError(
            f"{path.with_suffix('')}: the spool is in use by another running daemon (lock {path}); "
            f"give each station its own spool.path"
        ) from error
    return handle


@dataclass
class SpoolItem:
    id: int
    topic: str
    payload: bytes
    qos: int


class Spool:
    """A FIFO of outgoing messages on disk. Thread-safe; meant for one writer thread."""

    def __init__(
        self,
        path: str | Path,
        max_mb: float = 512,
        synchronous: str = "FULL",
        on_drop: Callable[[int, int], None] | None = None,
    ):
        if synchronous not in ("FULL", "NORMAL"):
            raise SpoolError(f"spool synchronous must be FULL or NORMAL, got {synchronous!r}")
        self.path = Path(path)
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.on_drop = on_drop
        self.dropped = 0
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_file = _exclusive_lock(self.path.with_name(self.path.name + ".lock"))
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
                "payload BLOB NOT NULL, qos INTEGER NOT NULL, created REAL NOT NULL)"
            )
            count, size = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
        except (sqlite3.Error, OSError) as error:
            if hasattr(self, "_lock_file"):  # let a retry in this process take the lock again
                self._lock_file.close()
            raise SpoolError(f"{self.path}: cannot open the spool database: {error}") from error
        self._depth = int(count)
        self._bytes = int(size) + ROW_OVERHEAD * int(count)

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def put_many(self, items: list[tuple[str, bytes, int]]) -> list[int]:
        """Store messages in one transaction (one fsync); returns their ids in order."""
        return self.commit(items, [])

    def commit(self, items: list[tuple[str, bytes, int]], delete_ids: list[int]) -> list[int]:
        """Store new messages and remove acknowledged ones in ONE transaction (one fsync); returns the new ids.
        The new rows are on disk when this returns; unknown delete ids (dropped by the cap) are ignored."""
        if not items and not delete_ids:
            return []
        with self._lock:
            ids, now = [], time.time()
            dropped, oldest = 0, 0
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._delete_locked(delete_ids)
                for topic, payload, qos in items:
                    cursor = self._db.execute(
                        "INSERT INTO outbox (topic, payload, qos, created) VALUES (?, ?, ?, ?)",
                        (topic, payload, qos, now),
                    )
                    assert cursor.lastrowid is not None  # set by every INSERT
                    ids.append(cursor.lastrowid)
                if items:
                    dropped, oldest = self._enforce_cap_locked(
                        len(items), sum(len(p) + ROW_OVERHEAD for _, p, _ in items)
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._recount_locked()
                raise
        if dropped and self.on_drop is not None:
            self.on_drop(dropped, oldest)
        return ids

    def put(self, topic: str, payload: bytes, qos: int = 1) -> int:
        return self.put_many([(topic, payload, qos)])[0]

    def _enforce_cap_locked(self, rows: int, added: int) -> tuple[int, int]:
        """Within the open transaction: account for new rows, drop the oldest while over the cap."""
        self._bytes += added
        self._depth += rows
        dropped, oldest = 0, 0
        while self._bytes > self.max_bytes and self._depth > 1:
            row = self._db.execute("SELECT id, LENGTH(payload) FROM outbox ORDER BY id LIMIT 1").fetchone()
            self._db.execute("DELETE FROM outbox WHERE id = ?", (row[0],))
            oldest = oldest or int(row[0])
            self._bytes -= int(row[1]) + ROW_OVERHEAD
            self._depth -= 1
            dropped += 1
        self.dropped += dropped
        return dropped, oldest

    def _recount_locked(self) -> None:
        count, size = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
        self._depth, self._bytes = int(count), int(size) + ROW_OVERHEAD * int(count)

    def after(self, last_id: int, limit: int) -> list[SpoolItem]:
        """The next messages to send, oldest first, with id > last_id."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, qos FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (last_id, limit)
            ).fetchall()
        return [SpoolItem(int(r[0]), r[1], bytes(r[2]), int(r[3])) for r in rows]

    def delete(self, ids: list[int]) -> int:
        """Remove acknowledged messages (one transaction); unknown ids (dropped by the cap) are ignored."""
        if not ids:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                removed = self._delete_locked(ids)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._recount_locked()
                raise
        return removed

    def _delete_locked(self, ids: list[int]) -> int:
        """Within the open transaction: remove these rows, keep the depth and byte counts right."""
        removed = 0
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            size = self._db.execute(
                f"SELECT COALESCE(SUM(LENGTH(payload)), 0), COUNT(*) FROM outbox WHERE id IN ({marks})", chunk
            ).fetchone()
            self._db.execute(f"DELETE FROM outbox WHERE id IN ({marks})", chunk)
            self._bytes -= int(size[0]) + ROW_OVERHEAD * int(size[1])
            self._depth -= int(size[1])
            removed += int(size[1])
        return removed

    def close(self) -> None:
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self._db.close()
            self._lock_file.close()


SPOOL_FILE = "results.sqlite3"


def spool_file(config: StationConfig) -> Path:
    """The spool database of a station config (its folder is where the station keeps what it writes itself)."""
    path = Path(config.spool.path)
    return path if path.suffix in (".db", ".sqlite", ".sqlite3") else path / SPOOL_FILE
