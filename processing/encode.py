"""Encoding PCM with ffmpeg (argv built by ffmpeg-python) into codec packets.

The encoders return raw access units (AAC frames without ADTS headers, FLAC
frames without the stream header) so that the fMP4 writer can package them
with exact timestamps (SPEC §6).
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import IO

import ffmpeg
import numpy as np

from processing.errors import EncodeError
from processing.plan import FRAME_SAMPLES
from processing.renditions import FLAC_BITS, FLAC_BLOCK_SAMPLES, RENDITIONS, Packet, Rendition

__all__ = ["FLAC_BITS", "FLAC_BLOCK_SAMPLES", "RENDITIONS", "Packet", "Rendition"]

ENCODE_TIMEOUT_SECONDS = 300


class Encoder:
    """An ffmpeg process started before its input is ready.

    Starting ffmpeg costs ~50 ms; starting it first lets that overlap with
    decoding and DSP. `finish` feeds the input, block by block while a
    thread collects the output, and returns the output.
    """

    def __init__(self, argv: list[str], what: str) -> None:
        self.what = what
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except OSError as exc:
            raise EncodeError(f"{what} could not start ({exc})") from exc

    def finish(
        self,
        blocks: Iterable[bytes | memoryview],
        on_output: Callable[[bytes], None] | None = None,
    ) -> bytes:
        """Write every block to ffmpeg's input, close it and return ffmpeg's output.

        A block is made only when the pipe takes it, so a long input never
        exists whole in memory. An error while making the blocks stops ffmpeg.
        on_output: called (on a reader thread) with each piece of output as
        it arrives, instead of returning it; an error it raises is raised
        here, once ffmpeg is done.
        """
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr
        output: list[bytes] = []
        errors: list[bytes] = []
        failures: list[BaseException] = []
        # Both outputs are read while the input is written (as communicate()
        # does), so that no full pipe can stop ffmpeg.
        readers = [
            threading.Thread(target=_read_all, args=(pipe, into, watch, failures), daemon=True)
            for pipe, into, watch in (
                (self.proc.stdout, output, on_output),
                (self.proc.stderr, errors, None),
            )
        ]
        for reader in readers:
            reader.start()
        try:
            for block in blocks:
                self.proc.stdin.write(block)
            self.proc.stdin.close()
        except BrokenPipeError:
            pass  # ffmpeg stopped reading: its exit code and stderr tell why
        except BaseException:
            self.proc.kill()
            for reader in readers:
                reader.join()
            self.abort()
            raise
        for reader in readers:
            reader.join(ENCODE_TIMEOUT_SECONDS)
        if any(reader.is_alive() for reader in readers):
            self.proc.kill()
            for reader in readers:
                reader.join()
            self.abort()
            raise EncodeError(f"{self.what} timed out")
        if self.proc.wait() != 0:
            err = errors[0] if errors else b""
            raise EncodeError(f"{self.what} failed with exit code {self.proc.returncode}", err)
        if failures:
            raise failures[0]
        return output[0]

    def abort(self) -> None:
        """Stop a process whose input will never come (the caller failed first); idempotent."""
        if self.proc.poll() is None:
            self.proc.kill()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None and not pipe.closed:
                try:
                    pipe.close()
                except BrokenPipeError:
                    pass
        self.proc.wait()


def _read_all(
    pipe: IO[bytes],
    into: list[bytes],
    on_output: Callable[[bytes], None] | None,
    failures: list[BaseException],
) -> None:
    """Read `pipe` to its end into `into`, or hand each piece to on_output as it comes.

    The pipe is drained even after on_output fails, so that ffmpeg never
    blocks on it; the failure is kept for the caller.
    """
    if on_output is None:
        into.append(pipe.read())
        return
    while piece := pipe.read1(1 << 16):  # type: ignore[attr-defined]
        if not failures:
            try:
                on_output(piece)
            except BaseException as exc:  # raised by finish(), in the caller's thread
                failures.append(exc)
    into.append(b"")


def _counted(blocks: Iterable[np.ndarray], dtype: str, count: list[int]) -> Iterator[memoryview]:
    """Each (n, channels) block as raw bytes of `dtype`; adds the samples seen to count[0]."""
    for block in blocks:
        count[0] += len(block)
        yield np.ascontiguousarray(block, dtype=dtype).data.cast("B")  # a view when it can


def aac_argv(rate: int, channels: int, bitrate: int) -> list[str]:
    stream = ffmpeg.input("pipe:0", format="f32le", ar=rate, ac=channels)
    stream = ffmpeg.output(
        stream, "pipe:1", format="adts", acodec="aac", audio_bitrate=bitrate, threads=1
    )
    return ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", *ffmpeg.get_args(stream)]


def encode_aac(
    pcm: np.ndarray | Iterable[np.ndarray],
    rate: int,
    bitrate: int,
    encoder: Encoder | None = None,
    channels: int | None = None,
    on_packets: Callable[[list[Packet]], None] | None = None,
) -> list[Packet]:
    """AAC-LC packets of (n, channels) float32 PCM (or its successive blocks), priming first.

    ffmpeg's native encoder yields ceil(n / 1024) + 1 packets: packet j is the
    MDCT of input [(j-1)·1024, (j+1)·1024) and decodes to [(j-1)·1024, j·1024).
    `encoder`: an ffmpeg already started with `aac_argv` for this input.
    on_packets: called (on a reader thread) with the packets so far, each
    time more arrive, while the input is still being encoded.
    """
    if isinstance(pcm, np.ndarray):
        channels, pcm = pcm.shape[1], [pcm]
    if encoder is None:
        assert channels is not None, "blocks need the channel count"
        encoder = Encoder(aac_argv(rate, channels, bitrate), "AAC encoding")
    count = [0]
    splitter = AdtsSplitter()
    packets: list[Packet] = []

    def arrived(data: bytes) -> None:
        new = splitter.feed(data)
        if new:
            packets.extend(Packet(p, FRAME_SAMPLES) for p in new)
            if on_packets is not None:
                on_packets(packets)

    encoder.finish(_counted(pcm, "<f4", count), on_output=arrived)
    splitter.close()
    expected = -(-count[0] // FRAME_SAMPLES) + 1
    if len(packets) != expected:
        raise EncodeError(f"AAC encoder gave {len(packets)} packets, expected {expected}")
    return packets


class AdtsSplitter:
    """Raw AAC payloads of an ADTS stream (7-byte header, 9 with CRC), as it arrives."""

    def __init__(self) -> None:
        self._pending = b""
        self._offset = 0  # stream position of _pending[0], for messages

    def feed(self, data: bytes) -> list[bytes]:
        """The payloads of the frames completed by `data`."""
        buf = self._pending + data
        out = []
        pos = 0
        while pos + 7 <= len(buf):
            if buf[pos] != 0xFF or (buf[pos + 1] & 0xF0) != 0xF0:
                raise EncodeError(f"ADTS sync lost at byte {self._offset + pos}")
            header = 7 if buf[pos + 1] & 0x01 else 9  # protection_absent = 1: no CRC
            size = ((buf[pos + 3] & 0x03) << 11) | (buf[pos + 4] << 3) | (buf[pos + 5] >> 5)
            if size < header:
                raise EncodeError(f"ADTS frame at byte {self._offset + pos} is truncated")
            if pos + size > len(buf):
                break  # the rest of the frame is still to come
            out.append(buf[pos + header : pos + size])
            pos += size
        self._pending = buf[pos:]
        self._offset += pos
        return out

    def close(self) -> None:
        """Check that the stream ended on a frame boundary."""
        if self._pending:
            raise EncodeError(f"ADTS stream ends inside a frame at byte {self._offset}")


def split_adts(data: bytes) -> list[bytes]:
    """Raw AAC payloads of a whole ADTS stream."""
    splitter = AdtsSplitter()
    out = splitter.feed(data)
    splitter.close()
    return out


def to_pcm24(audio: np.ndarray) -> np.ndarray:
    """Quantize float PCM to 24 bits, left-aligned in int32 (value << 8).

    The one rounding used by both the FLAC rendition and `hls-origin render`,
    so that they agree sample for sample.
    """
    scaled = np.rint(np.clip(audio.astype(np.float64), -1.0, 1.0) * (1 << 23))
    return np.clip(scaled, -(1 << 23), (1 << 23) - 1).astype(np.int32) << 8


def flac_argv(rate: int, channels: int) -> list[str]:
    stream = ffmpeg.input("pipe:0", format="s32le", ar=rate, ac=channels)
    stream = ffmpeg.output(
        stream,
        "pipe:1",
        format="flac",
        acodec="flac",
        bits_per_raw_sample=FLAC_BITS,
        frame_size=FLAC_BLOCK_SAMPLES,
        compression_level=5,
        threads=1,
    )
    return ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", *ffmpeg.get_args(stream)]


def encode_flac(
    pcm24: np.ndarray | Iterable[np.ndarray],
    rate: int,
    encoder: Encoder | None = None,
    channels: int | None = None,
) -> list[Packet]:
    """FLAC frames of (n, channels) int32 PCM from `to_pcm24` (or its blocks), 4096 samples each.

    `encoder`: an ffmpeg already started with `flac_argv` for this input.
    """
    if isinstance(pcm24, np.ndarray):
        channels, pcm24 = pcm24.shape[1], [pcm24]
    if encoder is None:
        assert channels is not None, "blocks need the channel count"
        encoder = Encoder(flac_argv(rate, channels), "FLAC encoding")
    count = [0]
    data = encoder.finish(_counted(pcm24, "<i4", count))
    frames_count = -(-count[0] // FLAC_BLOCK_SAMPLES)
    frames = split_flac(data, frames_count)
    last = count[0] - FLAC_BLOCK_SAMPLES * (frames_count - 1)
    sizes = [FLAC_BLOCK_SAMPLES] * (frames_count - 1) + [last]
    return [Packet(f, n) for f, n in zip(frames, sizes, strict=True)]


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _flac_frame_number(data: bytes, pos: int) -> tuple[int, int] | None:
    """(frame number, header length) if a valid fixed-blocksize header starts at pos."""
    if pos + 6 > len(data) or data[pos] != 0xFF or data[pos + 1] != 0xF8:
        return None
    block_code, rate_code = data[pos + 2] >> 4, data[pos + 2] & 0x0F
    first = data[pos + 4]
    extra = 0
    while extra < 6 and first & (0x80 >> extra):
        extra += 1
    if extra == 1 or extra > 6:
        return None
    number = first & (0x7F >> extra) if extra else first
    cursor = pos + 5
    for _ in range(max(extra - 1, 0)):
        if cursor >= len(data) or data[cursor] & 0xC0 != 0x80:
            return None
        number = (number << 6) | (data[cursor] & 0x3F)
        cursor += 1
    cursor += {6: 1, 7: 2}.get(block_code, 0) + {12: 1, 13: 2, 14: 2}.get(rate_code, 0)
    if cursor >= len(data) or _crc8(data[pos:cursor]) != data[cursor]:
        return None
    return number, cursor + 1 - pos


def split_flac(data: bytes, count: int) -> list[bytes]:
    """The `count` frames of a FLAC stream, found by header CRC and frame number."""
    if data[:4] != b"fLaC":
        raise EncodeError("FLAC stream has no fLaC marker")
    pos, last = 4, False
    while not last:
        if pos + 4 > len(data):
            raise EncodeError("FLAC metadata is truncated")
        last = bool(data[pos] & 0x80)
        pos += 4 + int.from_bytes(data[pos + 1 : pos + 4], "big")
    starts = [pos]
    for number in range(1, count):
        probe = data.find(b"\xff\xf8", starts[-1] + 2)
        while probe != -1:
            header = _flac_frame_number(data, probe)
            if header is not None and header[0] == number:
                break
            probe = data.find(b"\xff\xf8", probe + 1)
        if probe == -1:
            raise EncodeError(f"FLAC frame {number} of {count} not found")
        starts.append(probe)
    if _flac_frame_number(data, starts[0]) is None:
        raise EncodeError("FLAC stream does not start with a frame")
    ends = starts[1:] + [len(data)]
    return [data[a:b] for a, b in zip(starts, ends, strict=True)]
