"""DSP stages: pure, vectorized functions of (audio, rate, parameters).

Audio is float32 of shape (n, channels), full scale ±1. Every stage is
causal or looks ahead by a few milliseconds only, and every time constant is
well below the 5 s context of a window (SPEC §5), so that a window's
rendering converges to the whole-track rendering within its context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import minimum_filter1d, uniform_filter1d
from scipy.signal import lfilter, sosfilt

TRUE_PEAK_OVERSAMPLING = 4
CONTROL_DECIMATION = 16  # gain computer runs at rate / 16

# ITU-R BS.1770-4 Annex 2: 48-tap interpolation filter, 4 phases of 12 taps.
_TP_PHASES = np.array(
    [
        [0.0017089843750, 0.0109863281250, -0.0196533203125, 0.0332031250000,
         -0.0594482421875, 0.1373291015625, 0.9721679687500, -0.1022949218750,
         0.0476074218750, -0.0266113281250, 0.0148925781250, -0.0083007812500],
        [-0.0291748046875, 0.0292968750000, -0.0517578125000, 0.0891113281250,
         -0.1665039062500, 0.4650878906250, 0.7797851562500, -0.2003173828125,
         0.1015625000000, -0.0582275390625, 0.0330810546875, -0.0189208984375],
        [-0.0189208984375, 0.0330810546875, -0.0582275390625, 0.1015625000000,
         -0.2003173828125, 0.7797851562500, 0.4650878906250, -0.1665039062500,
         0.0891113281250, -0.0517578125000, 0.0292968750000, -0.0291748046875],
        [-0.0083007812500, 0.0148925781250, -0.0266113281250, 0.0476074218750,
         -0.1022949218750, 0.9721679687500, 0.1373291015625, -0.0594482421875,
         0.0332031250000, -0.0196533203125, 0.0109863281250, 0.0017089843750],
    ]
)  # fmt: skip


_TP_PHASES_F32 = _TP_PHASES.astype(np.float32)
_TP_BLOCK = 256
_TP_MERGE_GAP = 4
TP_OVERSHOOT_BOUND = float(np.abs(_TP_PHASES).sum(axis=1).max())  # 2.02 (6.1 dB)


def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


# --- Biquads (R. Bristow-Johnson, "Audio EQ Cookbook") ---------------------


@dataclass(frozen=True)
class Biquad:
    """One EQ band: kind in {lowshelf, highshelf, peak}, frequency in Hz, gain in dB."""

    kind: str
    freq: float
    gain_db: float
    q: float = 0.707


def biquad_sos(band: Biquad, rate: int) -> np.ndarray:
    """Second-order section [b0 b1 b2 1 a1 a2] of one cookbook filter."""
    a = 10.0 ** (band.gain_db / 40.0)
    w0 = 2.0 * math.pi * min(band.freq, 0.45 * rate) / rate
    cos_w, sin_w = math.cos(w0), math.sin(w0)
    alpha = sin_w / (2.0 * band.q)
    if band.kind == "peak":
        b = [1 + alpha * a, -2 * cos_w, 1 - alpha * a]
        den = [1 + alpha / a, -2 * cos_w, 1 - alpha / a]
    elif band.kind in ("lowshelf", "highshelf"):
        sign = 1.0 if band.kind == "lowshelf" else -1.0
        sq = 2.0 * math.sqrt(a) * alpha
        b = [
            a * ((a + 1) - sign * (a - 1) * cos_w + sq),
            sign * 2 * a * ((a - 1) - sign * (a + 1) * cos_w),
            a * ((a + 1) - sign * (a - 1) * cos_w - sq),
        ]
        den = [
            (a + 1) + sign * (a - 1) * cos_w + sq,
            -sign * 2 * ((a - 1) + sign * (a + 1) * cos_w),
            (a + 1) + sign * (a - 1) * cos_w - sq,
        ]
    else:
        raise ValueError(f"unknown biquad kind {band.kind!r}")
    return np.array(
        [b[0] / den[0], b[1] / den[0], b[2] / den[0], 1.0, den[1] / den[0], den[2] / den[0]]
    )


def equalize(audio: np.ndarray, rate: int, bands: tuple[Biquad, ...]) -> np.ndarray:
    """Cascade of biquads over the whole window (filter state starts at rest)."""
    bands = tuple(b for b in bands if abs(b.gain_db) > 1e-3)
    if not bands:
        return audio
    sos = np.stack([biquad_sos(b, rate) for b in bands])
    # float32 sections keep the window in float32 (half the memory of float64);
    # their rounding noise stays below -100 dB for these gentle filters.
    return np.asarray(sosfilt(sos.astype(np.float32), audio, axis=0), dtype=np.float32)


# --- Dynamics -------------------------------------------------------------


def _one_pole(x: np.ndarray, rate: float, time_ms: float) -> np.ndarray:
    """y[n] = y[n-1] + (1 - exp(-1/(tau·rate))) (x[n] - y[n-1]), starting at x[0].

    Computed in the dtype of `x` (float32 keeps a window's memory small).
    """
    coeff = math.exp(-1000.0 / (time_ms * rate))
    dtype = x.dtype
    b, a = np.array([1.0 - coeff], dtype=dtype), np.array([1.0, -coeff], dtype=dtype)
    zi = np.array([coeff * x[0] if len(x) else 0.0], dtype=dtype)
    y, _ = lfilter(b, a, x, zi=zi)
    return np.asarray(y)


@dataclass(frozen=True)
class Compressor:
    """Feed-forward RMS compressor with a soft knee; threshold in dBFS, times in ms."""

    threshold_db: float
    ratio: float
    knee_db: float = 6.0
    rms_ms: float = 10.0
    smoothing_ms: float = 80.0


def compress(audio: np.ndarray, rate: int, comp: Compressor) -> np.ndarray:
    """Linked-stereo compression: one gain curve for all channels.

    Level: one-pole mean square over `rms_ms`. Static curve: the soft-knee
    gain computer of Giannoulis, Massberg & Reiss (JAES 2012, eq. 4). The
    gain in dB is smoothed by a one-pole filter of `smoothing_ms`. Level
    and gain are computed every `CONTROL_DECIMATION` samples (0.36 ms at
    44.1 kHz, far below every time constant) and interpolated linearly.
    """
    n = len(audio)
    if n == 0 or comp.ratio <= 1.0:
        return audio
    power = np.einsum("ij,ij->i", audio, audio, dtype=np.float32) / np.float32(audio.shape[1])
    smoothed = _one_pole(power, rate, comp.rms_ms)
    control = np.arange(0, n + CONTROL_DECIMATION, CONTROL_DECIMATION)
    control[-1] = n - 1
    level_db = 10.0 * np.log10(smoothed[control].astype(np.float64) + 1e-12)
    del power, smoothed
    over = level_db - comp.threshold_db
    slope = 1.0 - 1.0 / comp.ratio
    half = comp.knee_db / 2.0
    reduction = np.where(
        over <= -half,
        0.0,
        np.where(over >= half, slope * over, slope * (over + half) ** 2 / (2.0 * comp.knee_db)),
    )
    gain_db = -_one_pole(reduction, rate / CONTROL_DECIMATION, comp.smoothing_ms)
    return audio * _interpolate_control(10.0 ** (gain_db / 20.0), n)[:, None]


def _interpolate_control(values: np.ndarray, n: int, step: int = CONTROL_DECIMATION) -> np.ndarray:
    """Linear interpolation of values at samples 0, D, 2D, … (last at n-1) to n samples, float32."""
    values = values.astype(np.float32)
    out = np.empty(n, dtype=np.float32)
    full = (n - 1) // step  # intervals of exactly `step` samples before the last control point
    frac = np.arange(step, dtype=np.float32) / np.float32(step)
    body = values[:full, None] + (values[1 : full + 1] - values[:full])[:, None] * frac[None, :]
    out[: full * step] = body.ravel()
    rest = n - full * step  # samples from control point `full` to n-1, ending on the last value
    tail_frac = np.arange(rest, dtype=np.float32) / np.float32(max(rest - 1, 1))
    out[full * step :] = values[full] + (values[-1] - values[full]) * tail_frac
    return out


def true_peak_envelope(
    audio: np.ndarray, above: float = 0.0, phases: tuple[int, ...] = (0, 1, 2, 3)
) -> np.ndarray:
    """Per-sample true peak, shape (n,): max over channels and the 4 interpolated phases.

    The BS.1770 interpolation can exceed the largest of its 12 input samples
    by at most `TP_OVERSHOOT_BOUND` (the largest sum of absolute taps of a
    phase). So with `above` > 0, only 256-sample blocks whose neighbourhood
    could exceed `above` are interpolated; elsewhere the sample peak is
    returned, which is then below `above` too. `above` = 0 is exact everywhere.
    `phases`: which of the 4 interpolated positions to compute (estimates may
    take fewer).
    """
    mags = np.abs(audio).max(axis=1)
    n = len(mags)
    if n == 0:
        return mags
    nb = -(-n // _TP_BLOCK)
    block_peak = np.pad(mags, (0, nb * _TP_BLOCK - n)).reshape(nb, _TP_BLOCK).max(axis=1)
    reach = block_peak.copy()
    reach[1:] = np.maximum(reach[1:], block_peak[:-1])
    reach[:-1] = np.maximum(reach[:-1], block_peak[1:])
    hot = np.flatnonzero(reach * TP_OVERSHOOT_BOUND > above)
    if len(hot) == 0:
        return mags
    # Interpolate runs of hot blocks (gaps of a few blocks merged, to keep calls few).
    breaks = np.flatnonzero(np.diff(hot) > _TP_MERGE_GAP)
    run_starts = np.concatenate([hot[:1], hot[breaks + 1]]) * _TP_BLOCK
    run_ends = np.minimum(np.concatenate([hot[breaks], hot[-1:]]) * _TP_BLOCK + _TP_BLOCK, n)
    out = mags.copy()
    taps = _TP_PHASES_F32[list(phases)]
    columns = [np.ascontiguousarray(audio[:, c]) for c in range(audio.shape[1])]
    for a, b in zip(run_starts.tolist(), run_ends.tolist(), strict=True):
        # Samples [a - 5, b + 6), zeros outside the signal: the interpolated
        # values after sample t are the dot products of the phases with
        # samples t-5 .. t+6 (the filter delays by 5.5 samples).
        lo, hi = max(a - 5, 0), min(b + 6, n)
        for column in columns:
            piece = column[lo:hi]
            if lo > a - 5 or hi < b + 6:
                piece = np.pad(piece, (lo - (a - 5), b + 6 - hi))
            for phase in taps:
                window = np.abs(np.convolve(piece, phase, mode="valid"))
                np.maximum(out[a:b], window, out=out[a:b])
    return out


@dataclass(frozen=True)
class Limiter:
    """Look-ahead true-peak limiter; ceiling in dBTP, times in ms."""

    ceiling_db: float = -1.0
    lookahead_ms: float = 5.0
    hold_ms: float = 5.0  # longer holds cost peaky material 1-2 LU of loudness (measured)
    margin_db: float = 0.3  # interpolation and smoothing error allowance


def limiter_gain(
    peak: np.ndarray, rate: float, lim: Limiter, decimation: int = CONTROL_DECIMATION
) -> np.ndarray:
    """Gain curve (n,) that keeps a signal with true-peak envelope `peak` under the ceiling.

    Required gain g = min(1, ceiling / true_peak), taken per block of
    `decimation` samples (the block minimum). A minimum filter spreads it
    over look-ahead + hold on both sides, a moving average over the
    look-ahead smooths it, and the control values are interpolated linearly
    to every sample. Every block within reach of an averaging window, and
    each sample lies between two control points whose windows are both
    within the reach of its own block, so the gain at every peak is at or
    below what that peak needs.
    """
    ceiling = np.float32(db_to_gain(lim.ceiling_db - lim.margin_db))
    n = len(peak)
    need = np.minimum(np.float32(1.0), ceiling / np.maximum(peak, np.float32(1e-12)))
    if n == 0 or need.min() >= 1.0:
        return np.ones(n, dtype=np.float32)
    blocks = -(-n // decimation)
    if decimation > 1:
        padded = np.pad(need, (0, blocks * decimation - n), constant_values=1.0)
        need = padded.reshape(blocks, decimation).min(axis=1)
    look = max(1, math.ceil(lim.lookahead_ms * rate / 1000.0 / decimation))
    hold = max(1, math.ceil(lim.hold_ms * rate / 1000.0 / decimation))
    spread = minimum_filter1d(need, size=2 * (look + hold) + 1, mode="nearest")
    gain = np.asarray(uniform_filter1d(spread, size=look + 1, mode="nearest"), dtype=np.float32)
    if decimation == 1:
        return gain
    # Control point j sits at sample j·decimation; one more at n - 1 (block blocks-1).
    return _interpolate_control(np.append(gain, gain[-1]), n, decimation)


def limit(audio: np.ndarray, rate: int, lim: Limiter, in_place: bool = False) -> np.ndarray:
    """Look-ahead true-peak limiting of (n, channels) float32 audio (see `limiter_gain`).

    in_place: scale `audio` itself (the caller's own intermediate) to save a copy.
    """
    if len(audio) == 0:
        return audio
    peak = true_peak_envelope(audio, above=db_to_gain(lim.ceiling_db - lim.margin_db))
    gain = limiter_gain(peak, rate, lim)
    del peak
    if in_place:
        audio *= gain[:, None]
        return audio
    return (audio * gain[:, None]).astype(np.float32)


def blend(dry: np.ndarray, wet: np.ndarray, intensity: float) -> np.ndarray:
    """Intensity 0 returns `dry` itself, 1 returns `wet`, linear in between."""
    if intensity <= 0.0:
        return dry
    if intensity >= 1.0:
        return wet
    wet -= dry  # `wet` belongs to the chain: blend in place
    wet *= np.float32(intensity)
    wet += dry
    return wet
