"""The spool's live-segment rule, on real files: a segment that a running Spool appends to is
never retired or skipped, even when a newer segment appears beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from usagegate.logpipe import BatchWriter, Spool, segment_is_live


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
