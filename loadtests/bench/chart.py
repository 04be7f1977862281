"""The chart of a run: a 2x2 PNG of cached req/s (TLS rows too), large-file MB/s, many/disk
req/s and probe latency. matplotlib is optional (the bench extra): without it, no chart and a
note saying so."""

from __future__ import annotations

from pathlib import Path

from .measure import Row
from .workloads import WORKLOAD_TITLES


def write_chart(rows: list[Row], path: Path) -> str | None:
    """A 2x2 PNG: cached req/s, large-file MB/s, many/disk req/s, probe latency; in each panel
    the workloads that ran (all of them, empty, when none did)."""
    try:
        import matplotlib  # pyright: ignore[reportMissingImports] (optional: the bench extra)
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # pyright: ignore[reportMissingImports]
    except ImportError:
        return "matplotlib is not installed: no chart (pip install -e '.[bench]')"
    servers = list(dict.fromkeys(r.server for r in rows))
    colors = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(servers)}
    panels = [
        ("Cached small files (req/s, log scale)",
         ["small", "medium", "tls-small", "h2-small", "tls-handshakes"], "rps", True),
        ("Cached large files (MB/s)", ["1mib", "20mib", "tls-1mib"], "mbps", False),
        ("Beyond the cache (req/s, log scale)", ["many", "disk"], "rps", True),
        ("Probe latency (ms, log scale)", ["stall", "coldlarge"], "probe", True),
    ]
    probe_names = {"stall": "stall", "coldlarge": "8 MiB cold"}
    short = {"tls-small": "TLS 2 KB", "h2-small": "h2 2 KB", "tls-handshakes": "TLS handshakes",
             "tls-1mib": "TLS 1 MiB"}  # axis labels where the title is too long
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    for ax, (title, workloads, metric, logy) in zip(axes.flat, panels, strict=True):
        titles = [WORKLOAD_TITLES[w] for w in workloads]
        ran = [w for w in workloads if any(r.workload == WORKLOAD_TITLES[w] for r in rows)]
        # (label on the axis, workload title, Row attribute)
        groups = [(short.get(w, WORKLOAD_TITLES[w]), WORKLOAD_TITLES[w], metric)
                  for w in ran or workloads]
        if metric == "probe":  # p50 and p99 of each probe row that ran (stall when none did)
            groups = [(f"{probe_names[w]} {q}", WORKLOAD_TITLES[w], f"probe_{q}_ms")
                      for w in ran or workloads[:1] for q in ("p50", "p99")]
        present = [s for s in servers if any(r.server == s and r.workload in titles
                                             for r in rows)]
        width = 0.8 / max(1, len(present))
        for k, server in enumerate(present):
            values = []
            for _, workload, attr in groups:
                r = next((r for r in rows if r.server == server and r.workload == workload),
                         None)
                values.append((getattr(r, attr) if r else None) or 0)
            xs = [i + k * width for i in range(len(groups))]
            ax.bar(xs, values, width, label=server, color=colors[server])
        ax.set_xticks([i + width * (len(present) - 1) / 2 for i in range(len(groups))],
                      [g[0] for g in groups])
        ax.set_title(title)
        if logy:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[s]) for s in servers]
    fig.legend(handles, servers, loc="lower center", ncol=min(4, len(servers)), fontsize=9)
    fig.suptitle("flashsrv vs nginx and peers (server on one core, load generator on another)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
