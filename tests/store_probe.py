"""Look inside a stopped gateway's chDB store from a separate process (one process per data dir).

`python -m tests.store_probe <data_dir>` prints JSON: for every MergeTree-family table, its engine,
whether it keeps a deduplication window, its row count and a fingerprint of its merged content
(aggregate states finalized, `FINAL` applied) — equal fingerprints mean equal data.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.servers import PYTHON, _env


def _fingerprint(session: Any, table: str, engine: str) -> tuple[int, str]:
    columns = json.loads(session.query(
        "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = {t:String} "
        "ORDER BY position", "JSON", params={"t": table}).bytes())["data"]
    exprs = []
    for col in columns:
        name = f"`{col['name']}`"
        if col["type"].startswith("AggregateFunction(quantile"):
            # Approximate states (t-digest) may round differently after another merge order.
            exprs.append(f"round(finalizeAggregation({name}), 3)")
        elif col["type"].startswith("AggregateFunction"):
            exprs.append(f"finalizeAggregation({name})")
        else:
            exprs.append(name)
    final = " FINAL" if engine != "MergeTree" else ""
    sql = (f"SELECT count(), sum(cityHash64(toString(tuple({', '.join(exprs)})))) FROM {table}{final}")
    count, digest = session.query(sql, "CSV").bytes().decode().strip().split(",")
    return int(count), digest


def main(data_dir: str) -> None:
    from chdb.session import Session

    session = Session(str(Path(data_dir) / "store"))
    tables = json.loads(session.query(
        "SELECT name, engine, create_table_query FROM system.tables "
        "WHERE database = currentDatabase() AND engine LIKE '%MergeTree' AND name != 'schema_migrations'",
        "JSON").bytes())["data"]
    out = {}
    for table in tables:
        count, digest = _fingerprint(session, table["name"], table["engine"])
        out[table["name"]] = {
            "engine": table["engine"],
            "dedup_window": "non_replicated_deduplication_window" in table["create_table_query"],
            "rows": count,
            "fingerprint": digest,
        }
    session.close()
    print(json.dumps(out))


def probe(data_dir: Path) -> dict[str, dict[str, Any]]:
    """Run `main` in a subprocess (the test process must not hold the store open)."""
    done = subprocess.run([PYTHON, "-m", "tests.store_probe", str(data_dir)], capture_output=True, text=True,
                          env=_env(), timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"store probe failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


if __name__ == "__main__":
    main(sys.argv[1])
