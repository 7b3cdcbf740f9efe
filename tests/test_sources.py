"""Odd and broken sources through a real server: every answer is a valid stream or a clear error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import MUSIC, Server, start_server, synth_program
from tests.helpers import decode, parse_playlist

GOOD = {
    # name: (rate, channels, seconds, subtype)
    "mono.wav": (44100, 1, 12.0, "PCM_16"),
    "low-rate.wav": (22050, 2, 12.0, "PCM_16"),
    "high-rate.flac": (96000, 2, 12.0, "PCM_24"),
    "deep.flac": (48000, 2, 12.0, "PCM_24"),
    "surround.wav": (48000, 6, 12.0, "PCM_16"),
    "short.wav": (44100, 2, 0.3, "PCM_16"),
}


@pytest.fixture(scope="module")
def odd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    lib = tmp_path_factory.mktemp("odd-library")
    for name, (rate, channels, seconds, subtype) in GOOD.items():
        sf.write(
            lib / name, synth_program(seconds, rate=rate, channels=channels), rate, subtype=subtype
        )
    sf.write(lib / "silence.wav", np.zeros((44100 * 8, 2), dtype=np.float32), 44100)
    # Only ffmpeg reads this one (AAC in MP4).
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(lib / "mono.wav"),
            "-c:a",
            "aac",
            str(lib / "via-ffmpeg.m4a"),
        ],
        check=True,
    )
    if (MUSIC / "hyperrogue-savino-ivory.ogg").is_file():  # ffmpeg rejects it, libsndfile reads it
        shutil.copy(MUSIC / "hyperrogue-savino-ivory.ogg", lib / "sndfile-only.ogg")
    good = (lib / "deep.flac").read_bytes()
    (lib / "truncated.flac").write_bytes(good[: len(good) // 50])
    (lib / "garbage.ogg").write_bytes(os.urandom(20000))
    (lib / "empty.wav").write_bytes(b"")
    (lib / "wrong-extension.mp3").write_bytes((lib / "mono.wav").read_bytes())
    server = start_server(
        "--segment-seconds", "4", cache_dir=tmp_path_factory.mktemp("odd-cache"), library=lib
    )
    yield server
    server.stop()


def tracks(server: Server) -> dict[str, dict]:
    return {t["path"]: t for t in server.json("/api/tracks")["tracks"]}


PLAYABLE = [*GOOD, "silence.wav", "via-ffmpeg.m4a", "wrong-extension.mp3"]


@pytest.mark.parametrize("name", PLAYABLE)
def test_odd_but_valid_sources_stream_whole(odd_server: Server, name: str) -> None:
    track = tracks(odd_server)[name]
    assert track["sample_rate"] in (44100, 48000) and track["channels"] in (1, 2)
    base = f"{odd_server.url}/hls/{track['id']}/adaptive/1.00/aac"
    status, _, body = odd_server.get(f"/hls/{track['id']}/adaptive/1.00/aac/vod.m3u8")
    assert status == 200
    decoded = decode(f"{base}/vod.m3u8", track["channels"])
    expected = round(track["duration"] * track["sample_rate"])
    assert abs(len(decoded) - 1024 - expected) < 2048, (len(decoded), expected)
    assert np.all(np.isfinite(decoded))


def test_a_source_only_libsndfile_reads_streams(odd_server: Server) -> None:
    if "sndfile-only.ogg" not in tracks(odd_server):
        pytest.skip("../shared/music is not present")
    track = tracks(odd_server)["sndfile-only.ogg"]
    status, _, body = odd_server.get(f"/hls/{track['id']}/warm/1.00/flac/index.m3u8")
    assert status == 200 and parse_playlist(body).segments


@pytest.mark.parametrize("name", ["truncated.flac", "garbage.ogg", "empty.wav"])
def test_undecodable_sources_are_422_with_the_reason(odd_server: Server, name: str) -> None:
    track = tracks(odd_server)[name]
    for path in ("master.m3u8", "aac/index.m3u8", "aac/0.m4s"):
        status, headers, body = odd_server.get(f"/hls/{track['id']}/adaptive/1.00/{path}")
        if name == "truncated.flac" and status == 200:
            continue  # the readable head of a truncated file may stream
        assert status == 422, (path, status, body[:200])
        payload = json.loads(body)
        assert payload["error"] == "source cannot be decoded" and name in payload["detail"]
    assert odd_server.get("/healthz")[0] == 200


def test_a_file_deleted_while_streaming_ends_that_stream_only(
    odd_server: Server, tmp_path: Path
) -> None:
    lib = odd_server.library
    victim = lib / "doomed.wav"
    sf.write(victim, synth_program(30.0), 44100)
    # A new file appears only after a rescan; this one is found by a second server.
    server = start_server("--segment-seconds", "4", cache_dir=tmp_path / "c", library=lib)
    try:
        track = tracks(server)["doomed.wav"]
        base = f"/hls/{track['id']}/adaptive/1.00/aac"
        assert server.get(f"{base}/0.m4s")[0] == 200
        victim.unlink()
        statuses = {server.get(f"{base}/{i}.m4s")[0] for i in range(1, 8)}
        assert statuses <= {200, 404}, statuses  # produced already, or the track is gone
        assert server.get(f"/hls/{track['id']}/adaptive/1.00/master.m3u8")[0] == 404
        other = tracks(server)["mono.wav"]
        assert server.get(f"/hls/{other['id']}/adaptive/1.00/aac/0.m4s")[0] == 200
    finally:
        server.stop()
