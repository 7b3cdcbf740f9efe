"""Where the whole-track time goes: CPU of the peer and of our whole process tree.

Run: .venv/bin/python benchmarks/cpu.py [--runs 3] [--only NAME,...]

For each corpus source (benchmarks/corpus.py), alternating runs of the
peer and of a cold server: wall time, CPU seconds (user + system, from
the kernel's accounting of waited children: this process is made the
subreaper of the server's tree, so workers and encoders count when they
exit), and how much of both cores the tree kept busy (CPU / 2 x wall).
The idle server's own CPU (start-up, warm-up) is measured apart and
subtracted. A whole-track ratio can only reach 0.6 when our CPU is at most
1.2 x the peer's, at full use of both cores.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.corpus import PEER_CHAINS, chosen, corpus, written  # noqa: E402
from benchmarks.peer import _first_and_whole, add_peer_encoder_argument, run_peer  # noqa: E402
from tests.conftest import start_server  # noqa: E402

PR_SET_CHILD_SUBREAPER = 36


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def reap(seconds: float = 5.0) -> None:
    """Wait for every descendant left (orphans come to this process)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.02)


def server_cpu(library: Path, cache: Path, preset: str | None) -> tuple[float, float]:
    """Wall time of the whole track (0 when preset is None: start and stop only) and
    the CPU of the server's tree, start-up included."""
    before = children_cpu()
    server = start_server(cache_dir=cache, library=library)
    try:
        time.sleep(0.5)
        whole = _first_and_whole(server, preset)[1] if preset is not None else 0.0
    finally:
        server.stop()
        reap()
    shutil.rmtree(cache, ignore_errors=True)
    return whole, children_cpu() - before


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated source names")
    add_peer_encoder_argument(parser)
    args = parser.parse_args()
    libc = ctypes.CDLL(None)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit("cannot become the subreaper of the server's tree")
    sources = chosen([s for s in corpus(60, False) if s.peer], args.only)
    print(f"{'source':11s} {'peer wall':>9s} {'cpu':>6s} {'ours wall':>9s} {'cpu':>6s}"
          f" {'cpu ratio':>9s} {'cores used':>10s} {'wall ratio':>10s}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for source in sources:
            library, path = written(source, work)
            idle = min(server_cpu(library, work / "idle", None)[1] for _ in range(2))
            rows = []
            for _ in range(args.runs):
                before = children_cpu()
                chain = PEER_CHAINS[source.preset]
                _, peer = run_peer(path, work / "peer", chain, args.peer_encoder)
                peer_cpu = children_cpu() - before
                shutil.rmtree(work / "peer")
                whole, cpu = server_cpu(library, work / "cache", source.preset)
                rows.append((peer, peer_cpu, whole, cpu - idle))
            peer, peer_cpu, whole, cpu = (statistics.median(r[i] for r in rows) for i in range(4))
            cpu_ratio = statistics.median(r[3] / r[1] for r in rows)
            used = statistics.median(r[3] / (2 * r[2]) for r in rows)
            ratio = statistics.median(r[2] / r[0] for r in rows)
            print(f"{source.name:11s} {peer:9.2f} {peer_cpu:6.2f} {whole:9.2f} {cpu:6.2f}"
                  f" {cpu_ratio:9.3f} {used:10.2f} {ratio:10.3f}", flush=True)  # fmt: skip
            shutil.rmtree(work / source.name)


if __name__ == "__main__":
    main()
