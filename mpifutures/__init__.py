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
from .diagnostics import performance_report
from .executor import Executor
from .future import Future
from .launch import init, spmd
from .pool import PoolExecutor
from .progress import progress
from .waiting import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, as_completed, wait

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
