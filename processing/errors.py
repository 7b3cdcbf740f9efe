"""Domain exceptions of the processing pipeline, with exact messages."""

from __future__ import annotations


class ProcessingError(Exception):
    """Base class: something went wrong turning a source into a segment."""


class DecodeError(ProcessingError):
    """The source cannot be decoded (corrupt, unsupported, vanished)."""


class EncodeError(ProcessingError):
    """ffmpeg failed to encode; carries the tail of its stderr."""

    def __init__(self, message: str, stderr: bytes = b"") -> None:
        tail = stderr.decode("utf-8", "replace").strip().splitlines()[-5:]
        detail = " | ".join(tail)
        super().__init__(f"{message}: {detail}" if detail else message)
        self.stderr_tail = detail


class EncodeStopped(Exception):
    """An encode stopped because its caller asked it to (not a failure): its encoder
    is killed and the unit it was encoding is not made."""
