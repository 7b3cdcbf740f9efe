"""Presets and the enhancement chain: EQ → compressor → gain → true-peak limiter.

Every parameter that must not jump between segments (corrective EQ, gain to
the loudness target) comes from the per-track `Analysis`; the chain itself is
a pure function of (audio, rate, preset, analysis, intensity).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from processing import dsp
from processing.dsp import Biquad, Compressor, Limiter
from processing.params import PRESET_NAMES, canonical_intensity

__all__ = ["PRESETS", "PRESET_NAMES", "ChainParams", "Preset", "canonical_intensity", "process"]


@dataclass(frozen=True)
class Preset:
    """A named chain: preset EQ, compressor, loudness target (LUFS)."""

    name: str
    target_lufs: float
    eq: tuple[Biquad, ...] = ()
    compressor: Compressor | None = None
    corrective_eq: bool = False  # add the analysis' tilt correction
    limiter: Limiter = Limiter()

    @property
    def bypass(self) -> bool:
        return self.name == "original"


PRESETS: dict[str, Preset] = {
    "original": Preset("original", target_lufs=float("nan")),
    "adaptive": Preset(
        "adaptive", -14.0, compressor=Compressor(-24.0, 2.0, knee_db=8.0), corrective_eq=True
    ),
    "gentle": Preset(
        "gentle",
        -16.0,
        eq=(Biquad("peak", 3000.0, 1.0, 0.8),),
        compressor=Compressor(-20.0, 1.5, knee_db=10.0),
    ),
    "warm": Preset(
        "warm",
        -14.0,
        eq=(Biquad("peak", 250.0, 2.5, 0.8), Biquad("highshelf", 7000.0, -2.5)),
        compressor=Compressor(-24.0, 2.0),
    ),
    "bright": Preset(
        "bright",
        -14.0,
        eq=(Biquad("highshelf", 6000.0, 3.0), Biquad("peak", 3500.0, 2.0, 1.0)),
        compressor=Compressor(-24.0, 2.0),
    ),
    "punchy": Preset(
        "punchy",
        -12.0,
        eq=(Biquad("lowshelf", 90.0, 4.0), Biquad("peak", 2500.0, 1.5, 1.0)),
        compressor=Compressor(-26.0, 4.0, knee_db=6.0, smoothing_ms=50.0),
    ),
}


@dataclass(frozen=True)
class ChainParams:
    """Everything the chain needs beyond the audio: the per-track decisions."""

    preset: str
    gain_db: float  # to the loudness target, applied after compression
    corrective: tuple[Biquad, ...] = ()


def pre_gain(
    audio: np.ndarray,
    rate: int,
    preset: Preset,
    corrective: tuple[Biquad, ...],
    in_place: bool = False,
    makeup_db: float = 0.0,
) -> np.ndarray:
    """EQ and compression: the part of the chain whose output level sets the gain.

    makeup_db: a gain applied with the compressor's own (one pass less).
    """
    out = audio if in_place else audio.copy()
    out = dsp.equalize(out, rate, corrective + preset.eq, in_place=True)
    makeup = dsp.db_to_gain(makeup_db)
    if preset.compressor is not None:
        return dsp.compress(out, rate, preset.compressor, in_place=True, makeup=makeup)
    if makeup_db != 0.0:
        out *= np.float32(makeup)
    return out


def process(
    audio: np.ndarray,
    rate: int,
    params: ChainParams,
    intensity: float,
    in_place: bool = False,
    keep_from: int = 0,
) -> np.ndarray:
    """Render (n, channels) float32 audio through the chain, blended by intensity ∈ [0, 1].

    in_place: the caller gives up `audio` (at full intensity it becomes the
    output), so that a window costs one copy of itself, or two when blended.
    keep_from: the caller keeps samples from there on only (a window's
    context before its segment): the stateful stages (EQ, compressor) run
    over the whole input, the stateless ones (limiter, blend) only
    from `dsp.LIMITER_REACH` before it, and the output before that is left
    unfinished. Kept samples are the same, bit for bit (tested).
    """
    preset = PRESETS[params.preset]
    if preset.bypass or intensity <= 0.0:
        return audio
    wet = pre_gain(
        audio, rate, preset, params.corrective, in_place=in_place and intensity >= 1.0,
        makeup_db=params.gain_db,
    )  # fmt: skip
    # A multiple of the limiter's control step, so that its grid is the same.
    skip = max(keep_from - dsp.LIMITER_REACH, 0) // dsp.CONTROL_DECIMATION * dsp.CONTROL_DECIMATION
    tail = wet[skip:]
    dsp.limit(tail, rate, preset.limiter, in_place=True)
    dsp.blend(audio[skip:], tail, intensity)
    return wet
