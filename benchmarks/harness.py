"""Helpers for the benchmark children: sizes, timing, CPU and memory probes, output.

A child reports every figure as one line on stdout, ``@@BENCH {json}``; ``run.py`` reads
those lines and ignores everything else the child (or MPI) prints.
"""

from __future__ import annotations

import argparse
import faulthandler
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback

import psutil

PREFIX = "@@BENCH "

FULL = {
    "w1_trips": 200, "w2_tasks": 10_000, "w3_arrays": 16, "w3_length": 1_000_000,
    "w4_bytes": 100_000_000, "w5_chain": 1_000, "w6_tasks": 2_000, "w7_idle_s": 5.0,
    "w9_sizes": [1_000, 10_000, 100_000], "repeats": 5, "w8_repeats": 5, "w3_repeats": 15,
}
QUICK = {
    "w1_trips": 20, "w2_tasks": 500, "w3_arrays": 16, "w3_length": 100_000,
    "w4_bytes": 10_000_000, "w5_chain": 100, "w6_tasks": 200, "w7_idle_s": 1.0,
    "w9_sizes": [100, 300, 1_000], "repeats": 2, "w8_repeats": 1, "w3_repeats": 2,
}
OPTIONAL = {"W10"}  # run only when named in --only


def sizes(quick):
    """The workload sizes for a full or a ``--quick`` run."""
    return dict(QUICK if quick else FULL)


def emit(row, value=None, unit=None, **extra):
    """Print one figure for ``run.py``."""
    record = {"row": row, "value": value, "unit": unit, **extra}
    print(PREFIX + json.dumps(record, default=str), flush=True)


def not_applicable(rows, why):
    """Report rows that make no sense for this system, with the reason."""
    for row in rows:
        emit(row, None, None, na=why)


def parse_args(argv=None):
    """Arguments every child understands."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="tiny CI sizes")
    parser.add_argument("--only", default="", help="comma-separated workload ids")
    parser.add_argument("--workers", type=int, default=2, help="workers (dask only)")
    parser.add_argument("--hang-dump", type=float, default=0.0,
                        help="dump all stacks to stderr if one workload runs this long")
    args = parser.parse_args(argv)
    args.sizes = sizes(args.quick)
    args.only = [w for w in args.only.split(",") if w]
    return args


def median(values):
    return statistics.median(values)


def time_repeats(fn, repeats, budget_s=20.0, warmup=0):
    """Call ``fn()`` up to ``repeats`` times; return the wall times in seconds.

    Stops early (after at least one call) once ``budget_s`` is spent, so that a system
    that is very slow at a workload does not stall the whole run. ``warmup`` calls come
    first and are not timed.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if sum(times) > budget_s:
            break
    return times


def futures_chain(client, n):
    """W5 where futures can be arguments (mpifutures, dask): ``n`` tasks, each taking the last."""
    from workloads_common import inc

    future = client.submit(inc, 0, pure=False)
    for _ in range(n - 1):
        future = client.submit(inc, future, pure=False)
    assert future.result() == n


def cpu_seconds(pid):
    """User plus system CPU seconds used so far by one process (all its threads)."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def idle_cpu_percent(pids, seconds, split=1.0):
    """CPU% of each process over a window of ``seconds`` during which we only sleep.

    Returns ``{pid: (whole window, first split seconds, rest)}``: runtimes often poll
    faster right after the last task and settle later, so both parts are kept.
    """
    marks = []
    for pause in (0.0, min(split, seconds), max(0.0, seconds - split)):
        time.sleep(pause)
        marks.append((time.monotonic(), {pid: cpu_seconds(pid) for pid in pids}))

    def percent(a, b, pid):
        (t0, c0), (t1, c1) = marks[a], marks[b]
        return 100.0 * (c1[pid] - c0[pid]) / (t1 - t0) if t1 > t0 else None

    return {pid: (percent(0, 2, pid), percent(0, 1, pid), percent(1, 2, pid)) for pid in pids}


def sibling_rank_pids():
    """Process ids of the other MPI ranks on this node (children of our launcher)."""
    me = psutil.Process()
    return [p.pid for p in me.parent().children() if p.pid != me.pid]


def rss_bytes():
    return psutil.Process().memory_info().rss


def settled_rss_bytes(step=0.2, tolerance=0.005, timeout=30.0):
    """RSS once it stops growing: schedulers that run in a thread of this process
    (mpifutures, dask) take in a batch of submissions after ``submit`` has returned."""
    deadline = time.monotonic() + timeout
    previous = rss_bytes()
    while time.monotonic() < deadline:
        time.sleep(step)
        current = rss_bytes()
        if abs(current - previous) <= tolerance * previous:
            return current
        previous = current
    return previous


def report_idle(prefix, rank0_pid, worker_pids, seconds, others=()):
    """Measure an idle window and emit worker and rank-0 CPU% rows.

    ``others`` are further processes (dask's nannies) reported only in the JSON.
    """
    cpu = idle_cpu_percent([rank0_pid, *worker_pids, *others], seconds)
    workers = [cpu[pid][0] for pid in worker_pids]
    emit(f"{prefix}.workers", max(workers), "%", per_worker=workers,
         median_worker=median(workers), window_s=seconds,
         first_second=[cpu[pid][1] for pid in worker_pids],
         after_first_second=[cpu[pid][2] for pid in worker_pids])
    emit(f"{prefix}.rank0", cpu[rank0_pid][0], "%", window_s=seconds,
         first_second=cpu[rank0_pid][1], after_first_second=cpu[rank0_pid][2],
         other_processes=[cpu[pid][0] for pid in others])


def run_workloads(workloads, args, *context):
    """Run each selected workload ``fn(args, *context)``; a failure is reported, not fatal."""
    for wid, fn in workloads.items():
        if (args.only and wid not in args.only) or (not args.only and wid in OPTIONAL):
            continue
        emit("_start", workload=wid)
        if args.hang_dump > 0:
            faulthandler.dump_traceback_later(args.hang_dump, exit=False, file=sys.stderr)
        try:
            fn(args, *context)
        except Exception as exc:  # noqa: BLE001 - report it and go on with the next one
            traceback.print_exc()
            emit("_error", workload=wid, error=f"{type(exc).__name__}: {exc}")
        finally:
            faulthandler.cancel_dump_traceback_later()
        emit("_done", workload=wid)


def child_env_check():
    """Warn (on stderr) when numpy's thread pools are not pinned to one thread."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(name) != "1":
            print(f"warning: {name} is not 1", file=sys.stderr)


class Blocker:
    """Keeps workers busy (with ``wait_for_file`` tasks) until :meth:`release`."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mpifutures-bench-")
        self.path = os.path.join(self.dir, "release")
        self.markers = os.path.join(self.dir, "markers")
        os.mkdir(self.markers)

    def wait_started(self, count, timeout=60.0):
        deadline = time.monotonic() + timeout
        while len(os.listdir(self.markers)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(os.listdir(self.markers))} of {count} "
                                   "blocking tasks started")
            time.sleep(0.005)

    def release(self):
        open(self.path, "w").close()

    def close(self):
        self.release()
        shutil.rmtree(self.dir, ignore_errors=True)


def w9_memory(n, submit_batch, gather, start_blockers):
    """Rank-0 RSS growth per pending task while every worker is held busy."""
    blocker = Blocker()
    try:
        blockers = start_blockers(blocker)
        blocker.wait_started(len(blockers))
        gc.collect()
        before = rss_bytes()
        futures = submit_batch(n)
        growth = settled_rss_bytes() - before
        blocker.release()
        gather(futures)
        for future in blockers:
            future.result()
    finally:
        blocker.close()
    return growth / n


def w9_scaling(args, submit_batch, gather, start_blockers):
    """W9: time per task at three sizes, and rank-0 memory per pending task.

    ``submit_batch(n)`` submits ``n`` independent tasks (each system's ``map``);
    ``gather(batch)`` waits for all of them and returns their values.

    Memory is measured first, smallest size first, so that freed memory from an
    earlier, larger batch cannot hide the growth of a later one.
    """
    ns = args.sizes["w9_sizes"]
    per_pending = [w9_memory(n, submit_batch, gather, start_blockers) for n in ns]
    per_task = []
    for i, n in enumerate(ns):
        repeats = 1 if (args.quick or n > 10_000) else 3
        times = time_repeats(lambda n=n: gather(submit_batch(n)), repeats)
        per_task.append(median(times) / n * 1e6)
        emit(f"W9.n{i + 1}", per_task[-1], "µs/task", tasks=n, repeats=repeats)
    emit("W9.flat", max(per_task) / min(per_task), "ratio", per_task_us=per_task,
         what="slowest / fastest time per task over the three sizes")
    emit("W9.mem", per_pending[-1], "B/task", tasks=ns[-1],
         per_size=dict(zip(map(str, ns), per_pending)),
         what="rank-0 RSS growth per pending task, workers held busy")
