"""Work that runs in worker processes: preparing sources and producing segments.

Each job is a picklable frozen dataclass; each function does blocking work
(decode, DSP, ffmpeg) and must never run on the event loop. Workers keep a
few renderers in memory, so that producing segments in order renders each
window once. This module imports no aiohttp.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import numpy as np

from hls import fmp4
from hls.preemption import Preempted, requested, requested_between_units
from hls.streams import PreparedSource, QueueRef, SourceRef, StreamSpec, plan_for
from processing import chain
from processing.analysis import ANALYSIS_VERSION, Analysis, analyze, corrective_eq, spectral_tilt
from processing.decode import AudioSource, Samples
from processing.encode import RENDITIONS, encode_aac
from processing.errors import DecodeError, EncodeStopped
from processing.plan import FRAME_SAMPLES, WindowSettings
from processing.render import (
    CHAIN_REACH,
    EncodedSegment,
    Processor,
    Renderer,
    UnitEncoder,
    chain_processor,
    unit_input,
)
from processing.threads import parallel_map
from processing.timeline import Timeline, TrackChains
from storage.cache import DiskCache
from storage.catalog import Catalog, Track
from storage.demo import demo_folder, make_demo_track, missing_demo_tracks

RENDERERS_PER_WORKER = 2


_renderers: OrderedDict[StreamSpec, Renderer] = OrderedDict()


def _scratch(cache_dir: str) -> Path:
    return Path(cache_dir) / "sources"


M_TRIM_THRESHOLD = -1  # mallopt parameters (glibc malloc.h)
M_ARENA_MAX = -8
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 4 << 20  # windows (13 MB) are mapped, and unmapped when freed
TRIM_THRESHOLD_BYTES = 2 << 20  # free heap kept at its top while segments are made
ANALYSIS_TRIM_THRESHOLD_BYTES = 16 << 20  # kept while a track is analysed


@cache
def _libc() -> ctypes.CDLL | None:
    """glibc, whose malloc is tuned here; None elsewhere (nothing to tune)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def _return_freed_memory() -> None:
    """Have glibc give windows back to the system as soon as they are freed.

    glibc raises its mmap threshold to the size of each mapped block freed,
    so later 13 MB windows come from the heap, whose freed pages stay with
    the process (a worker grew to 3x its working set, measured). Fixed
    thresholds keep windows mapped; a small trim threshold gives the heap
    back too (the 60-minute track peaked 7-17 MB lower than with 16 MB kept,
    measured: 277-278 MB against 282-295); one arena for the DSP threads
    keeps each thread from holding a heap of its own (30 MB less per
    worker, measured).
    """
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
        libc.mallopt(M_ARENA_MAX, 1)  # the DSP threads share the one heap


@contextmanager
def _heap_kept() -> Iterator[None]:
    """Keep freed heap while inside: the analysis' excerpt temporaries (1.6 MB) would
    shrink and grow it again around every step (the analysis 15-30 % slower,
    on the first segment's path, measured)."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_TRIM_THRESHOLD, ANALYSIS_TRIM_THRESHOLD_BYTES)
    try:
        yield
    finally:
        if libc is not None:
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)


def warm_up() -> int:
    """Run once per worker at start-up, so that the first real job finds it ready.

    The first call of each scipy routine loads code, the thread pool starts
    its threads and the first ffmpeg of a machine maps ~200 libraries: all
    of it is paid here (about 0.1 s) instead of by the first listener.
    """
    _return_freed_memory()
    rate = 44100
    t = np.arange(rate // 2, dtype=np.float32) / rate
    audio = np.stack([np.sin(2 * np.pi * 440 * t)] * 2, axis=1) * np.float32(0.5)
    params = chain.ChainParams("adaptive", 3.0, corrective_eq(-3.0))
    parallel_map(lambda x: chain.process(x, rate, params, 0.5), [audio, audio])
    spectral_tilt([(audio, 0)], rate)
    encode_aac(audio, rate, RENDITIONS["aac"].aac_quality)
    return os.getpid()


def scan_library(root: str, secret: str) -> list[Track]:
    return Catalog(Path(root), secret).scan()


def demo_library(directory: str) -> tuple[str, list[int]]:
    """The demo library's folder under `directory`, and which of its tracks are
    still to be made (by demo_track, one per worker at once)."""
    return str(demo_folder(Path(directory))), missing_demo_tracks(Path(directory))


def demo_track(directory: str, index: int) -> None:
    make_demo_track(Path(directory), index)


def open_source(ref: SourceRef | QueueRef, cache_dir: str) -> AudioSource | Timeline:
    """A track's source, or a queue's timeline at its first track's rate."""
    scratch = _scratch(cache_dir)
    if isinstance(ref, SourceRef):
        return AudioSource(Path(ref.file), scratch, ref.key)
    sources: list[AudioSource] = []
    for tid, track in zip(ref.ids, ref.tracks, strict=True):
        try:
            source = AudioSource(Path(track.file), scratch, track.key)
            if sources and source.rate != sources[0].rate:
                source = AudioSource(Path(track.file), scratch, track.key, rate=sources[0].rate)
        except DecodeError as exc:
            raise DecodeError(f"track {tid} of the queue: {exc}") from exc
        sources.append(source)
    return Timeline(sources, round(ref.crossfade_ms * sources[0].rate / 1000))


def prepare(ref: SourceRef | QueueRef, cache_dir: str) -> PreparedSource:
    """Open (converting once if needed) and report the exact served length."""
    source = open_source(ref, cache_dir)
    if isinstance(source, Timeline):
        lengths = tuple(track.length for track in source.tracks)
        return PreparedSource(
            source.rate, source.channels, source.length, tuple(source.starts), lengths
        )
    return PreparedSource(source.rate, source.channels, source.length, (0,), (source.length,))


def load_analysis(cache_dir: str, key: str, preset: str, source: Samples) -> Analysis:
    """The analysis of the source named `key` for `preset`, from the cache or computed once."""
    cache = DiskCache(Path(cache_dir))
    entry = ("analysis", key, f"{preset}-v{ANALYSIS_VERSION}.json")
    with cache.lock(*entry):  # one process analyzes, the others wait and read it
        raw = cache.read(*entry)
        if raw is not None:
            return Analysis.from_json(json.loads(raw))
        with _heap_kept():
            result = analyze(source, preset)
        cache.write(entry, json.dumps(result.to_json(), sort_keys=True).encode())
    return result


def _processor(spec: StreamSpec, source: Samples) -> Processor | None:
    """The chain of a stream: one per track for a queue with gain `track` (each
    track's analysis made when a window first reaches it), else one for all."""
    intensity = float(spec.intensity)
    if spec.preset == "original" or intensity <= 0:
        return None
    if isinstance(source, Timeline) and getattr(spec.source, "gain", None) == "track":
        timeline = source

        def chain_of(index: int) -> Processor:
            track = timeline.tracks[index]
            analysis = load_analysis(spec.cache_dir, track.key, spec.preset, track)
            process = chain_processor(timeline.rate, analysis, intensity)
            assert process is not None  # neither `original` nor intensity 0
            return process

        return TrackChains(timeline, chain_of, reach=CHAIN_REACH)
    analysis = load_analysis(spec.cache_dir, spec.source.key, spec.preset, source)
    return chain_processor(source.rate, analysis, intensity)


def renderer_for(spec: StreamSpec, source: Samples | None = None) -> Renderer:
    """The worker's renderer of a stream (analysing the track first if nobody has)."""
    if spec in _renderers:
        _renderers.move_to_end(spec)
        return _renderers[spec]
    if source is None:
        source = open_source(spec.source, spec.cache_dir)
    plan = plan_for(spec, source.length, source.rate)
    window = WindowSettings.from_seconds(source.rate, spec.context_seconds, spec.overlap_seconds)
    renderer = Renderer(source, plan, window, _processor(spec, source), reach=CHAIN_REACH)
    _renderers[spec] = renderer
    if len(_renderers) > RENDERERS_PER_WORKER:
        _renderers.popitem(last=False)
    return renderer


def produce_segment(spec: StreamSpec, rendition: str, index: int) -> tuple[dict[int, int], int]:
    """Render, encode, package and cache the encode unit that holds segment `index`
    (`produce_units`)."""
    return produce_units(spec, rendition, [index])


def produce_units(
    spec: StreamSpec, rendition: str, indices: list[int], listener: bool = False
) -> tuple[dict[int, int], int]:
    """Render, encode, package and cache the encode units that hold `indices`, in order,
    through one ffmpeg (`UnitEncoder`).

    Returns the size in bytes of each segment made or found, and how many
    were made here. Each unit's lock (its first segment's) makes
    processes sharing the cache produce it once: a second producer waits,
    then finds it made, and stops there (the other producer is ahead of it
    on this run; what it has not made is left out of the result). The
    renderer (and with it the track's analysis, under its own lock) is
    ready before a unit's lock is taken: a thread never holds two cache
    locks. When the server asks the job to stop (`hls.preemption`), it
    raises Preempted with what it made, before the next unit or within a
    block of the current one (whose segments not yet stored are dropped);
    asked to stop after its unit, once it has made one.
    listener: someone waits for these units (`UnitEncoder`).
    """
    cache = DiskCache(Path(spec.cache_dir))
    known = _renderers.get(spec)
    source = known.source if known else open_source(spec.source, spec.cache_dir)
    plan = known.plan if known else plan_for(spec, source.length, source.rate)
    per_unit = RENDITIONS[rendition].segments_per_encode
    units = list(dict.fromkeys(plan.unit_of(i, per_unit) for i in indices))
    keys = {i: spec.segment_key(rendition, i) for unit in units for i in unit}
    sizes: dict[int, int] = {}
    missing = []
    for unit in units:
        found = _cached_sizes(cache, {i: keys[i] for i in unit})
        if found is None:
            missing.append(unit)
        else:
            sizes.update(found)
    if not missing:
        return sizes, 0
    runs = UnitEncoder.runs(plan, RENDITIONS[rendition], missing)
    # ffmpeg starts (~50 ms) while the track is analysed and the windows rendered.
    encoder = UnitEncoder(plan, RENDITIONS[rendition], runs[0], source.channels, listener)
    made = 0
    try:
        renderer = renderer_for(spec, source)
        for number, run in enumerate(runs):
            if number:
                encoder = UnitEncoder(plan, RENDITIONS[rendition], run, source.channels, listener)
            for unit in run:
                if made and requested_between_units():  # a listener's unit is done
                    raise EncodeStopped(f"stopped before segment {unit[0]}")
                _chains_ready(renderer, unit)
                # The job's first unit waits for another producer of it, then finds
                # it made; a later one held by another producer is theirs: stop there.
                with cache.lock(*keys[unit[0]], wait=not made) as held:
                    if not held:
                        encoder.abort()
                        return sizes, made
                    found = _cached_sizes(cache, {i: keys[i] for i in unit})
                    if found is not None:  # another producer is ahead on this run
                        sizes.update(found)
                        encoder.abort()
                        return sizes, made
                    stored = len(sizes)
                    try:
                        _encode_and_store(encoder, renderer, cache, keys, sizes)
                    finally:  # a segment stored early counts even if the unit stops
                        made += len(sizes) - stored
    except BaseException as exc:
        encoder.abort()
        if isinstance(exc, EncodeStopped):
            raise Preempted(sizes, made) from None
        raise
    return sizes, made


def _chains_ready(renderer: Renderer, unit: range) -> None:
    """Load the chain of every track a unit's windows read (their analyses take
    cache locks of their own, which must not be taken inside the unit's)."""
    if isinstance(renderer.process, TrackChains):
        plan, context = renderer.plan, renderer.window.context
        origin, stop = unit_input(plan, unit)
        first = max(plan.index_at(origin * FRAME_SAMPLES) - 1, 0)  # its crossfade's window
        renderer.process.load(plan[first].start - context, stop + renderer.tail + context)


def _encode_and_store(
    encoder: UnitEncoder,
    renderer: Renderer,
    cache: DiskCache,
    keys: dict[int, tuple[str, ...]],
    sizes: dict[int, int],
) -> None:
    """Encode the encoder's next unit and cache its segments; adds their sizes to `sizes`.

    A segment is stored as soon as it is encoded (a listener who asked for
    the first of a pair need not wait for the second).
    """

    def store(encoded: EncodedSegment) -> None:
        data = fmp4.media_segment(encoded.index + 1, encoded.base_decode_time, encoded.packets)
        cache.write(keys[encoded.index], data)
        sizes[encoded.index] = len(data)

    for encoded in encoder.encode(renderer, store, stop=requested):
        if encoded.index not in sizes:
            store(encoded)


def _cached_sizes(cache: DiskCache, keys: dict[int, tuple[str, ...]]) -> dict[int, int] | None:
    """Sizes of the unit's segments if every one is in the cache (else it is made again)."""
    try:
        return {index: cache.path(*key).stat().st_size for index, key in keys.items()}
    except FileNotFoundError:
        return None


def segment_pcm16(spec: StreamSpec, index: int) -> bytes:
    """Segment `index` of the processed program as interleaved 16-bit little-endian PCM."""
    renderer = renderer_for(spec)
    seg = renderer.plan[index]
    audio = renderer.program(seg.start, seg.end)
    pcm = np.clip(np.rint(audio.astype(np.float64) * 32767.0), -32768, 32767).astype("<i2")
    return pcm.tobytes()
