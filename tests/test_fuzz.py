"""Property-based: any URL gets a JSON error with a §3 status or a valid playlist or segment."""

from __future__ import annotations

import http.client
import json
from urllib.parse import quote, urlsplit

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Server

SEGMENTS = st.sampled_from(
    [
        "hls",
        "api",
        "status",
        "player",
        "stream",
        "..",
        ".",
        "%2e%2e",
        "%2F",
        "",
        "etc",
        "passwd",
        "%00",
        "\\",
        "~",
    ]
)
PRESETS = st.sampled_from(["adaptive", "original", "punchy", "loud", "", "..", "ADAPTIVE"])
INTENSITIES = st.sampled_from(
    ["1.00", "0.5", "1", "1.7", "-0.1", "nan", "1e-1", "0.05", "abc", "", "0.3333333333333"]
)
RENDITIONS = st.sampled_from(["aac", "aac-lo", "flac", "opus", "..", ""])
FILES = st.sampled_from(
    [
        "index.m3u8",
        "vod.m3u8",
        "init.mp4",
        "0.m4s",
        "1.m4s",
        "99999.m4s",
        "-1.m4s",
        "00.m4s",
        "x.m4s",
        "master.m3u8",
        "",
    ]
)
QUERIES = st.sampled_from(
    [
        "",
        "?_HLS_msn=0",
        "?_HLS_msn=abc",
        "?_HLS_msn=99999999999",
        "?_HLS_msn=-1",
        "?enhanced=2",
        "?preset=x&intensity=9",
    ]
)


def request(server: Server, path: str) -> tuple[int, str, bytes]:
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        conn.close()


def check(status: int, content_type: str, body: bytes) -> None:
    assert status in (200, 301, 400, 404, 422), (status, body[:200])
    if status in (400, 404, 422):
        assert content_type.startswith("application/json")
        assert set(json.loads(body)) == {"error", "detail"}
    elif status == 200:
        if content_type.startswith("application/vnd.apple.mpegurl"):
            assert body.startswith(b"#EXTM3U")
        elif content_type in ("audio/mp4", "video/iso.segment"):
            assert body[4:8] in (b"ftyp", b"styp")


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(SEGMENTS, max_size=7), QUERIES)
def test_arbitrary_paths(server: Server, segments: list[str], query: str) -> None:
    status, content_type, body = request(server, "/" + "/".join(segments) + query)
    check(status, content_type, body)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.booleans(), PRESETS, INTENSITIES, RENDITIONS, FILES, QUERIES, st.text(max_size=12))
def test_hls_urls(
    server: Server,
    real_track: bool,
    preset: str,
    intensity: str,
    rendition: str,
    name: str,
    query: str,
    noise: str,
) -> None:
    track = server.track_id("battle-epic") if real_track else quote(noise, safe="") or "x"
    status, content_type, body = request(
        server, f"/hls/{track}/{preset}/{intensity}/{rendition}/{name}{query}"
    )
    check(status, content_type, body)
    assert request(server, "/healthz")[0] == 200
