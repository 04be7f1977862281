"""Path patterns of redirect and header rules, in the syntax Netlify and Cloudflare Pages use.

A pattern is an absolute URL path made of literal segments, `:name` placeholders (one whole
segment each) and at most one `*` splat at the very end (the rest of the path, possibly empty).
`/news/*` matches `/news`, `/news/` and `/news/2024/01`; a pattern without a splat matches with
or without a trailing slash. Patterns match the decoded, normalised path (`urlpath.to_target`),
so `/a/./b` and `/a/%62` are the same path to a rule as they are to the file lookup.

Pure: no I/O. A rule's target is filled in here too, because that is where an open redirect
would be made: a value taken from the request is percent-encoded and can never turn a local
target into `//other.host`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

_PLACEHOLDER = re.compile(r":([A-Za-z_][A-Za-z0-9_]*)")
# Characters a path segment may carry unencoded (RFC 3986 pchar, minus '%' which the request's
# value never keeps: it was decoded before matching).
_SEGMENT_SAFE = "-._~!$&'()*+,;=:@"
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
REWRITE_STATUS = 200


@dataclass(frozen=True, slots=True)
class PathPattern:
    text: str
    regex: re.Pattern[str]

    def match(self, path: str) -> dict[str, str] | None:
        """The placeholder values (and `splat`) when path matches, else None."""
        found = self.regex.match(path)
        if found is None:
            return None
        return {name: value or "" for name, value in found.groupdict().items()}


def compile_pattern(text: str) -> PathPattern:
    """A pattern from its text; ValueError says what is wrong with it."""
    if not text.startswith("/"):
        raise ValueError(f"{text!r}: a path pattern starts with /")
    if any(ch in text for ch in "?#\\ \t"):
        raise ValueError(f"{text!r}: a path pattern has no query, fragment, backslash or space")
    body = text
    splat = body.endswith("*")
    if splat:
        body = body[:-1]
    if "*" in body:
        raise ValueError(f"{text!r}: a splat (*) may only end the pattern")
    parts: list[str] = []
    names: set[str] = set()
    for segment in body.split("/"):
        found = _PLACEHOLDER.fullmatch(segment)
        if found:
            name = found.group(1)
            if name in names or name == "splat":
                raise ValueError(f"{text!r}: placeholder :{name} used twice")
            names.add(name)
            parts.append(f"(?P<{name}>[^/]+)")
        else:
            if ":" in segment and _PLACEHOLDER.search(segment):
                raise ValueError(f"{text!r}: a placeholder must be a whole segment")
            parts.append(re.escape(segment))
    regex = "/".join(parts)
    if splat:
        # "/news/*" also matches "/news": the splat and the slash before it may be empty.
        if regex.endswith("/"):
            regex = regex[:-1] + "(?:/(?P<splat>.*))?"
        else:
            regex += "(?P<splat>.*)"
    else:
        regex = regex.rstrip("/") + "/?"
    return PathPattern(text, re.compile(regex + r"\Z", re.DOTALL))


def encode_path(path: str) -> str:
    """A decoded path as it may appear in a Location: percent-encoded, ASCII, and never
    starting with `//` (which would name another host)."""
    return "/" + quote(path, safe="/" + _SEGMENT_SAFE).lstrip("/")


@dataclass(frozen=True, slots=True)
class Redirect:
    """One redirect (301-308) or rewrite (200) rule; where: file:line or config key, for logs."""

    pattern: PathPattern
    to: str
    status: int
    force: bool
    where: str

    @property
    def local(self) -> bool:
        return self.to.startswith("/")

    def target(self, values: dict[str, str]) -> str:
        """The Location (or rewritten path) for a match, placeholders filled in encoded."""
        def fill(found: re.Match[str]) -> str:
            name = found.group(1)
            if name not in values:
                return found.group(0)
            return quote(values[name], safe="/" + _SEGMENT_SAFE)
        head, sep, tail = self.to.partition("?")
        filled = _PLACEHOLDER.sub(fill, head)
        if self.local:
            # A value that starts with / must not make "//host": that would leave the origin.
            filled = "/" + filled.lstrip("/")
        return filled + sep + tail


def check_target(to: str, status: int) -> None:
    """Refuse a rule target that could be abused or cannot be served; ValueError says why."""
    if status not in (*REDIRECT_STATUSES, REWRITE_STATUS):
        raise ValueError(f"status {status}: a rule answers 200 (rewrite) or one of "
                         f"{', '.join(map(str, REDIRECT_STATUSES))}")
    if any(ord(ch) < 0x21 or ord(ch) >= 0x7f or ch == "\\" for ch in to):
        raise ValueError(f"{to!r}: a target has no spaces, control characters, backslashes or "
                         "non-ASCII characters (write them percent-encoded)")
    if to.startswith("/"):
        if to.startswith("//"):
            raise ValueError(f"{to!r}: a target starting with // names another host; "
                             "write https://host/... to mean it")
        return
    if status == REWRITE_STATUS:
        raise ValueError(f"{to!r}: a rewrite (200) serves a local path starting with /")
    parts = urlsplit(to)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{to!r}: a target is a path (/...) or an http(s)://host/... URL")
    if _PLACEHOLDER.search(parts.netloc) or "@" in parts.netloc:
        raise ValueError(f"{to!r}: the host of a target is fixed by the rule")
