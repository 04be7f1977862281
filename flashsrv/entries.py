"""What the caches hold: a translated path (`Entry`), its representations (`Variant`), and the
open files behind them (`OpenFile`, `GeneratedFile`).

Plain data with no HTTP and no I/O of their own: an OpenFile gives back its descriptor and its
mapping through `pagecache.release` when the last reference goes. The content layer fills
these; the responder reads them.
"""

from __future__ import annotations

import time

from flashsrv_helpers.wire import DIRECTORY, ERROR, FILE, FORBIDDEN, MISSING

from flashsrv.pagecache import release

__all__ = ["DIRECTORY", "ERROR", "FILE", "FORBIDDEN", "MISSING", "Entry", "GeneratedFile",
           "OpenFile", "Variant"]


class OpenFile:
    """One version of a file: its descriptor (-1 when a helper keeps it) and the facts read
    at open time; closed and unmapped when unreferenced.

    Responses in flight keep a reference, so a file replaced on disk keeps serving its old,
    consistent bytes to them while new requests get the new file.
    """

    __slots__ = ("dev", "fd", "identity", "mapping", "mtime_ns", "path", "size")
    generated = False

    def __init__(self, fd: int, path: str, size: int, mtime_ns: int, ino: int, dev: int
                 ) -> None:
        self.fd = fd
        self.path = path
        self.size = size
        self.mtime_ns = mtime_ns
        self.dev = dev
        # The data-cache key: a new version of a file never finds the old version's bytes.
        self.identity = (dev, ino, size, mtime_ns)
        self.mapping = 0  # address of the never-touched mapping mincore asks about; -1: none

    def __del__(self) -> None:
        release(self.fd, self.mapping, self.size)


class GeneratedFile:
    """A representation computed from a file (its on-the-fly compression in `coding`): bytes
    live only in the data cache, and are computed again from `source` if they were evicted."""

    __slots__ = ("coding", "dev", "fd", "identity", "mtime_ns", "path", "size", "source")
    generated = True

    def __init__(self, source: OpenFile, size: int, coding: str) -> None:
        self.source = source
        self.coding = coding
        self.fd = -1
        self.path = source.path
        self.size = size
        self.mtime_ns = source.mtime_ns
        self.dev = source.dev
        self.identity = (*source.identity, coding)


class Variant:
    """One representation of a resource: the file itself or a precompressed sibling."""

    __slots__ = ("encoding", "etag", "file", "mtime")

    def __init__(self, file: OpenFile | GeneratedFile, encoding: str) -> None:
        self.file = file
        self.encoding = encoding
        self.mtime = file.mtime_ns // 1_000_000_000
        tag = f"{file.mtime_ns:x}-{file.size:x}"
        self.etag = f'"{tag}"' if encoding == "identity" else f'"{tag}-{encoding}"'


class Entry:
    """The translation of one request path: what is there, and its open variants."""

    __slots__ = ("checked_at", "content_type", "directory", "kind", "relpath", "variants",
                 "vary", "watchable", "watched")

    def __init__(self, kind: str, relpath: str, variants: dict[str, Variant] | None = None,
                 ctype: str = "") -> None:
        self.kind = kind
        self.relpath = relpath
        self.variants = variants or {}
        self.content_type = ctype
        self.checked_at = time.monotonic()
        self.directory = False  # looked up for a path that ended in a slash
        self.vary: tuple[str, ...] = ()  # request fields beyond Accept-Encoding that chose it
        self.watchable = False  # inotify can see its files change (local, no link on the way)
        self.watched = False  # it can, and its directories were watched before it was looked up

    @property
    def served_path(self) -> str:
        """The path of the file a 200 sends: the directory's index.html for a directory."""
        if self.kind != DIRECTORY:
            return self.relpath
        return f"{self.relpath}/index.html" if self.relpath else "index.html"

    def facts(self) -> tuple[str, dict[str, tuple]]:
        """What a lookup found: the kind and the identity of each file on disk."""
        return self.kind, {k: v.file.identity for k, v in self.variants.items()
                           if not isinstance(v.file, GeneratedFile)}
