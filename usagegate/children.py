"""Child servers for `usagegate demo` and `usagegate bench`: start one, wait until it answers, stop it.

Each child runs in its own process group so that a Ctrl-C in the terminal reaches only the parent,
which then stops the children in order (the gateway first, so it drains its spool while the mock is
still there). On Linux a child also gets SIGTERM if the parent dies without cleaning up.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from usagegate.errors import UsagegateError

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not glibc: the parent's finally-block cleanup is all we get


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0


def child_env() -> dict[str, str]:
    # The children get their settings from flags only, never from the caller's USAGEGATE_* env.
    env = {k: v for k, v in os.environ.items() if not k.startswith("USAGEGATE_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Child:
    """One server subprocess whose output goes to `log_path`."""

    def __init__(self, name: str, argv: list[str], log_path: Path, *, cpu: int | None = None) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if cpu is not None and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > cpu:
            argv = ["taskset", "-c", str(cpu), *argv] if _has_taskset() else argv
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=child_env(), process_group=0,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_http(self, url: str, timeout: float = 60.0) -> None:
        """Wait until GET `url` answers (any status); raises UsagegateError with the log tail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise UsagegateError(f"{self.name} exited with code {self.proc.returncode}:\n{self.log_tail()}")
            try:
                httpx.get(url, timeout=1.0)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise UsagegateError(f"{self.name} did not start within {timeout:g} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, wait up to `timeout` (the gateway drains its spool), then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def _has_taskset() -> bool:
    return any(os.access(os.path.join(d, "taskset"), os.X_OK) for d in os.environ.get("PATH", "").split(os.pathsep))


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
