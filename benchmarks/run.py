"""Run every workload on every system and print one table (plus a JSON file).

    python benchmarks/run.py --workers 2            # full sizes
    python benchmarks/run.py --workers 2 --quick    # CI smoke sizes
    python benchmarks/run.py --systems raw,mpifutures --json out.json
    python benchmarks/run.py --w10                  # also 32 oversubscribed ranks

Each system runs in its own child (its own ``mpiexec`` or its own dask cluster), one
after the other, with numpy's thread pools pinned to one thread.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import time

import child_runner
import harness
import results_table

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

SYSTEMS = ["raw", "mpi4py", "mpi4py-b0", "dask", "mpifutures"]  # raw first: W4's yardstick
W10_SYSTEMS = ["mpifutures", "mpi4py"]
WORKLOADS = ["W1", "W2", "W3", "W4", "W5", "W6", "W7", "W9"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for CI")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"comma-separated subset of {','.join(SYSTEMS)}")
    parser.add_argument("--json", default=os.path.join(ROOT, "bench-results", "bench.json"),
                        help="where to write every figure (default bench-results/bench.json)")
    parser.add_argument("--workloads", default=",".join([*WORKLOADS, "W8"]),
                        help="comma-separated subset of W1..W9 (default: all)")
    parser.add_argument("--w10", action="store_true", help="also run W10 (32 ranks)")
    parser.add_argument("--w10-ranks", type=int, default=32)
    parser.add_argument("--mpiexec", default=default_mpiexec(), help="MPI launcher")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="before each system, wait up to SECONDS for the other "
                             "processes on this machine to use under 10%% of the CPUs")
    parser.add_argument("--timeout-scale", type=float, default=1.0,
                        help="multiply every time budget (slow machines)")
    args = parser.parse_args(argv)
    requested = [s for s in args.systems.split(",") if s]
    unknown = set(requested) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    args.systems = [s for s in SYSTEMS if s in requested]
    chosen = args.workloads.split(",")
    if set(chosen) - {*WORKLOADS, "W8"}:
        parser.error(f"unknown workloads: {', '.join(sorted(set(chosen) - {*WORKLOADS, 'W8'}))}")
    args.workloads = [w for w in [*WORKLOADS, "W8"] if w in chosen]
    return args


def default_mpiexec():
    """The launcher next to this Python if there is one (skips pyenv's slow shims)."""
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.path.exists(beside) else (shutil.which("mpiexec") or "mpiexec")


def child_env(extra=None):
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([HERE, ROOT, env.get("PYTHONPATH", "")]).rstrip(":")
    env.update(extra or {})
    return env


def script(name):
    return os.path.join(HERE, name)


def launch(system, args, ranks=None):
    """``(argv prefix, extra env)`` that starts ``system``'s benchmark child."""
    n = ["-n", str(ranks or args.workers + 1)]
    py, mpi = sys.executable, args.mpiexec
    return {
        "raw": ([mpi, *n, py, script("bench_raw_mpi.py")], {}),
        "mpi4py": ([mpi, *n, py, "-m", "mpi4py.futures", script("bench_mpi4py_futures.py")], {}),
        "mpi4py-b0": ([mpi, *n, py, "-m", "mpi4py.futures", script("bench_mpi4py_futures.py")],
                      {"MPI4PY_FUTURES_BACKOFF": "0"}),
        "dask": ([py, script("bench_dask.py"), "--workers", str(args.workers)], {}),
        "mpifutures": ([mpi, *n, py, "-m", "mpifutures", script("bench_mpifutures.py")], {}),
    }[system]


def one_task(system, args):
    """``(argv, extra env)`` of W8's single-task whole-process run."""
    n = ["-n", str(args.workers + 1)]
    py, mpi = sys.executable, args.mpiexec
    return {
        "raw": ([mpi, *n, py, "-c", "from mpi4py import MPI"], {}),
        "mpi4py": ([mpi, *n, py, "-m", "mpi4py.futures", script("one_task_mpi4py_futures.py")],
                   {}),
        "mpi4py-b0": ([mpi, *n, py, "-m", "mpi4py.futures",
                       script("one_task_mpi4py_futures.py")], {"MPI4PY_FUTURES_BACKOFF": "0"}),
        "dask": ([py, script("one_task_dask.py"), str(args.workers)], {}),
        "mpifutures": ([mpi, *n, py, "-m", "mpifutures", script("one_task_mpifutures.py")], {}),
    }[system]


def compile_bytecode():
    """Write the bytecode of mpifutures and of the benchmark modules before any run.

    pip compiles an installed package (mpi4py, dask) at install time; an editable checkout
    gets its bytecode only when Python may write it, and this machine sets
    PYTHONDONTWRITEBYTECODE=1. Without it, every rank compiled mpifutures' modules from
    source at each start: ~70 ms more on rank 0 per W8 run (README, "Benchmarks").
    """
    import compileall

    for folder in (os.path.join(ROOT, "mpifutures"), HERE):
        if not compileall.compile_dir(folder, maxlevels=0, quiet=1):
            print(f"[run] could not compile the bytecode of {folder}", file=sys.stderr)


def wait_for_quiet(timeout, busy_limit=10.0):
    """CPU% used machine-wide over 1 s; with ``timeout``, wait for it to drop first."""
    import psutil

    deadline = time.monotonic() + timeout
    busy = psutil.cpu_percent(interval=1.0)
    while busy >= busy_limit and time.monotonic() < deadline:
        busy = psutil.cpu_percent(interval=1.0)
    return busy


def unavailable(system):
    """Why ``system`` cannot run here (a missing optional package), or None."""
    from importlib.machinery import PathFinder

    needs = {"dask": "distributed", "mpifutures": "mpifutures"}.get(system, "mpi4py")
    if PathFinder.find_spec(needs, [ROOT, *sys.path]) is None:  # as the children see it
        return f"{needs} is not installed (pip install -e '.[bench]')"
    return None


def budget(args):
    """Seconds each workload may take before its child is killed."""
    full = {"W3": 300, "W4": 300, "W9": 900, "W10": 900}
    quick = {"W9": 120, "W10": 300}
    table, default = (quick, 60) if args.quick else (full, 240)
    return lambda workload: args.timeout_scale * table.get(workload, default)


def run_system(system, args, workloads, ranks=None):
    """Run one system's child (restarting after failures); return records and run info."""
    prefix, extra = launch(system, args, ranks)
    quick = ["--quick"] if args.quick else []
    hang = ["--hang-dump", str(0.9 * budget(args)("any"))]  # stacks to stderr if stuck

    def argv_for(remaining):
        return [*prefix, *quick, *hang, "--only", ",".join(remaining)]

    startup = 120 * args.timeout_scale * (3 if ranks else 1)
    return child_runner.run_with_restarts(argv_for, workloads, child_env(extra), ROOT,
                                          budget(args), startup)


def run_children(system, args):
    """W1-W7 in one child, then W9 in a fresh one: memory that earlier workloads freed
    (and Python keeps for reuse) would otherwise hide W9's RSS growth."""
    records, runs = [], []
    for group in (["W1", "W2", "W3", "W4", "W5", "W6", "W7"], ["W9"]):
        chosen = [w for w in group if w in args.workloads]
        if chosen:
            got, info = run_system(system, args, chosen)
            records += got
            runs += info
    return records, runs


def measure_w8(system, args):
    """Median whole-process wall time of the one-task command (after one warm-up run)."""
    argv, extra = one_task(system, args)
    repeats = harness.sizes(args.quick)["w8_repeats"]
    warmup = 0 if args.quick else 1
    times, failures = [], []
    for i in range(warmup + repeats):
        seconds, info = child_runner.time_command(argv, child_env(extra), ROOT,
                                                  timeout=60 * args.timeout_scale)
        if info["returncode"] != 0 or info["overrun"]:
            failures.append(info)
        elif i >= warmup:
            times.append(seconds)
    if not times:
        return {"row": "W8", "value": None, "error": "one-task run failed", "runs": failures}
    record = {"row": "W8", "value": harness.median(times), "unit": "s", "times_s": times,
              "argv": argv, "failures": failures}
    if system == "raw":
        record["what"] = "floor: mpiexec starting Python ranks that import mpi4py"
    return record


def main(argv=None):
    args = parse_args(argv)
    started = time.monotonic()
    meta = run_meta(args)
    compile_bytecode()
    by_system, runs = {}, {}
    for system in args.systems:
        meta["busy_before"][system] = wait_for_quiet(args.wait_quiet)
        print(f"[run] {system} ... (other processes used {meta['busy_before'][system]:.0f}% "
              "of the CPUs just before)", file=sys.stderr, flush=True)
        why_not = unavailable(system)
        if why_not:
            by_system[system] = [{"row": w, "value": None, "na": why_not}
                                 for w in [*WORKLOADS, "W8"]]
            continue
        records, runs[system] = run_children(system, args)
        if "W8" in args.workloads:
            records.append(measure_w8(system, args))
        by_system[system] = records
    if args.w10:
        for system in [s for s in W10_SYSTEMS if s in args.systems]:
            print(f"[run] {system} W10 with {args.w10_ranks} ranks ...", file=sys.stderr,
                  flush=True)
            records, runs[system + " W10"] = run_system(system, args, ["W10"], args.w10_ranks)
            by_system[system] += records
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    report(args, meta, by_system, runs)


def report(args, meta, by_system, runs):
    specs = results_table.row_specs(args.quick, args.w10_ranks)
    rows = assemble(specs, by_system, runs, args)
    print(results_table.render(rows, specs, args.systems, header_lines(meta, args),
                               show_marks=not args.quick))
    targets = {row: {"label": label,
                     "target": target(rows) if callable(target) else target,
                     "met": results_table.target_met(check, row, rows)}
               for row, label, target, check in specs if row in rows}
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as out:
        json.dump({"meta": meta, "targets": targets, "rows": rows, "runs": runs}, out,
                  indent=1, default=str)
    print(f"\nJSON: {args.json}   ({meta['elapsed_s']} s in all)")


def assemble(specs, by_system, runs, args):
    """``rows[row][system]`` = the child's record, or one saying why there is none."""
    chosen = set(args.workloads) | ({"W10"} if args.w10 else set())
    rows = {row: {} for row, *_ in specs if row.split(".")[0] in chosen}
    for system, records in by_system.items():
        for record in records:
            place(rows, system, record)
        for row, cells in rows.items():
            cells.setdefault(system, missing(system, row, runs))
    return rows


def place(rows, system, record):
    """Put a record in its row; a workload-wide record (``"W9"``) fills all W9 rows."""
    name = record["row"]
    if name in ("_start", "_done", "_meta"):
        return
    workload = record.get("workload", name)
    for row, cells in rows.items():
        if row == name or (row.split(".")[0] == workload and name in (workload, "_error")):
            if name == "_error":
                cells.setdefault(system, {"value": None, "error": record["error"]})
            else:
                cells[system] = {k: v for k, v in record.items() if k != "row"}


def missing(system, row, runs):
    if row.startswith("W10") and system not in W10_SYSTEMS:
        return {"value": None, "na": "W10 runs only mpifutures and mpi4py.futures"}
    key = system + " W10" if row.startswith("W10") else system
    last = (runs.get(key) or [{}])[-1]
    return {"value": None, "error": "no figure reported",
            "returncode": last.get("returncode"), "overrun": last.get("overrun"),
            "stderr_tail": last.get("stderr_tail", "")[-600:]}


def run_meta(args):
    import mpi4py

    mpi4py.rc.initialize = False  # the runner itself never starts MPI
    from mpi4py import MPI

    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "mpi": MPI.Get_library_version().strip().splitlines()[0],
        "cores": os.cpu_count(), "python": platform.python_version(),
        "platform": platform.platform(), "workers": args.workers, "quick": args.quick,
        "sizes": harness.sizes(args.quick), "mpiexec": args.mpiexec,
        "loadavg_at_start": os.getloadavg(), "busy_before": {}, "versions": versions(),
    }


def versions():
    from importlib import metadata

    found = {}
    for name in ("mpi4py", "numpy", "dask", "distributed", "psutil", "mpifutures"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def header_lines(meta, args):
    mode = "QUICK sizes (smoke test; targets are for full sizes)" if args.quick else "full sizes"
    load = ", ".join(f"{x:.2f}" for x in meta["loadavg_at_start"])
    busy = ", ".join(f"{s} {b:.0f}%" for s, b in meta["busy_before"].items())
    return [f"mpifutures benchmarks  {meta['date']}",
            (f"{meta['mpi']}  |  {meta['cores']} cores  |  {args.workers} workers  |  "
             f"Python {meta['python']}  |  {mode}"),
            f"load average at start: {load}  |  CPU% used by others before each system: {busy}"]


if __name__ == "__main__":
    main()
