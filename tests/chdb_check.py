"""Checks that need chDB in a fresh process (one chDB data dir per process), run by the tests.

`python -m tests.chdb_check parse` reads a JSON list of SQL statements on stdin and prints a JSON
list: for each, null when ClickHouse's parser accepts it, else the parser's message.
`python -m tests.chdb_check server-insert <dir>` inserts one ingest batch into a fresh `requests`
table exactly as clickhouse-connect sends it to a server (its Arrow body, `FORMAT Arrow`), and
prints the stored row as JSON.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path


def parse() -> None:
    import chdb

    errors: list[str | None] = []
    for statement in json.load(sys.stdin):
        try:
            # As a parameter, so the {shard}/{replica} macros are not read as query parameters.
            # Parameter values are read in TSV escaping.
            escaped = statement.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
            chdb.query("SELECT formatQuery({q:String})", "TSVRaw", params={"q": escaped})
            errors.append(None)
        except Exception as exc:
            errors.append(str(exc))
    print(json.dumps(errors))


def server_insert(directory: Path) -> None:
    from chdb.session import Session
    from clickhouse_connect.driver.client import arrow_buffer

    from usagegate.ingest import to_arrow
    from usagegate.migrations import MIGRATIONS
    from usagegate.pricing import Pricer

    session = Session(str(directory / "store"))
    for _, statements in MIGRATIONS:  # the whole schema: ingest writes columns added by later steps
        for statement in statements:
            session.query(statement)
    record = {
        "request_id": str(uuid.uuid4()), "org_id": "org", "created_at": int(time.time() * 1000), "user_id": "u1",
        "provider": "openai", "model": "gpt-4o-mini", "request_model": "gpt-4o-mini", "path": "/v1/chat/completions",
        "status": 200, "prompt_tokens": 1000, "completion_tokens": 500, "properties": {"plan": "pro"}, "ttft_ms": None,
    }
    names, body = arrow_buffer(to_arrow([record], Pricer(), lambda org, model: None), None)
    path = directory / "batch.arrow"
    path.write_bytes(body)
    # The server parses an HTTP insert body with this same input format.
    session.query(f"INSERT INTO requests ({', '.join(names)}) FROM INFILE '{path}' FORMAT Arrow")
    rows = session.query("SELECT request_id, cost_usd, properties, ttft_ms FROM requests", "JSONEachRow")
    print(json.dumps({"sent": record["request_id"], "stored": json.loads(rows.bytes().decode())}))


if __name__ == "__main__":
    if sys.argv[1] == "parse":
        parse()
    else:
        server_insert(Path(sys.argv[2]))
