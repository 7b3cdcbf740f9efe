"""What names a stream and its segments: light data shared by the server and its workers.

This module imports no numpy or scipy, so the server process stays small;
the heavy pipeline (`hls.jobs`) is imported only inside worker processes,
through `hls.workers.run_job`.
"""

from __future__ import annotations

from dataclasses import dataclass

from processing.plan import SegmentPlan, plan_segments


@dataclass(frozen=True)
class SourceRef:
    """A source file and the content fingerprint that names its cache entries."""

    file: str
    key: str


@dataclass(frozen=True)
class PreparedSource:
    """Exact properties of a source as served (after any conversion)."""

    rate: int
    channels: int
    length: int


@dataclass(frozen=True)
class StreamSpec:
    """Everything a segment's bytes depend on, besides its index and rendition."""

    source: SourceRef
    preset: str
    intensity: str  # canonical two-decimal spelling
    segment_seconds: float
    context_seconds: float
    overlap_seconds: float
    cache_dir: str

    @property
    def settings_tag(self) -> str:
        """Names the settings in cache paths, so changed settings never reuse old bytes."""
        return f"s{self.segment_seconds:g}-c{self.context_seconds:g}-o{self.overlap_seconds:g}-p4"

    def segment_key(self, rendition: str, index: int) -> tuple[str, ...]:
        return (
            "segments", self.source.key, self.settings_tag, self.preset,
            self.intensity, rendition, f"{index}.m4s",
        )  # fmt: skip


def plan_for(spec: StreamSpec, length: int, rate: int) -> SegmentPlan:
    return plan_segments(length, rate, spec.segment_seconds)
