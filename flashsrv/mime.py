"""Content types for the web, by file extension: a table, not logic.

Text types carry `charset=utf-8` because browsers otherwise guess the encoding. Unknown
extensions are `application/octet-stream`, as nginx's default_type, so that a browser downloads
rather than sniffs them.
"""

from __future__ import annotations

import posixpath

DEFAULT_TYPE = "application/octet-stream"

TYPES: dict[str, str] = {
    # documents and code
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".xml": "application/xml",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".ics": "text/calendar; charset=utf-8",
    ".rss": "application/rss+xml",
    ".atom": "application/atom+xml",
    ".pdf": "application/pdf",
    ".wasm": "application/wasm",
    # images
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".svg": "image/svg+xml",
    ".ico": "image/vnd.microsoft.icon",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    # fonts
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    # audio and video
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".webm": "video/webm",
    ".ogv": "video/ogg",
    ".mov": "video/quicktime",
    ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".vtt": "text/vtt; charset=utf-8",
    # archives
    ".zip": "application/zip",
    ".gz": "application/gzip",
    ".tgz": "application/gzip",
    ".br": "application/octet-stream",
    ".zst": "application/zstd",
    ".tar": "application/x-tar",
    ".7z": "application/x-7z-compressed",
    ".bz2": "application/x-bzip2",
    ".xz": "application/x-xz",
}

# Types that are already compressed: on-the-fly compression gains nothing on them.
INCOMPRESSIBLE_PREFIXES = ("image/", "video/", "audio/", "font/woff")
INCOMPRESSIBLE_TYPES = frozenset(
    {"application/zip", "application/gzip", "application/x-7z-compressed", "application/x-bzip2",
     "application/x-xz", "application/zstd", "application/pdf", "application/octet-stream"}
)


def content_type(path: str) -> str:
    """The Content-Type value for a file path (case-insensitive extension match)."""
    return TYPES.get(posixpath.splitext(path)[1].lower(), DEFAULT_TYPE)


def is_compressible(ctype: str) -> bool:
    """Whether compressing a body of this type is worth the CPU (text-like types, svg, wasm)."""
    base = ctype.split(";", 1)[0]
    if base == "image/svg+xml":
        return True
    return not base.startswith(INCOMPRESSIBLE_PREFIXES) and base not in INCOMPRESSIBLE_TYPES
