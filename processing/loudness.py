"""ITU-R BS.1770-4 loudness: K-weighting, 400 ms blocks, two-stage gating.

Blocks are returned as mean-square powers so that several excerpts of one
track can be pooled before gating (a sampled integrated loudness).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import sosfilt

ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
BLOCK_SECONDS = 0.4
BLOCK_OVERLAP = 0.75


def k_weighting_sos(rate: int) -> np.ndarray:
    """The two K-weighting stages (shelf, high-pass) redesigned for `rate`.

    Coefficients follow the analogue prototypes of BS.1770 as derived by
    pyloudnorm (bilinear transform with the standard's f0, Q and gain).
    """
    sections = []
    for gain_db, q, fc, kind in ((4.0, 1 / math.sqrt(2), 1500.0, "shelf"), (0.0, 0.5, 38.0, "hp")):
        a = 10 ** (gain_db / 40.0)
        w0 = 2 * math.pi * fc / rate
        alpha = math.sin(w0) / (2 * q)
        cos_w = math.cos(w0)
        if kind == "shelf":
            b = [
                a * ((a + 1) + (a - 1) * cos_w + 2 * math.sqrt(a) * alpha),
                -2 * a * ((a - 1) + (a + 1) * cos_w),
                a * ((a + 1) + (a - 1) * cos_w - 2 * math.sqrt(a) * alpha),
            ]
            den = [
                (a + 1) - (a - 1) * cos_w + 2 * math.sqrt(a) * alpha,
                2 * ((a - 1) - (a + 1) * cos_w),
                (a + 1) - (a - 1) * cos_w - 2 * math.sqrt(a) * alpha,
            ]
        else:
            b = [(1 + cos_w) / 2, -(1 + cos_w), (1 + cos_w) / 2]
            den = [1 + alpha, -2 * cos_w, 1 - alpha]
        sections.append(
            [b[0] / den[0], b[1] / den[0], b[2] / den[0], 1.0, den[1] / den[0], den[2] / den[0]]
        )
    return np.array(sections)


def block_powers(audio: np.ndarray, rate: int) -> np.ndarray:
    """Channel-summed K-weighted mean square of each 400 ms block (75 % overlap).

    audio: (n, channels) float. Channel weights are 1.0 (L, R, mono).
    """
    if len(audio) < round(BLOCK_SECONDS * rate):
        return np.zeros(0)
    weighted = sosfilt(k_weighting_sos(rate), audio.astype(np.float64), axis=0)
    return blocks_of_power((weighted**2).sum(axis=1), rate)


def blocks_of_power(power: np.ndarray, rate: float) -> np.ndarray:
    """Mean of a per-sample K-weighted power over each 400 ms block (75 % overlap)."""
    block = round(BLOCK_SECONDS * rate)
    step = round(block * (1 - BLOCK_OVERLAP))
    if len(power) < block:
        return np.zeros(0)
    energy = np.concatenate([np.zeros(1), np.cumsum(power)])
    starts = np.arange(0, len(power) - block + 1, step)
    return np.asarray((energy[starts + block] - energy[starts]) / block)


def power_to_lufs(power: float | np.ndarray) -> np.ndarray:
    return np.asarray(-0.691 + 10.0 * np.log10(np.maximum(power, 1e-20)))


def gated_loudness(powers: np.ndarray) -> float:
    """Integrated loudness (LUFS) of pooled block powers; -70 when all are gated."""
    gate = gate_lufs(powers)
    if gate is None:
        return ABSOLUTE_GATE_LUFS
    return float(power_to_lufs(powers[power_to_lufs(powers) > gate].mean()))


def gate_lufs(powers: np.ndarray) -> float | None:
    """The level (LUFS) that a block's power must exceed to count in the integrated
    loudness: the relative gate, or the absolute one above it (None: none passes)."""
    above = powers[power_to_lufs(powers) > ABSOLUTE_GATE_LUFS]
    if len(above) == 0:
        return None
    return max(float(power_to_lufs(above.mean())) + RELATIVE_GATE_LU, ABSOLUTE_GATE_LUFS)


def integrated_loudness(audio: np.ndarray, rate: int) -> float:
    """BS.1770-4 integrated loudness in LUFS of (n, channels) audio."""
    return gated_loudness(block_powers(audio, rate))


def short_term(
    audio: np.ndarray, rate: int, step_seconds: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """EBU short-term loudness (3 s window) every `step_seconds`: (end times in s, LUFS)."""
    block, step = 3 * rate, max(1, round(step_seconds * rate))
    if len(audio) < block:
        return np.zeros(0), np.zeros(0)
    weighted = sosfilt(k_weighting_sos(rate), audio.astype(np.float64), axis=0)
    energy = np.concatenate([np.zeros(1), np.cumsum((weighted**2).sum(axis=1))])
    starts = np.arange(0, len(audio) - block + 1, step)
    return (starts + block) / rate, power_to_lufs((energy[starts + block] - energy[starts]) / block)


def loudness_range(audio: np.ndarray, rate: int) -> float:
    """EBU Tech 3342 loudness range (LU) from 3 s short-term blocks."""
    _, levels = short_term(audio, rate)
    if len(levels) == 0:
        return 0.0
    levels = levels[levels > ABSOLUTE_GATE_LUFS]
    if len(levels) == 0:
        return 0.0
    rel = float(power_to_lufs(10 ** ((levels + 0.691) / 10).mean())) - 20.0
    levels = levels[levels > rel]
    if len(levels) < 2:
        return 0.0
    low, high = np.percentile(levels, [10, 95])
    return float(high - low)
