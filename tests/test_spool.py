"""The spool's live-segment rule, on real files: a segment that a running Spool appends to is
never retired or skipped, even when a newer segment appears beside it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from usagegate.logpipe import MAX_BATCH_BYTES, BatchWriter, Spool, segment_is_live


def test_newer_segment_does_not_orphan_the_live_one(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir, fsync_interval=0.05)
    inserted: list[dict[str, Any]] = []
    writer = BatchWriter(spool_dir, lambda records, token: inserted.extend(records))
    try:
        assert spool.append({"n": 1})
        writer.drain(timeout=5)
        live = sorted(spool_dir.glob("*.log"))[-1]
        assert segment_is_live(live)
        # Someone drops a newer segment next to the live one (e.g. history written by hand).
        newer = spool_dir / f"{int(live.stem) + 1:010d}.log"
        newer.write_bytes(b'{"n": 100}\n')
        writer.drain(timeout=1)
        assert spool.append({"n": 2})  # the live segment keeps growing
        writer.drain(timeout=1)
        assert live.exists()
        assert [r["n"] for r in inserted][:2] == [1, 2], inserted
    finally:
        spool.close()
    assert not segment_is_live(live)
    writer.drain(timeout=5)  # once the spool is gone, the newer segment is read too
    assert sorted(r["n"] for r in inserted) == [1, 2, 100]


def test_writer_lets_batches_grow_for_an_interval_but_clears_a_backlog_at_once(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir, fsync_interval=0.05)
    batches: list[int] = []
    inserted: list[int] = []

    def insert(records: list[dict[str, Any]], token: str) -> None:
        batches.append(len(records))
        inserted.extend(r["n"] for r in records)

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 20
        while len(inserted) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(inserted) == count, (len(inserted), count)

    interval = 3.0
    pad = "x" * 1000
    backlog = 2 * MAX_BATCH_BYTES // 1000 + 500  # more than two batch caps of ~1 KB lines
    for n in range(backlog):
        assert spool.append({"n": n, "pad": pad})
    writer = BatchWriter(spool_dir, insert, interval=interval)
    started = time.monotonic()
    writer.start()
    try:
        wait_for(backlog)
        # Three capped batches back to back: pausing after each would take two intervals.
        assert len(batches) >= 3 and time.monotonic() - started < 2 * interval, batches
        # Caught up. A busy second (1,500 records, a full batch that is not a backlog) goes in as
        # one insert, and the record after it waits for the next interval instead of going at once.
        time.sleep(0.2)
        for n in range(backlog, backlog + 1500):
            assert spool.append({"n": n})
        wait_for(backlog + 1500)
        assert spool.append({"n": backlog + 1500})
        time.sleep(0.5)
        assert len(inserted) == backlog + 1500, "the next record did not wait for the interval"
        wait_for(backlog + 1501)
        assert inserted == list(range(backlog + 1501))
    finally:
        writer.stop()
        spool.close()
