"""Settings: one table of options feeds the command line, the environment and the TOML file.

Precedence, lowest first: built-in defaults, the config file (`--config` / FLASHSRV_CONFIG),
environment variables (FLASHSRV_ + the option name in upper case, dashes as underscores), then
command-line flags. `validate_file` reports every mistake in a file at once, for `check-config`.
No sockets, no event loop.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

ENV_PREFIX = "FLASHSRV_"
MODELS = ("amped", "sped", "threads")
LOG_FORMATS = ("clf", "json")
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


def _optional_port(text: Any) -> int | None:
    return None if text in (None, "", "off") else _port(text)


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
           "access log lines: Common Log Format or JSON", "clf|json"),
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
           "gzip compressible files on the fly (once per file version, then cached)", flag=True),
    Option("show-dotfiles", _bool, "serve dot-files such as .env (not recommended)",
           flag=True),
)
OPTIONS_BY_NAME = {o.name: o for o in OPTIONS}
TABLE_KEYS = ("headers", "cache-control", "error-pages", "default-cache-control")


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
    show_dotfiles: bool = False
    headers: list[tuple[str, str]] = field(default_factory=list)
    cache_control: list[tuple[str, str]] = field(default_factory=list)
    default_cache_control: str | None = None
    error_pages: dict[int, str] = field(default_factory=lambda: {404: "404.html"})
    config_file: str | None = None


_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HEADER_VALUE = re.compile(r"^[\x20-\x7e\t]*$")
# Fields the server computes per response: a configured copy would contradict them, and a
# second Content-Length or Transfer-Encoding is exactly what request smuggling feeds on.
MANAGED_HEADERS = frozenset({
    "content-length", "transfer-encoding", "connection", "keep-alive", "date", "server",
    "content-range", "content-encoding", "content-type", "etag", "last-modified", "vary",
    "accept-ranges", "location", "upgrade", "trailer", "te",
})


def _check_header_value(value: Any) -> str:
    if not isinstance(value, str) or not _HEADER_VALUE.match(value):
        raise ValueError("a header value is a single line of visible ASCII characters")
    return value.strip()


def _tables(data: Mapping[str, Any], errors: list[str]) -> dict[str, Any]:
    """The table-valued keys of a config file: headers, cache rules, error pages."""
    out: dict[str, Any] = {}
    headers = data.get("headers", {})
    if not isinstance(headers, dict):
        errors.append("headers: expected a table of header names to values")
    else:
        out["headers"] = []
        for name, value in headers.items():
            if not _HEADER_NAME.match(name):
                errors.append(f"headers: {name!r} is not a valid header name")
                continue
            if name.lower() in MANAGED_HEADERS:
                errors.append(f"headers: {name} is set by the server for each response and "
                              "cannot be configured")
                continue
            try:
                out["headers"].append((name, _check_header_value(value)))
            except ValueError as exc:
                errors.append(f"headers.{name}: {exc}")
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
    values: dict[str, Any] = {}
    for key, raw in data.items():
        if key in TABLE_KEYS:
            continue
        if key == "root":
            if isinstance(raw, str):
                base = os.path.dirname(os.path.abspath(path))
                values["root"] = os.path.join(base, raw)
                if not os.path.isdir(values["root"]):
                    errors.append(f"root: {values['root']} is not a folder")
            else:
                errors.append("root: expected a folder path")
            continue
        option = OPTIONS_BY_NAME.get(key)
        if option is None:
            known = ", ".join(["root", *OPTIONS_BY_NAME, *TABLE_KEYS])
            errors.append(f"{key}: unknown setting (known: {known})")
            continue
        try:
            values[option.attr] = option.convert(raw)
        except (ValueError, TypeError) as exc:
            errors.append(f"{key}: {exc}")
    values.update(_tables(data, errors))
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
