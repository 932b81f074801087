"""Tree reduction: 16 arrays made on the workers, merged pairwise where they live.

    mpiexec -n 4 python -m mpifutures examples/tree_reduction.py [--seed S]

Only the final 8 MB array travels to rank 0; every intermediate stays on the workers and
moves worker to worker when two neighbours live on different ranks. With ``--seed`` the
arrays come from seeded generators, so the result can be checked against numpy run serially.
"""

import argparse
from operator import add

import numpy as np

from mpifutures import Executor


def seeded_random(seed, n):
    return np.random.default_rng(seed).random(n)


parser = argparse.ArgumentParser()
parser.add_argument("--seed", type=int, help="make array i from numpy's generator seed+i")
seed = parser.parse_args().seed

with Executor() as ex:                                            # the workers of this MPI job
    if seed is None:
        xs = ex.map(np.random.random, [1_000_000] * 16, pure=False)  # 16 arrays, on workers
    else:
        xs = ex.map(seeded_random, range(seed, seed + 16), [1_000_000] * 16)
    while len(xs) > 1:                                            # neighbours merge until one
        xs = [ex.submit(add, xs[i], xs[i + 1]) for i in range(0, len(xs), 2)]
    total = xs[0].result()                                        # only this comes to rank 0
    print(total[:5])
    stats = ex.statistics()
    print(f"checksum: {float(total.sum())!r}")
    print(f"tasks: {stats['tasks_completed']}, bytes to rank 0: {stats['bytes_to_rank0']}, "
          f"bytes between workers: {stats['bytes_between_workers']}")
