"""The one place that composes decode, chain, plan and encode into "segment n of a track".

The processed program is one global signal, defined piecewise:

- window k renders source samples [s_k - context, e_k + tail + after]
  through the chain and keeps [s_k, e_k + tail) (`rendering k`), where the
  tail is the overlap (at least an encoder's post-roll) and `after` is the
  context after, cut to the processor's reach when it declares one: every
  stage of the chain is causal but the limiter, which looks 5 ms ahead, so
  samples further on cannot change the kept ones (tested: identical);
  the track starts at rest, so no window reaches before sample 0 (as the
  whole-track reference does not);
- on segment k's head [s_k, s_k + overlap) the program is a crossfade with
  complementary gains from rendering k-1 to rendering k (the renderings are
  coherent, so gains summing to one keep the level flat); elsewhere in
  segment k it is rendering k.

AAC segments are encoded in units of consecutive segments
(`SegmentPlan.encode_units`): each unit encodes that signal from
`PREROLL_FRAMES` before its first segment to 2 frames after its last, and
each segment keeps exactly its own packets (§6); the post-roll continues
the last segment's own rendering. A FLAC segment encodes its samples
alone. Everything is a pure function of (source content, preset,
intensity, rendition, index, settings).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf

from processing import chain
from processing.analysis import Analysis, analyze
from processing.decode import AudioSource, Samples
from processing.encode import (
    AacEncodes,
    Encoder,
    Packet,
    Rendition,
    encode_flac,
    flac_argv,
    to_pcm24,
)
from processing.errors import EncodeStopped
from processing.plan import DEFAULT_CONTEXT_SECONDS, FRAME_SAMPLES, SegmentPlan, WindowSettings

# Seam excess against a continuous encode, worst window over the 5 music
# tracks, 10 s segments, both AAC renditions (benchmarks/seams.py): at a
# target bit rate, whose rate control settles slowly, 64 frames gave +4.4 dB,
# 128 +2.7 dB (target 3); at the renditions' constant quality 16 and 32
# frames both give +0.49 dB (mean +0.07 at most). 32 frames is 0.75 s.
PREROLL_FRAMES = 32
POSTROLL_FRAMES = 2  # the last kept packet needs the next frame's MDCT input
CHAIN_REACH = 4096  # samples rendered past the kept ones: the chain looks ~1k ahead (limiter)
RENDER_MEMO_SIZE = 2  # renderings k-1 and k
FEED_BLOCK = 1 << 16  # samples of program handed to an encoder at a time
# Input an AAC encode a listener waits for may have queued in its pipe: 1 MiB
# is 3 s of stereo float32, which ffmpeg encodes (~60 ms) while the unit's
# next window renders (~80 ms) instead of waiting for it. Cold seeks, idle
# server: the second segment of a pair 1.86 s instead of 1.93, the first
# 1.20 instead of 1.28 (medians of 4). Background encodes keep the default
# (64 KiB): both cores are busy there anyway, and with the larger pipe on
# every encode the whole track measured 0.03-0.06 s slower (twice, medians
# of 7 and 8).
LISTENER_INPUT_BUFFER = 1 << 20


@dataclass(frozen=True)
class EncodedSegment:
    """Packets of one segment and the global sample position (tfdt) of the first."""

    index: int
    base_decode_time: int
    packets: tuple[Packet, ...]


# (n, channels) float32, where the kept part starts and the global sample of its
# first row → the same shape, finished from the kept part on
Processor = Callable[[np.ndarray, int, int], np.ndarray]


def chain_processor(rate: int, analysis: Analysis | None, intensity: float) -> Processor | None:
    """The enhancement chain as a processor; None when it would return its input."""
    if analysis is None or chain.PRESETS[analysis.params.preset].bypass or intensity <= 0:
        return None
    return partial(_run_chain, rate=rate, params=analysis.params, intensity=intensity)


def _run_chain(
    audio: np.ndarray,
    keep_from: int,
    first: int,
    *,
    rate: int,
    params: chain.ChainParams,
    intensity: float,
) -> np.ndarray:
    return chain.process(audio, rate, params, intensity, in_place=True, keep_from=keep_from)


@dataclass
class _Rendering:
    """Rendering k, or its end: samples [first, e_k + tail) of the program's window k."""

    first: int  # global sample index of audio[0]
    audio: np.ndarray

    def covers(self, a: int) -> bool:
        return a >= self.first


class Renderer:
    """Renders the processed program of one track through one processor (None = bypass).

    reach: how many samples ahead of its output the processor looks (None:
    unknown, the full context after each window is rendered).
    history: how many samples before a segment its encode reads (the
    pre-roll); an older rendering is kept only for what later encodes read.
    The processor may overwrite its input (the window the renderer read).
    """

    def __init__(
        self,
        source: Samples,
        plan: SegmentPlan,
        window: WindowSettings,
        process: Processor | None,
        reach: int | None = None,
        history: int | None = None,
    ) -> None:
        self.source = source
        self.plan = plan
        self.window = window
        self.process = process
        self.bypass = process is None
        self.tail = max(window.overlap, POSTROLL_FRAMES * FRAME_SAMPLES)
        self.after = window.context if reach is None else min(window.context, reach)
        self.history = PREROLL_FRAMES * FRAME_SAMPLES if history is None else history
        self._memo: dict[int, _Rendering] = {}
        self._decoded: _Rendering | None = None  # source samples the next window reads again

    def _render(self, k: int) -> _Rendering:
        seg = self.plan[k]
        start = max(seg.start - self.window.context, 0)
        audio = self._read(start, seg.end + self.tail + self.after)
        if self.source.exact_seeks and k + 1 < len(self.plan):
            # Window k + 1 reads the context and overlap again: keep them
            # (before the chain overwrites them) instead of decoding twice.
            reread = max(self.plan[k + 1].start - self.window.context, start)
            self._decoded = _Rendering(reread, audio[reread - start :].copy())
        assert self.process is not None
        out = self.process(audio, seg.start - start, start)
        return _Rendering(seg.start, out[seg.start - start : seg.end + self.tail - start])

    def _read(self, start: int, stop: int) -> np.ndarray:
        """Source samples [start, stop), the front from the last window's read when it has it."""
        known = self._decoded
        if known is None or not known.first <= start < known.first + len(known.audio):
            return self.source.read(start, stop)
        audio = np.empty((stop - start, self.source.channels), dtype=np.float32)
        have = min(known.first + len(known.audio), stop) - start
        audio[:have] = known.audio[start - known.first : start - known.first + have]
        if have < len(audio):
            self.source.read(start + have, stop, out=audio[have:])
        return audio

    def _rendering(self, k: int, a: int) -> _Rendering:
        """Rendering k from sample a on (rendered again if the memo kept less)."""
        known = self._memo.get(k)
        if known is not None and known.covers(a):
            return known
        rendering = self._render(k)
        self._remember(k, rendering)
        return rendering

    def rendering(self, k: int) -> np.ndarray:
        """Rendering k over [s_k, e_k + tail): window k through the chain, context trimmed."""
        return self._rendering(k, self.plan[k].start).audio

    def _remember(self, k: int, rendering: _Rendering) -> None:
        """Keep rendering k and the one before: production moves forward from k.

        Everything else goes, after k too: a worker that jumps back (a lane
        taking over another's run) must keep what it renders now.
        """
        self._memo = {j: r for j, r in self._memo.items() if k - RENDER_MEMO_SIZE < j < k}
        self._memo[k] = rendering
        self._trim_before(k)

    def _trim_before(self, index: int) -> None:
        """Of each rendering j < index keep only what segments from `index` on read.

        That is its end, from the pre-roll of segment j + 1 on (the crossfade
        included): a copy a few seconds long instead of a whole window.
        """
        for j, older in list(self._memo.items()):
            if j < index and j + 1 < len(self.plan):
                keep = max(self.plan[j + 1].start - self.history, older.first)
                if keep > older.first:
                    self._memo[j] = _Rendering(keep, older.audio[keep - older.first :].copy())

    def prefetch(self, index: int) -> None:
        """Render windows index-1 and index (what segment `index` needs), one at a time.

        In order, each older rendering cut to its end before the next window
        is read, so that a worker holds one window, not two (a seek renders
        both).
        """
        if self.bypass:
            return
        for k in (index - 1, index):
            if k >= 0 and k not in self._memo:
                self._trim_before(k)
                self._remember(k, self._render(k))
        self._trim_before(index)

    def program_blocks(
        self, start: int, stop: int, post_roll_from: int | None = None
    ) -> Iterator[np.ndarray]:
        """`program(start, stop, post_roll_from)` in successive blocks of FEED_BLOCK samples."""
        if self.bypass:  # one read (a seek can cost more than the decoding)
            whole = self.source.read(start, stop)
            yield from (whole[lo : lo + FEED_BLOCK] for lo in range(0, len(whole), FEED_BLOCK))
            return
        fetched: dict[int, _Rendering] = {}  # shared by the blocks: each rendering made once
        for lo in range(start, stop, FEED_BLOCK):
            yield self.program(lo, min(lo + FEED_BLOCK, stop), post_roll_from, fetched)

    def _crossfade(self, k: int) -> int:
        return min(self.window.overlap, self.plan[k].samples)

    def program(
        self,
        start: int,
        stop: int,
        post_roll_from: int | None = None,
        fetched: dict[int, _Rendering] | None = None,
    ) -> np.ndarray:
        """The global processed signal over [start, stop), zeros outside the track.

        From `post_roll_from` on (an encoder's post-roll past the end of the
        segment it encodes), the signal continues as that segment's own
        rendering instead of crossfading into the next one: the two
        renderings are coherent (they differ by 80 dB less than the program),
        the decoder hears those 2 frames from the next segment's encode, and
        no third window is rendered for them.

        fetched: the renderings this call (and others sharing the dict) have
        used, kept whole whatever the memo keeps.
        """
        if self.bypass:
            return self.source.read(start, stop)
        out = np.zeros((max(stop - start, 0), self.source.channels), dtype=np.float32)
        lo, hi = max(start, 0), min(stop, self.plan.length)
        if fetched is None:
            fetched = {}

        def piece(k: int, a: int, b: int) -> np.ndarray:
            """Rendering k over global samples [a, b)."""
            if k not in fetched or not fetched[k].covers(a):
                fetched[k] = self._rendering(k, a)
            rendering = fetched[k]
            return rendering.audio[a - rendering.first : b - rendering.first]

        if post_roll_from is not None and post_roll_from < hi:
            a = max(lo, post_roll_from)
            out[a - start : hi - start] = piece(self.plan.index_at(post_roll_from - 1), a, hi)
            hi = a
        if hi <= lo:
            return out
        for k in range(self.plan.index_at(lo), self.plan.index_at(hi - 1) + 1):
            seg = self.plan[k]
            a, b = max(lo, seg.start), min(hi, seg.end)
            target = out[a - start : b - start]
            target[:] = piece(k, a, b)
            fade = self._crossfade(k)
            if k > 0 and a < seg.start + fade:
                # Head of segment k: complementary crossfade from rendering k-1.
                h = min(b, seg.start + fade)
                incoming = ((np.arange(a, h) - seg.start + 0.5) / fade).astype(np.float32)[:, None]
                head = target[: h - a]
                head *= incoming
                head += piece(k - 1, a, h) * (np.float32(1) - incoming)
        return out


def unit_input(plan: SegmentPlan, unit: range) -> tuple[int, int]:
    """The global frame where an AAC unit's encoder input starts, and the sample where
    it stops: `PREROLL_FRAMES` before the unit (fewer at the track's start) to
    `POSTROLL_FRAMES` after it (or the track's end)."""
    first, last = plan[unit[0]], plan[unit[-1]]
    origin = first.first_frame - min(PREROLL_FRAMES, first.first_frame)
    return origin, min((last.end_frame + POSTROLL_FRAMES) * FRAME_SAMPLES, plan.length)


class UnitEncoder:
    """The ffmpeg of one or more encode units of a rendition, started before its input.

    `encode` takes the units in the order given, each an encode of its own
    (§6): AAC units share one ffmpeg (`AacEncodes`), so a run of units pays
    one start-up; only the last may end off the frame grid (at the track's
    end: `runs`). FLAC units are single segments, one per encoder.
    """

    @staticmethod
    def runs(plan: SegmentPlan, rendition: Rendition, units: list[range]) -> list[list[range]]:
        """`units` cut into runs that can share an encoder, in order."""
        runs: list[list[range]] = []
        for unit in units:
            if (
                not runs
                or rendition.codec == "flac"
                or unit_input(plan, runs[-1][-1])[1] == plan.length
            ):
                runs.append([])
            runs[-1].append(unit)
        return runs

    def __init__(
        self,
        plan: SegmentPlan,
        rendition: Rendition,
        units: list[range],
        channels: int,
        listener: bool = False,
    ):
        """listener: someone waits for these units (`LISTENER_INPUT_BUFFER`)."""
        self.plan = plan
        self.rendition = rendition
        self.units = list(units)
        self._next = 0
        rate = plan.rate
        if rendition.codec == "flac":
            if len(self.units) != 1 or len(self.units[0]) != 1:
                raise ValueError("FLAC encodes one segment at a time")
            self._encoder: Encoder | AacEncodes = Encoder(
                partial(flac_argv, rate, channels), "FLAC encoding"
            )
            return
        if len(self.runs(plan, rendition, self.units)) != 1:
            raise ValueError("only the last unit of a shared encoder may reach the track's end")
        lengths = []
        for unit in self.units:
            origin, stop = unit_input(plan, unit)
            lengths.append(stop - origin * FRAME_SAMPLES)
        buffer = LISTENER_INPUT_BUFFER if listener else None
        self._encoder = AacEncodes(rate, channels, rendition.aac_quality, lengths, buffer)

    def abort(self) -> None:
        """Stop ffmpeg: the units not encoded yet will not be (idempotent)."""
        self._encoder.abort()

    def encode(
        self,
        renderer: Renderer,
        early: Callable[[EncodedSegment], None] | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> list[EncodedSegment]:
        """Encode the next unit: its segments, each keeping exactly its own packets (§6).

        AAC: the program from the pre-roll before the unit's first segment to
        2 frames after its last (`unit_input`); inside the unit the encoder
        runs on, as in a continuous encode. Windows are rendered one segment
        at a time, ahead of the samples fed (`Renderer.prefetch`).
        early: called (on the encoder's reader thread) with each segment but
        the last as soon as its packets are out, while the rest is still
        encoding; every segment is also in the returned list.
        stop: asked before the unit's windows are rendered and before each
        block of input; when it answers True, ffmpeg is killed and
        EncodeStopped raised (the segments handed to `early` stay made).
        """
        unit = self.units[self._next]
        self._next += 1
        plan = self.plan

        def checked(blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
            for block in blocks:
                if stop is not None and stop():
                    raise EncodeStopped(f"stopped in segment {unit[0]}..{unit[-1]}")
                yield block

        try:
            if stop is not None and stop():
                raise EncodeStopped(f"stopped before segment {unit[0]}")
            renderer.prefetch(unit[0])  # the heavy part, before ffmpeg is fed
        except BaseException:
            self.abort()
            raise
        if isinstance(self._encoder, Encoder):
            (index,) = unit
            seg = plan[index]
            blocks = (to_pcm24(b) for b in checked(renderer.program_blocks(seg.start, seg.end)))
            packets = encode_flac(blocks, plan.rate, self._encoder)
            return [EncodedSegment(index, seg.start, tuple(packets))]
        origin, feed_stop = unit_input(plan, unit)

        def feed() -> Iterator[np.ndarray]:
            for index in unit:
                seg = plan[index]
                if index != unit[0]:
                    renderer.prefetch(index)
                a = origin * FRAME_SAMPLES if index == unit[0] else seg.start
                if index != unit[-1]:
                    yield from renderer.program_blocks(a, seg.end)
                else:  # the post-roll continues the last segment's own rendering
                    yield from renderer.program_blocks(a, feed_stop, post_roll_from=seg.end)

        def segment_of(index: int, packets: list[Packet]) -> EncodedSegment:
            seg = plan[index]
            # Local packet i is global packet origin + i. Keep global packets
            # s+1 .. e (segment 0 also keeps the priming packet 0); global
            # packet j decodes to the fixed-lead timeline position j · 1024.
            first_kept = seg.first_frame + 1 if index > 0 else 0
            kept = tuple(packets[first_kept - origin : seg.end_frame - origin + 1])
            if len(kept) != seg.end_frame - first_kept + 1:
                raise AssertionError(f"segment {index}: kept {len(kept)} packets")
            return EncodedSegment(index, first_kept * FRAME_SAMPLES, kept)

        waiting = list(unit[:-1]) if early is not None else []

        def arrived(packets: list[Packet]) -> None:
            while waiting and len(packets) > plan[waiting[0]].end_frame - origin:
                assert early is not None
                early(segment_of(waiting.pop(0), packets))

        packets = self._encoder.encode(checked(feed()), on_packets=arrived)
        return [segment_of(index, packets) for index in unit]


def encode_unit(
    renderer: Renderer,
    rendition: Rendition,
    unit: range,
    early: Callable[[EncodedSegment], None] | None = None,
) -> list[EncodedSegment]:
    """Encode one encode unit (`SegmentPlan.encode_units`) alone (`UnitEncoder.encode`)."""
    encoder = UnitEncoder(renderer.plan, rendition, [unit], renderer.source.channels)
    return encoder.encode(renderer, early)


def render_whole(source: Samples, analysis: Analysis | None, intensity: float) -> np.ndarray:
    """The reference: the whole track through the chain in one pass (no windows)."""
    audio = source.read(0, source.length)
    if analysis is None:
        return audio
    return chain.process(audio, source.rate, analysis.params, intensity, in_place=True)


def render_file(
    sources: Sequence[Path],
    out: Path,
    preset: str,
    intensity: float,
    scratch: Path,
    crossfade: float = 0.0,
    gain: str = "track",
) -> None:
    """`hls-origin render`: write the whole-track reference as WAV (float) or FLAC (24-bit).

    Several sources are a queue (SPEC §10): one timeline at the first one's
    rate, joined with `crossfade` seconds; gain `album` puts the whole timeline
    through one chain, `track` each track through its own (`render_tracks`).
    """
    from processing.timeline import Timeline, TrackChains, render_tracks

    first = AudioSource(sources[0], scratch, "render-0")
    tracks = [first] + [
        AudioSource(path, scratch, f"render-{i}", rate=first.rate)
        for i, path in enumerate(sources[1:], start=1)
    ]
    source: Samples = first if len(tracks) == 1 else Timeline(tracks, round(crossfade * first.rate))
    level = float(chain.canonical_intensity(intensity))
    if isinstance(source, Timeline) and gain == "track" and preset != "original" and level > 0:
        chains = TrackChains(source, lambda i: _chain_of(tracks[i], source.rate, preset, level))
        audio = render_tracks(source, chains, round(DEFAULT_CONTEXT_SECONDS * source.rate))
    else:
        analysis = None if preset == "original" else analyze(source, preset)
        audio = render_whole(source, analysis, level)
    if out.suffix.lower() == ".flac":
        sf.write(str(out), to_pcm24(audio), source.rate, subtype="PCM_24", format="FLAC")
    else:
        sf.write(str(out), audio, source.rate, subtype="FLOAT", format="WAV")


def _chain_of(track: Samples, rate: int, preset: str, intensity: float) -> Processor:
    process = chain_processor(rate, analyze(track, preset), intensity)
    assert process is not None  # neither `original` nor intensity 0
    return process
