"""Playlist builders: configuration + media description in, text out (SPEC §4).

Pure functions: they never see the HTTP request. Durations come from the
segment plan in integer samples and are turned into decimal text only here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from processing.plan import SegmentPlan
from processing.renditions import Rendition

VERSION = 6  # EXT-X-MAP in a playlist without I-frames needs version 6
EXTINF_DECIMALS = 6
_SCALE = 10**EXTINF_DECIMALS


def _micros(samples: int, rate: int) -> int:
    """Samples → integer microseconds, rounded half up."""
    return (samples * _SCALE * 2 + rate) // (2 * rate)


def extinf_values(plan: SegmentPlan) -> list[str]:
    """EXTINF of every segment, rounded so that they add up to the track duration.

    Each value is the difference of the rounded boundary times, so rounding
    errors cancel instead of accumulating.
    """
    out = []
    for seg in plan.segments:
        micros = _micros(seg.end, plan.rate) - _micros(seg.start, plan.rate)
        out.append(f"{micros // _SCALE}.{micros % _SCALE:0{EXTINF_DECIMALS}d}")
    return out


def target_duration(plan: SegmentPlan) -> int:
    """Longest EXTINF rounded to the nearest integer (RFC 8216 §4.3.3.1)."""
    longest = max(seg.samples for seg in plan.segments)
    return max(1, (2 * longest + plan.rate) // (2 * plan.rate))


@dataclass(frozen=True)
class Variant:
    """One EXT-X-STREAM-INF entry of the multivariant playlist."""

    rendition: Rendition
    uri: str
    channels: int


def master_playlist(variants: Sequence[Variant]) -> str:
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for v in variants:
        average = v.rendition.nominal_bitrate(v.channels)
        peak = average * 5 // 4
        lines.append(
            f"#EXT-X-STREAM-INF:BANDWIDTH={peak},AVERAGE-BANDWIDTH={average},"
            f'CODECS="{v.rendition.codec_string}"'
        )
        lines.append(v.uri)
    return "\n".join(lines) + "\n"


def media_playlist(plan: SegmentPlan, listed: int, *, complete: bool, live: bool) -> str:
    """The media playlist listing the first `listed` segments.

    live=True: the live-then-VOD `index.m3u8` (EVENT, blocking reload while
    incomplete, ENDLIST once complete). live=False: `vod.m3u8`, every
    segment from the start.
    """
    durations = extinf_values(plan)
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{VERSION}",
        f"#EXT-X-TARGETDURATION:{target_duration(plan)}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:" + ("EVENT" if live else "VOD"),
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    if live:
        lines.append("#EXT-X-START:TIME-OFFSET=0")
        # Kept after completion too: RFC 8216 §6.2.1 lets only ENDLIST be added.
        lines.append("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES")
    lines.append('#EXT-X-MAP:URI="init.mp4"')
    count = len(plan) if not live else listed
    for index in range(count):
        lines.append(f"#EXTINF:{durations[index]},")
        lines.append(f"{index}.m4s")
    if complete or not live:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"
