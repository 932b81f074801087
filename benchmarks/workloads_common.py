"""Task functions shared by every benchmarked system.

They live at module level in an importable module so that every system (mpifutures,
mpi4py.futures, dask) pickles them by reference: workers import this module from
``benchmarks/`` on ``PYTHONPATH`` instead of receiving the function's code each time.
"""

from __future__ import annotations

import operator
import os
import time

import numpy as np

add = operator.add


def noop():
    """The smallest task: no inputs, returns None."""
    return


def inc(x):
    """One integer in, one integer out."""
    return x + 1


def add_all(*values):
    """Sum any number of positional values (W6's final task)."""
    total = 0
    for value in values:
        total += value
    return total


def getpid():
    """The id of the process that ran the task."""
    return os.getpid()


def make_array(nbytes):
    """A float64 array of ``nbytes`` bytes, every page written."""
    return np.ones(nbytes // 8, dtype=np.float64)


def make_array_stamped(nbytes):
    """``make_array`` plus the wall-clock time at which the array was ready."""
    array = make_array(nbytes)
    return array, time.time()


def nbytes_of(array):
    """Consume an array and return only its size, so the reply is tiny."""
    return int(array.nbytes)


def wait_for_file(path, marker_dir, timeout=600.0):
    """Occupy a worker until ``path`` exists; announce the start in ``marker_dir``.

    Used to hold every worker busy while rank 0 accumulates pending tasks (W9).
    """
    open(os.path.join(marker_dir, f"started.{os.getpid()}"), "w").close()
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.005)
    return os.getpid()
