"""Noticing a client that hangs up while the gateway waits on the upstream.

uvicorn never cancels the app when its client leaves, so the gateway reads the next ASGI message
itself (`http.disconnect`) and cancels the request's task: the upstream request is closed with it,
and the provider stops work it would bill for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

Receive = Callable[[], Awaitable[dict[str, Any]]]

# How long the upstream may take to answer before the gateway starts watching for a client
# hang-up; also the latency a hang-up sooner than that is recorded with.
WATCH_AFTER_S = 0.05


class DisconnectWatch:
    """Cancels the current task when the client's `http.disconnect` arrives before `stop()`.

    uvicorn drops sends to a departed client silently and never cancels the app, so a hang-up
    is only seen by reading the next ASGI message. The task that made the watch catches the
    CancelledError and tells it from anyone else's cancellation by `fired`.
    """

    __slots__ = ("task", "active", "fired", "_receive", "_message", "_timer")

    def __init__(self, receive: Receive, after: float) -> None:
        """Start watching in `after` seconds (or at `start()`): reading the next message takes
        a task (~5-20 µs here), which an answer that comes sooner does not need to pay. A
        hang-up before then is still seen, when the watch starts."""
        self.task = asyncio.current_task()
        self.active = True
        self.fired = False
        self._receive = receive
        self._message: asyncio.Future[dict[str, Any]] | None = None
        self._timer = asyncio.get_running_loop().call_later(after, self.start)

    def start(self) -> None:
        """Watch from now on (idempotent)."""
        if self._message is None and self.active:
            self._timer.cancel()
            self._message = asyncio.ensure_future(self._receive())
            self._message.add_done_callback(self.on_receive)

    def stop(self) -> None:
        """Stop watching (idempotent); a hang-up after this no longer cancels anything."""
        self.active = False
        self._timer.cancel()
        if self._message is not None and not self._message.done():
            self._message.cancel()

    def on_receive(self, message: asyncio.Future[dict[str, Any]]) -> None:
        # Runs on the loop thread, so `active` cannot change under us; a cancelled or failed
        # receive() is not a disconnect.
        if not self.active or message.cancelled() or message.exception() is not None or self.task is None:
            return
        if message.result().get("type") == "http.disconnect":
            self.fired = True
            self.task.cancel()
