"""The library catalog: audio files under one root, with opaque track ids.

The root is a jail: the scan does not follow symlinks, and a file whose real
path leaves the root is skipped. Track ids are an HMAC of the relative path,
so they reveal nothing and are never used to build a path.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import mutagen

from processing.errors import DecodeError
from storage.errors import TrackNotFound

AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".aif", ".aiff", ".w64"}
)
TRACK_ID_HEX = 16
HASH_CHUNK = 1 << 20
SAMPLE_BYTES = 64 * 1024  # a sampled fingerprint reads this much at each of
SAMPLE_COUNT = 32  # evenly spread offsets, first and last bytes included


@dataclass(frozen=True)
class Track:
    """One source file of the library, as served (rate and length at the output rate)."""

    id: str
    title: str
    path: str  # relative to the library root, POSIX separators
    file: Path
    duration: float | None  # seconds; None when the file cannot be probed
    rate: int | None
    channels: int | None
    error: str | None = None
    album: str | None = None  # from the tags
    position: tuple[int, int] | None = None  # (disc, track number) from the tags

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "title": self.title,
            "path": self.path,
            "duration": self.duration,
            "sample_rate": self.rate,
            "channels": self.channels,
        }


def track_id(secret: str, relative_path: str) -> str:
    """Opaque id: HMAC-SHA256 of the relative path, first 16 hex digits."""
    digest = hmac.new(
        secret.encode(), relative_path.encode("utf-8", "surrogateescape"), hashlib.sha256
    )
    return digest.hexdigest()[:TRACK_ID_HEX]


@dataclass(frozen=True)
class Tags:
    title: str
    album: str | None
    position: tuple[int, int] | None  # (disc, track number)


def _number(values: list[str] | None) -> int | None:
    """The leading number of a tag such as "3" or "3/12"; None when there is none."""
    text = str(values[0]) if values else ""
    digits = text.split("/")[0].strip()
    return int(digits) if digits.isdigit() else None


def _tags(path: Path) -> Tags:
    try:
        tags = mutagen.File(str(path), easy=True)
    except Exception:  # mutagen raises many types on odd files; tags are optional
        tags = None
    if tags is None:
        return Tags(path.stem.replace("_", " "), None, None)
    title = str(tags["title"][0]) if tags.get("title") else path.stem.replace("_", " ")
    album = str(tags["album"][0]) if tags.get("album") else None
    number = _number(tags.get("tracknumber"))
    position = None if number is None else (_number(tags.get("discnumber")) or 1, number)
    return Tags(title, album, position)


def _inside(root: Path, path: Path) -> bool:
    try:
        path.resolve(strict=True).relative_to(root)
    except (OSError, ValueError):
        return False
    return True


class Catalog:
    """Scans a library root and looks tracks up by id."""

    def __init__(self, root: Path, secret: str) -> None:
        self.root = root.resolve()
        self.secret = secret
        self._tracks: dict[str, Track] = {}
        self._fingerprints: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()

    def scan(self) -> list[Track]:
        """Walk the root (no symlinked directories) and probe every audio file.

        Blocking and heavy (decoders): the server runs it in a worker
        (`hls.jobs.scan_library`) and `load`s the result.
        """
        found: dict[str, Track] = {}
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                file = Path(dirpath) / name
                if name.startswith(".") or file.suffix.lower() not in AUDIO_EXTENSIONS:
                    continue
                if not _inside(self.root, file):
                    continue  # a symlink out of the jail
                relative = file.relative_to(self.root).as_posix()
                track = self._probe(relative, file)
                found[track.id] = track
        self.load(list(found.values()))
        return self.tracks()

    def load(self, tracks: list[Track]) -> None:
        with self._lock:
            self._tracks = {t.id: t for t in tracks}

    def _probe(self, relative: str, file: Path) -> Track:
        from processing.decode import probe  # numpy and libsndfile: scans run in workers

        tid = track_id(self.secret, relative)
        try:
            info = probe(file)
        except DecodeError as exc:
            return Track(tid, file.stem, relative, file, None, None, None, str(exc))
        tags = _tags(file)
        return Track(
            tid, tags.title, relative, file, info.length / info.rate, info.rate, info.channels,
            album=tags.album, position=tags.position,
        )  # fmt: skip

    def tracks(self) -> list[Track]:
        with self._lock:
            return sorted(self._tracks.values(), key=lambda t: t.path)

    def get(self, tid: str) -> Track:
        with self._lock:
            track = self._tracks.get(tid)
        if track is None or not track.file.is_file():
            raise TrackNotFound(tid)
        return track

    def fingerprint(self, track: Track) -> str:
        """The key of the source's cache entries (see `fingerprint`), memoized by size and mtime.

        Blocking (reads the file once per change): call it off the event loop.
        """
        try:
            st = track.file.stat()
        except FileNotFoundError as exc:
            raise TrackNotFound(track.id) from exc
        key = (track.path, st.st_size, st.st_mtime_ns)
        with self._lock:
            known = self._fingerprints.get(key)
        if known is not None:
            return known
        try:
            value = fingerprint(track.file, st.st_size, st.st_mtime_ns)
        except FileNotFoundError as exc:
            raise TrackNotFound(track.id) from exc
        with self._lock:
            self._fingerprints[key] = value
        return value


def fingerprint(path: Path, size: int, mtime_ns: int) -> str:
    """SHA-256 (24 hex digits) of the size, the mtime and the content, sampled when large.

    It is on the path of every track's first segment, so a file larger than
    2 × SAMPLE_COUNT × SAMPLE_BYTES (4 MiB) is read at SAMPLE_COUNT evenly
    spread offsets (2 MiB, about 2 ms from the page cache; a whole 78 MB
    FLAC takes 90 ms) instead of whole. Any rewrite of a file (editor, copy,
    re-encode) moves its mtime, and a re-encode moves every sample; what
    goes unnoticed is only a same-size edit between samples whose mtime was
    forced back.
    """
    digest = hashlib.sha256(f"{size}:{mtime_ns}:".encode())
    with open(path, "rb") as f:
        if size <= 2 * SAMPLE_COUNT * SAMPLE_BYTES:
            while chunk := f.read(HASH_CHUNK):
                digest.update(chunk)
        else:
            fd = f.fileno()
            last = size - SAMPLE_BYTES
            for i in range(SAMPLE_COUNT):
                digest.update(os.pread(fd, SAMPLE_BYTES, last * i // (SAMPLE_COUNT - 1)))
    return digest.hexdigest()[:24]
