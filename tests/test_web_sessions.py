"""Dashboard sessions in a real config.db, and the dashboard's URL view (no browser needed)."""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from starlette.datastructures import QueryParams

from usagegate.config_db import ConfigDB
from usagegate.web.sessions import LIFETIME_S, close_session, find_session, open_session
from usagegate.web.view import BadView, View


@pytest.fixture
def db(tmp_path: Path) -> ConfigDB:
    return ConfigDB(tmp_path)


def test_a_session_stores_no_key_and_ends_at_sign_out(db: ConfigDB) -> None:
    key = db.create_key("acme")
    token = open_session(db.conn, key)
    assert token is not None and key not in token
    stored = db.conn.execute("SELECT * FROM web_sessions").fetchall()
    assert len(stored) == 1 and token not in repr(stored) and key not in repr(stored)
    session = find_session(db.conn, token)
    assert session is not None and session.org_id == db.org_id("acme") and len(session.csrf) >= 32
    close_session(db.conn, token)
    assert find_session(db.conn, token) is None


def test_wrong_revoked_and_expired(db: ConfigDB) -> None:
    assert open_session(db.conn, "ug_not-a-key") is None
    key = db.create_key("acme")
    token = open_session(db.conn, key, now=1000.0)
    assert token is not None
    assert find_session(db.conn, token, now=1000.0 + LIFETIME_S - 1) is not None
    assert find_session(db.conn, token, now=1000.0 + LIFETIME_S + 1) is None
    fresh = open_session(db.conn, key)
    assert fresh is not None and find_session(db.conn, fresh) is not None
    assert db.revoke_key(key)
    assert find_session(db.conn, fresh) is None  # revoking the key ends its sessions at once
    assert open_session(db.conn, key) is None


@pytest.mark.parametrize(("query", "start", "end"), [
    ("", datetime(2026, 2, 1, tzinfo=timezone.utc), datetime(2026, 3, 1, tzinfo=timezone.utc)),
    ("range=7d", datetime(2026, 2, 4, tzinfo=timezone.utc), datetime(2026, 2, 11, tzinfo=timezone.utc)),
    ("range=30d", datetime(2026, 1, 12, tzinfo=timezone.utc), datetime(2026, 2, 11, tzinfo=timezone.utc)),
    ("range=custom&start=2025-12-30&end=2026-01-02",
     datetime(2025, 12, 30, tzinfo=timezone.utc), datetime(2026, 1, 3, tzinfo=timezone.utc)),
], ids=["month", "7d", "30d", "custom-inclusive-end"])
def test_time_ranges(query: str, start: datetime, end: datetime) -> None:
    assert View.from_query(QueryParams(query), today=date(2026, 2, 10)).span() == (start, end)


def test_filters_round_trip_through_links() -> None:
    view = View.from_query(QueryParams("property.Plan=pro&pf=feature%3Dchat&model=gpt-4o&q=ali&sort=requests"),
                           today=date(2026, 2, 10))
    assert view.properties == (("plan", "pro"), ("feature", "chat"))
    again = View.from_query(QueryParams(view.url("/users").split("?", 1)[1]), today=date(2026, 2, 10))
    assert again == view
    assert "property.plan" not in view.without_property("/users", "plan", "pro")
    with pytest.raises(BadView):
        View.from_query(QueryParams("range=custom&start=2026-02-05&end=2026-02-01"))
