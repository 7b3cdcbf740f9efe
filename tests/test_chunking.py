"""Chunked rendering converges to the whole-track rendering (SPEC §5, §8).

Compares the FLAC rendition of the stream with `hls-origin render` of the
whole track, segment by segment, and shows with a deliberately slow processor
what the context padding and the crossfade buy.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from processing import dsp
from processing.analysis import analyze
from processing.decode import AudioSource
from processing.plan import WindowSettings, plan_segments
from processing.render import CHAIN_REACH, Renderer, chain_processor
from tests.conftest import MUSIC, ROOT, synth_program
from tests.helpers import decode
from tests.test_seams import write_stream

RATE = 44100
ENHANCING = ["adaptive", "gentle", "warm", "bright", "punchy"]


def residual_db(chunked: np.ndarray, whole: np.ndarray) -> float:
    program = float(np.sqrt(np.mean(whole.astype(np.float64) ** 2)))
    error = float(np.sqrt(np.mean((chunked.astype(np.float64) - whole) ** 2)))
    return 20 * np.log10(max(error, 1e-12) / max(program, 1e-12))


@pytest.fixture(scope="module")
def track(tmp_path_factory: pytest.TempPathFactory) -> Path:
    real = MUSIC / "wesnoth-love_theme.ogg"
    if real.is_file():
        return real
    path = tmp_path_factory.mktemp("src") / "program.flac"
    sf.write(path, synth_program(95.0, seed=9), RATE, subtype="PCM_24")
    return path


@pytest.mark.parametrize("preset", ENHANCING)
def test_flac_stream_matches_the_whole_track_render_in_every_segment(
    preset: str, track: Path, tmp_path: Path
) -> None:
    whole_file = tmp_path / "whole.flac"
    render = subprocess.Popen(  # the whole-track render runs on the other core meanwhile
        [sys.executable, "-m", "hls", "render", str(track), str(whole_file), "--preset", preset],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        _, boundaries = write_stream(track, tmp_path, "flac", preset)
        chunked = (
            decode(tmp_path / "flac" / "index.m3u8", channels=2, fmt="s32le").astype(np.float64)
            / 2**31
        )
        _, errors = render.communicate(timeout=300)
    finally:
        render.kill()
    assert render.returncode == 0, errors
    whole = sf.read(whole_file, dtype="float64", always_2d=True)[0]
    assert chunked.shape == whole.shape
    edges = [0, *boundaries, len(whole)]
    figures = [
        residual_db(chunked[a:b], whole[a:b]) for a, b in zip(edges, edges[1:], strict=False)
    ]
    print(preset, "residual per segment (dB below program RMS):", [f"{f:.1f}" for f in figures])
    assert max(figures) <= -60.0, figures


def slow_agc(audio: np.ndarray, keep_from: int = 0, first: int = 0) -> np.ndarray:
    """A long-memory processor: gain toward -20 dBFS RMS from a 2 s level average."""
    power = np.mean(audio.astype(np.float64) ** 2, axis=1)
    level = dsp._one_pole(power, RATE, 2000.0)
    gain = np.sqrt(0.01 / np.maximum(level, 1e-6))
    return (audio * gain[:, None]).astype(np.float32)


def seam_jump_db(program: np.ndarray, boundary: int, width: int = 441) -> float:
    """Level step across a boundary: RMS of 10 ms after over 10 ms before, in dB."""
    before = np.sqrt(np.mean(program[boundary - width : boundary] ** 2))
    after = np.sqrt(np.mean(program[boundary : boundary + width] ** 2))
    return float(abs(20 * np.log10(after / before)))


def test_context_and_crossfade_make_a_long_memory_processor_seamless(tmp_path: Path) -> None:
    # A steady tone 12 dB louder for the 3 s before each boundary: the
    # AGC is still moving at the boundary, so a window that starts there cold
    # renders a different level than the window before it.
    t = np.arange(40 * RATE) / RATE
    level = np.where((t % 10.0) > 7.0, 0.4, 0.1)
    audio = np.stack([level * np.sin(2 * np.pi * 440 * t)] * 2, axis=1).astype(np.float32)
    src = tmp_path / "tone.wav"
    sf.write(src, audio, RATE, subtype="FLOAT")
    source = AudioSource(src, tmp_path / "scratch", "tone")
    plan = plan_segments(source.length, RATE, 10.0, ramp=())  # boundaries every 10 s
    boundaries = [seg.start for seg in plan.segments[1:]]
    naive = Renderer(source, plan, WindowSettings(context=0, overlap=0), slow_agc)
    padded = Renderer(source, plan, WindowSettings.from_seconds(RATE, 5.0, 1.0), slow_agc)
    whole = slow_agc(source.read(0, source.length))
    naive_jumps = [seam_jump_db(naive.program(0, plan.length), b) for b in boundaries]
    padded_jumps = [seam_jump_db(padded.program(0, plan.length), b) for b in boundaries]
    whole_jumps = [seam_jump_db(whole, b) for b in boundaries]
    print(
        "level step at seams (dB): naive", naive_jumps, "padded", padded_jumps, "whole", whole_jumps
    )
    assert min(naive_jumps) > 3.0  # without context and crossfade: audible steps
    assert max(abs(p - w) for p, w in zip(padded_jumps, whole_jumps, strict=True)) < 0.1


@pytest.mark.parametrize("preset", ["adaptive", "punchy"])
def test_context_after_the_chains_reach_changes_no_kept_sample(
    preset: str, track: Path, tmp_path: Path
) -> None:
    # Every stage is causal but the limiter, which looks 5 ms ahead: a window
    # cut CHAIN_REACH samples past what it keeps renders what the full 5 s
    # context after it renders.
    source = AudioSource(track, tmp_path / "scratch", "reach")
    plan = plan_segments(source.length, RATE, 30.0)
    window = WindowSettings.from_seconds(RATE, 5.0, 1.0)
    process = chain_processor(RATE, analyze(source, preset), 1.0)
    full = Renderer(source, plan, window, process)
    cut = Renderer(source, plan, window, process, reach=CHAIN_REACH)
    assert cut.after == CHAIN_REACH < full.after == window.context
    for k in range(len(plan)):
        assert np.array_equal(cut.rendering(k), full.rendering(k)), k


def test_windows_reuse_the_decoded_overlap_of_lossless_sources_only(tmp_path: Path) -> None:
    # Window k + 1 starts 5 s before segment k + 1, inside what window k read:
    # a FLAC source decodes it once, and every rendering is the one a fresh
    # renderer makes of that window alone. A lossy source reads each window
    # whole (decoding after a seek need not match decoding straight through).
    audio = synth_program(47.0, seed=12)
    lossless, lossy = tmp_path / "src.flac", tmp_path / "src.ogg"
    sf.write(lossless, audio, RATE, subtype="PCM_24")
    sf.write(lossy, audio, RATE, format="OGG", subtype="VORBIS")
    assert not AudioSource(lossy, tmp_path / "scratch", "ogg").exact_seeks
    source = AudioSource(lossless, tmp_path / "scratch", "reuse")
    assert source.exact_seeks
    plan = plan_segments(source.length, RATE, 10.0)
    window = WindowSettings.from_seconds(RATE, 5.0, 1.0)
    process = chain_processor(RATE, analyze(source, "punchy"), 1.0)
    decoded = []
    read = source.read

    def counted(a: int, b: int, out: np.ndarray | None = None) -> np.ndarray:
        decoded.append(b - a)
        return read(a, b, out)

    source.read = counted  # type: ignore[method-assign]
    reusing = Renderer(source, plan, window, process, reach=CHAIN_REACH)
    for k in range(len(plan)):
        fresh = AudioSource(lossless, tmp_path / "scratch", "reuse")
        alone = Renderer(fresh, plan, window, process, reach=CHAIN_REACH)
        assert np.array_equal(reusing.rendering(k), alone.rendering(k)), k
    overlap = window.context + reusing.tail + reusing.after
    assert sum(decoded) <= source.length + overlap  # each sample decoded about once
