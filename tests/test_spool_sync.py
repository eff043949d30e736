"""The spool's periodic fsync must not stall appends (they run on the proxy's event loop)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from usagegate import logpipe
from usagegate.logpipe import Spool


def test_append_proceeds_while_an_fsync_is_in_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path / "spool", fsync_interval=3600)  # only our explicit sync() runs
    spool.append({"n": 1})
    entered, release = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:  # a disk that takes its time (the real one: 3-9 ms here)
        entered.set()
        release.wait(10)
        real_fsync(fd)

    monkeypatch.setattr(logpipe.os, "fsync", slow_fsync)
    syncer = threading.Thread(target=spool.sync)
    syncer.start()
    try:
        assert entered.wait(5)
        started = time.monotonic()
        assert spool.append({"n": 2})
        assert time.monotonic() - started < 1.0
    finally:
        release.set()
        syncer.join(10)
    monkeypatch.setattr(logpipe.os, "fsync", real_fsync)
    spool.close()
    lines = (tmp_path / "spool" / "0000000001.log").read_bytes().splitlines()
    assert lines == [b'{"n":1}', b'{"n":2}']
