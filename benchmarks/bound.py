"""The floor of the whole-track ratio on this machine: what encoding alone costs.

Run: .venv/bin/python benchmarks/bound.py [--only NAME,...]

Every design must AAC-encode the whole processed track with ffmpeg's native
encoder (the peer does too). For each corpus source (benchmarks/corpus.py)
this measures, one process at a time:
  peer       the peer's whole track (its chain and encode in one ffmpeg,
             `--peer-encoder` as in benchmarks/peer.py), wall;
  encode     ffmpeg's AAC encode alone of the peer-processed audio with our
             `aac` rendition's settings (f32 on stdin, as our workers feed
             it), CPU seconds;
and once, the machine's two-core scaling: two identical encodes at once,
their throughput against one alone (2.0 would be two full cores).
The floor printed is encode / (scaling x peer): the whole-track ratio of a
design that spent nothing but the encode and kept both cores busy to the
end. Our DSP, pre-roll and idle time come on top of it.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.corpus import PEER_CHAINS, corpus  # noqa: E402
from benchmarks.peer import PEER_ENCODERS, add_peer_encoder_argument, run_peer  # noqa: E402


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def processed(source: Path, chain: str, out: Path) -> tuple[Path, int, int]:
    """The peer chain's output as f32le, with its rate and channel count."""
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=sample_rate,channels",
         "-of", "csv=p=0", str(source)],
        capture_output=True, text=True, check=True,
    ).stdout.split(",")  # fmt: skip
    rate, channels = int(probe[0]), int(probe[1])
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(source), "-af", chain,
         "-f", "f32le", str(out)],
        check=True,
    )  # fmt: skip
    return out, rate, channels


def encode_argv(pcm: Path, rate: int, channels: int, out: Path, encoder: str) -> list[str]:
    return [
        "ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "f32le", "-ar", str(rate),
        "-ac", str(channels), "-i", str(pcm), "-c:a", "aac", *PEER_ENCODERS[encoder], "-f", "adts", str(out),
    ]  # fmt: skip


def encode_cpu(pcm: Path, rate: int, channels: int, out: Path, encoder: str) -> float:
    before = _children_cpu()
    subprocess.run(encode_argv(pcm, rate, channels, out, encoder), check=True)
    return _children_cpu() - before


def two_core_scaling(pcm: Path, rate: int, channels: int, work: Path, encoder: str) -> float:
    """Throughput of two encodes at once over one alone (wall times)."""
    started = time.perf_counter()
    subprocess.run(encode_argv(pcm, rate, channels, work / "alone.aac", encoder), check=True)
    alone = time.perf_counter() - started
    started = time.perf_counter()
    procs = [
        subprocess.Popen(encode_argv(pcm, rate, channels, work / f"pair{i}.aac", encoder))
        for i in range(2)
    ]
    for proc in procs:
        proc.wait()
    both = time.perf_counter() - started
    return 2 * alone / both


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="", help="comma-separated source names")
    parser.add_argument("--runs", type=int, default=2)
    add_peer_encoder_argument(parser)
    args = parser.parse_args()
    sources = [s for s in corpus(7.0, False) if s.peer]
    if args.only:
        sources = [s for s in sources if s.name in args.only.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        scaling = None
        for source in sources:
            folder = work / source.name
            folder.mkdir()
            path = source.make(folder)
            chain = PEER_CHAINS[source.preset]
            pcm, rate, channels = processed(path, chain, folder / "processed.f32")
            if scaling is None:
                scaling = statistics.median(
                    two_core_scaling(pcm, rate, channels, folder, "ours") for _ in range(args.runs)
                )
                print(f"two-core scaling: {scaling:.2f} (two encodes at once against one)")
            peers, encodes = [], []
            for run in range(args.runs):
                peers.append(run_peer(path, folder / f"peer{run}", chain, args.peer_encoder)[1])
                encodes.append(encode_cpu(pcm, rate, channels, folder / "encode.aac", "ours"))
            peer, encode = statistics.median(peers), statistics.median(encodes)
            floor = encode / (scaling * peer)
            rows.append((source.name, source.preset, peer, encode, floor))
            print(
                f"{source.name}: peer whole {peer:.2f} s, encode alone {encode:.2f} s CPU "
                f"({encode / peer:.2f} of the peer), floor {floor:.3f}"
            )
    print(f"\n{'source':12} {'preset':9} {'peer s':>7} {'encode s':>9} {'floor':>6}")
    for name, preset, peer, encode, floor in rows:
        print(f"{name:12} {preset:9} {peer:7.2f} {encode:9.2f} {floor:6.3f}")
    print(f"worst floor {max(r[4] for r in rows):.3f} (target for the whole track: 0.60)")


if __name__ == "__main__":
    main()
