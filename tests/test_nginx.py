"""The origin behind real nginx with the project's CDN config (nginx/)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Server, http_get
from tests.edge import start_edge
from tests.helpers import parse_playlist

pytestmark = pytest.mark.skipif(
    shutil.which("nginx") is None, reason="nginx is installed by make test"
)


@pytest.fixture()
def edge(server: Server, tmp_path: Path) -> Iterator[str]:
    proxy = start_edge([server], tmp_path / "nginx")
    yield proxy.url
    proxy.stop()


def test_stream_through_nginx_is_byte_identical_and_cached(server: Server, edge: str) -> None:
    tid = server.track_id("battle-epic")
    base = f"/hls/{tid}/adaptive/1.00"
    for name in ("master.m3u8", "master-vod.m3u8"):
        assert http_get(edge + f"{base}/{name}")[2] == server.get(f"{base}/{name}")[2]
    status, _, body = http_get(edge + f"{base}/aac/vod.m3u8")
    assert status == 200
    names = ["init.mp4"] + [s.uri for s in parse_playlist(body).segments]
    for name in names:
        status, headers, via_edge = http_get(edge + f"{base}/aac/{name}")
        assert status == 200, name
        assert headers["X-Cache-Status"] in ("MISS", "EXPIRED", "HIT")
        assert via_edge == server.get(f"{base}/aac/{name}")[2], name
        again_status, again_headers, again = http_get(edge + f"{base}/aac/{name}")
        assert again_status == 200 and again == via_edge
        assert again_headers["X-Cache-Status"] == "HIT", name


def test_live_playlist_through_nginx_is_short_lived(server: Server, edge: str) -> None:
    tid = server.track_id("battle-epic")
    status, headers, body = http_get(edge + f"/hls/{tid}/punchy/1.00/aac-lo/index.m3u8")
    assert status == 200 and body.startswith(b"#EXTM3U")
    assert headers["Cache-Control"] in ("public, max-age=1", "public, max-age=60")


def test_errors_pass_through_nginx_as_json(server: Server, edge: str) -> None:
    status, headers, body = http_get(edge + "/hls/0123456789abcdef/adaptive/1.00/master.m3u8")
    assert status == 404 and headers["Content-Type"].startswith("application/json")
