"""Fragmented MP4 (CMAF) box writer for audio: init segments and media fragments.

Pure functions, bytes out. One init segment per (rendition, rate, channels),
written from fixed fields only, so every process serves the same bytes
(ffmpeg's per-run init segments differ in bitrate fields and FLAC totals).
Media fragments carry `tfdt` = the exact global sample position (timescale =
sample rate), so players place each segment on the one timeline (SPEC §6).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from processing.renditions import FLAC_BITS, FLAC_BLOCK_SAMPLES, Packet, Rendition

TRACK_ID = 1
_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
# ISO/IEC 14496-3 sampling_frequency_index
_AAC_RATE_INDEX = {
    96000: 0, 88200: 1, 64000: 2, 48000: 3, 44100: 4, 32000: 5,
    24000: 6, 22050: 7, 16000: 8, 12000: 9, 11025: 10, 8000: 11,
}  # fmt: skip


def box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I", 8 + len(body)) + kind + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


def _descriptor(tag: int, payload: bytes) -> bytes:
    size = len(payload)
    # Four-byte expandable size, the form most muxers write.
    encoded = bytes(
        [
            0x80 | (size >> 21) & 0x7F,
            0x80 | (size >> 14) & 0x7F,
            0x80 | (size >> 7) & 0x7F,
            size & 0x7F,
        ]
    )
    return bytes([tag]) + encoded + payload


def audio_specific_config(rate: int, channels: int) -> bytes:
    """AAC-LC AudioSpecificConfig: object type 2, rate index, channel configuration."""
    index = _AAC_RATE_INDEX[rate]
    return struct.pack(">H", (2 << 11) | (index << 7) | (channels << 3))


def _esds(rate: int, channels: int, bitrate: int) -> bytes:
    decoder_config = _descriptor(
        0x04,
        bytes([0x40, 0x15])  # MPEG-4 audio, audio stream
        + (6144 * channels // 8).to_bytes(3, "big")  # buffer size in bytes
        + struct.pack(">II", bitrate, bitrate)
        + _descriptor(0x05, audio_specific_config(rate, channels)),
    )
    es = _descriptor(
        0x03, struct.pack(">HB", TRACK_ID, 0) + decoder_config + _descriptor(0x06, b"\x02")
    )
    return full_box(b"esds", 0, 0, es)


def flac_streaminfo(rate: int, channels: int) -> bytes:
    """34-byte STREAMINFO with only fixed fields (no totals, no MD5)."""
    packed = (rate << 44) | ((channels - 1) << 41) | ((FLAC_BITS - 1) << 36)
    return (
        struct.pack(">HH", 16, FLAC_BLOCK_SAMPLES)
        + b"\x00" * 6
        + packed.to_bytes(8, "big")
        + b"\x00" * 16
    )


def _dfla(rate: int, channels: int) -> bytes:
    block_header = bytes([0x80, 0, 0, 34])  # last metadata block, STREAMINFO, 34 bytes
    return full_box(b"dfLa", 0, 0, block_header + flac_streaminfo(rate, channels))


def _sample_entry(rendition: Rendition, rate: int, channels: int) -> bytes:
    bits = FLAC_BITS if rendition.codec == "flac" else 16
    fields = (
        b"\x00" * 6 + struct.pack(">H", 1)  # reserved, data_reference_index
        + b"\x00" * 8  # reserved (version, revision, vendor)
        + struct.pack(">HHHHI", channels, bits, 0, 0, rate << 16 if rate < 65536 else 0)
    )  # fmt: skip
    if rendition.codec == "flac":
        return box(b"fLaC", fields, _dfla(rate, channels))
    return box(b"mp4a", fields, _esds(rate, channels, rendition.nominal_bitrate(channels)))


def init_segment(rendition: Rendition, rate: int, channels: int) -> bytes:
    """ftyp + moov for one audio track; timescale = sample rate."""
    ftyp = box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6cmfcmp41dash")
    mvhd = full_box(
        b"mvhd", 0, 0,
        struct.pack(">IIII", 0, 0, rate, 0), struct.pack(">IH", 0x10000, 0x100), b"\x00" * 10,
        _MATRIX, b"\x00" * 24, struct.pack(">I", TRACK_ID + 1),
    )  # fmt: skip
    tkhd = full_box(
        b"tkhd", 0, 3,
        struct.pack(">IIIII", 0, 0, TRACK_ID, 0, 0), b"\x00" * 8,
        struct.pack(">HHHH", 0, 0, 0x100, 0), _MATRIX, struct.pack(">II", 0, 0),
    )  # fmt: skip
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, rate, 0, 0x55C4, 0))  # 'und'
    hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I", 0), b"soun", b"\x00" * 12, b"SoundHandler\x00")
    smhd = full_box(b"smhd", 0, 0, struct.pack(">HH", 0, 0))
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    stsd = full_box(b"stsd", 0, 0, struct.pack(">I", 1), _sample_entry(rendition, rate, channels))
    empty = struct.pack(">I", 0)
    stbl = box(
        b"stbl", stsd, full_box(b"stts", 0, 0, empty), full_box(b"stsc", 0, 0, empty),
        full_box(b"stsz", 0, 0, empty, empty), full_box(b"stco", 0, 0, empty),
    )  # fmt: skip
    mdia = box(b"mdia", mdhd, hdlr, box(b"minf", smhd, dinf, stbl))
    trex = full_box(b"trex", 0, 0, struct.pack(">IIIII", TRACK_ID, 1, 0, 0, 0))
    moov = box(b"moov", mvhd, box(b"trak", tkhd, mdia), box(b"mvex", trex))
    return ftyp + moov


def media_segment(sequence: int, base_decode_time: int, packets: Sequence[Packet]) -> bytes:
    """styp + moof (mfhd, traf: tfhd, tfdt, trun) + mdat for one fragment.

    sequence: mfhd sequence number (segment index + 1). base_decode_time:
    tfdt in samples. Every audio sample is a sync sample.
    """
    if not packets:
        raise ValueError("a media segment needs at least one packet")
    styp = box(b"styp", b"msdh", struct.pack(">I", 0), b"msdhmsix")
    mfhd = full_box(b"mfhd", 0, 0, struct.pack(">I", sequence))
    tfhd = full_box(b"tfhd", 0, 0x020000, struct.pack(">I", TRACK_ID))  # default-base-is-moof
    tfdt = full_box(b"tfdt", 1, 0, struct.pack(">Q", base_decode_time))
    samples = b"".join(struct.pack(">II", p.samples, len(p.data)) for p in packets)
    trun_size = 8 + 4 + 8 + len(samples)
    moof_size = 8 + len(mfhd) + 8 + len(tfhd) + len(tfdt) + trun_size
    # flags: data-offset, sample-duration and sample-size present
    trun = full_box(b"trun", 0, 0x000301, struct.pack(">Ii", len(packets), moof_size + 8), samples)
    moof = box(b"moof", mfhd, box(b"traf", tfhd, tfdt, trun))
    assert len(moof) == moof_size
    mdat = box(b"mdat", *(p.data for p in packets))
    return styp + moof + mdat
