"""create_app(settings): the store process's ASGI app — /api, the dashboard, /metrics.

It runs in process 0 of `usagegate serve` (supervisor.py) and is reached through the proxy
workers, which relay every non-proxy request over its Unix socket. The lifespan opens the config
store, the log store and one batch writer per spool, and on shutdown (SIGTERM, after the proxy
workers have stopped) drains every spool into the store before exiting (DESIGN §3).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

import orjson

from usagegate import api, metrics, web
from usagegate.config_db import ConfigDB, KeyRing
from usagegate.context import AppContext
from usagegate.gateway import Receive, Scope, Send
from usagegate.alert_evaluator import AlertEvaluator
from usagegate.api.params import ch_time
from usagegate.ingest import Ingest
from usagegate.errors import StoreUnavailable
from usagegate.owner_link import OwnerLink, is_internal
from usagegate.price_overrides import PriceOverrides
from usagegate.pricing import Pricer
from usagegate.settings import Settings
from usagegate.store import Store
from usagegate import worker_routes
from usagegate.logpipe import Spool
from usagegate.store_priority import PriorityWatch
from usagegate.writers import WriterSet, store_spool_dir

log = logging.getLogger("usagegate")


class UsagegateApp:
    """The store process's ASGI entry point: FastAPI for /api and the dashboard, plus the
    internal routes the proxy workers call."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ctx: AppContext | None = None
        self._spent: Any = None
        self._links = OwnerLink(settings.data_dir)  # to the proxy workers, for /metrics
        self.api = FastAPI(title="usagegate", version="0.1.0",
                           lifespan=self._lifespan)
        api.install_error_handlers(self.api)
        for router in api.ROUTERS:
            self.api.include_router(router)
        self.api.add_api_route("/health", self._health, methods=["GET"], include_in_schema=True)
        web.install(self.api)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/metrics":
            await self._metrics(send)
            return
        if scope["type"] == "http" and scope["path"].startswith("/_worker/") and is_internal(scope):
            await worker_routes.handle(scope, send, spent=self._spent, metrics=self._local_metrics)
            return
        await self.api(scope, receive, send)  # type: ignore[arg-type]  # our ASGI aliases use dict

    async def notify_proxies(self) -> None:
        """Have every proxy worker re-read keys, limits and prices now (the API just changed them)."""
        for index in range(1, self.settings.workers + 1):
            try:
                await self._links.get(index, "/_worker/refresh")
            except StoreUnavailable:
                continue  # a worker restarting reads everything when it starts

    async def _local_metrics(self) -> bytes:
        return metrics.local_json(None, None)  # no proxy traffic here

    async def _metrics(self, send: Send) -> None:
        """One page for the gateway: each proxy worker's counters plus the store's."""
        workers: dict[str, dict[str, Any]] = {}
        for index in range(1, self.settings.workers + 1):
            try:
                workers[str(index)] = orjson.loads(await self._links.get(index, "/_worker/metrics"))
            except StoreUnavailable:
                continue  # a worker restarting: its series reappear on the next scrape
        writers = self.api.state.writers
        spool_bytes, lag = await asyncio.to_thread(writers.backlog)
        store = self.ctx.store if self.ctx else None
        body = metrics.render(workers, spool_bytes=spool_bytes, writer_lag=lag, inserted=writers.inserted,
                              store_up=bool(store and store.ready))
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/plain; version=0.0.4; charset=utf-8"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _health(self, request: Request) -> JSONResponse:
        # The proxy workers answer /health on the port (their spool is what takes requests);
        # this one is what they and the supervisor ask over the socket: is the store process up.
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        config = ConfigDB(settings.data_dir)
        keyring = KeyRing(config)
        store = Store.open(settings.store, settings.data_dir, body_ttl_days=settings.body_ttl_days)
        # Records that arrive here (POST /api/import) are spooled like proxied ones, in a spool of
        # this process's own that the writers below pick up with the proxies' spools.
        spool = Spool(store_spool_dir(settings.data_dir), fsync_interval=settings.fsync_interval)
        # This process owns the store: it writes every spool in the data dir (usagegate/writers.py).
        writers = WriterSet(settings.data_dir, Ingest(store, Pricer(), PriceOverrides(settings.data_dir)),
                            workers=settings.workers, interval=settings.flush_interval)
        # Replay what a previous run left in the spools before serving, so budgets see it
        # (unless the store is down: then the proxies serve and the writers catch up later).
        if store.ready:
            writers.drain(timeout=60)
        writers.start()
        priority = PriorityWatch(lambda: writers.backlog()[1], lambda: store.reads_in_flight > 0)
        priority.start()
        app.state.writers = writers
        app.state.notify_proxies = self.notify_proxies
        self.ctx = AppContext(settings, config, keyring, spool, store, writers)
        app.state.ctx = self.ctx
        self._spent = _spent_loader(store)
        refresher = asyncio.create_task(self._refresh(keyring))
        evaluator = AlertEvaluator(settings, store)
        evaluator.start()
        # chDB, pyarrow and FastAPI leave ~150k long-lived objects that every full collection
        # would walk: freeze what exists at start.
        gc.freeze()
        try:
            yield
        finally:
            refresher.cancel()
            priority.stop()
            await evaluator.stop()
            writers.stop()
            spool.close()
            if not writers.drain(timeout=60 if store.ready else 3):
                log.error("could not drain the spool before exit; it will be replayed on next start")
            await self._links.close()
            store.close()
            config.close()

    async def _refresh(self, keyring: KeyRing) -> None:
        # Keys created or revoked by the CLI take effect on /api within a second.
        while True:
            await asyncio.sleep(0.5)
            keyring.refresh()


def _spent_loader(store: Store) -> Any:
    async def spent(org_id: str, user_id: str, start: datetime, end: datetime) -> Decimal:
        rows = await store.query(
            "SELECT toString(sum(ifNull(cost_usd, 0))) AS spent FROM requests WHERE org_id = {org:String} "
            "AND user_id = {user:String} AND created_at >= {a:DateTime64(3)} AND created_at < {b:DateTime64(3)}",
            {"org": org_id, "user": user_id, "a": ch_time(start), "b": ch_time(end)},
        )
        return Decimal(rows[0]["spent"]) if rows else Decimal(0)

    return spent



def create_app(settings: Settings) -> Any:
    return UsagegateApp(settings)
