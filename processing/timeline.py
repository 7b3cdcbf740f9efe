"""Several sources as one: the timeline of an album or a queue (SPEC §10).

A `Timeline` reads like an `AudioSource` (rate, channels, length,
exact_seeks, `read`), so that the segment plan, the windows with their
context and overlap (§5) and the encode units (§6) run over a queue as over
one track: segments span track boundaries where they fall, and the previous
track is the next one's context. The tracks join sample-exactly: track i
starts at `starts[i]`, the sum of the lengths before it. Every track is read
at the timeline's rate (converted once if need be, `AudioSource(rate=...)`);
a mono track in a stereo timeline plays in both channels.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate

import numpy as np

from processing.decode import AudioSource


class Timeline:
    """Tracks end to end, at one rate and channel count."""

    def __init__(self, tracks: Sequence[AudioSource]) -> None:
        if not tracks:
            raise ValueError("a timeline needs at least one track")
        rates = {track.rate for track in tracks}
        if len(rates) != 1:
            raise ValueError(f"tracks at several rates {sorted(rates)}: convert them first")
        self.tracks = list(tracks)
        self.rate = tracks[0].rate
        self.channels = max(track.channels for track in tracks)
        self.starts = [0, *accumulate(track.length for track in tracks)][:-1]
        self.length = sum(track.length for track in tracks)
        self.exact_seeks = all(track.exact_seeks for track in tracks)

    def track_at(self, sample: int) -> int:
        """Index of the track that plays `sample` (clamped to the timeline)."""
        return min(max(bisect_right(self.starts, sample) - 1, 0), len(self.tracks) - 1)

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Samples [start, stop) as float32 (n, channels); zeros outside the timeline."""
        if out is None:
            out = np.zeros((max(stop - start, 0), self.channels), dtype=np.float32)
        else:
            out[:] = 0.0
        if stop <= start:
            return out
        first, last = self.track_at(max(start, 0)), self.track_at(min(stop, self.length) - 1)
        for index in range(first, last + 1):
            track, offset = self.tracks[index], self.starts[index]
            lo, hi = max(start, offset), min(stop, offset + track.length)
            if hi <= lo:
                continue
            part = track.read(lo - offset, hi - offset)
            out[lo - start : hi - start] = part if part.shape[1] == self.channels else part[:, :1]
        return out
