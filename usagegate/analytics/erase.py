"""Erasing a user (privacy requests) and rebuilding users' rollup rows after in-place updates."""

from __future__ import annotations

from collections.abc import Sequence

from usagegate.migrations import rollup_rebuild_statements
from usagegate.store import Store


async def delete_user(store: Store, org: str, user_id: str) -> int:
    """Erase a user's records (bodies included) and rollup rows; returns the records removed."""
    params = {"org": org, "user": user_id}
    rows = await store.query(
        "SELECT count() AS n FROM requests WHERE org_id = {org:String} AND user_id = {user:String}", params
    )
    for table in ("requests", "user_hourly", "user_daily", "user_monthly"):
        # Synchronous mutation: once the API answers, the data is gone from every table.
        await store.acall(
            store.command,
            f"ALTER TABLE {table} DELETE WHERE org_id = {{org:String}} AND user_id = {{user:String}} "
            "SETTINGS mutations_sync = 2",
            params,
        )
    return int(rows[0]["n"]) if rows else 0


def rebuild_user_rollups(store: Store, org: str, user_ids: Sequence[str]) -> None:
    """Recompute `user_ids`' rollup rows from the raw table (after an in-place cost update).
    Call on the store thread, where inserts also run, so no batch lands in between."""
    if user_ids:
        where = "org_id = {org:String} AND user_id IN {users:Array(String)}"
        for statement in rollup_rebuild_statements(where):
            store.command(statement, {"org": org, "users": list(user_ids)})
