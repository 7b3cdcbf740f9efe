"""The aiohttp application: factory, resources and thin route handlers (SPEC §3)."""

from __future__ import annotations

import asyncio
import collections
import logging
import posixpath
import re
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from hls import fmp4, playlist
from hls.errors import BadParameter, HTTPError, NotFound, NotReady, classify
from hls.http import CORS_ORIGIN, ERROR_CACHE, SEGMENT_CACHE, cors, media_response
from hls.production import Production, StreamState
from hls.queues import MAX_TRACKS, QUEUE_ID, TRACK_ID, Queue
from hls.settings import Settings
from hls.signing import Signer
from hls.streams import PreparedSource, QueueRef, SourceRef, StreamSpec, plan_for
from hls.workers import run_job
from hls.workqueue import ON_DEMAND
from processing.errors import DecodeError
from processing.params import PRESET_NAMES, canonical_intensity
from processing.plan import SegmentPlan
from processing.renditions import RENDITIONS
from storage.cache import DiskCache
from storage.catalog import Catalog, Track
from storage.errors import TrackNotFound
from storage.eviction import LruIndex

log = logging.getLogger("hls.app")

STATIC_DIR = Path(__file__).parent / "static"
HLS_JS = Path(__file__).resolve().parent.parent / "node_modules" / "hls.js" / "dist" / "hls.min.js"
INTENSITY_TEXT = re.compile(r"^(\d{1,3}(\.\d{0,8})?|\.\d{1,8})$")
SEGMENT_NAME = re.compile(r"^(0|[1-9]\d{0,6})\.m4s$")
LIVE_CACHE = "public, max-age=1"
PLAYLIST_CACHE = "public, max-age=60"
SIGNED = "/s/{expires:\\d+}/{signature}"

SETTINGS = web.AppKey("settings", Settings)
CATALOG = web.AppKey("catalog", Catalog)
CACHE = web.AppKey("cache", DiskCache)
PRODUCTION = web.AppKey("production", Production)
SIGNER = web.AppKey("signer", Signer)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "hls_origin_requests", "HTTP responses by status", ["status"], registry=self.registry
        )
        self.cache_bytes = Gauge(
            "hls_origin_cache_bytes", "Bytes of cached segments", registry=self.registry
        )
        self.evictions = Gauge(
            "hls_origin_cache_evictions", "Segments evicted since start", registry=self.registry
        )
        self.preemptions = Gauge(
            "hls_origin_preemptions",
            "Background jobs asked to stop since start so that a listener's work got a worker",
            registry=self.registry,
        )
        self.produced = Gauge(
            "hls_origin_segments_produced",
            "Segments this origin produced (encoded) since start",
            registry=self.registry,
        )
        self.running = Gauge(
            "hls_origin_jobs_running", "Jobs the workers run now", registry=self.registry
        )
        self.waiting = Gauge(
            "hls_origin_jobs_waiting",
            "Jobs a listener waits for that wait for a worker",
            registry=self.registry,
        )
        self.dropped = Gauge(
            "hls_origin_jobs_dropped",
            "Queued jobs dropped since start because every client waiting for them left",
            registry=self.registry,
        )
        self.served = Counter(
            "hls_origin_segments_served", "Media segments answered", registry=self.registry
        )
        self.cache_hits = Counter(
            "hls_origin_segment_cache_hits",
            "Media segments answered from the cache, without waiting for production",
            registry=self.registry,
        )
        self.segment_seconds = Histogram(
            "hls_origin_segment_production_seconds",
            "Time from request to produced segment",
            ["rendition"],
            registry=self.registry,
        )


METRICS = web.AppKey("metrics", Metrics)


# --- Parameters -----------------------------------------------------------


def parse_preset(text: str) -> str:
    if text not in PRESET_NAMES:
        raise BadParameter(f"unknown preset {text!r}; expected one of {', '.join(PRESET_NAMES)}")
    return text


def parse_intensity(text: str) -> str:
    """Canonical spelling of an intensity in [0, 1], quantized to steps of 0.05."""
    if not INTENSITY_TEXT.match(text):
        raise BadParameter(f"intensity must be a decimal number in [0, 1], got {text[:20]!r}")
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise BadParameter(f"intensity must be a decimal number in [0, 1], got {text!r}") from exc
    if not Decimal(0) <= value <= Decimal(1):
        raise BadParameter(f"intensity must be in [0, 1], got {text}")
    return canonical_intensity(float(value))


def parse_rendition(text: str) -> str:
    if text not in RENDITIONS:
        raise BadParameter(f"unknown rendition {text!r}; expected one of {', '.join(RENDITIONS)}")
    return text


# --- Streams --------------------------------------------------------------


@dataclass(frozen=True)
class Stream:
    id: str  # a track's or a queue's
    spec: StreamSpec
    source: PreparedSource
    plan: SegmentPlan
    modified: float  # the source files' latest mtime: what every byte derives from
    tracks: tuple[Track, ...]  # the track, or the queue's tracks in order

    @property
    def markers(self) -> tuple[playlist.Marker, ...]:
        """A queue's track starts (none for a single track)."""
        if not isinstance(self.spec.source, QueueRef):
            return ()
        return tuple(
            playlist.Marker(track.id, track.title, start, length)
            for track, start, length in zip(
                self.tracks, self.source.starts, self.source.lengths, strict=True
            )
        )


def _canonical_or_redirect(request: web.Request) -> tuple[str, str]:
    preset = parse_preset(request.match_info["preset"])
    given = request.match_info["intensity"]
    intensity = parse_intensity(given)
    if given != intensity:
        parts = request.path.split("/")
        parts[parts.index(given)] = intensity
        location = "/".join(parts) + (f"?{request.query_string}" if request.query_string else "")
        raise web.HTTPMovedPermanently(location)
    return preset, intensity


async def resolve_stream(request: web.Request) -> Stream:
    """Track, processing spec, exact source properties and segment plan of a URL."""
    preset, intensity = _canonical_or_redirect(request)
    return await open_stream(request.app, request.match_info["track"], preset, intensity)


async def open_stream(app: web.Application, sid: str, preset: str, intensity: str) -> Stream:
    """The stream of a track or a queue id (404 for anything else)."""
    queue: Queue | None = None
    if QUEUE_ID.match(sid):
        queue = Queue.from_id(sid)
        tracks = queue_tracks(app, queue, unknown=NotFound)
    elif TRACK_ID.match(sid):
        tracks, queue = (app[CATALOG].get(sid),), None
    else:
        raise NotFound(f"no track with id {sid[:40]!r}")
    source, modified = await source_of(app, tracks, queue)
    settings, cache_dir = app[SETTINGS], str(app[CACHE].root)
    prepared = await app[PRODUCTION].prepare(source, cache_dir)
    spec = StreamSpec(
        source, preset, intensity, settings.segment_seconds,
        settings.context_seconds, settings.overlap_seconds, cache_dir,
    )  # fmt: skip
    plan = plan_for(spec, prepared.length, prepared.rate)
    return Stream(sid, spec, prepared, plan, modified, tracks)


def queue_tracks(app: web.Application, queue: Queue, unknown: type[HTTPError]) -> tuple[Track, ...]:
    """The catalog's tracks of a queue; `unknown` (an error class) names one it lacks."""
    catalog = app[CATALOG]
    tracks = []
    for tid in queue.tracks:
        try:
            tracks.append(catalog.get(tid))
        except TrackNotFound:
            raise unknown(f"the queue names an unknown track {tid}") from None
    return tuple(tracks)


async def source_of(
    app: web.Application, tracks: tuple[Track, ...], queue: Queue | None
) -> tuple[SourceRef | QueueRef, float]:
    """What a stream reads (a file, or a queue's files) and the latest source mtime."""
    catalog = app[CATALOG]

    def fingerprints() -> tuple[list[str], float]:  # blocking: reads each file once per change
        keys = [catalog.fingerprint(track) for track in tracks]
        return keys, max(track.file.stat().st_mtime for track in tracks)

    keys, modified = await asyncio.to_thread(fingerprints)
    refs = tuple(SourceRef(str(t.file), key) for t, key in zip(tracks, keys, strict=True))
    if queue is None:
        return refs[0], modified
    ids = tuple(track.id for track in tracks)
    return QueueRef(ids, refs, queue.crossfade_ms, queue.gain), modified


M3U8 = "application/vnd.apple.mpegurl"


def _playlist(request: web.Request, body: str, cache: str, modified: float | None) -> web.Response:
    return media_response(request, body.encode(), M3U8, cache, modified, compressible=True)


# --- Handlers -------------------------------------------------------------


async def index_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


async def hls_js(request: web.Request) -> web.FileResponse:
    if not HLS_JS.is_file():
        raise NotFound("hls.js is not installed (run make run)")
    return web.FileResponse(HLS_JS, headers={"Cache-Control": "public, max-age=3600"})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    production = request.app[PRODUCTION]
    request.app[METRICS].cache_bytes.set(production.index.total_bytes)
    request.app[METRICS].evictions.set(production.index.evicted)
    request.app[METRICS].preemptions.set(production.work.preempted)
    request.app[METRICS].running.set(production.work.running)
    request.app[METRICS].waiting.set(production.work.waiting)
    request.app[METRICS].dropped.set(production.work.dropped)
    request.app[METRICS].produced.set(production.produced)
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


async def tracks(request: web.Request) -> web.Response:
    """The library; each track with its stream base (signed when a key is set) and
    the master playlist of the default preset under it."""
    signer = request.app.get(SIGNER)
    listed = []
    for track in request.app[CATALOG].tracks():
        base = (signer.prefix(track.id) if signer else "") + f"/hls/{track.id}"
        listed.append(
            {**track.to_json(), "hls": base, "master": f"{base}/adaptive/1.00/master.m3u8"}
        )
    return web.json_response({"tracks": listed})


# Multivariant playlists: one codec each, so that any client can switch
# between their variants without changing decoder (SPEC §4).
MASTERS: dict[str, tuple[tuple[str, ...], str]] = {
    f"{master}{vod}.m3u8": (
        tuple(name for name, r in RENDITIONS.items() if r.codec == codec),
        "vod.m3u8" if vod else "index.m3u8",
    )
    for codec, master in playlist.MASTER_OF_CODEC.items()
    for vod in ("", "-vod")
}


async def master(request: web.Request) -> web.Response:
    stream = await resolve_stream(request)
    renditions, media_name = MASTERS[request.match_info["name"]]
    production = request.app[PRODUCTION]
    variants = []
    for name in renditions:
        state = production.stream(stream.spec, name, stream.plan)
        measured = await production.bit_rates(state)  # once every segment is known
        variants.append(
            playlist.Variant(
                RENDITIONS[name], f"{name}/{media_name}", stream.source.channels, measured
            )
        )
    final = all(v.measured is not None for v in variants)  # nominal rates until then
    body = playlist.master_playlist(variants)
    return _playlist(request, body, PLAYLIST_CACHE, stream.modified if final else None)


async def rendition_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    rendition = parse_rendition(request.match_info["rendition"])
    if name not in ("index.m3u8", "vod.m3u8", "init.mp4") and not SEGMENT_NAME.match(name):
        raise NotFound(f"no such file {name[:40]!r}")
    stream = await resolve_stream(request)
    production = request.app[PRODUCTION]
    state = production.stream(stream.spec, rendition, stream.plan)
    if name == "index.m3u8":
        return await live_playlist(request, production, state, stream)
    if name == "vod.m3u8":
        lead = RENDITIONS[rendition].lead_samples
        body = playlist.media_playlist(
            stream.plan, len(stream.plan), complete=True, live=False, lead=lead,
            markers=stream.markers,
        )  # fmt: skip
        return _playlist(request, body, PLAYLIST_CACHE, stream.modified)
    if name == "init.mp4":
        data = fmp4.init_segment(RENDITIONS[rendition], stream.source.rate, stream.source.channels)
        return media_response(request, data, "audio/mp4", SEGMENT_CACHE, stream.modified)
    index = int(name.split(".")[0])
    if index >= len(stream.plan):
        raise NotFound(f"segment {index} is past the end (the track has {len(stream.plan)})")
    state.touch()
    data, found = await production.segment_bytes(state, index)
    production.ensure_background(state)  # after: the requested segment has the machine first
    request.app[METRICS].served.inc()
    if found:
        request.app[METRICS].cache_hits.inc()
    return media_response(request, data, "video/iso.segment", SEGMENT_CACHE, stream.modified)


async def live_playlist(
    request: web.Request, production: Production, state: StreamState, stream: Stream
) -> web.Response:
    """The live-then-VOD playlist, with blocking reload while incomplete (§4)."""
    settings = request.app[SETTINGS]
    state.touch()
    msn_text = request.query.get("_HLS_msn")
    if msn_text is not None and not state.complete:
        if not re.fullmatch(r"\d{1,9}", msn_text):
            raise BadParameter(f"_HLS_msn must be a non-negative integer, got {msn_text[:20]!r}")
        msn = int(msn_text)
        if state.live_since is None:
            # The first live request here already knows segments 0..msn-1: they
            # were listed by another origin (failover, §9) or by this one
            # before a restart. They stay listed; each is made when asked for.
            state.claimed = min(msn, len(state.plan))
    if state.listed > 0:
        production.ensure_background(state)
    if msn_text is not None and not state.complete:
        listed = _live_listed(production, state)
        if msn > listed - 1 + 2:
            raise BadParameter(
                f"_HLS_msn={msn} is more than two past the last segment ({listed - 1})"
            )
        # A player will want these soon: they go before background work.
        for index in range(state.listed, min(msn + 1, len(state.plan))):
            production.request_soon(state, index)
        hold = min(settings.blocking_reload_seconds, 3 * playlist.target_duration(state.plan))
        deadline = asyncio.get_running_loop().time() + hold
        while _live_listed(production, state) <= msn and not state.complete:
            left = deadline - asyncio.get_running_loop().time()
            if state.state == "failed":
                break
            if left <= 0:
                raise NotReady(
                    f"segment {msn} was not ready within {hold:g} s; reload the playlist",
                    headers={"Retry-After": "1"},
                )
            # Listed by production, or by the live clock (at most a second away).
            await production.wait_listed(state, state.listed + 1, min(left, 1.0))
    if state.listed == 0:
        await production.segment(state, 0, ON_DEMAND)
        # Background work starts only now: segment 0, which the listener waits
        # for, has both cores to itself (the analysis runs on all of them).
        # Starting it beside segment 0 made the whole track no faster within
        # the noise (5.01 vs 5.08 s, then 5.32 vs 5.26 s, medians of 6 and 5
        # alternating runs) and segment 0 about 0.025 s slower.
        production.ensure_background(state)
    listed = len(state.plan) if state.complete else _live_listed(production, state)
    lead = RENDITIONS[state.rendition].lead_samples
    body = playlist.media_playlist(
        state.plan, listed, complete=state.complete, live=True, lead=lead, markers=stream.markers
    )
    if state.complete:
        return _playlist(request, body, PLAYLIST_CACHE, stream.modified)
    return _playlist(request, body, LIVE_CACHE, None)


def _live_listed(production: Production, state: StreamState) -> int:
    """Segments the live playlist lists: made, or due within the live horizon (§4)."""
    if state.listed == 0:
        return 0  # nothing is listed before segment 0 is made
    return playlist.live_listed(state.plan, state.listed, production.live_seconds(state))


async def status(request: web.Request) -> web.Response:
    stream = await resolve_stream(request)
    production = request.app[PRODUCTION]
    renditions = {}
    for name in RENDITIONS:
        state = production.stream(stream.spec, name, stream.plan)
        renditions[name] = {
            "done": len(state.done),
            "total": len(stream.plan),
            "state": state.state,
        }
    return web.json_response(
        {
            "track": stream.id,
            "preset": stream.spec.preset,
            "intensity": stream.spec.intensity,
            "duration": stream.source.length / stream.source.rate,
            "renditions": renditions,
        }
    )


def wav_header(rate: int, channels: int, frames: int) -> bytes:
    """RIFF/WAVE header for 16-bit PCM of known length."""
    data_size = frames * channels * 2
    block = channels * 2
    fmt = struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, 16)
    riff = struct.pack("<I", 36 + data_size)
    return b"RIFF" + riff + b"WAVE" + b"fmt " + fmt + b"data" + struct.pack("<I", data_size)


async def progressive(request: web.Request) -> web.StreamResponse:
    """The original design's progressive WAV stream, produced segment by segment.
    enhanced=0: the source file as it is (a queue's: its timeline, preset original)."""
    sid = request.match_info["track"]
    enhanced = request.query.get("enhanced", "1")
    if enhanced not in ("0", "1"):
        raise BadParameter(f"enhanced must be 0 or 1, got {enhanced[:20]!r}")
    if enhanced == "0" and TRACK_ID.match(sid):
        return web.FileResponse(request.app[CATALOG].get(sid).file)
    if enhanced == "0":
        preset, intensity = "original", "1.00"
    else:
        preset = parse_preset(request.query.get("preset", "adaptive"))
        intensity = parse_intensity(request.query.get("intensity", "1.00"))
    stream = await open_stream(request.app, sid, preset, intensity)
    production = request.app[PRODUCTION]
    response = web.StreamResponse(
        headers={"Content-Type": "audio/wav", "Cache-Control": "no-store"}
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write(
        wav_header(stream.source.rate, stream.source.channels, stream.source.length)
    )
    for index in range(len(stream.plan)):
        pcm = await production.work.run(
            (("pcm", stream.spec, index),), ON_DEMAND, run_job, "segment_pcm16", stream.spec, index
        )
        await response.write(pcm)
    await response.write_eof()
    return response


# --- Albums and queues (SPEC §10) ----------------------------------------


def stream_base(app: web.Application, sid: str) -> str:
    """Where a track's or a queue's streams are (signed when a key is set)."""
    signer = app.get(SIGNER)
    return (signer.prefix(sid) if signer else "") + f"/hls/{sid}"


async def queue_map(app: web.Application, queue: Queue, unknown: type[HTTPError]) -> dict:
    """A queue's JSON: its id, each track's start and duration on the timeline,
    and where it streams. Opens the timeline (converting tracks of another
    rate once): a track that cannot be decoded is a 422 naming it."""
    tracks = queue_tracks(app, queue, unknown)
    for track in tracks:
        if track.error is not None:
            raise DecodeError(f"track {track.id} ({track.path}) cannot be decoded: {track.error}")
    source, _ = await source_of(app, tracks, queue)
    prepared = await app[PRODUCTION].prepare(source, str(app[CACHE].root))
    rate = prepared.rate
    base = stream_base(app, queue.id)
    return {
        "id": queue.id,
        "tracks": [
            {
                "id": track.id,
                "title": track.title,
                "start": start / rate,
                "duration": length / rate,
                "start_sample": start,
                "samples": length,
            }
            for track, start, length in zip(tracks, prepared.starts, prepared.lengths, strict=True)
        ],
        "duration": prepared.length / rate,
        "samples": prepared.length,
        "sample_rate": rate,
        "channels": prepared.channels,
        "crossfade": queue.crossfade_ms / 1000,
        "gain": queue.gain,
        "hls": base,
        "master": f"{base}/adaptive/1.00/master.m3u8",
    }


async def create_queue(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:  # JSONDecodeError, and bodies that are not UTF-8
        raise BadParameter("the body is not JSON") from None
    queue = Queue.from_body(body)
    return web.json_response(await queue_map(request.app, queue, unknown=BadParameter))


async def get_queue(request: web.Request) -> web.Response:
    queue = Queue.from_id(request.match_info["queue"])
    return web.json_response(await queue_map(request.app, queue, unknown=NotFound))


def album_order(track: Track) -> tuple:
    """Tag order (disc, number) where the tags give it, then file-name order."""
    return (track.position is None, track.position or (0, 0), track.path)


async def albums(request: web.Request) -> web.Response:
    """The library's folders as albums, each a queue (gain `album`, no crossfade)
    of its decodable tracks in order."""
    folders: dict[str, list[Track]] = {}
    for track in request.app[CATALOG].tracks():
        if track.error is None:
            folders.setdefault(posixpath.dirname(track.path), []).append(track)
    listed = []
    for folder, tracks in sorted(folders.items()):
        tracks.sort(key=album_order)
        tags = collections.Counter(t.album for t in tracks if t.album)
        title = tags.most_common(1)[0][0] if tags else (folder or request.app[CATALOG].root.name)
        queue = Queue(tuple(t.id for t in tracks[:MAX_TRACKS]), 0, "album")
        base = stream_base(request.app, queue.id)
        listed.append(
            {
                "id": queue.id,
                "title": title,
                "path": folder,
                "tracks": [{"id": t.id, "title": t.title} for t in tracks[:MAX_TRACKS]],
                "duration": sum(t.duration or 0.0 for t in tracks[:MAX_TRACKS]),
                "hls": base,
                "master": f"{base}/adaptive/1.00/master.m3u8",
            }
        )
    return web.json_response({"albums": listed})


# --- Errors, resources, factory -------------------------------------------


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics_ = request.app[METRICS]
    try:
        response = await handler(request)
    except web.HTTPRedirection:
        metrics_.requests.labels("301").inc()
        raise
    except web.HTTPException as exc:
        metrics_.requests.labels(str(exc.status)).inc()
        body = {"error": exc.reason.lower(), "detail": f"{request.method} {request.path[:200]}"}
        kept = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        return web.json_response(
            body, status=exc.status, headers={**kept, "Cache-Control": ERROR_CACHE}
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        status_, error, detail = classify(exc)
        if status_ >= 500:
            log.exception("error serving %s", request.path)
        headers = {**dict(getattr(exc, "headers", {}) or {}), "Cache-Control": ERROR_CACHE}
        if status_ == 503:
            headers.setdefault("Retry-After", "2")
        metrics_.requests.labels(str(status_)).inc()
        return web.json_response(
            {"error": error, "detail": detail}, status=status_, headers=headers
        )
    metrics_.requests.labels(str(response.status)).inc()
    return response


@web.middleware
async def signed_links(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With a signing key, a track's streams are answered only under a valid
    `/s/{expires}/{signature}` prefix (SPEC §9); the rest (the player, the
    track list, health, metrics) stays open."""
    signer = request.app.get(SIGNER)
    match = request.match_info
    if signer is not None and "track" in match:
        signer.check(match.get("expires"), match.get("signature"), match["track"])
    return await handler(request)


async def _catalog(settings: Settings, production: Production) -> Catalog:
    """The library, scanned. Synthesizing the demo and probing files need numpy
    and the decoders: workers do it, and the server process stays small."""
    library = settings.library
    if library is None:
        demo = settings.resolved_cache_dir / "demo-library"
        folder, missing = await production.work.call("demo_library", str(demo))
        make = (production.work.call("demo_track", str(demo), index) for index in missing)
        await asyncio.gather(*make)  # a track per worker at once
        library = Path(folder)
    if not library.is_dir():
        raise SystemExit(f"library {library} is not a directory")
    catalog = Catalog(library, settings.secret)
    catalog.load(await production.work.call("scan_library", str(catalog.root), settings.secret))
    return catalog


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    cache_dir = settings.resolved_cache_dir
    cache_dir.mkdir(parents=True, exist_ok=True)
    app[CACHE] = DiskCache(cache_dir, settings.cache_max_bytes)
    index = LruIndex(app[CACHE], settings.cache_max_bytes)
    production = Production(
        app[CACHE], index, settings.workers, settings.idle_seconds, settings.max_pending
    )
    production.on_segment = lambda rendition, seconds: (
        app[METRICS].segment_seconds.labels(rendition).observe(seconds)
    )
    app[PRODUCTION] = production
    await production.start()
    try:
        app[CATALOG] = await _catalog(settings, production)
    except BaseException:
        await production.close()
        raise
    # Index the existing cache in the background: serving starts at once.
    loading = asyncio.create_task(asyncio.to_thread(index.load))
    yield
    await loading
    await production.close()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[cors, json_errors, signed_links])
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[CORS_ORIGIN] = settings.cors_origin
    if settings.signing_key:
        app[SIGNER] = Signer(settings.signing_key, settings.signing_ttl)
    app.cleanup_ctx.append(_resources)
    r = app.router
    r.add_get("/", index_page)
    r.add_get("/static/hls.min.js", hls_js)
    r.add_get("/healthz", healthz)
    r.add_get("/metrics", metrics)
    r.add_get("/api/tracks", tracks)
    r.add_get("/api/albums", albums)
    r.add_post("/api/queues", create_queue)
    r.add_get("/api/queues/{queue}", get_queue)
    streams = (
        ("/api/status/{track}/{preset}/{intensity}", status),
        ("/api/player/stream/{track}", progressive),
        ("/hls/{track}/{preset}/{intensity}/{name:master(-lossless)?(-vod)?\\.m3u8}", master),
        ("/hls/{track}/{preset}/{intensity}/{rendition}/{name}", rendition_file),
    )
    for path, handler in streams:
        r.add_get(path, handler)
        if settings.signing_key:  # the same under a link's prefix (unsigned: refused)
            r.add_get(SIGNED + path, handler)
    return app
