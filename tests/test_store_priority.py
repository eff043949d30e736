"""The store process runs at idle CPU priority and is boosted only while its writers lag
(usagegate/store_priority.py); all of a gateway's processes share one session (one autogroup)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.servers import GatewayProcess, MockUpstream, create_key
from usagegate.proctree import pin


def policies(pid: int) -> set[tuple[int, int]]:
    """{(scheduling policy, nice)} over every thread of `pid`."""
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            tid = int(task.name)
            found.add((os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid)))
        except (ProcessLookupError, FileNotFoundError):
            continue
    return found


def send(gateway: GatewayProcess, key: str, count: int) -> list[str]:
    ids = []
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        for n in range(count):
            answer = client.post("/v1/chat/completions",
                                 json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"lag {n}"}]},
                                 headers={"Helicone-Auth": f"Bearer {key}", "Helicone-User-Id": "priority"})
            assert answer.status_code == 200
            ids.append(answer.headers["helicone-id"])
    return ids


def test_store_idles_and_is_boosted_while_its_writers_lag(tmp_path: Path, mock_upstream: MockUpstream) -> None:
    data_dir = tmp_path / "data"
    key = create_key(data_dir)
    gateway = GatewayProcess(data_dir, mock_upstream.url)
    try:
        store, proxy = gateway.store_pid, gateway.proxy_pid
        # One session for the supervisor and its workers: inside it the idle policy counts.
        assert os.getsid(store) == os.getsid(proxy) == os.getsid(gateway.proc.pid)
        assert {policy for policy, _ in policies(store)} == {os.SCHED_IDLE}
        assert all(policy == os.SCHED_OTHER for policy, _ in policies(proxy))

        # The store falls behind: frozen while the proxy answers and spools.
        os.kill(store, signal.SIGSTOP)
        try:
            ids = send(gateway, key, 5)
            time.sleep(2.0)
        finally:
            os.kill(store, signal.SIGCONT)
        seen: set[tuple[int, int]] = set()
        deadline = time.monotonic() + 10
        while (os.SCHED_OTHER, 10) not in seen and time.monotonic() < deadline:
            seen |= policies(store)
            time.sleep(0.01)
        assert (os.SCHED_OTHER, 10) in seen, seen
        assert gateway.wait_for_requests(key, len(ids), user_id="priority")
        # Caught up: back to idle.
        deadline = time.monotonic() + 10
        while {policy for policy, _ in policies(store)} != {os.SCHED_IDLE} and time.monotonic() < deadline:
            time.sleep(0.05)
        assert {policy for policy, _ in policies(store)} == {os.SCHED_IDLE}
    finally:
        gateway.stop()


PRIORITY_OF_A_STORE_PROCESS = (
    "import os\n"
    "from usagegate.store_priority import enter_idle\n"
    "idle = enter_idle()\n"
    "print(idle, os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0))\n"
)


def test_without_the_right_to_leave_idle_the_store_stays_at_nice_10() -> None:
    """Root in a default container, or any ordinary user, may enter SCHED_IDLE but not leave it:
    the store process then takes plain nice 10 rather than risk starving for good."""
    without = subprocess.run(["setpriv", "--inh-caps=-sys_nice", "--bounding-set=-sys_nice",
                              sys.executable, "-c", PRIORITY_OF_A_STORE_PROCESS],
                             capture_output=True, text=True, check=True)
    assert without.stdout.split() == ["False", str(os.SCHED_OTHER), "10"], without
    with_right = subprocess.run([sys.executable, "-c", PRIORITY_OF_A_STORE_PROCESS], capture_output=True, text=True, check=True)
    assert with_right.stdout.split() == ["True", str(os.SCHED_IDLE), "0"], with_right


BURNER = "import os, time\nos.sched_setaffinity(0, {0})\nend = time.monotonic() + 60\nwhile time.monotonic() < end: pass\n"


def test_an_analytics_query_on_a_busy_core_is_boosted_not_starved(tmp_path: Path, mock_upstream: MockUpstream) -> None:
    """An idle-priority query sharing its core with a busy normal-priority process would get
    ~0.3 % of it (seconds for a small page); after one check period the watch boosts it."""
    data_dir = tmp_path / "data"
    key = create_key(data_dir)
    gateway = GatewayProcess(data_dir, mock_upstream.url)
    burner = None
    try:
        send(gateway, key, 3)
        assert gateway.wait_for_requests(key, 3, user_id="priority")
        pin(gateway.store_pid, {0})
        burner = subprocess.Popen([sys.executable, "-c", BURNER])
        time.sleep(0.5)
        started = time.monotonic()
        page = gateway.api(key, "/api/users")
        elapsed = time.monotonic() - started
        assert page.status_code == 200 and page.json()["count"] == 1
        assert elapsed < 5.0, f"/api/users took {elapsed:.1f} s on a busy core"
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
        gateway.stop()
