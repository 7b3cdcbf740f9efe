"""Real nginx with the project's configuration (nginx/run.sh) in front of real origins,
and a real Chromium page playing through it with hls.js."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.conftest import ROOT, Server, free_port, http_get


@dataclass
class Edge:
    url: str
    process: subprocess.Popen
    prefix: Path

    def get(self, path: str, timeout: float = 60.0) -> tuple[int, dict[str, str], bytes]:
        return http_get(self.url + path, timeout)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)

    def access_log(self) -> list[dict[str, str]]:
        """nginx's log lines (the `edge` format): request, status, cache, upstream."""
        out = []
        for line in (self.prefix / "access.log").read_text().splitlines():
            fields = dict(re.findall(r"(\w+)=(\S+)", line))
            match = re.search(r'"(\w+) (\S+) [^"]*" (\d+)', line)
            if match:
                fields.update(method=match[1], path=match[2], status=match[3])
                out.append(fields)
        return out


def start_edge(origins: list[Server], prefix: Path, env: dict[str, str] | None = None) -> Edge:
    port = free_port()
    netlocs = ",".join(urlsplit(o.url).netloc for o in origins)
    proc = subprocess.Popen(
        ["bash", str(ROOT / "nginx" / "run.sh"), netlocs, str(port), str(prefix)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if http_get(url + "/healthz", timeout=2)[0] == 200:
                return Edge(url, proc, prefix)
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(proc.stdout.read().decode() if proc.stdout else "nginx did not start")


def metric(server: Server, name: str) -> float:
    """One unlabelled sample of the origin's /metrics (a hung origin's stacks on failure)."""
    try:
        _, _, body = server.get("/metrics", timeout=10.0)
    except (TimeoutError, urllib.error.URLError) as exc:
        raise AssertionError(f"{server.url}/metrics hung:\n{server.diagnose()}") from exc
    match = re.search(rf"^{name}(?:_total)? (\S+)$", body.decode(), re.M)
    assert match, name
    return float(match[1])


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Plays `url` with hls.js until `until` s of media have played; records fatal
# errors, each stall (waiting to playing, seconds) and the SHA-256 of every
# fragment the player received.
PLAY_JS = """
async ({url, until, limitMs}) => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const hex = buf => Array.from(new Uint8Array(buf), b => b.toString(16).padStart(2, '0')).join('');
  const audio = document.createElement('audio');
  audio.muted = true;
  document.body.appendChild(audio);
  const log = {errors: [], stalls: [], frags: [], playing: null};
  const digests = [];
  let waitingAt = null;
  const t0 = performance.now();
  audio.addEventListener('playing', () => {
    if (log.playing === null) log.playing = performance.now() - t0;
    if (waitingAt !== null) {
      log.stalls.push([audio.currentTime, (performance.now() - waitingAt) / 1000]);
      waitingAt = null;
    }
  });
  audio.addEventListener('waiting', () => { if (log.playing !== null) waitingAt = performance.now(); });
  // hls.js hands a fragment's buffer to its transmuxer (detached) before
  // FRAG_LOADED: its loader is wrapped to hash the bytes as they arrive.
  class HashingLoader extends Hls.DefaultConfig.loader {
    load(context, config, callbacks) {
      const onSuccess = callbacks.onSuccess;
      callbacks.onSuccess = (response, stats, ctx, details) => {
        const copy = response.data.slice(0);
        digests.push(crypto.subtle.digest('SHA-256', copy).then(
          h => log.frags.push({url: ctx.url, sha: hex(h)})));
        onSuccess(response, stats, ctx, details);
      };
      super.load(context, config, callbacks);
    }
  }
  const hls = new Hls({lowLatencyMode: true, fLoader: HashingLoader});
  hls.on(Hls.Events.ERROR, (_e, d) => { if (d.fatal) log.errors.push(d.details); });
  hls.loadSource(url);
  hls.attachMedia(audio);
  // Not awaited: play() stays pending while nothing can be loaded.
  audio.play().catch(e => log.errors.push(String(e)));
  while (audio.currentTime < until && !log.errors.length && performance.now() - t0 < limitMs) {
    window.playedSeconds = audio.currentTime;
    await sleep(100);
  }
  if (waitingAt !== null) log.stalls.push([audio.currentTime, (performance.now() - waitingAt) / 1000]);
  await Promise.all(digests);
  log.currentTime = audio.currentTime;
  log.buffered = Array.from({length: audio.buffered.length}, (_, i) => [audio.buffered.start(i), audio.buffered.end(i)]);
  hls.destroy();
  return log;
}
"""


def play(context: Any, page_url: str, url: str, until: float, limit: float = 90.0) -> dict:
    """Open `page_url` (a page that loads hls.js) and play `url` from it."""
    page = context.new_page()
    try:
        page.goto(page_url)
        page.wait_for_function("window.Hls !== undefined")
        return dict(page.evaluate(PLAY_JS, {"url": url, "until": until, "limitMs": limit * 1000}))
    finally:
        page.close()
