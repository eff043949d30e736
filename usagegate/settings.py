"""Settings: the one place that reads flags' environment fallbacks and validates them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from usagegate.errors import ConfigError
from usagegate.netguard import normalise_base


@dataclass(frozen=True, kw_only=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8787
    data_dir: Path = Path(".usagegate")
    store: str = "embedded"
    openai_base_url: str = "https://api.openai.com"
    anthropic_base_url: str = "https://api.anthropic.com"
    allowed_targets: tuple[str, ...] = ()
    max_body_mb: float = 32.0
    upstream_timeout: float = 600.0
    store_bodies: bool = True
    body_ttl_days: int = 30
    # How often the spool is fsynced, and how long the writer lets a batch grow before inserting it
    # (seconds). A record is visible within about flush_interval + one insert (DESIGN: 2 s); longer
    # batches pay the store's fixed cost per insert less often (docs/performance.md).
    fsync_interval: float = 0.2
    flush_interval: float = 0.5
    # Alerts: how often rules are evaluated (seconds); webhooks to private addresses need opting in.
    alert_interval: float = 10.0
    allow_private_webhooks: bool = False
    extra: dict[str, str] = field(default_factory=dict)
    # --workers N: N proxy processes on one port, beside the store process (docs/scaling.md).
    workers: int = 1
    worker_index: int | None = None  # set in worker processes only
    # Shared limit counters for several processes/machines (`redis://host:6379/0`); "" = in-process.
    redis_url: str = ""

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


ENV_NAMES = {
    "port": "USAGEGATE_PORT",
    "data_dir": "USAGEGATE_DATA_DIR",
    "store": "USAGEGATE_STORE",
    "openai_base_url": "USAGEGATE_OPENAI_BASE_URL",
    "anthropic_base_url": "USAGEGATE_ANTHROPIC_BASE_URL",
    "allowed_targets": "USAGEGATE_ALLOWED_TARGETS",
    "alert_interval": "USAGEGATE_ALERT_INTERVAL",
    "allow_private_webhooks": "USAGEGATE_ALLOW_PRIVATE_WEBHOOKS",
}

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")


def settings_from(options: Mapping[str, object], environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from explicit options (None = not given), falling back to the environment.

    Raises ConfigError naming the setting and the bad value.
    """
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for name, value in options.items():
        if value is None and name in ENV_NAMES and ENV_NAMES[name] in env:
            value = env[ENV_NAMES[name]]
        if value is not None:
            values[name] = value
    if "allowed_targets" not in values and ENV_NAMES["allowed_targets"] in env:
        values["allowed_targets"] = env[ENV_NAMES["allowed_targets"]]
    return _coerce(values)


def _coerce(values: dict[str, object]) -> Settings:
    out: dict[str, object] = {}
    for name, value in values.items():
        try:
            if name in ("port", "body_ttl_days"):
                out[name] = int(str(value))
            elif name in ("workers", "worker_index"):
                out[name] = None if value is None else int(str(value))
                if out[name] is not None and (out[name] < (1 if name == "workers" else 0) or out[name] > 256):  # type: ignore[operator]
                    raise ValueError
            elif name == "redis_url":
                if value and not str(value).startswith(("redis://", "rediss://", "unix://")):
                    raise ValueError
                out[name] = str(value or "")
            elif name == "allow_private_webhooks":
                if isinstance(value, bool):
                    out[name] = value
                elif str(value).strip().lower() in TRUE_WORDS + FALSE_WORDS:
                    out[name] = str(value).strip().lower() in TRUE_WORDS
                else:
                    raise ValueError
            elif name in ("max_body_mb", "upstream_timeout", "fsync_interval", "flush_interval", "alert_interval"):
                out[name] = float(str(value))
                if out[name] <= 0:  # type: ignore[operator]
                    raise ValueError
            elif name == "data_dir":
                out[name] = Path(str(value))
            elif name == "allowed_targets":
                items = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
                out[name] = tuple(normalise_base(t) for t in items if t.strip())
            elif name in ("openai_base_url", "anthropic_base_url"):
                url = str(value).rstrip("/")
                if not url.startswith(("http://", "https://")):
                    raise ValueError
                out[name] = url
            else:
                out[name] = value
        except (TypeError, ValueError):
            raise ConfigError(f"Setting '{name}' has value {value!r}, which is not valid.") from None
    return Settings(**out)  # type: ignore[arg-type]


def settings_to_json(settings: Settings) -> str:
    """Settings as JSON, for handing them to worker processes (`settings_from_json` reads them)."""
    import json
    from dataclasses import asdict

    values = asdict(settings)
    values["data_dir"] = str(settings.data_dir)
    values["allowed_targets"] = list(settings.allowed_targets)
    return json.dumps(values)


def settings_from_json(text: str) -> Settings:
    import json

    return _coerce(json.loads(text))
