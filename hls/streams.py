"""What names a stream and its segments: light data shared by the server and its workers.

This module imports no numpy or scipy, so the server process stays small;
the heavy pipeline (`hls.jobs`) is imported only inside worker processes,
through `hls.workers.run_job`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from processing.plan import SegmentPlan, plan_segments


@dataclass(frozen=True)
class SourceRef:
    """A source file and the content fingerprint that names its cache entries."""

    file: str
    key: str


@dataclass(frozen=True)
class QueueRef:
    """The tracks of an album or a queue, in order, and how they join (SPEC §10).

    Its key names its cache entries from the tracks' content keys and the
    join settings: the same content queued the same way gives the same bytes,
    whatever the tracks' ids.
    """

    ids: tuple[str, ...]  # the tracks' ids, to name a track in an error
    tracks: tuple[SourceRef, ...]
    crossfade_ms: int
    gain: str  # "track": each track to the target; "album": one gain for all

    @property
    def key(self) -> str:
        text = "|".join(
            ["queue-v1", self.gain, str(self.crossfade_ms), *(t.key for t in self.tracks)]
        )
        return "q" + hashlib.sha256(text.encode()).hexdigest()[:31]


@dataclass(frozen=True)
class PreparedSource:
    """Exact properties of a source as served (after any conversion).

    starts, lengths: each track's first sample on the timeline and its
    length there, for a queue (one track for a single source).
    """

    rate: int
    channels: int
    length: int
    starts: tuple[int, ...] = (0,)
    lengths: tuple[int, ...] = ()


@dataclass(frozen=True)
class StreamSpec:
    """Everything a segment's bytes depend on, besides its index and rendition."""

    source: SourceRef | QueueRef
    preset: str
    intensity: str  # canonical two-decimal spelling
    segment_seconds: float
    context_seconds: float
    overlap_seconds: float
    cache_dir: str

    @property
    def settings_tag(self) -> str:
        """Names the settings in cache paths, so changed settings never reuse old bytes."""
        return f"s{self.segment_seconds:g}-c{self.context_seconds:g}-o{self.overlap_seconds:g}-p5"

    def segment_key(self, rendition: str, index: int) -> tuple[str, ...]:
        return (
            "segments", self.source.key, self.settings_tag, self.preset,
            self.intensity, rendition, f"{index}.m4s",
        )  # fmt: skip


def plan_for(spec: StreamSpec, length: int, rate: int) -> SegmentPlan:
    return plan_segments(length, rate, spec.segment_seconds)
