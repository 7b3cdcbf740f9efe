"""Playlist builders: configuration + media description in, text out (SPEC §4).

Pure functions: they never see the HTTP request. Durations come from the
segment plan in integer samples and are turned into decimal text only here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from processing.plan import Segment, SegmentPlan
from processing.renditions import Rendition

VERSION = 6  # EXT-X-MAP in a playlist without I-frames needs version 6
EXTINF_DECIMALS = 6
_SCALE = 10**EXTINF_DECIMALS
# A live playlist lists audio this many target durations past the time its
# stream has been live (segments not made yet are made when asked for): a
# client that reloads per RFC 8216 §6.3.4, one target duration after a change,
# has a third of one still listed ahead of its position at the reload. With
# the segment plan's ramp (1 s, a third of a segment, then whole ones) the
# first answer lists three segments: clients that start a live playlist three
# segments before its end (ffmpeg, GStreamer) start at the beginning.
LIVE_HORIZON_TARGETS = 4 / 3


def _micros(samples: int, rate: int) -> int:
    """Samples → integer microseconds, rounded half up."""
    return (samples * _SCALE * 2 + rate) // (2 * rate)


def extinf_values(plan: SegmentPlan, lead: int = 0) -> list[str]:
    """EXTINF of every segment, rounded so that they add up to the stream's duration.

    `lead`: samples the rendition's media runs ahead of the source, all in
    segment 0 (AAC's priming packet: every later segment's tfdt is its start
    plus the lead). Each EXTINF is then the duration of the segment's media,
    so that the playlist timeline and the media timeline agree: a client that
    looks up the segment at a media position (GStreamer, switching variants)
    finds the right one. Each value is the difference of the rounded boundary
    times, so rounding errors cancel instead of accumulating.
    """
    out = []
    for seg in plan.segments:
        start, end = media_span(seg, lead)
        micros = _micros(end, plan.rate) - _micros(start, plan.rate)
        out.append(f"{micros // _SCALE}.{micros % _SCALE:0{EXTINF_DECIMALS}d}")
    return out


def media_span(seg: Segment, lead: int = 0) -> tuple[int, int]:
    """The samples a rendition's segment spans on its media timeline: its plan
    span shifted by `lead`, segment 0 also holding the lead itself."""
    return (seg.start + lead if seg.index > 0 else 0), seg.end + lead


def target_duration(plan: SegmentPlan, lead: int = 0) -> int:
    """Longest EXTINF rounded to the nearest integer (RFC 8216 §4.3.3.1)."""
    longest = max(end - start for start, end in (media_span(s, lead) for s in plan.segments))
    return max(1, (2 * longest + plan.rate) // (2 * plan.rate))


# The multivariant playlist of each codec (SPEC §4: one codec per playlist);
# its VOD twin adds "-vod".
MASTER_OF_CODEC = {"aac": "master", "flac": "master-lossless"}


def live_listed(plan: SegmentPlan, produced: int, live_seconds: float) -> int:
    """How many segments a live playlist lists: those produced, and every segment
    that starts within LIVE_HORIZON_TARGETS target durations of the time the
    stream has been live (`live_seconds`), however far production is."""
    horizon = (live_seconds + LIVE_HORIZON_TARGETS * target_duration(plan)) * plan.rate
    count = produced
    while count < len(plan) and plan[count].start < horizon:
        count += 1
    return count


def bandwidths(
    plan: SegmentPlan, sizes: Mapping[int, int], lead: int = 0
) -> tuple[int, int] | None:
    """Peak and average bit rate (bits/s) of the segments whose sizes are given
    (Apple's HLS Authoring Specification: BANDWIDTH is the peak segment bit rate,
    AVERAGE-BANDWIDTH the mean over the stream), over each segment's EXTINF
    duration (`lead`: see `extinf_values`); None when none is known."""
    if not sizes:
        return None
    spans = {i: media_span(plan[i], lead) for i in sizes}
    samples_of = {i: end - start for i, (start, end) in spans.items()}
    peak = max(-(-8 * size * plan.rate // samples_of[i]) for i, size in sizes.items())
    samples = sum(samples_of.values())
    average = -(-8 * sum(sizes.values()) * plan.rate // samples)
    return peak, average


@dataclass(frozen=True)
class Variant:
    """One EXT-X-STREAM-INF entry of a multivariant playlist."""

    rendition: Rendition
    uri: str
    channels: int
    measured: tuple[int, int] | None = None  # peak and average bit rate of every segment

    @property
    def bandwidths(self) -> tuple[int, int]:
        """BANDWIDTH and AVERAGE-BANDWIDTH: measured once every segment is known,
        else the rendition's nominal rate with a margin for the peak."""
        if self.measured is not None:
            return self.measured
        average = self.rendition.nominal_bitrate(self.channels)
        return average * 5 // 4, average


def master_playlist(variants: Sequence[Variant]) -> str:
    """A multivariant playlist; its variants must share one codec (SPEC §4), so
    that a client switching between them never changes decoder."""
    codecs = {v.rendition.codec_string for v in variants}
    if len(codecs) != 1:
        raise ValueError(f"variants of one multivariant playlist must share a codec: {codecs}")
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for v in variants:  # in the given order: clients start with the first
        peak, average = v.bandwidths
        lines.append(
            f"#EXT-X-STREAM-INF:BANDWIDTH={peak},AVERAGE-BANDWIDTH={average},"
            f'CODECS="{v.rendition.codec_string}"'
        )
        lines.append(v.uri)
    return "\n".join(lines) + "\n"


# A queue's playlists date its timeline from this instant (EXT-X-PROGRAM-DATE-TIME,
# which EXT-X-DATERANGE requires): fixed, so that the same URL gives the same bytes.
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
MARKER_CLASS = "hls-origin.track"


@dataclass(frozen=True)
class Marker:
    """A track start in a queue's timeline (SPEC §10), as an EXT-X-DATERANGE."""

    track: str  # the track's id
    title: str
    start: int  # first sample on the timeline
    samples: int  # the track's length


def _quoted(text: str) -> str:
    """A quoted-string attribute value (RFC 8216 §4.2: no `"`, CR or LF)."""
    return "".join(c for c in text.replace('"', "'") if c >= " ")[:200]


def _date(micros: int) -> str:
    moment = EPOCH + timedelta(microseconds=micros)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def daterange(number: int, marker: Marker, rate: int, lead: int) -> str:
    """The EXT-X-DATERANGE of a track start; its time is on the rendition's media
    timeline (`extinf_values`: a later sample plays `lead` samples after its position)."""
    start = _micros(marker.start + lead, rate) if marker.start > 0 else 0
    duration = marker.samples / rate
    return (
        f'#EXT-X-DATERANGE:ID="track-{number}",CLASS="{MARKER_CLASS}",'
        f'START-DATE="{_date(start)}",DURATION={duration:.3f},'
        f'X-TRACK-ID="{_quoted(marker.track)}",X-TITLE="{_quoted(marker.title)}"'
    )


def media_playlist(
    plan: SegmentPlan,
    listed: int,
    *,
    complete: bool,
    live: bool,
    lead: int = 0,
    markers: Sequence[Marker] = (),
) -> str:
    """The media playlist listing the first `listed` segments (`lead`: see `extinf_values`).

    live=True: the live-then-VOD `index.m3u8` (EVENT, blocking reload while
    incomplete, ENDLIST once complete). live=False: `vod.m3u8`, every
    segment from the start. markers: a queue's track starts, each tagged
    before the segment it starts in (so a live playlist only appends them).
    """
    durations = extinf_values(plan, lead)
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{VERSION}",
        f"#EXT-X-TARGETDURATION:{target_duration(plan, lead)}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:" + ("EVENT" if live else "VOD"),
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    if live:
        lines.append("#EXT-X-START:TIME-OFFSET=0")
        # Kept after completion too: RFC 8216 §6.2.1 lets only ENDLIST be added.
        lines.append("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES")
    lines.append('#EXT-X-MAP:URI="init.mp4"')
    if markers:
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_date(0)}")
    starting: dict[int, list[int]] = {}
    for number, marker in enumerate(markers):
        starting.setdefault(plan.index_at(marker.start), []).append(number)
    count = len(plan) if not live else listed
    for index in range(count):
        for number in starting.get(index, ()):
            lines.append(daterange(number, markers[number], plan.rate, lead))
        lines.append(f"#EXTINF:{durations[index]},")
        lines.append(f"{index}.m4s")
    if complete or not live:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"
