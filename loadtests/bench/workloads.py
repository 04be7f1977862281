"""What each workload is: the files it requests, its connections, its title in the table, and
the settings of the disk-bound large-file row (which differ from the other rows' unless the
command line gives them). Plain values only: nothing here starts a process or touches a file."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

KB = 1000
MIB = 1024 * 1024

# Workloads in table order. "cached" ones request a single file.
CACHED = {"small": "/small.html", "medium": "/medium.jpg", "1mib": "/big.bin",
          "20mib": "/large.mp4"}
# Over TLS: the cached file requested (a CACHED key) and the load generator's mode (see
# load_generators.Wrk): HTTP/1.1 keep-alive (wrk), h2 (h2load), or a new connection, and so a
# full handshake, per request (wrk sending `Connection: close`; it never resumes a session).
TLS = {"tls-small": ("small", "https"), "tls-1mib": ("1mib", "https"),
       "h2-small": ("small", "h2"), "tls-handshakes": ("small", "https-close")}
ALL_WORKLOADS = [*CACHED, "many", "disk", "stall", "coldlarge", *TLS]
THROTTLED = ("disk", "stall", "coldlarge")  # workloads that need the slow disk
H2_STREAMS = 10  # h2load -m: concurrent streams per connection
# Connections per workload: enough to keep one server core busy; large files need fewer.
CONNECTIONS = {"small": 50, "medium": 50, "1mib": 16, "20mib": 8, "many": 50,
               "tls-small": 50, "tls-1mib": 16, "h2-small": 16, "tls-handshakes": 16}
WORKLOAD_TITLES = {
    "small": "cached 2 KB", "medium": "cached 100 KB", "1mib": "cached 1 MiB",
    "20mib": "cached 20 MiB", "many": "many files > cache", "disk": "disk-bound (slow disk)",
    "stall": "stall probe (cold fetches)",
    "coldlarge": "disk-bound large files (8 MiB, slow disk)",
    "tls-small": "TLS cached 2 KB (HTTP/1.1)", "tls-1mib": "TLS cached 1 MiB (HTTP/1.1)",
    "h2-small": ("TLS cached 2 KB (h2, h2load "
                 f"-c {CONNECTIONS['h2-small']} -m {H2_STREAMS})"),
    "tls-handshakes": "TLS handshakes (new connection per 2 KB request)",
}
# Rows compared in MB/s (large bodies); the others in req/s.
BY_BYTES = ("1mib", "20mib", "tls-1mib")
COLD_CONNECTIONS = 16
HOT_CONNECTIONS = 16
PROBE_INTERVAL = 0.005
DEFAULT_CACHE_BYTES = "16M"    # flashsrv --cache-bytes
DEFAULT_IOPS = 100             # slow disk of the disk-bound and stall rows
DEFAULT_BPS = 16 * MIB


@dataclass(frozen=True)
class ColdLarge:
    """The disk-bound large-file row: the scenario the issue's targets were measured in."""

    file_size: int = 8 * MIB
    files: int = 60          # 480 MiB: an 8 s run at 16 MiB/s reads about a quarter of it
    quick_files: int = 16    # --quick: runs of 1-2 s read at most ~32 MiB
    clients: int = 8
    seconds: float = 8.0     # unless --duration is given
    quick_seconds: float = 2.0
    probe_interval: float = 0.010
    iops: int = 120          # unless --throttle-iops / --throttle-bps are given
    bps: int = 16 * MIB
    helpers: int = 8         # flashsrv --helpers, unless --helpers is given
    cache_bytes: str = "1M"  # flashsrv --cache-bytes, unless --cache-bytes is given


COLD_LARGE = ColdLarge()


def server_args(args: argparse.Namespace, workload: str) -> argparse.Namespace:
    """The settings a server is started with for `workload` (the large-file row has its own)."""
    if workload != "coldlarge":
        return args
    return argparse.Namespace(**{
        **vars(args),
        "helpers": args.helpers if "helpers" in args.given else COLD_LARGE.helpers,
        "cache_bytes": (args.cache_bytes if "cache_bytes" in args.given
                        else COLD_LARGE.cache_bytes)})


def cold_large_throttle(args: argparse.Namespace) -> tuple[int, int]:
    """(read IOPS, read bytes/s) of the slow disk in the large-file row."""
    given = {"throttle_iops", "throttle_bps"} & args.given
    if given:  # one of them given: the slow disk of the command line, as for the other rows
        return args.throttle_iops, args.throttle_bps
    return COLD_LARGE.iops, COLD_LARGE.bps


def cold_large_seconds(args: argparse.Namespace) -> float:
    if "duration" in args.given:
        return args.duration
    return COLD_LARGE.quick_seconds if args.quick else COLD_LARGE.seconds
