"""The content layer: Flash's caches, and the decision "from memory now, or ask the disk first".

- Pathname-translation cache (`PathCache`): request path -> `Entry` (open files and their facts).
  An entry is trusted for TRUST_FOR seconds, then refreshed by a lookup on the disk layer (in
  the background while it is younger than STALE_AFTER) that compares file identities, so a file
  changed on disk (mtime, size or inode, including replacement by rename) is served fresh
  within a second, and a hot file never waits for the disk.
- Response-header cache: each `Variant` memoises its response heads (`Variant.heads`).
- File-data cache (`DataCache`): whole small files keyed by file identity, LRU, bounded in bytes.

Reads happen in the main process only when they cannot block: `preadv(..., RWF_NOWAIT)` fails
with EAGAIN when the data is not in the page cache, and `sendfile` is used only on a range that
`mincore` calls resident (`pagecache`). What is not resident is warmed by a helper (read into
the page cache) and then sent, or read through the disk layer. Files on filesystems where a
read, fstat or close could wait (FUSE, NFS: no RWF_NOWAIT) have no descriptor in this process
at all (`fd == -1`): a helper keeps it, and their bytes always come through the disk layer.
No sockets here, and no HTTP beyond the names of the representations.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial
from itertools import islice

from flashsrv.disk import (
    SIBLING_CODINGS,
    Disk,
    DiskUnavailable,
    FileChanged,
    FileFacts,
    Listing,
    Lookup,
    close_fds,
)
from flashsrv.entries import (
    DIRECTORY,
    ERROR,
    FILE,
    MISSING,
    Entry,
    GeneratedFile,
    OpenFile,
    Variant,
)
from flashsrv.mime import content_type, is_compressible
from flashsrv.pagecache import MAX_QUERY, residency
from flashsrv.watches import ChangeWatches

log = logging.getLogger("flashsrv.content")

# An entry is answered from without a look for TRUST_FOR seconds; until STALE_AFTER it is still
# answered from while a lookup runs in the background (and for as long as that lookup takes:
# a slow disk delays the news of a change, never the hot file); after that a request waits for
# the lookup. So a change on disk is seen within STALE_AFTER plus the disk's own delay.
TRUST_FOR = 0.5
STALE_AFTER = 1.0
CHECK_BATCH = 512
# Files up to this size may evict others from the data cache; larger cacheable ones may not.
SMALL_OBJECT = 64 << 10
# Bounds what one sendfile can cost if pages are evicted between the mincore and the send.
SENDFILE_MAX = MAX_QUERY
# Smaller bodies fit one packet anyway: compressing them saves nothing worth the CPU.
COMPRESS_MIN = 256
# Larger files are compressed on the fly only up to this size (the result is held in memory).
COMPRESS_MAX = 1 << 20


def check_unchanged(file: OpenFile) -> None:
    """Raise FileChanged unless the open file still has the size and mtime it was opened with.

    Only for descriptors this process holds, which are on filesystems where fstat reads the
    in-memory inode (see diskops.nowait_capable), so it cannot wait for the disk. The kernel
    updates mtime before it copies a write's data, so a read that overlapped a write is
    always caught by a check made after it.
    """
    st = os.fstat(file.fd)
    if st.st_mtime_ns != file.mtime_ns or st.st_size != file.size:
        raise FileChanged


class DataCache:
    """Whole-file bytes keyed by file identity, least recently used evicted first."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self.hits = 0
        self.misses = 0
        # bytes from the disk layer, bytearray from a read that could not block (read_nowait)
        self._items: OrderedDict[tuple, bytes | bytearray] = OrderedDict()

    def get(self, key: tuple) -> bytes | bytearray | None:
        data = self._items.get(key)
        if data is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(key)
        return data

    def put(self, key: tuple, data: bytes | bytearray) -> None:
        if len(data) > self.max_bytes or key in self._items:
            return
        self._items[key] = data
        self.used += len(data)
        while self.used > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.used -= len(old)

    def holds(self, key: tuple) -> bool:
        return key in self._items

    def has_room(self, size: int) -> bool:
        return self.used + size <= self.max_bytes

    def discard(self, key: tuple) -> None:
        data = self._items.pop(key, None)
        if data is not None:
            self.used -= len(data)

    def __len__(self) -> int:
        return len(self._items)


class PathCache(OrderedDict[bytes, Entry]):
    """Request path -> Entry, bounded by entry count (each entry may hold descriptors).

    `get` is the dict's own (no Python call on the hot path). Order is by last revalidation,
    which happens only to entries in use: a cheap approximation of least-recently-used.
    """

    def __init__(self, max_entries: int) -> None:
        super().__init__()
        self.max_entries = max_entries

    def put(self, key: bytes, entry: Entry) -> None:
        self[key] = entry
        self.touch(key)
        if len(self) > self.max_entries:
            self.popitem(last=False)

    def touch(self, key: bytes) -> None:
        self.move_to_end(key)

    def discard(self, key: bytes) -> None:
        self.pop(key, None)


def _nowait_supported_default() -> bool:
    return hasattr(os, "RWF_NOWAIT") and hasattr(os, "preadv")


class Content:
    """Caches plus the disk layer: the one place that decides where a response's bytes come from.
    """

    def __init__(self, disk: Disk, cache_bytes: int, max_object: int, max_entries: int,
                 suffixes: tuple[str, ...] = tuple(SIBLING_CODINGS),
                 compress: tuple[str, ...] = (), data: DataCache | None = None) -> None:
        self.disk = disk
        self.compress = compress  # the codings made on the fly (none: --compress is off)
        self.paths = PathCache(max_entries)
        self.data = DataCache(cache_bytes) if data is None else data  # shared by virtual hosts
        self.max_object = min(max_object, cache_bytes)
        self.small_object = min(SMALL_OBJECT, self.max_object)
        self.suffixes = suffixes
        self._pending: dict[bytes, asyncio.Task] = {}
        self._stale: dict[bytes, Entry] = {}  # entries waiting for a background revalidation
        self._checking = False
        self.revalidations = 0
        self._nowait_devices: dict[int, bool] = {}
        self._use_nowait = _nowait_supported_default()
        self.sendfile_bytes = 0
        self.warm_bytes = 0
        self.nowait_reads = 0
        self.disk_reads = 0
        self.watches = ChangeWatches(disk, self._changed)
        self.on_change: list[Callable[[], None]] = []  # told when entries were dropped

    def _changed(self, changes: list[tuple[str, str | None]] | None) -> None:
        """The kernel reported changes in watched directories: drop every entry they can
        affect (its next request looks it up afresh). None: events were lost, so no entry
        is trusted on the strength of a watch any more."""
        if changes is None:
            for entry in self.paths.values():
                entry.watched = False
                entry.checked_at = 0.0
        else:
            exact: set[str] = set()
            prefixes: set[str] = set()
            for directory, name in changes:
                if name is None:
                    prefixes.add(f"{directory}/" if directory else "")
                    continue
                changed = f"{directory}/{name}" if directory else name
                exact.add(changed)
                prefixes.add(changed + "/")
                exact.update(changed[: -len(x)] for x in self.suffixes if changed.endswith(x))
            starts = tuple(prefixes)
            for key, entry in list(self.paths.items()):
                served = entry.served_path
                if served in exact or served.startswith(starts):
                    self.paths.discard(key)
                    for variant in entry.variants.values():
                        self.data.discard(variant.file.identity)
        for listener in self.on_change:
            listener()

    # -- pathname translation ----------------------------------------------------------------

    def fresh(self, key: bytes) -> Entry | None:
        """The cached entry for key if it was checked recently enough to answer from memory
        (starting a background lookup when it is getting old), else None."""
        entry = self.paths.get(key)
        if entry is None or entry.watched:
            return entry  # a watched entry is trusted until the kernel reports a change
        age = time.monotonic() - entry.checked_at
        if age < TRUST_FOR:
            return entry
        if key in self._stale:
            return entry  # its revalidation is on the way: a slow disk must not stall it
        if age < STALE_AFTER:
            self._stale[key] = entry
            if not self._checking:
                self._checking = True
                asyncio.get_running_loop().call_soon(self._start_check)
            return entry
        return None

    def _start_check(self) -> None:
        keys = list(islice(self._stale, CHECK_BATCH))
        if not keys:
            self._checking = False
            return
        asyncio.get_running_loop().create_task(self._check(keys))

    async def _check(self, keys: list[bytes]) -> None:
        """Revalidate a batch of entries with one stat-only job: unchanged ones are trusted
        again, changed ones leave the cache (their next request looks them up afresh)."""
        entries = [self._stale[key] for key in keys]
        started = time.monotonic()
        results: Sequence[Lookup | None]
        try:
            results = await self.disk.stat_many([e.relpath for e in entries], self.suffixes)
        except (DiskUnavailable, OSError) as exc:
            log.warning("background revalidation failed: %s", exc)
            results = [None] * len(entries)
        finally:
            for key in keys:
                del self._stale[key]
            self._start_check()
        now = time.monotonic()
        self.revalidations += len(keys)
        for key, entry, result in zip(keys, entries, results, strict=True):
            if result is None or self.paths.get(key) is not entry:
                continue
            if entry.facts() == result.facts(entry.directory):
                entry.checked_at = now
                entry.watched = entry.watchable and self.watches.covers(entry.served_path,
                                                                        started)
                self.paths.touch(key)
            else:
                self.paths.discard(key)
                for variant in entry.variants.values():
                    self.data.discard(variant.file.identity)

    async def resolve(self, key: bytes, relpath: str, directory: bool = False) -> Entry:
        """Look the path up (or revalidate a stale entry) on the disk layer.

        Concurrent requests for one path share one lookup, run as its own task so that a
        client going away cannot cancel it for the others. A path that ends in a slash
        (directory) names nothing when it finds a regular file, as in nginx.
        """
        task = self._pending.get(key) or self._start_lookup(key, relpath, directory)
        return await asyncio.shield(task)

    def _start_lookup(self, key: bytes, relpath: str, directory: bool) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(self._refresh(key, relpath, directory))
        self._pending[key] = task
        task.add_done_callback(partial(self._lookup_done, key))
        return task

    def _lookup_done(self, key: bytes, task: asyncio.Task) -> None:
        del self._pending[key]
        if not task.cancelled():
            task.exception()  # retrieved here, raised in every waiter

    async def _refresh(self, key: bytes, relpath: str, directory: bool) -> Entry:
        old = self.paths.get(key)
        new = await self._lookup(relpath, prefetch=0 if old else self.max_object)
        if directory and new.kind == FILE:
            new = Entry(MISSING, relpath)
        new.directory = directory
        if old is not None and old.facts() == new.facts():
            old.checked_at = new.checked_at
            old.watched = new.watched
            self.paths.put(key, old)  # back in, if other paths pushed it out meanwhile
            return old
        if old is not None:
            for variant in old.variants.values():
                self.data.discard(variant.file.identity)
        if self.compress and new.variants:
            await self._add_compressed(new)
        self.paths.put(key, new)
        return new

    async def _lookup(self, relpath: str, prefetch: int) -> Entry:
        started = time.monotonic()
        found, fds = await self.disk.lookup(relpath, self.suffixes, prefetch)
        if found.kind in (FILE, DIRECTORY):
            entry = Entry(found.kind, relpath)
            entry.variants = self._variants(entry.served_path, found.files, fds)
            entry.content_type = content_type(entry.served_path)
            entry.watchable = all(f.passed and f.direct for f in found.files)
            entry.watched = entry.watchable and self.watches.covers(entry.served_path, started)
            return entry
        close_fds(fds)
        if found.kind == ERROR:
            log.error("lookup of %r failed: [errno %s] %s", relpath, found.errno, found.message)
        return Entry(found.kind, relpath)

    async def _add_compressed(self, entry: Entry) -> None:
        """Give a compressible file a variant in each configured coding it has no sibling
        for, computed once per file version by the disk layer (compression is CPU work the
        loop must not do); the codings run side by side, each in a helper of its own."""
        source = entry.variants["identity"].file
        if (not isinstance(source, OpenFile) or not COMPRESS_MIN <= source.size <= COMPRESS_MAX
                or not is_compressible(entry.content_type)):
            return
        codings = [coding for coding in self.compress if coding not in entry.variants]
        results = await asyncio.gather(*(self.disk.compress(source, c) for c in codings))
        for coding, data in zip(codings, results, strict=True):
            if len(data) < source.size:
                file = GeneratedFile(source, len(data), coding)
                self.data.put(file.identity, data)
                entry.variants[coding] = Variant(file, coding)

    def _variants(self, relpath: str, files: tuple[FileFacts, ...], fds: list[int]
                  ) -> dict[str, Variant]:
        if sum(f.passed for f in files) != len(fds):
            close_fds(fds)
            raise DiskUnavailable("the descriptors of a lookup did not all arrive")
        variants = {}
        passed_fds = iter(fds)
        for f in files:
            fd = next(passed_fds) if f.passed else -1
            file = OpenFile(fd, relpath + f.suffix, f.size, f.mtime_ns, f.ino, f.dev)
            variants[f.encoding] = Variant(file, f.encoding)
            if f.data is not None:
                self.data.put(file.identity, f.data)
        return variants

    async def listdir(self, relpath: str) -> Listing:
        return await self.disk.listdir(relpath)

    # -- file data ---------------------------------------------------------------------------

    def from_memory(self, file: OpenFile | GeneratedFile) -> bool:
        """Whether a response sends this file from memory (the data cache) rather than
        streaming it. Small files always: they may evict others. Files up to max_object only
        when already cached or when there is room: they never evict, so a working set larger
        than the cache streams zero-copy from the page cache instead of churning the data
        cache with copies."""
        return (file.generated or file.size <= self.small_object
                or (file.size <= self.max_object
                    and (self.data.holds(file.identity) or self.data.has_room(file.size))))

    def cached_body(self, file: OpenFile | GeneratedFile) -> bytes | bytearray | None:
        """The whole file from the data cache or a read that cannot block; None: ask the disk."""
        data = self.data.get(file.identity)
        if (data is None and isinstance(file, OpenFile) and file.fd >= 0
                and file.size <= self.max_object):
            try:
                data = self.read_nowait(file, 0, file.size)
            except FileChanged:
                return None
            if data is not None:
                self.data.put(file.identity, data)
        return data

    async def whole(self, file: OpenFile | GeneratedFile) -> bytes | bytearray:
        """The whole file: from memory when it can be had without waiting (an empty file
        too), else through the disk layer."""
        data = self.cached_body(file)
        return await self.body(file) if data is None else data

    async def body(self, file: OpenFile | GeneratedFile) -> bytes:
        if isinstance(file, GeneratedFile):
            data = await self.disk.compress(file.source, file.coding)
            self._check_after_disk(file.source)
        else:
            data = await self.disk.read(file, 0, file.size)
            self._check_after_disk(file)
        self.disk_reads += 1
        if len(data) != file.size:
            raise FileChanged
        self.data.put(file.identity, data)
        return data

    @staticmethod
    def _check_after_disk(file: OpenFile) -> None:
        """A helper read through our descriptor: check the version here. Without one, the
        helper checked it (and answered FileChanged)."""
        if file.fd >= 0:
            check_unchanged(file)

    def read_nowait(self, file: OpenFile, offset: int, length: int) -> bytearray | None:
        """Bytes at offset if they are all in the page cache right now, else None; raises
        FileChanged if the file is no longer the version that was opened."""
        if file.fd < 0 or not self._use_nowait or self._nowait_devices.get(file.dev) is False:
            return None
        buf = bytearray(length)
        view = memoryview(buf)
        got = 0
        try:
            while got < length:
                n = os.preadv(file.fd, [view[got:]], offset + got, os.RWF_NOWAIT)
                if n == 0:
                    break
                got += n
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                log.warning("RWF_NOWAIT is not supported on device %#x: reads go to the disk "
                            "layer", file.dev)
                self._nowait_devices[file.dev] = False
                return None
            raise
        self._nowait_devices[file.dev] = True
        self.nowait_reads += 1
        check_unchanged(file)
        if got < length:
            raise FileChanged
        return buf

    def sendfile(self, sock_fd: int, file: OpenFile, offset: int, length: int) -> int | None:
        """Send up to length bytes of the file straight from the page cache to a socket
        (zero-copy), as many as mincore calls resident and up to date from offset on. None when
        the first page is not (the disk must be asked first), 0 when the socket is full or the
        file cannot be sent zero-copy (then `file.mapping` is -1).

        A page evicted between the check and the copy would make sendfile wait for the disk:
        the narrow race Flash accepted with mincore, bounded here by SENDFILE_MAX per call.

        No fstat follows: the caller always sends the last bytes of a response through a read
        that checks the file (`read_nowait`/`read`), and that check covers every sendfile
        before it, since a write changes the mtime before it changes any byte.
        """
        mapping = file.mapping
        if mapping == 0:
            if file.fd < 0:
                return None
            mapping = file.mapping = residency.map(file.fd, file.size) or -1
        if mapping < 0:
            return 0
        length = residency.resident(mapping, offset, min(length, SENDFILE_MAX))
        if not length:
            return None
        try:
            sent = os.sendfile(sock_fd, file.fd, offset, length)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                file.mapping = -1  # this file cannot be sent zero-copy: read it instead
                residency.unmap(mapping, file.size)
                return 0
            raise
        if sent == 0:
            raise FileChanged  # end of file before the Content-Length we promised
        self.sendfile_bytes += sent
        return sent

    async def read(self, file: OpenFile, offset: int, length: int) -> bytes | bytearray:
        """length bytes at offset of the version that was opened, or FileChanged."""
        data = self.read_nowait(file, offset, length)
        if data is None:
            self.disk_reads += 1
            data = await self.disk.read(file, offset, length)
            self._check_after_disk(file)
            if len(data) < length:
                raise FileChanged
        return data

    async def warm(self, file: OpenFile, offset: int, length: int) -> None:
        """Have the disk layer bring the range into the page cache, so that `sendfile` and
        `read_nowait` can send it without waiting; FileChanged if the file got shorter."""
        done = await self.disk.warm(file, offset, length)
        self.warm_bytes += done
        if done < length:
            raise FileChanged

    def can_warm(self, file: OpenFile) -> bool:
        """Whether warming helps: only this process's own descriptors are sent from the page
        cache; the bytes of other files must come through the disk layer."""
        return file.fd >= 0 and file.mapping >= 0
