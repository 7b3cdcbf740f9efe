"""Albums and queues as streams: what a queue is, its id and its JSON body (SPEC §10).

A queue id carries its definition: the tracks' ids, the crossfade and the
gain mode, packed and base64url-encoded behind a `q`. So the same body always
gives the same id, and every origin of a fleet (with its own cache or not,
after a restart too) reads a queue from its URL alone, with nothing stored
and nothing to look up. Pure: no I/O, no numpy.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
from dataclasses import dataclass
from typing import Any

from hls.errors import BadParameter, NotFound

ID_VERSION = 1
GAINS = ("track", "album")
MAX_TRACKS = 100
MAX_CROSSFADE_SECONDS = 12.0
TRACK_ID_BYTES = 8  # the catalog's ids: 16 hex digits
_HEADER = struct.Struct(">BBH")  # version, gain, crossfade in milliseconds
_LONGEST = -(-4 * (_HEADER.size + TRACK_ID_BYTES * MAX_TRACKS) // 3)
QUEUE_ID = re.compile(rf"^q[A-Za-z0-9_-]{{16,{_LONGEST}}}$")
TRACK_ID = re.compile(r"^[0-9a-f]{16}$")


@dataclass(frozen=True)
class Queue:
    """Tracks played as one timeline: in order, joined with a crossfade (0: none)."""

    tracks: tuple[str, ...]
    crossfade_ms: int = 0
    gain: str = "track"

    @property
    def id(self) -> str:
        header = _HEADER.pack(ID_VERSION, GAINS.index(self.gain), self.crossfade_ms)
        packed = header + b"".join(bytes.fromhex(t) for t in self.tracks)
        return "q" + base64.urlsafe_b64encode(packed).rstrip(b"=").decode()

    @classmethod
    def from_id(cls, text: str) -> Queue:
        """The queue an id names; NotFound for anything that is not one of ours."""
        unknown = NotFound(f"no queue with id {text[:40]!r}")
        if not QUEUE_ID.match(text):
            raise unknown
        try:
            packed = base64.urlsafe_b64decode(text[1:] + "=" * (-len(text[1:]) % 4))
        except (binascii.Error, ValueError):
            raise unknown from None
        body = packed[_HEADER.size :]
        if len(packed) < _HEADER.size or not body or len(body) % TRACK_ID_BYTES:
            raise unknown
        version, gain, crossfade_ms = _HEADER.unpack_from(packed)
        if version != ID_VERSION or gain >= len(GAINS):
            raise unknown
        tracks = tuple(
            body[i : i + TRACK_ID_BYTES].hex() for i in range(0, len(body), TRACK_ID_BYTES)
        )
        queue = cls(tracks, crossfade_ms, GAINS[gain])
        if len(tracks) > MAX_TRACKS or crossfade_ms > 1000 * MAX_CROSSFADE_SECONDS:
            raise unknown
        if queue.id != text:  # one spelling per queue, as for intensities
            raise unknown
        return queue

    @classmethod
    def from_body(cls, body: Any) -> Queue:
        """The queue a POST body describes; BadParameter saying what is wrong."""
        if not isinstance(body, dict):
            raise BadParameter("the body must be a JSON object with a list of track ids")
        extra = set(body) - {"tracks", "crossfade", "gain"}
        if extra:
            raise BadParameter(f"unknown field(s) {', '.join(sorted(extra))[:80]}")
        tracks = body.get("tracks")
        if not isinstance(tracks, list) or not tracks:
            raise BadParameter("tracks must be a non-empty list of track ids")
        if len(tracks) > MAX_TRACKS:
            raise BadParameter(f"a queue holds at most {MAX_TRACKS} tracks, got {len(tracks)}")
        for tid in tracks:
            if not isinstance(tid, str) or not TRACK_ID.match(tid):
                raise BadParameter(f"not a track id: {str(tid)[:40]!r}")
        crossfade = body.get("crossfade", 0)
        if isinstance(crossfade, bool) or not isinstance(crossfade, int | float):
            raise BadParameter("crossfade must be a number of seconds")
        if not math.isfinite(crossfade) or not 0 <= crossfade <= MAX_CROSSFADE_SECONDS:
            raise BadParameter(
                f"crossfade must be in [0, {MAX_CROSSFADE_SECONDS:g}] seconds, got {crossfade}"
            )
        gain = body.get("gain", "track")
        if gain not in GAINS:
            raise BadParameter(f"gain must be one of {', '.join(GAINS)}, got {str(gain)[:20]!r}")
        return cls(tuple(tracks), round(crossfade * 1000), gain)
