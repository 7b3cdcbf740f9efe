"""Real HLS clients against a real origin: the conformance matrix (issue 14).

Each cell is one client playing one playlist of a stream nobody has asked
for yet (a preset and intensity of its own), from a cold cache:

- GStreamer: `uridecodebin3` (hlsdemux2) and `uridecodebin` (hlsdemux), into a
  file sink that syncs to the clock, so the play is in real time and its
  decoded PCM is kept;
- ffmpeg's HLS demuxer (as fast as it reads: no real-time figure);
- hls.js, Shaka Player and video.js http-streaming in the system Chromium,
  several cells at once in one page (their MSE `buffered` ranges stand for
  the decoded timeline: the page cannot read the decoded samples back).

What a cell measures (`Cell`): the decoded length against the expected one
(the source plus the rendition's lead, AAC frames whole), the lag of the
decoded audio against the stream's own FLAC rendition in every segment (0
everywhere: no sample lost or repeated at any seam, whatever variant was
played), and for real-time clients the stall: wall time of the play minus
the track's duration.

Used by `tests/test_clients.py` (short tracks) and `benchmarks/clients.py`.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import signal

from processing.chain import PRESETS as CHAIN_PRESETS
from processing.plan import FRAME_SAMPLES
from tests.conftest import ROOT, Server
from tests.helpers import decode, parse_playlist

FRAME = FRAME_SAMPLES
# The expected lead, written out (not read from the renditions): AAC's one
# priming frame, FLAC none.
LEAD = {"aac": 1024, "aac-lo": 1024, "flac": 0}
PRESETS = tuple(CHAIN_PRESETS)

# (row name, playlist path under the stream, rendition whose timeline it plays)
ROWS: tuple[tuple[str, str, str], ...] = (
    ("AAC master", "master.m3u8", "aac"),
    ("lossless master", "master-lossless.m3u8", "flac"),
    ("aac live", "aac/index.m3u8", "aac"),
    ("aac-lo live", "aac-lo/index.m3u8", "aac"),
    ("flac live", "flac/index.m3u8", "flac"),
    ("aac VOD", "aac/vod.m3u8", "aac"),
    ("aac-lo VOD", "aac-lo/vod.m3u8", "aac"),
    ("flac VOD", "flac/vod.m3u8", "flac"),
)
# Cells that fail by a client's own bug, reproduced and named (the test shows
# them but does not count them): Shaka 5.2.12 takes a media playlist loaded
# directly for video until it has probed a segment, and on a live update builds
# the new segments with the audio MIME type (audio/mp4 against video/mp4 for
# the same .m4s): its changeType between them makes Chromium's parser fail
# (CHUNK_DEMUXER_ERROR_APPEND_FAILED) at the first reload. Through a
# multivariant playlist (CODECS known) it plays live.
KNOWN_CLIENT_BUGS = {
    ("shaka", row): "Shaka 5.2.12: live update of a bare media playlist changes MIME type"
    for row in ("aac live", "aac-lo live", "flac live")
}
GSTREAMER = {"hlsdemux2": "uridecodebin3", "hlsdemux": "uridecodebin"}
# what the GStreamer cells load (HTTP, HLS, fMP4, AAC and FLAC decoders, the sink)
GSTREAMER_ELEMENTS = (
    "souphttpsrc", "hlsdemux", "hlsdemux2", "qtdemux", "aacparse", "avdec_aac",
    "flacparse", "flacdec", "audioconvert", "audioresample", "filesink",
)  # fmt: skip
BROWSERS = ("hls.js", "shaka", "video.js")
CLIENTS = (*GSTREAMER, "ffmpeg", *BROWSERS)
REAL_TIME = {*GSTREAMER, *BROWSERS}

SCRIPTS = {
    "hls.js": ROOT / "node_modules" / "hls.js" / "dist" / "hls.min.js",
    "shaka": ROOT / "node_modules" / "shaka-player" / "dist" / "shaka-player.compiled.js",
    "video.js": ROOT / "node_modules" / "video.js" / "dist" / "video.min.js",
}
CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]  # fmt: skip


def available() -> dict[str, str | None]:
    """Each client and why it cannot run here (None: it can)."""
    out: dict[str, str | None] = {}
    gst = shutil.which("gst-launch-1.0")
    for name in GSTREAMER:
        out[name] = None if gst else "gst-launch-1.0 is missing (make test installs GStreamer)"
    out["ffmpeg"] = None if shutil.which("ffmpeg") else "ffmpeg is missing"
    for name in BROWSERS:
        if CHROMIUM is None:
            out[name] = "chromium is missing"
        elif not SCRIPTS[name].is_file():
            out[name] = f"{SCRIPTS[name].relative_to(ROOT)} is missing (make test runs npm)"
        else:
            out[name] = None
    return out


@dataclass
class Cell:
    client: str
    row: str
    url: str
    rendition: str  # the timeline it decodes (aac for either AAC variant)
    length_diff: int | None = None  # decoded samples minus the expected count
    lags: list[int] = field(default_factory=list)  # per segment, against the FLAC reference
    stall: float | None = None  # wall time of the real-time play minus the duration
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            not self.errors
            and self.length_diff == 0
            and bool(self.lags)
            and all(lag == 0 for lag in self.lags)
            and (self.client not in REAL_TIME or (self.stall is not None and self.stall < 2.0))
        )

    def line(self) -> str:
        stall = "-" if self.stall is None else f"{self.stall:+.2f} s"
        lags = "-" if not self.lags else ("0" if not any(self.lags) else str(self.lags))
        status = "ok" if self.ok else "FAIL " + "; ".join(self.errors)[:200]
        return (
            f"{self.client:9} {self.row:16} length {self.length_diff!s:>6}  "
            f"lag {lags:6} stall {stall:9} {status}"
        )


@dataclass(frozen=True)
class Stream:
    """What the track is: its id, length, rate and channels."""

    track: str
    length: int
    rate: int
    channels: int

    @property
    def seconds(self) -> float:
        return self.length / self.rate

    def expected(self, rendition: str) -> int:
        """Decoded samples: AAC's lead and whole last frame; FLAC exactly the source."""
        if LEAD[rendition]:
            return LEAD[rendition] + -(-self.length // FRAME) * FRAME
        return self.length


def cells(server: Server, stream: Stream, clients: tuple[str, ...] = CLIENTS) -> list[Cell]:
    """One cell per client and row, each on a stream of its own (cold)."""
    out = []
    for i, (client, (row, path, rendition)) in enumerate((c, r) for c in clients for r in ROWS):
        preset, intensity = PRESETS[i % len(PRESETS)], f"{0.05 * (i // len(PRESETS)):.2f}"
        base = f"{server.url}/hls/{stream.track}/{preset}/{intensity}"
        out.append(Cell(client, row, f"{base}/{path}", rendition))
    return out


def stream_base(cell: Cell) -> str:
    """`.../hls/{track}/{preset}/{intensity}` of a cell's URL."""
    head, tail = cell.url.split("/hls/", 1)
    return head + "/hls/" + "/".join(tail.split("/")[:3])


def judge(cell: Cell, decoded: np.ndarray, stream: Stream, server: Server) -> None:
    """Length and per-segment lag of a client's decoded PCM."""
    cell.length_diff = len(decoded) - stream.expected(cell.rendition)
    flac = f"{stream_base(cell)}/flac/vod.m3u8"
    ref = decode(flac, stream.channels)  # bit-exact to the rendered program
    _, _, body = server.get(flac.split(server.url, 1)[1])
    durations = [s.duration for s in parse_playlist(body).segments]
    cell.lags = segment_lags(decoded[LEAD[cell.rendition] :], ref, durations, stream.rate)


def segment_lags(
    decoded: np.ndarray, ref: np.ndarray, durations: list[float], rate: int
) -> list[int]:
    """Lag (samples) of `decoded` against `ref` in a window inside each segment:
    0 when the segment sits where it belongs (a lost or repeated sample, or a
    whole segment, shows as a lag, or as a missing window: -999999)."""
    lags, start = [], 0.0
    mono_d, mono_r = decoded.mean(axis=1), ref.mean(axis=1)
    for duration in durations:
        end = start + duration
        size = min(8192, int(duration * rate) // 2)
        centre = int((start + end) / 2 * rate)
        a, b = centre - size // 2, centre + size // 2
        if size < 512 or b + FRAME > len(mono_d) or b > len(mono_r):
            lags.append(-999999 if b > len(mono_d) else 0)
            start = end
            continue
        window = mono_r[a:b]
        span = mono_d[a - FRAME : b + FRAME] if a >= FRAME else mono_d[0 : b + FRAME]
        offset = FRAME if a >= FRAME else a
        corr = signal.correlate(span, window, mode="valid", method="fft")
        lags.append(int(np.argmax(corr)) - offset)
        start = end
    return lags


# --- GStreamer and ffmpeg ---------------------------------------------------


def run_gstreamer(cell: Cell, stream: Stream, server: Server, timeout: float) -> None:
    # Interleaved: avdec_aac puts out planar audio, which the caps would pass through.
    caps = (
        f"audio/x-raw,format=F32LE,layout=interleaved,rate={stream.rate},channels={stream.channels}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pcm"
        argv = [
            "gst-launch-1.0", "-q", GSTREAMER[cell.client], f"uri={cell.url}", "!",
            "audioconvert", "!", "audioresample", "!", caps, "!",
            "filesink", f"location={out}", "sync=true",
        ]  # fmt: skip
        started = time.monotonic()
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            cell.errors.append(f"no end of stream within {timeout:.0f} s")
            return
        wall = time.monotonic() - started
        if proc.returncode != 0:
            cell.errors.append(
                f"gst-launch exit {proc.returncode}: {proc.stdout[-300:]}{proc.stderr[-300:]}"
            )
            return
        decoded = np.fromfile(out, "<f4").reshape(-1, stream.channels)
    cell.stall = wall - stream.seconds
    judge(cell, decoded, stream, server)


def run_ffmpeg(cell: Cell, stream: Stream, server: Server, timeout: float) -> None:
    argv = [
        "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-i",
        cell.url,
        "-map",
        "0:a:0",
        "-f",
        "f32le",
        "-",
    ]
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        cell.errors.append(f"no end of stream within {timeout:.0f} s")
        return
    if proc.returncode != 0:
        cell.errors.append(f"ffmpeg exit {proc.returncode}: {proc.stderr.decode()[-300:]}")
        return
    judge(cell, np.frombuffer(proc.stdout, "<f4").reshape(-1, stream.channels), stream, server)


# --- Browsers ---------------------------------------------------------------

# Plays every cell given at once, each in an audio element of its own, with
# the named library; resolves with what each saw.
PAGE_JS = """
async ({cells, seconds, limitMs}) => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const one = async ({client, url}) => {
    const audio = document.createElement('audio');
    audio.muted = true;
    document.body.appendChild(audio);
    const log = {errors: [], waiting: [], playing: null, ended: null};
    const t0 = performance.now();
    audio.addEventListener('playing', () => { if (log.playing === null) log.playing = performance.now() - t0; });
    // A wait before the first sample has played is start-up, which the wall
    // time of the play (ended minus duration) already judges; a wait after it
    // is a stall in the middle of the track.
    audio.addEventListener('waiting', () => { if (log.playing !== null && log.ended === null && audio.currentTime > 0) log.waiting.push(audio.currentTime); });
    audio.addEventListener('ended', () => { log.ended = performance.now() - t0; });
    audio.addEventListener('error', () => log.errors.push('media error ' + (audio.error && audio.error.message)));
    let destroy = () => {};
    try {
      if (client === 'hls.js') {
        const hls = new Hls({lowLatencyMode: true});
        hls.on(Hls.Events.ERROR, (_e, d) => { if (d.fatal) log.errors.push('hls.js ' + d.details); });
        hls.loadSource(url);
        hls.attachMedia(audio);
        destroy = () => hls.destroy();
      } else if (client === 'shaka') {
        const player = new shaka.Player();
        player.addEventListener('error', e => log.errors.push('shaka ' + e.detail.code));
        await player.attach(audio);
        await player.load(url);
        destroy = () => player.destroy();
      } else {
        const player = videojs(audio, {html5: {vhs: {overrideNative: true}}});
        player.on('error', () => log.errors.push('video.js ' + JSON.stringify(player.error())));
        player.src({src: url, type: 'application/x-mpegURL'});
        destroy = () => player.dispose();
      }
      await audio.play();
    } catch (e) { log.errors.push(String(e)); }
    while (log.ended === null && !log.errors.length && performance.now() - t0 < limitMs) await sleep(100);
    log.buffered = Array.from({length: audio.buffered.length}, (_, i) => [audio.buffered.start(i), audio.buffered.end(i)]);
    log.currentTime = audio.currentTime;
    log.duration = audio.duration;
    destroy();
    return log;
  };
  return await Promise.all(cells.map(one));
}
"""


def run_browser_cells(
    context: Any, server: Server, batch: list[Cell], stream: Stream, limit: float
) -> None:
    """Play `batch` at once in one page (same origin as the server; the players'
    scripts inlined from node_modules)."""
    page = context.new_page()
    try:
        page.goto(server.url + "/healthz")
        for path in SCRIPTS.values():
            page.add_script_tag(path=str(path))  # inlined into the page
        logs = page.evaluate(
            PAGE_JS,
            {"cells": [{"client": c.client, "url": c.url} for c in batch],
             "seconds": stream.seconds, "limitMs": limit * 1000},
        )  # fmt: skip
    finally:
        page.close()
    for cell, log in zip(batch, logs, strict=True):
        cell.errors += log["errors"]
        if log["ended"] is None:
            cell.errors.append(f"not ended after {limit:.0f} s (at {log['currentTime']:.2f} s)")
        else:
            cell.stall = log["ended"] / 1000 - stream.seconds
        if log["waiting"]:
            cell.errors.append(f"waiting at {log['waiting']}")
        ranges = log["buffered"]
        if len(ranges) != 1:
            cell.errors.append(f"buffered {ranges}")
            continue
        start, end = ranges[0]
        # The timeline the page buffered, in samples (its start and end to a frame).
        cell.length_diff = round((end - start) * stream.rate) - stream.expected(cell.rendition)
        if abs(cell.length_diff) <= FRAME // 2:
            cell.length_diff = 0  # MSE reports times in microseconds: within half a frame
        cell.lags = [0] if abs(start) < 1e-3 else [round(start * stream.rate)]


@contextlib.contextmanager
def browser_context() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield context
        finally:
            context.close()


def run_matrix(
    server: Server,
    stream: Stream,
    clients: tuple[str, ...],
    context_factory: Callable[[], AbstractContextManager[Any]] = browser_context,
) -> list[Cell]:
    """Every cell of `clients` × ROWS, judged, one row at a time: its GStreamer
    cells at once in threads, its browser cells at once in one page, ffmpeg's
    (not real time) after them. More
    cold streams starting together (four or more on this 2-core machine, with
    the players' own start-up) make the first seam wait: each cell would then
    be a load test, not a client test."""
    todo = cells(server, stream, clients)
    limit = stream.seconds + 30
    runner = {"ffmpeg": run_ffmpeg, **{name: run_gstreamer for name in GSTREAMER}}

    def run(cell: Cell) -> None:
        try:
            runner[cell.client](cell, stream, server, limit)
        except Exception as exc:  # a cell's failure is reported in it, not raised
            cell.errors.append(f"{type(exc).__name__}: {exc}")

    live = [c for c in todo if c.client in GSTREAMER]
    # GStreamer builds its plugin registry on its first run on a machine (0.4 s
    # here), and each plugin's libraries come from disk on first use (more on
    # a cold disk): paid now, not in the first row's stall.
    for element in GSTREAMER_ELEMENTS if live else ():
        subprocess.run(["gst-inspect-1.0", element], capture_output=True, timeout=120)
    with ThreadPoolExecutor(max(1, len(clients))) as pool:
        for row, *_ in ROWS:
            list(pool.map(run, [c for c in live if c.row == row]))
        # As fast as it reads: after the real-time cells, so as not to load them.
        list(pool.map(run, [c for c in todo if c.client == "ffmpeg"]))
    web = [c for c in todo if c.client in BROWSERS]
    if web:
        with context_factory() as context:
            for row, *_ in ROWS:
                batch = [c for c in web if c.row == row]
                try:
                    run_browser_cells(context, server, batch, stream, limit)
                except Exception as exc:
                    for cell in batch:
                        cell.errors.append(f"{type(exc).__name__}: {exc}")
    return todo


def table(cells_: list[Cell]) -> str:
    return "\n".join(cell.line() for cell in cells_)
