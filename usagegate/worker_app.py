"""A proxy-only worker of `usagegate serve --workers N` (workers 1..N-1; worker 0 is `app.py`'s).

It proxies and spools to its own `<data>/spool/w<i>` exactly like the single process, with no
store of its own (the embedded store opens in one process only). Everything else — `/api/*`,
the dashboard, `/metrics` — is relayed to the owner over its Unix socket (`owner_link.py`).
"""

from __future__ import annotations

import asyncio
import logging

import orjson

from usagegate import metrics, worker_routes
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


class ProxyWorkerApp:
    def __init__(self, settings: Settings) -> None:
        assert settings.worker_index, "worker 0 owns the store and runs the full app"
        self.settings = settings
        self.gateway: Gateway | None = None
        self.spool: Spool | None = None
        self.owner = OwnerLink(settings.data_dir, me=settings.worker_index)

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
            await worker_routes.handle(scope, send, spent=None, metrics=self._render_metrics if internal else None)
        else:
            await self.owner.forward(scope, receive, send)

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
        try:
            config = ConfigDB(settings.data_dir)
            keyring = KeyRing(config)
            self.spool = Spool(spool_dir(settings.data_dir, settings.worker_index), fsync_interval=settings.fsync_interval)
            guard = Guard(settings.data_dir, Pricer(), self.owner.spent, counters_for(settings.redis_url))
            self.gateway = Gateway(settings, keyring, self.spool, guard)
            await self.gateway.startup()
        except Exception as exc:
            log.exception("worker %s failed to start", settings.worker_index)
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        refresher = asyncio.create_task(_refresh(keyring, guard))
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
