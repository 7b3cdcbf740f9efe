"""Disk cache of produced segments and per-track analyses.

Writes are atomic (temporary file in the same directory, fsync, rename), so a
reader sees either nothing or the whole entry, even after a crash. Entries
are addressed by a tuple of safe path components chosen by the caller; the
cache stores bytes and knows nothing about what they mean.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from storage.errors import CacheWriteError

DEFAULT_MAX_BYTES = 1 << 30
LOCK_STRIPES = 256  # lock files shared by hash: bounded in number, rarely contended
_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_held = threading.local()  # the lock this thread holds, if any


class DiskCache:
    """Entries under `root`, one file each."""

    def __init__(self, root: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes
        root.mkdir(parents=True, exist_ok=True)

    def path(self, *parts: str) -> Path:
        """The file of an entry; every part must be a plain name (no separators, no dots first)."""
        for part in parts:
            if not _SAFE_PART.match(part):
                raise ValueError(f"unsafe cache key part {part!r}")
        return self.root.joinpath(*parts)

    def get(self, *parts: str) -> Path | None:
        path = self.path(*parts)
        return path if path.is_file() else None

    def read(self, *parts: str) -> bytes | None:
        try:
            return self.path(*parts).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, parts: tuple[str, ...], data: bytes) -> Path:
        """Store `data` atomically; returns the entry's path."""
        path = self.path(*parts)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise CacheWriteError(
                f"cannot write cache entry {'/'.join(parts)}: {exc.strerror}"
            ) from exc
        return path

    @contextmanager
    def lock(self, *parts: str) -> Iterator[None]:
        """Exclusive lock on an entry, across threads and processes sharing `root`.

        Lets one producer make an entry while others wait, then find it made.
        Entries share LOCK_STRIPES lock files, so a thread must not take a
        second lock while it holds one: it could be the same file, which
        would wait for itself. That is refused with an error, not a hang.
        """
        digest = hashlib.sha256("/".join(parts).encode()).digest()
        stripe = int.from_bytes(digest[:4], "big") % LOCK_STRIPES
        if getattr(_held, "lock", None) is not None:
            raise RuntimeError(f"cache lock {'/'.join(parts)} taken inside {_held.lock}")
        directory = self.root / "locks"
        directory.mkdir(exist_ok=True)
        with open(directory / f"{stripe:03d}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            _held.lock = "/".join(parts)
            try:
                yield
            finally:
                _held.lock = None
                fcntl.flock(handle, fcntl.LOCK_UN)
