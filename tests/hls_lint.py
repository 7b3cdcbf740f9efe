"""A playlist linter: RFC 8216 / rfc8216bis MUST rules and the audio points of
Apple's HLS Authoring Specification, for the playlists this origin writes.

Each function returns a list of problems (empty: clean), so a test shows them
all at once. It is written from the documents, not from our builder: it
parses the text itself.
"""

from __future__ import annotations

import re
from decimal import Decimal

MEDIA_SEGMENT_TAGS = ("#EXTINF", "#EXT-X-BYTERANGE", "#EXT-X-DISCONTINUITY", "#EXT-X-MAP")
MEDIA_TAGS = (
    "#EXT-X-TARGETDURATION", "#EXT-X-MEDIA-SEQUENCE", "#EXT-X-PLAYLIST-TYPE",
    "#EXT-X-ENDLIST", "#EXT-X-DISCONTINUITY-SEQUENCE", "#EXT-X-I-FRAMES-ONLY",
    *MEDIA_SEGMENT_TAGS,
)  # fmt: skip
MASTER_TAGS = ("#EXT-X-STREAM-INF", "#EXT-X-MEDIA", "#EXT-X-I-FRAME-STREAM-INF")
ONCE = (
    "#EXT-X-VERSION", "#EXT-X-TARGETDURATION", "#EXT-X-MEDIA-SEQUENCE",
    "#EXT-X-PLAYLIST-TYPE", "#EXT-X-ENDLIST", "#EXT-X-INDEPENDENT-SEGMENTS",
    "#EXT-X-START", "#EXT-X-SERVER-CONTROL",
)  # fmt: skip
KNOWN = (
    *ONCE, *MEDIA_SEGMENT_TAGS, *MASTER_TAGS, "#EXT-X-DATERANGE", "#EXT-X-PROGRAM-DATE-TIME",
    "#EXT-X-DISCONTINUITY-SEQUENCE",
)  # fmt: skip
ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"\n]*"|[^",\n]*)')


def attributes(text: str) -> dict[str, str]:
    """An attribute list (RFC 8216 §4.2), quoted strings unquoted."""
    out = {}
    for name, value in ATTRIBUTE.findall(text):
        if name in out:
            out["!duplicate"] = name
        out[name] = value[1:-1] if value.startswith('"') else value
    return out


def _tag(line: str) -> str:
    return line.split(":", 1)[0]


def _common(lines: list[str]) -> list[str]:
    problems = []
    if not lines or lines[0] != "#EXTM3U":
        problems.append("the first line is not #EXTM3U (§4.3.1.1)")
    for tag in ONCE:
        if sum(1 for line in lines if _tag(line) == tag) > 1:
            problems.append(f"{tag} appears more than once (§4.3)")
    for line in lines:
        if line.startswith("#EXT") and _tag(line) not in KNOWN and line != "#EXTM3U":
            problems.append(f"unknown tag {_tag(line)}")
        if line != line.strip():
            problems.append(f"whitespace around {line!r}")
    return problems


def lint_media(text: str) -> list[str]:
    """One media playlist."""
    lines = [line for line in text.split("\n") if line]
    problems = _common(lines)
    if not text.endswith("\n"):
        problems.append("the playlist does not end with a line break")
    if any(_tag(line) in MASTER_TAGS for line in lines):
        problems.append("master playlist tags in a media playlist (§4.1)")
    version = next(
        (int(line.split(":")[1]) for line in lines if line.startswith("#EXT-X-VERSION:")), 1
    )
    if any(line.startswith("#EXT-X-MAP") for line in lines) and version < 6:
        problems.append(f"EXT-X-MAP without I-frames needs version 6, got {version} (§7)")
    targets = [line for line in lines if line.startswith("#EXT-X-TARGETDURATION:")]
    if len(targets) != 1 or not re.fullmatch(r"#EXT-X-TARGETDURATION:\d+", targets[0]):
        problems.append("EXT-X-TARGETDURATION missing or not a decimal integer (§4.3.3.1)")
        return problems
    target = int(targets[0].split(":")[1])
    kind = next(
        (line.split(":")[1] for line in lines if line.startswith("#EXT-X-PLAYLIST-TYPE:")), None
    )
    if kind not in (None, "EVENT", "VOD"):
        problems.append(f"EXT-X-PLAYLIST-TYPE {kind!r} (§4.3.3.5)")
    endlist = "#EXT-X-ENDLIST" in lines
    if kind == "VOD" and not endlist:
        problems.append("a VOD playlist without EXT-X-ENDLIST (§4.3.3.5)")
    if endlist and lines[-1] != "#EXT-X-ENDLIST":
        problems.append("EXT-X-ENDLIST is not the last line")
    first_segment = next(
        (i for i, line in enumerate(lines) if line.startswith("#EXTINF")), len(lines)
    )
    for i, line in enumerate(lines):
        if (
            _tag(line) in ("#EXT-X-MEDIA-SEQUENCE", "#EXT-X-TARGETDURATION", "#EXT-X-PLAYLIST-TYPE")
            and i > first_segment
        ):
            problems.append(f"{_tag(line)} after the first segment (§4.3.3)")
    maps = [line for line in lines[:first_segment] if line.startswith("#EXT-X-MAP:")]
    if not maps or "URI" not in attributes(maps[0].split(":", 1)[1]):
        problems.append("fMP4 segments need an EXT-X-MAP with a URI before the first (§4.3.2.5)")
    durations: list[Decimal] = []
    for i, line in enumerate(lines):
        if not line.startswith("#EXTINF:"):
            continue
        match = re.fullmatch(r"#EXTINF:(\d+(?:\.\d+)?),.*", line)
        if match is None:
            problems.append(f"malformed {line!r} (§4.3.2.1)")
            continue
        value = Decimal(match.group(1))
        if "." in match.group(1) and version < 3:
            problems.append("decimal EXTINF needs version 3 (§7)")
        if int((value + Decimal("0.5")).to_integral_value(rounding="ROUND_FLOOR")) > target:
            problems.append(f"EXTINF {value} rounds above the target duration {target} (§4.3.3.1)")
        if value <= 0:
            problems.append(f"EXTINF {value} is not positive")
        if i + 1 >= len(lines) or lines[i + 1].startswith("#"):
            problems.append(f"EXTINF without a URI line after it ({line!r})")
        durations.append(value)
    total = sum(durations, Decimal(0))
    for line in lines:
        if line.startswith("#EXT-X-START:"):
            offset = attributes(line.split(":", 1)[1]).get("TIME-OFFSET")
            if offset is None:
                problems.append("EXT-X-START without TIME-OFFSET (§4.3.5.2)")
            elif abs(Decimal(offset)) > total and durations:
                problems.append(
                    f"EXT-X-START:TIME-OFFSET={offset} is past the playlist ({total} s)"
                )
        if line.startswith("#EXT-X-SERVER-CONTROL:"):
            control = attributes(line.split(":", 1)[1])
            if control.get("CAN-BLOCK-RELOAD", "YES") != "YES":
                problems.append("CAN-BLOCK-RELOAD must be YES when present (rfc8216bis §4.4.3.8)")
            if "HOLD-BACK" in control and Decimal(control["HOLD-BACK"]) < 3 * target:
                problems.append("HOLD-BACK under three target durations (rfc8216bis §4.4.3.8)")
        if line.startswith("#EXT-X-DATERANGE:"):
            daterange = attributes(line.split(":", 1)[1])
            for required in ("ID", "START-DATE"):
                if required not in daterange:
                    problems.append(f"EXT-X-DATERANGE without {required} (rfc8216bis §4.4.5.1)")
    if "#EXT-X-INDEPENDENT-SEGMENTS" not in lines:
        problems.append("no EXT-X-INDEPENDENT-SEGMENTS (Apple HLS Authoring Specification 1.8)")
    return problems


def lint_update(before: str, after: str) -> list[str]:
    """A live playlist and a later version of it (RFC 8216 §6.2.1, §6.2.2)."""
    problems = []
    old, new = before.rstrip("\n").split("\n"), after.rstrip("\n").split("\n")
    if "#EXT-X-ENDLIST" in old and old != new:
        problems.append("a playlist with EXT-X-ENDLIST changed (§6.2.1)")
    if new[: len(old)] != old:
        problems.append(
            "an update changed what was there, not only appended (§6.2.1, EVENT §4.3.3.5)"
        )
    headers = [
        line
        for line in new[len(old) :]
        if line.startswith("#")
        and not line.startswith(("#EXTINF", "#EXT-X-ENDLIST", "#EXT-X-DATERANGE"))
    ]
    if headers:
        problems.append(f"an update added header tags {headers}")
    return problems


def lint_master(text: str, codecs_allowed: set[str] | None = None) -> list[str]:
    """One multivariant playlist (§4.3.4, Apple HLS Authoring Specification)."""
    lines = [line for line in text.split("\n") if line]
    problems = _common(lines)
    if any(_tag(line) in MEDIA_TAGS for line in lines):
        problems.append("media playlist tags in a multivariant playlist (§4.1)")
    variants = [(i, line) for i, line in enumerate(lines) if line.startswith("#EXT-X-STREAM-INF:")]
    if not variants:
        problems.append("no EXT-X-STREAM-INF")
    codecs = set()
    for i, line in variants:
        info = attributes(line.split(":", 1)[1])
        if "!duplicate" in info:
            problems.append(f"attribute {info['!duplicate']} twice")
        if not re.fullmatch(r"\d+", info.get("BANDWIDTH", "")):
            problems.append("EXT-X-STREAM-INF without a decimal BANDWIDTH (§4.3.4.2)")
        if not re.fullmatch(r"\d+", info.get("AVERAGE-BANDWIDTH", "")):
            problems.append("no AVERAGE-BANDWIDTH (Apple: SHOULD be present)")
        elif int(info["AVERAGE-BANDWIDTH"]) > int(info.get("BANDWIDTH", "0") or 0):
            problems.append("AVERAGE-BANDWIDTH above BANDWIDTH")
        if "CODECS" not in info:
            problems.append("no CODECS (§4.3.4.2 SHOULD; Apple: MUST)")
        else:
            codecs.add(info["CODECS"])
            if "flac" in info["CODECS"].lower() and info["CODECS"] != "fLaC":
                problems.append(f"FLAC's codec string must be exactly fLaC, got {info['CODECS']!r}")
        if i + 1 >= len(lines) or lines[i + 1].startswith("#"):
            problems.append("EXT-X-STREAM-INF without a URI line after it")
    if len(codecs) > 1:
        problems.append(f"variants of several codecs in one playlist: {sorted(codecs)} (SPEC §4)")
    if codecs_allowed is not None and not codecs <= codecs_allowed:
        problems.append(f"codecs {sorted(codecs)} outside {sorted(codecs_allowed)}")
    if "#EXT-X-INDEPENDENT-SEGMENTS" not in lines:
        problems.append("no EXT-X-INDEPENDENT-SEGMENTS (Apple HLS Authoring Specification 1.8)")
    return problems
