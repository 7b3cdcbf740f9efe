"""Command line: parses arguments, builds settings, hands over. No logic of its own."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from hls.queues import GAINS, MAX_CROSSFADE_SECONDS, MAX_TRACKS
from hls.settings import SETTINGS, Settings, from_sources
from processing.params import PRESET_NAMES
from processing.renditions import RENDITIONS

RENDITION_NAMES = tuple(RENDITIONS)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hls-origin", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the library over HLS")
    for setting in SETTINGS:
        serve.add_argument(
            setting.flag, type=setting.type, default=None,
            help=f"{setting.help} [env {setting.env}]",
        )  # fmt: skip
    render = commands.add_parser(
        "render", help="render a whole track (or a queue of several) in one pass: the reference"
    )
    render.add_argument("sources", type=Path, nargs="+", metavar="SOURCE")
    render.add_argument("out", type=Path, help="output .wav or .flac")
    render.add_argument("--preset", choices=PRESET_NAMES, default="adaptive")
    render.add_argument("--intensity", type=float, default=1.0)
    _queue_options(render)
    package = commands.add_parser(
        "package", help="write a complete static VOD HLS package of a track (or a queue)"
    )
    package.add_argument("sources", type=Path, nargs="+", metavar="SOURCE")
    package.add_argument("outdir", type=Path)
    package.add_argument("--preset", choices=PRESET_NAMES, default="adaptive")
    package.add_argument("--intensity", type=float, default=1.0)
    _queue_options(package)
    package.add_argument(
        "--rendition", nargs="+", choices=RENDITION_NAMES, default=list(RENDITION_NAMES),
        dest="renditions", help="renditions to include (default: all)",
    )  # fmt: skip
    analyze = commands.add_parser(
        "analyze", help="loudness before/after and the chain's parameters"
    )
    analyze.add_argument("source", type=Path)
    analyze.add_argument("--preset", choices=PRESET_NAMES, default="adaptive")
    analyze.add_argument("--json", action="store_true", help="print JSON instead of a table")
    analyze.add_argument("--plot", type=Path, metavar="FILE.png", help="draw loudness and spectrum")
    return parser


def _queue_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--crossfade", type=float, default=0.0, metavar="SECONDS",
        help=f"several sources: crossfade each join (0 to {MAX_CROSSFADE_SECONDS:g} s)",
    )  # fmt: skip
    parser.add_argument(
        "--gain", choices=GAINS, default="track",
        help="several sources: level each track (track) or the whole (album)",
    )  # fmt: skip


def _check_sources(args: argparse.Namespace) -> None:
    if not 0.0 <= args.intensity <= 1.0:
        raise SystemExit(f"--intensity must be in [0, 1], got {args.intensity}")
    if not 0.0 <= args.crossfade <= MAX_CROSSFADE_SECONDS:
        raise SystemExit(
            f"--crossfade must be in [0, {MAX_CROSSFADE_SECONDS:g}], got {args.crossfade}"
        )
    if len(args.sources) > MAX_TRACKS:
        raise SystemExit(f"hls-origin: at most {MAX_TRACKS} sources, got {len(args.sources)}")
    for source in args.sources:
        if not source.is_file():
            raise SystemExit(f"hls-origin: {source} is not a file")


def _analyze(args: argparse.Namespace) -> None:
    from processing.report import build_report, plot

    with tempfile.TemporaryDirectory() as scratch:
        report, before, after = build_report(args.source, args.preset, Path(scratch))
    if args.plot is not None:
        plot(report, before, after, args.plot)
    print(json.dumps(report.to_json(), indent=2) if args.json else report.table())


async def _serve(settings: Settings) -> None:
    from aiohttp import web

    from hls.app import create_app

    if settings.library is not None and not settings.library.is_dir():
        raise SystemExit(f"hls-origin: library {settings.library} is not a directory")
    # Cancel a handler whose client went away: work it alone waited for is then
    # dropped from the queue (shared work is shielded and goes on).
    runner = web.AppRunner(create_app(settings), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else settings.port
    print(f"hls-origin listening on http://{settings.host}:{port}/", flush=True)
    # SIGTERM (service managers, containers) stops it as cleanly as Ctrl-C:
    # requests in flight are answered, the workers and encoders shut down.
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await stopping.wait()
    finally:
        await runner.cleanup()


def _package(args: argparse.Namespace) -> None:
    from hls.package import package
    from processing.params import canonical_intensity

    _check_sources(args)
    intensity = canonical_intensity(args.intensity)
    master = package(
        args.sources, args.outdir, args.preset, intensity, args.renditions,
        crossfade=args.crossfade, gain=args.gain,
    )  # fmt: skip
    print(f"wrote {master}")


def _render(args: argparse.Namespace) -> None:
    from processing.render import render_file

    _check_sources(args)
    with tempfile.TemporaryDirectory() as scratch:
        render_file(
            args.sources, args.out, args.preset, args.intensity, Path(scratch),
            crossfade=args.crossfade, gain=args.gain,
        )  # fmt: skip
    print(f"wrote {args.out}")


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "serve":
        # `kill -USR1` prints every thread's Python stack to stderr: how a hung
        # origin is diagnosed without stopping it.
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        try:
            settings = from_sources(vars(args), os.environ)
        except ValueError as exc:
            raise SystemExit(str(exc)) from exc
        try:
            asyncio.run(_serve(settings))
        except KeyboardInterrupt:
            pass
    elif args.command == "render":
        _render(args)
    elif args.command == "package":
        _package(args)
    elif args.command == "analyze":
        _analyze(args)
    sys.exit(0)
