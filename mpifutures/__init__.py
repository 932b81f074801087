"""mpifutures: futures whose data stays on the MPI ranks that made it.

Run a script with ``mpiexec -n 4 python -m mpifutures script.py``; inside it::

    from mpifutures import Executor
    ex = Executor()
    x = ex.submit(make_array)          # runs on a worker; the array stays there
    y = ex.submit(process, x)          # runs where x lives, receives x's value
    print(y.result())                  # only now does data come to rank 0
"""

from .errors import (DataLostError, ExecutorClosedError, MpiFuturesError, NoWorkersError,
                     RemoteTraceback, SerializationError, TaskExit, WorkerLostError)
from .progress import progress  # eager: the submodule of the same name would shadow it

# The rest is imported on first use: worker ranks never need the client side, and every
# module a rank imports adds to the start-up time of the whole job.
_LAZY = {
    "Executor": "executor", "Future": "future", "PoolExecutor": "pool",
    "performance_report": "diagnostics", "init": "launch",
    "spmd": "launch", "ALL_COMPLETED": "waiting", "FIRST_COMPLETED": "waiting",
    "FIRST_EXCEPTION": "waiting", "as_completed": "waiting", "wait": "waiting",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mpifutures' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "DataLostError",
    "Executor",
    "ExecutorClosedError",
    "Future",
    "MpiFuturesError",
    "NoWorkersError",
    "PoolExecutor",
    "RemoteTraceback",
    "SerializationError",
    "TaskExit",
    "WorkerLostError",
    "as_completed",
    "init",
    "performance_report",
    "progress",
    "spmd",
    "wait",
]
