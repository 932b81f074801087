"""The workloads on dask.distributed with a ``LocalCluster`` of single-threaded processes.

Run: ``python benchmarks/bench_dask.py [--workers 2] [--quick]`` (no MPI involved).
Dask's scheduler runs inside this process, so "rank 0" below means the client process,
which holds both the client and the scheduler. Every submission uses ``pure=False`` so that
repeats are not answered from dask's cache.
"""

from __future__ import annotations

import os
import time

import harness
import numpy as np
import psutil
from harness import emit, median, time_repeats
from workloads_common import (
    add,
    add_all,
    inc,
    make_array,
    nbytes_of,
    noop,
    wait_for_file,
)


def w1(args, client, workers):
    times = []
    for i in range(10 + args.sizes["w1_trips"]):
        start = time.perf_counter()
        client.submit(noop, pure=False).result()
        if i >= 10:
            times.append((time.perf_counter() - start) * 1e6)
    emit("W1", median(times), "µs", min=min(times), trips=len(times))


def w2(args, client, workers):
    n, repeats = args.sizes["w2_tasks"], args.sizes["repeats"]
    submit = time_repeats(
        lambda: client.gather([client.submit(inc, i, pure=False) for i in range(n)]), repeats)
    emit("W2.submit", n / median(submit), "tasks/s", tasks=n, times_s=submit)
    mapped = time_repeats(lambda: client.gather(client.map(inc, range(n), pure=False)),
                          repeats)
    emit("W2.map", n / median(mapped), "tasks/s", tasks=n, times_s=mapped)


def tree(client, count, length):
    """Pairwise sums of arrays that stay on the workers; only the total is fetched."""
    arrays = client.map(np.random.random, [length] * count, pure=False)
    while len(arrays) > 1:
        pairs = [client.submit(add, arrays[i], arrays[i + 1], pure=False)
                 for i in range(0, len(arrays) - 1, 2)]
        arrays = pairs + ([arrays[-1]] if len(arrays) % 2 else [])
    return arrays[0].result()


def w3(args, client, workers):
    count, length = args.sizes["w3_arrays"], args.sizes["w3_length"]
    times = time_repeats(lambda: tree(client, count, length), args.sizes["w3_repeats"],
                         warmup=1)
    emit("W3", median(times), "s", times_s=times)
    emit("W3.bytes", None, None, na="dask keeps no byte counter for the client; "
         "by construction it fetches only the final array")


def w4(args, client, workers):
    """Array made on the first worker, consumed by a task pinned to the second."""
    from dask.distributed import wait

    nbytes, rates = args.sizes["w4_bytes"], []

    def once():
        array = client.submit(make_array, nbytes, workers=[workers[0]], pure=False)
        wait(array)
        start = time.perf_counter()
        used = client.submit(nbytes_of, array, workers=[workers[1]], pure=False)
        assert used.result() == nbytes
        rates.append(nbytes / (time.perf_counter() - start) / 1e9)

    once()  # a warm-up round, not counted (raw's bandwidth has one too)
    rates.clear()
    time_repeats(once, args.sizes["repeats"])
    emit("W4", median(rates), "GB/s", rates=rates, nbytes=nbytes)


def w5(args, client, workers):
    n = args.sizes["w5_chain"]
    times = time_repeats(lambda: harness.futures_chain(client, n), args.sizes["repeats"])
    emit("W5", n / median(times), "tasks/s", times_s=times)


def w6(args, client, workers):
    n = args.sizes["w6_tasks"]

    def fan_in():
        futures = [client.submit(inc, i, pure=False) for i in range(n)]
        total = client.submit(add_all, *futures, pure=False)
        assert total.result() == n * (n + 1) // 2

    times = time_repeats(fan_in, args.sizes["repeats"])
    emit("W6", median(times), "s", times_s=times)


def w7(args, client, workers):
    client.submit(noop, pure=False).result()
    worker_pids = list(client.run(os.getpid).values())
    nannies = [p.pid for p in psutil.Process().children() if p.pid not in worker_pids]
    harness.report_idle("W7", os.getpid(), worker_pids, args.sizes["w7_idle_s"],
                        others=nannies)


def w9(args, client, workers):
    def start_blockers(blocker):
        return [client.submit(wait_for_file, blocker.path, blocker.markers, workers=[w],
                              pure=False) for w in workers]

    harness.w9_scaling(args, lambda n: client.map(inc, range(n), pure=False), client.gather,
                       start_blockers)


WORKLOADS = {"W1": w1, "W2": w2, "W3": w3, "W4": w4, "W5": w5, "W6": w6, "W7": w7, "W9": w9}


def main():
    from dask.distributed import Client, LocalCluster

    args = harness.parse_args()
    harness.child_env_check()
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.submit(noop, pure=False).result()
        workers = sorted(client.scheduler_info()["workers"])
        emit("_meta", workers=len(workers))
        harness.run_workloads(WORKLOADS, args, client, workers)


if __name__ == "__main__":
    main()
