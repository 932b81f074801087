"""The workloads on mpifutures.

Run: ``mpiexec -n 3 python -m mpifutures benchmarks/bench_mpifutures.py [--quick]``.
Futures are passed straight to tasks, so intermediate arrays stay on the workers.
Timed submissions use ``pure=False`` so that a repeat is never answered by deduplication.
"""

from __future__ import annotations

import os
import time

import harness
import numpy as np
from harness import emit, median, time_repeats
from mpi4py import MPI
from workloads_common import (
    add,
    add_all,
    inc,
    make_array,
    nbytes_of,
    noop,
    wait_for_file,
)


def worker_ranks(ex):
    """Worker ranks in order (``ex.workers`` is a ``{rank: host}`` mapping)."""
    return sorted(ex.workers)


def w1(args, ex):
    times = []
    for i in range(10 + args.sizes["w1_trips"]):
        start = time.perf_counter()
        ex.submit(noop, pure=False).result()
        if i >= 10:
            times.append((time.perf_counter() - start) * 1e6)
    emit("W1", median(times), "µs", min=min(times), trips=len(times))


def w2(args, ex, prefix="W2"):
    n, repeats = args.sizes["w2_tasks"], args.sizes["repeats"]
    submit = time_repeats(
        lambda: ex.gather([ex.submit(inc, i, pure=False) for i in range(n)]), repeats)
    emit(f"{prefix}.submit", n / median(submit), "tasks/s", tasks=n, times_s=submit)
    if prefix == "W2":
        mapped = time_repeats(lambda: ex.gather(ex.map(inc, range(n), pure=False)), repeats)
        emit(f"{prefix}.map", n / median(mapped), "tasks/s", tasks=n, times_s=mapped)


def tree(ex, count, length):
    """Pairwise sums of arrays that stay on the workers; only the total is fetched."""
    arrays = ex.map(np.random.random, [length] * count, pure=False)
    while len(arrays) > 1:
        pairs = [ex.submit(add, arrays[i], arrays[i + 1]) for i in range(0, len(arrays) - 1, 2)]
        arrays = pairs + ([arrays[-1]] if len(arrays) % 2 else [])
    return arrays[0].result()


def counters(ex):
    stats = ex.statistics()
    return {k: stats.get(k) for k in ("tasks_completed", "bytes_to_rank0",
                                      "bytes_between_workers")}


def delta(before, after):
    return {k: (after[k] - before[k]) if None not in (after[k], before[k]) else None
            for k in before}


def w3(args, ex, prefix="W3"):
    count, length = args.sizes["w3_arrays"], args.sizes["w3_length"]
    per_run = []

    def once():
        before = counters(ex)
        assert tree(ex, count, length).shape == (length,)
        per_run.append(delta(before, counters(ex)))

    times = time_repeats(once, args.sizes["w3_repeats"], warmup=1)  # as raw's floor has
    emit(prefix, median(times), "s", times_s=times)
    if prefix == "W3":
        emit("W3.bytes", per_run[-1]["bytes_to_rank0"], "B", counters=per_run[-1],
             final_array_bytes=length * 8, how="ex.statistics() difference over one run")


def w4(args, ex):
    """Array made on worker A, consumed by a task pinned to worker B."""
    nbytes, rates, moved = args.sizes["w4_bytes"], [], []
    a, b = worker_ranks(ex)[:2]

    def once():
        array = ex.submit(make_array, nbytes, workers=[a], pure=False)
        assert ex.submit(nbytes_of, array, workers=[a], pure=False).result() == nbytes
        before = counters(ex)
        start = time.perf_counter()
        assert ex.submit(nbytes_of, array, workers=[b], pure=False).result() == nbytes
        rates.append(nbytes / (time.perf_counter() - start) / 1e9)
        moved.append(delta(before, counters(ex)))

    once()  # a warm-up round, not counted (raw's bandwidth has one too)
    rates.clear()
    time_repeats(once, args.sizes["repeats"])
    emit("W4", median(rates), "GB/s", rates=rates, nbytes=nbytes, counters=moved[-1],
         what=f"array on rank {a}, consumer pinned to rank {b}")


def w5(args, ex):
    n = args.sizes["w5_chain"]
    times = time_repeats(lambda: harness.futures_chain(ex, n), args.sizes["repeats"])
    emit("W5", n / median(times), "tasks/s", times_s=times)


def w6(args, ex):
    n = args.sizes["w6_tasks"]

    def fan_in():
        futures = [ex.submit(inc, i, pure=False) for i in range(n)]
        assert ex.submit(add_all, *futures, pure=False).result() == n * (n + 1) // 2

    times = time_repeats(fan_in, args.sizes["repeats"])
    emit("W6", median(times), "s", times_s=times)


def w7(args, ex, prefix="W7"):
    ex.submit(noop, pure=False).result()
    harness.report_idle(prefix, os.getpid(), harness.sibling_rank_pids(),
                        args.sizes["w7_idle_s"])


def w9(args, ex):
    def start_blockers(blocker):
        return [ex.submit(wait_for_file, blocker.path, blocker.markers, workers=[w],
                          pure=False) for w in worker_ranks(ex)]

    harness.w9_scaling(args, lambda n: ex.map(inc, range(n), pure=False), ex.gather,
                       start_blockers)


def w10(args, ex):
    w2(args, ex, prefix="W10.W2")
    w3(args, ex, prefix="W10.W3")
    w7(args, ex, prefix="W10.idle")


WORKLOADS = {"W1": w1, "W2": w2, "W3": w3, "W4": w4, "W5": w5, "W6": w6, "W7": w7,
             "W9": w9, "W10": w10}


def main():
    from mpifutures import Executor

    args = harness.parse_args()
    harness.child_env_check()
    with Executor() as ex:
        ex.submit(noop, pure=False).result()  # the runtime is up before anything is timed
        emit("_meta", workers=len(ex.workers), world=MPI.COMM_WORLD.size)
        harness.run_workloads(WORKLOADS, args, ex)


if __name__ == "__main__":
    main()
