"""HTTP-facing errors and the one table that maps every domain error to a status."""

from __future__ import annotations

from hls.signing import LinkRefused
from processing.errors import DecodeError, EncodeError
from storage.errors import CacheWriteError, TrackNotFound


class HTTPError(Exception):
    """An error the server answers with, as JSON {"error", "detail"}."""

    status = 500
    error = "internal error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class BadParameter(HTTPError):
    status, error = 400, "bad parameter"


class NotFound(HTTPError):
    status, error = 404, "not found"


class Overloaded(HTTPError):
    status, error = 503, "overloaded"


class NotReady(HTTPError):
    """A blocking playlist reload whose segment did not come in time (rfc8216bis §6.2.5.2)."""

    status, error = 503, "segment not ready"


# Domain exception → (status, error), looked up along the class hierarchy.
STATUS_TABLE: dict[type[BaseException], tuple[int, str]] = {
    TrackNotFound: (404, "unknown track"),
    LinkRefused: (403, "forbidden"),
    DecodeError: (422, "source cannot be decoded"),
    EncodeError: (500, "encoding failed"),
    CacheWriteError: (503, "cache unavailable"),
}


def classify(exc: BaseException) -> tuple[int, str, str]:
    """(status, error, detail) for any exception raised while serving."""
    if isinstance(exc, HTTPError):
        return exc.status, exc.error, exc.detail
    for cls in type(exc).__mro__:
        if cls in STATUS_TABLE:
            status, error = STATUS_TABLE[cls]
            return status, error, str(exc)
    return 500, "internal error", "unexpected server error"
