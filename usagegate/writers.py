"""Every spool in the data dir, moved into the store by the one process that owns the store.

One proxy worker spools to `<data>/spool`; with `--workers N`, worker i spools to
`<data>/spool/w<i>`. The store process runs one `BatchWriter` per spool directory and always
writes *every* spool it finds — the root one and each `w<i>` — so changing the worker count
never strands records in a spool nobody drains.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from usagegate.logpipe import BatchWriter, InsertFn

log = logging.getLogger("usagegate.writers")


def spool_dir(data_dir: Path, worker_index: int | None, workers: int = 1) -> Path:
    """Where proxy worker `worker_index` of `workers` appends its records: `<data>/spool` when it
    is the only one (or for None), else `<data>/spool/w<i>`."""
    root = data_dir / "spool"
    return root if worker_index is None or workers == 1 else root / f"w{worker_index}"


def store_spool_dir(data_dir: Path) -> Path:
    """The store process's own spool (records POSTed to /api/import): `w0`, process 0's."""
    return data_dir / "spool" / "w0"


def spool_dirs(data_dir: Path, workers: int = 1) -> list[Path]:
    """The root spool, `w1..w<workers>` (created), and any other `w<i>` left by earlier runs."""
    root = data_dir / "spool"
    root.mkdir(parents=True, exist_ok=True)
    dirs = {root}
    if workers > 1:
        for i in range(1, workers + 1):
            (root / f"w{i}").mkdir(exist_ok=True)
    for child in root.iterdir():
        if child.is_dir() and child.name.startswith("w") and child.name[1:].isdigit():
            dirs.add(child)
    return sorted(dirs, key=lambda d: (d != root, len(d.name), d.name))


def _prefixed(insert: InsertFn, prefix: str) -> InsertFn:
    # Batch tokens are positions in one spool; two spools' positions coincide, so tell them apart.
    def call(records: list[dict[str, Any]], token: str) -> None:
        insert(records, f"{prefix}/{token}")

    return call


class WriterSet:
    """One BatchWriter per spool directory, started, stopped and drained together."""

    def __init__(self, data_dir: Path, insert: InsertFn, *, workers: int = 1, interval: float = 0.2) -> None:
        root = data_dir / "spool"
        self.writers: dict[Path, BatchWriter] = {}
        for directory in spool_dirs(data_dir, workers):
            fn = insert if directory == root else _prefixed(insert, directory.name)
            self.writers[directory] = BatchWriter(directory, fn, interval=interval)

    def start(self) -> None:
        for writer in self.writers.values():
            writer.start()

    def stop(self) -> None:
        for writer in self.writers.values():
            writer.stop()

    def drain(self, timeout: float) -> bool:
        """Move everything spooled (after `stop`); True when every spool is empty."""
        deadline = time.monotonic() + timeout
        ok = True
        for writer in self.writers.values():
            ok = writer.drain(timeout=max(deadline - time.monotonic(), 0.5)) and ok
        return ok

    @property
    def inserted(self) -> int:
        return sum(w.inserted for w in self.writers.values())

    def backlog(self, now: Callable[[], float] = time.time) -> tuple[int, float]:
        """(spooled bytes not yet in the store, age in seconds of the oldest such record)."""
        total, oldest = 0, 0.0
        for directory, writer in self.writers.items():
            size, age = _backlog_of(directory, writer, now())
            total += size
            oldest = max(oldest, age)
        return total, oldest


def _backlog_of(directory: Path, writer: BatchWriter, now: float) -> tuple[int, float]:
    cp = writer.checkpoint
    segment, offset = cp.segment, cp.offset
    if cp.pending is not None:
        segment, offset = cp.pending[0], cp.pending[1]
    total = 0
    first: tuple[Path, int] | None = None
    for path in sorted(directory.glob("*.log")):
        if not path.stem.isdigit() or int(path.stem) < segment:
            continue
        try:
            size = os.path.getsize(path)
        except FileNotFoundError:
            continue
        start = offset if int(path.stem) == segment else 0
        if size > start:
            total += size - start
            first = first or (path, start)
    if first is None:
        return 0, 0.0
    return total, _age_of_line(first[0], first[1], now)


def _age_of_line(path: Path, offset: int, now: float) -> float:
    """How old the record starting at `offset` is (its created_at), 0 if it cannot be read yet."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            line = handle.readline(1 << 20)
        created = orjson.loads(line).get("created_at")
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return 0.0
    return max(now - created / 1000, 0.0) if isinstance(created, (int, float)) else 0.0
