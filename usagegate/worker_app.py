"""A proxy worker of `usagegate serve` (workers 1..N; process 0 is the store process, `app.py`).

It proxies and spools (to `<data>/spool`, or `<data>/spool/w<i>` with several workers) and does
no store work at all: the embedded store opens in one process only, and the store's inserts would
take this process's core and GIL from the requests. Everything else — `/api/*`, the dashboard,
`/metrics` — is relayed to the store process over its Unix socket (`owner_link.py`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading

import orjson

from usagegate import metrics, tokenizer, worker_routes
from usagegate.config_db import ConfigDB, KeyRing
from usagegate.gateway import Gateway, Receive, Scope, Send, is_proxy_path
from usagegate.limits import Guard
from usagegate.logpipe import Spool
from usagegate.owner_link import OwnerLink, is_internal
from usagegate.pricing import Pricer
from usagegate.redis_counters import counters_for
from usagegate.settings import Settings
from usagegate.writers import spool_dir

log = logging.getLogger("usagegate.worker")

STORE_WAIT_S = 120.0


class ProxyWorkerApp:
    def __init__(self, settings: Settings) -> None:
        assert settings.worker_index, "process 0 owns the store and runs app.py's app"
        self.settings = settings
        self.gateway: Gateway | None = None
        self.spool: Spool | None = None
        self.owner = OwnerLink(settings.data_dir, me=settings.worker_index)
        self._keyring: KeyRing | None = None
        self._guard: Guard | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if self.gateway is not None and (is_proxy_path(path) or _has_target_header(scope)):
            await self.gateway(scope, receive, send)
        elif path == "/health":
            await self._health(send)
        elif path.startswith("/_worker/"):
            # Internal routes exist on the Unix socket only; never relay them from the TCP port.
            internal = is_internal(scope)
            await worker_routes.handle(scope, send, spent=None, metrics=self._render_metrics if internal else None,
                                       refresh=self._refresh_config if internal else None)
        else:
            await self.owner.forward(scope, receive, send)

    def _refresh_config(self) -> None:
        if self._keyring is not None and self._guard is not None:
            self._keyring.refresh()
            self._guard.refresh()

    async def _render_metrics(self) -> bytes:
        return metrics.local_json(self.gateway, self.spool)

    async def _health(self, send: Send) -> None:
        assert self.spool is not None
        ok = self.spool.probe()
        body = orjson.dumps({"status": "ok"} if ok else
                            {"status": "unhealthy", "reason": f"spool not writable: {self.spool.last_error}"})
        await send({"type": "http.response.start", "status": 200 if ok else 503,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        settings = self.settings
        # The first estimated stream would otherwise load the encoding on the event loop (0.3-2 s
        # here); a thread keeps it off startup too (a worker restarts fast after a crash).
        threading.Thread(target=tokenizer.warm_up, name="tokenizer-warm-up", daemon=True).start()
        try:
            config = ConfigDB(settings.data_dir)
            keyring = KeyRing(config)
            self.spool = Spool(spool_dir(settings.data_dir, settings.worker_index, settings.workers), fsync_interval=settings.fsync_interval)
            guard = Guard(settings.data_dir, Pricer(), self.owner.spent, counters_for(settings.redis_url))
            self.gateway = Gateway(settings, keyring, self.spool, guard)
            self._keyring, self._guard = keyring, guard
            await self.gateway.startup()
        except Exception as exc:
            log.exception("worker %s failed to start", settings.worker_index)
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        # The store process starts beside us (supervisor.py): answer on the port only once /api
        # works too, so "healthy" means the whole gateway is. Proxying alone would not need it.
        if not await self.owner.wait_ready(STORE_WAIT_S):
            log.warning("worker %s: the store process is not answering yet; proxying anyway", settings.worker_index)
        refresher = asyncio.create_task(_refresh(keyring, guard))
        # Start-up left many long-lived objects (aiohttp, uvicorn, pricing tables) that every full
        # collection walked, and the default gen-0 threshold (700) ran a collection every ~15
        # proxied requests: ~6% of the event loop's time under load (gc.callbacks timing). Freeze
        # what exists and collect rarely; per-request garbage is freed by reference counting.
        gc.freeze()
        gc.set_threshold(10_000, 10, 10)
        await send({"type": "lifespan.startup.complete"})
        message = await receive()  # lifespan.shutdown
        refresher.cancel()
        await self.gateway.shutdown()
        await self.owner.close()
        self.spool.close()  # the owner drains this spool once every worker has stopped
        config.close()
        await send({"type": "lifespan.shutdown.complete"})


async def _refresh(keyring: KeyRing, guard: Guard) -> None:
    # Revocations and limit changes from the CLI or API take effect within a second.
    while True:
        await asyncio.sleep(0.5)
        keyring.refresh()
        guard.refresh()


def _has_target_header(scope: Scope) -> bool:
    return any(name == b"helicone-target-url" for name, _ in scope["headers"])
