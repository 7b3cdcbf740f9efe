"""Test helpers: decoding with ffmpeg, parsing playlists, a cache lock held elsewhere."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import m3u8
import numpy as np

from storage.cache import DiskCache


def decode(
    source: str | Path, channels: int, fmt: str = "f32le", extra: tuple[str, ...] = ()
) -> np.ndarray:
    """Decode any input ffmpeg reads (file or URL) to (n, channels) samples."""
    dtype = {"f32le": "<f4", "s32le": "<i4"}[fmt]
    proc = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", *extra, "-i", str(source), "-f", fmt, "-"],
        capture_output=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return np.frombuffer(proc.stdout, dtype).reshape(-1, channels)


def parse_playlist(text: bytes | str) -> m3u8.M3U8:
    return m3u8.loads(text.decode() if isinstance(text, bytes) else text)


def header_lines(text: str) -> list[str]:
    """The tags of a media playlist that must not change between live and VOD."""
    return [
        line
        for line in text.splitlines()
        if line.startswith("#EXT") and not line.startswith(("#EXTINF", "#EXT-X-ENDLIST"))
    ]


@contextmanager
def lock_held_elsewhere(cache: DiskCache, *parts: str) -> Iterator[None]:
    """A cache entry's lock held by another thread (another producer) while inside."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with cache.lock(*parts):
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        yield
    finally:
        release.set()
        holder.join()
