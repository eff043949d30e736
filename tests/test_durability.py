"""Nothing lost, nothing doubled (DESIGN §3): processes really killed, batches really replayed."""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx

from tests.load import PROVIDER_KEY, Load
from tests.servers import GatewayProcess, MockUpstream, create_key
from tests.store_probe import files_holding, probe, secret_traces

# uvicorn re-raises SIGTERM after its graceful shutdown, so a clean stop exits with -15.
CLEAN_EXIT = (0, -signal.SIGTERM)
ALL_TIME = {"from": "2000-01-01", "to": "2100-01-01"}


def recorded_rows(gateway: GatewayProcess, key: str) -> list[dict]:
    """Every request the API lists for the key's org (cursor pagination, 1000 a page)."""
    rows: list[dict] = []
    cursor = None
    for _ in range(100):
        params = {"limit": 1000, **ALL_TIME, **({"cursor": cursor} if cursor else {})}
        response = gateway.api(key, "/api/requests", **params)
        assert response.status_code == 200, response.text
        page = response.json()
        rows.extend(page["requests"])
        cursor = page["next_cursor"]
        if cursor is None:
            return rows
    raise AssertionError("pagination did not end")


def recorded_ids(gateway: GatewayProcess, key: str) -> list[str]:
    return [row["request_id"] for row in recorded_rows(gateway, key)]


def requests_per_user_from_rollups(gateway: GatewayProcess, key: str) -> dict[str, int]:
    """/api/users reads the per-user rollups (whole-day range: no raw-table edges)."""
    response = gateway.api(key, "/api/users", limit=1000, **ALL_TIME)
    assert response.status_code == 200, response.text
    return {user["user_id"]: user["requests"] for user in response.json()["users"]}


def wait_recorded(gateway: GatewayProcess, key: str, wanted: set[str], timeout: float = 20.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        ids = recorded_ids(gateway, key)
        if wanted <= set(ids) or time.monotonic() > deadline:
            return ids
        time.sleep(0.2)


def checkpoint(data_dir: Path) -> dict:
    path = data_dir / "spool" / "checkpoint.json"
    if not path.exists():
        # No batch had reached the store yet when the kill landed (the writer lets its first batch
        # grow for 0.5 s): everything spooled is past the (absent) checkpoint and is replayed.
        return {"pending": None}
    return json.loads(path.read_text())


def test_kill_9_under_load_records_every_answered_request_exactly_once(
    tmp_path: Path, mock_upstream: MockUpstream
) -> None:
    data_dir = tmp_path / "data"
    gateway = GatewayProcess(data_dir, mock_upstream.url)
    key = create_key(data_dir)
    rng = random.Random(5)
    answered: set[str] = set()
    attempted: set[str] = set()
    killed_with_pending = 0
    rounds = 4
    try:
        for n in range(rounds):
            load = Load(gateway.url, key, threads=8, max_requests=600).start()
            load.wait_answered(rng.randint(60, 250))
            time.sleep(rng.random() * 0.3)
            gateway.kill()  # SIGKILL mid-load: no drain, no flush, no goodbye
            result = load.stop()
            assert len(result.answered) >= 50, f"round {n}: the load never got going"
            answered |= result.answered
            attempted |= result.attempted
            killed_with_pending += checkpoint(data_dir)["pending"] is not None
            gateway.start()  # same data dir: replays the spool past the checkpoint
        ids = wait_recorded(gateway, key, answered)
        per_user_raw = Counter(row["user_id"] for row in recorded_rows(gateway, key))
        per_user_rollup = requests_per_user_from_rollups(gateway, key)
    finally:
        gateway.stop()
    counts = Counter(ids)
    doubled = {rid: c for rid, c in counts.items() if c > 1}
    missing = answered - set(ids)
    print(f"\nkill -9 x{rounds}: {len(answered)} answered, {len(attempted)} attempted, {len(ids)} recorded, "
          f"{killed_with_pending} kills landed with a batch in flight")
    assert not missing, f"{len(missing)} answered requests were lost"
    assert not doubled, f"{len(doubled)} requests recorded more than once"
    assert set(ids) <= attempted  # nothing invented
    assert per_user_rollup == dict(per_user_raw)  # the rollups too: exactly once

    # The provider key every request carried is nowhere: not in the spool, checkpoint, config,
    # chDB files or logs (bytes), nor in any store column (queried: bodies are compressed).
    assert secret_traces(data_dir, PROVIDER_KEY) == {"files": [], "rows": {}}
    assert not files_holding(tmp_path, PROVIDER_KEY)  # the gateway's log sits beside the data dir
    # Control: the same search does find what is stored, inside compressed bodies too.
    assert secret_traces(data_dir, "load 5")["rows"]["requests"] >= 1


def test_store_process_killed_under_load_the_proxy_keeps_answering(tmp_path: Path, mock_upstream: MockUpstream) -> None:
    # The proxy and the store are separate processes: kill -9 the store process mid-load and
    # not one proxied request fails; the supervisor restarts it and it stores every request once.
    data_dir = tmp_path / "data"
    gateway = GatewayProcess(data_dir, mock_upstream.url)
    key = create_key(data_dir)
    try:
        load = Load(gateway.url, key, threads=6, max_requests=500).start()
        load.wait_answered(80)
        store_pid = gateway.store_pid
        os.kill(store_pid, signal.SIGKILL)
        load.wait_answered(300)
        result = load.stop()
        assert result.failed == 0 and len(result.answered) == len(result.attempted) >= 300
        deadline = time.monotonic() + 60
        while gateway.processes().get(0, store_pid) == store_pid and time.monotonic() < deadline:
            time.sleep(0.1)
        assert gateway.processes()[0] != store_pid  # restarted by the supervisor
        while gateway.api(key, "/api/requests", limit=1).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.2)  # /api answers 503 until the new store process listens
        ids = wait_recorded(gateway, key, result.answered, timeout=60)
        per_user_raw = Counter(row["user_id"] for row in recorded_rows(gateway, key))
        per_user_rollup = requests_per_user_from_rollups(gateway, key)
    finally:
        gateway.stop()
    counts = Counter(ids)
    assert set(ids) == result.answered and max(counts.values()) == 1
    assert per_user_rollup == dict(per_user_raw)


def test_a_replayed_batch_adds_nothing_to_any_table(tmp_path: Path, mock_upstream: MockUpstream) -> None:
    data_dir = tmp_path / "data"
    gateway = GatewayProcess(data_dir, mock_upstream.url)
    key = create_key(data_dir)
    try:
        load = Load(gateway.url, key, threads=8, max_requests=60).start()
        load.wait_answered(60)
        answered = load.stop().answered
        assert len(answered) == 60
        assert set(wait_recorded(gateway, key, answered)) == answered
    finally:
        assert gateway.stop() in CLEAN_EXIT
    committed = checkpoint(data_dir)
    segment, start, end = committed["last"]
    assert committed["pending"] is None and committed["offset"] == end
    before = probe(data_dir)
    assert before["requests"]["rows"] == 60
    # Every table an insert reaches dedups replays and fsyncs its parts before the checkpoint moves.
    assert all(table["dedup_window"] and table["fsync_parts"] for table in before.values()), before
    segment_path = data_dir / "spool" / f"{segment:010d}.log"
    segment_bytes = segment_path.read_bytes()
    batch_lines = segment_bytes[start:end].count(b"\n")

    def crash_after_insert() -> None:
        # The state a kill -9 leaves between "batch inserted" and "checkpoint advanced".
        segment_path.write_bytes(segment_bytes)  # retired (deleted) once fully moved
        state = {**committed, "offset": start, "pending": [segment, start, end]}
        (data_dir / "spool" / "checkpoint.json").write_text(json.dumps(state))

    crash_after_insert()
    gateway.start()  # replays the pending batch with its dedup token
    assert gateway.stop() in CLEAN_EXIT
    replayed = checkpoint(data_dir)
    assert replayed["pending"] is None and replayed["last"] == [segment, start, end]
    after = probe(data_dir)
    print(f"\nreplayed a batch of {batch_lines} records; tables: { {t: v['rows'] for t, v in after.items()} }")
    assert after == before  # every table: same rows, same content

    # Control: the same replay under another spool id (another token) does double the batch,
    # so it is the dedup token, not luck, that kept the counts above.
    crash_after_insert()
    (data_dir / "spool" / "spool_id").write_text("another-spool")
    gateway.start()
    assert gateway.stop() in CLEAN_EXIT
    doubled = probe(data_dir)
    assert doubled["requests"]["rows"] == 60 + batch_lines
    assert all(doubled[t]["fingerprint"] != before[t]["fingerprint"] for t in before), "a table missed the replay"


def test_sigterm_drains_the_spool_before_exit(tmp_path: Path, mock_upstream: MockUpstream) -> None:
    data_dir = tmp_path / "data"
    gateway = GatewayProcess(data_dir, mock_upstream.url)
    key = create_key(data_dir)
    load = Load(gateway.url, key, threads=8, max_requests=2000).start()
    load.wait_answered(150)
    assert gateway.stop() in CLEAN_EXIT  # SIGTERM while the load still runs
    answered = load.stop().answered
    spool = data_dir / "spool"
    segments = sorted(spool.glob("*.log"))
    state = checkpoint(data_dir)
    # Everything spooled is in the store: the checkpoint sits at the end of the last segment.
    assert state["pending"] is None
    assert state["segment"] == int(segments[-1].stem) and state["offset"] == segments[-1].stat().st_size
    assert len(segments) == 1  # older, fully moved segments were retired
    gateway.start()
    try:
        ids = recorded_ids(gateway, key)
    finally:
        gateway.stop()
    assert answered <= set(ids) and len(ids) == len(set(ids))
    assert checkpoint(data_dir)["offset"] == 0 or checkpoint(data_dir)["segment"] > state["segment"]


def test_unwritable_spool_fails_health_and_refuses_then_recovers(tmp_path: Path, mock_upstream: MockUpstream) -> None:
    # Tests run as root, so chmod cannot stop a write; a file-size limit on the gateway process
    # (RLIMIT_FSIZE, Python ignores SIGXFSZ) makes every spool append fail with EFBIG instead.
    data_dir = tmp_path / "data"
    gateway = GatewayProcess(data_dir, mock_upstream.url)
    key = create_key(data_dir)
    pid = gateway.proxy_pid  # the process that spools
    try:
        first = chat(gateway, key)
        assert first.status_code == 200
        segment = sorted((data_dir / "spool").glob("*.log"))[-1]
        unlimited = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (segment.stat().st_size, unlimited[1]))

        # In flight when the disk refuses: answered, its record held in memory.
        held = chat(gateway, key)
        assert held.status_code == 200
        health = httpx.get(gateway.url + "/health")
        assert health.status_code == 503 and "spool" in health.json()["reason"]
        refused = chat(gateway, key)
        assert refused.status_code == 503
        assert "cannot write its request log" in refused.json()["error"]["message"]

        resource.prlimit(pid, resource.RLIMIT_FSIZE, unlimited)
        deadline = time.monotonic() + 10
        while httpx.get(gateway.url + "/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert httpx.get(gateway.url + "/health").status_code == 200
        after = chat(gateway, key)
        assert after.status_code == 200
        wanted = {r.headers["helicone-id"] for r in (first, held, after)}
        ids = wait_recorded(gateway, key, wanted)
        assert wanted <= set(ids) and refused.headers["helicone-id"] not in ids
    finally:
        gateway.stop()


def chat(gateway: GatewayProcess, key: str) -> httpx.Response:
    return httpx.post(gateway.url + "/v1/chat/completions", timeout=10,
                      json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "disk check"}]},
                      headers={"Helicone-Auth": f"Bearer {key}", "Helicone-Request-Id": str(uuid.uuid4())})
