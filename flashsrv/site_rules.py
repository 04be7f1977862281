"""Site rules from configuration: Cache-Control per path pattern and extra response headers.

Pure: patterns are matched against the document-root-relative path; no disk, no sockets.
Patterns use shell-style globs (`fnmatch`), where `*` also crosses `/`, so `assets/*` covers
everything below assets/. The first matching rule wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase

# Revalidate every time unless the site says otherwise: with strong ETags a revalidation is a
# cheap 304, and a deploy is never hidden behind a heuristic freshness lifetime.
DEFAULT_CACHE_CONTROL = "no-cache"


@dataclass
class SiteRules:
    cache_rules: list[tuple[str, str]] = field(default_factory=list)
    default_cache_control: str = DEFAULT_CACHE_CONTROL
    extra_headers: list[tuple[str, str]] = field(default_factory=list)

    def cache_control(self, relpath: str) -> str:
        for pattern, value in self.cache_rules:
            if fnmatchcase(relpath, pattern):
                return value
        return self.default_cache_control
