"""The demo library: a few minutes of deterministic, music-like audio.

Synthesized on first run when no library is given, so `hls-origin serve`
works offline. Same bytes on every machine (seeded generator, FLAC 16-bit).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 44100
DEMO_VERSION = 1
# (file name, seconds, tempo in BPM, root note in Hz)
TRACKS = (
    ("01-morning-drive.flac", 95.0, 112, 110.0),
    ("02-slow-tide.flac", 74.0, 76, 98.0),
    ("03-city-lights.flac", 65.0, 128, 130.81),
)
_CHORDS = ((0, 4, 7), (5, 9, 12), (7, 11, 14), (-3, 0, 4))  # I IV V vi in semitones


def synthesize(seconds: float, bpm: float, root: float, seed: int) -> np.ndarray:
    """Stereo float32 (n, 2): chord pads, a bass line, kick and hi-hat."""
    rng = np.random.default_rng(seed)
    n = round(seconds * RATE)
    t = np.arange(n) / RATE
    beat = 60.0 / bpm
    bar = 4 * beat
    out = np.zeros((n, 2))
    chord_index = (t // bar).astype(int) % len(_CHORDS)
    for voice in range(3):
        semis = np.array([c[voice] for c in _CHORDS])[chord_index]
        freq = 2 * root * 2.0 ** (semis / 12)
        phase = 2 * np.pi * np.cumsum(freq) / RATE
        tone = sum(np.sin(h * phase) / h**1.5 for h in range(1, 6))
        pan = 0.3 + 0.2 * voice
        out[:, 0] += 0.08 * tone * (1 - pan)
        out[:, 1] += 0.08 * tone * pan
    bass_freq = root / 2 * 2.0 ** (np.array([c[0] for c in _CHORDS])[chord_index] / 12)
    bass_env = np.exp(-((t % beat) / (0.6 * beat)))
    bass = 0.25 * np.sin(2 * np.pi * np.cumsum(bass_freq) / RATE) * bass_env
    out += bass[:, None]
    since_beat = t % beat
    kick = 0.6 * np.sin(2 * np.pi * (50 + 80 * np.exp(-since_beat * 30)) * since_beat)
    out += (kick * np.exp(-since_beat * 12))[:, None]
    half = beat / 2
    hat = rng.standard_normal((n, 2)) * np.exp(-(t % half) * 60)[:, None] * 0.05
    out += hat
    # Sections: a quiet intro and a louder middle, so loudness varies.
    dynamics = 0.55 + 0.45 * np.clip((t - 8) / 20, 0, 1) * (1 - 0.4 * ((t // (8 * bar)) % 2))
    out *= dynamics[:, None]
    fade = np.minimum(1, np.minimum(t / 0.5, (seconds - t) / 2.0))
    out *= fade[:, None]
    return (out / max(1.0, np.abs(out).max() / 0.9)).astype(np.float32)


def demo_folder(directory: Path) -> Path:
    return directory / f"v{DEMO_VERSION}"


def missing_demo_tracks(directory: Path) -> list[int]:
    """The indexes in TRACKS of the demo tracks not made yet in `directory`."""
    folder = demo_folder(directory)
    return [i for i, (name, *_) in enumerate(TRACKS) if not (folder / name).exists()]


def make_demo_track(directory: Path, index: int) -> Path:
    """Synthesize demo track `index` into `directory` (atomically); returns its path.
    Each track is made on its own, so several processes can make them at once."""
    folder = demo_folder(directory)
    folder.mkdir(parents=True, exist_ok=True)
    name, seconds, bpm, root = TRACKS[index]
    path = folder / name
    audio = synthesize(seconds, bpm, root, index)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".flac.part")
    os.close(fd)
    try:
        sf.write(tmp, audio, RATE, subtype="PCM_16", format="FLAC")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
