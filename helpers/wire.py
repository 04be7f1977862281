"""The framed message format between the main process and its helpers.

A frame is a 4-byte big-endian length followed by a `marshal`-encoded tuple. Both ends are the
same Python build of the same installation, which is what `marshal` requires; nothing outside the
server ever writes to these sockets. File descriptors travel beside a frame as SCM_RIGHTS
ancillary data: a job carries at most a handful, and only one job is in flight per helper, so
the receiver can attach every descriptor it receives to the frame it is completing.

No I/O here: encoding and incremental decoding only.
"""

from __future__ import annotations

import marshal
import struct
from typing import TypeAlias

LENGTH = struct.Struct("!I")
MAX_FRAME = 64 << 20
# Descriptors that may travel beside one frame (a file and its precompressed siblings).
MAX_FDS = 8

# Operations. Jobs on a file's bytes take (relpath, identity, offset, length), the file's
# descriptor passed beside the frame when the main process holds one; COMPRESS adds the
# content-coding, one of COMPRESSORS. All other jobs are about paths (metadata), and the pool
# keeps helpers free for them so that streams never starve lookups.
LOOKUP, STAT_MANY, LISTDIR, WATCH = "lookup", "stat_many", "listdir", "watch"
READ, WARM, COMPRESS = "read", "warm", "compress"
DATA_OPS = frozenset({READ, WARM, COMPRESS})
# The content-codings a COMPRESS job can produce, and the module each needs: the main process
# checks that it is installed (the `compress` extra) before it asks a helper for the coding.
COMPRESSORS = {"gzip": "zlib", "br": "brotli", "zstd": "zstandard"}

# Result kinds: the first element of every result tuple.
FILE, DIRECTORY, MISSING, FORBIDDEN, ERROR = "file", "dir", "missing", "forbidden", "error"
LISTING, FACTS, DATA, WATCHING = "listing", "facts", "data", "watching"
# The reply to a data job whose file is no longer the version asked for.
CHANGED = ("changed",)


# What a message is made of: the marshal-able values the jobs and their results use. A message
# is a tuple of them, shaped by its operation or result kind; the receiver decodes it once.
Value: TypeAlias = bool | int | float | str | bytes | tuple["Value", ...] | list["Value"] | None
Message: TypeAlias = tuple[Value, ...]


def encode(message: Message) -> bytes:
    payload = marshal.dumps(message)
    return LENGTH.pack(len(payload)) + payload


class FrameDecoder:
    """Accumulates bytes from a stream socket and yields whole messages."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        messages: list[Message] = []
        buf = self._buf
        while len(buf) >= 4:
            (size,) = LENGTH.unpack_from(buf)
            if size > MAX_FRAME:
                raise ValueError(f"frame of {size} bytes exceeds the limit")
            if len(buf) < 4 + size:
                break
            messages.append(marshal.loads(bytes(buf[4 : 4 + size])))
            del buf[: 4 + size]
        return messages

# inotify (linux/inotify.h), shared by the helper that adds a watch and the main process that
# reads the events: a watched directory reports any change to a name in it or to itself.
IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF = 0x400, 0x800
IN_Q_OVERFLOW, IN_IGNORED = 0x4000, 0x8000
IN_ONLYDIR, IN_DONT_FOLLOW = 0x01000000, 0x02000000
WATCH_MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE
              | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW)
