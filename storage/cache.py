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
    def lock(self, *parts: str, wait: bool = True) -> Iterator[bool]:
        """Exclusive lock on an entry, across threads and processes sharing `root`;
        yields whether it is held (always, unless `wait` is false and another holds it).

        Lets one producer make an entry while others wait, then find it made.
        Each entry has a lock file of its own while it is locked: two
        productions never wait for each other (lock files shared by hash
        stalled a lane ~0.65 s behind an unrelated unit in 1 of 16 tracks,
        measured). The holder removes the file as it lets go; a waiter that
        then holds a removed file tries again. A thread must not take a
        second lock while it holds one (two threads taking two in opposite
        orders would wait for each other): that is refused with an error.
        """
        name = hashlib.sha256("/".join(parts).encode()).hexdigest()
        if getattr(_held, "lock", None) is not None:
            raise RuntimeError(f"cache lock {'/'.join(parts)} taken inside {_held.lock}")
        directory = self.root / "locks"
        directory.mkdir(exist_ok=True)
        path = directory / f"{name}.lock"
        while True:
            handle = open(path, "a")  # closed when the lock is let go
            try:
                fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                    break  # the lock file in place: ours
            except FileNotFoundError:
                pass  # removed by its holder meanwhile
            except BlockingIOError:
                handle.close()
                yield False  # another holds it
                return
            except BaseException:
                handle.close()
                raise
            handle.close()  # a file its holder removed: take the current one
        _held.lock = "/".join(parts)
        try:
            yield True
        finally:
            _held.lock = None
            path.unlink(missing_ok=True)  # before letting go: no one locks a removed file
            handle.close()  # lets go of the lock
