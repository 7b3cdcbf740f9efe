"""Cold start and whole-track time: hls-origin against ffmpeg's own HLS muxer, same source, same run.

Run: .venv/bin/python benchmarks/peer.py [--runs N] [--peer-encoder abr|ours]

(a) the peer: ffmpeg with an equivalent chain (equalizer, acompressor,
    alimiter), AAC at 256 kb/s average (`--peer-encoder ours`: at the `aac`
    rendition's constant quality instead), `-f hls -hls_time 30 -hls_playlist_type event
    -hls_segment_type fmp4`: time until its playlist lists the first segment,
    and until it exits;
(b) hls-origin, cold (server just started, empty cache, track never seen):
    time from the playlist request until the last byte of the first segment,
    and until the playlist carries EXT-X-ENDLIST.
Runs alternate; medians and the ratios ours / peer are printed.
(c) a cold seek (no peer equivalent: its muxer cannot start mid-track): a
    VOD client asks a just-started server for a mid-track segment of the
    never-seen track, the first and then the second segment of an AAC
    encode unit (the second costs the pair's encode).
(d) the next track: while the 7-minute track is produced in the background
    (1 s after its first request), a listener starts another never-seen
    track: time until its first segment's last byte.
(e) a client without blocking reload (GStreamer, ffmpeg, Safari without
    LL-HLS parts), cold: its first segment and
    the two listed ahead of production (made when asked for), each as the
    time from the first request; segment 1 must arrive before segment 0's
    1 s has played, segment 2 before 1 s + 10 s.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.chain import seven_minute_track  # noqa: E402
from processing.renditions import RENDITIONS  # noqa: E402
from tests.conftest import PeakPss, Server, http_get, start_server  # noqa: E402
from tests.helpers import parse_playlist  # noqa: E402

PEER_FILTER = (
    "equalizer=f=90:t=q:w=1:g=4,equalizer=f=2500:t=q:w=1:g=1.5,"
    "acompressor=threshold=0.05:ratio=4:attack=10:release=80,"
    "volume=6dB,alimiter=limit=0.89:attack=5:release=50"
)
PRESET = "punchy"
# The peer's AAC encoder settings. "abr": ffmpeg's target bit rate, the peer
# as ../shared/NOTES.md defines it. "ours": the `aac` rendition's constant
# quality, the stricter comparison: on music it costs ~10% less than the
# target bit rate, and on near-silent or single-tone material far less (a
# sine's 240 s: 1.1 CPU-s against 5.7), so there the peer is little but the
# encode that we must do too.
PEER_ENCODERS = {
    "abr": ["-b:a", "256k"],
    "ours": ["-q:a", str(RENDITIONS["aac"].aac_quality)],
}


def add_peer_encoder_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--peer-encoder", choices=sorted(PEER_ENCODERS), default="abr")


def run_peer(
    source: Path, out: Path, chain: str = PEER_FILTER, encoder: str = "abr"
) -> tuple[float, float]:
    out.mkdir(parents=True)
    playlist = out / "index.m3u8"
    cmd = [
        "ffmpeg", "-nostdin", "-v", "error", "-i", str(source), "-af", chain,
        "-c:a", "aac", *PEER_ENCODERS[encoder], "-f", "hls", "-hls_time", "30",
        "-hls_playlist_type", "event", "-hls_segment_type", "fmp4", str(playlist),
    ]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=out)
    first = None
    while proc.poll() is None:
        if (
            first is None
            and playlist.exists()
            and "#EXTINF" in playlist.read_text(errors="replace")
        ):
            first = time.perf_counter() - started
        time.sleep(0.005)
    total = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit("peer ffmpeg failed")
    return first if first is not None else total, total


def run_ours(
    library: Path,
    cache: Path,
    preset: str = PRESET,
    memory: list[float] | None = None,
    after: Callable[[Server], None] | None = None,
) -> tuple[float, float]:
    """First segment and whole track of the library's (only) track, cold; the
    process tree's peak PSS (MB) appended to `memory` when given; `after`
    called with the server once the track is complete (untimed)."""
    server = start_server(cache_dir=cache, library=library)
    try:
        if memory is None:
            times = _first_and_whole(server, preset)
        else:
            with PeakPss(server.process.pid, interval=0.1) as pss:
                times = _first_and_whole(server, preset)
            memory.append(pss.peak)
        if after is not None:
            after(server)
        return times
    finally:
        server.stop()


def _first_and_whole(server: Server, preset: str) -> tuple[float, float]:
    tid = server.json("/api/tracks")["tracks"][0]["id"]
    base = f"{server.url}/hls/{tid}/{preset}/1.00/aac"
    started = time.perf_counter()
    status, _, body = http_get(f"{base}/index.m3u8")
    assert status == 200, body
    first_uri = parse_playlist(body).segments[0].uri
    http_get(f"{base}/init.mp4")
    status, _, _ = http_get(f"{base}/{first_uri}")
    assert status == 200
    first = time.perf_counter() - started
    msn = len(parse_playlist(body).segments)
    while b"#EXT-X-ENDLIST" not in body:
        status, _, body = http_get(f"{base}/index.m3u8?_HLS_msn={msn}")
        msn = len(parse_playlist(body).segments)
    total = time.perf_counter() - started
    return first, total


def run_nonblocking(library: Path, cache: Path) -> tuple[float, float, float]:
    server = start_server(cache_dir=cache, library=library)
    try:
        tid = server.json("/api/tracks")["tracks"][0]["id"]
        base = f"{server.url}/hls/{tid}/{PRESET}/1.00/aac"
        started = time.perf_counter()
        status, _, body = http_get(f"{base}/index.m3u8")  # no _HLS_msn
        assert status == 200, body
        uris = [s.uri for s in parse_playlist(body).segments]
        assert len(uris) >= 3, body  # listed ahead: what such a client starts from
        http_get(f"{base}/init.mp4")
        times = []
        for uri in uris[:3]:
            status, _, _ = http_get(f"{base}/{uri}")
            assert status == 200
            times.append(time.perf_counter() - started)
        return times[0], times[1], times[2]
    finally:
        server.stop()


def run_seek(library: Path, cache: Path, index: int) -> float:
    server = start_server(cache_dir=cache, library=library)
    try:
        tid = server.json("/api/tracks")["tracks"][0]["id"]
        base = f"{server.url}/hls/{tid}/{PRESET}/1.00/aac"
        status, _, body = http_get(f"{base}/vod.m3u8")
        assert status == 200, body
        started = time.perf_counter()
        status, _, _ = http_get(f"{base}/{index}.m4s")
        assert status == 200
        return time.perf_counter() - started
    finally:
        server.stop()


def run_switch(library: Path, cache: Path, second: Path) -> float:
    server = start_server(cache_dir=cache, library=library)
    try:
        ids = {t["path"]: t["id"] for t in server.json("/api/tracks")["tracks"]}
        first = f"{server.url}/hls/{ids['seven-minutes.flac']}/{PRESET}/1.00/aac"
        status, _, _ = http_get(f"{first}/index.m3u8")  # its background production starts
        assert status == 200
        time.sleep(1.0)
        base = f"{server.url}/hls/{ids[second.name]}/{PRESET}/1.00/aac"
        started = time.perf_counter()
        status, _, body = http_get(f"{base}/index.m3u8")
        assert status == 200, body
        status, _, _ = http_get(f"{base}/{parse_playlist(body).segments[0].uri}")
        assert status == 200
        return time.perf_counter() - started
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    add_peer_encoder_argument(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        library = work / "library"
        library.mkdir()
        source = seven_minute_track(library)
        peer, ours = [], []
        for run in range(args.runs):
            peer.append(run_peer(source, work / f"peer{run}", encoder=args.peer_encoder))
            ours.append(run_ours(library, work / f"cache{run}"))
            shutil.rmtree(work / f"peer{run}")
            print(
                f"run {run}: peer first {peer[-1][0]:.3f} s total {peer[-1][1]:.2f} s | "
                f"ours first {ours[-1][0]:.3f} s total {ours[-1][1]:.2f} s",
                flush=True,
            )
        pf, pt = (statistics.median(x[i] for x in peer) for i in (0, 1))
        of, ot = (statistics.median(x[i] for x in ours) for i in (0, 1))
        print(
            f"median first segment: peer {pf:.3f} s, ours {of:.3f} s, ratio {of / pf:.2f} (target 0.35)"
        )
        print(
            f"median whole track:   peer {pt:.2f} s, ours {ot:.2f} s, ratio {ot / pt:.3f} (target 0.60)"
        )
        ratios = [o[1] / p[1] for o, p in zip(ours, peer, strict=True)]  # each run against its peer
        print(
            "whole track per run:  ratios " + ", ".join(f"{r:.3f}" for r in ratios)
            + f"; {sum(r <= 0.6 for r in ratios)} of {len(ratios)} at or under 0.60"
        )  # fmt: skip
        nonblocking = [run_nonblocking(library, work / f"nb{run}") for run in range(args.runs)]
        n0, n1, n2 = (statistics.median(x[i] for x in nonblocking) for i in (0, 1, 2))
        print(
            f"median non-blocking client: segment 0 {n0:.3f} s (ratio {n0 / pf:.2f} to the "
            f"peer's first), segment 1 {n1:.3f} s, segment 2 {n2:.3f} s after the first request"
        )
        seeks = {
            index: statistics.median(
                run_seek(library, work / f"seek{index}-{run}", index) for run in range(args.runs)
            )
            for index in (8, 9)  # segments 8 and 9 (3:15 to 4:15) are one encode unit
        }
        print(
            f"median cold seek:     segment 8 (first of its unit) {seeks[8]:.3f} s, "
            f"segment 9 (second) {seeks[9]:.3f} s"
        )
        switch_library = work / "switch"
        switch_library.mkdir()
        shutil.copy(source, switch_library / source.name)
        second = switch_library / "next.flac"
        audio, rate = sf.read(source, dtype="float32", frames=90 * 44100)
        sf.write(second, audio[::-1], rate, subtype="PCM_24")  # another track, never seen
        switch = statistics.median(
            run_switch(switch_library, work / f"switch{run}", second) for run in range(args.runs)
        )
        print(
            f"median next track:    first segment while the first track is produced "
            f"{switch:.3f} s (cold first segment alone: {of:.3f} s)"
        )


if __name__ == "__main__":
    main()
