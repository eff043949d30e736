"""The running gateway's parts, built once by `app.create_app` and handed to every surface."""

from __future__ import annotations

from dataclasses import dataclass

from usagegate.config_db import ConfigDB, KeyRing
from usagegate.logpipe import Spool
from usagegate.settings import Settings
from usagegate.store import Store
from usagegate.writers import WriterSet


@dataclass
class AppContext:
    settings: Settings
    config: ConfigDB
    keyring: KeyRing
    spool: Spool  # the store process's own (records POSTed to /api/import)
    store: Store
    writers: WriterSet
