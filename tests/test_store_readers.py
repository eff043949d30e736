"""Concurrent selects on the embedded store's reader sessions (usagegate/store.py) answer exactly
what one-at-a-time selects on the store thread answer, while the store thread keeps inserting."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.servers import PYTHON, _env


@pytest.fixture(scope="module")
def readers_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("readers")
    done = subprocess.run([PYTHON, "-m", "tests.chdb_check", "readers", str(directory)], capture_output=True,
                          text=True, timeout=300, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_concurrent_reads_equal_serial_reads(readers_run: dict[str, Any]) -> None:
    out = readers_run
    # Selects (distinct parameters per query) and whole analytics answers, at least three concurrent rounds.
    assert out["queries"] == 129 and out["calls"] == 19 and out["nonempty"] == 129 and out["rounds"] >= 3
    assert out["mismatches"] == 0
    assert out["reader_sessions"] == out["readers"] >= 2  # the pool's own sessions did the reading
    # The store thread's inserts went on meanwhile and readers see them once they returned.
    assert out["other_inserted"] == 4000 and out["other_stored"] == 4000 and out["other_seen_by_reader"] == 4000
    # Freed memory went back to the OS while idle (SYSTEM JEMALLOC PURGE), answers unchanged around it.
    assert out["memory_releases"] >= 2
    # Closing the store closed every session: the data dir opens again with everything in it.
    assert out["count"] == 34_000 and out["count_after_reopen"] == 34_000


def test_rollups_force_merges_of_old_parts(readers_run: dict[str, Any]) -> None:
    # Migration 0007: unmerged rollup parts cost every read, so old ones are merged (monthly most often).
    assert readers_run["force_merge"] == {"user_monthly": "600", "user_daily": "3600", "user_hourly": "10800"}
