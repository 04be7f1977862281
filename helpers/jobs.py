"""The one dispatch from a job (operation name, arguments, optional descriptor) to `diskops`.

Helper processes run it for the main process (AMPED); the `sped` and `threads` models run the
same object inside the main process, so every model does exactly the same disk work and
answers in the same result tuples (`wire` names their kinds). It may block: that is its job.
"""

from __future__ import annotations

from flashsrv_helpers import diskops
from flashsrv_helpers.wire import (
    CHANGED,
    DATA,
    DATA_OPS,
    ERROR,
    FACTS,
    LISTDIR,
    LOOKUP,
    READ,
    STAT_MANY,
    WARM,
    WATCH,
)


class Jobs:
    """Runs jobs below one document root. With local_only (a helper process), lookups keep
    the descriptors of files the main process must not hold (see diskops.nowait_capable), and
    data jobs on those files open them here (`KeptFiles`)."""

    def __init__(self, root: str, local_only: bool) -> None:
        self.root = root
        self.local_only = local_only
        self.kept = diskops.KeptFiles(root)
        self.buffer = bytearray(diskops.WARM_BUFFER)  # warm reads land here and are dropped

    def run(self, op: str, args: tuple, fd: int | None) -> tuple[tuple, list[int]]:
        """The job's result tuple and the descriptors it hands to the caller; the caller
        keeps owning fd."""
        try:
            if op == LOOKUP:
                return diskops.lookup(self.root, *args, local_only=self.local_only)
            if op in DATA_OPS:
                return self._file_job(op, args, fd), []
            if op == STAT_MANY:
                return (FACTS, diskops.stat_many(self.root, *args)), []
            if op == LISTDIR:
                return diskops.listdir(self.root, *args), []
            if op == WATCH and fd is not None:
                return diskops.add_watch(fd, self.root, *args), []
            return (ERROR, 0, f"unknown operation {op!r}"), []
        except OSError as exc:
            return (ERROR, exc.errno or 0, exc.strerror or str(exc)), []

    def _file_job(self, op: str, args: tuple, fd: int | None) -> tuple:
        """read, warm or compress of one version of a file: through the descriptor the
        caller holds, or one kept here for a file the main process must not hold."""
        relpath, identity, offset, length, *coding = args
        own = fd is None
        if own:
            fd = self.kept.open(relpath, identity)
            if fd is None:
                return CHANGED
        if op == READ:
            result: bytes | int = diskops.read(fd, offset, length)
        elif op == WARM:
            result = diskops.warm(fd, offset, length, self.buffer)
        else:
            result = diskops.compress(fd, length, *coding)
        if own and not self.kept.unchanged(fd, identity):
            self.kept.forget(relpath, identity)
            return CHANGED
        return (DATA, result)
