"""Byte ranges (RFC 9110 §14): parsing Range, the 200/206/416 decision, multipart/byteranges.

This module owns:
  * turning a Range field value and a representation size into the byte ranges to send;
  * the Content-Range field values for 206 and 416;
  * the exact framing of a multipart/byteranges body (part heads, closing delimiter, length).

It must never touch a socket or the disk: it returns offsets and small byte strings, and the
caller reads and sends the file bytes. Nothing here raises on client input. If-Range is decided
elsewhere (flashsrv.conditional) before this module is asked anything.

Outcomes of `parse_range`, in the RFC's terms:
  None            ignore the field and send 200 (absent, unknown unit, invalid, too many ranges)
  [(a, b), ...]   206 with these inclusive ranges, sorted and coalesced
  UNSATISFIABLE   416 with `Content-Range: bytes */size`
"""

from __future__ import annotations

import secrets
from typing import Final

__all__ = [
    "MAX_RANGES",
    "UNSATISFIABLE",
    "Unsatisfiable",
    "content_range",
    "multipart_content_type",
    "multipart_plan",
    "new_boundary",
    "parse_range",
    "unsatisfied_range",
]

# More ranges than this and the field is ignored (a plain 200), as nginx's `max_ranges` does.
# Ignoring is always allowed (§14.2) and avoids both the 416 a legitimate client would not
# expect and the CPU/bandwidth amplification of thousands of tiny parts.
MAX_RANGES: Final = 16

# Longer digit strings are "larger than any file" anyway, and int() on thousands of digits is
# both slow and, past Python's limit, an exception.
_MAX_DIGITS: Final = 18
_HUGE: Final = 10**_MAX_DIGITS

_OWS: Final = " \t"


class Unsatisfiable:
    """The 416 outcome of `parse_range`; a singleton, compare with `is UNSATISFIABLE`."""

    __slots__ = ()
    _instance: Unsatisfiable | None = None

    def __new__(cls) -> Unsatisfiable:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSATISFIABLE"


UNSATISFIABLE: Final = Unsatisfiable()


def _position(text: str) -> int | None:
    """A non-negative 1*DIGIT, or None; ASCII digits only (no sign, '_', spaces or '²')."""
    if not text or not text.isascii() or not text.isdigit():
        return None
    text = text.lstrip("0") or "0"
    return _HUGE if len(text) > _MAX_DIGITS else int(text)


def _parse_spec(spec: str) -> tuple[int | None, int | None] | None:
    """One range-spec as (first, last) with None for an omitted side; None if invalid.

    (None, n) is a suffix range "-n"; (a, None) is "a-"; an int-range whose last is below
    its first is invalid (§14.1.1).
    """
    first_text, dash, last_text = spec.partition("-")
    if not dash:
        return None
    if not first_text:
        suffix = _position(last_text)
        return None if suffix is None else (None, suffix)
    first = _position(first_text)
    if first is None:
        return None
    if not last_text:
        return first, None
    last = _position(last_text)
    if last is None or last < first:
        return None
    return first, last


def _coalesce(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, with overlapping or adjacent ranges merged, so parts never repeat bytes.

    RFC 9110 §14.6 prefers parts in request order; we sort instead, which the RFC permits
    when coalescing and which bounds the body by the file size whatever the client asks.
    """
    ranges.sort()
    merged = [ranges[0]]
    for start, end in ranges[1:]:
        last_start, last_end = merged[-1]
        if start <= last_end + 1:
            if end > last_end:
                merged[-1] = (last_start, end)
        else:
            merged.append((start, end))
    return merged


def parse_range(
    value: str | None, size: int, max_ranges: int = MAX_RANGES
) -> list[tuple[int, int]] | Unsatisfiable | None:
    """The inclusive byte ranges to send for a Range field over `size` bytes (see module doc).

    Whitespace around the "=" and around commas is tolerated and empty list members are
    skipped (§5.6.1); the unit is case-insensitive. One invalid member makes the whole field
    invalid (ignored), while unsatisfiable members are dropped and only all-unsatisfiable is 416.
    A zero-length representation has no byte to point at, so every range is unsatisfiable.
    """
    if value is None:
        return None
    unit, eq, range_set = value.partition("=")
    if not eq or unit.strip(_OWS).lower() != "bytes":
        return None
    specs = [s for s in (m.strip(_OWS) for m in range_set.split(",")) if s]
    if not specs or len(specs) > max_ranges:
        return None

    satisfiable: list[tuple[int, int]] = []
    for spec in specs:
        parsed = _parse_spec(spec)
        if parsed is None:
            return None
        first, last = parsed
        if first is None:
            assert last is not None
            if last == 0 or size == 0:
                continue  # "-0" asks for nothing
            satisfiable.append((max(size - last, 0), size - 1))
        elif first < size:
            end = size - 1 if last is None else min(last, size - 1)
            satisfiable.append((first, end))
    if not satisfiable:
        return UNSATISFIABLE
    return _coalesce(satisfiable)


def content_range(start: int, end: int, size: int) -> str:
    """Content-Range of a 206 (or of one multipart part): 'bytes 0-99/1000'."""
    return f"bytes {start}-{end}/{size}"


def unsatisfied_range(size: int) -> str:
    """Content-Range of a 416: 'bytes */1000', telling the client the current size."""
    return f"bytes */{size}"


def new_boundary() -> str:
    """A fresh multipart boundary: random, so it cannot occur in the file data by accident."""
    return secrets.token_hex(16)


def multipart_content_type(boundary: str) -> str:
    """The response's Content-Type for a multi-range 206."""
    return f"multipart/byteranges; boundary={boundary}"


def multipart_plan(
    ranges: list[tuple[int, int]], size: int, content_type: str, boundary: str
) -> tuple[list[tuple[bytes, int, int]], bytes, int]:
    """The framing of a multipart/byteranges body (RFC 9110 §14.6), without the file bytes.

    Returns (parts, closing, content_length). The body is, for each part, its head followed
    by file bytes start..end inclusive, then `closing`. Every head, the first included,
    starts with CRLF (the first one then forms an empty preamble), so all heads have one shape
    and `content_length` is exact: it is computed, never measured after the fact.

    Raises ValueError for caller mistakes (no ranges, ranges outside the file, a bad
    boundary); client input never gets here unchecked.
    """
    if not ranges:
        raise ValueError("multipart_plan needs at least one range")
    if not 1 <= len(boundary) <= 70 or not boundary.isascii() or boundary.endswith(" "):
        raise ValueError(f"invalid multipart boundary {boundary!r}")
    delimiter = b"\r\n--" + boundary.encode("ascii")
    type_line = b"\r\nContent-Type: " + content_type.encode("latin-1")
    parts: list[tuple[bytes, int, int]] = []
    total = 0
    for start, end in ranges:
        if not 0 <= start <= end < size:
            raise ValueError(f"range {start}-{end} outside a {size}-byte representation")
        head = (
            delimiter
            + type_line
            + b"\r\nContent-Range: "
            + content_range(start, end, size).encode("ascii")
            + b"\r\n\r\n"
        )
        parts.append((head, start, end))
        total += len(head) + end - start + 1
    closing = delimiter + b"--\r\n"
    return parts, closing, total + len(closing)
