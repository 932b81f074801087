"""CPU time per task on rank 0 and on each worker, for W2 (independent tasks) and W5 (a chain).

Run: ``mpiexec -n 3 python -m mpifutures benchmarks/cpu_per_task.py`` (from the repository
root). The wall time per task says how fast; the CPU split says which rank limits it. Rank 0's
figure counts every thread of the process (the script's and the scheduler's).
"""

from __future__ import annotations

import resource
import time

from harness import futures_chain
from workloads_common import inc

from mpifutures import Executor


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(ex, name, run, tasks):
    workers0, rank0, start = ex.run(cpu_seconds), cpu_seconds(), time.perf_counter()
    run()
    wall, rank0 = time.perf_counter() - start, cpu_seconds() - rank0
    workers = {r: (c - workers0[r]) / tasks * 1e6 for r, c in ex.run(cpu_seconds).items()}
    print(f"{name:7s} {tasks / wall:8,.0f} tasks/s | wall {wall / tasks * 1e6:5.1f} µs/task | "
          f"CPU µs/task: rank 0 {rank0 / tasks * 1e6:5.1f}, "
          + ", ".join(f"rank {r} {us:5.1f}" for r, us in sorted(workers.items())))


def main():
    with Executor() as ex:
        ex.gather(ex.map(inc, range(1000), pure=False))  # warm up
        n, rounds = 10_000, 3
        measure(ex, "submit", lambda: [ex.gather([ex.submit(inc, i, pure=False)
                                                   for i in range(n)]) for _ in range(rounds)],
                n * rounds)
        measure(ex, "map", lambda: [ex.gather(ex.map(inc, range(n), pure=False))
                                    for _ in range(rounds)], n * rounds)
        measure(ex, "chain", lambda: [futures_chain(ex, 1000) for _ in range(5)], 5000)


if __name__ == "__main__":
    main()
