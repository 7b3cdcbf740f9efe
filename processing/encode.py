"""Encoding PCM with ffmpeg (argv built by ffmpeg-python) into codec packets.

The encoders return raw access units (AAC frames without ADTS headers, FLAC
frames without the stream header) so that the fMP4 writer can package them
with exact timestamps (SPEC §6).
"""

from __future__ import annotations

import fcntl
import itertools
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from typing import IO

import ffmpeg
import numpy as np

from processing.errors import EncodeError
from processing.plan import FRAME_SAMPLES
from processing.renditions import FLAC_BITS, FLAC_BLOCK_SAMPLES, RENDITIONS, Packet, Rendition

__all__ = ["FLAC_BITS", "FLAC_BLOCK_SAMPLES", "RENDITIONS", "Packet", "Rendition"]

ENCODE_TIMEOUT_SECONDS = 300
# An output read in pieces pauses this long after each one: ffmpeg writes each
# packet as it is made (flush_packets), and waking for every one cost the
# reader thread ~12 µs of Python and a switch of the GIL per packet. With a
# 10 ms pause a read takes ~25 packets: the workers' Python costs 0.1 CPU-s
# less per 7-minute track than with 2 ms (1.53 against 1.65, measured), and
# 0.15-0.3 CPU-s less than without. A listener sees an early segment at most
# 10 ms later; once the input is closed the readers stop pausing, so the
# last packets are read as soon as ffmpeg writes them.
READ_PAUSE_SECONDS = 0.01


class Encoder:
    """An ffmpeg process started before its input is ready, with one output or several.

    Starting ffmpeg costs ~50 ms; starting it first lets that overlap with
    decoding and DSP. `argv_for` builds the command line for the output
    URLs it is given (pipes to this process). The input is written block by
    block (`write`) while threads collect each output (`read`), and
    `finish` closes the input and returns what was not handed to a callback.
    """

    def __init__(
        self,
        argv_for: Callable[[list[str]], list[str]],
        what: str,
        outputs: int = 1,
        input_buffer: int | None = None,
    ) -> None:
        """input_buffer: bytes the input pipe may hold (Linux; the system's default,
        64 KiB, where it cannot be set)."""
        self.what = what
        pipes = [os.pipe() for _ in range(outputs)]
        try:
            self.proc = subprocess.Popen(
                argv_for([f"pipe:{w}" for _, w in pipes]),
                stdin=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=[w for _, w in pipes],
            )
        except OSError as exc:
            for r, _ in pipes:
                os.close(r)
            raise EncodeError(f"{what} could not start ({exc})") from exc
        finally:
            for _, w in pipes:
                os.close(w)
        self.outputs: list[IO[bytes]] = [os.fdopen(r, "rb") for r, _ in pipes]
        if input_buffer is not None and hasattr(fcntl, "F_SETPIPE_SZ"):
            assert self.proc.stdin is not None
            try:  # capped by /proc/sys/fs/pipe-max-size (1 MiB by default) unless privileged
                fcntl.fcntl(self.proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, input_buffer)
            except OSError:
                pass
        self._collected: list[list[bytes]] = [[] for _ in pipes]
        self._errors: list[bytes] = []
        self._failures: list[BaseException] = []
        self._readers: list[threading.Thread] = []
        self._closing = threading.Event()  # no more input: readers stop pausing

    def read(self, on_output: Sequence[Callable[[bytes], None] | None] | None = None) -> None:
        """Start reading every output (and stderr), so that no full pipe can stop ffmpeg.

        on_output[i]: called (on a reader thread) with each piece of output i
        as it arrives, instead of collecting it; an error it raises is raised
        by `finish`.
        """
        assert self.proc.stderr is not None
        calls = list(on_output) if on_output is not None else [None] * len(self.outputs)
        targets = [*zip(self.outputs, self._collected, calls, strict=True)]
        targets.append((self.proc.stderr, self._errors, None))
        self._readers = [
            threading.Thread(
                target=_read_all, args=(*target, self._failures, self._closing), daemon=True
            )
            for target in targets
        ]
        for reader in self._readers:
            reader.start()

    def write(self, blocks: Iterable[bytes | memoryview]) -> None:
        """Write blocks to ffmpeg's input; a block is made only when the pipe takes it,
        so a long input never exists whole in memory. An error while making the
        blocks stops ffmpeg."""
        assert self.proc.stdin is not None
        try:
            for block in blocks:
                self.proc.stdin.write(block)
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # ffmpeg stopped reading: its exit code and stderr tell why (finish)
        except BaseException:
            self.abort()
            raise

    def finish(self) -> list[bytes]:
        """Close the input, wait for ffmpeg and return each output (b"" when handed on)."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        self._closing.set()
        for reader in self._readers:
            reader.join(ENCODE_TIMEOUT_SECONDS)
        if any(reader.is_alive() for reader in self._readers):
            self.abort()
            raise EncodeError(f"{self.what} timed out")
        if self.proc.wait() != 0:
            err = self._errors[0] if self._errors else b""
            raise EncodeError(f"{self.what} failed with exit code {self.proc.returncode}", err)
        if self._failures:
            raise self._failures[0]
        return [b"".join(parts) for parts in self._collected]

    def run(
        self,
        blocks: Iterable[bytes | memoryview],
        on_output: Callable[[bytes], None] | None = None,
    ) -> bytes:
        """Encode all of `blocks` through a one-output ffmpeg; returns its output
        (b"" when each piece is handed to on_output instead)."""
        self.read([on_output])
        self.write(blocks)
        return self.finish()[0]

    def abort(self) -> None:
        """Stop a process whose input will never come (the caller failed first); idempotent."""
        if self.proc.poll() is None:
            self.proc.kill()
        self._closing.set()
        for reader in self._readers:
            reader.join()
        for pipe in (self.proc.stdin, self.proc.stderr, *self.outputs):
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
    closing: threading.Event,
) -> None:
    """Read `pipe` to its end into `into`, or hand each piece to on_output as it comes.

    The pipe is drained even after on_output fails, so that ffmpeg never
    blocks on it; the failure is kept for the caller. Between pieces it
    pauses (READ_PAUSE_SECONDS) until `closing` is set.
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
        closing.wait(READ_PAUSE_SECONDS)  # let more packets gather (one wake-up for several)


def _counted(blocks: Iterable[np.ndarray], dtype: str, count: list[int]) -> Iterator[memoryview]:
    """Each (n, channels) block as raw bytes of `dtype`; adds the samples seen to count[0]."""
    for block in blocks:
        count[0] += len(block)
        yield np.ascontiguousarray(block, dtype=dtype).data.cast("B")  # a view when it can


def aac_argv(
    rate: int,
    channels: int,
    quality: float,
    outputs: Sequence[str] = ("pipe:1",),
    cuts: Sequence[int] = (),
) -> list[str]:
    """ffmpeg's native AAC encoder at constant `quality` (`-q:a`): f32le PCM on
    stdin, ADTS out.

    cuts: input sample positions (ascending) where the input is cut
    (asegment) into pieces, piece i encoded to outputs[i] by an encoder of
    its own, as if alone (tested: the same bytes as one ffmpeg each).
    """
    # The smallest probe: ffmpeg reads ~400 kB of input before encoding otherwise,
    # and a short input of a shared encoder would wait for the next one.
    stream = ffmpeg.input("pipe:0", format="f32le", ar=rate, ac=channels, probesize=32)
    if cuts:
        node = stream.filter_multi_output("asegment", samples="|".join(map(str, cuts)))
        pieces = [node.stream(i) for i in range(len(cuts) + 1)]
    else:
        pieces = [stream]
    if len(pieces) != len(outputs):
        raise ValueError(f"{len(pieces)} pieces for {len(outputs)} outputs")
    encodes = [
        ffmpeg.output(
            piece,
            url,
            format="adts",
            acodec="aac",
            **{"q:a": quality},
            threads=1,
            flush_packets=1,  # each packet as soon as it is made (a listener may wait for it)
        )  # fmt: skip
        for piece, url in zip(pieces, outputs, strict=True)
    ]
    return [
        "ffmpeg", "-nostdin", "-hide_banner", "-v", "error",
        *ffmpeg.get_args(ffmpeg.merge_outputs(*encodes)),
    ]  # fmt: skip


def aac_packet_count(samples: int) -> int:
    """Packets ffmpeg's native encoder yields for `samples` of input: ceil(n / 1024) + 1.

    Packet j is the MDCT of input [(j-1)·1024, (j+1)·1024) and decodes to
    [(j-1)·1024, j·1024); packet 0 is the priming packet.
    """
    return -(-samples // FRAME_SAMPLES) + 1


def encode_aac(
    pcm: np.ndarray | Iterable[np.ndarray],
    rate: int,
    quality: float,
    channels: int | None = None,
) -> list[Packet]:
    """AAC-LC packets of (n, channels) float32 PCM (or its successive blocks), priming
    first (`aac_packet_count`)."""
    if isinstance(pcm, np.ndarray):
        channels, pcm = pcm.shape[1], [pcm]
    assert channels is not None, "blocks need the channel count"
    count = [0]
    data = Encoder(partial(aac_argv, rate, channels, quality), "AAC encoding").run(
        _counted(pcm, "<f4", count)
    )
    packets = [Packet(p, FRAME_SAMPLES) for p in split_adts(data)]
    if len(packets) != aac_packet_count(count[0]):
        raise EncodeError(
            f"AAC encoder gave {len(packets)} packets, expected {aac_packet_count(count[0])}"
        )
    return packets


class AacEncodes:
    """Independent AAC encodes of successive inputs through one ffmpeg: one start-up
    (~50 ms of CPU, measured) for all of them.

    Input i, of lengths[i] samples, is encoded as if alone (`aac_argv` cuts).
    Every input but the last must be whole frames: then each packet but the
    last two (`HELD_BACK`, which the encoder makes only when its input
    ends, at the end of the process) is out as soon as the input is
    written, and `encode` returns them without waiting for the next input.
    """

    HELD_BACK = 2

    def __init__(
        self,
        rate: int,
        channels: int,
        quality: float,
        lengths: Sequence[int],
        input_buffer: int | None = None,
    ) -> None:
        if any(n % FRAME_SAMPLES for n in lengths[:-1]) or not lengths:
            raise ValueError("every input but the last must be whole frames")
        self.lengths = list(lengths)
        cuts = list(itertools.accumulate(lengths))[:-1]
        argv_for = partial(aac_argv, rate, channels, quality, cuts=cuts)
        self.encoder = Encoder(argv_for, "AAC encoding", len(lengths), input_buffer)
        self.packets: list[list[Packet]] = [[] for _ in lengths]  # until handed over
        self._counts = [0] * len(lengths)
        self._handed: list[bool] = [False] * len(lengths)
        self._splitters = [AdtsSplitter() for _ in lengths]
        self._listeners: list[Callable[[list[Packet]], None] | None] = [None] * len(lengths)
        self._arrived = threading.Condition()
        self._next = 0
        self.encoder.read([partial(self._arrive, i) for i in range(len(lengths))])

    def _arrive(self, i: int, data: bytes) -> None:
        new = self._splitters[i].feed(data)
        if not new:
            return
        with self._arrived:  # the listener too: `encode` returns only after it is done
            self._counts[i] += len(new)
            if not self._handed[i]:  # else only counted: the held-back packets nobody keeps
                self.packets[i].extend(Packet(p, FRAME_SAMPLES) for p in new)
                listener = self._listeners[i]
                if listener is not None:
                    listener(self.packets[i])
            self._arrived.notify_all()

    def encode(
        self,
        blocks: Iterable[np.ndarray],
        on_packets: Callable[[list[Packet]], None] | None = None,
    ) -> list[Packet]:
        """Encode the next input (its (n, channels) float32 blocks): its packets, all
        but the last `HELD_BACK` unless it is the last input (then all of them).

        on_packets: called (on a reader thread) with the input's packets so
        far each time more arrive.
        """
        i, self._next = self._next, self._next + 1
        self._listeners[i] = on_packets
        count = [0]
        self.encoder.write(_counted(blocks, "<f4", count))
        if count[0] != self.lengths[i]:  # ffmpeg stopped reading (its error first), or a bug
            self._finish()
            raise EncodeError(f"AAC input {i} has {count[0]} samples, declared {self.lengths[i]}")
        if i + 1 == len(self.lengths):
            self._finish()
            return self.packets[i]
        expected = aac_packet_count(self.lengths[i]) - self.HELD_BACK
        deadline = time.monotonic() + ENCODE_TIMEOUT_SECONDS
        with self._arrived:
            while len(self.packets[i]) < expected:
                if self.encoder.proc.poll() is not None or time.monotonic() > deadline:
                    break
                self._arrived.wait(0.1)
            packets, self.packets[i], self._handed[i] = self.packets[i], [], True
        if len(packets) < expected:
            self._finish()  # raises what went wrong
            raise EncodeError(f"AAC input {i}: {len(packets)} packets out, expected {expected}")
        return packets

    def _finish(self) -> None:
        self.encoder.finish()
        for i, (splitter, length) in enumerate(zip(self._splitters, self.lengths, strict=True)):
            splitter.close()
            if self._counts[i] != aac_packet_count(length):
                raise EncodeError(
                    f"AAC encoder gave {self._counts[i]} packets for input {i},"
                    f" expected {aac_packet_count(length)}"
                )

    def abort(self) -> None:
        """Stop ffmpeg (the inputs not written yet will not come); idempotent."""
        self.encoder.abort()


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


def flac_argv(rate: int, channels: int, outputs: Sequence[str] = ("pipe:1",)) -> list[str]:
    (url,) = outputs
    stream = ffmpeg.input("pipe:0", format="s32le", ar=rate, ac=channels)
    stream = ffmpeg.output(
        stream,
        url,
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
        encoder = Encoder(partial(flac_argv, rate, channels), "FLAC encoding")
    count = [0]
    data = encoder.run(_counted(pcm24, "<i4", count))
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
