"""The log pipeline: `Spool` (append-only segment files) and `BatchWriter` (spool → store).

Durability contract (DESIGN §3, docs/reliability.md):
- `Spool.append` does one `write(2)` of a whole JSON line before the response's last byte, so a
  `kill -9` of the gateway after that point cannot lose the record (the page cache survives the
  process); `fsync` runs on a short interval (`fsync_interval`) to survive machine crashes too.
- `BatchWriter` reads complete lines past its checkpoint, writes its *intent* (segment, start,
  end) to the checkpoint file, inserts that exact range with the deterministic dedup token
  `"<spool id>:<segment>:<start>:<end>"`, then advances the checkpoint. After a crash the pending range is
  replayed with the same token, so the store (raw table and every rollup) ignores the duplicate.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from usagegate.flock import is_flocked

log = logging.getLogger("usagegate.logpipe")

SEGMENT_BYTES = 64 * 1024 * 1024
MAX_BATCH_BYTES = 16 * 1024 * 1024
# Records held in memory while the disk refuses writes (about 10 s of heavy traffic).
MAX_BACKLOG = 50_000


def _segment_name(number: int) -> str:
    return f"{number:010d}.log"


def segment_is_live(path: Path) -> bool:
    """True while some process's Spool holds the segment open for appending."""
    return is_flocked(path)


def _segments(directory: Path) -> list[int]:
    return sorted(int(p.stem) for p in directory.glob("*.log") if p.stem.isdigit())


class Spool:
    """Append-only record log in `<data_dir>/spool`, one JSON object a line.

    When the disk refuses a write (full, quota, I/O error), the line is kept in a bounded memory
    backlog, `healthy` turns False (the gateway then refuses new proxy requests with 503 and
    `/health` answers 503), and the fsync thread retries the backlog every `fsync_interval` until
    the disk takes it again; then `healthy` turns True. A record that got a 2xx answer while the
    disk was failing is therefore durable only once the backlog is written (docs/reliability.md).
    """

    def __init__(self, directory: Path, *, fsync_interval: float = 0.2, max_backlog: int = MAX_BACKLOG) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        existing = _segments(directory)
        # A new process never appends to an old segment: a torn last line stays isolated there.
        self._number = (existing[-1] + 1) if existing else 1
        self._fd = self._open(self._number)
        self._size = 0
        self._dirty = False
        self._lock = threading.Lock()
        self._backlog: deque[bytes] = deque()
        self._max_backlog = max_backlog
        self._closed = False
        self.healthy = True
        self.last_error = ""
        self.appended = 0
        self.dropped = 0
        self._fsync_interval = fsync_interval
        self._stop = threading.Event()
        self._fsyncer = threading.Thread(target=self._fsync_loop, name="spool-fsync", daemon=True)
        self._fsyncer.start()

    def _open(self, number: int) -> int:
        fd = os.open(self.directory / _segment_name(number), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        _fsync_dir(self.directory)  # the new file's name must survive a power cut too
        # Marks the segment live: the writer never retires or skips past a locked segment, and
        # the kernel drops the lock when this process dies (kill -9 included).
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd

    @property
    def backlog(self) -> int:
        return len(self._backlog)

    def append(self, record: dict[str, Any]) -> bool:
        """Write one record (one `write(2)`); False when it could only be kept in memory for now."""
        line = orjson.dumps(record) + b"\n"
        with self._lock:
            if self._closed:
                self.dropped += 1
                log.error("record %s arrived after the spool closed; it is lost", record.get("request_id"))
                return False
            self._backlog.append(line)
            if len(self._backlog) > self._max_backlog:
                self._backlog.popleft()
                self.dropped += 1
                log.error("spool backlog full (%d records): dropped the oldest record", self._max_backlog)
            return self._write_backlog()

    def _write_backlog(self) -> bool:
        """Write queued lines in order; on the first failure keep the rest. Caller holds the lock."""
        while self._backlog:
            line = self._backlog[0]
            try:
                if self._size + len(line) > SEGMENT_BYTES and self._size > 0:
                    self._roll()
                written = os.write(self._fd, line)
                if written != len(line):
                    # A torn line would glue itself to the next one: cut it off again.
                    os.ftruncate(self._fd, self._size)
                    raise OSError(f"short write to spool ({written} of {len(line)} bytes)")
            except OSError as exc:
                if self.healthy:
                    log.error("spool write failed, holding records in memory: %s", exc)
                self.healthy = False
                self.last_error = str(exc)
                return False
            self._backlog.popleft()
            self._size += written
            self._dirty = True
            self.appended += 1
        if not self.healthy:
            log.warning("spool writable again; backlog written")
        self.healthy = True
        return True

    def _roll(self) -> None:
        os.fsync(self._fd)
        # Open the next segment before closing this one, so a failure leaves a usable fd.
        fd = self._open(self._number + 1)
        os.close(self._fd)
        self._fd, self._number, self._size = fd, self._number + 1, 0

    def probe(self) -> bool:
        """Whether the spool takes writes: appends succeed and a file can be created (for /health)."""
        path = self.directory / ".probe"
        try:
            with open(path, "wb") as handle:
                handle.write(b"ok")
            path.unlink()
        except OSError as exc:
            self.last_error = str(exc)
            return False
        return self.healthy

    def sync(self) -> None:
        """fsync the current segment if anything was written since the last sync; retry the backlog."""
        with self._lock:
            if self._closed:
                return
            if self._backlog:
                self._write_backlog()
            if not self._dirty:
                return
            # fsync a duplicate descriptor *outside* the lock: `append` takes this lock on the event
            # loop, and an fsync here takes 3-9 ms, which every request arriving meanwhile waited
            # out (bench p99). The duplicate stays valid even if `_roll` closes the original.
            fd = os.dup(self._fd)
            self._dirty = False
        try:
            os.fsync(fd)
        except OSError as exc:
            with self._lock:
                self._dirty = True
                self.healthy = False
                self.last_error = str(exc)
            raise
        finally:
            os.close(fd)
        with self._lock:
            if not self._backlog:
                self.healthy = True

    def _fsync_loop(self) -> None:
        while not self._stop.wait(self._fsync_interval):
            try:
                self.sync()
            except OSError as exc:
                log.error("spool fsync failed: %s", exc)

    def close(self) -> None:
        """Stop the fsync thread, write what can be written, fsync, close. Later appends are refused."""
        self._stop.set()
        self._fsyncer.join(timeout=5)
        with self._lock:
            if self._closed:
                return
            self._write_backlog()
            if self._backlog:
                log.error("%d spooled records could not be written before exit; they are lost", len(self._backlog))
            try:
                os.fsync(self._fd)
            except OSError as exc:
                log.error("spool fsync failed at close: %s", exc)
            os.close(self._fd)
            self._closed = True


@dataclass
class Checkpoint:
    """Where the writer is: everything before (segment, offset) is in the store.

    `pending` is the range being inserted (written *before* the insert: after a crash it is
    replayed with the same dedup token); `last` is the last range committed, kept for operators
    (and the replay test, which puts it back as `pending` to re-enact a crash after an insert).
    """

    segment: int = 0
    offset: int = 0
    pending: tuple[int, int, int] | None = None  # (segment, start, end) being inserted
    last: tuple[int, int, int] | None = None  # the last (segment, start, end) committed

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        try:
            data = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return cls()
        pending = tuple(data["pending"]) if data.get("pending") else None
        last = tuple(data["last"]) if data.get("last") else None
        return cls(int(data["segment"]), int(data["offset"]), pending, last)  # type: ignore[arg-type]

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as handle:
            handle.write(orjson.dumps(
                {"segment": self.segment, "offset": self.offset, "pending": self.pending, "last": self.last}
            ))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        # Without this a power cut can undo the rename: a lost pending intent would let the next
        # range be cut differently, under a new token, and double an insert that did land.
        _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _spool_id(directory: Path) -> str:
    """A random id per spool directory, made once: part of every dedup token, so two spools
    (two machines on one ClickHouse, or a spool directory recreated from scratch) whose segment
    numbers and offsets coincide never have each other's batches deduplicated away."""
    path = directory / "spool_id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    value = uuid.uuid4().hex[:16]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as handle:
        handle.write(value)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(directory)
    return value


# insert(records, token) must be idempotent per token; it raises to ask for a retry.
InsertFn = Callable[[list[dict[str, Any]], str], None]


class BatchWriter:
    """Moves spool lines into the store on its own thread; see the module docstring."""

    def __init__(self, directory: Path, insert: InsertFn, *, interval: float = 0.2) -> None:
        self.directory = directory
        self._insert = insert
        self._interval = interval
        # Set when the last batch stopped short of what is waiting (the batch cap, a newer
        # segment, a replayed range): the next batch then goes at once instead of after a pause.
        self._more_waiting = False
        self._checkpoint_path = directory / "checkpoint.json"
        self.checkpoint = Checkpoint.load(self._checkpoint_path)
        self.spool_id = _spool_id(directory)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.inserted = 0
        self.last_error = ""
        self.failing_since: float | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="batch-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = self._interval
        while not self._stop.is_set():
            try:
                self.drain_once()
                self.failing_since = None
                backoff = self._interval
                if not self._more_waiting:
                    # Let the batch grow for a full interval: each insert has a fixed cost (a new part
                    # in the raw table and every rollup, later merges) that, paid 5 times a second,
                    # took the mock's and load generator's core often enough to double the
                    # gateway's p99 at one connection (bench A/B: 0.2 s vs 1 s vs 3 s intervals).
                    self._stop.wait(self._interval)
            except Exception as exc:  # the store is down or refused: keep the spool, retry
                self.last_error = str(exc)
                if self.failing_since is None:
                    self.failing_since = time.time()
                log.warning("store insert failed, will retry in %.1fs: %s", backoff, exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def drain_once(self) -> int:
        """Insert the pending range or the next batch; returns records moved (0 = nothing to do)."""
        cp = self.checkpoint
        if cp.pending is None:
            batch = self._next_range()
            if batch is None:
                self._more_waiting = False
                return 0
            cp.pending = batch
            cp.save(self._checkpoint_path)
        else:
            self._more_waiting = True  # a replay after a crash: more is likely waiting behind it
        segment, start, end = cp.pending
        records = self._read(segment, start, end)
        if records:
            self._insert(records, f"{self.spool_id}:{segment}:{start}:{end}")
        cp.segment, cp.offset, cp.pending, cp.last = segment, end, None, (segment, start, end)
        cp.save(self._checkpoint_path)
        self.inserted += len(records)
        return max(len(records), 1)

    def _next_range(self) -> tuple[int, int, int] | None:
        cp = self.checkpoint
        segments = [n for n in _segments(self.directory) if n >= cp.segment]
        for number in segments:
            start = cp.offset if number == cp.segment else 0
            path = self.directory / _segment_name(number)
            with open(path, "rb") as handle:
                handle.seek(start)
                chunk = handle.read(MAX_BATCH_BYTES)
            end = chunk.rfind(b"\n") + 1
            if end > 0:
                self._more_waiting = len(chunk) == MAX_BATCH_BYTES or number != segments[-1]
                return (number, start, start + end)
            if number != segments[-1]:
                if segment_is_live(path):
                    # A running spool still appends here; a newer segment (history written by
                    # hand, another process) must wait, or this one's next records would be skipped.
                    return None
                # Fully consumed older segment (any torn tail was never acknowledged): drop it.
                self._retire(number)
                continue
            return None
        return None

    def _retire(self, number: int) -> None:
        try:
            (self.directory / _segment_name(number)).unlink()
        except FileNotFoundError:
            pass
        nxt = [n for n in _segments(self.directory) if n > number]
        if nxt:
            self.checkpoint.segment, self.checkpoint.offset = nxt[0], 0
            self.checkpoint.save(self._checkpoint_path)

    def _read(self, segment: int, start: int, end: int) -> list[dict[str, Any]]:
        try:
            with open(self.directory / _segment_name(segment), "rb") as handle:
                handle.seek(start)
                data = handle.read(end - start)
        except FileNotFoundError:
            # Deleted by hand: retrying forever would stop every later batch too.
            log.error("spool segment %d is gone; its range %d-%d cannot be replayed", segment, start, end)
            return []
        records = []
        for line in data.split(b"\n"):
            if line:
                try:
                    records.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    log.error("skipping a corrupt spool line in segment %d", segment)
        return records

    def drain(self, timeout: float = 30.0) -> bool:
        """Move everything currently spooled; True when the spool is empty (used on SIGTERM).

        Call after `stop()`: two threads moving the same range would race on the checkpoint.
        """
        if self._thread is not None and self._thread.is_alive():
            log.error("the batch writer is still busy; not draining beside it")
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.drain_once() == 0:
                    return True
            except Exception as exc:
                self.last_error = str(exc)
                time.sleep(0.2)
        return False

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
