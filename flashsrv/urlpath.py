"""Request-target to document-root-relative path: the first line of defence against traversal.

Pure function over bytes; no disk. The helpers check again, after resolving symbolic links,
that the real path stays below the root; this layer refuses every lexical escape first so that
no `..`, NUL or backslash trick ever reaches the filesystem.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

# Dot-names that sites legitimately publish (RFC 8615); every other dot-file stays hidden.
ALLOWED_DOT_NAMES = frozenset({".well-known"})


class BadTarget(Exception):
    """The target can never name a file below the root; carries the HTTP status to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Target:
    relpath: str  # "" for the root, else "a/b.html" (no leading or trailing slash)
    directory: bool  # the target ended with "/" (or was the root)


def split_target(raw: bytes) -> tuple[bytes, bytes]:
    """Path and query of an origin-form or absolute-form request-target."""
    if not raw.startswith(b"/"):
        if raw == b"*":
            raise BadTarget(400, "asterisk-form is only for OPTIONS")
        scheme, sep, rest = raw.partition(b"://")
        if not sep or scheme.lower() not in (b"http", b"https"):
            raise BadTarget(400, "request-target is neither origin-form nor absolute-form")
        slash = rest.find(b"/")
        raw = rest[slash:] if slash >= 0 else b"/"
        if b"?" in rest and (slash < 0 or rest.find(b"?") < slash):
            raw = b"/" + rest[rest.find(b"?") :]
    path, _, query = raw.partition(b"?")
    path = path.partition(b"#")[0]
    return path, query


def target_authority(raw: bytes) -> bytes | None:
    """The host[:port] of an absolute-form request-target, which a server uses instead of
    the Host header (RFC 9112 §3.2.2); None for the origin form."""
    if raw.startswith(b"/"):
        return None
    rest = raw.partition(b"://")[2]
    return rest[: min(i for i in (rest.find(b"/"), rest.find(b"?"), len(rest)) if i >= 0)]


def to_target(path: bytes, show_dotfiles: bool = False) -> Target:
    """Decode and normalise a request path; raise BadTarget for anything that could escape."""
    decoded = unquote_to_bytes(path)
    if b"\x00" in decoded:
        raise BadTarget(400, "NUL byte in path")
    if b"\\" in decoded:
        raise BadTarget(403, "backslash in path")
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise BadTarget(400, "path is not valid UTF-8") from None
    segments: list[str] = []
    for segment in text.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            raise BadTarget(403, "path traversal")
        if segment[0] == "." and not show_dotfiles and segment not in ALLOWED_DOT_NAMES:
            raise BadTarget(404, "hidden file")
        segments.append(segment)
    directory = text.endswith("/") or not segments
    return Target("/".join(segments), directory)
