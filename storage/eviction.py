"""Size cap of the segment cache: least recently used entries go first (SPEC §7).

The index lives in the server process: built once from the files at start-up
(in a thread, sorted by modification time, which `touch` keeps as the last
use, so recency survives restarts), then kept current as segments are
produced and served. Pinned entries (each stream's segment 0, the one every
cold start needs) are evicted only when nothing else is left.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

from storage.cache import DiskCache

AREA = "segments"
STALE_TEMP_SECONDS = 600  # no write takes this long; a live one may belong to another process


def _pinned(relative: str) -> bool:
    return relative.endswith("/0.m4s")


class LruIndex:
    """Sizes and recency of the files under `cache.root / AREA`, with a byte cap."""

    def __init__(self, cache: DiskCache, max_bytes: int) -> None:
        self.cache = cache
        self.max_bytes = max_bytes
        self.area = cache.root / AREA
        self._entries: OrderedDict[str, int] = OrderedDict()  # oldest first
        self._total = 0
        self._lock = threading.Lock()
        self.evicted = 0  # entries removed since start (for metrics and tests)

    @property
    def total_bytes(self) -> int:
        return self._total

    def load(self) -> None:
        """Index the existing files (blocking: run it in a thread at start-up)."""
        found = []
        for dirpath, _, filenames in os.walk(self.area):
            for name in filenames:
                path = Path(dirpath) / name
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                if name.startswith("."):
                    # A temporary file; one this old was left by a crash mid-write.
                    if time.time() - st.st_mtime > STALE_TEMP_SECONDS:
                        path.unlink(missing_ok=True)
                    continue
                found.append((st.st_mtime_ns, path.relative_to(self.area).as_posix(), st.st_size))
        found.sort()
        with self._lock:
            for _, relative, size in found:
                if relative not in self._entries:
                    self._entries[relative] = size
                    self._total += size

    def _relative(self, parts: tuple[str, ...]) -> str:
        if not parts or parts[0] != AREA:
            raise ValueError(f"not a {AREA} entry: {'/'.join(parts)}")
        return "/".join(parts[1:])

    def touch(self, parts: tuple[str, ...], size: int) -> None:
        """Record a use (or a new entry) of `size` bytes; the file's mtime keeps the recency."""
        relative = self._relative(parts)
        with self._lock:
            old = self._entries.pop(relative, None)
            self._total += size - (old or 0)
            self._entries[relative] = size
        try:
            os.utime(self.area / relative)
        except FileNotFoundError:
            self.forget(parts)

    def forget(self, parts: tuple[str, ...]) -> None:
        relative = self._relative(parts)
        with self._lock:
            size = self._entries.pop(relative, None)
            if size is not None:
                self._total -= size

    def evict(self) -> list[str]:
        """Remove least recently used files until the total fits the cap; returns them."""
        removed = []
        while True:
            with self._lock:
                if self._total <= self.max_bytes or not self._entries:
                    break
                victim = next((r for r in self._entries if not _pinned(r)), None)
                if victim is None:
                    victim = next(iter(self._entries))
                self._total -= self._entries.pop(victim)
            try:
                (self.area / victim).unlink()
            except FileNotFoundError:
                pass
            removed.append(victim)
            self.evicted += 1
        return removed
