"""The baseline the gateway's throughput is judged against (DESIGN §7).

The least a Python pass-through can do: uvicorn + raw ASGI + one pooled aiohttp session,
relaying the body as it arrives, and one log line per request. No auth, no parsing, no record.

    python bench/minimal_proxy.py --port 9200 --upstream http://127.0.0.1:9100 --log /tmp/min.log
"""

from __future__ import annotations

import argparse
import os
import time

import aiohttp
import uvicorn

DROP = {"content-length", "connection", "transfer-encoding", "keep-alive"}


def make_app(upstream: str, log_path: str):  # type: ignore[no-untyped-def]
    session: aiohttp.ClientSession | None = None
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        nonlocal session
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
                await send({"type": "lifespan.startup.complete"})
            await session.close()  # type: ignore[union-attr]
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k not in (b"host", b"content-length")]
        async with session.request(scope["method"], upstream + scope["path"], headers=headers, data=body) as r:  # type: ignore[union-attr]
            out = [(k.lower().encode(), v.encode()) for k, v in r.headers.items() if k.lower() not in DROP]
            await send({"type": "http.response.start", "status": r.status, "headers": out})
            async for chunk in r.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        os.write(log_fd, b"%d %s %s %d\n" % (time.time_ns(), scope["method"].encode(), scope["path"].encode(), r.status))

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--log", default=os.devnull)
    args = parser.parse_args()
    uvicorn.run(make_app(args.upstream.rstrip("/"), args.log), host="127.0.0.1", port=args.port, loop="uvloop",
                http="httptools", access_log=False, log_level="warning", lifespan="on",
                proxy_headers=False, server_header=False, date_header=False)
