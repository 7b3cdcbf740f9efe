"""The pipeline without a server: decode, encode, package, catalog."""

from __future__ import annotations

import fcntl
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from hls import fmp4, jobs
from hls.preemption import Preempted
from hls.streams import SourceRef, StreamSpec
from processing.decode import AudioSource, probe
from processing.encode import (
    RENDITIONS,
    AacEncodes,
    AdtsSplitter,
    aac_packet_count,
    encode_aac,
    encode_flac,
    split_adts,
    to_pcm24,
)
from processing.errors import DecodeError, EncodeError
from processing.plan import SegmentPlan
from processing.render import LISTENER_INPUT_BUFFER, EncodedSegment, encode_unit
from storage.cache import DiskCache
from storage.catalog import Catalog
from tests.conftest import synth_program
from tests.helpers import decode, lock_held_elsewhere

QUALITY = RENDITIONS["aac"].aac_quality


def spec_for(file: Path, cache: Path, preset: str = "original", seconds: float = 4.0) -> StreamSpec:
    return StreamSpec(
        SourceRef(str(file), file.stem), preset, "1.00", seconds, 5.0, 1.0, str(cache)
    )


def assemble(spec: StreamSpec, rendition: str, out: Path) -> tuple[int, int]:
    info = jobs.prepare(spec.source, spec.cache_dir)
    plan = jobs.plan_for(spec, info.length, info.rate)
    parts = [fmp4.init_segment(RENDITIONS[rendition], info.rate, info.channels)]
    for index in range(len(plan)):
        jobs.produce_segment(spec, rendition, index)
        parts.append(
            Path(spec.cache_dir).joinpath(*spec.segment_key(rendition, index)).read_bytes()
        )
    out.write_bytes(b"".join(parts))
    return info.length, info.channels


def twin_specs(tmp_path: Path, seconds: float) -> tuple[StreamSpec, StreamSpec, SegmentPlan]:
    """Two punchy specs of one synthetic track, each with a cache of its own, and its plan."""
    src = tmp_path / "src.flac"
    sf.write(src, synth_program(seconds), 44100)
    a, b = spec_for(src, tmp_path / "a", "punchy"), spec_for(src, tmp_path / "b", "punchy")
    info = jobs.prepare(a.source, a.cache_dir)
    return a, b, jobs.plan_for(a, info.length, info.rate)


@pytest.mark.parametrize(("channels", "preset"), [(1, "original"), (2, "original"), (2, "punchy")])
def test_flac_rendition_decodes_bit_exactly_to_the_rendered_program(
    tmp_path: Path, channels: int, preset: str
) -> None:
    src = tmp_path / "src.wav"
    audio = synth_program(13.3, channels=channels)
    sf.write(src, audio, 44100, subtype="PCM_24")
    spec = spec_for(src, tmp_path / "cache", preset)
    length, ch = assemble(spec, "flac", tmp_path / "out.mp4")
    decoded = decode(tmp_path / "out.mp4", ch, fmt="s32le")
    if preset == "original":
        expected = to_pcm24(sf.read(src, dtype="float32", always_2d=True)[0])
    else:
        jobs._renderers.clear()
        expected = to_pcm24(jobs.renderer_for(spec).program(0, length))
    assert np.array_equal(decoded, expected)


def test_aac_rendition_decodes_to_source_length_plus_priming(tmp_path: Path) -> None:
    src = tmp_path / "src.flac"
    sf.write(src, synth_program(9.5), 44100)
    length, ch = assemble(
        spec_for(src, tmp_path / "cache", "adaptive"), "aac-lo", tmp_path / "out.mp4"
    )
    decoded = decode(tmp_path / "out.mp4", ch)
    assert len(decoded) == (-(-length // 1024) + 1) * 1024


def test_segments_are_identical_in_any_order_and_process(tmp_path: Path) -> None:
    forward, backward, plan = twin_specs(tmp_path, 14.0)
    count = len(plan)
    for index in range(count):
        jobs.produce_segment(forward, "aac", index)
    jobs._renderers.clear()  # as if another process
    for index in reversed(range(count)):
        jobs.produce_segment(backward, "aac", index)
    for index in range(count):
        a = Path(forward.cache_dir).joinpath(*forward.segment_key("aac", index)).read_bytes()
        b = Path(backward.cache_dir).joinpath(*backward.segment_key("aac", index)).read_bytes()
        assert a == b, index


@pytest.mark.parametrize("rendition", ["aac", "aac-lo"])
def test_units_encoded_together_are_the_bytes_of_units_encoded_alone(
    tmp_path: Path, rendition: str
) -> None:
    # One ffmpeg for a run of units (the ramp, pairs, the track's end) gives
    # each segment the bytes of one ffmpeg per unit, in reverse order; and a
    # listener's encode (its larger input pipe) those of background ones.
    together, alone, plan = twin_specs(tmp_path, 27.0)
    units = plan.encode_units(RENDITIONS[rendition].segments_per_encode)
    assert len(units) >= 5
    sizes, made = jobs.produce_units(together, rendition, [u[0] for u in units], listener=True)
    assert made == len(plan) and sorted(sizes) == list(range(len(plan)))
    jobs._renderers.clear()  # as if another process
    for unit in reversed(units):
        jobs.produce_segment(alone, rendition, unit[-1])
    for index in range(len(plan)):
        a = Path(together.cache_dir).joinpath(*together.segment_key(rendition, index))
        b = Path(alone.cache_dir).joinpath(*alone.segment_key(rendition, index))
        assert a.read_bytes() == b.read_bytes(), index
        assert sizes[index] == a.stat().st_size


def test_a_run_stops_where_another_producer_is_ahead_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process stores the run's second unit while this one encodes
    # the first: the run stops there (its ffmpeg too) and leaves the rest.
    spec, other, plan = twin_specs(tmp_path, 27.0)
    units = plan.encode_units(2)[1:4]
    jobs.produce_segment(other, "aac", units[1][0])
    made_elsewhere = {
        i: Path(other.cache_dir).joinpath(*other.segment_key("aac", i)).read_bytes()
        for i in units[1]
    }
    encode_and_store = jobs._encode_and_store

    def then_the_other_producer(*args: Any) -> None:
        encode_and_store(*args)
        for i, data in made_elsewhere.items():
            DiskCache(tmp_path / "a").write(spec.segment_key("aac", i), data)

    monkeypatch.setattr(jobs, "_encode_and_store", then_the_other_producer)
    jobs._renderers.clear()
    sizes, made = jobs.produce_units(spec, "aac", [u[0] for u in units])
    assert made == len(units[0])
    assert sorted(sizes) == [*units[0], *units[1]]
    assert not any(
        Path(spec.cache_dir).joinpath(*spec.segment_key("aac", i)).exists() for i in units[2]
    )


def test_a_run_stops_at_a_unit_another_producer_is_making(tmp_path: Path) -> None:
    # Another lane makes the run's last unit alongside it (its lock is held):
    # the run stops there instead of waiting, and stores nothing of it.
    spec, _, plan = twin_specs(tmp_path, 27.0)
    units = plan.encode_units(2)[1:4]
    cache = DiskCache(Path(spec.cache_dir))
    with lock_held_elsewhere(cache, *spec.segment_key("aac", units[2][0])):
        jobs._renderers.clear()
        sizes, made = jobs.produce_units(spec, "aac", [u[0] for u in units])
    assert sorted(sizes) == [*units[0], *units[1]] and made == len(sizes)
    assert not any(
        Path(spec.cache_dir).joinpath(*spec.segment_key("aac", i)).exists() for i in units[2]
    )


def test_a_run_stopped_mid_unit_keeps_what_it_made_and_resumes_to_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server asks the run to stop while it encodes its second unit: the
    # first unit (and the second's first segment, stored early) stay made,
    # the rest is not stored; a new run then makes the bytes of a run never
    # stopped (the one stopped had its ffmpeg killed: no process is left).
    stopped, whole, plan = twin_specs(tmp_path, 27.0)
    units = plan.encode_units(2)[1:4]
    checks = []

    def requested() -> bool:  # asked before each unit and each block of input
        checks.append(len(list(Path(stopped.cache_dir).rglob("*.m4s"))))
        return checks[-1] > len(units[0])

    monkeypatch.setattr(jobs, "requested", requested)
    with pytest.raises(Preempted) as raised:
        jobs.produce_units(stopped, "aac", [u[0] for u in units])
    made = raised.value.sizes
    assert list(made) == [*units[0], units[1][0]] and raised.value.made == len(made)
    for index in range(units[0][0], units[-1][-1] + 1):
        path = Path(stopped.cache_dir).joinpath(*stopped.segment_key("aac", index))
        assert path.exists() == (index in made), index
        if path.exists():
            assert path.stat().st_size == made[index]
    ffmpegs = subprocess.run(["pgrep", "-P", str(os.getpid()), "ffmpeg"], capture_output=True)
    assert ffmpegs.stdout == b""
    monkeypatch.setattr(jobs, "requested", lambda: False)
    sizes, count = jobs.produce_units(stopped, "aac", [u[0] for u in units])
    assert count == sum(len(u) for u in units[1:])  # a unit not whole is made again whole
    jobs._renderers.clear()  # as if another process
    jobs.produce_units(whole, "aac", [u[0] for u in units])
    for index in range(units[0][0], units[-1][-1] + 1):
        a = Path(stopped.cache_dir).joinpath(*stopped.segment_key("aac", index)).read_bytes()
        b = Path(whole.cache_dir).joinpath(*whole.segment_key("aac", index)).read_bytes()
        assert a == b, index


def test_a_unit_of_a_shared_encoder_is_out_before_the_next_input() -> None:
    # Every packet a unit keeps is out once its input is written: the next
    # unit is not needed (else the encoder would wait up to its timeout).
    pcm = synth_program(12.0)
    first, second = pcm[: 200 * 1024], pcm[150 * 1024 :]
    shared = AacEncodes(44100, 2, QUALITY, [len(first), len(second)])
    started = time.monotonic()
    head = shared.encode([first])
    assert time.monotonic() - started < 5
    assert len(head) == aac_packet_count(len(first)) - AacEncodes.HELD_BACK
    tail = shared.encode([second])  # the last: all of its packets
    alone = [encode_aac(x, 44100, QUALITY) for x in (first, second)]
    assert [p.data for p in head] == [p.data for p in alone[0][: len(head)]]
    assert [p.data for p in tail] == [p.data for p in alone[1]]


def test_a_listeners_encoder_queues_more_input() -> None:
    # 1 MiB of input (3 s) waits in the pipe of a listener's encode, for
    # ffmpeg to encode while the next window renders; 64 KiB elsewhere.
    for listener, size in ((True, LISTENER_INPUT_BUFFER), (False, 1 << 16)):
        shared = AacEncodes(44100, 2, QUALITY, [1024], LISTENER_INPUT_BUFFER if listener else None)
        assert shared.encoder.proc.stdin is not None
        assert fcntl.fcntl(shared.encoder.proc.stdin.fileno(), fcntl.F_GETPIPE_SZ) == size
        shared.abort()


def test_a_shared_encoder_that_dies_is_a_clear_error() -> None:
    pcm = synth_program(4.0)
    shared = AacEncodes(44100, 2, QUALITY, [64 * 1024, 64 * 1024])
    shared.encoder.proc.kill()
    with pytest.raises(EncodeError, match="AAC encoding failed with exit code -9"):
        shared.encode([pcm[: 64 * 1024]])


def test_the_first_segment_of_a_unit_is_handed_over_while_the_second_encodes(
    tmp_path: Path,
) -> None:
    # 4 s segments: the ramp is 1 and 1.3 s, then pairs. The pair's first
    # segment comes out early (on the encoder's reader thread), with the
    # packets it has in the unit's full result.
    src = tmp_path / "src.flac"
    sf.write(src, synth_program(30.0), 44100)
    spec = spec_for(src, tmp_path / "cache", "punchy")
    renderer = jobs.renderer_for(spec)
    unit = renderer.plan.encode_units(2)[2]
    assert len(unit) == 2
    early: list[tuple[EncodedSegment, str]] = []
    result = encode_unit(
        renderer, RENDITIONS["aac"], unit,
        early=lambda e: early.append((e, threading.current_thread().name)),
    )  # fmt: skip
    assert [e.index for e, _ in early] == [unit[0]]
    assert early[0][1] != threading.current_thread().name
    assert early[0][0] == result[0]
    assert [e.index for e in result] == list(unit)


def test_adts_arrives_in_pieces() -> None:
    data = b"".join(
        bytes([0xFF, 0xF1, 0x50, 0x80, (n + 7) >> 3 & 0xFF, ((n + 7) & 7) << 5 | 0x1F, 0xFC])
        + bytes([n % 251]) * n
        for n in (5, 300, 17)
    )
    whole = split_adts(data)
    splitter = AdtsSplitter()
    pieces = [p for i in range(0, len(data), 7) for p in splitter.feed(data[i : i + 7])]
    splitter.close()
    assert pieces == whole == [bytes([n % 251]) * n for n in (5, 300, 17)]
    splitter.feed(data[:20])
    with pytest.raises(Exception, match="ADTS stream ends inside a frame"):
        splitter.close()


def test_adts_and_flac_framing() -> None:
    pcm = synth_program(1.0)
    packets = encode_aac(pcm, 44100, RENDITIONS["aac-lo"].aac_quality)
    assert len(packets) == -(-len(pcm) // 1024) + 1
    frames = encode_flac(to_pcm24(pcm), 44100)
    assert [f.samples for f in frames] == [4096] * 10 + [44100 - 40960]
    assert all(f.data[:2] == b"\xff\xf8" for f in frames)
    with pytest.raises(Exception, match="ADTS"):
        split_adts(b"\x00" * 20)


@pytest.mark.parametrize(
    ("rate", "channels", "served_rate", "served_channels"),
    [(22050, 1, 44100, 1), (96000, 2, 48000, 2), (48000, 6, 48000, 2), (44100, 1, 44100, 1)],
)
def test_odd_sources_are_resampled_and_downmixed(
    tmp_path: Path, rate: int, channels: int, served_rate: int, served_channels: int
) -> None:
    src = tmp_path / "odd.wav"
    sf.write(src, synth_program(2.0, rate=rate, channels=channels), rate, subtype="PCM_24")
    info = probe(src)
    source = AudioSource(src, tmp_path / "scratch", "odd")
    assert (source.rate, source.channels) == (served_rate, served_channels)
    assert abs(source.length - 2.0 * served_rate) <= 2 and info.rate == served_rate
    window = source.read(-100, 1000)
    assert window.shape == (1100, served_channels) and not window[:100].any()


def test_garbage_with_an_audio_extension_is_a_decode_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ogg"
    bad.write_bytes(os.urandom(5000))
    with pytest.raises(DecodeError):
        AudioSource(bad, tmp_path / "scratch", "bad")


def test_catalog_is_a_jail_and_ids_are_stable(tmp_path: Path) -> None:
    lib, outside = tmp_path / "lib", tmp_path / "outside"
    (lib / "sub").mkdir(parents=True)
    outside.mkdir()
    sf.write(lib / "sub" / "a.wav", synth_program(1.0), 44100)
    sf.write(outside / "secret.wav", synth_program(1.0), 44100)
    (lib / "link.wav").symlink_to(outside / "secret.wav")
    (lib / "linkdir").symlink_to(outside, target_is_directory=True)
    (lib / "notes.txt").write_text("not audio")
    tracks = Catalog(lib, "k").scan()
    assert [t.path for t in tracks] == ["sub/a.wav"]
    assert tracks[0].id == Catalog(lib, "k").scan()[0].id != Catalog(lib, "other").scan()[0].id


def test_init_segment_is_fixed_and_probes(tmp_path: Path) -> None:
    for name, rendition in RENDITIONS.items():
        data = fmp4.init_segment(rendition, 44100, 2)
        assert data == fmp4.init_segment(rendition, 44100, 2)
        (tmp_path / f"{name}.mp4").write_bytes(data)
        proc = subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,channels,sample_rate",
             "-of", "csv=p=0", str(tmp_path / f"{name}.mp4")],
            capture_output=True, text=True,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == f"{rendition.codec},44100,2"
