"""The renditions of a stream and their access units (no numpy: the server imports this)."""

from __future__ import annotations

from dataclasses import dataclass

FLAC_BLOCK_SAMPLES = 4096
FLAC_BITS = 24
# AAC segments are encoded two at a time (after the ramp, before the track's
# last few: `plan.TAIL_SINGLE_SEGMENTS`): one ffmpeg start
# (~50 ms of CPU) and one 3 s pre-roll per pair instead of per segment took
# a 7-minute track from 5.9 to 5.4 s (about 0.06 of the peer's time,
# benchmarks/peer.py); a cold request for either segment of a pair waits
# for both.
AAC_SEGMENTS_PER_ENCODE = 2
AAC_PRIMING_SAMPLES = 1024  # one frame: ffmpeg's encoder's priming packet (SPEC §6)


@dataclass(frozen=True)
class Rendition:
    """One encoding of the stream, listed as one variant of the master playlist."""

    name: str
    codec: str  # "aac" or "flac"
    bitrate: int  # nominal bits per second for stereo (AAC target, FLAC estimate)
    codec_string: str  # RFC 6381, for CODECS=

    @property
    def segments_per_encode(self) -> int:
        """Segments per encode unit (`SegmentPlan.encode_units`): FLAC frames need no pre-roll."""
        return AAC_SEGMENTS_PER_ENCODE if self.codec == "aac" else 1

    @property
    def lead_samples(self) -> int:
        """Samples the decoded media runs ahead of the source: AAC's priming packet,
        kept in segment 0 (the tfdt of every later segment counts it)."""
        return AAC_PRIMING_SAMPLES if self.codec == "aac" else 0

    def nominal_bitrate(self, channels: int) -> int:
        return self.bitrate if channels >= 2 else self.bitrate // 2


RENDITIONS: dict[str, Rendition] = {
    "aac": Rendition("aac", "aac", 256_000, "mp4a.40.2"),
    "aac-lo": Rendition("aac-lo", "aac", 128_000, "mp4a.40.2"),
    "flac": Rendition("flac", "flac", 1_500_000, "fLaC"),
}


@dataclass(frozen=True)
class Packet:
    """One access unit and the number of samples it decodes to."""

    data: bytes
    samples: int
