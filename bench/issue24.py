"""Issue 24's table in one command: each row against its goal, with the load average beside it.

    python bench/issue24.py            # full sizes (1,000 files, 100,000 done, 10,000 state
                                       # jobs, 300 files on 1/2/3/4 daemons): about 16 minutes
    python bench/issue24.py --quick    # 200 files, 10,000 done, 1,000 state jobs (x10),
                                       # 300 files on 1/2/3/4 daemons: about 7 minutes

Single-daemon rows come from bench/overhead.py's parts (throughput, library, state); the
multi-host rows from bench/multi_host.py's runs on PostgreSQL (each run in a database made for
it; transactions are the ``xact_commit`` delta of ``pg_stat_database`` for that database).
The machine is shared, so the load average is printed at the start and the end of each part.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import multi_host
import overhead


def ok(value: float, limit: float, le: bool = False) -> str:
    return "yes" if (value <= limit if le else value < limit) else "NO"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="smaller sizes (see the docstring)")
    p.add_argument("--only", default="throughput,library,state,hosts",
                   help="comma-separated parts (default: all)")
    p.add_argument("--hosts", default="1,2,3,4", help="daemon counts on PostgreSQL")
    p.add_argument("--host-files", type=int, default=300, help="files for the multi-host runs")
    p.add_argument("--pg", default=os.environ.get(
        "STTWATCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"))
    a = p.parse_args(argv)
    files, done, jobs, scale = ((200, 10_000, 1_000, 10) if a.quick
                                else (1_000, 100_000, 10_000, 1))
    task, limit = 2.0, 32
    parts = set(a.only.split(","))
    loads: list[str] = [f"start {overhead.loadavg()}"]
    print(f"issue 24 bench: {'quick' if a.quick else 'full'}; {os.cpu_count()} cores; load "
          f"average {overhead.loadavg()}", flush=True)
    f = overhead.Figures()
    tmp = Path(tempfile.mkdtemp(prefix="sttwatch-issue24-"))
    try:
        if "throughput" in parts:
            overhead.throughput(f, tmp, files, task, limit)
            loads.append(f"throughput {overhead.loadavg()}")
        if "library" in parts:
            overhead.library(f, tmp, done, 10.0, 1)
            loads.append(f"library {overhead.loadavg()}")
        if "state" in parts:
            overhead.state_size(f, jobs, scale)
            loads.append(f"state {overhead.loadavg()}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    hosts: list[multi_host.RunResult] = []
    if "hosts" in parts:
        args = argparse.Namespace(files=a.host_files, task_seconds=task, concurrency=limit,
                                  in_flight="split", settle=0.2, pg=a.pg, timeout=300.0,
                                  grace=1.0)
        for k in (int(x) for x in a.hosts.split(",")):
            print(f"[hosts] {k} daemon(s) on PostgreSQL, {a.host_files} files", flush=True)
            r = multi_host.run_once(args, "postgres", k, True)
            print(f"  done {r.done}/{a.host_files}, exit {r.exit_codes}, span {r.span}, "
                  f"xacts {r.xacts}, cpu {r.cpu:.2f} s, PostgreSQL cpu "
                  f"{'n/a' if r.pg_cpu is None else f'{r.pg_cpu:.2f} s'}; "
                  f"load {overhead.loadavg()}", flush=True)
            hosts.append(r)
        loads.append(f"hosts {overhead.loadavg()}")

    v = f.values
    out = ["| figure | goal | measured | met? |", "| --- | --- | --- | --- |"]
    if "cpu_per_file" in v:
        out.append(f"| daemon CPU per file, {files:,} files, 2 s tasks, limit 32 | < 5 ms | "
                   f"{v['cpu_per_file'] * 1000:.1f} ms | {ok(v['cpu_per_file'], 0.005)} |")
        out.append(f"| requests per file (creates + fetches) | <= 2.3 | {v['requests']:.2f} | "
                   f"{ok(v['requests'], 2.3, le=True)} |")
        out.append(f"| 1 daemon, SQLite, {files:,} files: first create -> last transcript / "
                   f"bound | <= 1.05x | {v['ratio']:.3f}x | {ok(v['ratio'], 1.05, le=True)} |")
    if hosts:
        n = a.host_files
        ideal = math.ceil(n / limit) * task
        ratios = [(r.span or math.nan) / ideal for r in hosts]
        xacts = [(r.xacts or 0) / n for r in hosts]
        cpus = [1000 * r.cpu / n for r in hosts]
        ks = "/".join(str(r.daemons) for r in hosts)
        out.append(f"| {ks} daemons on one PostgreSQL store, {n} files, limit 32 split: first "
                   f"create -> last transcript / bound | <= 1.05x | "
                   f"{' / '.join(f'{x:.2f}x' for x in ratios)} | "
                   f"{ok(max(ratios), 1.05, le=True)} |")
        flat = max(xacts) <= 1.2 * min(xacts)
        out.append(f"| PostgreSQL transactions per file, {ks} daemons | <= 15, flat in the "
                   f"daemons | {' / '.join(f'{x:.1f}' for x in xacts)} | "
                   f"{'yes' if max(xacts) <= 15 and flat else 'NO'} |")
        out.append(f"| daemon CPU per file, {ks} daemons (all daemons together) | flat in the "
                   f"daemons | {' / '.join(f'{x:.1f}' for x in cpus)} ms | "
                   f"{'yes' if max(cpus) <= 1.2 * min(cpus) else 'NO'} |")
        if all(r.ready_cpu is not None for r in hosts):
            net = [1000 * (r.cpu - (r.ready_cpu or 0.0)) / n for r in hosts]
            out.append(f"| the same after start-up (less each daemon's CPU at READY=1: "
                       f"{' / '.join(f'{r.ready_cpu or 0.0:.2f}' for r in hosts)} s) | flat in "
                       f"the daemons | {' / '.join(f'{x:.1f}' for x in net)} ms | "
                       f"{'yes' if max(net) <= 1.2 * min(net) else 'NO'} |")
        if all(r.ready_cpu is not None and r.stop_cpu is not None for r in hosts):
            run = [1000 * ((r.stop_cpu or 0.0) - (r.ready_cpu or 0.0)) / n for r in hosts]
            out.append(f"| the same between READY=1 and the stop (less each daemon's CPU after "
                       f"its SIGTERM too: "
                       f"{' / '.join(f'{r.cpu - (r.stop_cpu or 0.0):.2f}' for r in hosts)} s) "
                       f"| flat in the daemons | {' / '.join(f'{x:.1f}' for x in run)} ms | "
                       f"{'yes' if max(run) <= 1.2 * min(run) else 'NO'} |")
        if all(r.pg_cpu is not None for r in hosts):
            out.append(f"| PostgreSQL's own CPU per file (its backends for the run), {ks} "
                       f"daemons | (reported) | "
                       f"{' / '.join(f'{1000 * (r.pg_cpu or 0) / n:.1f}' for r in hosts)} ms |"
                       f" |")
        files_s = [n / r.wall for r in hosts]
        out.append(f"| files per second (launch -> last transcript), {ks} daemons | "
                   f"bound {n / ideal:.2f} | {' / '.join(f'{x:.2f}' for x in files_s)} | |")
        if any(r.done != n or any(c != 0 for c in r.exit_codes) for r in hosts):
            out.append("| WARNING | a multi-host run did not finish every file cleanly | | |")
    if "startup_cpu" in v:
        out.append(f"| {done:,} done files: start-up CPU | < 3 s | {v['startup_cpu']:.2f} s | "
                   f"{ok(v['startup_cpu'], 3.0)} |")
        out.append(f"| a rescan of {done:,} files | < 1 s CPU | {v['rescan_cpu']:.2f} s | "
                   f"{ok(v['rescan_cpu'], 1.0)} |")
    if "state_mb" in v:
        out.append(f"| state file, {jobs * scale:,} jobs with 1,000-word results | < 50 MB | "
                   f"{v['state_mb']:,.0f} MB | {ok(v['state_mb'], 50.0)} |")
    if "state_indexed_mb" in v:
        out.append(f"| the same with the search index (docs/search.md) | < 50 MB | "
                   f"{v['state_indexed_mb']:,.0f} MB | {ok(v['state_indexed_mb'], 50.0)} |")
    print()
    print("\n".join(out))
    print()
    print("load average (1/5/15 min): " + "; ".join(loads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
