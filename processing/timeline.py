"""Several sources as one: the timeline of an album or a queue (SPEC §10).

A `Timeline` reads like an `AudioSource` (rate, channels, length,
exact_seeks, `read`), so that the segment plan, the windows with their
context and overlap (§5) and the encode units (§6) run over a queue as over
one track: segments span track boundaries where they fall, and the previous
track is the next one's context. Every track is read at the timeline's rate
(converted once if need be, `AudioSource(rate=...)`); a mono track in a
stereo timeline plays in both channels.

Without crossfade the tracks join sample-exactly: track i starts at
`starts[i]`, the sum of the lengths before it. With a crossfade the next
track starts that much before the end of the one it follows, and the two
are mixed at equal power (cos/sin gains: the tracks are not coherent, so
their powers add).

`TrackChains` gives each track its own enhancement chain (gain `track`):
both chains render a window that spans a join, and the output moves from one
to the other over the crossfade (or `SWITCH_SECONDS` without one), a
complementary blend, since both renderings are of the same input.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence

import numpy as np

from processing.decode import AudioSource
from processing.render import Processor

SWITCH_SECONDS = 0.02  # one chain hands over to the next at a join without crossfade


class Timeline:
    """Tracks end to end (or crossfaded), at one rate and channel count."""

    def __init__(self, tracks: Sequence[AudioSource], crossfade: int = 0) -> None:
        """crossfade: samples each join overlaps (at most half of either track)."""
        if not tracks:
            raise ValueError("a timeline needs at least one track")
        rates = {track.rate for track in tracks}
        if len(rates) != 1:
            raise ValueError(f"tracks at several rates {sorted(rates)}: convert them first")
        if crossfade < 0:
            raise ValueError(f"crossfade must not be negative, got {crossfade}")
        self.tracks = list(tracks)
        self.rate = tracks[0].rate
        self.channels = max(track.channels for track in tracks)
        lengths = [track.length for track in tracks]
        # fades[i]: how much track i overlaps the one before it (0 for the first)
        self.fades = [0] + [
            min(crossfade, a // 2, b // 2) for a, b in zip(lengths, lengths[1:], strict=False)
        ]
        self.starts = [0]
        for length, fade in zip(lengths, self.fades[1:], strict=False):
            self.starts.append(self.starts[-1] + length - fade)
        self.length = self.starts[-1] + lengths[-1]
        self.exact_seeks = all(track.exact_seeks for track in tracks)

    def track_at(self, sample: int) -> int:
        """Index of the track that plays `sample` (the incoming one in a crossfade,
        clamped to the timeline)."""
        return min(max(bisect_right(self.starts, sample) - 1, 0), len(self.tracks) - 1)

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Samples [start, stop) as float32 (n, channels); zeros outside the timeline."""
        if out is None:
            out = np.zeros((max(stop - start, 0), self.channels), dtype=np.float32)
        else:
            out[:] = 0.0
        if stop <= start:
            return out
        first = max(self.track_at(max(start, 0)) - 1, 0)
        last = self.track_at(min(stop, self.length) - 1)
        for index in range(first, last + 1):
            track, offset = self.tracks[index], self.starts[index]
            lo, hi = max(start, offset), min(stop, offset + track.length)
            if hi <= lo:
                continue
            target = out[lo - start : hi - start]
            if track.channels == self.channels and not self._fades(index, lo, hi):
                track.read(lo - offset, hi - offset, out=target)  # alone there: no copy
                continue
            part = track.read(lo - offset, hi - offset)
            self._fade(index, lo, part)
            target += part  # a mono track fills both channels
        return out

    def _fades(self, index: int, lo: int, hi: int) -> bool:
        """Whether track `index` fades in or out anywhere in [lo, hi)."""
        offset, end = self.starts[index], self.starts[index] + self.tracks[index].length
        fade_out = self.fades[index + 1] if index + 1 < len(self.tracks) else 0
        return lo < offset + self.fades[index] or hi > end - fade_out

    def _fade(self, index: int, lo: int, part: np.ndarray) -> None:
        """Equal-power gains of track `index`'s samples [lo, lo + len(part)) in its fades."""
        offset, length = self.starts[index], self.tracks[index].length
        fade_in = self.fades[index]
        fade_out = self.fades[index + 1] if index + 1 < len(self.tracks) else 0
        hi = lo + len(part)
        if fade_in and lo < offset + fade_in:
            t = np.arange(lo, min(hi, offset + fade_in)) - offset
            part[: len(t)] *= np.sin(np.pi / 2 * (t + 0.5) / fade_in).astype(np.float32)[:, None]
        end = offset + length
        if fade_out and hi > end - fade_out:
            t = np.arange(max(lo, end - fade_out), hi) - (end - fade_out)
            gains = np.cos(np.pi / 2 * (t + 0.5) / fade_out).astype(np.float32)[:, None]
            part[len(part) - len(t) :] *= gains


class TrackChains:
    """A processor that runs each track's own chain over its part of the timeline.

    processor_of(i): track i's chain (asked for once, when a window first
    reaches track i: a queue's first segment analyses its first track only).
    reach: how far past a sample a chain reads to make it (its output up to a
    sample is the same whatever follows beyond that); None: it reads all.
    """

    def __init__(
        self,
        timeline: Timeline,
        processor_of: Callable[[int], Processor],
        reach: int | None = None,
    ) -> None:
        self.timeline = timeline
        self.reach = reach
        self._processor_of = processor_of
        self._processors: dict[int, Processor] = {}
        switch = round(SWITCH_SECONDS * timeline.rate)
        self.switches = [
            max(fade, min(switch, track.length // 4))
            for fade, track in zip(timeline.fades, timeline.tracks, strict=True)
        ]

    def load(self, start: int, stop: int) -> None:
        """Make the chain of every track that samples [start, stop) may need."""
        lo = max(self.timeline.track_at(max(start, 0)) - 1, 0)
        for index in range(lo, self.timeline.track_at(max(stop, 0)) + 1):
            self.processor(index)

    def processor(self, index: int) -> Processor:
        if index not in self._processors:
            self._processors[index] = self._processor_of(index)
        return self._processors[index]

    def weight(self, index: int, lo: int, hi: int) -> np.ndarray:
        """Share of track `index`'s chain in the output over global samples [lo, hi)."""
        t = np.arange(lo, hi, dtype=np.float64)
        starts, switches = self.timeline.starts, self.switches

        def ramp(i: int) -> np.ndarray:  # 0 before track i's switch, 1 after it
            return np.clip((t - starts[i] + 0.5) / switches[i], 0.0, 1.0)

        weight = ramp(index) if index > 0 else np.ones_like(t)
        if index + 1 < len(starts):
            weight *= 1.0 - ramp(index + 1)
        return weight

    def parts(self, index: int, lo: int, hi: int) -> tuple[int, int, int, int]:
        """Where track `index`'s share (`weight`) ramps up, is 1 and ramps down,
        clipped to [lo, hi): it is 0 before `begin` and from `end` on, 1 on
        [full_from, full_to), a ramp between (begin <= full_from <= full_to <= end)."""
        starts, switches = self.timeline.starts, self.switches
        begin, full_from = (starts[index], starts[index] + switches[index]) if index else (lo, lo)
        if index + 1 < len(starts):
            full_to, end = starts[index + 1], starts[index + 1] + switches[index + 1]
        else:
            full_to, end = hi, hi
        begin, full_from, full_to, end = (
            min(max(b, lo), hi) for b in (begin, full_from, full_to, end)
        )
        return begin, min(full_from, full_to), full_to, end

    def __call__(self, audio: np.ndarray, keep_from: int, first: int) -> np.ndarray:
        lo, hi = first + keep_from, first + len(audio)
        timeline = self.timeline
        candidates = range(
            max(timeline.track_at(lo) - 1, 0), timeline.track_at(max(hi - 1, lo)) + 1
        )
        # each track's parts, in the window's own sample numbers
        parts = {i: [b - first for b in self.parts(i, lo, hi)] for i in candidates}
        active = [i for i, (begin, *_, end) in parts.items() if end > begin]
        if len(active) == 1:
            return self.processor(active[0])(audio, keep_from, first)

        def share(index: int, a: int, b: int) -> np.ndarray:
            return self.weight(index, first + a, first + b).astype(np.float32)[:, None]

        # Summed as rendering times share (at most two shares are above 0 at
        # any sample), but a share is computed only where it ramps (elsewhere
        # it is exactly 1 or 0): no window-long sum, no window-long float64
        # shares (10 MB a track). Each chain but the last renders a copy of
        # the window up to where it hands over, then the last one the window
        # itself, which becomes the output.
        *rest, last = active
        renderings = {}
        for index in rest:
            stop = len(audio) if self.reach is None else parts[index][3] + self.reach
            given = audio[: min(stop, len(audio))].copy()
            renderings[index] = self.processor(index)(given, keep_from, first)
        out = self.processor(last)(audio, keep_from, first)
        begin, full_from, full_to, end = parts[last]
        out[:begin] = 0.0
        out[end:] = 0.0
        for a, b in ((begin, full_from), (full_to, end)):
            out[a:b] *= share(last, a, b)
        for index, rendered in renderings.items():
            begin, full_from, full_to, end = parts[index]
            out[full_from:full_to] = rendered[full_from:full_to]
            for a, b in ((begin, full_from), (full_to, end)):
                out[a:b] += rendered[a:b] * share(index, a, b)
        return out


def render_tracks(timeline: Timeline, chains: TrackChains, context: int) -> np.ndarray:
    """The reference of gain `track`: each track through its own chain in one pass
    (from `context` samples before it, the previous track, to past its hand-over),
    blended at the joins as `TrackChains` blends them."""
    out = np.zeros((timeline.length, timeline.channels), dtype=np.float32)
    starts, count = timeline.starts, len(timeline.tracks)
    for index in range(count):
        begin = starts[index]
        end = (
            starts[index + 1] + chains.switches[index + 1] if index + 1 < count else timeline.length
        )
        lo, hi = max(begin - context, 0), min(end + context, timeline.length)
        rendered = chains.processor(index)(timeline.read(lo, hi), begin - lo, lo)
        share = chains.weight(index, begin, end).astype(np.float32)[:, None]
        out[begin:end] += rendered[begin - lo : end - lo] * share
    return out
