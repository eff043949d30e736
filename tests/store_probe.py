"""Look inside a stopped gateway's chDB store from a separate process (one process per data dir).

`python -m tests.store_probe <data_dir>` prints JSON: for every MergeTree-family table, its engine,
whether it keeps a deduplication window, its row count and a fingerprint of its merged content
(aggregate states finalized, `FINAL` applied) — equal fingerprints mean equal data.
`python -m tests.store_probe <data_dir> <needle>` prints, per table, how many rows hold `needle` in
any column (as text): compressed column files hide it from a byte grep, queries do not.
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


def _holding(session: Any, table: str, needle: str) -> int:
    columns = json.loads(session.query(
        "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = {t:String}",
        "JSON", params={"t": table}).bytes())["data"]
    checks = " OR ".join(f"position(toString(`{c['name']}`), {{n:String}}) > 0" for c in columns)
    return int(session.query(f"SELECT count() FROM {table} WHERE {checks}", "CSV", params={"n": needle}).bytes())


def main(data_dir: str, needle: str | None = None) -> None:
    from chdb.session import Session

    session = Session(str(Path(data_dir) / "store"))
    tables = json.loads(session.query(
        "SELECT name, engine, create_table_query FROM system.tables "
        "WHERE database = currentDatabase() AND engine LIKE '%MergeTree'",
        "JSON").bytes())["data"]
    out: dict[str, Any] = {}
    for table in tables:
        if needle is not None:
            out[table["name"]] = _holding(session, table["name"], needle)
            continue
        if table["name"] == "schema_migrations":
            continue
        count, digest = _fingerprint(session, table["name"], table["engine"])
        out[table["name"]] = {
            "engine": table["engine"],
            "dedup_window": "non_replicated_deduplication_window" in table["create_table_query"],
            "fsync_parts": "fsync_after_insert = 1" in table["create_table_query"],
            "rows": count,
            "fingerprint": digest,
        }
    session.close()
    print(json.dumps(out))


def probe(data_dir: Path, needle: str | None = None) -> dict[str, Any]:
    """Run `main` in a subprocess (the test process must not hold the store open)."""
    args = [str(data_dir)] + ([needle] if needle is not None else [])
    done = subprocess.run([PYTHON, "-m", "tests.store_probe", *args], capture_output=True, text=True,
                          env=_env(), timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"store probe failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def files_holding(root: Path, needle: str) -> list[Path]:
    """Every file under `root` whose bytes contain `needle`."""
    raw = needle.encode()
    return [path for path in root.rglob("*") if path.is_file() and raw in path.read_bytes()]


def secret_traces(data_dir: Path, needle: str) -> dict[str, Any]:
    """Where `needle` survives in a stopped gateway's data dir: files (bytes) and store rows."""
    rows = {table: n for table, n in probe(data_dir, needle).items() if n}
    return {"files": [str(p) for p in files_holding(data_dir, needle)], "rows": rows}


if __name__ == "__main__":
    main(*sys.argv[1:3])
