"""The one place that composes decode, chain, plan and encode into "segment n of a track".

The processed program is one global signal, defined piecewise:

- window k renders source samples [s_k - context, e_k + overlap + context]
  through the chain and keeps [s_k, e_k + overlap) (`rendering k`);
- on segment k's head [s_k, s_k + overlap) the program is a crossfade with
  complementary gains from rendering k-1 to rendering k (the renderings are
  coherent, so gains summing to one keep the level flat); elsewhere in
  segment k it is rendering k.

Each AAC segment encodes that signal from 64 frames of pre-roll before the
segment to 2 frames after it and keeps exactly its own packets (§6); the
FLAC segment encodes the segment's samples alone. Everything is a pure
function of (source content, preset, intensity, rendition, index, settings).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf

from processing import chain
from processing.analysis import Analysis, analyze
from processing.decode import AudioSource
from processing.encode import (
    Encoder,
    Packet,
    Rendition,
    aac_argv,
    encode_aac,
    encode_flac,
    to_pcm24,
)
from processing.plan import FRAME_SAMPLES, SegmentPlan, WindowSettings

PREROLL_FRAMES = (
    128  # 64 and 96 left +3.3 and +5.8 dB seams on some boundaries; 128 (3 s) stays under 2 dB
)
POSTROLL_FRAMES = 2  # the last kept packet needs the next frame's MDCT input
HEAD_MARGIN = 4096  # samples rendered past a head rendering (limiter look-ahead is ~0.5k)
RENDER_MEMO_SIZE = 2  # renderings k-1 and k; the next window is rendered as a head only


@dataclass(frozen=True)
class EncodedSegment:
    """Packets of one segment and the global sample position (tfdt) of the first."""

    index: int
    base_decode_time: int
    packets: tuple[Packet, ...]


Processor = Callable[[np.ndarray], np.ndarray]  # (n, channels) float32 → same shape


def chain_processor(rate: int, analysis: Analysis | None, intensity: float) -> Processor | None:
    """The enhancement chain as a processor; None when it would return its input."""
    if analysis is None or chain.PRESETS[analysis.params.preset].bypass or intensity <= 0:
        return None
    return partial(_run_chain, rate=rate, params=analysis.params, intensity=intensity)


def _run_chain(
    audio: np.ndarray, *, rate: int, params: chain.ChainParams, intensity: float
) -> np.ndarray:
    return chain.process(audio, rate, params, intensity)


class Renderer:
    """Renders the processed program of one track through one processor (None = bypass)."""

    def __init__(
        self,
        source: AudioSource,
        plan: SegmentPlan,
        window: WindowSettings,
        process: Processor | None,
    ) -> None:
        self.source = source
        self.plan = plan
        self.window = window
        self.process = process
        self.bypass = process is None
        self._memo: OrderedDict[int, np.ndarray] = OrderedDict()
        self._heads: dict[tuple[int, int], np.ndarray] = {}

    def rendering(self, k: int) -> np.ndarray:
        """Rendering k over [s_k, e_k + overlap): window k through the chain, context trimmed."""
        if k in self._memo:
            self._memo.move_to_end(k)
            return self._memo[k]
        seg = self.plan[k]
        ctx, ovl = self.window.context, self.window.overlap
        audio = self.source.read(seg.start - ctx, seg.end + ovl + ctx)
        assert self.process is not None
        out = self.process(audio)
        kept = np.ascontiguousarray(out[ctx : len(out) - ctx])
        self._memo[k] = kept
        if len(self._memo) > RENDER_MEMO_SIZE:
            self._memo.popitem(last=False)
        return kept

    def head_rendering(self, k: int, samples: int) -> np.ndarray:
        """The first `samples` of rendering k from a window cut short after them.

        Every stage reaches at most a few ms ahead, so this equals rendering k
        there (to rounding); the post-roll of segment k-1 needs no more.
        """
        key = (k, samples)
        if key in self._heads:
            return self._heads[key]
        seg = self.plan[k]
        ctx = self.window.context
        audio = self.source.read(seg.start - ctx, seg.start + samples + HEAD_MARGIN)
        assert self.process is not None
        head = np.ascontiguousarray(self.process(audio)[ctx : ctx + samples])
        self._heads = {key: head}
        return head

    def _crossfade(self, k: int) -> int:
        return min(self.window.overlap, self.plan[k].samples)

    def program(self, start: int, stop: int, post_roll_from: int | None = None) -> np.ndarray:
        """The global processed signal over [start, stop), zeros outside the track.

        From `post_roll_from` on (an encoder's post-roll into the next
        segment), the next segment's rendering comes from `head_rendering`,
        always, so that the bytes never depend on what happens to be memoized.
        """
        if self.bypass:
            return self.source.read(start, stop)
        out = np.zeros((max(stop - start, 0), self.source.channels), dtype=np.float32)
        lo, hi = max(start, 0), min(stop, self.plan.length)
        if hi <= lo:
            return out
        for k in range(self.plan.index_at(lo), self.plan.index_at(hi - 1) + 1):
            seg = self.plan[k]
            a, b = max(lo, seg.start), min(hi, seg.end)
            if post_roll_from is not None and seg.start >= post_roll_from:
                piece = self.head_rendering(k, b - seg.start)[a - seg.start :].copy()
            else:
                piece = self.rendering(k)[a - seg.start : b - seg.start].copy()
            fade = self._crossfade(k)
            if k > 0 and a < seg.start + fade:
                # Head of segment k: complementary crossfade from rendering k-1.
                prev = self.plan[k - 1]
                h = min(b, seg.start + fade)
                incoming = ((np.arange(a, h) - seg.start + 0.5) / fade).astype(np.float32)[:, None]
                older = self.rendering(k - 1)[a - prev.start : h - prev.start]
                piece[: h - a] = older * (np.float32(1) - incoming) + piece[: h - a] * incoming
            out[a - start : b - start] = piece
        return out


def encode_segment(renderer: Renderer, rendition: Rendition, index: int) -> EncodedSegment:
    """Encode segment `index` of the renderer's program for one rendition (§6)."""
    plan = renderer.plan
    seg = plan[index]
    rate = renderer.source.rate
    if rendition.codec == "flac":
        pcm = to_pcm24(renderer.program(seg.start, seg.end))
        return EncodedSegment(index, seg.start, tuple(encode_flac(pcm, rate)))
    s, e = seg.first_frame, seg.end_frame
    preroll = min(PREROLL_FRAMES, s)
    feed_start = (s - preroll) * FRAME_SAMPLES
    feed_stop = min((e + POSTROLL_FRAMES) * FRAME_SAMPLES, plan.length)
    bitrate = rendition.nominal_bitrate(renderer.source.channels)
    encoder = Encoder(aac_argv(rate, renderer.source.channels, bitrate), "AAC encoding")
    try:
        pcm = renderer.program(feed_start, feed_stop, post_roll_from=seg.end)
    except BaseException:
        encoder.abort()
        raise
    packets = encode_aac(pcm, rate, bitrate, encoder)
    # Local packet i is global packet (s - preroll) + i. Keep global packets
    # s+1 .. e (segment 0 also keeps the priming packet 0).
    first_kept = s + 1 if index > 0 else 0
    last_kept = e
    local = slice(first_kept - (s - preroll), last_kept - (s - preroll) + 1)
    kept = tuple(packets[local])
    expected = last_kept - first_kept + 1
    if len(kept) != expected:
        raise AssertionError(f"segment {index}: kept {len(kept)} packets, expected {expected}")
    # Global packet j decodes to the fixed-lead timeline position j · 1024.
    return EncodedSegment(index, first_kept * FRAME_SAMPLES, kept)


def render_whole(source: AudioSource, analysis: Analysis | None, intensity: float) -> np.ndarray:
    """The reference: the whole track through the chain in one pass (no windows)."""
    audio = source.read(0, source.length)
    if analysis is None:
        return audio
    return chain.process(audio, source.rate, analysis.params, intensity)


def render_file(source_path: Path, out: Path, preset: str, intensity: float, scratch: Path) -> None:
    """`hls-origin render`: write the whole-track reference as WAV (float) or FLAC (24-bit)."""
    source = AudioSource(source_path, scratch, "render")
    analysis = None if preset == "original" else analyze(source, preset)
    audio = render_whole(source, analysis, float(chain.canonical_intensity(intensity)))
    if out.suffix.lower() == ".flac":
        sf.write(str(out), to_pcm24(audio), source.rate, subtype="PCM_24", format="FLAC")
    else:
        sf.write(str(out), audio, source.rate, subtype="FLOAT", format="WAV")
