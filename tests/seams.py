"""Seam checker: is a segmented AAC stream as good at its boundaries as one continuous encode?

Decode the stream (a playlist or file, anything ffmpeg reads), align it to the
reference PCM by cross-correlation at its start and end (lead and drift),
then compare the error in 20 ms windows on either side of every boundary
against the same windows of one continuous encode of the same PCM (SPEC §8).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import fftconvolve

from processing.encode import aac_argv, split_adts
from tests.helpers import decode

WINDOW_SECONDS = 0.020
ERROR_FLOOR = 1e-12  # -120 dB: silence against silence counts as equal


@dataclass(frozen=True)
class SeamReport:
    length_difference: int  # decoded samples minus reference samples
    lead: int  # samples by which the decoded stream trails the source at its start
    drift: int  # lead at the end minus lead at the start
    excess_db: tuple[float, ...]  # per window: segmented error minus continuous error

    @property
    def mean_db(self) -> float:
        return float(np.mean(self.excess_db)) if self.excess_db else 0.0

    @property
    def max_db(self) -> float:
        return float(np.max(self.excess_db)) if self.excess_db else 0.0

    def __str__(self) -> str:
        return (
            f"length +{self.length_difference} lead {self.lead} drift {self.drift} "
            f"seam excess mean {self.mean_db:+.2f} dB max {self.max_db:+.2f} dB "
            f"over {len(self.excess_db)} windows"
        )


def lag_of(decoded: np.ndarray, target: np.ndarray, at: int, span: int, search: int = 2048) -> int:
    """Delay (samples, may be negative) of `decoded` relative to `target` around sample `at`."""
    lo = max(at - search, 0)
    seg = decoded[lo : at + span + search].mean(axis=1)
    ref = target[at : at + span].mean(axis=1)
    if len(ref) < 2 or not np.any(ref) or len(seg) < len(ref):
        return 0
    # First differences whiten the spectrum, so low notes do not blur the peak.
    corr = fftconvolve(np.diff(seg), np.diff(ref)[::-1], mode="valid")
    return int(np.argmax(corr)) + lo - at


def continuous_encode(reference: np.ndarray, rate: int, quality: float) -> np.ndarray:
    """The same PCM through one AAC encode, decoded (keeps its 1024-sample lead)."""
    pcm = np.ascontiguousarray(reference, dtype="<f4").tobytes()
    adts = subprocess.run(
        aac_argv(rate, reference.shape[1], quality), input=pcm, capture_output=True, check=True
    )
    split_adts(adts.stdout)  # a malformed stream fails here, not in the comparison
    proc = subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "aac", "-i", "-", "-f", "f32le", "-"],
        input=adts.stdout, capture_output=True, check=True,
    )  # fmt: skip
    return np.frombuffer(proc.stdout, "<f4").reshape(-1, reference.shape[1])


def _error_db(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(max(float(np.mean((a - b) ** 2)), ERROR_FLOOR)))


def check(
    stream: str | Path,
    reference: np.ndarray,
    rate: int,
    boundaries: list[int],
    quality: float,
    lead: int = 1024,
    continuous: np.ndarray | None = None,
) -> SeamReport:
    """Compare a segmented stream with a continuous encode at every boundary
    (`continuous`: that encode, if made already)."""
    channels = reference.shape[1]
    decoded = decode(stream, channels)
    if continuous is None:
        continuous = continuous_encode(reference, rate, quality)
    # Leads are measured against the continuous encode, whose lead is the
    # encoder's fixed priming (1024 samples): same codec, so a sharp peak.
    span = min(rate, len(reference) // 4)
    tail = max(len(reference) - span - 1024, 0)
    measured_lead = lead + lag_of(decoded, continuous, lead, span)
    end_lead = lead + lag_of(decoded, continuous, tail, span)
    win = round(WINDOW_SECONDS * rate)
    excess = []
    for b in boundaries:
        for start in (b - win, b):
            if start < 0 or start + win > len(reference):
                continue
            ref = reference[start : start + win]
            seg = decoded[start + lead : start + lead + win]
            con = continuous[start + lead : start + lead + win]
            if len(seg) < win or len(con) < win:
                continue
            excess.append(_error_db(seg, ref) - _error_db(con, ref))
    return SeamReport(
        len(decoded) - len(reference), measured_lead, end_lead - measured_lead, tuple(excess)
    )
