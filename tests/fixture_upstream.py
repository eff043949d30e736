"""A test upstream that answers with the recorded provider responses in tests/fixtures/providers.

A real aiohttp server on 127.0.0.1, run on its own event loop in a background thread of the
test process (the gateway under test is a subprocess). The request header `X-Fixture: <name>`
picks the recording (the gateway forwards it unchanged); the path must be the recorded one.
JSON bodies are sent whole with their recorded status and content type; SSE bodies are sent in
small chunks cut at arbitrary byte offsets (not at event boundaries), as a real network does.
`X-Fixture-Chunk-Delay-Ms: N` waits N ms between chunks.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from aiohttp import web
from multidict import CIMultiDict

FIXTURES = Path(__file__).parent / "fixtures" / "providers"
CHUNK = 97  # bytes per SSE write: deliberately not aligned with events


@dataclass(frozen=True)
class Recording:
    name: str
    path: str
    status: int
    content_type: str
    body: bytes
    request: bytes

    @property
    def stream(self) -> bool:
        return self.content_type.startswith("text/event-stream")


def recordings() -> dict[str, Recording]:
    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    out = {}
    for entry in manifest:
        name = entry["file"].rsplit(".", 1)[0]
        out[name] = Recording(
            name=name,
            path=urlparse(entry["uri"]).path,
            status=entry["status"],
            content_type=entry["content_type"],
            body=(FIXTURES / entry["file"]).read_bytes(),
            request=(FIXTURES / entry["request_file"]).read_bytes(),
        )
    return out


class FixtureUpstream:
    """Start with `FixtureUpstream()`; `.url`, `.received` (list of (path, headers, body)), `.stop()`."""

    def __init__(self) -> None:
        self.recordings = recordings()
        self.received: list[tuple[str, CIMultiDict[str], bytes]] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fixture-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fixture upstream did not start")
        self.url = f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append((request.path, CIMultiDict(request.headers), body))
        name = request.headers.get("X-Fixture", "")
        rec = self.recordings.get(name)
        if rec is None or rec.path != request.path:
            return web.json_response({"error": {"message": f"no recording {name!r} for {request.path}"}}, status=418)
        if not rec.stream:
            return web.Response(status=rec.status, body=rec.body, headers={"Content-Type": rec.content_type})
        delay = int(request.headers.get("X-Fixture-Chunk-Delay-Ms", "0")) / 1000
        response = web.StreamResponse(status=rec.status, headers={"Content-Type": rec.content_type})
        await response.prepare(request)
        for at in range(0, len(rec.body), CHUNK):
            await response.write(rec.body[at : at + CHUNK])
            if delay:
                await asyncio.sleep(delay)
        await response.write_eof()
        return response

    def last_body(self, fixture: str) -> Any:
        for _, headers, body in reversed(self.received):
            if headers.get("X-Fixture") == fixture:
                return json.loads(body)
        raise AssertionError(f"upstream never received {fixture}")

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
