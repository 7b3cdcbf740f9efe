"""A real player: headless Chromium (Debian package) running hls.js from npm against the origin."""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Server, put_track, start_server
from tests.helpers import parse_playlist

CHROMIUM = shutil.which("chromium")
HLS_JS = ROOT / "node_modules" / "hls.js" / "dist" / "hls.min.js"
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or not HLS_JS.is_file(), reason="make test installs chromium and hls.js"
)
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]  # fmt: skip

# Runs in the page: plays a playlist, records events, seeks across a boundary.
PLAYER_JS = """
async ({url, rendition, seekTo, crossUntil, minBuffered}) => {
  const audio = document.createElement('audio');
  audio.muted = true;
  document.body.appendChild(audio);
  const log = {waiting: [], errors: [], playingAfterMs: null};
  const started = performance.now();
  const hls = new Hls({lowLatencyMode: true});
  hls.on(Hls.Events.ERROR, (_e, d) => { if (d.fatal) log.errors.push(d.details); });
  audio.addEventListener('playing', () => {
    if (log.playingAfterMs === null) log.playingAfterMs = performance.now() - started;
  });
  // Pin the rendition under test: the level whose playlist is {rendition}/index.m3u8.
  hls.on(Hls.Events.MANIFEST_PARSED, () => {
    const pinned = hls.levels.findIndex(l => l.url[0].includes(`/${rendition}/index.m3u8`));
    if (pinned < 0) log.errors.push(`no level for ${rendition}`);
    else { hls.currentLevel = pinned; hls.loadLevel = pinned; }
  });
  hls.loadSource(url);
  hls.attachMedia(audio);
  await audio.play().catch(e => log.errors.push(String(e)));
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const deadline = performance.now() + 60000;
  const buffered = () => Array.from({length: audio.buffered.length},
      (_, i) => [audio.buffered.start(i), audio.buffered.end(i)]);
  if (seekTo !== null) {
    while (performance.now() < deadline && (!audio.buffered.length || audio.buffered.end(0) < minBuffered))
      await sleep(100);
    audio.currentTime = seekTo;
    await new Promise(r => audio.addEventListener('seeked', r, {once: true}));
    await sleep(200);
  }
  audio.addEventListener('waiting', () => log.waiting.push(audio.currentTime));
  const wallStart = performance.now(), mediaStart = audio.currentTime;
  while (performance.now() < deadline && audio.currentTime < crossUntil && !log.errors.length)
    await sleep(100);
  log.speed = (audio.currentTime - mediaStart) / ((performance.now() - wallStart) / 1000);
  while (performance.now() < deadline && (!audio.buffered.length || audio.buffered.end(0) < minBuffered))
    await sleep(100);
  log.buffered = buffered();
  log.currentTime = audio.currentTime;
  const complete = () => hls.levels.some(l => l.details && l.details.live === false);
  while (performance.now() < deadline && !complete()) await sleep(100);
  log.ended = complete();
  log.level = hls.levels[hls.currentLevel]?.url[0];
  log.duration = audio.duration;
  hls.destroy();
  return log;
}
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    with tempfile.TemporaryDirectory() as profile, playwright_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield context
        context.close()


def play(browser: Any, server: Server, url: str, **options: Any) -> dict:
    page = browser.new_page()
    try:
        page.goto(server.url + "/")
        page.wait_for_function("window.Hls !== undefined")
        return dict(
            page.evaluate(PLAYER_JS, {"seekTo": None, "minBuffered": 0, **options, "url": url})
        )
    finally:
        page.close()


@pytest.mark.parametrize("rendition", ["aac", "aac-lo", "flac"])
def test_buffering_is_continuous_across_seams(browser: Any, server: Server, rendition: str) -> None:
    tid = server.track_id("battle-epic")
    master = "master-lossless.m3u8" if rendition == "flac" else "master.m3u8"
    url = f"/hls/{tid}/adaptive/1.00/{master}"
    # Buffer several segments, seek 2 s before the 5th boundary (past the ramp), play across it.
    _, _, vod = server.get(f"/hls/{tid}/adaptive/1.00/{rendition}/vod.m3u8")
    boundary = sum(seg.duration for seg in parse_playlist(vod).segments[:5])
    log = play(
        browser, server, url, rendition=rendition,
        seekTo=boundary - 2.0, crossUntil=boundary + 1.0, minBuffered=boundary + 5.0,
    )  # fmt: skip
    print(rendition, log)
    assert not log["errors"], log
    assert log["playingAfterMs"] is not None
    assert len(log["buffered"]) == 1 and log["buffered"][0][1] >= boundary + 5.0, log
    assert log["waiting"] == [], log
    duration = next(t["duration"] for t in server.json("/api/tracks")["tracks"] if t["id"] == tid)
    assert log["level"].endswith(f"/{rendition}/index.m3u8"), log
    assert log["ended"], log  # the playlist has ENDLIST by now
    # The media's duration: the source's; AAC adds its priming frame (in segment 0's EXTINF)
    # and pads the last frame to 1024 samples, and the browser's buffer ends where the frames do.
    samples = round(duration * 44100)
    if rendition != "flac":
        samples = 1024 + math.ceil(samples / 1024) * 1024
    assert abs(log["duration"] - samples / 44100) < 0.001, log


def test_cold_start_plays_across_the_first_seams_at_normal_speed(
    browser: Any, server: Server
) -> None:
    tid = server.track_id("battle-epic")
    url = f"/hls/{tid}/gentle/0.70/master.m3u8"  # a stream nobody has asked for yet
    # 12 s of playback crosses the first three seams (1, 4.3 s ramp, then 10 s segments).
    log = play(browser, server, url, rendition="aac", crossUntil=12.0, minBuffered=12.0)
    print(f"cold start: playing after {log['playingAfterMs']:.0f} ms", log)
    assert not log["errors"], log
    assert log["waiting"] == [], log
    assert 0.9 < log["speed"] < 1.1, log
    assert len(log["buffered"]) == 1, log


def test_the_next_track_starts_at_once_while_the_last_one_is_produced(
    browser: Any, tmp_path: Path
) -> None:
    # One worker, busy with a background run of a long track (seconds of
    # encoding): a listener who starts another track is playing as fast as
    # on an idle server (hls.preemption), not after that run.
    lib = tmp_path / "lib"
    put_track(lib, "drascula-track2.ogg", 198.0)
    put_track(lib, "wesnoth-battle-epic.ogg", 74.0)
    server = start_server("--workers", "1", cache_dir=tmp_path / "cache", library=lib)
    try:
        last = f"/hls/{server.track_id('drascula')}/punchy/1.00"
        assert server.get(f"{last}/aac/index.m3u8")[0] == 200  # its background starts
        time.sleep(0.5)
        url = f"/hls/{server.track_id('battle')}/punchy/1.00/master.m3u8"
        log = play(browser, server, url, rendition="aac", crossUntil=3.0, minBuffered=3.0)
        print(f"next track: playing after {log['playingAfterMs']:.0f} ms", log)
        assert not log["errors"] and log["waiting"] == [], log
        assert log["playingAfterMs"] < 1500, log  # after the run: 3-5 s
    finally:
        server.stop()


def test_the_web_player_changes_preset_without_a_gap(browser: Any, server: Server) -> None:
    # The page's own controls: play a track, seek into it, pick another
    # preset. The new stream loads from the position (its VOD playlist, the
    # segment under the listener made first) while the old one plays on;
    # they swap at the position reached. Playback goes on (the swap itself
    # costs ~30 ms), and after it is the new preset's stream; the old page
    # went silent for the cold segment (1-2 s; restarting at 0 before that).
    page = browser.new_page()
    try:
        page.goto(server.url + "/")
        # An intensity no other test asks for: its streams are cold here, and
        # the ones it makes leave the others' cold too (the server is shared).
        page.evaluate(
            "document.getElementById('audio').muted = true;"
            " document.getElementById('intensity').value = '0.45'"
        )
        page.click("li")
        page.wait_for_function(
            "() => { const a = document.getElementById('audio');"
            " return a.seekable.length && a.seekable.end(0) > 40 && a.currentTime > 0.2; }",
            timeout=30000,
        )
        page.evaluate("document.getElementById('audio').currentTime = 35")
        page.wait_for_function("document.getElementById('audio').currentTime > 35.3", timeout=30000)
        page.evaluate(
            "window.samples = []; setInterval(() => { const a = document.getElementById('audio');"
            " window.samples.push([performance.now() / 1000, a.currentTime, a.paused]); }, 100)"
        )
        page.select_option("#preset", "warm")
        page.wait_for_function(
            "document.getElementById('status').textContent.includes('switched after')",
            timeout=30000,
        )
        page.wait_for_timeout(1500)
        state = page.evaluate(
            "() => ({url: hls.url, status: document.getElementById('status').textContent,"
            " samples: window.samples, elements: document.querySelectorAll('audio').length})"
        )
        samples = state.pop("samples")
        print("after the preset change:", state, f"{len(samples)} samples")
        assert state["url"].endswith("/warm/0.45/master-vod.m3u8"), state
        assert state["elements"] == 1, state
        wall = samples[-1][0] - samples[0][0]
        played = samples[-1][1] - samples[0][1]
        assert wall > 1.5 and not any(paused for _, _, paused in samples), samples
        # Media time kept pace with the clock across the swap: no gap, no jump.
        assert 0.85 * wall < played < 1.15 * wall + 0.2, (wall, played, samples)
        for (t0, a0, _), (t1, a1, _) in zip(samples, samples[1:], strict=False):
            assert 0.0 <= a1 - a0 <= (t1 - t0) + 0.25, (t0, a0, t1, a1)
            if t1 - t0 > 0.05:
                assert a1 - a0 > 0.3 * (t1 - t0) - 0.05, (t0, a0, t1, a1)
    finally:
        page.close()
