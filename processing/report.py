"""`hls-origin analyze`: loudness before and after the chain, and the chain's parameters."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.signal import welch

from processing import loudness
from processing.analysis import Analysis, Measurement, analyze, excerpts, spectral_tilt
from processing.decode import AudioSource
from processing.render import chain_processor


@dataclass(frozen=True)
class Report:
    source: str
    preset: str
    rate: int
    channels: int
    duration: float  # seconds
    before: Measurement
    after: Measurement
    analysis: Analysis
    tilt_db_per_octave: float  # of the source, whether or not the preset corrects it

    def to_json(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        rows = [
            ("integrated loudness (LUFS)", "integrated_lufs"),
            ("loudness range (LU)", "loudness_range_lu"),
            ("true peak (dBTP)", "true_peak_dbtp"),
        ]
        header = f"{self.source}  {self.duration:.1f} s  {self.rate} Hz  {self.channels} ch"
        lines = [
            f"{header}  preset {self.preset}",
            f"{'':28s}{'before':>10s}{'after':>10s}",
        ]
        for label, field in rows:
            lines.append(
                f"{label:28s}{getattr(self.before, field):10.2f}{getattr(self.after, field):10.2f}"
            )
        params = self.analysis.params
        lines.append(f"spectral tilt (dB/octave)   {self.tilt_db_per_octave:10.2f}")
        lines.append(f"gain to target (dB)         {params.gain_db:10.2f}")
        for band in params.corrective:
            lines.append(f"corrective {band.kind:17s}{band.freq:7.0f} Hz {band.gain_db:+.2f} dB")
        return "\n".join(lines)


def build_report(path: Path, preset: str, scratch: Path) -> tuple[Report, np.ndarray, np.ndarray]:
    """Measure the whole track before and after the chain at intensity 1."""
    source = AudioSource(path, scratch, "analyze")
    analysis = analyze(source, preset)
    before = source.read(0, source.length)
    process = chain_processor(source.rate, analysis, 1.0)
    after = before if process is None else process(before.copy(), 0, 0)  # in place
    report = Report(
        path.name, preset, source.rate, source.channels, source.length / source.rate,
        Measurement.of(before, source.rate), Measurement.of(after, source.rate), analysis,
        round(spectral_tilt(excerpts(source), source.rate), 4),
    )  # fmt: skip
    return report, before, after


def plot(report: Report, before: np.ndarray, after: np.ndarray, out: Path) -> None:
    """Short-term loudness over time and long-term spectrum, before and after, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rate = report.rate
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7))
    for label, audio in (("before", before), ("after", after)):
        times, levels = loudness.short_term(audio, rate)
        top.plot(times, levels, label=label)
        freqs, psd = welch(audio.mean(axis=1), fs=rate, nperseg=8192)
        bottom.semilogx(freqs[1:], 10 * np.log10(psd[1:] + 1e-20), label=label)
    top.set(
        xlabel="time (s)",
        ylabel="short-term loudness (LUFS)",
        title=f"{report.source}: {report.preset}",
    )
    bottom.set(xlabel="frequency (Hz)", ylabel="power (dB/Hz)", xlim=(20, rate / 2))
    for axis in (top, bottom):
        axis.grid(True, alpha=0.3)
        axis.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
