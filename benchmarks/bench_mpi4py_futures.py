"""The workloads on mpi4py.futures' ``MPIPoolExecutor``.

Run: ``mpiexec -n 3 python -m mpi4py.futures benchmarks/bench_mpi4py_futures.py``; set
``MPI4PY_FUTURES_BACKOFF=0`` in the environment for the busy-polling variant.
mpi4py.futures cannot pass a future to a task, so W3, W5 and W6 bring every value back to
rank 0 and send it out again: exactly what a user of that API pays.
"""

from __future__ import annotations

import os
import time

import harness
import numpy as np
from harness import emit, median, time_repeats
from mpi4py.futures import MPIPoolExecutor
from workloads_common import (
    add,
    add_all,
    inc,
    make_array_stamped,
    nbytes_of,
    noop,
    wait_for_file,
)

THROUGH_RANK0 = "values through rank 0"


def w1(args, ex):
    times = []
    for i in range(10 + args.sizes["w1_trips"]):
        start = time.perf_counter()
        ex.submit(noop).result()
        if i >= 10:
            times.append((time.perf_counter() - start) * 1e6)
    emit("W1", median(times), "µs", min=min(times), trips=len(times))


def w2_rates(args, ex, prefix="W2"):
    n, repeats = args.sizes["w2_tasks"], args.sizes["repeats"]
    submit = time_repeats(lambda: [f.result() for f in [ex.submit(inc, i) for i in range(n)]],
                          repeats)
    emit(f"{prefix}.submit", n / median(submit), "tasks/s", tasks=n, times_s=submit)
    if prefix == "W2":
        mapped = time_repeats(lambda: list(ex.map(inc, range(n))), repeats)
        emit(f"{prefix}.map", n / median(mapped), "tasks/s", tasks=n, times_s=mapped,
             note="map with the default chunksize=1")


def tree_through_rank0(ex, count, length):
    """Pairwise sums, level by level; every array comes back to rank 0 in between."""
    arrays = list(ex.map(np.random.random, [length] * count))
    while len(arrays) > 1:
        pairs = [ex.submit(add, arrays[i], arrays[i + 1]) for i in range(0, len(arrays) - 1, 2)]
        leftover = [arrays[-1]] if len(arrays) % 2 else []
        arrays = [f.result() for f in pairs] + leftover
    return arrays[0]


def w3(args, ex, prefix="W3"):
    count, length = args.sizes["w3_arrays"], args.sizes["w3_length"]
    times = time_repeats(lambda: tree_through_rank0(ex, count, length), args.sizes["w3_repeats"],
                         warmup=1)
    emit(prefix, median(times), "s", times_s=times, note=THROUGH_RANK0)
    if prefix == "W3":
        emit("W3.bytes", (2 * count - 1) * length * 8, "B", note=THROUGH_RANK0,
             how="computed, not measured: every array and every partial sum reaches rank 0")


def w4(args, ex):
    """Array made on a worker, consumed on a worker: worker -> rank 0 -> worker."""
    nbytes, rates = args.sizes["w4_bytes"], []

    def once():
        array, ready = ex.submit(make_array_stamped, nbytes).result()
        leg1 = time.time() - ready
        start = time.perf_counter()
        assert ex.submit(nbytes_of, array).result() == nbytes
        rates.append(nbytes / (leg1 + time.perf_counter() - start) / 1e9)

    once()  # a warm-up round, not counted (raw's bandwidth has one too)
    rates.clear()
    time_repeats(once, args.sizes["repeats"])
    emit("W4", median(rates), "GB/s", rates=rates, nbytes=nbytes,
         note="worker -> rank 0 -> worker; workers cannot be chosen")


def w5(args, ex):
    n = args.sizes["w5_chain"]

    def chain():
        value = 0
        for _ in range(n):
            value = ex.submit(inc, value).result()
        assert value == n

    times = time_repeats(chain, args.sizes["repeats"])
    emit("W5", n / median(times), "tasks/s", times_s=times, note=THROUGH_RANK0)


def w6(args, ex):
    n = args.sizes["w6_tasks"]

    def fan_in():
        values = [f.result() for f in [ex.submit(inc, i) for i in range(n)]]
        assert ex.submit(add_all, *values).result() == n * (n + 1) // 2

    times = time_repeats(fan_in, args.sizes["repeats"])
    emit("W6", median(times), "s", times_s=times, note=THROUGH_RANK0)


def w7(args, ex, prefix="W7", seconds=None):
    ex.submit(noop).result()
    seconds = seconds or args.sizes["w7_idle_s"]
    harness.report_idle(prefix, os.getpid(), harness.sibling_rank_pids(), seconds)


def w9(args, ex):
    def start_blockers(blocker):
        return [ex.submit(wait_for_file, blocker.path, blocker.markers)
                for _ in range(ex.num_workers)]

    # ``ex.map`` returns an iterator; its futures are all submitted before it returns
    harness.w9_scaling(args, lambda n: ex.map(inc, range(n)), list, start_blockers)


def w10(args, ex):
    w2_rates(args, ex, prefix="W10.W2")
    w3(args, ex, prefix="W10.W3")
    w7(args, ex, prefix="W10.idle")


WORKLOADS = {"W1": w1, "W2": w2_rates, "W3": w3, "W4": w4, "W5": w5, "W6": w6, "W7": w7,
             "W9": w9, "W10": w10}


def main():
    args = harness.parse_args()
    harness.child_env_check()
    with MPIPoolExecutor() as ex:
        ex.submit(noop).result()  # every worker is up before anything is timed
        emit("_meta", workers=ex.num_workers,
             backoff=os.environ.get("MPI4PY_FUTURES_BACKOFF", "default"))
        harness.run_workloads(WORKLOADS, args, ex)


if __name__ == "__main__":
    main()
