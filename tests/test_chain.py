"""The enhancement chain against reference values and its targets (SPEC §5, §8)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
from scipy.signal import resample_poly, welch

from processing import chain, dsp, loudness
from processing.analysis import PSD_BLOCK, analyze, excerpt, power_spectrum
from processing.decode import AudioSource
from processing.render import render_whole
from tests.conftest import MUSIC, synth_program

RATE = 44100
MUSIC_FILES = sorted(p.name for p in MUSIC.glob("*.ogg")) if MUSIC.is_dir() else []
ENHANCING = [p for p in chain.PRESET_NAMES if p != "original"]


def reference_true_peak_db(audio: np.ndarray) -> float:
    """An independent measure: 4x polyphase resampling (scipy's Kaiser FIR), max |x|.

    Channel by channel, each contiguous: resampling along axis 0 of an
    interleaved array gives the same peaks 2.6x slower."""
    peak = float(np.abs(audio).max())
    for channel in np.atleast_2d(audio.T):
        up = resample_poly(np.ascontiguousarray(channel, dtype=np.float64), 4, 1)
        peak = max(peak, float(np.abs(up).max()))
    return 20 * np.log10(peak)


def wav_source(directory: Path, name: str, audio: np.ndarray) -> AudioSource:
    """`audio` as a float WAV in `directory`, opened as a source."""
    path = directory / f"{name}.wav"
    sf.write(path, audio, RATE, subtype="FLOAT")
    return AudioSource(path, directory / "scratch", name)


def load(name: str) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        source = AudioSource(MUSIC / name, Path(tmp), "x")
        return source.read(0, source.length)


@pytest.mark.parametrize("seconds", [3.0, 20.0])
@pytest.mark.parametrize("channels", [1, 2])
def test_bs1770_agrees_with_pyloudnorm_on_synthesized_signals(
    seconds: float, channels: int
) -> None:
    audio = synth_program(seconds, channels=channels, seed=3) * 0.5
    ours = loudness.integrated_loudness(audio, RATE)
    theirs = pyloudnorm.Meter(RATE).integrated_loudness(audio.astype(np.float64))
    assert abs(ours - theirs) <= 0.1, (ours, theirs)


@pytest.mark.skipif(not MUSIC_FILES, reason="../shared/music is not present")
@pytest.mark.parametrize("name", MUSIC_FILES)
def test_bs1770_agrees_with_pyloudnorm_on_real_tracks(name: str) -> None:
    audio = load(name)
    ours = loudness.integrated_loudness(audio, RATE)
    theirs = pyloudnorm.Meter(RATE).integrated_loudness(audio.astype(np.float64))
    assert abs(ours - theirs) <= 0.1, (ours, theirs)


@pytest.mark.parametrize("channels", [1, 2])
def test_the_long_term_spectrum_has_the_shape_of_scipys_welch(channels: int) -> None:
    audio = synth_program(4.0, RATE)[:, :channels].astype(np.float32)
    ours = power_spectrum(audio)
    assert ours is not None
    _, theirs = welch(audio.mean(axis=1), fs=RATE, nperseg=PSD_BLOCK, noverlap=0)
    ratio = ours[1:-1] / theirs[1:-1]  # one scale for all bins (DC and Nyquist differ)
    assert np.allclose(ratio, ratio[0], rtol=1e-3)
    assert power_spectrum(audio[: PSD_BLOCK - 1]) is None


def test_an_intersample_peak_is_detected() -> None:
    # A sine at a quarter of the rate, 45° off the samples: every sample is at
    # 0.707 of the peak, so the sample peak reads -3 dB below the true peak.
    n = np.arange(RATE)
    audio = (0.9 * np.sin(np.pi / 2 * n + np.pi / 4))[:, None].astype(np.float32)
    sample_peak = 20 * np.log10(np.abs(audio).max())
    true_peak = 20 * np.log10(dsp.true_peak_envelope(audio).max())
    assert sample_peak == pytest.approx(20 * np.log10(0.9 * np.sqrt(0.5)), abs=0.01)
    assert true_peak == pytest.approx(20 * np.log10(0.9), abs=0.2)
    # The fast path (interpolate only where the ceiling may be crossed) agrees.
    assert dsp.true_peak_envelope(audio, above=0.5).max() == pytest.approx(
        10 ** (true_peak / 20), rel=1e-6
    )


@pytest.mark.parametrize("above", [0.2, 0.5, 0.86])
def test_true_peaks_interpolated_only_where_they_can_cross_agree_with_the_exact_ones(
    above: float,
) -> None:
    # Quiet stretches and a few hot spots: most blocks are skipped, runs of
    # every length are interpolated side by side, at the edges too.
    rng = np.random.default_rng(11)
    for length in (1, 17, 300, 4099, 150_000):  # the last one block by block
        audio = (rng.standard_normal((length, 2)) * 0.05).astype(np.float32)
        audio[rng.integers(0, length, 4)] = 0.9
        audio[0] = audio[-1] = 0.95
        exact = dsp.true_peak_envelope(audio)
        fast = dsp.true_peak_envelope(audio, above=above)
        crossing = (exact > above) | (fast > above)
        assert crossing.any()
        assert np.array_equal(fast[crossing], exact[crossing])
        assert (fast[~crossing] <= above).all()


@pytest.mark.parametrize("preset", ["punchy", "adaptive"])
def test_the_analysis_interpolates_peaks_only_where_the_limiter_could_act(
    preset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from processing import analysis

    # Program with bursts of a quarter-rate tone whose samples sit 3 dB under
    # its true peak, longer than a full read (so measured on excerpts).
    audio = synth_program(90.0, seed=7)
    n = np.arange(len(audio))
    burst = (n // 2000) % 7 == 0
    audio[burst] = (0.5 * np.sin(np.pi / 2 * n[burst] + np.pi / 4))[:, None]
    limiter = chain.PRESETS[preset].limiter
    rate_d = RATE / analysis.DECIMATION
    # The gain curves from peaks skipped under the bound are those from exact
    # peaks, at every gain up to the bound, also where the limiter works hard.
    part = chain.pre_gain(audio, RATE, chain.PRESETS[preset], ())
    exact = analysis._peaks(part, 0.0)
    reaches = 20 * np.log10(dsp.db_to_gain(limiter.ceiling_db) / exact.max())  # dB
    for bound in (reaches + 3.0, reaches + 6.0, reaches + 12.0):
        fast = analysis._peaks(part, analysis._above(limiter, bound))
        for gain_db in (bound - 3.0, bound):
            scale = dsp.db_to_gain(gain_db)
            curve = dsp.limiter_gain(exact * scale, rate_d, limiter)
            assert curve.min() < 1.0  # the limiter acts
            assert np.array_equal(dsp.limiter_gain(fast * scale, rate_d, limiter), curve)
    # And the whole analysis is the same with every peak interpolated (100 dB
    # of headroom), with the bound crossed at the first pass (0 dB: peaks
    # made again, exactly) and with the default.
    source = wav_source(tmp_path, "peaky", audio)
    found = {}
    for headroom in (100.0, 0.0, analysis.PEAK_HEADROOM_DB):
        monkeypatch.setattr(analysis, "PEAK_HEADROOM_DB", headroom)
        found[headroom] = analyze(source, preset)
    print(preset, {h: a.params.gain_db for h, a in found.items()})
    assert len(set(found.values())) == 1


def program_material() -> list[tuple[str, np.ndarray]]:
    items = [
        ("synth-quiet", synth_program(40.0, seed=5) * 0.1),
        ("synth-hot", synth_program(40.0, seed=6)),
    ]
    return items + [(name, load(name)) for name in MUSIC_FILES]


@pytest.fixture(scope="module")
def material() -> list[tuple[str, np.ndarray]]:
    return program_material()


@pytest.mark.parametrize("preset", ENHANCING)
def test_every_preset_hits_its_loudness_target_and_true_peak_ceiling(
    preset: str, material: list[tuple[str, np.ndarray]], tmp_path: Path
) -> None:
    target = chain.PRESETS[preset].target_lufs
    meter = pyloudnorm.Meter(RATE)
    for name, audio in material:
        source = wav_source(tmp_path, name, audio)
        rendered = render_whole(source, analyze(source, preset), 1.0)
        lufs = meter.integrated_loudness(rendered.astype(np.float64))
        peak = reference_true_peak_db(rendered)
        print(f"{preset} {name}: {lufs:.2f} LUFS (target {target}), true peak {peak:.2f} dBTP")
        assert abs(lufs - target) <= 1.0, (name, lufs)
        assert peak <= -1.0, (name, peak)


def sparse_material(seconds: float, period: float, sound: float) -> np.ndarray:
    """A sound of `sound` seconds (a decaying chord) then silence, every `period` seconds."""
    n, every = round(seconds * RATE), round(period * RATE)
    out = np.zeros((n, 2), np.float32)
    note = synth_program(sound, seed=8) * np.exp(-np.arange(round(sound * RATE)) / RATE)[:, None]
    for start in range(0, n - len(note), every):
        out[start : start + len(note)] = note
    return out


@pytest.mark.parametrize(
    ("name", "audio"),
    [
        # A 22.5 s loop over 180 s: excerpts at the middle of each eighth (the old
        # placement) all fell in its silence, and the gain went to +24 dB.
        ("loop with silence", sparse_material(180.0, 22.5, 4.0)),
        ("notes over silence", sparse_material(150.0, 4.0, 1.5)),
    ],
)
@pytest.mark.parametrize("preset", ["gentle", "punchy"])
def test_sparse_material_hits_the_loudness_target_too(
    name: str, audio: np.ndarray, preset: str, tmp_path: Path
) -> None:
    source = wav_source(tmp_path, "sparse", audio)
    rendered = render_whole(source, analyze(source, preset), 1.0)
    lufs = pyloudnorm.Meter(RATE).integrated_loudness(rendered.astype(np.float64))
    target = chain.PRESETS[preset].target_lufs
    print(f"{preset} {name}: {lufs:.2f} LUFS (target {target})")
    assert abs(lufs - target) <= 1.0, (name, lufs)
    assert reference_true_peak_db(rendered) <= -1.0


def test_later_rounds_of_excerpts_keep_peaks_that_give_the_same_analysis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from processing import analysis

    source = wav_source(tmp_path, "sparse", sparse_material(180.0, 22.5, 4.0))
    read = []
    monkeypatch.setattr(analysis, "excerpt", lambda *a: read.append(a) or excerpt(*a))
    found = {}
    for headroom in (100.0, analysis.PEAK_HEADROOM_DB):  # every peak interpolated; default
        monkeypatch.setattr(analysis, "PEAK_HEADROOM_DB", headroom)
        found[headroom] = analyze(source, "punchy")
    assert len(read) > 2 * analysis.EXCERPTS  # more rounds than the first
    assert len(set(found.values())) == 1


def test_silence_gets_no_gain(tmp_path: Path) -> None:
    source = wav_source(tmp_path, "silence", np.zeros((round(120 * RATE), 2), np.float32))
    for preset in ENHANCING:
        assert analyze(source, preset).params.gain_db == 0.0  # not +24 dB of noise floor


@pytest.mark.parametrize("preset", ENHANCING)
def test_a_silent_excerpt_is_measured_as_the_chain_would(preset: str) -> None:
    from processing import analysis

    silent = np.zeros((round(1.75 * RATE), 2), np.float32)
    lead = round(0.25 * RATE)
    shaped, power = analysis._shaped((silent.copy(), lead), RATE, chain.PRESETS[preset], ())
    through = chain.pre_gain(silent, RATE, chain.PRESETS[preset], ())[lead:]
    assert np.array_equal(shaped, through)
    assert np.array_equal(power, analysis._k_power(through, RATE))


def test_excerpts_spread_over_the_track_and_over_any_loop_of_it() -> None:
    from processing import analysis

    length, size = 240 * RATE, round(analysis.EXCERPT_SECONDS * RATE)
    for first, count in ((0, 16), (16, 16), (32, 32)):
        starts = analysis.excerpt_starts(length, size, first, count)
        stratum = (length - size) / count
        assert [int(s // stratum) for s in starts] == list(range(count))  # one per stratum
        for period in (30.0, 15.0, 7.5, 4.0):  # loops of whole strata, and not
            phases = {int((s / RATE) % period / period * 8) for s in starts}
            assert len(phases) >= 4, (count, period, phases)  # not one phase


@pytest.mark.parametrize("preset", ENHANCING)
def test_intensity_zero_is_the_original_and_one_is_the_full_chain(preset: str) -> None:
    audio = synth_program(6.0, seed=7)
    params = chain.ChainParams(preset, 3.0, ())
    assert np.max(np.abs(chain.process(audio, RATE, params, 0.0) - audio)) <= 1e-6
    full = chain.process(audio, RATE, params, 1.0)
    half = chain.process(audio, RATE, params, 0.5)
    assert np.allclose(half, 0.5 * (audio + full), atol=1e-6)
    assert np.max(np.abs(full - audio)) > 0.01


@pytest.mark.parametrize("preset", ENHANCING)
def test_the_chain_does_not_depend_on_its_block_size(
    preset: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stages walk the window in blocks and carry their state across:
    # odd-sized small blocks must give the same samples, bit for bit.
    audio = synth_program(7.3, seed=8) * 1.5  # hot: the limiter works
    params = chain.ChainParams(preset, 6.0, (dsp.Biquad("lowshelf", 150.0, -1.0),))
    whole = chain.process(audio, RATE, params, 0.7)
    monkeypatch.setattr(dsp, "STREAM_BLOCK", 4096 + 256)
    blocked = chain.process(audio, RATE, params, 0.7)
    assert np.array_equal(whole, blocked)
    assert dsp.limit(audio.copy(), RATE, dsp.Limiter()).max() < audio.max()


def test_in_place_processing_gives_the_same_samples() -> None:
    audio = synth_program(3.0, seed=9)
    original = audio.copy()
    params = chain.ChainParams("punchy", 4.0, ())
    processed = chain.process(audio, RATE, params, 1.0)
    assert np.array_equal(audio, original)  # not in place: the input is untouched
    own = audio.copy()
    assert np.array_equal(chain.process(own, RATE, params, 1.0, in_place=True), processed)
    assert not np.array_equal(own, original)  # in place: the input became the output


@pytest.mark.parametrize("intensity", [1.0, 0.6])
def test_samples_kept_after_a_skipped_head_are_the_same(intensity: float) -> None:
    # A window's context before its segment is rendered for the state of the
    # EQ and the compressor only: the limiter skips it, and every kept sample
    # is what the full run gives.
    audio = synth_program(8.0, seed=10) * 1.5
    params = chain.ChainParams("punchy", 14.0, ())  # hot: the limiter works throughout
    full = chain.process(audio, RATE, params, intensity)
    for keep_from in (5 * RATE + 7, dsp.LIMITER_REACH + 3):
        kept = chain.process(audio, RATE, params, intensity, keep_from=keep_from)
        assert np.array_equal(kept[keep_from:], full[keep_from:]), keep_from
    skipped = chain.process(audio, RATE, params, intensity, keep_from=5 * RATE)
    head = slice(0, 4 * RATE)
    assert np.abs(skipped[head]).max() > np.abs(full[head]).max()  # left unlimited


def test_original_bypasses_the_chain() -> None:
    audio = synth_program(2.0)
    assert chain.process(audio, RATE, chain.ChainParams("original", 0.0), 1.0) is audio


@pytest.mark.parametrize("kind", ["lowshelf", "highshelf", "peak"])
def test_biquads_have_their_gain_where_they_should(kind: str) -> None:
    band = dsp.Biquad(kind, 1000.0, 6.0, 0.707)
    sos = dsp.biquad_sos(band, RATE)
    from scipy.signal import sosfreqz

    freqs, response = sosfreqz(sos[None, :], worN=[20.0, 1000.0, 18000.0], fs=RATE)
    gains = 20 * np.log10(np.abs(response))
    expected = {"lowshelf": (6.0, 3.0, 0.0), "highshelf": (0.0, 3.0, 6.0), "peak": (0.0, 6.0, 0.0)}[
        kind
    ]
    assert gains == pytest.approx(expected, abs=0.3)
