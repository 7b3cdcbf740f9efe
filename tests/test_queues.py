"""Albums and queues as one gapless timeline (SPEC §10), end to end: a real server on
loopback, real files cut off the codec grid, decoded by ffmpeg."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import mutagen.flac
import numpy as np
import pytest
import soundfile as sf

from hls.playlist import EPOCH
from processing import loudness
from processing.encode import RENDITIONS
from tests.conftest import ROOT, Server, music_file, start_server, synth_program
from tests.helpers import decode, parse_playlist
from tests.hls_lint import attributes, lint_media, lint_update
from tests.seams import check
from tests.test_player import CHROMIUM, CHROMIUM_ARGS, HLS_JS

RATE = 44100
CUTS = (1_234_567, 2_500_001)  # track joins, off the 1024-sample grid
ALBUM = ("c-first.flac", "b-second.flac", "a-third.flac")  # tag order, not file-name order


def recording() -> np.ndarray:
    """80 s of one continuous real recording (synthesized when the music is absent)."""
    real = music_file("drascula-track2.ogg")
    if real is None:
        return synth_program(80.0, seed=17)
    return sf.read(str(real), dtype="float32", frames=RATE * 80)[0]


def tag(path: Path, **tags: str) -> None:
    f = mutagen.flac.FLAC(path)
    for key, value in tags.items():
        f[key] = value
    f.save()


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """album/: the recording cut in three tagged tracks; mix/: tracks of other
    levels, rates and widths, and a file that is no audio."""
    lib = tmp_path_factory.mktemp("queues-library")
    (lib / "album").mkdir()
    for number, (name, piece) in enumerate(zip(ALBUM, np.split(recording(), CUTS), strict=True)):
        sf.write(lib / "album" / name, piece, RATE, subtype="PCM_24")
        tag(lib / "album" / name, title=f"Part {number + 1}", album="One Take",
            tracknumber=f"{number + 1}/3")  # fmt: skip
    (lib / "mix").mkdir()
    loud = synth_program(21.0, seed=5)
    sf.write(lib / "mix" / "loud.flac", loud, RATE, subtype="PCM_24")
    sf.write(lib / "mix" / "quiet.flac", synth_program(19.0, seed=6) * 0.1, RATE, subtype="PCM_24")
    level = np.sqrt(np.mean(loud.astype(np.float64) ** 2))  # the same level, uncorrelated
    noise = np.random.default_rng(7).standard_normal((48000 * 12, 1)) * level
    sf.write(lib / "mix" / "mono48.flac", noise.astype(np.float32), 48000, subtype="PCM_24")
    (lib / "mix" / "broken.flac").write_bytes(b"fLaC" + bytes(range(256)) * 40)
    return lib


@pytest.fixture(scope="module")
def origin(library: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        "--segment-seconds", "10", "--workers", "2",
        cache_dir=tmp_path_factory.mktemp("queues-cache"), library=library,
    )  # fmt: skip
    yield srv
    srv.stop()


def post(server: Server, path: str, body: bytes | object) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        server.url + path, data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def ids(server: Server) -> dict[str, str]:
    """Track ids by file name."""
    return {Path(t["path"]).name: t["id"] for t in server.json("/api/tracks")["tracks"]}


def queue(server: Server, names: list[str], **options: object) -> dict:
    by_name = ids(server)
    status, body = post(server, "/api/queues", {"tracks": [by_name[n] for n in names], **options})
    assert status == 200, body
    return body


def flac_of(server: Server, qid: str, preset: str = "original") -> np.ndarray:
    """The queue's FLAC rendition, every segment, decoded to 24-bit integers."""
    url = f"{server.url}/hls/{qid}/{preset}/1.00/flac/vod.m3u8"
    return decode(url, 2, fmt="s32le") >> 8


def test_a_queue_id_is_deterministic_and_its_map_gives_each_track_start(origin: Server) -> None:
    first = queue(origin, list(ALBUM), crossfade=0, gain="album")
    again = queue(origin, list(ALBUM), crossfade=0.0, gain="album")
    assert first == again
    assert first["id"] == again["id"] and first["id"].startswith("q")
    assert [t["start_sample"] for t in first["tracks"]] == [0, *CUTS]
    assert first["samples"] == len(recording())
    assert [t["title"] for t in first["tracks"]] == ["Part 1", "Part 2", "Part 3"]
    assert origin.json(f"/api/queues/{first['id']}") == first
    other = queue(origin, list(ALBUM), crossfade=0, gain="track")
    assert other["id"] != first["id"]
    status = origin.json(f"/api/status/{first['id']}/original/1.00")
    assert status["track"] == first["id"]
    assert status["renditions"]["flac"]["total"] > 1


def test_albums_are_the_library_folders_in_tag_order_each_a_queue(origin: Server) -> None:
    albums = {a["path"]: a for a in origin.json("/api/albums")["albums"]}
    album = albums["album"]
    assert album["title"] == "One Take"
    assert [t["title"] for t in album["tracks"]] == ["Part 1", "Part 2", "Part 3"]
    by_name = ids(origin)
    assert [t["id"] for t in album["tracks"]] == [by_name[n] for n in ALBUM]
    mapped = origin.json(f"/api/queues/{album['id']}")
    assert mapped["gain"] == "album" and mapped["crossfade"] == 0
    assert [t["start_sample"] for t in mapped["tracks"]] == [0, *CUTS]
    # the folder without tags: file-name order, the broken file left out
    assert [t["title"] for t in albums["mix"]["tracks"]] == ["loud", "mono48", "quiet"]


def test_bad_queues_get_a_clear_error(origin: Server) -> None:
    by_name = ids(origin)
    good = by_name["loud.flac"]
    for body in (
        b"{not json",
        b"\xff\xfe",
        [good],
        {"tracks": []},
        {"tracks": ["0123456789abcdef"]},  # well formed, unknown
        {"tracks": ["../etc/passwd"]},
        {"tracks": [good] * 101},
        {"tracks": [good], "crossfade": -1},
        {"tracks": [good], "crossfade": "3"},
        {"tracks": [good], "crossfade": 1e9},
        {"tracks": [good], "gain": "loud"},
        {"tracks": [good], "shuffle": True},
    ):
        status, answer = post(origin, "/api/queues", body)
        assert status == 400, (body, answer)
        assert answer["error"] == "bad parameter" and answer["detail"]
    status, answer = post(origin, "/api/queues", {"tracks": [good, by_name["broken.flac"]]})
    assert status == 422, answer
    assert by_name["broken.flac"] in answer["detail"]
    for bad in ("qAAAA", "q" + "A" * 40, "q" + "-" * 30):
        assert origin.get(f"/api/queues/{bad}")[0] == 404
        assert origin.get(f"/hls/{bad}/original/1.00/master.m3u8")[0] == 404


def test_the_lossless_rendition_of_a_queue_is_the_exact_concatenation(origin: Server) -> None:
    """Segments span the joins (off the codec grid), the previous track is the context:
    with preset original every sample of every track comes back, in order."""
    body = queue(origin, list(ALBUM))
    decoded = flac_of(origin, body["id"])
    pieces = [sf.read(origin.library / "album" / n, dtype="int32")[0] >> 8 for n in ALBUM]
    expected = np.concatenate(pieces)
    assert decoded.shape == expected.shape
    assert np.array_equal(decoded, expected)


def test_track_starts_are_marked_in_every_playlist(origin: Server) -> None:
    body = queue(origin, list(ALBUM))
    qid = body["id"]
    texts = {}
    for rendition in RENDITIONS:
        status, _, raw = origin.get(f"/hls/{qid}/adaptive/1.00/{rendition}/vod.m3u8")
        assert status == 200
        texts[rendition] = raw.decode()
        assert lint_media(texts[rendition]) == [], texts[rendition]
        marks = [attributes(line) for line in raw.decode().splitlines()
                 if line.startswith("#EXT-X-DATERANGE:")]  # fmt: skip
        assert [m["X-TRACK-ID"] for m in marks] == [t["id"] for t in body["tracks"]]
        assert [m["X-TITLE"] for m in marks] == ["Part 1", "Part 2", "Part 3"]
        playlist = parse_playlist(raw)
        # each marker sits before the segment its track starts in, at its time
        lead = RENDITIONS[rendition].lead_samples
        starts = np.cumsum([0] + [s.duration for s in playlist.segments])
        for mark, track in zip(marks, body["tracks"], strict=True):
            date = datetime.fromisoformat(mark["START-DATE"].replace("Z", "+00:00"))
            expected = (track["start_sample"] + lead) / RATE if track["start_sample"] else 0.0
            assert abs((date - EPOCH).total_seconds() - expected) < 0.001
            assert abs(float(mark["DURATION"]) - track["duration"]) < 0.001
        segment_of = {}
        index = -1
        for line in texts[rendition].splitlines():
            if line.startswith("#EXTINF"):
                index += 1
            if line.startswith("#EXT-X-DATERANGE"):
                segment_of[attributes(line)["X-TRACK-ID"]] = index + 1
        for track in body["tracks"]:
            k = segment_of[track["id"]]
            assert starts[k] - 0.001 <= track["start"] <= starts[k + 1]
    # A live playlist lists a marker with its segment, so it only appends.
    live = f"/hls/{qid}/warm/1.00/aac/index.m3u8"
    first = origin.get(live)[2].decode()
    assert "#EXT-X-ENDLIST" not in first and lint_media(first) == [], first
    deadline = time.monotonic() + 120
    while origin.json(f"/api/status/{qid}/warm/1.00")["renditions"]["aac"]["state"] != "complete":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    last = origin.get(live)[2].decode()
    assert "#EXT-X-ENDLIST" in last and last.count("#EXT-X-DATERANGE") == 3
    assert first.count("#EXT-X-DATERANGE") < 3
    assert lint_media(last) == [] and lint_update(first, last) == []


def test_aac_renditions_of_a_queue_are_gapless_at_track_joins(origin: Server) -> None:
    body = queue(origin, list(ALBUM))
    reference = recording()
    status = origin.json(f"/api/status/{body['id']}/original/1.00")
    assert status["renditions"]["aac"]["total"] > 3
    playlist = parse_playlist(origin.get(f"/hls/{body['id']}/original/1.00/aac/vod.m3u8")[2])
    assert len(playlist.segments) == status["renditions"]["aac"]["total"]
    for rendition in ("aac", "aac-lo"):
        url = f"{origin.url}/hls/{body['id']}/original/1.00/{rendition}/vod.m3u8"
        report = check(url, reference, RATE, list(CUTS), RENDITIONS[rendition].aac_quality)
        print(f"track joins, {rendition}: {report}")
        assert report.length_difference == RENDITIONS[rendition].lead_samples + (
            -len(reference) % 1024
        )
        assert report.drift == 0 and report.lead == 1024
        assert report.mean_db <= 1.0 and report.max_db <= 3.0, report


def rms_db(audio: np.ndarray) -> float:
    return float(10 * np.log10(max(np.mean(audio.astype(np.float64) ** 2), 1e-20)))


def residual_db(audio: np.ndarray, reference: np.ndarray) -> float:
    """Level of the difference below the reference's, in dB."""
    return rms_db(audio - reference) - rms_db(reference)


def test_a_crossfade_shortens_the_timeline_and_keeps_the_level(origin: Server) -> None:
    """Two uncorrelated tracks of one level: an equal-power crossfade keeps it."""
    plain = queue(origin, ["loud.flac", "mono48.flac"])
    faded = queue(origin, ["loud.flac", "mono48.flac"], crossfade=3)
    assert plain["sample_rate"] == faded["sample_rate"] == RATE  # the first track's
    assert faded["samples"] == plain["samples"] - 3 * RATE
    join = faded["tracks"][1]["start_sample"]
    assert join == plain["tracks"][1]["start_sample"] - 3 * RATE
    audio = flac_of(origin, faded["id"]).astype(np.float64) / 2**23
    assert len(audio) == faded["samples"]
    before = rms_db(audio[join - 4 * RATE : join - RATE])
    after = rms_db(audio[join + 4 * RATE : join + 7 * RATE])
    beat = RATE // 2  # the loud track's beat: shorter windows measure its rhythm
    through = [rms_db(audio[s : s + beat]) for s in range(join, join + 3 * RATE, beat)]
    print("crossfade levels: before", before, "after", after, "through", np.round(through, 2))
    low, high = min(before, after), max(before, after)
    assert all(low - 1.0 <= level <= high + 1.0 for level in through), through


def test_track_gain_levels_each_track_and_album_gain_keeps_their_balance(origin: Server) -> None:
    """A loud and a quiet track (20 dB apart): `track` brings each to the preset's
    target; `album` gives both one chain, so the album meets the target and the
    quiet track stays well below the loud one (by less than 20 dB: the
    compressor before the gain narrows the gap)."""
    levels = {}
    for gain in ("track", "album"):
        body = queue(origin, ["loud.flac", "quiet.flac"], gain=gain)
        audio = flac_of(origin, body["id"], "adaptive").astype(np.float64) / 2**23
        join = body["tracks"][1]["start_sample"]
        levels[gain] = [
            loudness.integrated_loudness(audio[:join], RATE),
            loudness.integrated_loudness(audio[join:], RATE),
        ]
        albums_level = loudness.integrated_loudness(audio, RATE)
        assert np.abs(audio).max() < 1.0
    print("loudness (LUFS) of the two tracks:", levels)
    assert all(abs(level + 14.0) <= 1.0 for level in levels["track"]), levels
    loud, quiet = levels["album"]
    assert 10.0 <= loud - quiet <= 20.0, levels
    assert abs(albums_level + 14.0) <= 1.0, albums_level


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None or not HLS_JS.is_file():
        pytest.skip("make test installs chromium and hls.js")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with tempfile.TemporaryDirectory() as profile, playwright_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield context
        context.close()


def test_the_web_player_plays_a_queue_across_a_join_and_shows_each_track(
    browser: Any, origin: Server
) -> None:
    """The page's own controls: queue two tracks (the first at 48 kHz mono, so the
    second is converted to it), play the queue cold, in real time, across the join."""
    expected = queue(origin, ["mono48.flac", "loud.flac"], crossfade=0, gain="track")
    rate = expected["sample_rate"]
    assert rate == 48000 and expected["channels"] == 2
    join = (expected["tracks"][1]["start_sample"] + RENDITIONS["aac"].lead_samples) / rate
    page = browser.new_page()
    try:
        page.goto(origin.url + "/")
        page.evaluate(
            "document.getElementById('audio').muted = true;"
            " document.getElementById('intensity').value = '0.45'"  # cold: no test asked for it
        )
        page.click("#tracks li:has-text('mono48') button.add")
        page.click("#tracks li:has-text('loud') button.add")
        page.click("#play-queue")
        page.wait_for_function("document.getElementById('audio').currentTime > 0", timeout=30000)
        page.evaluate(
            "window.waiting = []; document.getElementById('audio').addEventListener('waiting',"
            " () => window.waiting.push(document.getElementById('audio').currentTime))"
        )
        page.wait_for_function(
            f"document.getElementById('audio').currentTime > {join + 1.5}", timeout=60000
        )
        state = page.evaluate(
            "() => { const a = document.getElementById('audio'); return {"
            " url: hls.url, changes: window.trackChanges, waiting: window.waiting,"
            " now: document.getElementById('now').textContent,"
            " queue: Array.from(document.querySelectorAll('#queue li'), li => li.textContent),"
            " buffered: Array.from({length: a.buffered.length},"
            "   (_, i) => [a.buffered.start(i), a.buffered.end(i)]) }; }"
        )
        print("queue in the web player:", state, "join at", join)
        assert f"/hls/{expected['id']}/adaptive/0.45/master.m3u8" in state["url"], state
        assert state["queue"] == ["mono48", "loud"]
        assert state["now"] == "Now playing: loud"
        assert state["waiting"] == [], state
        assert len(state["buffered"]) == 1 and state["buffered"][0][0] < 0.1, state
        titles = [c["title"] for c in state["changes"]]
        assert titles == ["mono48", "loud"], state
        changed = state["changes"][1]["at"]
        # The page names a track from 10 ms before its marker (START-DATE carries
        # milliseconds), and a timeupdate may fall in those 10 ms.
        assert -0.011 <= changed - join <= 0.5, (changed, join)
        # Skip back to the first track's start from the queue's list.
        page.click("#queue li:nth-child(1)")
        page.wait_for_function(
            "document.getElementById('now').textContent === 'Now playing: mono48'", timeout=5000
        )
        assert page.evaluate("document.getElementById('audio').currentTime") < 1.0
    finally:
        page.close()


def test_render_and_package_take_a_queue_and_agree_with_the_origin(
    origin: Server, tmp_path: Path
) -> None:
    """`render` of several sources is the one-pass reference of the chunked queue
    (each track through its own chain); `package` writes the same queue (its
    30 s segments against this origin's 10 s: the same first segment)."""
    files = [origin.library / "mix" / n for n in ("loud.flac", "quiet.flac")]
    body = queue(origin, ["loud.flac", "quiet.flac"], gain="track")
    run = [sys.executable, "-m", "hls"]
    reference = tmp_path / "reference.flac"
    subprocess.run([*run, "render", *map(str, files), str(reference), "--preset", "adaptive",
                    "--gain", "track"], check=True, cwd=ROOT, timeout=300)  # fmt: skip
    whole = sf.read(reference, dtype="int32")[0].astype(np.float64) / 2**31
    chunked = flac_of(origin, body["id"], "adaptive").astype(np.float64) / 2**23
    assert whole.shape == chunked.shape == (body["samples"], 2)
    out = tmp_path / "package"
    subprocess.run([*run, "package", *map(str, files), str(out), "--preset", "adaptive",
                    "--rendition", "flac", "aac"], check=True, cwd=ROOT, timeout=300)  # fmt: skip
    packaged = decode(out / "flac" / "index.m3u8", 2, fmt="s32le").astype(np.float64) / 2**31
    for name, playlist_text, audio in (
        ("origin", origin.get(f"/hls/{body['id']}/adaptive/1.00/flac/vod.m3u8")[2].decode(),
         chunked),
        ("package", (out / "flac" / "index.m3u8").read_text(), packaged),
    ):  # fmt: skip
        assert playlist_text.count("#EXT-X-DATERANGE") == 2
        lengths = [round(s.duration * RATE) for s in parse_playlist(playlist_text).segments]
        bounds = np.cumsum([0, *lengths])
        worst = max(
            residual_db(audio[a:b], whole[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)
        )
        print(f"queue, {name} against render: worst segment residual {worst:.1f} dB")
        assert worst <= -60.0
    for name in ("init.mp4", "0.m4s"):
        status, _, served = origin.get(f"/hls/{body['id']}/adaptive/1.00/flac/{name}")
        assert status == 200 and (out / "flac" / name).read_bytes() == served, name
