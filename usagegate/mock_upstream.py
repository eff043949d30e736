"""`python -m usagegate.mock_upstream --port N` (and `usagegate mock-upstream`): the mock upstream.

The code lives in the `usagegate.mock` package; its docstring lists the fault-injection headers.
"""

from __future__ import annotations

import sys

from usagegate.mock import MockUpstream, main, serve

__all__ = ["MockUpstream", "main", "serve"]

if __name__ == "__main__":
    main(sys.argv[1:])
