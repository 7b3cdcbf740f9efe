"""Every playlist the server writes, held to the HLS documents (tests/hls_lint.py)."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from tests.conftest import Server
from tests.helpers import parse_playlist
from tests.hls_lint import lint_master, lint_media, lint_update

TRACK = "battle-epic"


def test_the_linter_finds_what_the_documents_forbid() -> None:
    good = (
        "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:0\n"
        '#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI="init.mp4"\n'
        "#EXTINF:10.000000,\n0.m4s\n"
    )
    assert lint_media(good) == []
    assert lint_media(good.replace("VERSION:6", "VERSION:5"))[0].startswith("EXT-X-MAP without")
    assert "rounds above the target" in lint_media(good.replace("10.000000", "10.6"))[0]
    assert "without EXT-X-ENDLIST" in lint_media(good.replace("EVENT", "VOD"))[0]
    later = good + "#EXTINF:3.0,\n1.m4s\n#EXT-X-ENDLIST\n"
    assert lint_update(good, later) == []
    assert "not only appended" in lint_update(good, good.replace("10.000000", "9.5"))[0]
    assert "ENDLIST changed" in lint_update(later, good)[0]
    assert "header tags" in lint_update(good, good + "#EXT-X-START:TIME-OFFSET=0\n")[0]
    master = '#EXTM3U\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-STREAM-INF:BANDWIDTH=9,AVERAGE-BANDWIDTH=8,CODECS="{}"\na.m3u8\n'
    assert lint_master(master.format("mp4a.40.2")) == []
    assert "exactly fLaC" in lint_master(master.format("flac"))[0]
    both = master.format("mp4a.40.2") + '#EXT-X-STREAM-INF:BANDWIDTH=9,CODECS="fLaC"\nb.m3u8\n'
    assert any("several codecs" in p for p in lint_master(both))


def _segment_bit_rates(server: Server, base: str, rendition: str) -> tuple[float, float]:
    """Peak and mean bit rate of a rendition's segments, measured here."""
    _, _, body = server.get(f"{base}/{rendition}/vod.m3u8")
    rates, total_bits, total_seconds = [], 0, Decimal(0)
    for seg in parse_playlist(body).segments:
        size = len(server.get(f"{base}/{rendition}/{seg.uri}")[2])
        rates.append(8 * size / seg.duration)
        total_bits += 8 * size
        total_seconds += Decimal(str(seg.duration))
    return max(rates), total_bits / float(total_seconds)


def test_every_playlist_at_every_stage_follows_the_rules(server: Server) -> None:
    tid = server.track_id(TRACK)
    base = f"/hls/{tid}/punchy/0.85"  # a stream no other test asks for: cold
    versions: dict[str, list[str]] = {}
    for name in ("aac", "aac-lo", "flac"):
        status, _, body = server.get(f"{base}/{name}/index.m3u8")
        assert status == 200
        versions[name] = [body.decode()]
    for name in (
        "master.m3u8",
        "master-lossless.m3u8",
        "master-vod.m3u8",
        "master-lossless-vod.m3u8",
    ):
        text = server.get(f"{base}/{name}")[2].decode()
        assert lint_master(text, {"fLaC"} if "lossless" in name else {"mp4a.40.2"}) == [], (
            name,
            text,
        )
    # Every version of each live playlist until it is complete.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all(
        "#EXT-X-ENDLIST" in v[-1] for v in versions.values()
    ):
        for name, seen in versions.items():
            text = server.get(f"{base}/{name}/index.m3u8")[2].decode()
            if text != seen[-1]:
                seen.append(text)
        time.sleep(0.05)
    for name, seen in versions.items():
        assert "#EXT-X-ENDLIST" in seen[-1], (name, seen[-1])
        assert len(seen) >= 2, name  # at least the first answer and the complete one
        for text in seen:
            assert lint_media(text) == [], (name, text)
        for before, after in zip(seen, seen[1:], strict=False):
            assert lint_update(before, after) == [], (name, before, after)
        vod = server.get(f"{base}/{name}/vod.m3u8")[2].decode()
        assert lint_media(vod) == [], (name, vod)
        # The complete live playlist lists what the VOD one does.
        assert parse_playlist(vod).segments.uri == parse_playlist(seen[-1]).segments.uri
        print(name, "versions of the live playlist:", len(seen))
    # Once every segment is known, the masters carry the measured bit rates:
    # BANDWIDTH the peak segment bit rate, AVERAGE-BANDWIDTH the mean
    # (Apple HLS Authoring Specification 6.16 and 6.17).
    for name, renditions in (
        ("master.m3u8", ("aac", "aac-lo")),
        ("master-lossless.m3u8", ("flac",)),
    ):
        master = parse_playlist(server.get(f"{base}/{name}")[2])
        assert [p.uri for p in master.playlists] == [f"{r}/index.m3u8" for r in renditions]
        for variant, rendition in zip(master.playlists, renditions, strict=True):
            peak, mean = _segment_bit_rates(server, base, rendition)
            info = variant.stream_info
            print(name, rendition, info.bandwidth, round(peak), info.average_bandwidth, round(mean))
            assert peak <= info.bandwidth <= peak * 1.01, (rendition, info.bandwidth, peak)
            assert info.average_bandwidth == pytest.approx(mean, rel=0.01)


def test_flac_is_listed_only_in_fmp4_as_fLaC(server: Server) -> None:
    tid = server.track_id(TRACK)
    base = f"/hls/{tid}/punchy/0.85"
    master = parse_playlist(server.get(f"{base}/master-lossless.m3u8")[2])
    assert [p.stream_info.codecs for p in master.playlists] == ["fLaC"]
    media = parse_playlist(server.get(f"{base}/flac/vod.m3u8")[2])
    assert media.segment_map[0].uri == "init.mp4"
    init = server.get(f"{base}/flac/init.mp4")[2]
    assert b"fLaC" in init and b"dfLa" in init  # the FLAC sample entry and its box
