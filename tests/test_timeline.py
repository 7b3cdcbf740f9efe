"""Several sources as one timeline (processing.timeline, SPEC §10): the ground a queue
stands on. Real files, real conversion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from processing import chain
from processing.analysis import Analysis
from processing.decode import AudioSource
from processing.plan import WindowSettings, plan_segments
from processing.render import CHAIN_REACH, Processor, Renderer, chain_processor
from processing.timeline import Timeline, TrackChains
from tests.conftest import music_file, synth_program

CUTS = (1_234_567, 2_500_001)  # off the 1024-sample grid


@pytest.fixture(scope="module")
def recording() -> np.ndarray:
    real = music_file("drascula-track2.ogg")
    if real is None:
        return synth_program(80.0, seed=17)
    return sf.read(str(real), dtype="float32", frames=44100 * 80)[0]


def cut(recording: np.ndarray, folder: Path) -> list[AudioSource]:
    """The recording as three FLAC tracks, cut at CUTS."""
    folder.mkdir(exist_ok=True)
    pieces = np.split(recording, CUTS)
    tracks = []
    for i, piece in enumerate(pieces):
        path = folder / f"{i}.flac"
        sf.write(path, piece, 44100, subtype="PCM_24")
        tracks.append(AudioSource(path, folder / "scratch", f"t{i}"))
    return tracks


def test_tracks_join_sample_exactly_in_any_window(recording: np.ndarray, tmp_path: Path) -> None:
    tracks = cut(recording, tmp_path)
    timeline = Timeline(tracks)
    whole = np.concatenate([t.read(0, t.length) for t in tracks])  # 24-bit as stored
    assert timeline.length == len(recording) == len(whole)
    assert timeline.starts == [0, *CUTS]
    assert timeline.exact_seeks
    rng = np.random.default_rng(3)
    windows = [(c - 700, c + 900) for c in CUTS] + [(-50, 3000), (len(whole) - 10, len(whole) + 99)]
    windows += [tuple(sorted(rng.integers(-100, len(whole) + 100, 2))) for _ in range(20)]
    for start, stop in windows:
        expected = np.zeros((stop - start, 2), np.float32)
        lo, hi = max(start, 0), min(stop, len(whole))
        expected[lo - start : hi - start] = whole[lo:hi]
        assert np.array_equal(timeline.read(start, stop), expected), (start, stop)
    assert [timeline.track_at(s) for s in (0, CUTS[0] - 1, CUTS[0], CUTS[1], len(whole))] == [
        0, 0, 1, 2, 2,
    ]  # fmt: skip


def test_the_unprocessed_program_of_a_timeline_is_the_concatenation(
    recording: np.ndarray, tmp_path: Path
) -> None:
    """Windows, context and overlap across track joins: preset `original` over the
    segment plan gives back every sample of the tracks, in order."""
    tracks = cut(recording, tmp_path)
    timeline = Timeline(tracks)
    plan = plan_segments(timeline.length, timeline.rate, 10.0)
    window = WindowSettings.from_seconds(timeline.rate, 5.0, 1.0)
    renderer = Renderer(timeline, plan, window, chain_processor(timeline.rate, None, 1.0),
                        reach=CHAIN_REACH)  # fmt: skip
    program = np.concatenate([renderer.program(seg.start, seg.end) for seg in plan])
    whole = np.concatenate([t.read(0, t.length) for t in tracks])
    assert np.array_equal(program, whole)


def test_tracks_of_another_rate_and_channel_count_join_the_timeline(tmp_path: Path) -> None:
    stereo = synth_program(3.0, seed=1)
    mono = synth_program(2.0, rate=48000, channels=1, seed=2)
    sf.write(tmp_path / "a.flac", stereo, 44100, subtype="PCM_24")
    sf.write(tmp_path / "b.flac", mono, 48000, subtype="PCM_24")
    scratch = tmp_path / "scratch"
    first = AudioSource(tmp_path / "a.flac", scratch, "a")
    second = AudioSource(tmp_path / "b.flac", scratch, "b", rate=first.rate)
    assert second.rate == 44100 and abs(second.length - 2.0 * 44100) <= 2
    with pytest.raises(ValueError, match="several rates"):
        Timeline([first, AudioSource(tmp_path / "b.flac", scratch, "b")])
    timeline = Timeline([first, second])
    assert timeline.channels == 2 and timeline.length == first.length + second.length
    joined = timeline.read(0, timeline.length)
    assert np.array_equal(joined[: first.length], first.read(0, first.length))
    tail = joined[first.length :]
    assert np.array_equal(tail[:, 0], tail[:, 1])  # the mono track in both channels
    assert np.array_equal(tail[:, :1], second.read(0, second.length))
    # Converted once: the 48 kHz source at 44.1 kHz is kept under its own name.
    assert len(list(scratch.glob("b.r44100.*.flac"))) == 1


class _Length:
    """A track as TrackChains sees it: its length (and rate and channels)."""

    def __init__(self, length: int) -> None:
        self.length, self.rate, self.channels, self.exact_seeks = length, 44100, 2, True


@pytest.mark.parametrize("crossfade", [0, 3 * 44100])
def test_track_chains_give_each_rendering_times_its_share(crossfade: int) -> None:
    # The blend computes shares only where they ramp and lets a handing-over
    # chain render only up to its reach: the samples must be those of the
    # definition, every chain over the whole window times its share.
    rate = 44100
    timeline = Timeline([_Length(n) for n in (20 * rate, 7 * rate, 3000, 9 * rate)], crossfade)
    presets = ("punchy", "adaptive", "warm", "bright")

    def chain_of(i: int) -> Processor:
        params = chain.ChainParams(presets[i], 1.0 + i, ())
        process = chain_processor(rate, Analysis(params), 1.0)
        assert process is not None
        return process

    chains = TrackChains(timeline, chain_of, reach=CHAIN_REACH)
    rng = np.random.default_rng(5)
    joins = 0
    for first in [
        *(s - 2 * rate for s in timeline.starts[1:]),
        *rng.integers(-rate, timeline.length, 6),
    ]:
        first = int(first)
        size, keep = 8 * rate, rate
        audio = (0.2 * rng.standard_normal((size, 2))).astype(np.float32)
        got = chains(audio.copy(), keep, first)[keep:]
        expected = np.zeros_like(got)
        for i in range(len(timeline.tracks)):
            share = chains.weight(i, first + keep, first + size)
            if share.any():
                rendered = chain_of(i)(audio.copy(), keep, first)[keep:]
                expected += rendered * share.astype(np.float32)[:, None]
                joins += not share.all()
        np.testing.assert_array_equal(got, expected)
    assert joins >= 6  # the windows did cross the joins
