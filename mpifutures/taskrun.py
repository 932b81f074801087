"""Running one task on a worker, and what a task can learn about where it runs.

:func:`execute` turns a task into ``(ok, value_or_failure, payload)`` and never raises: the
worker survives every task error, an exception whose ``str()`` raises and an unpicklable
result included. Each task runs inside a trampoline frame named after the rank and the task,
so that a segfault's stack dump (``faulthandler``) says which task crashed where.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
from typing import Any, Callable, Mapping, Optional

from . import failure
from .errors import SerializationError
from .serialize import Payload, dumps, functions, loads

_context = threading.local()
_RUNNER = "def run_task(fn, args, kwargs):\n    return fn(*args, **kwargs)\n"
_runners: dict[tuple[int, str], Callable] = {}


def current_rank() -> Optional[int]:
    """The rank of the worker running the calling task (None outside a task)."""
    return getattr(_context, "rank", None)


def current_worker() -> Any:
    """The worker whose thread calls this (a task, or a function given to ``run``)."""
    return getattr(_context, "worker", None)


def enter(worker: Any) -> None:
    """Mark the calling thread as one of ``worker``'s threads."""
    _context.worker, _context.rank = worker, worker.rank


def leave() -> None:
    """The calling thread is no longer a worker's."""
    _context.worker = _context.rank = None


class Broken:
    """Stands in the store for data that arrived but failed to unpickle."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def execute(key: str, token: str, fn_bytes: bytes, args: Payload,
            inputs: Mapping[str, Any], rank: int) -> tuple[bool, Any, Optional[Payload]]:
    """Run one task: ``(True, value, payload)`` or ``(False, failure, None)``; never raises."""
    _context.key = key
    try:
        return _execute(key, token, fn_bytes, args, inputs, rank)
    except BaseException as exc:  # noqa: BLE001 - last line of defence for the compute thread
        return False, failure.describe(f"task {key!r} failed on rank {rank} in a way that "
                                       f"could not be reported: {failure.safe_str(exc)}",
                                       key, rank), None


def _execute(key: str, token: str, fn_bytes: bytes, args: Payload,
             inputs: Mapping[str, Any], rank: int) -> tuple[bool, Any, Optional[Payload]]:
    broken = [k for k, v in inputs.items() if type(v) is Broken]
    if broken:
        err = SerializationError(f"input {broken[0]!r} of task {key!r} could not be used on "
                                 f"rank {rank}: {inputs[broken[0]].reason}")
        return False, failure.capture(err, key, rank), None
    try:
        fn = functions.loads(token, fn_bytes)
        call_args, kwargs = loads(args, inputs)
    except BaseException as exc:  # noqa: BLE001 - a bad argument fails only this task
        err = SerializationError(f"the function or arguments of task {key!r} failed to "
                                 f"unpickle on rank {rank}: {exc!r}")
        err.__cause__ = exc
        return False, failure.capture(err, key, rank), None
    try:
        value = _runner(rank, key)(fn, call_args, kwargs)
    except BaseException as exc:  # noqa: BLE001 - the worker survives every task error
        return False, failure.capture(exc, key, rank), None
    try:
        return True, value, dumps(value)
    except BaseException as exc:  # noqa: BLE001 - an unpicklable result fails only this task
        return False, failure.unpicklable_result(value, key, rank, exc), None


def _runner(rank: int, key: str) -> Callable:
    """A trampoline whose frame names the rank and task, for crash dumps."""
    prefix = key.rsplit("-", 1)[0]
    runner = _runners.get((rank, prefix))
    if runner is None:
        where = f"<mpifutures worker rank {rank}, running a task {prefix!r}>"
        namespace: dict = {}
        exec(compile(_RUNNER, where, "exec"), namespace)
        runner = _runners[(rank, prefix)] = namespace["run_task"]
    return runner


def report_crashes(rank: int) -> None:
    """In a worker process: make a dying worker name its rank and task on stderr.

    A segfault prints every thread's stack (the task's frame names rank and task); a task
    calling ``os._exit`` prints which task did so before the process ends.
    """
    faulthandler.enable(all_threads=True)
    real_exit, worker_pid = os._exit, os.getpid()

    def _exit(code: int) -> None:
        if os.getpid() != worker_pid:  # a child a task forked: the worker lives on
            real_exit(code)
        key = getattr(_context, "key", None)
        what = f"task {key!r}" if key is not None else "a function given to run()"
        os.write(2, (f"mpifutures: {what} called os._exit({code}) on rank {rank}; this "
                     "worker process ends, and the MPI job with it.\n").encode())
        # Never status 0: a worker gone before MPI_Finalize may end the job with its status,
        # and a batch system would then count a lost job as a success.
        real_exit(code if isinstance(code, int) and code != 0 else 1)

    os._exit = _exit
    native = sys.modules.get(os.name)  # posix: ``os._exit`` itself is pickled by that name
    if native is not None:
        native._exit = _exit


def task_stream_control(on: Optional[bool]) -> list[tuple]:
    """Run on a worker's loop: switch task-stream recording (None: leave it); return and
    forget the records not yet sent to rank 0."""
    worker = current_worker()
    if worker is None:
        raise RuntimeError("task_stream_control runs on workers only")
    with worker.lock:  # compute threads append records under it
        if on is not None:
            worker.trace = on
        records, worker.records = worker.records, []
    return records
