"""The conformance matrix: every client × every playlist, cold, in real time (tests/clients.py)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import soundfile as sf

from tests import clients
from tests.conftest import Server, music_file, start_server, synth_program

SEGMENT_SECONDS = 5  # short rows keep the matrix inside the suite's budget
SECONDS = 9.5  # 1 + 1.7 + 5 + 1.8 s segments: a live reload (one target, 5 s) is crossed


@pytest.fixture(scope="module")
def matrix_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Server, clients.Stream]]:
    lib = tmp_path_factory.mktemp("clients-lib")
    real = music_file("wesnoth-battle-epic.ogg")
    if real is not None:  # real music, cut off the 1024-sample grid
        audio, rate = sf.read(
            str(real), dtype="float32", start=44100 * 20 + 333, frames=round(44100 * SECONDS)
        )
    else:
        audio, rate = synth_program(SECONDS, seed=14), 44100
    sf.write(lib / "excerpt.flac", audio, rate, subtype="PCM_24")
    server = start_server(
        "--segment-seconds", str(SEGMENT_SECONDS), "--workers", "2",
        cache_dir=tmp_path_factory.mktemp("clients-cache"), library=lib,
    )  # fmt: skip
    try:
        yield server, clients.Stream(server.track_id("excerpt"), len(audio), rate, audio.shape[1])
    finally:
        server.stop()


@pytest.mark.parametrize(
    "group", [("hlsdemux2", "hlsdemux", "ffmpeg"), clients.BROWSERS], ids=["native", "browsers"]
)
def test_every_client_plays_every_playlist_whole_from_a_cold_start(
    matrix_server: tuple[Server, clients.Stream], group: tuple[str, ...]
) -> None:
    server, stream = matrix_server
    missing = {c: why for c, why in clients.available().items() if c in group and why}
    if missing:
        pytest.skip(str(missing))
    cells = clients.run_matrix(server, stream, group)
    print("\n" + clients.table(cells))
    assert len(cells) == len(group) * len(clients.ROWS)
    known = [c for c in cells if (c.client, c.row) in clients.KNOWN_CLIENT_BUGS]
    for cell in known:
        print("known client bug:", cell.line(), clients.KNOWN_CLIENT_BUGS[cell.client, cell.row])
    judged = [c for c in cells if c not in known]
    assert all(cell.ok for cell in judged), "\n" + clients.table([c for c in judged if not c.ok])


def test_a_lost_segment_shows_as_a_lag() -> None:
    # The lag check is what catches a client that skips or repeats audio.
    ref = np.random.default_rng(3).standard_normal((44100 * 6, 2)).astype(np.float32)
    durations = [1.0, 2.0, 3.0]
    assert clients.segment_lags(ref, ref, durations, 44100) == [0, 0, 0]
    skipped = np.concatenate([ref[:44100], ref[44100 + 300 :]])
    assert clients.segment_lags(skipped, ref, durations, 44100)[1:] == [-300, -300]
    assert clients.segment_lags(ref[: 44100 * 3], ref, durations, 44100)[2] == -999999
