"""The command line: `make run`'s entry point, settings from flags and environment."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hls.settings import SETTINGS, from_sources
from tests.conftest import ROOT, Server, start_server, synth_program
from tests.helpers import parse_playlist


def test_demo_library_server_starts_on_a_free_port(tmp_path: Path) -> None:
    # `make run` runs `hls-origin serve` with no library: the demo library.
    script = Path(sys.executable).parent / "hls-origin"
    if not script.exists():
        pytest.skip("console script not installed (make test installs it)")
    proc = subprocess.Popen(
        [str(script), "serve", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "HLS_ORIGIN_CACHE_DIR": str(tmp_path / "cache")},
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    while line and "listening on" not in line:
        line = proc.stdout.readline()
    match = re.search(r"listening on (http://127\.0\.0\.1:(\d+))/", line)
    assert match and match.group(2) != "0", line
    subprocess.Popen(["cat"], stdin=proc.stdout, stdout=subprocess.DEVNULL)
    server = Server(match.group(1), proc, tmp_path / "cache", tmp_path)
    try:
        tracks = server.json("/api/tracks")["tracks"]
        assert len(tracks) == 3 and all(t["duration"] > 60 for t in tracks)
        status, _, body = server.get(f"/hls/{tracks[0]['id']}/adaptive/1.00/aac/index.m3u8")
        assert status == 200 and parse_playlist(body).segments[0].uri == "0.m4s"
        status, _, page = server.get("/")
        assert status == 200 and b"<audio" in page
    finally:
        server.stop()


def test_environment_fills_settings_and_flags_win() -> None:
    env = {"HLS_ORIGIN_PORT": "9000", "HLS_ORIGIN_WORKERS": "3", "HLS_ORIGIN_SEGMENT_SECONDS": "6"}
    settings = from_sources({"port": 9100, "workers": None}, env)
    assert (settings.port, settings.workers, settings.segment_seconds) == (9100, 3, 6.0)
    with pytest.raises(ValueError, match="HLS_ORIGIN_PORT"):
        from_sources({}, {"HLS_ORIGIN_PORT": "70000"})


def test_readme_documents_every_setting_and_opens_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    for setting in SETTINGS:
        assert setting.flag in readme and setting.env in readme, setting.name
    blocks = re.findall(r"```(?:sh|bash)?\n(.*?)```", readme, re.S)
    assert blocks and blocks[0].split() == ["make", "run", "make", "test"]


def test_render_writes_the_whole_track_reference(tmp_path: Path) -> None:
    src = tmp_path / "in.wav"
    t = np.arange(44100 * 3) / 44100
    sf.write(src, 0.3 * np.sin(2 * np.pi * 440 * t), 44100)
    out = tmp_path / "out.flac"
    proc = subprocess.run(
        [sys.executable, "-m", "hls", "render", str(src), str(out), "--preset", "warm"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    info = sf.info(str(out))
    assert (info.frames, info.samplerate, info.subtype) == (44100 * 3, 44100, "PCM_24")


def test_serve_rejects_an_absurd_flag(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hls", "serve", "--segment-seconds", "0"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode != 0 and "segment" in proc.stderr


def test_a_library_path_that_is_not_a_directory_stops_with_a_message(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not a directory"):
        start_server(cache_dir=tmp_path / "c", library=tmp_path / "missing")
    shutil.rmtree(tmp_path / "c", ignore_errors=True)


def test_analyze_reports_before_and_after_as_table_json_and_plot(tmp_path: Path) -> None:
    src = tmp_path / "in.flac"
    sf.write(src, 0.3 * synth_program(20.0, seed=4), 44100)
    run = [sys.executable, "-m", "hls", "analyze", str(src), "--preset", "punchy"]
    table = subprocess.run(run, capture_output=True, text=True, cwd=ROOT)
    assert table.returncode == 0, table.stderr
    assert "integrated loudness (LUFS)" in table.stdout and "gain to target (dB)" in table.stdout
    plot = tmp_path / "plot.png"
    proc = subprocess.run(
        [*run, "--json", "--plot", str(plot)], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert set(report["before"]) == {"integrated_lufs", "loudness_range_lu", "true_peak_dbtp"}
    assert abs(report["after"]["integrated_lufs"] - -12.0) <= 1.0
    assert report["after"]["true_peak_dbtp"] <= -1.0 < report["before"]["true_peak_dbtp"] + 20
    assert report["analysis"]["params"]["preset"] == "punchy"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_package_writes_a_static_vod_package_with_the_servers_bytes(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    src = lib / "song.flac"
    sf.write(src, synth_program(40.0, seed=12), 44100, subtype="PCM_24")
    out = tmp_path / "package"
    proc = subprocess.run(
        [sys.executable, "-m", "hls", "package", str(src), str(out), "--preset", "warm",
         "--intensity", "0.5", "--rendition", "aac", "flac"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "segment" in proc.stderr  # the progress bar
    master = parse_playlist((out / "master.m3u8").read_text())
    assert [p.uri for p in master.playlists] == ["aac/index.m3u8"]  # one codec per master
    lossless = parse_playlist((out / "master-lossless.m3u8").read_text())
    assert [p.uri for p in lossless.playlists] == ["flac/index.m3u8"]
    assert lossless.playlists[0].stream_info.codecs == "fLaC"
    media = parse_playlist((out / "aac" / "index.m3u8").read_text())
    assert media.playlist_type == "vod" and media.is_endlist
    for name in ("aac", "flac"):
        assert (out / name / "init.mp4").is_file()
        assert all((out / name / seg.uri).is_file() for seg in media.segments)
    decoded = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(out / "master.m3u8"), "-map", "0:a:0",
         "-f", "f32le", "-"],
        capture_output=True, timeout=120,
    ).stdout  # fmt: skip
    assert abs(len(decoded) // 8 - 1024 - 40 * 44100) < 1024
    # The same bytes as the server streams.
    server = start_server(cache_dir=tmp_path / "cache", library=lib)
    try:
        base = f"/hls/{server.track_id('song')}/warm/0.50"
        for name, index in (("aac", 1), ("flac", 2), ("aac", len(media.segments) - 1)):
            status, _, body = server.get(f"{base}/{name}/{index}.m4s")
            assert status == 200 and body == (out / name / f"{index}.m4s").read_bytes()
    finally:
        server.stop()
