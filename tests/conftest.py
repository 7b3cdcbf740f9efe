"""Shared fixtures: real tracks (or synthesized ones), real server processes."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
MUSIC = ROOT.parent / "shared" / "music"
START_TIMEOUT = 60.0


def music_file(name: str) -> Path | None:
    path = MUSIC / name
    return path if path.is_file() else None


def synth_program(
    seconds: float, rate: int = 44100, channels: int = 2, seed: int = 0
) -> np.ndarray:
    """Music-like test material: decaying tones on a beat grid plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    beat = t % 0.5
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * np.exp(-beat * 4) + 0.2 * np.sin(2 * np.pi * 331 * t)
    out = np.stack([tone * (0.8 + 0.2 * c) for c in range(channels)], axis=1)
    out += 0.02 * rng.standard_normal(out.shape)
    return (0.7 * out / np.abs(out).max()).astype(np.float32)


def put_track(library: Path, name: str, seconds: float = 74.0) -> Path:
    """Copy a real track into `library` (never into the repository), or synthesize one."""
    library.mkdir(parents=True, exist_ok=True)
    real = music_file(name)
    if real is not None:
        return Path(shutil.copy(real, library / name))
    target = library / (Path(name).stem + ".flac")
    sf.write(target, synth_program(seconds), 44100, subtype="PCM_16")
    return target


def put_excerpt(library: Path, name: str, seconds: float) -> Path:
    """The first `seconds` of a real track as FLAC in `library`, or a synthesized one."""
    real = music_file(name)
    if real is None:
        return put_track(library, name, seconds)
    library.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(str(real)) as f:
        rate = f.samplerate
        audio = f.read(round(seconds * rate), dtype="float32")
    target = library / (Path(name).stem + ".flac")
    sf.write(target, audio, rate, subtype="PCM_24")
    return target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    cache_dir: Path
    library: Path
    log: Path | None = None  # the server's stdout and stderr

    def diagnose(self) -> str:
        """The server's Python stacks (it dumps them on SIGUSR1) and its last output."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGUSR1)
            time.sleep(1.0)
        if self.log is None or not self.log.is_file():
            return "(no log)"
        return self.log.read_text(errors="replace")[-20000:]

    def get(self, path: str, timeout: float = 60.0) -> tuple[int, dict[str, str], bytes]:
        return http_get(self.url + path, timeout)

    def json(self, path: str) -> dict:
        status, _, body = self.get(path)
        assert status == 200, (status, body[:300])
        return json.loads(body)

    def track_id(self, path_part: str) -> str:
        for track in self.json("/api/tracks")["tracks"]:
            if path_part in track["path"]:
                return str(track["id"])
        raise KeyError(path_part)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def kill_tree(server: Server) -> None:
    """SIGKILL the server and its workers at once, as a crashed machine would go."""
    for pid in process_tree(server.process.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    server.process.wait(10)


def tree_pss_mb(root: int) -> float:
    """Proportional set size of `root` and its descendants, summed, in MB."""
    total = 0
    for pid in process_tree(root):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


class PeakPss:
    """Samples the summed PSS of a process tree in a thread while in use: `peak` (MB)."""

    def __init__(self, root: int, interval: float = 0.05) -> None:
        self.root, self.interval = root, interval
        self.peak = tree_pss_mb(root)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, tree_pss_mb(self.root))
            time.sleep(self.interval)

    def __enter__(self) -> PeakPss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


def http_get(url: str, timeout: float = 60.0) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def start_server(
    *args: str, cache_dir: Path, library: Path | None, env: dict | None = None
) -> Server:
    cmd = [
        sys.executable,
        "-m",
        "hls",
        "serve",
        "--port",
        "0",
        "--cache-dir",
        str(cache_dir),
        *args,
    ]
    if library is not None:
        cmd += ["--library", str(library)]
    process = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=ROOT, env={**os.environ, **(env or {})},
    )  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT
    assert process.stdout is not None
    output = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        output.append(line)
        if not line:
            break
        match = re.search(r"listening on (http://\S+?)/?$", line.strip())
        if match:
            # Keep draining output into a file, so the server never blocks on a
            # full pipe and a failing test can show what it said.
            log = cache_dir.parent / f"server-{process.pid}.log"
            with log.open("w") as sink:
                sink.writelines(output)
                sink.flush()
                subprocess.Popen(["cat"], stdin=process.stdout, stdout=sink)
            return Server(match.group(1), process, cache_dir, library or Path(), log)
    process.kill()
    raise RuntimeError("server did not start: " + "".join(output))


@pytest.fixture(scope="session")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lib = tmp_path_factory.mktemp("library")
    put_track(lib, "wesnoth-battle-epic.ogg", 74.0)
    return lib


@pytest.fixture(scope="session")
def server(library: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One origin for the end-to-end tests: 10 s segments keep them quick."""
    srv = start_server(
        "--segment-seconds", "10", "--workers", "2",
        cache_dir=tmp_path_factory.mktemp("cache"), library=library,
    )  # fmt: skip
    yield srv
    srv.stop()
