"""Whether another open file description holds an exclusive `flock` on a path.

Used to see a live spool segment (logpipe) and chDB's data-dir lock (store) without taking
either: the probe lock, if we got it, is released when the probe descriptor closes.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def is_flocked(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
