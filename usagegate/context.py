"""The running gateway's parts, built once by `app.create_app` and handed to every surface."""

from __future__ import annotations

from dataclasses import dataclass

from usagegate.config_db import ConfigDB, KeyRing
from usagegate.logpipe import BatchWriter, Spool
from usagegate.settings import Settings
from usagegate.store import Store


@dataclass
class AppContext:
    settings: Settings
    config: ConfigDB
    keyring: KeyRing
    spool: Spool
    store: Store
    writer: BatchWriter
