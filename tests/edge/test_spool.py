"""The on-disk spool: order, delete-on-ack, size cap, and nothing lost on kill -9 (real SQLite, real processes)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from onen.edge.spool import ROW_OVERHEAD, Spool, SpoolError


def test_fifo_order_delete_and_reopen(tmp_path):
    spool = Spool(tmp_path / "s.db")
    ids = spool.put_many([("a/result", f"m{i}".encode(), 1) for i in range(10)])
    assert ids == sorted(ids) and spool.depth == 10
    first = spool.after(0, 4)
    assert [item.payload for item in first] == [b"m0", b"m1", b"m2", b"m3"]
    assert [item.payload for item in spool.after(first[-1].id, 100)][:2] == [b"m4", b"m5"]
    assert spool.delete([first[0].id, first[2].id, 999999]) == 2  # an unknown id is ignored
    spool.close()
    reopened = Spool(tmp_path / "s.db")
    assert [item.payload for item in reopened.after(0, 100)] == [b"m1", b"m3"] + [
        f"m{i}".encode() for i in range(4, 10)
    ]
    assert reopened.depth == 8
    assert reopened.size_bytes == sum(len(f"m{i}") + ROW_OVERHEAD for i in (1, 3, 4, 5, 6, 7, 8, 9))


def test_wal_mode_and_synchronous(tmp_path):
    spool = Spool(tmp_path / "s.db")
    assert spool._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert spool._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    spool.close()
    assert Spool(tmp_path / "n.db", synchronous="NORMAL")._db.execute("PRAGMA synchronous").fetchone()[0] == 1
    with pytest.raises(SpoolError, match="FULL or NORMAL"):
        Spool(tmp_path / "x.db", synchronous="OFF")


def test_cap_drops_oldest_only_when_full_and_reports(tmp_path):
    drops = []
    payload = b"x" * 1000
    cap_mb = 10 * (len(payload) + ROW_OVERHEAD) / (1024 * 1024)  # room for exactly 10 messages
    spool = Spool(tmp_path / "s.db", max_mb=cap_mb, on_drop=lambda count, oldest: drops.append((count, oldest)))
    ids = [spool.put("t", payload) for _ in range(10)]
    assert spool.depth == 10 and drops == [] and spool.dropped == 0
    spool.put("t", payload)
    spool.put("t", payload)
    assert spool.depth == 10 and spool.dropped == 2
    assert drops == [(1, ids[0]), (1, ids[1])]
    assert spool.after(0, 1)[0].id == ids[2]  # the oldest went first


def test_unwritable_spool_names_the_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(SpoolError, match="file"):
        Spool(blocker / "s.db")


WRITER = textwrap.dedent("""
    import sys, time
    from onen.edge.spool import Spool
    spool = Spool(sys.argv[1])
    for i in range(int(sys.argv[2])):
        spool.put("onen/s/cam/result", f"result {i}".encode())
    print("spooled", flush=True)
    time.sleep(60)
""")


def test_kill_9_loses_nothing_that_was_spooled(tmp_path):
    path = tmp_path / "s.db"
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "200"], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "spooled"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    assert process.returncode == -signal.SIGKILL
    spool = Spool(path)
    assert [item.payload for item in spool.after(0, 1000)] == [f"result {i}".encode() for i in range(200)]
    # a reader sees the same through plain sqlite3 (WAL file replayed)
    rows = sqlite3.connect(str(path)).execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    assert rows == 200


def test_batches_in_and_out(tmp_path):
    spool = Spool(tmp_path / "s.db")
    spool.put_many([("t", b"p", 1)] * 500)
    assert spool.depth == 500
    assert spool.delete([item.id for item in spool.after(0, 1000)]) == 500
    assert spool.depth == 0 and spool.size_bytes == 0


def test_one_daemon_per_spool(tmp_path):
    first = Spool(tmp_path / "s.db")
    with pytest.raises(SpoolError, match="in use by another running daemon"):
        Spool(tmp_path / "s.db")
    first.close()
    Spool(tmp_path / "s.db").close()  # free again once the first one closed


def test_a_spool_that_cannot_open_releases_its_lock_for_the_next_try(tmp_path):
    """The operator fixes the path and the daemon retries in the same process: the lock must be free again."""
    path = tmp_path / "s.db"
    path.mkdir()  # a folder where the database should be: sqlite cannot open it
    with pytest.raises(SpoolError, match="cannot open the spool database") as failed:
        Spool(path)
    path.rmdir()
    spool = Spool(path)  # while the failed attempt's traceback (and its half-made spool) is still alive
    assert spool.depth == 0 and failed.value is not None
    spool.close()


def test_commit_stores_new_and_deletes_acknowledged_in_one_transaction(tmp_path):
    spool = Spool(tmp_path / "s.db")
    old = spool.put_many([("t", f"old{i}".encode(), 1) for i in range(3)])
    new = spool.commit([("t", b"new0", 1), ("t", b"new1", 1)], [old[0], old[1], 999999])
    assert new == sorted(new) and new[0] > old[-1]
    assert spool.depth == 3 and spool.size_bytes == sum(len(p) + ROW_OVERHEAD for p in (b"old2", b"new0", b"new1"))
    assert spool.commit([], []) == []
    spool.close()
    reopened = Spool(tmp_path / "s.db")  # what the transaction did is on disk, counts recomputed from it
    assert [item.payload for item in reopened.after(0, 10)] == [b"old2", b"new0", b"new1"]
    assert reopened.depth == 3 and reopened.size_bytes == spool.size_bytes
