"""Settings: one table of options feeds the command line, the environment and the TOML file.

Precedence, lowest first: built-in defaults, the config file (`--config` / FLASHSRV_CONFIG),
environment variables (FLASHSRV_ + the option name in upper case, dashes as underscores), then
command-line flags. `validate_file` reports every mistake in a file at once, for `check-config`.
No sockets, no event loop.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flashsrv_helpers.wire import COMPRESSORS

from flashsrv.fields import field_value_problem, header_name_problem
from flashsrv.path_patterns import Redirect, compile_pattern
from flashsrv.rule_files import redirect_rule
from flashsrv.site_rules import TRAILING_SLASH_POLICIES, HeaderRule

ENV_PREFIX = "FLASHSRV_"
MODELS = ("amped", "sped", "threads")
LOG_FORMATS = ("clf", "combined", "json")
_SIZE_RE = re.compile(r"^\s*(\d+)\s*(?:([kmgt])i?)?b?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class ConfigError(ValueError):
    """A setting has a value we cannot use; the message names the setting."""


def parse_size(text: str | int) -> int:
    """Bytes from '65536', '64M', '1G', '512k' (binary units)."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError("a size cannot be negative")
        return text
    m = _SIZE_RE.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a size (examples: 65536, 512K, 64M, 1G)")
    return int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower()]


def _whole_number(text: Any, low: int, high: int | None = None) -> int:
    """An integer from an int or a string of digits; floats, booleans and the like are refused
    rather than silently truncated."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    elif isinstance(text, str) and text.strip().isdigit():
        value = int(text)
    else:
        raise ValueError(f"expected a whole number, got {text!r}")
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValueError(f"must be {bounds}, got {value}")
    return value


def _positive_int(text: Any) -> int:
    return _whole_number(text, 1)


def _port(text: Any) -> int:
    return _whole_number(text, 0, 65535)


def _seconds(text: Any) -> float:
    if isinstance(text, bool) or not isinstance(text, int | float | str):
        raise ValueError(f"expected a number of seconds, got {text!r}")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise ValueError(f"must be more than 0 seconds, got {text!r}")
    return value


def _bool(text: Any) -> bool:
    if isinstance(text, bool):
        return text
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not a boolean (true/false)")


def _choice(*choices: str) -> Callable[[Any], str]:
    def convert(text: Any) -> str:
        if isinstance(text, int) and not isinstance(text, bool):
            text = str(text)  # `unknown-host = 404` in TOML means the choice "404"
        if text not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        return text

    return convert


def _text(text: Any) -> str:
    if not isinstance(text, str):
        raise ValueError(f"expected a string, got {text!r}")
    return text


def _site_path(text: Any) -> str:
    """A file below the document root, e.g. 'index.html' or 'errors/404.html'."""
    path = _text(text).strip("/")
    if not path or ".." in path.split("/") or "\x00" in path:
        raise ValueError(f"{text!r} is not a path inside the document root")
    return path


def _optional_seconds(text: Any) -> int | None:
    return None if text in (None, "", "off") else _whole_number(text, 0)


def _optional_port(text: Any) -> int | None:
    return None if text in (None, "", "off") else _port(text)


@functools.cache
def installed_codings() -> tuple[str, ...]:
    """The codings --compress makes unless told otherwise: each one whose library is
    installed (gzip's always is; br and zstd come with the `compress` extra)."""
    return tuple(c for c in COMPRESSORS if importlib.util.find_spec(COMPRESSORS[c]))


def _codings(text: Any) -> tuple[str, ...]:
    """Content-codings for --compress, from 'gzip,br,zstd' or a TOML array of names; refused
    here when a library is missing, so a helper is never asked for what it cannot make."""
    names = text.split(",") if isinstance(text, str) else text
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"expected a list of codings such as 'gzip,br,zstd', got {text!r}")
    chosen = [name.strip().lower() for name in names]
    if not chosen or "" in chosen:
        raise ValueError(f"expected a list of codings such as 'gzip,br,zstd', got {text!r}; "
                         "turn compression off with compress = false")
    for name in chosen:
        if name not in COMPRESSORS:
            raise ValueError(f"{name!r} is not a coding flashsrv can make (known: "
                             f"{', '.join(COMPRESSORS)})")
        if name not in installed_codings():
            raise ValueError(f"{name} needs the Python package {COMPRESSORS[name]}, which is "
                             "not installed: pip install 'flashsrv[compress]'")
    return tuple(c for c in COMPRESSORS if c in chosen)


@dataclass(frozen=True)
class Option:
    name: str  # the flag without dashes, the TOML key and (upper-cased) the env var
    convert: Callable[[Any], Any]
    help: str
    metavar: str | None = None
    flag: bool = False  # a boolean switch on the command line

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.attr.upper()

    @property
    def default(self) -> Any:
        """The default lives in one place, the Config dataclass below."""
        return getattr(Config(), self.attr)


OPTIONS: tuple[Option, ...] = (
    Option("host", _text, "address to listen on (0.0.0.0 or :: for all)", "ADDR"),
    Option("port", _port, "TCP port; 0 picks a free one and prints it", "N"),
    Option("helpers", _positive_int, "helper processes doing the disk work (amped)", "N"),
    Option("cache-bytes", parse_size, "file-data cache size (e.g. 64M, 1G)", "SIZE"),
    Option("access-log", _text, "access log: - for stdout, a file path, or off",
           "-|PATH|off"),
    Option("access-log-format", _choice(*LOG_FORMATS),
           "access log lines: Common Log Format, nginx's combined (CLF with referer and "
           "user agent) or JSON", "clf|combined|json"),
    Option("header-timeout", _seconds, "seconds a client may take to send a request head",
           "SECONDS"),
    Option("request-start-timeout", _seconds,
           "seconds a new connection may take to start its first request (shorter than "
           "header-timeout: an idle flood cannot hold slots for long)", "SECONDS"),
    Option("keepalive-timeout", _seconds, "seconds an idle keep-alive connection is kept",
           "SECONDS"),
    Option("send-timeout", _seconds, "seconds a client may leave our writes unread",
           "SECONDS"),
    Option("max-connections", _positive_int,
           "open connections per worker; more are answered 503 and closed", "N"),
    Option("helper-timeout", _seconds,
           "seconds a disk job may take before its helper is replaced", "SECONDS"),
    Option("helper-queue", _positive_int,
           "disk jobs waiting for a helper before new ones get 503", "N"),
    Option("grace", _seconds, "seconds in-flight responses get to finish on SIGTERM",
           "SECONDS"),
    Option("model", _choice(*MODELS),
           "concurrency model for disk work: helper processes, inline, or a thread pool",
           "amped|sped|threads"),
    Option("workers", _positive_int,
           "independent main processes sharing the port (SO_REUSEPORT)", "N"),
    Option("admin-port", _optional_port,
           "port for /healthz and /metrics (Prometheus); off by default", "N"),
    Option("admin-host", _text, "address of the admin endpoint", "ADDR"),
    Option("listing", _bool, "list directories that have no index.html", flag=True),
    Option("fallback", _site_path,
           "single-page-app fallback file served for unknown page paths (e.g. index.html)",
           "FILE"),
    Option("compress", _bool,
           "compress compressible files on the fly (once per file version, then cached)",
           flag=True),
    Option("compress-encodings", _codings,
           "codings --compress makes, among gzip, br and zstd (br and zstd need "
           "pip install 'flashsrv[compress]')", "LIST"),
    Option("clean-urls", _bool,
           "serve /about from about.html and redirect /about.html to /about", flag=True),
    Option("trailing-slash", _choice(*TRAILING_SLASH_POLICIES),
           "directories: add a missing slash (redirect), remove it (redirect), or leave "
           "both forms served", "add|remove|leave"),
    Option("tls-cert", _text, "certificate chain (PEM) for HTTPS on --tls-port", "FILE"),
    Option("tls-key", _text, "private key (PEM) of --tls-cert", "FILE"),
    Option("tls-port", _port, "TCP port of the HTTPS listener (plain HTTP stays on --port)",
           "N"),
    Option("redirect-http", _bool, "answer plain HTTP with 308 to the https URL", flag=True),
    Option("hsts", _optional_seconds,
           "add Strict-Transport-Security: max-age=SECONDS to HTTPS responses", "SECONDS"),
    Option("unknown-host", _choice("default", "404", "421"),
           "with [[sites]]: a request for a host no site names gets the default site, "
           "404, or 421 Misdirected Request", "default|404|421"),
    Option("show-dotfiles", _bool, "serve dot-files such as .env (not recommended)",
           flag=True),
)
OPTIONS_BY_NAME = {o.name: o for o in OPTIONS}
TABLE_KEYS = ("headers", "redirects", "cache-control", "error-pages", "default-cache-control")


@dataclass
class Config:
    root: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    helpers: int = 4
    cache_bytes: int = 64 << 20
    access_log: str = "-"
    access_log_format: str = "clf"
    header_timeout: float = 10.0
    request_start_timeout: float = 5.0
    keepalive_timeout: float = 75.0
    send_timeout: float = 60.0
    max_connections: int = 10000
    helper_timeout: float = 10.0
    helper_queue: int = 1024
    grace: float = 10.0
    model: str = "amped"
    workers: int = 1
    admin_port: int | None = None
    admin_host: str = "127.0.0.1"
    listing: bool = False
    fallback: str | None = None
    compress: bool = False
    compress_encodings: tuple[str, ...] = field(default_factory=installed_codings)
    show_dotfiles: bool = False
    clean_urls: bool = False
    trailing_slash: str = "add"
    unknown_host: str = "default"
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_port: int = 8443
    redirect_http: bool = False
    hsts: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    header_rules: list[HeaderRule] = field(default_factory=list)
    redirects: list[Redirect] = field(default_factory=list)
    cache_control: list[tuple[str, str]] = field(default_factory=list)
    default_cache_control: str | None = None
    error_pages: dict[int, str] = field(default_factory=lambda: {404: "404.html"})
    config_file: str | None = None
    sites: list[Config] = field(default_factory=list)  # virtual hosts ([[sites]])
    hosts: tuple[str, ...] = ()  # the names a [[sites]] entry answers for


def _check_header_value(value: Any) -> str:
    problem = field_value_problem(value)
    if problem:
        raise ValueError(problem)
    return value.strip()


def _header_pairs(table: Mapping[str, Any], where: str, errors: list[str]
                  ) -> list[tuple[str, str]]:
    pairs = []
    for name, value in table.items():
        name_problem = header_name_problem(name)
        value_problem = field_value_problem(value)
        if name_problem is not None:
            errors.append(f"{where}: {name_problem}")
        elif value_problem is not None:
            errors.append(f"{where}.{name}: {value_problem}")
        else:
            pairs.append((name, value.strip()))
    return pairs


def _headers(data: Mapping[str, Any], out: dict[str, Any], errors: list[str]) -> None:
    """`[headers]` (every response) or `[[headers]]` rules, each with a path `pattern` and
    its header fields; a rule without a pattern applies to every response."""
    headers = data.get("headers", {})
    if isinstance(headers, dict):
        out["headers"] = _header_pairs(headers, "headers", errors)
        return
    if not isinstance(headers, list):
        errors.append("headers: expected a table of header names to values, or an array of "
                      "[[headers]] rules with a pattern")
        return
    out["headers"], out["header_rules"] = [], []
    for i, rule in enumerate(headers):
        where = f"headers[{i}]"
        if not isinstance(rule, dict):
            errors.append(f"{where}: expected a table with pattern and header fields")
            continue
        fields = {k: v for k, v in rule.items() if k != "pattern"}
        pairs = _header_pairs(fields, where, errors)
        if "pattern" not in rule:
            out["headers"] += pairs
            continue
        try:
            pattern = compile_pattern(rule["pattern"] if isinstance(rule["pattern"], str)
                                      else "")
        except ValueError as exc:
            errors.append(f"{where}.pattern: {exc}")
            continue
        out["header_rules"].append(HeaderRule(pattern, tuple(pairs), where))


def _redirects(data: Mapping[str, Any], out: dict[str, Any], errors: list[str]) -> None:
    """`[[redirects]] from = ... to = ... status = 301 force = true` rules, first match wins.
    Unlike a `_redirects` line, a configured rule is forced unless it says `force = false`
    (then it applies only where no file exists)."""
    rules = data.get("redirects", [])
    if not isinstance(rules, list):
        errors.append("redirects: expected an array of [[redirects]] tables")
        return
    out["redirects"] = []
    for i, rule in enumerate(rules):
        where = f"redirects[{i}]"
        if not isinstance(rule, dict) or not {"from", "to"} <= set(rule) or \
                not set(rule) <= {"from", "to", "status", "force"}:
            errors.append(f"{where}: expected the keys from and to, and optionally status "
                          "and force")
            continue
        source, to = rule["from"], rule["to"]
        status, force = rule.get("status", 301), rule.get("force", True)
        if not (isinstance(source, str) and isinstance(to, str) and type(status) is int
                and isinstance(force, bool)):
            errors.append(f"{where}: from and to are strings, status a number, force true "
                          "or false")
            continue
        try:
            out["redirects"].append(redirect_rule(source, to, status, force, where))
        except ValueError as exc:
            errors.append(f"{where}: {exc}")


def _tables(data: Mapping[str, Any], errors: list[str]) -> dict[str, Any]:
    """The table-valued keys of a config file: headers, redirects, cache rules, error pages."""
    out: dict[str, Any] = {}
    _headers(data, out, errors)
    _redirects(data, out, errors)
    rules = data.get("cache-control", [])
    if not isinstance(rules, list):
        errors.append("cache-control: expected an array of {pattern = ..., value = ...} tables")
    else:
        out["cache_control"] = []
        for i, rule in enumerate(rules):
            where = f"cache-control[{i}]"
            if not isinstance(rule, dict) or set(rule) != {"pattern", "value"}:
                errors.append(f"{where}: expected exactly the keys pattern and value")
                continue
            pattern, value = rule["pattern"], rule["value"]
            if not isinstance(pattern, str) or not pattern or pattern.startswith("/"):
                errors.append(f"{where}.pattern: a non-empty glob relative to the root "
                              "(no leading /), e.g. 'assets/*' or '*.html'")
                continue
            if pattern.count("[") != pattern.count("]"):
                errors.append(f"{where}.pattern: unbalanced [ ] in {pattern!r}")
                continue
            try:
                out["cache_control"].append((pattern, _check_header_value(value)))
            except ValueError as exc:
                errors.append(f"{where}.value: {exc}")
    if "default-cache-control" in data:
        try:
            out["default_cache_control"] = _check_header_value(data["default-cache-control"])
        except ValueError as exc:
            errors.append(f"default-cache-control: {exc}")
    pages = data.get("error-pages")
    if pages is not None:
        if not isinstance(pages, dict):
            errors.append("error-pages: expected a table of status codes to file paths")
        else:
            out["error_pages"] = {}
            for status, path in pages.items():
                if not (status.isdigit() and 400 <= int(status) <= 599):
                    errors.append(f"error-pages: {status!r} is not an error status (400-599)")
                else:
                    try:
                        out["error_pages"][int(status)] = _site_path(path)
                    except ValueError as exc:
                        errors.append(f"error-pages.{status}: {exc}")
    return out


# What a [[sites]] table may set: its names, its folder and its own rules. Everything else
# (ports, processes, caches, timeouts) belongs to the server and is set once, at the top.
SITE_KEYS = ("hosts", "root", "listing", "fallback", "clean-urls", "trailing-slash",
             "show-dotfiles", *TABLE_KEYS)
_HOST_NAME = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


def _root(raw: Any, base: str, where: str, errors: list[str]) -> str | None:
    if not isinstance(raw, str):
        errors.append(f"{where}: expected a folder path")
        return None
    root = os.path.join(base, raw)
    if not os.path.isdir(root):
        errors.append(f"{where}: {root} is not a folder")
    return root


def _settings(data: Mapping[str, Any], base: str, where: str, allowed: tuple[str, ...],
              errors: list[str]) -> dict[str, Any]:
    """The values of one table (the file's top level, or one [[sites]] entry)."""
    values: dict[str, Any] = {}
    for key, raw in data.items():
        if key not in allowed:
            errors.append(f"{where}{key}: unknown setting (known: {', '.join(allowed)})")
            continue
        if key in TABLE_KEYS or key in ("sites", "hosts"):
            continue  # read by _tables, _sites and _hosts
        if key == "root":
            values["root"] = _root(raw, base, f"{where}root", errors)
            continue
        option = OPTIONS_BY_NAME[key]
        try:
            values[option.attr] = option.convert(raw)
        except (ValueError, TypeError) as exc:
            errors.append(f"{where}{key}: {exc}")
    table_errors: list[str] = []
    values.update(_tables(data, table_errors))
    errors += [where + error for error in table_errors]
    return values


def _hosts(raw: Any, where: str, seen: set[str], errors: list[str]) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw or not all(isinstance(h, str) for h in raw):
        errors.append(f"{where}: expected a non-empty list of host names")
        return ()
    hosts = []
    for host in raw:
        name = host.lower().rstrip(".")
        if not _HOST_NAME.fullmatch(name):
            errors.append(f"{where}: {host!r} is not a host name (a port is not part of it; "
                          "a wildcard is a leading '*.')")
        elif name in seen:
            errors.append(f"{where}: {host!r} is named by two sites")
        else:
            seen.add(name)
            hosts.append(name)
    return tuple(hosts)


def _sites(data: Mapping[str, Any], base: str, errors: list[str]) -> list[Config]:
    """The [[sites]] tables: virtual hosts, each a folder with its own rules."""
    raw = data.get("sites", [])
    if not isinstance(raw, list):
        errors.append("sites: expected an array of [[sites]] tables")
        return []
    sites = []
    seen: set[str] = set()
    for i, table in enumerate(raw):
        where = f"sites[{i}]."
        if not isinstance(table, dict) or "hosts" not in table or "root" not in table:
            errors.append(f"sites[{i}]: expected a table with hosts and root")
            continue
        values = _settings(table, base, where, SITE_KEYS, errors)
        values["hosts"] = _hosts(table["hosts"], where + "hosts", seen, errors)
        sites.append(Config(**values))
    return sites


def read_file(path: str) -> tuple[dict[str, Any], list[str]]:
    """Settings from a TOML file and the list of every mistake found in it."""
    errors: list[str] = []
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        return {}, [f"cannot read the file: {exc.strerror}"]
    except tomllib.TOMLDecodeError as exc:
        return {}, [f"not valid TOML: {exc}"]
    base = os.path.dirname(os.path.abspath(path))
    known = ("root", *OPTIONS_BY_NAME, *TABLE_KEYS, "sites")
    values = _settings(data, base, "", known, errors)
    if "sites" in data:
        values["sites"] = _sites(data, base, errors)
    return values, errors


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if environ.get(ENV_PREFIX + "ROOT"):
        values["root"] = environ[ENV_PREFIX + "ROOT"]
    for option in OPTIONS:
        raw = environ.get(option.env)
        if raw is None:
            continue
        try:
            values[option.attr] = option.convert(raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{option.env}: {exc}") from None
    return values


def build_config(flags: Mapping[str, Any], environ: Mapping[str, str]) -> Config:
    """Defaults < config file < environment < flags (flags given as attr -> value, None = unset).
    """
    config_path = flags.get("config") or environ.get(ENV_PREFIX + "CONFIG")
    values: dict[str, Any] = {}
    if config_path:
        from_file, errors = read_file(config_path)
        if errors:
            raise ConfigError(f"{config_path}: " + "; ".join(errors))
        values.update(from_file)
        values["config_file"] = config_path
    values.update(from_environment(environ))
    values.update({k: v for k, v in flags.items() if v is not None and k != "config"})
    return Config(**values)
