"""Segment grid: where every segment starts and ends, in integer samples.

Boundaries are a pure function of (track length, sample rate, segment seconds)
so that the playlist builder and the segment producer compute them
independently and always agree (SPEC §4). Every boundary sits on the global
grid of 1024-sample codec frames (§6); only the end of the track may fall
inside a frame.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

FRAME_SAMPLES = 1024  # AAC-LC frame; also the grid every rendition shares
DEFAULT_SEGMENT_SECONDS = 30.0
DEFAULT_CONTEXT_SECONDS = 5.0
DEFAULT_OVERLAP_SECONDS = 1.0
# The first segment is short, so that playback starts at once; the second a
# third of a segment, made while the first plays. The first three segments then
# span a target duration and a third: a client that reloads a live playlist
# one target duration after a change (RFC 8216 §6.3.4) and starts three
# segments before its end (ffmpeg; GStreamer four) finds them all in the first
# answer and plays from the start without a stall.
FIRST_SEGMENT_SECONDS = 1.0
SECOND_SEGMENT_FRACTION = 1 / 3
# The last segments of a track are encoded one at a time, so that the workers
# producing it in the background can end together: a 200 s track in pairs was
# three pairs and a stub, and one worker idled for 1.5 s of 3.7 while the
# other made the last pair. Its whole-track ratio went from 0.75-0.77 to
# 0.63-0.65; tracks whose pairs already shared out well paid 0.01-0.02 (two
# more pre-rolls and encoder start-ups). Three alternating runs each, on the
# sources and peer chains of benchmarks/corpus.py.
TAIL_SINGLE_SEGMENTS = 4


@dataclass(frozen=True)
class Segment:
    """One media segment: samples [start, end) of the track."""

    index: int
    start: int
    end: int
    first_frame: int  # global frame index of `start`
    end_frame: int  # one past the last frame touched by this segment

    @property
    def samples(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class SegmentPlan:
    """The segment grid of one track at one sample rate."""

    length: int  # track length in samples
    rate: int  # samples per second
    frames_per_segment: int
    segments: tuple[Segment, ...]

    @property
    def total_frames(self) -> int:
        """Codec frames needed to cover the track: ceil(length / 1024)."""
        return -(-self.length // FRAME_SAMPLES)

    def __len__(self) -> int:
        return len(self.segments)

    def __getitem__(self, index: int) -> Segment:
        return self.segments[index]

    def encode_units(self, per_unit: int) -> tuple[range, ...]:
        """Runs of consecutive segments encoded together: one encoder, one pre-roll (§6).

        Segment 0 alone, since a listener waits for it; the rest of the ramp
        together; then full-length segments `per_unit` at a time, but the
        last TAIL_SINGLE_SEGMENTS alone. per_unit = 1: every segment alone.
        A pure function of the plan, like the boundaries: a segment's bytes
        come from its unit's encode, whoever asks for which segment first.
        """
        count = len(self.segments)
        if per_unit <= 1:
            return tuple(range(i, i + 1) for i in range(count))
        ramp_end = 1
        while (
            ramp_end < count
            and self.segments[ramp_end].end_frame - self.segments[ramp_end].first_frame
            < self.frames_per_segment
        ):
            ramp_end += 1
        units = [range(0, 1)]
        if ramp_end > 1:
            units.append(range(1, ramp_end))
        tail = max(count - TAIL_SINGLE_SEGMENTS, ramp_end)
        units += [range(i, min(i + per_unit, tail)) for i in range(ramp_end, tail, per_unit)]
        units += [range(i, i + 1) for i in range(tail, count)]
        return tuple(units)

    def unit_of(self, index: int, per_unit: int) -> range:
        """The encode unit that holds segment `index`."""
        for unit in self.encode_units(per_unit):
            if index in unit:
                return unit
        raise IndexError(f"segment {index} is not in the plan ({len(self.segments)} segments)")

    def index_at(self, sample: int) -> int:
        """Index of the segment containing `sample` (clamped to the track)."""
        starts = [seg.start for seg in self.segments]
        return max(0, bisect_right(starts, sample) - 1)


def default_ramp(segment_seconds: float) -> tuple[float, ...]:
    """Durations of the first segments: 1 s, then a third of a segment (10 s of 30)."""
    return (FIRST_SEGMENT_SECONDS, segment_seconds * SECOND_SEGMENT_FRACTION)


def plan_segments(
    length: int, rate: int, segment_seconds: float, ramp: tuple[float, ...] | None = None
) -> SegmentPlan:
    """Cut `length` samples into a short ramp, then segments of about `segment_seconds`.

    The ramp (`default_ramp` unless given; entries longer than half a segment
    are dropped) makes the first segment quick to produce, so playback starts
    fast. Every segment is a whole number of 1024-sample frames, the number
    nearest to its duration; only the last may end inside a frame.
    """
    if ramp is None:
        ramp = default_ramp(segment_seconds)
    if length <= 0:
        raise ValueError(f"track length must be positive, got {length} samples")
    if rate <= 0:
        raise ValueError(f"sample rate must be positive, got {rate}")
    if not (0.5 <= segment_seconds <= 600):
        raise ValueError(f"segment seconds must be in [0.5, 600], got {segment_seconds}")
    frames_per_segment = max(1, round(segment_seconds * rate / FRAME_SAMPLES))
    ramp_frames = [
        max(1, round(r * rate / FRAME_SAMPLES)) for r in ramp if 2 * r <= segment_seconds
    ]
    total_frames = -(-length // FRAME_SAMPLES)
    segments: list[Segment] = []
    first = 0
    while first < total_frames:
        index = len(segments)
        size = ramp_frames[index] if index < len(ramp_frames) else frames_per_segment
        end_frame = min(first + size, total_frames)
        end = min(end_frame * FRAME_SAMPLES, length)
        segments.append(Segment(index, first * FRAME_SAMPLES, end, first, end_frame))
        first = end_frame
    return SegmentPlan(length, rate, frames_per_segment, tuple(segments))


@dataclass(frozen=True)
class WindowSettings:
    """Context padding and crossfade overlap around each segment (§5), in samples."""

    context: int
    overlap: int

    @classmethod
    def from_seconds(
        cls,
        rate: int,
        context_seconds: float = DEFAULT_CONTEXT_SECONDS,
        overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
    ) -> WindowSettings:
        return cls(round(context_seconds * rate), round(overlap_seconds * rate))
