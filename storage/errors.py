"""Domain exceptions of the storage layer, with exact messages."""

from __future__ import annotations


class StorageError(Exception):
    """Base class of storage failures."""


class TrackNotFound(StorageError):
    def __init__(self, track_id: str) -> None:
        super().__init__(f"no track with id {track_id!r}")
        self.track_id = track_id


class CacheWriteError(StorageError):
    """The cache could not store an entry (disk full, permissions)."""
