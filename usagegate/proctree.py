"""The processes of a running `usagegate serve`, found from its supervisor's pid (Linux /proc).

`usagegate bench` pins the proxy worker and the store process to different cores with this, and
the tests use it to SIGKILL every process of a gateway at once.
"""

from __future__ import annotations

import os
from pathlib import Path


def children(pid: int) -> list[int]:
    """The pids whose parent is `pid`."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _stat(int(entry.name), 4) == str(pid):
            out.append(int(entry.name))
    return out


def gateway_processes(supervisor_pid: int) -> dict[int, int]:
    """{index: pid}: 0 is the store process, 1..N the proxy workers (see supervisor.py)."""
    found = {}
    for pid in children(supervisor_pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--index" in argv:
            found[int(argv[argv.index(b"--index") + 1])] = pid
    return found


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie left for a parent that never reaps it counts as gone)."""
    state = _stat(pid, 3)
    return state is not None and state != "Z"


def pin(pid: int, cpus: set[int]) -> None:
    """Move every thread of `pid` onto `cpus` (sched_setaffinity on a pid moves one thread only)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
        except (ProcessLookupError, FileNotFoundError):
            continue  # a thread that just ended


def cpu_seconds(pid: int | None, *, main_thread: bool = False) -> float:
    """User + system CPU of a process (all threads, or its main thread) so far (Linux /proc; 0 elsewhere)."""
    if pid is None:
        return 0.0
    try:
        stat = f"/proc/{pid}/task/{pid}/stat" if main_thread else f"/proc/{pid}/stat"
        fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stat(pid: int, field: int) -> str | None:
    """Field `field` (1-based as in proc(5); 3 = state, 4 = ppid) of /proc/<pid>/stat; None when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    rest = text.rsplit(")", 1)[1].split()
    return rest[field - 3]
