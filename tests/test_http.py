"""HTTP for CDNs and browsers on other origins (SPEC §3, §9): validators, ranges,
gzip, CORS, cache lifetimes, bounded blocking reloads, signed links."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest

from hls.signing import signature
from tests import clients
from tests.conftest import Server, process_tree, put_track, start_server
from tests.edge import play
from tests.helpers import parse_playlist

TRACK = "battle-epic"
IMMUTABLE = "public, max-age=31536000, immutable"


def request(url: str, method: str = "GET", **headers: str) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def strong_etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def check_validators(url: str, cache_control: str, dated: bool = True) -> bytes:
    """The answer's validators and conditional requests; returns the body.
    `dated`: its Last-Modified validates it too (content fixed by the source)."""
    status, headers, body = request(url)
    assert status == 200, url
    assert headers["Cache-Control"] == cache_control, url
    assert headers["ETag"] == strong_etag_of(body), url  # strong, from the bytes
    modified = parsedate_to_datetime(headers["Last-Modified"])
    assert request(url, **{"If-None-Match": headers["ETag"]})[0] == 304
    assert request(url, **{"If-None-Match": f'"x", W/{headers["ETag"]}'})[0] == 304
    assert request(url, **{"If-None-Match": '"not-it"'})[0] == 200
    since = formatdate(modified.timestamp(), usegmt=True)
    assert request(url, **{"If-Modified-Since": since})[0] == (304 if dated else 200)
    before = formatdate(modified.timestamp() - 10, usegmt=True)
    assert request(url, **{"If-Modified-Since": before})[0] == 200
    # HEAD: the same headers, no body.
    head_status, head, head_body = request(url, "HEAD")
    assert head_status == 200 and head_body == b""
    assert head["ETag"] == headers["ETag"] and int(head["Content-Length"]) == len(body)
    return body


def check_ranges(url: str, body: bytes) -> None:
    size = len(body)
    status, headers, part = request(url, Range="bytes=10-99")
    assert status == 206 and part == body[10:100]
    assert headers["Content-Range"] == f"bytes 10-99/{size}"
    assert request(url, Range="bytes=-100")[2] == body[-100:]
    assert request(url, Range=f"bytes={size - 5}-")[2] == body[-5:]
    assert request(url, Range=f"bytes=0-{size + 1000}")[2] == body  # clamped to the end
    status, headers, _ = request(url, Range=f"bytes={size}-")
    assert status == 416 and headers["Content-Range"] == f"bytes */{size}"
    assert request(url, Range="bytes=-0")[0] == 416
    # Several ranges, or a garbled header: the whole body (RFC 9110 lets a server ignore Range).
    assert request(url, Range="bytes=0-1,5-6")[:3:2] == (200, body)
    assert request(url, Range="pages=1-2")[:3:2] == (200, body)
    # If-Range with the current ETag honours the range; with another, the whole body.
    etag = request(url, "HEAD")[1]["ETag"]
    assert request(url, Range="bytes=0-9", **{"If-Range": etag})[:3:2] == (206, body[:10])
    assert request(url, Range="bytes=0-9", **{"If-Range": '"old"'})[:3:2] == (200, body)


def test_segments_and_init_are_immutable_with_validators_and_ranges(server: Server) -> None:
    tid = server.track_id(TRACK)
    base = f"{server.url}/hls/{tid}/adaptive/1.00/aac"
    for name in ("init.mp4", "0.m4s", "3.m4s"):
        body = check_validators(f"{base}/{name}", IMMUTABLE)
        check_ranges(f"{base}/{name}", body)
        headers = request(f"{base}/{name}")[1]
        assert headers["Accept-Ranges"] == "bytes"
        assert headers["Access-Control-Allow-Origin"] == "*"
        exposed = {h.strip() for h in headers["Access-Control-Expose-Headers"].split(",")}
        assert {"Content-Length", "Content-Range", "ETag", "Age"} <= exposed
        assert "Content-Encoding" not in headers  # media is never compressed
        assert request(f"{base}/{name}", **{"Accept-Encoding": "gzip"})[2] == body


def test_playlists_are_gzipped_when_accepted_each_encoding_with_its_own_etag(
    server: Server,
) -> None:
    tid = server.track_id(TRACK)
    # A master's bit rates are nominal until its renditions are complete (this
    # stream is cold): until then only its ETag validates it.
    for path, dated in (("aac/vod.m3u8", True), ("master-vod.m3u8", False)):
        url = f"{server.url}/hls/{tid}/warm/1.00/{path}"
        plain = check_validators(url, "public, max-age=60", dated)
        status, headers, packed = request(url, **{"Accept-Encoding": "br, gzip;q=0.8"})
        assert status == 200 and headers["Content-Encoding"] == "gzip"
        assert headers["Vary"] == "Accept-Encoding"
        assert gzip.decompress(packed) == plain
        assert headers["ETag"] == strong_etag_of(packed) != strong_etag_of(plain)
        assert request(url, **{"Accept-Encoding": "gzip"})[2] == packed  # same bytes again
        cond = {"Accept-Encoding": "gzip", "If-None-Match": headers["ETag"]}
        assert request(url, **cond)[0] == 304
        assert "Content-Encoding" not in request(url, **{"Accept-Encoding": "gzip;q=0"})[1]
        check_ranges(url, plain)  # a range is of the identity encoding


def test_live_playlist_validators_and_errors_short_lived(server: Server) -> None:
    tid = server.track_id(TRACK)
    url = f"{server.url}/hls/{tid}/bright/0.35/aac-lo/index.m3u8"
    status, headers, body = request(url)
    assert status == 200 and b"#EXT-X-ENDLIST" not in body
    assert headers["Cache-Control"] == "public, max-age=1"
    assert headers["ETag"] == strong_etag_of(body) and headers["Last-Modified"]
    # A live playlist may change twice in a second: only its ETag validates it.
    if request(url)[2] == body:
        assert request(url, **{"If-None-Match": headers["ETag"]})[0] in (200, 304)
    since = formatdate(time.time() + 5, usegmt=True)
    assert request(url, **{"If-Modified-Since": since})[0] == 200
    for path, code in (
        (f"/hls/{tid}/adaptive/1.00/aac/99999.m4s", 404),
        ("/hls/0123456789abcdef/adaptive/1.00/master.m3u8", 404),
        (f"/hls/{tid}/adaptive/1.00/opus/index.m3u8", 400),
        ("/no/such/route", 404),
    ):
        status, headers, body = request(server.url + path)
        assert status == code, path
        assert headers["Cache-Control"] == "public, max-age=2", path
        assert headers["Access-Control-Allow-Origin"] == "*", path
        assert json.loads(body)["error"], path


def test_cors_preflight_is_answered_anywhere(server: Server) -> None:
    tid = server.track_id(TRACK)
    for path in (f"/hls/{tid}/adaptive/1.00/aac/0.m4s", "/api/tracks", "/api/queues"):
        status, headers, body = request(
            server.url + path, "OPTIONS",
            Origin="http://127.0.0.1:9", **{
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "range, if-none-match",
            },
        )  # fmt: skip
        assert status == 204 and body == b"", path
        assert headers["Access-Control-Allow-Origin"] == "*"
        assert "GET" in headers["Access-Control-Allow-Methods"]
        assert "HEAD" in headers["Access-Control-Allow-Methods"]
        assert headers["Access-Control-Allow-Headers"] == "range, if-none-match"
        assert int(headers["Access-Control-Max-Age"]) > 0


def test_a_blocking_reload_is_held_a_bounded_time_then_503(
    tmp_path: Path,
) -> None:
    # Workers frozen (SIGSTOP) after the first answer: nothing more is made,
    # so the segment asked for comes only by the live clock, too late.
    lib = tmp_path / "lib"
    put_track(lib, "wesnoth-battle-epic.ogg", 74.0)
    srv = start_server(
        "--segment-seconds", "10", "--workers", "1", cache_dir=tmp_path / "cache", library=lib
    )  # fmt: skip
    workers: list[int] = []
    try:
        base = f"/hls/{srv.track_id(TRACK)}/punchy/1.00/aac"
        status, _, body = srv.get(f"{base}/index.m3u8")
        listed = len(parse_playlist(body).segments)
        workers = [pid for pid in process_tree(srv.process.pid) if pid != srv.process.pid]
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        target = parse_playlist(body).target_duration
        asked = listed + 1  # one past the next: the live clock lists it ~11 s from now
        started = time.monotonic()
        status, headers, err = srv.get(f"{base}/index.m3u8?_HLS_msn={asked}")
        held = time.monotonic() - started
        print(f"blocking reload for segment {asked} of {listed} held {held:.2f} s, then {status}")
        assert status == 503 and headers["Retry-After"] and json.loads(err)["error"]
        assert headers["Cache-Control"] == "public, max-age=2"
        hold = min(6.0, 3 * target)  # Settings.blocking_reload_seconds, rfc8216bis
        assert hold - 0.2 <= held <= hold + 1.0
    finally:
        for pid in workers:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        srv.stop()


KEY = "test-signing-key_0123456789"


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    lib = tmp_path_factory.mktemp("signed-lib")
    put_track(lib, "wesnoth-battle-epic.ogg", 20.0)
    srv = start_server(
        "--segment-seconds", "10", "--workers", "1", "--cors-origin", "http://127.0.0.1:9",
        cache_dir=tmp_path_factory.mktemp("signed-cache"), library=lib,
        env={"HLS_ORIGIN_SIGNING_KEY": KEY},
    )  # fmt: skip
    yield srv
    srv.stop()


def test_signed_links_are_the_only_way_in_and_segments_inherit_them(signed: Server) -> None:
    (track,) = signed.json("/api/tracks")["tracks"]
    tid, base = track["id"], track["hls"]
    expires, sig = base.split("/")[2:4]
    assert base == f"/s/{expires}/{sig}/hls/{tid}"
    assert sig == signature(KEY, int(expires), tid)
    assert int(expires) - time.time() > 3600
    assert track["master"] == f"{base}/adaptive/1.00/master.m3u8"
    # A signed master; every relative URI under it resolves inside the prefix.
    status, headers, master = signed.get(track["master"])
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:9"
    assert "Origin" in headers["Vary"]
    variant = next(line for line in master.decode().splitlines() if line.endswith(".m3u8"))
    stream = f"{base}/adaptive/1.00"
    status, _, media = signed.get(f"{stream}/{variant}")
    assert status == 200
    for uri in ["init.mp4"] + [s.uri for s in parse_playlist(media).segments]:
        assert signed.get(f"{stream}/{variant.split('/')[0]}/{uri}")[0] == 200, uri
    # Another preset or intensity of the same track: the same link.
    assert signed.get(f"{base}/warm/0.50/aac/vod.m3u8")[0] == 200
    past = int(time.time()) - 60
    other = "0123456789abcdef"
    refused = {
        "unsigned": f"/hls/{tid}/adaptive/1.00/master.m3u8",
        "unsigned status": f"/api/status/{tid}/adaptive/1.00",
        "unsigned progressive": f"/api/player/stream/{tid}",
        "tampered": f"/s/{expires}/{sig[:-2]}AA/hls/{tid}/adaptive/1.00/master.m3u8",
        "longer life": f"/s/{int(expires) + 1}/{sig}/hls/{tid}/adaptive/1.00/master.m3u8",
        "expired": f"/s/{past}/{signature(KEY, past, tid)}/hls/{tid}/adaptive/1.00/master.m3u8",
        "other track": f"/s/{expires}/{sig}/hls/{other}/adaptive/1.00/master.m3u8",
        "other key": f"/s/{expires}/{signature('x', int(expires), tid)}/hls/{tid}/adaptive/1.00/master.m3u8",
        "malformed": f"/s/{expires}/short/hls/{tid}/adaptive/1.00/master.m3u8",
    }
    for why, path in refused.items():
        status, headers, body = signed.get(path)
        assert status == 403, why
        assert json.loads(body)["error"] == "forbidden", why
        assert headers["Cache-Control"] == "public, max-age=2", why
    # What is not a track's stream stays open.
    for path in ("/", "/healthz", "/metrics", "/api/tracks"):
        assert signed.get(path)[0] == 200, path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if clients.CHROMIUM is None:
        pytest.skip("make test installs chromium")
    with clients.browser_context() as context:
        yield context


@contextlib.contextmanager
def page_elsewhere(tmp: Path, origin: str) -> Iterator[str]:
    """A player page on another origin (a second loopback port) loading hls.js from `origin`."""
    (tmp / "player.html").write_text(
        f'<!doctype html><html><body><script src="{origin}/static/hls.min.js"></script></body></html>'
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/player.html"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_page_on_another_origin_plays_through_cors(
    server: Server, signed: Server, browser: Any, tmp_path: Path
) -> None:
    tid = server.track_id(TRACK)
    with page_elsewhere(tmp_path, server.url) as page:
        assert not page.startswith(server.url)
        log = play(browser, page, f"{server.url}/hls/{tid}/gentle/0.20/master.m3u8", until=5.0)
        print("cross-origin page:", {k: v for k, v in log.items() if k != "frags"})
        assert not log["errors"] and log["currentTime"] >= 5.0, log
        assert [s for s in log["stalls"] if s[1] > 0.5] == [], log
        assert len(log["frags"]) >= 3  # the segments' bodies were readable across origins
    # The signed origin allows only http://127.0.0.1:9: the same page cannot read it.
    (track,) = signed.json("/api/tracks")["tracks"]
    with page_elsewhere(tmp_path, signed.url) as page:
        log = play(browser, page, signed.url + track["master"], until=2.0, limit=15.0)
        assert log["errors"], log
