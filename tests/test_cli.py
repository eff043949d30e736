"""The CLI answers bad input with a message and an exit code, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "usagegate", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "args, code, words",
    [
        (("serve", "--port", "notaport"), 2, "--port"),
        (("keys", "create"), 2, "--org"),
        (("nosuch",), 2, "No such command"),
        (("users", "--url", "http://127.0.0.1:1", "--key", "x"), 1, "Cannot reach the gateway"),
        (("export", "--format", "xml", "--key", "x", "-o", "/tmp/x.out"), 1, "--format must be csv or parquet"),
    ],
    ids=["bad-int", "missing-option", "unknown-command", "no-gateway", "bad-choice"],
)
def test_bad_cli_input_is_a_message(args: tuple[str, ...], code: int, words: str) -> None:
    result = _run(*args)
    assert result.returncode == code, result.stderr
    assert words in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_keys_revoke_unknown_is_a_message(tmp_path: Path) -> None:
    result = _run("keys", "revoke", "key_nope", "--data-dir", str(tmp_path))
    assert result.returncode == 1 and "No active key" in result.stderr and "Traceback" not in result.stderr


def test_help_everywhere() -> None:
    for args in ((), ("serve",), ("keys",), ("users",), ("demo",), ("bench",)):
        result = _run(*args, "--help")
        assert result.returncode == 0 and "Usage" in result.stdout, args
