"""Benchmark flashsrv's concurrency models against nginx (and granian, uvicorn+starlette).

    python -m loadtests.bench [--quick] [--out loadtests/results]   (from the repository root)

One command, one run, one table: every server is started in turn on the same files, pinned to
one CPU core while `wrk` runs on another, so that the numbers are ratios measured side by side
(nginx is the reference) rather than absolute speeds that only mean something on one machine.

Workloads (the Flash paper's comparison, on a small scale):

- cached: one file of 2 KB, 100 KB, 1 MiB or 20 MiB, requested over and over;
- many-files: random requests over a data set larger than flashsrv's `--cache-bytes` (in the
  kernel page cache, not in the server's own cache), after a warm-up like the cached rows', so
  that every server has already opened the files once (nginx's open_file_cache, flashsrv's
  path cache): the steady state, not the first lookup of each file;
- disk-bound: files evicted from the page cache (posix_fadvise DONTNEED) and the disk made slow by
  the kernel (cgroup v1 blkio throttle or v2 io.max on the server's processes); one wrk fetches
  cold files while another fetches a cached small file: a server that blocks on the disk also
  stops serving what it has in memory;
- stall probe: while wrk fetches cold files, a probe fetches a cached small file every ~5 ms on a
  keep-alive connection; its p50/p99 latency shows whether the event loop stalls;
- disk-bound large files: 8 clients download whole cold 8 MiB files (a shuffled deck over 60
  files, so that no file is fetched twice while the run lasts) on keep-alive connections while the
  probe fetches the cached small file every 10 ms: cold MB/s and probe p50/p99. Each server gets
  its own start for this row, with the issue's settings (flashsrv `--helpers 8 --cache-bytes 1M`,
  slow disk 120 IOPS / 16 MiB/s, 8 s) unless --helpers, --cache-bytes, --throttle-iops,
  --throttle-bps or --duration say otherwise.
- TLS (issue 11; nginx and flashsrv amped only, same certificate, ciphers and TLS versions):
  the cached 2 KB and 1 MiB files over HTTP/1.1 + TLS (wrk over https), the 2 KB file over h2
  (h2load -c 16 -m 10; skipped with a note without h2load or when the server's ALPN does not pick
  h2), and handshakes/s (wrk over https with `Connection: close`: a new connection and a full
  handshake per request).

The floor: `loadtests/floor_server.py`, a bare uvloop + httptools server answering every request
with one constant 2 KB response, runs the cached 2 KB workload only. It is what no Python server
can beat on this machine; flashsrv's CPU per request is judged against it (a ratio that does not
move with the CPU the way the ratio to nginx does).

CPU per request, on every row without a probe: utime and stime (/proc/PID/stat) of every process
in the server's process group (nginx workers, flashsrv's helpers; and of the main process alone),
read before and after the load generator runs, divided by the requests it completed.

The slow disk needs root and a cgroup io controller; without them the disk-bound workloads are
skipped with a message, never faked (and never slowed down by a sleep in the server).

Results go to OUT/results.md (table, machine, date), OUT/results.json and OUT/results.png.
Every server is stopped (SIGTERM, then SIGKILL of its process group) even on Ctrl-C or an error.

The modules, in the order a run uses them:

- `__main__`: the command line, and the run itself (which server, which workloads, in what order);
- `workloads`: what each workload requests, with how many connections, under which title, and
  the settings of the large-file row;
- `machine`: what the numbers came from (CPU, kernel, versions), how busy the CPUs are, the log;
- `dataset`: the files served, written once per run;
- `slow_disk`: cold files (evicted from the page cache) and the cgroup read throttle;
- `servers`: how each server is configured, started, measured (CPU time) and stopped;
- `load_generators`: wrk and its Lua hooks, the latency probe; `bulk_loader` is the load
  generator for large bodies, a program of its own that prints wrk's result line;
- `measure`: one workload against one running server, into a row of the table;
- `report`: the table, its ratios and CPU-per-request columns, the issues' targets, the files
  written; `chart` draws the PNG.
"""
