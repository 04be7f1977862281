"""The content layer's caches, driven directly on a real temporary folder (no sockets)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from flashsrv.content import Content
from flashsrv.disk import InlineDisk
from flashsrv.entries import FILE, MISSING, Entry


class GatedDisk(InlineDisk):
    """The real inline disk layer, but a lookup waits at a gate: it lets a test make other
    things happen while a lookup is in flight, as a slow helper would."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.gate: asyncio.Event | None = None

    async def lookup(self, relpath, suffixes, prefetch):
        if self.gate is not None:
            await self.gate.wait()
        return await super().lookup(relpath, suffixes, prefetch)


def test_an_entry_pushed_out_while_it_was_revalidated_comes_back(tmp_path: Path):
    (tmp_path / "a.txt").write_text("a\n")

    async def scenario() -> tuple[Entry, Entry, Entry | None]:
        disk = GatedDisk(str(tmp_path))
        content = Content(disk, 1 << 20, 64 << 10, max_entries=2)
        first = await content.resolve(b"/a.txt", "a.txt")
        first.checked_at -= 10  # stale: the next request must look again
        disk.gate = asyncio.Event()
        again = asyncio.create_task(content.resolve(b"/a.txt", "a.txt"))
        for _ in range(3):  # let the lookup task start and stop at the gate
            await asyncio.sleep(0)
        content.paths.put(b"/x", Entry(MISSING, "x"))  # other paths fill the cache...
        content.paths.put(b"/y", Entry(MISSING, "y"))  # ...and push /a.txt out
        disk.gate.set()
        return first, await again, content.paths.get(b"/a.txt")

    first, again, cached = asyncio.run(scenario())
    assert first.kind == FILE
    assert again is first, "an unchanged file keeps its entry (and its open descriptor)"
    assert cached is first, "the revalidated entry is back in the path cache"


def test_a_changed_file_gets_a_new_entry_and_its_old_bytes_leave_the_data_cache(tmp_path: Path):
    f = tmp_path / "page.html"
    f.write_text("old version\n")

    async def scenario() -> tuple[Entry, Entry, bool]:
        content = Content(InlineDisk(str(tmp_path)), 1 << 20, 64 << 10, max_entries=16)
        old = await content.resolve(b"/page.html", "page.html")
        old_key = old.variants["identity"].file.identity
        f.write_text("the new version, longer\n")
        new = await content.resolve(b"/page.html", "page.html")
        return old, new, content.data.get(old_key) is None

    old, new, old_bytes_gone = asyncio.run(scenario())
    assert new is not old
    assert new.variants["identity"].file.size == len("the new version, longer\n")
    assert old_bytes_gone
