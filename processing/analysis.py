"""Per-track analysis: the chain's parameters, decided once for the whole track.

Deterministic: the same source content and preset give the same numbers in
every process, so no segment's gain or EQ can differ from its neighbour's.
Long tracks are measured on excerpts spread over the whole track (each with a
lead-in that lets the compressor settle) instead of a full decode, and the
excerpts are measured on all cores at once: the analysis is on the path of
the first segment of every track never seen before. How many: as many as it
takes for the loudness measured on them to be the track's within
SAMPLING_ERROR_LU (one standard error): 16 short ones for most music, up to
64 for sparse material (notes or sounds between silences), whose loudness
depends on which of its events the excerpts catch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial

import numpy as np
from scipy.signal import get_window, sosfilt

from processing import chain, dsp, loudness
from processing.decode import Samples
from processing.dsp import Biquad
from processing.threads import parallel_map

ANALYSIS_VERSION = 9
FULL_READ_SECONDS = 60.0  # shorter tracks are measured whole
# Excerpts: a first round of EXCERPTS; while the loudness measured on them may
# be off by more than SAMPLING_ERROR_LU, rounds that double their number, up
# to MAX_EXCERPTS (and never more audio than the track). Short excerpts, many
# of them: on 14 sources (the benchmark corpus' and the real tracks, sparse
# material aside), 16 of 1.5 s rendered within 0.3 LU of the loudness target,
# 8 of 4 s (the earlier choice, placed as now) within 0.36, from a fifth more
# audio.
EXCERPTS = 16
MAX_EXCERPTS = 64
EXCERPT_SECONDS = 1.5
LEAD_SECONDS = 0.25  # discarded start of each excerpt (compressor settling: 3 time constants)
SAMPLING_ERROR_LU = 0.5
TARGET_TILT_DB_PER_OCTAVE = -4.5  # balanced program material, 100 Hz to 8 kHz
MAX_CORRECTION_DB = 4.0
MAX_GAIN_DB = 24.0
LIMITER_PASSES = 4
LOUDNESS_TOLERANCE_LU = 0.1
PEAK_HEADROOM_DB = 3.0  # see analyze
GOLDEN = (5**0.5 - 1) / 2  # excerpt phases (`excerpt_starts`)
DECIMATION = 16  # the limiter passes work on 16-sample power sums and peak maxima
PSD_BLOCK = 2048  # samples per block of the long-term spectrum
_HANN = get_window("hann", PSD_BLOCK).astype(np.float32)

Excerpt = tuple[np.ndarray, int]  # audio with its lead-in, and the lead-in's samples


@dataclass(frozen=True)
class Analysis:
    """The chain parameters of one track and preset, and what they were derived from."""

    params: chain.ChainParams
    tilt_db_per_octave: float | None = None  # measured only when the preset corrects it

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Analysis:
        p = data["params"]
        params = chain.ChainParams(
            p["preset"], p["gain_db"], tuple(Biquad(**b) for b in p["corrective"])
        )
        return cls(params, data["tilt_db_per_octave"])


def excerpts(source: Samples, first: int = 0, count: int = EXCERPTS) -> list[Excerpt]:
    """Audio to measure, as (audio with lead-in, lead-in samples) pairs: excerpts
    `first` to `first + count` (`excerpt_starts`), or the whole of a short track."""
    rate, length = source.rate, source.length
    if length <= FULL_READ_SECONDS * rate:
        return [(source.read(0, length), 0)]
    size = round(EXCERPT_SECONDS * rate)
    return parallel_map(partial(excerpt, source), excerpt_starts(length, size, first, count))


def excerpt(source: Samples, start: int) -> Excerpt:
    """The excerpt that starts at sample `start`, with its lead-in."""
    lead = round(LEAD_SECONDS * source.rate)
    return source.read(start - lead, start + round(EXCERPT_SECONDS * source.rate)), lead


def excerpt_starts(length: int, size: int, first: int, count: int) -> list[int]:
    """Where excerpts `first` to `first + count` of a track of `length` samples start:
    one in each of `count` equal strata, at a fraction of it that the golden
    ratio spreads (excerpt k at 0.5 + k·φ, modulo 1).

    Not at the same place in each: on a 30 s loop repeated for 240 s, the
    middle of each eighth was the same silent instant of the loop, every
    excerpt was silent and the gain went to its limit (+24 dB, 3.7 LU over
    the target); music repeats by bars, so any fixed stride can meet it.
    """
    span = length - size
    return [round(span * (i + (0.5 + (first + i) * GOLDEN) % 1.0) / count) for i in range(count)]


def sampling_error(powers: list[np.ndarray], rate: float) -> float:
    """Standard error (LU) of the gated loudness of excerpts as the whole track's.

    `powers`: K-weighted powers of the excerpts at `rate` (`_k_power`). Each
    excerpt is a cluster of 400 ms blocks, and the loudness is a ratio (the
    gated blocks' power over their number): its error by linearization,
    over the excerpts as a random sample of the track (stratified as they
    are, they do better: this errs on the side of measuring more). Infinite
    when fewer than two excerpts hold a block that counts.
    """
    blocks = [loudness.blocks_of_power(p, rate) / DECIMATION for p in powers]
    gate = loudness.gate_lufs(np.concatenate(blocks))
    if gate is None or len(blocks) < 2:
        return float("inf")
    counted = [b[loudness.power_to_lufs(b) > gate] for b in blocks]
    y = np.array([c.sum() for c in counted])
    x = np.array([len(c) for c in counted], dtype=np.float64)
    if np.count_nonzero(x) < 2:
        return float("inf")
    ratio = y.sum() / x.sum()
    relative = np.sqrt(np.var(y - ratio * x, ddof=1) / len(y)) / (x.mean() * ratio)
    return float(10 * np.log10(1 + relative))


def power_spectrum(audio: np.ndarray) -> np.ndarray | None:
    """Mean periodogram of the channels' sum over Hann-windowed, mean-removed blocks of
    PSD_BLOCK samples (Welch's method without overlap; None when shorter than one block).

    Scaled as it comes: only the spectrum's shape is used. One FFT call for
    all blocks, not one per block as scipy's `welch` makes: with the channel
    sum, the tilt took 5-6 ms instead of 23-27 (measured).
    """
    mono = audio[:, 0].copy()
    for channel in range(1, audio.shape[1]):  # column by column: 40x faster than a mean
        mono += audio[:, channel]
    count = len(mono) // PSD_BLOCK
    if count == 0:
        return None
    blocks = mono[: count * PSD_BLOCK].reshape(count, PSD_BLOCK)
    blocks = (blocks - blocks.mean(axis=1, keepdims=True)) * _HANN
    spectrum = np.fft.rfft(blocks, axis=1)
    return np.asarray((spectrum.real**2 + spectrum.imag**2).mean(axis=0))


def spectral_tilt(parts: list[Excerpt], rate: int) -> float:
    """Least-squares slope (dB per octave) of the long-term spectrum, 100 Hz to 8 kHz."""
    psd_sum = None
    # Half the excerpts give a stable long-term spectrum.
    for psd in parallel_map(lambda part: power_spectrum(part[0][part[1] :]), parts[::2]):
        if psd is not None:
            psd_sum = psd if psd_sum is None else psd_sum + psd
    if psd_sum is None:
        return TARGET_TILT_DB_PER_OCTAVE
    freqs = np.fft.rfftfreq(PSD_BLOCK, 1 / rate)
    band = (freqs >= 100) & (freqs <= 8000)
    if psd_sum[band].max() <= 1e-20:
        return TARGET_TILT_DB_PER_OCTAVE
    # Octave-spaced averages, so that high frequencies do not dominate the fit.
    edges = 100 * 2.0 ** np.arange(0, 7)
    centers, levels = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (freqs >= lo) & (freqs < hi)
        energy = psd_sum[sel].sum()
        if energy > 0:
            centers.append(np.log2(np.sqrt(lo * hi)))
            levels.append(10 * np.log10(energy / (hi - lo)))
    if len(centers) < 3:
        return TARGET_TILT_DB_PER_OCTAVE
    slope = np.polyfit(centers, levels, 1)[0]
    return float(slope)


def corrective_eq(tilt: float) -> tuple[Biquad, ...]:
    """Shelves that turn the measured tilt toward the balanced target."""
    delta = TARGET_TILT_DB_PER_OCTAVE - tilt
    shelf = float(np.clip(delta * 2.5, -MAX_CORRECTION_DB, MAX_CORRECTION_DB))
    return (
        Biquad("lowshelf", 150.0, round(-shelf / 2, 3)),
        Biquad("highshelf", 4000.0, round(shelf / 2, 3)),
    )


def _decimate(values: np.ndarray, how: str) -> np.ndarray:
    """Sums (how="sum") or maxima ("max") of consecutive `DECIMATION`-sample groups."""
    n = len(values) // DECIMATION * DECIMATION
    groups = values[:n].reshape(-1, DECIMATION)
    # einsum sums rows 5x faster than .sum(axis=1), measured
    return np.asarray(np.einsum("ij->i", groups) if how == "sum" else groups.max(axis=1))


def _k_power(audio: np.ndarray, rate: int) -> np.ndarray:
    """K-weighted power summed over channels and over each `DECIMATION` samples."""
    weighted = sosfilt(loudness.k_weighting_sos(rate), audio.astype(np.float64), axis=0)
    power = weighted[:, 0] ** 2
    for channel in range(1, weighted.shape[1]):  # column by column: 4x faster than einsum
        power += weighted[:, channel] ** 2
    return _decimate(power, "sum")


def _gated(powers: list[np.ndarray], curves: Sequence[np.ndarray | None], rate: float) -> float:
    """Pooled gated loudness of K-weighted powers, each times a squared gain curve.

    `rate`: of the decimated powers; each value is a sum of `DECIMATION` samples.
    """
    blocks = []
    for power, curve in zip(powers, curves, strict=True):
        weighted = power if curve is None else power * curve.astype(np.float64) ** 2
        blocks.append(loudness.blocks_of_power(weighted, rate) / DECIMATION)
    return loudness.gated_loudness(np.concatenate(blocks) if blocks else np.zeros(0))


def _shaped(
    part: Excerpt,
    rate: int,
    preset: chain.Preset,
    corrective: tuple[Biquad, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """One excerpt after EQ and compression (its lead-in cut), and its K-weighted power.

    Power and peaks scale with the gain that follows, so they are computed once.
    """
    audio, lead = part
    if not audio.any():  # digital silence: the chain's output, and its power, are zeros
        return audio[lead:], np.zeros(len(audio[lead:]) // DECIMATION)
    shaped = chain.pre_gain(audio, rate, preset, corrective, in_place=True)[lead:]
    return shaped, _k_power(shaped, rate)


def _exactly(
    shape: Callable[[Excerpt], tuple[np.ndarray, np.ndarray]], part: Excerpt
) -> tuple[np.ndarray, np.ndarray]:
    """An excerpt's K-weighted power and its peaks interpolated everywhere (`_peaks`
    with nothing skipped: the same gain curves at any gain), its audio let go."""
    shaped, power = shape(part)
    if not shaped.any():
        return power, np.zeros(len(shaped) // DECIMATION, dtype=shaped.dtype)
    return power, _peaks(shaped, above=0.0)


def _peaks(shaped: np.ndarray, above: float) -> np.ndarray:
    """Estimated true peak of an excerpt, decimated, exact wherever it exceeds `above`.

    Two of the four interpolated phases give the estimate (the render uses all four).
    """
    return _decimate(dsp.true_peak_envelope(shaped, above=above, phases=(1, 2)), "max")


def _above(limiter: dsp.Limiter, gain_db: float) -> float:
    """A level under which no peak can reach the limiter's ceiling at `gain_db` or less.

    Where the estimate stays under it the limiter needs no gain reduction,
    so those peaks need not be interpolated: the gain curves are the same
    as from peaks interpolated everywhere (1 % margin for rounding).
    """
    ceiling = dsp.db_to_gain(limiter.ceiling_db - limiter.margin_db)
    return 0.99 * ceiling / dsp.db_to_gain(gain_db)


def analyze(source: Samples, preset_name: str) -> Analysis:
    """Measure the source and decide the chain's parameters for `preset_name`."""
    preset = chain.PRESETS[preset_name]
    rate = source.rate
    if preset.bypass:
        return Analysis(chain.ChainParams(preset_name, 0.0))
    parts = excerpts(source)
    tilt = round(spectral_tilt(parts, rate), 4) if preset.corrective_eq else None
    corrective = corrective_eq(tilt) if tilt is not None else ()
    shape = partial(_shaped, rate=rate, preset=preset, corrective=corrective)
    measured = parallel_map(shape, parts)
    del parts
    shaped = [audio for audio, _ in measured]
    powers = [power for _, power in measured]
    del measured
    # The limiter's gain curve varies slowly enough to be applied to the
    # K-weighted power directly, and at a 16th of the rate.
    rate_d = rate / DECIMATION
    # Later rounds keep their excerpts' exact peaks, not their audio, and read and
    # measure each in one task, so that a round's audio is never all held: 64
    # stereo excerpts kept took a cold track's peak PSS to 299 MB (measured).
    exact: list[np.ndarray] = []
    size, lead = round(EXCERPT_SECONDS * rate), round(LEAD_SECONDS * rate)
    while (
        len(powers) > 1  # not a track measured whole
        and len(powers) < MAX_EXCERPTS
        and 2 * len(powers) * (size + lead) <= source.length
        and sampling_error(powers, rate_d) > SAMPLING_ERROR_LU
    ):
        starts = excerpt_starts(source.length, size, len(powers), len(powers))
        more = parallel_map(lambda start: _exactly(shape, excerpt(source, start)), starts)
        powers += [power for power, _ in more]
        exact += [peaks for _, peaks in more]
    measured_lufs = _gated(powers, [None] * len(powers), rate_d)
    if measured_lufs <= loudness.ABSOLUTE_GATE_LUFS:  # silence: no loudness to correct
        return Analysis(chain.ChainParams(preset_name, 0.0, corrective), tilt)
    gain_db = float(np.clip(preset.target_lufs - measured_lufs, -MAX_GAIN_DB, MAX_GAIN_DB))
    # Peaks are interpolated only where they could reach the ceiling at a
    # gain up to PEAK_HEADROOM_DB above this one; past it, everywhere.
    bound = gain_db + PEAK_HEADROOM_DB
    peaks = parallel_map(partial(_peaks, above=_above(preset.limiter, bound)), shaped) + exact
    # The limiter takes loudness away, more as the gain grows: compensate
    # until within tolerance (peaky material needs a few passes).
    for _ in range(LIMITER_PASSES):
        if gain_db > bound:
            peaks = parallel_map(partial(_peaks, above=0.0), shaped) + exact
            bound = MAX_GAIN_DB
        scale = dsp.db_to_gain(gain_db)
        curves = [dsp.limiter_gain(p * scale, rate_d, preset.limiter) for p in peaks]
        scaled = [k * scale**2 for k in powers]
        error = preset.target_lufs - _gated(scaled, curves, rate_d)
        gain_db = float(np.clip(gain_db + error, -MAX_GAIN_DB, MAX_GAIN_DB))
        if abs(error) < LOUDNESS_TOLERANCE_LU:
            break
    gain_db = round(gain_db, 4)
    return Analysis(chain.ChainParams(preset_name, gain_db, corrective), tilt)


@dataclass(frozen=True)
class Measurement:
    """Whole-signal loudness figures (EBU R128): LUFS, LU, dBTP."""

    integrated_lufs: float
    loudness_range_lu: float
    true_peak_dbtp: float

    @classmethod
    def of(cls, audio: np.ndarray, rate: int) -> Measurement:
        peak = float(dsp.true_peak_envelope(audio).max(initial=0.0))
        return cls(
            round(loudness.integrated_loudness(audio, rate), 2),
            round(loudness.loudness_range(audio, rate), 2),
            round(float(20 * np.log10(max(peak, 1e-10))), 2),
        )
