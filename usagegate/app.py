"""create_app(settings): one ASGI app that sends proxy paths to the Gateway and the rest to /api.

The lifespan opens the config store, the spool, the log store and the batch writer, and on
shutdown (SIGTERM) drains the spool into the store before exiting (DESIGN §3).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

import orjson

from usagegate import api, metrics, tokenizer, web
from usagegate.config_db import ConfigDB, KeyRing
from usagegate.context import AppContext
from usagegate.gateway import Gateway, Receive, Scope, Send, is_proxy_path
from usagegate.alert_evaluator import AlertEvaluator
from usagegate.api.params import ch_time
from usagegate.ingest import Ingest
from usagegate.limits import Guard
from usagegate.logpipe import Spool
from usagegate.errors import StoreUnavailable
from usagegate.owner_link import OwnerLink, is_internal
from usagegate.price_overrides import PriceOverrides
from usagegate.pricing import Pricer
from usagegate.settings import Settings
from usagegate.store import Store
from usagegate import worker_routes
from usagegate.redis_counters import counters_for
from usagegate.writers import WriterSet, spool_dir

log = logging.getLogger("usagegate")


class UsagegateApp:
    """The ASGI entry point. Proxy traffic skips FastAPI entirely (it costs ~48% of throughput)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ctx: AppContext | None = None
        self.gateway: Gateway | None = None
        self._spent: Any = None
        self._links = OwnerLink(settings.data_dir)  # to the other workers (--workers), for /metrics
        self.api = FastAPI(title="usagegate", version="0.1.0",
                           lifespan=self._lifespan)
        api.install_error_handlers(self.api)
        for router in api.ROUTERS:
            self.api.include_router(router)
        self.api.add_api_route("/health", self._health, methods=["GET"], include_in_schema=True)
        web.install(self.api)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.gateway is not None and (
            is_proxy_path(scope["path"]) or _has_target_header(scope)
        ):
            await self.gateway(scope, receive, send)
            return
        if scope["type"] == "http" and scope["path"] == "/metrics":
            await self._metrics(send)
            return
        if scope["type"] == "http" and scope["path"].startswith("/_worker/") and is_internal(scope):
            await worker_routes.handle(scope, send, spent=self._spent, metrics=self._local_metrics)
            return
        await self.api(scope, receive, send)  # type: ignore[arg-type]  # our ASGI aliases use dict

    async def _local_metrics(self) -> bytes:
        return metrics.local_json(self.gateway, self.ctx.spool if self.ctx else None)

    async def _metrics(self, send: Send) -> None:
        """One page for every worker: this process's counters plus each other worker's."""
        workers = {"0": metrics.local_snapshot(self.gateway, self.ctx.spool if self.ctx else None)}
        for index in range(1, self.settings.workers):
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
        assert self.ctx is not None
        if not self.ctx.spool.probe():
            return JSONResponse({"status": "unhealthy", "reason": f"spool not writable: {self.ctx.spool.last_error}"},
                                  status_code=503)
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        # The first estimated stream would otherwise load the encoding on the event loop (0.3-2 s
        # here); a thread keeps it off startup too (the gateway restarts fast after a crash).
        threading.Thread(target=tokenizer.warm_up, name="tokenizer-warm-up", daemon=True).start()
        config = ConfigDB(settings.data_dir)
        keyring = KeyRing(config)
        spool = Spool(spool_dir(settings.data_dir, settings.worker_index), fsync_interval=settings.fsync_interval)
        store = Store.open(settings.store, settings.data_dir, body_ttl_days=settings.body_ttl_days)
        pricer = Pricer()
        # This process owns the store: it writes every spool in the data dir (usagegate/writers.py).
        writers = WriterSet(settings.data_dir, Ingest(store, pricer, PriceOverrides(settings.data_dir)),
                            workers=settings.workers, interval=settings.flush_interval)
        writer = writers.writer_for(spool.directory)
        # Replay what a previous run left in the spool before serving, so budgets see it
        # (unless the store is down: then the proxy serves and the writer catches up later).
        if store.ready:
            writers.drain(timeout=60)
        writers.start()
        app.state.writers = writers
        self.ctx = AppContext(settings, config, keyring, spool, store, writer)
        app.state.ctx = self.ctx
        guard = Guard(settings.data_dir, pricer, _spent_loader(store), counters_for(settings.redis_url))
        app.state.guard = guard
        self._spent = _spent_loader(store)
        self.gateway = Gateway(settings, keyring, spool, guard)
        await self.gateway.startup()
        refresher = asyncio.create_task(self._refresh(keyring, guard))
        evaluator = AlertEvaluator(settings, store)
        evaluator.start()
        # Startup left ~150k long-lived objects (chDB, pyarrow, FastAPI) that every full collection
        # walked, and the default gen-0 threshold (700) ran a collection every ~15 proxied requests:
        # ~6% of the event loop's time under load (gc.callbacks timing). Freeze what exists and
        # collect rarely; per-request garbage is nearly all freed by reference counting anyway.
        gc.freeze()
        gc.set_threshold(10_000, 10, 10)
        try:
            yield
        finally:
            refresher.cancel()
            await evaluator.stop()
            await self.gateway.shutdown()
            writers.stop()
            spool.close()
            if not writers.drain(timeout=60 if store.ready else 3):
                log.error("could not drain the spool before exit; it will be replayed on next start")
            await self._links.close()
            store.close()
            config.close()

    async def _refresh(self, keyring: KeyRing, guard: Guard) -> None:
        # Revocations and limit changes from the CLI or API take effect within a second.
        while True:
            await asyncio.sleep(0.5)
            keyring.refresh()
            guard.refresh()


def _spent_loader(store: Store) -> Any:
    async def spent(org_id: str, user_id: str, start: datetime, end: datetime) -> Decimal:
        rows = await store.query(
            "SELECT toString(sum(ifNull(cost_usd, 0))) AS spent FROM requests WHERE org_id = {org:String} "
            "AND user_id = {user:String} AND created_at >= {a:DateTime64(3)} AND created_at < {b:DateTime64(3)}",
            {"org": org_id, "user": user_id, "a": ch_time(start), "b": ch_time(end)},
        )
        return Decimal(rows[0]["spent"]) if rows else Decimal(0)

    return spent


def _has_target_header(scope: Scope) -> bool:
    return any(name == b"helicone-target-url" for name, _ in scope["headers"])


def create_app(settings: Settings) -> Any:
    return UsagegateApp(settings)
