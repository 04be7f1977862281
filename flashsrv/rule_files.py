"""The `_headers` and `_redirects` files that Netlify and Cloudflare Pages read from a site's
root, parsed into site rules. Pure: text in, rules and a list of `file:line: problem` out.

The subset read (the README lists it):
- `_redirects`: one rule a line, `FROM TO [STATUS][!]`; FROM is a path pattern (`:name`
  placeholders, a trailing `*` splat), TO a path or an http(s) URL that may use `:name` and
  `:splat`; STATUS 301 (the default), 302, 303, 307, 308, or 200 for a rewrite; `!` forces
  the rule even when a file exists at FROM. `#` starts a comment line.
- `_headers`: a path pattern on a line of its own, then indented `Name: value` lines for it.
Not read: query-string and country/language conditions, proxying to other hosts (a 200 to a
URL), and `! Name` header detaching. A bad line is reported and skipped; the rest stands.
"""

from __future__ import annotations

from flashsrv.fields import configured_header_problem
from flashsrv.path_patterns import Redirect, check_target, compile_pattern
from flashsrv.site_rules import HeaderRule

MAX_RULE_FILE = 1 << 20  # bytes read of a rule file; a larger one is refused whole


def redirect_rule(source: str, to: str, status: int, force: bool, where: str) -> Redirect:
    """One checked rule; ValueError says what is wrong with it."""
    check_target(to, status)
    return Redirect(compile_pattern(source), to, status, force, where)


def parse_redirects(text: str, name: str = "_redirects") -> tuple[list[Redirect], list[str]]:
    rules: list[Redirect] = []
    errors: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        where = f"{name}:{number}"
        if len(words) not in (2, 3):
            errors.append(f"{where}: expected FROM TO [STATUS][!], got {line.strip()!r}")
            continue
        status_text = words[2] if len(words) == 3 else "301"
        force = status_text.endswith("!")
        status_text = status_text.rstrip("!")
        if not status_text.isdigit():
            errors.append(f"{where}: {words[2]!r} is not a status code")
            continue
        try:
            rules.append(redirect_rule(words[0], words[1], int(status_text), force, where))
        except ValueError as exc:
            errors.append(f"{where}: {exc}")
    return rules, errors


def parse_headers(text: str, name: str = "_headers") -> tuple[list[HeaderRule], list[str]]:
    rules: list[HeaderRule] = []
    errors: list[str] = []
    pattern = None
    where = ""
    headers: list[tuple[str, str]] = []

    def close() -> None:
        if pattern is not None and headers:
            rules.append(HeaderRule(pattern, tuple(headers), where))

    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        here = f"{name}:{number}"
        if not line[0].isspace():
            close()
            headers = []
            where = here
            try:
                pattern = compile_pattern(stripped)
            except ValueError as exc:
                pattern = None
                errors.append(f"{here}: {exc}")
            continue
        if pattern is None:
            if not where:
                errors.append(f"{here}: a header line before any path line")
            continue
        header, colon, value = stripped.partition(":")
        problem = "expected Name: value" if not colon else configured_header_problem(
            header.strip(), value.strip())
        if problem:
            errors.append(f"{here}: {problem}")
        else:
            headers.append((header.strip(), value.strip()))
    close()
    return rules, errors
