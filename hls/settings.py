"""Server settings: one declarative table with defaults, help and environment names.

Every `hls-origin serve` flag also reads `HLS_ORIGIN_<NAME>` from the
environment; the command line wins. README.md documents every entry (a test
checks it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "HLS_ORIGIN_"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hls-origin"


@dataclass(frozen=True)
class Setting:
    name: str
    type: Callable[[str], Any]
    default: Any
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"port must be in [0, 65535], got {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0.5 <= value <= 600:
        raise ValueError(f"must be in [0.5, 600] seconds, got {value}")
    return value


SETTINGS: tuple[Setting, ...] = (
    Setting("library", Path, None, "music folder to serve (default: a synthesized demo library)"),
    Setting("cache_dir", Path, None, "where segments are cached (default: ~/.cache/hls-origin)"),
    Setting("cache_max_bytes", _positive_int, 1 << 30, "cache size cap in bytes (LRU eviction)"),
    Setting("host", str, "127.0.0.1", "address to listen on"),
    Setting("port", _port, 8080, "port to listen on; 0 picks a free port"),
    Setting("workers", _positive_int, os.cpu_count() or 1, "worker processes for DSP and encoding"),
    Setting("segment_seconds", _seconds, 30.0, "target segment duration in seconds"),
    Setting("secret", str, "hls-origin", "key from which opaque track ids are derived"),
    Setting(
        "signing_key",
        str,
        None,
        "stream only signed links /s/{expires}/{signature}/... made with this key (SPEC §9)",
    ),  # fmt: skip
    Setting("signing_ttl", _positive_int, 86400, "seconds a link from /api/tracks stays valid"),
    Setting("cors_origin", str, "*", "Access-Control-Allow-Origin of every answer"),
    Setting(
        "max_pending",
        _positive_int,
        32,
        "on-demand jobs that may wait for a worker; beyond it new work gets 503",
    ),  # fmt: skip
    Setting(
        "idle_seconds",
        _seconds,
        120.0,
        "pause a stream's background production when nobody asked for it this long",
    ),  # fmt: skip
)


@dataclass(frozen=True)
class Settings:
    library: Path | None = None
    cache_dir: Path | None = None
    cache_max_bytes: int = 1 << 30
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = os.cpu_count() or 1
    segment_seconds: float = 30.0
    secret: str = "hls-origin"
    idle_seconds: float = 120.0
    max_pending: int = 32
    signing_key: str | None = None
    signing_ttl: int = 86400
    cors_origin: str = "*"
    context_seconds: float = 5.0
    overlap_seconds: float = 1.0
    # A blocking reload is held at most this long, and at most three target
    # durations (rfc8216bis §6.2.5.2), then answered 503: hls.js gives a
    # playlist request 10 s.
    blocking_reload_seconds: float = 6.0

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir if self.cache_dir is not None else default_cache_dir()


def from_sources(cli: Mapping[str, Any], env: Mapping[str, str]) -> Settings:
    """Settings from parsed flags (None when absent), then the environment, then defaults."""
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        value = cli.get(setting.name)
        if value is None and setting.env in env:
            try:
                value = setting.type(env[setting.env])
            except ValueError as exc:
                raise ValueError(f"{setting.env}: {exc}") from exc
        if value is not None:
            values[setting.name] = value
    known = {f.name for f in fields(Settings)}
    return Settings(**{k: v for k, v in values.items() if k in known})
