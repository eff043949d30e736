"""Hold an embedded store's lock from another process, as a second gateway on the same data dir would.

`python -m tests.store_locker <store dir>` opens chDB there, prints "holding", and keeps the
lock until stdin closes (the test closes it to end the outage).
"""

from __future__ import annotations

import sys

from chdb.session import Session


def main() -> None:
    session = Session(sys.argv[1])
    session.query("SELECT 1")
    print("holding", flush=True)
    sys.stdin.read()
    session.close()


if __name__ == "__main__":
    main()
