"""End to end against a real server process on a loopback port (SPEC §3, §4)."""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
import time
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import soundfile as sf

from hls import jobs
from hls.streams import SourceRef, StreamSpec
from processing.plan import TAIL_SINGLE_SEGMENTS
from processing.renditions import RENDITIONS
from storage.catalog import Catalog
from tests.conftest import Server, put_track, start_server
from tests.helpers import decode, header_lines, parse_playlist

TRACK = "battle-epic"


def wait_complete(server: Server, base: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, body = server.get(f"{base}/index.m3u8")
        assert status == 200
        if b"#EXT-X-ENDLIST" in body:
            return
        time.sleep(0.2)
    raise AssertionError(f"{base} did not complete in {timeout} s")


def source_length(server: Server) -> tuple[int, int]:
    track = next(t for t in server.json("/api/tracks")["tracks"] if TRACK in t["path"])
    info = sf.info(str(server.library / track["path"]))
    return info.frames, info.samplerate


def test_tracks_lists_ids_that_are_not_paths(server: Server) -> None:
    tracks = server.json("/api/tracks")["tracks"]
    assert tracks and set(tracks[0]) == {
        "id",
        "title",
        "path",
        "duration",
        "sample_rate",
        "channels",
        "hls",
        "master",
    }
    for t in tracks:
        assert "/" not in t["id"] and t["id"] not in t["path"]
        assert t["hls"] == f"/hls/{t['id']}"  # no signing key: open links
        assert t["master"] == f"/hls/{t['id']}/adaptive/1.00/master.m3u8"


def test_live_playlist_is_event_then_gains_endlist_and_nothing_else(server: Server) -> None:
    tid = server.track_id(TRACK)
    base = f"/hls/{tid}/warm/1.00/aac"
    status, headers, first = server.get(f"{base}/index.m3u8")
    assert status == 200 and headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
    live = parse_playlist(first)
    assert live.playlist_type == "event" and not live.is_endlist
    assert live.start.time_offset == 0
    assert len(live.segments) >= 1
    wait_complete(server, base)
    _, _, final_body = server.get(f"{base}/index.m3u8")
    final = parse_playlist(final_body)
    assert final.is_endlist and final.playlist_type == "event"
    assert header_lines(first.decode()) == header_lines(final_body.decode())
    assert [s.uri for s in final.segments[: len(live.segments)]] == [s.uri for s in live.segments]
    length, rate = source_length(server)
    total = sum(
        Decimal(line.split(":")[1].rstrip(","))
        for line in final_body.decode().splitlines()
        if line.startswith("#EXTINF")
    )
    # The timeline is the source plus AAC's priming frame, which segment 0's EXTINF carries.
    lead = RENDITIONS["aac"].lead_samples
    assert lead == 1024
    assert abs(total - Decimal(length + lead) / rate) <= Decimal(1) / rate
    longest = max(s.duration for s in final.segments)
    assert final.target_duration == int(longest + 0.5)


def test_masters_point_at_every_rendition_one_codec_each(server: Server) -> None:
    tid = server.track_id(TRACK)
    masters = {
        "master.m3u8": ("index.m3u8", ("aac", "aac-lo")),
        "master-vod.m3u8": ("vod.m3u8", ("aac", "aac-lo")),
        "master-lossless.m3u8": ("index.m3u8", ("flac",)),
        "master-lossless-vod.m3u8": ("vod.m3u8", ("flac",)),
    }
    for name, (index, renditions) in masters.items():
        status, _, body = server.get(f"/hls/{tid}/adaptive/1.00/{name}")
        assert status == 200
        parsed = parse_playlist(body)
        assert [p.uri for p in parsed.playlists] == [f"{r}/{index}" for r in renditions]
    status, _, _ = server.get(f"/hls/{tid}/adaptive/1.00/master-lossy.m3u8")
    assert status == 404


def test_blocking_reload_holds_until_the_next_segment_is_listed(server: Server) -> None:
    tid = server.track_id(TRACK)
    base = f"/hls/{tid}/bright/1.00/aac"
    _, _, body = server.get(f"{base}/index.m3u8")
    listed = len(parse_playlist(body).segments)
    started = time.monotonic()
    status, _, body = server.get(f"{base}/index.m3u8?_HLS_msn={listed}")
    hold = time.monotonic() - started
    assert status == 200
    assert len(parse_playlist(body).segments) >= listed + 1 or b"#EXT-X-ENDLIST" in body
    print(f"blocking reload for segment {listed} held {hold * 1000:.0f} ms")
    assert hold < 6.5
    # More than two past the last listed segment: 400 at once (retry if production raced us).
    for _ in range(5):
        _, _, body = server.get(f"{base}/index.m3u8")
        playlist = parse_playlist(body)
        if playlist.is_endlist:
            break
        status, _, err = server.get(f"{base}/index.m3u8?_HLS_msn={len(playlist.segments) + 2}")
        if status == 400:
            assert json.loads(err)["error"] == "bad parameter"
            break
    else:
        pytest.fail("never saw 400 for _HLS_msn more than two past the last segment")
    wait_complete(server, base)
    status, _, body = server.get(f"{base}/index.m3u8?_HLS_msn=9999")
    assert status == 200 and b"#EXT-X-ENDLIST" in body


def test_every_segment_probes_and_the_stream_decodes_to_the_source_length(
    server: Server, tmp_path: Path
) -> None:
    tid = server.track_id(TRACK)
    base = f"/hls/{tid}/adaptive/1.00/aac"
    wait_complete(server, base)
    _, _, body = server.get(f"{base}/index.m3u8")
    _, _, init = server.get(f"{base}/init.mp4")
    for seg in parse_playlist(body).segments:
        status, headers, data = server.get(f"{base}/{seg.uri}")
        assert status == 200 and headers["ETag"]
        (tmp_path / "one.mp4").write_bytes(init + data)
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,sample_rate",
             "-of", "json", str(tmp_path / "one.mp4")],
            capture_output=True, text=True,
        )  # fmt: skip
        assert probe.returncode == 0 and not probe.stderr, probe.stderr
        assert json.loads(probe.stdout)["streams"][0]["codec_name"] == "aac"
    decoded = decode(server.url + f"{base}/index.m3u8", channels=2)
    length, _ = source_length(server)
    frames = -(-length // 1024)
    # Fixed lead: one priming frame; the end is padded to the frame grid.
    assert len(decoded) == (frames + 1) * 1024
    assert 1024 <= len(decoded) - length < 2048


def test_vod_segment_out_of_order_matches_in_order_production(
    server: Server, tmp_path: Path
) -> None:
    tid = server.track_id(TRACK)
    base = f"/hls/{tid}/gentle/1.00/aac"
    status, _, body = server.get(f"{base}/vod.m3u8")
    vod = parse_playlist(body)
    assert status == 200 and vod.is_endlist and len(vod.segments) >= 6
    _, _, fifth = server.get(f"{base}/5.m4s")
    _, _, first = server.get(f"{base}/1.m4s")
    # The same segments produced in order by the pipeline alone, in this process.
    track = next(t for t in server.json("/api/tracks")["tracks"] if t["id"] == tid)
    file = server.library / track["path"]
    key = Catalog(server.library, "hls-origin").fingerprint(
        Catalog(server.library, "hls-origin").scan()[0]
    )
    spec = StreamSpec(SourceRef(str(file), key), "gentle", "1.00", 10.0, 5.0, 1.0, str(tmp_path))
    for index in range(6):
        jobs.produce_segment(spec, "aac", index)
    produced = tmp_path.joinpath(*spec.segment_key("aac", 0)[:-1])
    assert (produced / "1.m4s").read_bytes() == first
    assert (produced / "5.m4s").read_bytes() == fifth


def test_the_first_segment_of_a_pair_is_answered_before_the_second_is_encoded(
    server: Server,
) -> None:
    # With 10 s segments after a 1, 3.3 s ramp, segments 2 and 3 are one
    # encode unit (the last TAIL_SINGLE_SEGMENTS are alone). Asked for at once
    # on a cold stream, the first is answered as soon as the unit's encoder
    # is past it, the second when it is done.
    tid = server.track_id(TRACK)
    base = f"/hls/{tid}/warm/0.40/aac"
    status, _, body = server.get(f"{base}/vod.m3u8")
    assert status == 200 and len(parse_playlist(body).segments) >= 4 + TAIL_SINGLE_SEGMENTS
    answered: dict[int, tuple[float, int, bytes]] = {}

    def fetch(index: int) -> None:
        status, _, body = server.get(f"{base}/{index}.m4s")
        answered[index] = (time.monotonic(), status, body)

    threads = [threading.Thread(target=fetch, args=(i,)) for i in (2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answered[2][1] == answered[3][1] == 200
    print("answered 2 then 3 after", answered[3][0] - answered[2][0], "s")
    assert answered[3][0] - answered[2][0] > 0.05  # not at once, when the pair is done
    assert answered[2][2] == server.get(f"{base}/2.m4s")[2]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/hls/0123456789abcdef/adaptive/1.00/master.m3u8", 404),
        ("/hls/{tid}/loud/1.00/master.m3u8", 400),
        ("/hls/{tid}/adaptive/1.7/master.m3u8", 400),
        ("/hls/{tid}/adaptive/abc/aac/index.m3u8", 400),
        ("/hls/{tid}/adaptive/1.00/opus/index.m3u8", 400),
        ("/hls/{tid}/adaptive/1.00/aac/9999.m4s", 404),
        ("/hls/{tid}/adaptive/1.00/aac/-1.m4s", 404),
        ("/hls/{tid}/punchy/0.55/aac/index.m3u8?_HLS_msn=abc", 400),
        ("/hls/../../etc/passwd", 404),
        ("/hls/%2e%2e/%2e%2e/etc/passwd/1.00/aac/index.m3u8", 404),
        ("/hls/..%2f..%2fetc%2fpasswd/adaptive/1.00/master.m3u8", 404),
        ("/hls//etc/passwd/adaptive/1.00/master.m3u8", 404),
        ("/hls/%2fetc%2fpasswd/adaptive/1.00/master.m3u8", 404),
        ("/api/player/stream/..%2f..%2fetc%2fpasswd?enhanced=0", 404),
        ("/api/status/{tid}/adaptive/2", 400),
        ("/nothing/here", 404),
    ],
)
def test_bad_requests_get_json_errors_and_the_server_keeps_serving(
    server: Server, path: str, status: int
) -> None:
    path = path.format(tid=server.track_id(TRACK))
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("GET", path)  # sent as is, no client-side normalization
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert response.status == status, body
    assert response.getheader("Content-Type", "").startswith("application/json")
    payload = json.loads(body)
    assert set(payload) == {"error", "detail"}
    assert b"Traceback" not in body and b"/etc/passwd" not in body or status == 404
    assert server.get("/healthz")[0] == 200


def test_non_canonical_intensity_redirects(server: Server) -> None:
    tid = server.track_id(TRACK)
    parts = urlsplit(server.url)
    for given in ("1", "0.5", ".25", "0.351", "1.0000"):
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        conn.request("GET", f"/hls/{tid}/adaptive/{given}/master.m3u8")
        response = conn.getresponse()
        response.read()
        conn.close()
        expected = {"1": "1.00", "0.5": "0.50", ".25": "0.25", "0.351": "0.35", "1.0000": "1.00"}[
            given
        ]
        assert response.status == 301
        assert response.getheader("Location") == f"/hls/{tid}/adaptive/{expected}/master.m3u8"


def test_status_reports_progress_per_rendition(server: Server) -> None:
    tid = server.track_id(TRACK)
    wait_complete(server, f"/hls/{tid}/adaptive/1.00/aac")
    status = server.json(f"/api/status/{tid}/adaptive/1.00")
    aac = status["renditions"]["aac"]
    assert aac["state"] == "complete" and aac["done"] == aac["total"] > 0
    assert set(status["renditions"]) == {"aac", "aac-lo", "flac"}


def test_progressive_stream_serves_the_whole_track_as_wav(server: Server, tmp_path: Path) -> None:
    tid = server.track_id(TRACK)
    status, headers, body = server.get(
        f"/api/player/stream/{tid}?enhanced=1&preset=original&intensity=1"
    )
    assert status == 200 and headers["Content-Type"] == "audio/wav"
    (tmp_path / "x.wav").write_bytes(body)
    info = sf.info(str(tmp_path / "x.wav"))
    length, rate = source_length(server)
    assert info.frames == length and info.samplerate == rate
    status, _, raw = server.get(f"/api/player/stream/{tid}?enhanced=0")
    assert (
        status == 200
        and raw == (server.library / next(p.name for p in server.library.iterdir())).read_bytes()
    )


def test_metrics_and_health(server: Server) -> None:
    assert server.json("/healthz") == {"status": "ok"}
    status, _, body = server.get("/metrics")
    assert status == 200 and b"hls_origin_requests_total" in body


def test_a_restarted_server_serves_the_cache_without_producing(server: Server) -> None:
    tid = server.track_id(TRACK)
    base = f"/hls/{tid}/adaptive/1.00/aac"
    wait_complete(server, base)
    second = start_server(
        "--segment-seconds", "10", cache_dir=server.cache_dir, library=server.library
    )
    try:
        status, _, body = second.get(f"{base}/index.m3u8")
        assert status == 200 and b"#EXT-X-ENDLIST" in body
        for seg in parse_playlist(body).segments:
            assert second.get(f"{base}/{seg.uri}")[2] == server.get(f"{base}/{seg.uri}")[2]
        _, _, metrics = second.get("/metrics")
        assert b'hls_origin_segment_production_seconds_count{rendition="aac"}' not in metrics
    finally:
        second.stop()


def test_another_server_with_an_empty_cache_produces_identical_bytes(
    server: Server, tmp_path: Path
) -> None:
    tid = server.track_id(TRACK)
    other = start_server(
        "--segment-seconds",
        "10",
        "--workers",
        "1",
        cache_dir=tmp_path / "fresh",
        library=server.library,
    )
    try:
        for rendition in ("aac", "flac"):
            base = f"/hls/{tid}/punchy/1.00/{rendition}"
            # Opposite orders: the session server forward, the fresh one backward.
            _, _, body = server.get(f"{base}/vod.m3u8")
            names = ["init.mp4"] + [s.uri for s in parse_playlist(body).segments]
            ours = {name: server.get(f"{base}/{name}")[2] for name in names}
            for name in reversed(names):
                status, headers, data = other.get(f"{base}/{name}")
                assert status == 200 and data == ours[name], (rendition, name)
                assert headers["ETag"] == server.get(f"{base}/{name}")[1]["ETag"]
    finally:
        other.stop()


def test_background_work_pauses_when_nobody_listens_and_resumes_on_demand(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    put_track(library, "drascula-track2.ogg", 198.0)
    srv = start_server(
        "--segment-seconds", "5", "--idle-seconds", "1", cache_dir=tmp_path / "c", library=library
    )
    try:
        tid = srv.json("/api/tracks")["tracks"][0]["id"]
        base = f"/hls/{tid}/punchy/1.00/aac"
        assert srv.get(f"{base}/index.m3u8")[0] == 200
        deadline = time.monotonic() + 30
        while (
            srv.json(f"/api/status/{tid}/punchy/1.00")["renditions"]["aac"]["state"] == "producing"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        paused = srv.json(f"/api/status/{tid}/punchy/1.00")["renditions"]["aac"]
        assert paused["state"] == "idle" and 0 < paused["done"] < paused["total"], paused
        time.sleep(1.0)
        assert (
            srv.json(f"/api/status/{tid}/punchy/1.00")["renditions"]["aac"]["done"]
            == paused["done"]
        )
        wait_complete(srv, base)  # asking again resumes it
    finally:
        srv.stop()


def test_a_stream_taken_over_lists_what_its_player_had_seen(server: Server) -> None:
    # The first request this origin gets for a stream is a blocking reload
    # for segment 5: another origin (dead now, §9) or this one before a
    # restart had listed 0..4. They stay listed, and 5 is made at once.
    tid = server.track_id(TRACK)
    base = f"/hls/{tid}/bright/0.85/aac"
    started = time.monotonic()
    status, _, body = server.get(f"{base}/index.m3u8?_HLS_msn=5")
    took = time.monotonic() - started
    assert status == 200, body
    listed = parse_playlist(body).segments
    _, _, vod = server.get(f"{base}/vod.m3u8")
    expected = parse_playlist(vod).segments
    assert len(listed) >= 6 and b"#EXT-X-ENDLIST" not in body or len(listed) == len(expected)
    assert [s.duration for s in listed] == [s.duration for s in expected[: len(listed)]]
    print(f"taken-over stream: segment 5 listed after {took:.2f} s, {len(listed)} listed")
    assert took < 3.0
    assert server.get(f"{base}/5.m4s")[0] == 200
