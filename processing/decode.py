"""Windowed decoding of a source into float32 PCM at an output rate (SPEC §5).

libsndfile reads most sources directly and seeks to the window, so serving a
segment never decodes the whole file. Sources that it cannot read, or whose
rate must change, are converted once by ffmpeg (or libsndfile + scipy when
ffmpeg rejects the container) into an intermediate FLAC kept in a scratch
directory, and read from there with seeks.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile as sf

from processing.errors import DecodeError

KEPT_RATES = (44100, 48000)
FFMPEG = "ffmpeg"
INTERMEDIATE_VERSION = 1  # bump when the conversion changes
# 5.1 (L R C LFE Ls Rs) to stereo, ITU-R BS.775 coefficients, normalized so
# that a full-scale signal in every channel cannot clip.
_DOWNMIX_51 = np.array(
    [[1.0, 0.0], [0.0, 1.0], [0.7071, 0.7071], [0.0, 0.0], [0.7071, 0.0], [0.0, 0.7071]],
    dtype=np.float32,
) / np.float32(1.0 + 0.7071 + 0.7071)


def output_rate(rate: int) -> int:
    """44.1 kHz and 48 kHz stay; the 44.1 kHz family goes to 44100, all else to 48000."""
    if rate in KEPT_RATES:
        return rate
    return 44100 if rate % 11025 == 0 else 48000


def downmix(pcm: np.ndarray) -> np.ndarray:
    """(n, c) float32 → (n, 1) or (n, 2): mono stays mono, more than 2 go to stereo."""
    channels = pcm.shape[1]
    if channels <= 2:
        return pcm
    if channels == 6:
        return (pcm @ _DOWNMIX_51).astype(np.float32)
    left = pcm[:, 0::2].mean(axis=1)
    right = pcm[:, 1::2].mean(axis=1)
    return np.stack([left, right], axis=1).astype(np.float32)


@dataclass(frozen=True)
class SourceInfo:
    """What the catalog needs to know of a source, at the output rate."""

    rate: int
    channels: int
    length: int  # samples at `rate`


def probe(path: Path) -> SourceInfo:
    """Rate, channel count and length of `path` as it will be served."""
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError):
        return _probe_ffmpeg(path)
    if info.frames <= 0:
        raise DecodeError(f"{path.name}: no audio frames")
    rate = output_rate(info.samplerate)
    length = info.frames if rate == info.samplerate else round(info.frames * rate / info.samplerate)
    return SourceInfo(rate, min(info.channels, 2), length)


def _probe_ffmpeg(path: Path) -> SourceInfo:
    cmd = [
        "ffprobe", "-v", "error", "-select_streams", "a:0",
        "-show_entries", "stream=sample_rate,channels,duration",
        "-of", "default=nw=1", str(path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, timeout=60)
    fields = dict(line.split("=", 1) for line in proc.stdout.decode().splitlines() if "=" in line)
    if proc.returncode != 0 or "sample_rate" not in fields:
        raise DecodeError(f"{path.name}: not a readable audio file")
    try:
        rate = output_rate(int(fields["sample_rate"]))
        duration = float(fields.get("duration", "nan"))
    except ValueError as exc:
        raise DecodeError(f"{path.name}: not a readable audio file") from exc
    if not duration > 0:
        raise DecodeError(f"{path.name}: unknown duration")
    # The exact length is known once converted; ffprobe's duration is close.
    return SourceInfo(rate, min(int(fields.get("channels", 2)), 2), round(duration * rate))


def _direct_info(path: Path, rate: int | None = None) -> sf._SoundFileInfo | None:
    """libsndfile's view of `path` when it can be served as it is (readable, kept rate,
    or `rate` when one is asked for)."""
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError):
        return None
    wanted = KEPT_RATES if rate is None else (rate,)
    return info if info.samplerate in wanted else None


_LOSSLESS_CONTAINERS = {"FLAC", "WAV", "WAVEX", "W64", "RF64", "AIFF", "CAF"}


class Samples(Protocol):
    """What rendering and analysis read: a source, or a timeline of several."""

    rate: int
    channels: int
    length: int
    exact_seeks: bool

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray: ...


class AudioSource:
    """Random access to a source's PCM at the output rate, one window at a time.

    exact_seeks: whether a read gives the same samples whatever was read
    before or where it seeked from (lossless formats: FLAC, integer or
    float PCM), so that a later read may reuse an earlier one's samples.
    """

    def __init__(self, path: Path, scratch_dir: Path, key: str, rate: int | None = None) -> None:
        """rate: serve at this rate (converting once) instead of `output_rate`'s."""
        self.path = path
        self.key = key  # names the samples as served (a conversion to `rate` has its own)
        info = _direct_info(path, rate)
        if info is None:
            if rate is not None:
                self.key = f"{key}.r{rate}"
            readable = _intermediate(path, scratch_dir, key, rate)
            try:
                info = sf.info(str(readable))
            except (RuntimeError, sf.LibsndfileError) as exc:
                raise DecodeError(f"{path.name}: cannot be decoded ({exc})") from exc
        self._file_path = Path(info.name)
        self.rate = info.samplerate
        self.channels = min(info.channels, 2)
        self.length = info.frames
        self.exact_seeks = info.format in _LOSSLESS_CONTAINERS and (
            info.format == "FLAC"
            or info.subtype.startswith("PCM")
            or info.subtype in ("FLOAT", "DOUBLE")
        )

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Samples [start, stop) as float32 (n, channels); zeros outside the track.

        out: where to put them (shape (stop - start, channels), float32).
        """
        if stop <= start:
            return np.zeros((0, self.channels), dtype=np.float32)
        if out is None:
            out = np.zeros((stop - start, self.channels), dtype=np.float32)
        else:
            out[: max(0, -start)] = 0.0
            out[max(self.length - start, 0) :] = 0.0
        lo, hi = max(start, 0), min(stop, self.length)
        if hi <= lo:
            return out
        try:
            with sf.SoundFile(str(self._file_path)) as f:
                f.seek(lo)
                if f.channels == self.channels:  # decode straight into the result
                    f.read(
                        hi - lo, dtype="float32", always_2d=True, out=out[lo - start : hi - start]
                    )
                    return out
                data = f.read(hi - lo, dtype="float32", always_2d=True)
        except (RuntimeError, sf.LibsndfileError, OSError) as exc:
            raise DecodeError(f"{self.path.name}: decoding failed ({exc})") from exc
        data = downmix(data)
        out[lo - start : lo - start + len(data)] = data
        return out


def _intermediate(path: Path, scratch_dir: Path, key: str, rate: int | None = None) -> Path:
    """Convert `path` once into a FLAC at the output rate (or `rate`); shared by all
    processes."""
    scratch_dir.mkdir(parents=True, exist_ok=True)
    at = "" if rate is None else f".r{rate}"
    target = scratch_dir / f"{key}{at}.v{INTERMEDIATE_VERSION}.flac"
    if target.exists():
        return target
    with open(scratch_dir / f"{key}{at}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # single flight across processes
        if target.exists():
            return target
        fd, tmp_name = tempfile.mkstemp(dir=scratch_dir, suffix=".flac.tmp")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            try:
                _convert_ffmpeg(path, tmp, rate)
            except DecodeError:
                _convert_sndfile(path, tmp, rate)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return target


def _convert_ffmpeg(path: Path, out: Path, rate: int | None = None) -> None:
    try:
        info = _probe_ffmpeg(path)
    except subprocess.TimeoutExpired as exc:
        raise DecodeError(f"{path.name}: probing timed out") from exc
    layout = "mono" if info.channels == 1 else "stereo"
    cmd = [
        FFMPEG, "-nostdin", "-v", "error", "-y", "-i", str(path), "-map", "0:a:0",
        "-ac", str(info.channels), "-ar", str(rate or info.rate), "-channel_layout", layout,
        "-c:a", "flac", "-sample_fmt", "s32", "-bits_per_raw_sample", "24",
        "-f", "flac", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, timeout=600)
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
        raise DecodeError(f"{path.name}: cannot be decoded ({' '.join(tail)})")


def _convert_sndfile(path: Path, out: Path, rate: int | None = None) -> None:
    try:
        data, found = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise DecodeError(f"{path.name}: cannot be decoded ({exc})") from exc
    data = downmix(data)
    target = rate or output_rate(found)
    if target != found:
        from scipy.signal import resample_poly  # rarely needed: keep it out of the server

        g = np.gcd(target, found)
        data = resample_poly(data, target // g, found // g, axis=0).astype(np.float32)
    sf.write(str(out), np.clip(data, -1.0, 1.0), target, subtype="PCM_24", format="FLAC")
