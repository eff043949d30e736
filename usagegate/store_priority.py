"""The store process runs at idle CPU priority, and at a normal (niced) one only while it lags.

The proxy's requests come first where the proxy and the store share cores: an answer in flight
should not wait for a batch insert (~45 ms of chDB CPU twice a second) or an analytics query.

- **Idle (`SCHED_IDLE`)** is the one Linux policy whose threads a waking normal task preempts
  on wakeup; at nice 10 or 19 the running store thread may keep its time slice (1-4 ms here)
  before the proxy or a co-located upstream runs, which was most of the gateway's 1-connection
  p99. It is not strict: kernel work does not yield under `preempt=none`, and a picked idle
  thread can hold a core until the next tick (docs/performance.md).
- **Idle threads can starve** while every core is busy with proxy traffic. So a watchdog boosts the
  whole process back to `SCHED_OTHER` at nice 10 while the oldest record not yet in the store is
  older than `BOOST_AFTER_S`, or while an analytics query has been running for a check period,
  and drops back to idle once neither holds. Records stay visible within DESIGN's 2 s under
  normal load; under saturation records and queries get what they would at nice 10.

Policies are per thread on Linux, and threads inherit them at creation: `enter_idle()` runs
first thing in the store process (before chDB starts its pools), and each switch walks every
thread of the process.

Leaving idle needs `CAP_SYS_NICE` or a `RLIMIT_NICE` of 20 (an ordinary user, or root in a
default Docker container, has neither). Where a probe thread finds it cannot leave idle, the
store process stays at plain nice 10 instead: it may not starve with no way back.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("usagegate.store_priority")

NICENESS = 10
BOOST_AFTER_S = 1.5  # oldest record still to store: boost past this ...
IDLE_BELOW_S = 1.0  # ... and go back to idle once under this
CHECK_EVERY_S = 0.25


def supported() -> bool:
    return hasattr(os, "SCHED_IDLE") and Path("/proc/self/task").is_dir()


def _set_all(idle: bool) -> None:
    for task in Path("/proc/self/task").iterdir():
        tid = int(task.name)
        try:
            if idle:
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            else:
                os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
                os.setpriority(os.PRIO_PROCESS, tid, NICENESS)
        except (ProcessLookupError, PermissionError):
            continue  # a thread that just ended


def enter_idle() -> bool:
    """The store process's starting priority: idle where it can be undone, else nice 10.
    True when idle (then start a `PriorityWatch`)."""
    if supported() and _idle_is_reversible():
        _set_all(idle=True)
        return True
    os.nice(NICENESS)
    return False


def _idle_is_reversible() -> bool:
    """Whether a thread of ours may go idle and come back (tried on a throwaway thread)."""
    result: list[bool] = []

    def probe() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, name="store-priority-probe")
    thread.start()
    thread.join()
    return bool(result and result[0])


class PriorityWatch:
    """Boosts the store process while its writers lag or a query runs (see the module docstring)."""

    def __init__(self, backlog_age: Callable[[], float], querying: Callable[[], bool]) -> None:
        self._backlog_age = backlog_age
        self._querying = querying
        self.boosted = False
        self._was_querying = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="store-priority", daemon=True)

    def start(self) -> None:
        # Only where enter_idle() chose idle: boosting and then dropping a nice-10 process to
        # idle could leave it there for good.
        if supported() and os.sched_getscheduler(0) == os.SCHED_IDLE:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(CHECK_EVERY_S):
            try:
                age = self._backlog_age()
            except OSError as exc:  # a spool segment going away mid-read: look again next time
                log.debug("backlog age unavailable: %s", exc)
                continue
            querying = self._querying()
            # Seen at two checks in a row: queries have kept the store busy for a check period.
            long_query, self._was_querying = querying and self._was_querying, querying
            if not self.boosted and (age > BOOST_AFTER_S or long_query):
                _set_all(idle=False)
                self.boosted = True
                log.info("store writers %.1f s behind or a query running: store process at normal priority", age)
            elif self.boosted and age < IDLE_BELOW_S and not querying:
                _set_all(idle=True)
                self.boosted = False
