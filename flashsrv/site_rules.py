"""Site rules from configuration and from the site's own `_headers` and `_redirects` files:
Cache-Control per path glob, response headers (global and per path pattern), redirects and
rewrites, clean URLs and the trailing-slash policy.

Pure: rules are matched against paths already decoded and normalised (`urlpath.to_target`);
no disk, no sockets. Cache-Control patterns are shell-style globs relative to the root (`*`
also crosses `/`), first match wins. Header and redirect rules use `flashsrv.path_patterns`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from flashsrv.path_patterns import REWRITE_STATUS, PathPattern, Redirect, encode_path
from flashsrv.urlpath import BadTarget, to_target

# Revalidate every time unless the site says otherwise: with strong ETags a revalidation is a
# cheap 304, and a deploy is never hidden behind a heuristic freshness lifetime.
DEFAULT_CACHE_CONTROL = "no-cache"
TRAILING_SLASH_POLICIES = ("add", "remove", "leave")
# The rule files a site may ship in its root; they configure the server and are never served.
RULE_FILES = ("_headers", "_redirects")
# Header sets remembered per path before the memo starts again (a bound on memory, not a need).
MAX_REMEMBERED_PATHS = 8192

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class HeaderRule:
    pattern: PathPattern
    headers: Headers
    where: str


@dataclass(frozen=True, slots=True)
class Route:
    """What a rule makes of a request: a redirect (status 301-308 and its Location), a
    rewrite (status 200 and the local path to serve instead) or a 404 (a rule file)."""

    status: int
    target: str = ""

    @property
    def path(self) -> bytes:
        """A rewrite's local path as request bytes (a query in the rule is not a path)."""
        return self.target.partition("?")[0].encode()

    def location(self, query: bytes) -> str:
        """The target with the request's query kept (a redirect does not drop it)."""
        if not query or self.status == REWRITE_STATUS:
            return self.target
        return self.target + ("&" if "?" in self.target else "?") + query.decode("latin-1")


NOT_SERVED = Route(404)


def url_path(raw: bytes) -> tuple[str, bool] | None:
    """The decoded, normalised URL path rules match (`/` + relpath, and whether it named a
    directory), or None for a path the file lookup refuses anyway."""
    try:
        target = to_target(raw, show_dotfiles=True)
    except BadTarget:
        return None
    return "/" + target.relpath, target.directory


def _merge(base: Headers, extra: Headers) -> Headers:
    """Headers of a later rule replace earlier ones of the same name; others accumulate."""
    names = {name.lower() for name, _ in extra}
    return (*(h for h in base if h[0].lower() not in names), *extra)


@dataclass
class SiteRules:
    cache_rules: list[tuple[str, str]] = field(default_factory=lambda: list[tuple[str, str]]())
    default_cache_control: str = DEFAULT_CACHE_CONTROL
    extra_headers: list[tuple[str, str]] = field(default_factory=lambda: list[tuple[str, str]]())
    header_rules: list[HeaderRule] = field(default_factory=lambda: list[HeaderRule]())
    redirects: list[Redirect] = field(default_factory=lambda: list[Redirect]())
    clean_urls: bool = False
    trailing_slash: str = "add"
    hidden: tuple[str, ...] = ()  # rule files present in the root: answered 404

    def __post_init__(self) -> None:
        self._global: Headers = tuple(self.extra_headers)
        self._sets: dict[Headers, int] = {self._global: 0}
        self._headers_by_path: dict[bytes, tuple[int, Headers]] = {}
        self._early_by_path: dict[bytes, Route | None] = {}
        self.forced = [r for r in self.redirects if r.force]
        self.shadowing = [r for r in self.redirects if not r.force]
        # Whether a request must be looked at before the caches answer it.
        self.early = bool(self.forced or self.clean_urls or self.hidden
                          or self.trailing_slash == "remove")

    def cache_control(self, relpath: str) -> str:
        for pattern, value in self.cache_rules:
            if fnmatchcase(relpath, pattern):
                return value
        return self.default_cache_control

    def headers_for(self, raw: bytes) -> tuple[int, Headers]:
        """The extra response headers for a request path, with a small number that names
        this set of headers (for caching heads built with it)."""
        if not self.header_rules:
            return 0, self._global
        known = self._headers_by_path.get(raw)
        if known is not None:
            return known
        headers = self._global
        found = url_path(raw)
        if found is not None:
            for rule in self.header_rules:
                if rule.pattern.match(found[0]) is not None:
                    headers = _merge(headers, rule.headers)
        number = self._sets.setdefault(headers, len(self._sets))
        if len(self._headers_by_path) >= MAX_REMEMBERED_PATHS:
            self._headers_by_path.clear()
        known = self._headers_by_path[raw] = (number, headers)
        return known

    def route_early(self, raw: bytes) -> Route | None:
        """Rules that apply whether or not a file exists: rule files, forced redirects and
        rewrites, clean-URL and trailing-slash redirects."""
        if raw in self._early_by_path:
            return self._early_by_path[raw]
        found = url_path(raw)
        route = None if found is None else self._early(*found)
        if len(self._early_by_path) >= MAX_REMEMBERED_PATHS:
            self._early_by_path.clear()
        self._early_by_path[raw] = route
        return route

    def _early(self, path: str, directory: bool) -> Route | None:
        if path[1:] in self.hidden:
            return NOT_SERVED
        route = _first(self.forced, _with_slash(path, directory))
        if route is not None:
            return route
        if self.clean_urls and path.endswith(".html"):
            return Route(301, encode_path(self._clean(path)))
        if self.trailing_slash == "remove" and directory and path != "/":
            return Route(301, encode_path(path))
        return None

    def hides(self, raw: bytes) -> bool:
        """Whether a path names one of the rule files (never served, rewritten to or not)."""
        found = url_path(raw) if self.hidden else None
        return found is not None and found[0][1:] in self.hidden

    def _clean(self, path: str) -> str:
        """The clean URL of an .html path: /a/b.html -> /a/b, /a/index.html -> /a/ (or /a)."""
        if path == "/index.html" or path.endswith("/index.html"):
            folder = path[: -len("index.html")]
            if folder != "/" and self.trailing_slash == "remove":
                return folder[:-1]
            return folder
        return path[: -len(".html")]

    def route_missing(self, raw: bytes) -> Route | None:
        """Shadowing rules: they apply only when nothing exists at the path."""
        if not self.shadowing:
            return None
        found = url_path(raw)
        return None if found is None else _first(self.shadowing, _with_slash(*found))


def _with_slash(path: str, directory: bool) -> str:
    return path + "/" if directory and path != "/" else path


def _first(rules: list[Redirect], path: str) -> Route | None:
    for rule in rules:
        values = rule.pattern.match(path)
        if values is not None:
            return Route(rule.status, rule.target(values))
    return None
