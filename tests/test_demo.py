"""`usagegate demo` end to end: a subprocess with a bounded duration, checked through the real API and SDK."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path

from openai import OpenAI

from tests.servers import PYTHON, GatewayProcess, _env, cli, free_port

KEY_LINE = re.compile(r"Your usagegate key:\s+(ug_\S+)")


def test_demo_records_many_users_and_shows_how_to_use_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    port = free_port()
    proc = subprocess.Popen(
        [PYTHON, "-m", "usagegate", "demo", "--duration", "6", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
    )
    assert proc.stdout is not None
    watchdog = threading.Timer(150, proc.kill)  # bounds every blocking read below
    watchdog.start()
    lines: list[str] = []
    key = None
    deadline = time.monotonic() + 120
    while key is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if match := KEY_LINE.search(line):
            key = match.group(1)
    assert key is not None, "".join(lines)

    # While the demo's live traffic runs, the printed instructions work with the real SDK.
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test", max_retries=0,
                    default_headers={"Helicone-Auth": f"Bearer {key}", "Helicone-User-Id": "sdk-user@example.com"})
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert reply.usage is not None and reply.usage.total_tokens > 0

    rest = proc.stdout.read()  # not communicate(): it would skip what readline() already buffered
    proc.wait(10)
    output = "".join(lines) + rest
    assert proc.returncode == 0, output
    assert "Users by cost (top 20 of 40)" in output
    assert "all users" in output and "enterprise" in output and "free" in output
    assert f'"Helicone-Auth": "Bearer {key}"' in output, output[-3000:]
    assert f'base_url="http://127.0.0.1:{port}/anthropic"' in output

    # The demo's gateway drained on exit: reopen the same data dir and count users through the API.
    watchdog.cancel()
    gateway = GatewayProcess(data_dir, "http://127.0.0.1:9")
    try:
        rows = gateway.wait_for_requests(key, 600, timeout=20)
        users = {row["user_id"] for row in rows}
        assert len(users) >= 40 and "sdk-user@example.com" in users
        plans = {row["properties"].get("plan") for row in rows}
        features = {row["properties"].get("feature") for row in rows}
        assert {"free", "pro", "enterprise"} <= plans
        assert {"chat", "search", "assistant", "summarize", "agent"} <= features
        assert {row["provider"] for row in rows} == {"openai", "anthropic"}
        assert any(row["stream"] for row in rows) and not all(row["stream"] for row in rows)
        assert any(row["status"] in (429, 500) for row in rows)
        assert sum(row["prompt_tokens"] for row in rows) > 50_000
    finally:
        gateway.stop()


def test_demo_refuses_to_wipe_a_directory_it_did_not_make(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    result = cli("demo", "--port", str(free_port()), "--duration", "1", data_dir=precious, check=False)
    assert result.returncode == 1
    assert "refusing to wipe" in result.stderr and "Traceback" not in result.stderr
    assert (precious / "notes.txt").read_text() == "keep me"
