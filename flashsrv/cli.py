"""The `flashsrv` command: serve, check-config, healthcheck.

Every `serve` option comes from the one table in `flashsrv.config`, so the flags, the
environment variables and the config-file keys cannot drift apart.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from flashsrv import __version__
from flashsrv.config import ENV_PREFIX, OPTIONS, Config, ConfigError, build_config, read_file
from flashsrv.rule_files import MAX_RULE_FILE, parse_headers, parse_redirects

EPILOG = f"""\
Every option can also be set by an environment variable, {ENV_PREFIX} + the option name in upper
case with dashes as underscores (--cache-bytes -> {ENV_PREFIX}CACHE_BYTES, ROOT ->
{ENV_PREFIX}ROOT), or in a TOML file given with --config ({ENV_PREFIX}CONFIG) whose keys are the
option names. Flags win over the environment, which wins over the file.

Under systemd, sockets passed by socket activation (LISTEN_FDS) replace --host and --port, and
NOTIFY_SOCKET gets READY/RELOADING/STOPPING and watchdog notices (deploy/systemd/).
"""


def _flag_type(convert: Callable[[Any], Any]) -> Callable[[str], Any]:
    """The option's converter for argparse, keeping its message: argparse's own for a
    ValueError ("invalid _codings value") says neither what is wrong nor how to fix it."""
    def flag_type(text: str) -> Any:
        try:
            return convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return flag_type


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="serve a folder (or the built-in demo site) over HTTP",
        description="Serve ROOT over HTTP/1.1 from one uvloop event loop, with the disk work "
                    "done by helper processes (Flash's AMPED architecture).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", nargs="?", default=None, metavar="ROOT",
                   help="folder to serve (default: a small demo site shipped with flashsrv)")
    p.add_argument("--config", metavar="FILE", help="TOML file with settings and site rules")
    for option in OPTIONS:
        default = option.default
        shown = ("off" if default is None
                 else ",".join(default) if isinstance(default, tuple) else default)
        helptext = f"{option.help} (default: {shown}; env {option.env})"
        if option.flag:
            p.add_argument(f"--{option.name}", dest=option.attr, default=None,
                           action=argparse.BooleanOptionalAction, help=helptext)
        else:
            p.add_argument(f"--{option.name}", dest=option.attr, default=None,
                           type=_flag_type(option.convert), metavar=option.metavar,
                           help=helptext)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flashsrv",
        description="A static web server on the Flash AMPED architecture: one uvloop event "
                    "loop for all connections, helper processes for every blocking disk call.")
    parser.add_argument("--version", action="version", version=f"flashsrv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _serve_parser(sub)
    check = sub.add_parser("check-config", help="validate a TOML config file and exit",
                           description="Report every mistake in a config file; exit 1 if any.")
    check.add_argument("file", metavar="FILE")
    health = sub.add_parser(
        "healthcheck", help="exit 0 if a running server answers HTTP (for container checks)",
        description="Send HEAD / to a running server; exit 0 on any status below 500.")
    health.add_argument("--url", default=None,
                        help=f"URL to check (default: http://127.0.0.1:${ENV_PREFIX}PORT/)")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds (default: 3)")
    return parser


def rule_file_errors(root: str) -> list[str]:
    """The mistakes in a root's `_headers` and `_redirects` (the server skips such lines and
    logs them; here they fail the check)."""
    errors: list[str] = []
    for name, parse in (("_headers", parse_headers), ("_redirects", parse_redirects)):
        path = os.path.join(root, name)
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_RULE_FILE + 1)
        except FileNotFoundError:
            continue
        except OSError as exc:
            errors.append(f"{path}: cannot read the file: {exc.strerror}")
            continue
        if len(data) > MAX_RULE_FILE:
            errors.append(f"{path}: larger than {MAX_RULE_FILE} bytes, the server ignores it")
            continue
        errors += parse(data.decode("utf-8", "replace"), path)[1]
    return errors


def check_config(path: str) -> int:
    values, errors = read_file(path)
    for error in errors:
        print(f"{path}: {error}", file=sys.stderr)
    if errors:
        return 1
    config = Config(**values)
    roots = [c.root for c in (config, *config.sites) if c.root is not None]
    file_errors = [error for root in roots for error in rule_file_errors(root)]
    for error in file_errors:
        print(error, file=sys.stderr)
    if file_errors:
        return 1
    print(f"{path}: OK ({len(values)} settings)")
    return 0


def healthcheck(url: str | None, timeout: float) -> int:
    if url is None:
        url = f"http://127.0.0.1:{os.environ.get(ENV_PREFIX + 'PORT', '8080')}/"
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80,
                                      timeout=timeout)
    try:
        conn.request("HEAD", parts.path or "/")
        status = conn.getresponse().status
    except OSError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    print(f"{'healthy' if status < 500 else 'unhealthy'}: HTTP {status}")
    return 0 if status < 500 else 1


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        sys.exit(check_config(args.file))
    if args.command == "healthcheck":
        sys.exit(healthcheck(args.url, args.timeout))
    flags = {k: v for k, v in vars(args).items() if k != "command"}
    try:
        config = build_config(flags, os.environ)
    except ConfigError as exc:
        sys.exit(f"flashsrv: {exc}")
    from flashsrv.server import run

    sys.exit(run(config, lambda: build_config(flags, os.environ)))
