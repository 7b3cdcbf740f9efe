"""DSP stages: pure, vectorized functions of (audio, rate, parameters).

Audio is float32 of shape (n, channels), full scale ±1. Every stage is
causal or looks ahead by a few milliseconds only, and every time constant is
well below the 5 s context of a window (SPEC §5), so that a window's
rendering converges to the whole-track rendering within its context.

The stages walk the signal in blocks of `STREAM_BLOCK` samples and carry
their state from block to block (filter memories, control values), so that
a 40 s window costs one copy of itself, not one per intermediate; the result
does not depend on the block size (tested bit for bit). With in_place=True
a stage overwrites its input (the caller's own intermediate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import correlate1d, minimum_filter1d, uniform_filter1d
from scipy.signal import lfilter, sosfilt

TRUE_PEAK_OVERSAMPLING = 4
CONTROL_DECIMATION = 16  # gain computers run at rate / 16
STREAM_BLOCK = 1 << 16  # samples per step of the stages (1.5 s): their temporaries stay small
# How far the limiter's output depends on its input (and on where its input
# starts), with room: look-ahead and hold on both sides, the averaging, the
# true-peak blocks around each block (about 1000 samples at 48 kHz).
LIMITER_REACH = 4096

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
TP_BLOCK = 16  # the limiter's control step: true peaks are needed per block
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


def blocks(n: int) -> list[tuple[int, int]]:
    return [(a, min(a + STREAM_BLOCK, n)) for a in range(0, n, STREAM_BLOCK)]


def equalize(
    audio: np.ndarray, rate: int, bands: tuple[Biquad, ...], in_place: bool = False
) -> np.ndarray:
    """Cascade of biquads over the whole window (filter state starts at rest)."""
    bands = tuple(b for b in bands if abs(b.gain_db) > 1e-3)
    if not bands:
        return audio
    # float32 sections keep the window in float32 (half the memory of float64);
    # their rounding noise stays below -100 dB for these gentle filters.
    sos = np.stack([biquad_sos(b, rate) for b in bands]).astype(np.float32)
    out = audio if in_place else np.empty_like(audio)
    if audio.shape[1] == 2 and audio.flags.c_contiguous:
        # Stereo as one complex signal L + iR: real coefficients filter both
        # parts with the same float32 operations, bit for bit, in one pass
        # (a quarter faster, and no transposed copies).
        sos_c = sos.astype(np.complex64)
        state_c = np.zeros((len(sos), 2), dtype=np.complex64)
        for a, b in blocks(len(audio)):
            filtered, state_c = sosfilt(sos_c, audio[a:b].view(np.complex64)[:, 0], zi=state_c)
            out[a:b] = filtered.view(np.float32).reshape(-1, 2)
        return out
    state = np.zeros((len(sos), 2, audio.shape[1]), dtype=np.float32)
    for a, b in blocks(len(audio)):
        out[a:b], state = sosfilt(sos, audio[a:b], axis=0, zi=state)
    return out


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


def compress(
    audio: np.ndarray, rate: int, comp: Compressor, in_place: bool = False, makeup: float = 1.0
) -> np.ndarray:
    """Linked-stereo compression: one gain curve for all channels, times `makeup`.

    Level: mean square over each control interval of `CONTROL_DECIMATION`
    samples (0.36 ms at 44.1 kHz, far below every time constant), through
    a one-pole of `rms_ms`. Static curve: the soft-knee gain computer of
    Giannoulis, Massberg & Reiss (JAES 2012, eq. 4). The gain in dB is
    smoothed by a one-pole of `smoothing_ms`; control point j (sample j·D,
    and the last sample) takes the level of interval j, and the gain is
    interpolated linearly between control points.
    """
    n = len(audio)
    if n == 0 or comp.ratio <= 1.0:
        if makeup != 1.0:
            audio = audio if in_place else audio.copy()
            audio *= np.float32(makeup)
        return audio
    step = CONTROL_DECIMATION
    assert STREAM_BLOCK % step == 0, "blocks must hold whole control intervals"
    energy = np.empty(-(-n // step), dtype=np.float32)
    for lo, hi in blocks(n):
        # Whole intervals as rows of D·channels samples: one dot product each
        # (numpy sums a short last axis ten times slower).
        whole = (hi - lo) // step * step
        rows = audio[lo : lo + whole].reshape(-1, step * audio.shape[1])
        energy[lo // step : (lo + whole) // step] = np.einsum("ij,ij->i", rows, rows)
        if whole < hi - lo:  # the last, partial interval
            rest = audio[lo + whole : hi]
            energy[(lo + whole) // step] = np.einsum("ij,ij->", rest, rest)
    counts = np.full(len(energy), step * audio.shape[1], dtype=np.float32)
    counts[-1] = (n - (len(energy) - 1) * step) * audio.shape[1]
    level = _one_pole(energy / counts, rate / step, comp.rms_ms)
    # Control points 0, D, 2D, … and n - 1: one more than intervals when D divides n.
    if (n - 1) // step + 2 > len(level):  # the control point n - 1 has no interval of its own
        level = np.append(level, level[-1])
    level_db = 10.0 * np.log10(level.astype(np.float64) + 1e-12)
    over = level_db - comp.threshold_db
    slope = 1.0 - 1.0 / comp.ratio
    half = comp.knee_db / 2.0
    reduction = np.where(
        over <= -half,
        0.0,
        np.where(over >= half, slope * over, slope * (over + half) ** 2 / (2.0 * comp.knee_db)),
    )
    gain_db = -_one_pole(reduction, rate / step, comp.smoothing_ms)
    gain = (10.0 ** (gain_db / 20.0) * makeup).astype(np.float32)
    return _apply_control(audio, gain, in_place)


def _apply_control(audio: np.ndarray, values: np.ndarray, in_place: bool) -> np.ndarray:
    """audio × the gain curve interpolated from control values at 0, D, 2D, … and n - 1."""
    out = audio if in_place else np.empty_like(audio)
    for lo, hi in blocks(len(audio)):
        gain = _control_span(values, len(audio), lo, hi)
        for c in range(audio.shape[1]):  # column by column: twice as fast as broadcasting
            np.multiply(audio[lo:hi, c], gain, out=out[lo:hi, c])
    return out


def _control_span(values: np.ndarray, n: int, lo: int, hi: int) -> np.ndarray:
    """Samples [lo, hi) of the linear interpolation of control values to n samples, float32.

    Control point j is sample j·D (D = CONTROL_DECIMATION) and the last one
    is sample n - 1; lo is a multiple of D.
    """
    step = CONTROL_DECIMATION
    full = (n - 1) // step  # intervals of exactly D samples before the last control point
    out = np.empty(hi - lo, dtype=np.float32)
    j0, j1 = lo // step, min(hi // step, full)
    if j1 > j0:
        frac = np.arange(step, dtype=np.float32) / np.float32(step)
        left, right = values[j0:j1], values[j0 + 1 : j1 + 1]
        rows = out[: (j1 - j0) * step].reshape(j1 - j0, step)
        np.multiply((right - left)[:, None], frac[None, :], out=rows)
        rows += left[:, None]
    start = max(lo, full * step)
    if hi > start:  # the last interval: from control point `full` to n - 1
        rest = n - full * step
        tail = np.arange(start - full * step, hi - full * step, dtype=np.float32)
        tail /= np.float32(max(rest - 1, 1))
        out[start - lo :] = values[full] + (values[-1] - values[full]) * tail
    return out


def abs_peak(audio: np.ndarray) -> np.ndarray:
    """max |x| over the channels of (n, channels) audio, shape (n,).

    Column by column: numpy reduces a short last axis ten times slower.
    """
    peak = np.abs(audio[:, 0])
    for c in range(1, audio.shape[1]):
        np.maximum(peak, np.abs(audio[:, c]), out=peak)
    return peak


def true_peak_envelope(
    audio: np.ndarray, above: float = 0.0, phases: tuple[int, ...] = (0, 1, 2, 3)
) -> np.ndarray:
    """Per-sample true peak, shape (n,): max over channels and the 4 interpolated phases.

    The interpolated values after sample t are dot products of the phases
    with samples t-5 .. t+6 (the filter delays by 5.5 samples), zeros
    outside the signal, and exceed the largest of them by at most
    `TP_OVERSHOOT_BOUND` (the largest sum of absolute taps of a phase). So
    with `above` > 0, only the 16-sample blocks whose inputs could take
    them over `above` are interpolated (a sixth of the blocks of a track
    mastered to -12 LUFS, measured); elsewhere the sample peak is returned,
    which is then below `above` too. `above` = 0 is exact everywhere.
    `phases`: which of the 4 interpolated positions to compute (estimates may
    take fewer).
    """
    n = len(audio)
    if above > 0 and n > STREAM_BLOCK + 2 * TP_BLOCK:
        # Block by block, with one true-peak block of neighbours on each side:
        # the runs' index arrays (int64, several per sample read) would
        # otherwise be as long as the input (a cold track's peak PSS rose
        # by up to 23 MB with whole 4 s excerpts, measured).
        out = np.empty(n, dtype=audio.dtype)
        for lo, hi in blocks(n):
            a, b = max(lo - TP_BLOCK, 0), min(hi + TP_BLOCK, n)
            out[lo:hi] = true_peak_envelope(audio[a:b], above, phases)[lo - a : hi - a]
        return out
    mags = abs_peak(audio)
    if n == 0:
        return mags
    if above <= 0:
        starts, ends = np.array([0]), np.array([n])
    else:
        hot = np.flatnonzero(_block_reach(mags) * TP_OVERSHOOT_BOUND > above)
        if len(hot) == 0:
            return mags
        # Runs of hot blocks; a gap of one block costs less than a run's 11 extra samples.
        breaks = np.flatnonzero(np.diff(hot) > 2)
        starts = np.concatenate([hot[:1], hot[breaks + 1]]) * TP_BLOCK
        ends = np.minimum(np.concatenate([hot[breaks], hot[-1:]]) * TP_BLOCK + TP_BLOCK, n)
    if len(starts) == 1 and starts[0] == 0 and ends[0] == n:
        return np.maximum(mags, _interpolated_peak(audio, phases))
    # The inputs of every run (5 samples before it to 6 after) side by side
    # in one array: an output inside a run reads its own run's inputs only,
    # so one filter pass serves them all.
    lengths = ends - starts + 11
    local = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    index = local + np.repeat(starts - 5, lengths)  # sample index of each input
    inputs = audio[np.clip(index, 0, n - 1)]
    inputs[(index < 0) | (index >= n)] = 0.0
    inside = (local >= 5) & (local < np.repeat(lengths, lengths) - 6)
    out = mags.copy()
    out[index[inside]] = np.maximum(mags[index[inside]], _interpolated_peak(inputs, phases)[inside])
    return out


def _block_reach(mags: np.ndarray) -> np.ndarray:
    """Per block of `TP_BLOCK` samples, the largest input of its interpolated values:
    max of mags over the block and 6 samples on each side."""
    nb = -(-len(mags) // TP_BLOCK)
    blocks = np.pad(mags, (0, nb * TP_BLOCK - len(mags))).reshape(nb, TP_BLOCK)
    reach = _max_columns(blocks)
    np.maximum(reach[1:], _max_columns(blocks[:-1, -6:]), out=reach[1:])
    np.maximum(reach[:-1], _max_columns(blocks[1:, :6]), out=reach[:-1])
    return reach


def _max_columns(rows: np.ndarray) -> np.ndarray:
    """max over the short last axis, column by column (numpy reduces it ten times slower)."""
    out = rows[:, 0].copy()
    for c in range(1, rows.shape[1]):
        np.maximum(out, rows[:, c], out=out)
    return out


def _interpolated_peak(inputs: np.ndarray, phases: tuple[int, ...]) -> np.ndarray:
    """Max over channels and `phases` of the interpolated values after each sample.

    correlate1d with a reversed phase and origin -1 gives, at sample t, its
    dot product with samples t-5 .. t+6, zeros outside; it runs every
    channel in one call, in C, in half the time of a numpy convolution per
    column.
    """
    interpolated = np.empty(inputs.shape, dtype=np.float32)
    peak = np.zeros(len(inputs), dtype=np.float32)
    for p in phases:
        taps = np.ascontiguousarray(_TP_PHASES_F32[p][::-1])
        correlate1d(inputs, taps, axis=0, mode="constant", origin=-1, output=interpolated)
        np.maximum(peak, abs_peak(interpolated), out=peak)
    return peak


@dataclass(frozen=True)
class Limiter:
    """Look-ahead true-peak limiter; ceiling in dBTP, times in ms."""

    ceiling_db: float = -1.0
    lookahead_ms: float = 5.0
    hold_ms: float = 5.0  # longer holds cost peaky material 1-2 LU of loudness (measured)
    margin_db: float = 0.3  # interpolation and smoothing error allowance


def limiter_control(need: np.ndarray, rate: float, lim: Limiter) -> np.ndarray:
    """Gain at `rate` from the gain each instant needs (min(1, ceiling / true peak)).

    A minimum filter spreads the need over look-ahead + hold on both sides
    and a moving average over the look-ahead smooths it: every value within
    reach of an averaging window is at most what the window's centre needs.
    """
    look = max(1, math.ceil(lim.lookahead_ms * rate / 1000.0))
    hold = max(1, math.ceil(lim.hold_ms * rate / 1000.0))
    spread = minimum_filter1d(need, size=2 * (look + hold) + 1, mode="nearest")
    return np.asarray(uniform_filter1d(spread, size=look + 1, mode="nearest"), dtype=np.float32)


def limiter_gain(peak: np.ndarray, rate: float, lim: Limiter) -> np.ndarray:
    """Gain curve (n,) that keeps a signal with true-peak envelope `peak` under the ceiling."""
    ceiling = np.float32(db_to_gain(lim.ceiling_db - lim.margin_db))
    need = np.minimum(np.float32(1.0), ceiling / np.maximum(peak, np.float32(1e-12)))
    if len(need) == 0 or need.min() >= 1.0:
        return np.ones(len(peak), dtype=np.float32)
    return limiter_control(need, rate, lim)


def limit(audio: np.ndarray, rate: int, lim: Limiter, in_place: bool = False) -> np.ndarray:
    """Look-ahead true-peak limiting of (n, channels) float32 audio.

    The need (min(1, ceiling / true peak)) is taken per block of D samples
    (its minimum, D = CONTROL_DECIMATION), `limiter_control` turns it into
    control values at rate / D, and those are interpolated linearly to every
    sample. Each sample lies between two control points whose averaging
    windows are within the reach of its own block, so the gain at every
    peak is at or below what the peak needs.
    """
    n = len(audio)
    if n == 0:
        return audio
    step = CONTROL_DECIMATION
    above = db_to_gain(lim.ceiling_db - lim.margin_db)
    ceiling = np.float32(above)
    need = np.ones(-(-n // step), dtype=np.float32)
    for lo, hi in blocks(n):
        # One true-peak block of neighbours on each side: the interpolation
        # and the test of which blocks can exceed `above` need them.
        a, b = max(lo - TP_BLOCK, 0), min(hi + TP_BLOCK, n)
        peak = true_peak_envelope(audio[a:b], above=above)[lo - a : hi - a]
        # ceiling / x falls as x grows (and rounding keeps that order), so
        # the least need of a block is the one of its largest peak.
        size = -(-len(peak) // step) * step
        block_peak = _max_columns(np.pad(peak, (0, size - len(peak))).reshape(-1, step))
        need[lo // step : lo // step + size // step] = np.minimum(
            np.float32(1.0), ceiling / np.maximum(block_peak, np.float32(1e-12))
        )
    if need.min() >= 1.0:
        return audio
    control = limiter_control(need, rate / step, lim)
    return _apply_control(audio, np.append(control, control[-1]), in_place)


def blend(dry: np.ndarray, wet: np.ndarray, intensity: float) -> np.ndarray:
    """Intensity 0 returns `dry` itself, 1 returns `wet`, linear in between (into `wet`)."""
    if intensity <= 0.0:
        return dry
    if intensity >= 1.0:
        return wet
    weight = np.float32(intensity)
    for lo, hi in blocks(len(wet)):
        part = wet[lo:hi]
        part -= dry[lo:hi]
        part *= weight
        part += dry[lo:hi]
    return wet
