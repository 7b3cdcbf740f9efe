"""Signed stream links (SPEC §9): `/s/{expires}/{signature}/hls/{track}/...`.

A link authorizes one track until `expires` (Unix seconds): every preset,
intensity, rendition and file of it, so a player switches preset without a
new link, and the relative URIs of the playlists inherit the prefix. The
signature is the one nginx's `secure_link_md5 "$expires/$track KEY"`
computes (MD5, base64url without padding): nginx checks a link before the
origin is asked (nginx/), the origin checks it again. MD5 is what that
module offers; the key stays secret and the message carries the expiry, so
a link cannot be stretched or moved to another track without the key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass

SIGNATURE = re.compile(r"^[A-Za-z0-9_-]{22}$")
EXPIRES = re.compile(r"^\d{1,12}$")


class LinkRefused(Exception):
    """A link that is missing, malformed, tampered with or expired (403)."""


def signature(key: str, expires: int, track: str) -> str:
    digest = hashlib.md5(f"{expires}/{track} {key}".encode(), usedforsecurity=False).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class Signer:
    key: str
    ttl_seconds: int

    def prefix(self, track: str, now: float | None = None) -> str:
        """The path prefix of a link to `track` valid `ttl_seconds` from now."""
        expires = int(time.time() if now is None else now) + self.ttl_seconds
        return f"/s/{expires}/{signature(self.key, expires, track)}"

    def check(
        self, expires: str | None, given: str | None, track: str, now: float | None = None
    ) -> None:
        if expires is None or given is None:
            raise LinkRefused("this server streams only signed links (/s/{expires}/{signature}/…)")
        if not EXPIRES.match(expires) or not SIGNATURE.match(given):
            raise LinkRefused("malformed link signature")
        expected = signature(self.key, int(expires), track)
        if not hmac.compare_digest(expected.encode(), given.encode()):
            raise LinkRefused("bad link signature")
        if int(expires) < (time.time() if now is None else now):
            raise LinkRefused("link expired")
