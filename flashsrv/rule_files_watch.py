"""The site's own `_headers` and `_redirects` files: read through the disk layer (helpers, as
every file), parsed (`flashsrv.rule_files`), and read again when they change.

The files are looked up like any other path. `refresh` runs at start-up, before the first
request; then at once after the kernel reports a change in a watched directory of the root
(`mark`), and every POLL_EVERY seconds for what no watch sees (a file created in a folder not
watched yet, filesystems without inotify). Looking them up every tick instead would keep
their entries under stat revalidation forever. A bad line is logged with its file:line and
skipped; a file that cannot be read keeps the rules last read from it.
"""

from __future__ import annotations

import logging
import os
import time

from flashsrv.content import Content
from flashsrv.disk import DiskUnavailable, FileChanged
from flashsrv.entries import FILE
from flashsrv.path_patterns import Redirect
from flashsrv.rule_files import MAX_RULE_FILE, parse_headers, parse_redirects
from flashsrv.site_rules import RULE_FILES, HeaderRule

log = logging.getLogger("flashsrv.rules")

POLL_EVERY = 10.0  # seconds between looks at the rule files when no change was reported


class RuleFiles:
    """The rules last read from the site's rule files, and which versions they came from."""

    def __init__(self, folder: str = "") -> None:
        self.folder = folder  # where the files are, for log lines (file:line)
        self.header_rules: list[HeaderRule] = []
        self.redirects: list[Redirect] = []
        self.present: tuple[str, ...] = ()
        self._versions: dict[str, tuple | None] = dict.fromkeys(RULE_FILES)
        self._dirty = True
        self._read_at = 0.0

    def mark(self) -> None:
        """Something changed in a watched directory: look at the files again soon."""
        self._dirty = True

    def due(self, now: float) -> bool:
        return self._dirty or now - self._read_at >= POLL_EVERY

    async def refresh(self, content: Content) -> bool:
        """Read the files whose version changed since last time; whether any did."""
        self._dirty = False
        self._read_at = time.monotonic()
        changed = False
        for name in RULE_FILES:
            key = b"\x00rule-file:" + name.encode()
            try:
                entry = content.fresh(key) or await content.resolve(key, name)
                file = entry.variants["identity"].file if entry.kind == FILE else None
                version = None if file is None else file.identity
                if version == self._versions[name]:
                    continue
                text = ""
                if file is not None:
                    if file.size > MAX_RULE_FILE:
                        log.error("%s: larger than %d bytes, not read",
                                  os.path.join(self.folder, name), MAX_RULE_FILE)
                    else:
                        text = bytes(await content.whole(file)).decode("utf-8", "replace")
            except (DiskUnavailable, FileChanged, OSError) as exc:
                log.warning("%s: not read now (%s); keeping the rules read before", name, exc)
                continue
            self._versions[name] = version
            self._apply(name, text, present=file is not None)
            changed = True
        return changed

    def _apply(self, name: str, text: str, present: bool) -> None:
        errors: list[str]
        shown = os.path.join(self.folder, name)
        if name == "_headers":
            self.header_rules, errors = parse_headers(text, shown)
        else:
            self.redirects, errors = parse_redirects(text, shown)
        for error in errors:
            log.warning("%s (line skipped)", error)
        others = tuple(n for n in self.present if n != name)
        self.present = (*others, name) if present else others
        if present:
            log.info("%s: %d rules read", shown,
                     len(self.header_rules if name == "_headers" else self.redirects))
