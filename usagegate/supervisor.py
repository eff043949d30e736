"""`usagegate serve [--workers N]`: start, watch and stop the gateway's processes.

Process 0 owns the store: it moves every proxy worker's spool into the store and serves
analytics and the dashboard, on its Unix socket only. Proxy workers 1..N share the TCP port and
answer /health once the store process answers too. The proxy never runs store work itself: a chDB
insert and the Arrow conversion before it took the proxy's core and GIL for tens of ms every
flush, which was most of its p99 (docs/performance.md).

On SIGTERM/SIGINT the proxy workers stop first (each finishes its in-flight requests and closes
its spool), then the store process, which drains every spool into the store before it exits — so
a clean stop leaves nothing behind. A process that dies is restarted (a proxy's spool is still
there; the store process picks it up).
"""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import sys
import time
from types import FrameType

import httpx

from usagegate.errors import UsagegateError
from usagegate.owner_link import socket_path
from usagegate.settings import Settings, settings_to_json

log = logging.getLogger("usagegate.supervisor")

STARTUP_TIMEOUT = 180.0
MAX_RESTARTS = 5  # per worker within RESTART_WINDOW; more means it cannot run: give up
RESTART_WINDOW = 60.0


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._restarts: dict[int, list[float]] = {}
        self._stopping = False

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "usagegate", "worker", "--index", str(index),
                "--settings", settings_to_json(self.settings)]
        # Own process group: a terminal's Ctrl-C reaches only us, and we stop the workers in order.
        # Same session as ours, so all of the gateway's processes share one scheduling group
        # (autogroup), inside which the store process's idle priority counts (serving.py).
        proc = subprocess.Popen(argv, process_group=0, preexec_fn=_die_with_parent)
        self.procs[index] = proc
        return proc

    def _wait_owner(self) -> None:
        path = socket_path(self.settings.data_dir, 0)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), timeout=2) as client:
            while time.monotonic() < deadline:
                if self.procs[0].poll() is not None:
                    raise UsagegateError(f"the store process exited with code {self.procs[0].returncode}.")
                try:
                    if client.get("http://owner/health").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        raise UsagegateError(f"the store process did not become ready within {STARTUP_TIMEOUT:.0f} s.")

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def run(self) -> int:
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.WARNING, format="usagegate: %(message)s")
        if self.settings.workers > 1 and not self.settings.redis_url:
            log.warning("%d workers without --redis: each worker enforces limits and budgets on its own traffic "
                        "(see docs/scaling.md)", self.settings.workers)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            # All at once: each proxy worker waits for the store process before it reports
            # healthy, and we fail fast here if the store process cannot start at all.
            for index in range(self.settings.workers + 1):
                self._spawn(index)
            self._wait_owner()
            while not self._stopping:
                time.sleep(0.2)
                self._watch()
        finally:
            self.stop()
        return 0

    def _watch(self) -> None:
        for index, proc in list(self.procs.items()):
            if proc.poll() is None or self._stopping:
                continue
            now = time.monotonic()
            recent = [t for t in self._restarts.get(index, []) if now - t < RESTART_WINDOW] + [now]
            self._restarts[index] = recent
            if len(recent) > MAX_RESTARTS:
                raise UsagegateError(f"worker {index} keeps exiting (code {proc.returncode}); stopping.")
            log.error("%s exited with code %s; restarting it", "the store process" if index == 0 else f"worker {index}",
                      proc.returncode)
            self._spawn(index)

    def stop(self) -> None:
        """Stop the proxy workers, then the store process (which drains every spool)."""
        self._stopping = True
        others = [p for i, p in self.procs.items() if i != 0]
        for group in (others, [self.procs[0]] if 0 in self.procs else []):
            for proc in group:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in group:
                try:
                    proc.wait(120)
                except subprocess.TimeoutExpired:
                    log.error("worker pid %d did not stop in 120 s; killing it", proc.pid)
                    proc.kill()
                    proc.wait(10)


def _die_with_parent() -> None:  # in the child between fork and exec: SIGTERM if we die
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
