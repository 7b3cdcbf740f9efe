"""The renditions of a stream and their access units (no numpy: the server imports this)."""

from __future__ import annotations

from dataclasses import dataclass

FLAC_BLOCK_SAMPLES = 4096
FLAC_BITS = 24
# AAC segments are encoded two at a time (after the ramp, before the track's
# last few: `plan.TAIL_SINGLE_SEGMENTS`): one ffmpeg start
# (~50 ms of CPU) and one pre-roll (then 3 s) per pair instead of per segment took
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
    bitrate: int  # nominal bits per second for stereo (what AAC's quality gives on music)
    codec_string: str  # RFC 6381, for CODECS=
    quality: float | None = None  # AAC: the encoder's constant quality (`aac_argv`)

    @property
    def segments_per_encode(self) -> int:
        """Segments per encode unit (`SegmentPlan.encode_units`): FLAC frames need no pre-roll."""
        return AAC_SEGMENTS_PER_ENCODE if self.codec == "aac" else 1

    @property
    def lead_samples(self) -> int:
        """Samples the decoded media runs ahead of the source: AAC's priming packet,
        kept in segment 0 (the tfdt of every later segment counts it)."""
        return AAC_PRIMING_SAMPLES if self.codec == "aac" else 0

    @property
    def aac_quality(self) -> float:
        """The AAC encoder's constant quality for this rendition."""
        if self.quality is None:
            raise ValueError(f"{self.name} is not an AAC rendition")
        return self.quality

    def nominal_bitrate(self, channels: int) -> int:
        return self.bitrate if channels >= 2 else self.bitrate // 2


# AAC is encoded at constant quality (`-q:a`), not at a target bit rate: the
# encoder then keeps almost no state, so a segment's encode matches a
# continuous one after a short pre-roll (`render.PREROLL_FRAMES`), and it is
# ~10% cheaper. Measured on the five tracks of ../shared/music, whole tracks:
# q 1.8 gives 235-268 kb/s (`-b:a 256k` gave 253-267), q 0.85 gives 120-138
# (`-b:a 128k` 131-136); sparse or quiet music gets fewer bits.
RENDITIONS: dict[str, Rendition] = {
    "aac": Rendition("aac", "aac", 256_000, "mp4a.40.2", quality=1.8),
    "aac-lo": Rendition("aac-lo", "aac", 128_000, "mp4a.40.2", quality=0.85),
    "flac": Rendition("flac", "flac", 1_500_000, "fLaC"),
}


@dataclass(frozen=True)
class Packet:
    """One access unit and the number of samples it decodes to."""

    data: bytes
    samples: int
