"""Run one process of the gateway (see supervisor.py): the store process or proxy worker i.

Process 0 owns the log store (the batch writers, analytics, the dashboard) and listens only on
its Unix socket in the data dir. Proxy workers 1..N share the TCP port with SO_REUSEPORT (the
kernel spreads connections across them) and each also listens on its own Unix socket for the
loopback between processes.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from usagegate.errors import ConfigError
from usagegate.owner_link import STORE_PROCESS, socket_path
from usagegate.settings import Settings
from usagegate.store_priority import enter_idle

UVICORN_OPTIONS: dict[str, Any] = dict(
    loop="uvloop", http="httptools", access_log=False, log_level="warning", lifespan="on", timeout_graceful_shutdown=30,
    # The proxy relays the upstream's Date/Server headers (uvicorn's own would duplicate them)
    # and never reads the client address, so skip both per-request costs.
    proxy_headers=False, server_header=False, date_header=False,
)


def build_app(settings: Settings) -> Any:
    if settings.worker_index == STORE_PROCESS:
        from usagegate.app import create_app

        return create_app(settings)
    from usagegate.worker_app import ProxyWorkerApp

    return ProxyWorkerApp(settings)


def run(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT (then drain, as the lifespan says)."""
    import uvicorn

    if settings.worker_index is None:
        raise ConfigError("serving.run needs a process index (0: the store, 1..N: proxy workers).")
    if settings.worker_index == STORE_PROCESS:
        # Idle CPU priority, boosted while the writers lag or queries run (store_priority.py).
        enter_idle()
    app = build_app(settings)
    sockets = [_unix_socket(settings)]
    if settings.worker_index != STORE_PROCESS:
        sockets.insert(0, _tcp_socket(settings.host, settings.port))
    server = uvicorn.Server(uvicorn.Config(app, **UVICORN_OPTIONS))
    server.run(sockets=sockets)


def _tcp_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"Cannot listen on {host}:{port}: {exc.strerror}.") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _unix_socket(settings: Settings) -> socket.socket:
    assert settings.worker_index is not None
    path = socket_path(settings.data_dir, settings.worker_index)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        path.unlink()  # left by a previous run of this worker
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(512)
    return sock
