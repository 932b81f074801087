"""Task functions for the tests: module-level, so workers import them by name."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import weakref

import numpy as np


def inc(x):
    return x + 1


def add(x, y):
    return x + y


def total(*xs, **kw):
    return sum(xs) + sum(kw.values())


def identity(x):
    return x


def slow_inc(x, delay=0.2):
    time.sleep(delay)
    return x + 1


def sleep(seconds):
    time.sleep(seconds)
    return seconds


def fail(message="boom"):
    raise ValueError(message)


def exit_task(code=3):
    sys.exit(code)


def interrupt_task():
    raise KeyboardInterrupt


def unpicklable_result():
    return threading.Lock()


def rank(*inputs):
    from mpifutures.taskrun import current_rank
    return current_rank()


def make_array(n, value=1.0):
    return np.full(n, value)


def array_sum(a):
    return float(np.sum(a))


def pid():
    return os.getpid()


def flaky(path, fail_times):
    """Fail the first ``fail_times`` calls (counted in a file, shared by all ranks)."""
    with open(path, "a+") as fh:
        fh.write("x")
        fh.seek(0)
        attempts = len(fh.read())
    if attempts <= fail_times:
        raise RuntimeError(f"attempt {attempts} fails")
    return attempts


def started_at(tag):
    return tag, time.perf_counter()


def touch(path):
    time.sleep(0.2)
    with open(path + ".tmp", "w") as fh:
        fh.write("done")
    os.replace(path + ".tmp", path)  # the file appears with its content, never empty
    return path


def hostname():
    import socket
    return socket.gethostname()


def stored_keys():
    from mpifutures.taskrun import current_worker
    return set(current_worker().store)


def node(i, fails, gate, *inputs):
    """A node of a random graph: i plus the sum of its inputs, or an error."""
    if fails:
        raise ValueError(f"node {i} failed")
    return i + sum(inputs)


class BadStr(Exception):
    def __str__(self):
        raise RuntimeError("__str__ is broken too")


def raise_bad_str():
    raise BadStr("x")


def big(n):
    import numpy as np
    return np.ones(n)



def wait_for_path_on(path, rank, timeout):
    """For ``Executor.run``: on ``rank``, wait until ``path`` exists; elsewhere return at once."""
    from mpifutures.taskrun import current_rank

    if current_rank() != rank:
        return None
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def break_finish_for(prefix):
    """For ``Executor.run``: make the worker's bookkeeping fail for tasks whose key starts
    with ``prefix`` (in-process clusters share the class: patch it once)."""
    from mpifutures.worker import Worker

    original = Worker.__dict__["_finish"]
    if hasattr(original, "original"):
        return

    def broken(self, task, *rest):
        if task.key.startswith(prefix):
            raise RuntimeError("bookkeeping bug")
        return original(self, task, *rest)

    broken.original = original
    Worker._finish = broken


def restore_finish():
    from mpifutures.worker import Worker

    patched = Worker.__dict__["_finish"]
    if hasattr(patched, "original"):
        Worker._finish = patched.original


def _exit_where_unpickled_by_a_worker():
    from mpifutures import taskrun

    if taskrun.current_worker() is not None:
        raise SystemExit("unpickled on a worker")  # e.g. a module calling sys.exit on import
    return ExitsOnWorker()


class ExitsOnWorker:
    """Pickles fine on rank 0; unpickling it on a worker raises SystemExit."""

    def __reduce__(self):
        return _exit_where_unpickled_by_a_worker, ()


def start_a_cluster(how):
    """Misuse: a task trying to start mpifutures itself."""
    import mpifutures

    if how == "spmd":
        with mpifutures.spmd():
            pass
    else:
        mpifutures.Executor()


def terminate_a_child():
    """Start a program and terminate it; its exit status (-15 when SIGTERM ended it)."""
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    child.terminate()
    return child.wait(timeout=20)


UNPICKLED_ON: list = []  # names of the threads that unpickled a Remade, in this process


def _remake(message):
    UNPICKLED_ON.append(threading.current_thread().name)
    return Remade(message)


class Remade(Exception):
    """An exception that notes which thread unpickles it."""

    def __reduce__(self):
        return _remake, (self.args[0],)


def raise_remade(message):
    raise Remade(message)


def fork_a_child_that_exits(code):
    """Fork; the child leaves at once with ``os._exit(code)``; return its exit status."""
    pid = os.fork()
    if pid == 0:
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def fork_a_child_that_terminates_itself():
    """Fork; the child checks SIGINT raises KeyboardInterrupt (else exit 2), sends itself
    SIGTERM and would leave with 0 five seconds later; return its exit status."""
    pid = os.fork()
    if pid == 0:
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            os._exit(2)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def slow_fail(delay, message):
    time.sleep(delay)
    raise ValueError(message)


def raise_timeout(message):
    raise TimeoutError(message)


def announce_then_sleep(path, seconds):
    """Write this rank to ``path``, sleep, then create ``path + ".end"``."""
    from mpifutures.taskrun import current_rank

    with open(path + ".tmp", "w") as fh:
        fh.write(str(current_rank()))
    os.replace(path + ".tmp", path)
    time.sleep(seconds)
    open(path + ".end", "w").close()


def sum_of_first(a, *after):
    """The sum of ``a``; the other arguments only make the task wait for them."""
    return float(np.sum(a))


def means(*arrays):
    """The mean of each array, as floats."""
    return [float(a.mean()) for a in arrays]


def array_node(i, n, *inputs):
    """``n`` float64s, each ``i`` plus the value of every input (mod 1,000,003); an input that
    is not one value throughout (memory written over while in use) fails the task."""
    total = i
    for x in inputs:
        low, high = float(x.min()), float(x.max())
        if low != high:
            raise ValueError(f"an input of node {i} holds {low} and {high}")
        total += int(low)
    return np.full(n, float(total % 1_000_003))


def _exit_where_unpickled_on_rank0():
    from mpifutures import taskrun

    if taskrun.current_worker() is None:
        raise SystemExit(2)  # e.g. a module calling argparse when the result's class loads
    return ExitsOnRank0()


class ExitsOnRank0:
    """Pickles and unpickles fine on workers; unpickling it on rank 0 raises SystemExit."""

    def __reduce__(self):
        return _exit_where_unpickled_on_rank0, ()


def exits_on_rank0():
    return ExitsOnRank0()


class HoldsLock(Exception):
    """An exception that cannot be pickled: it keeps a lock."""

    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


def raise_holding_a_lock():
    raise HoldsLock("has a lock")


class _Local:
    """Something a task holds in a local variable, watched by a weak reference."""


_held_by_failed: list = []


def fail_keeping_the_error():
    """Fail from a frame that keeps its own exception: a cycle that holds every local."""
    local = _Local()
    _held_by_failed.append(weakref.ref(local))
    try:
        raise ValueError("kept")
    except ValueError as exc:
        kept = exc  # noqa: F841 - the cycle under test
        raise


def locals_of_failed_tasks_alive():
    return sum(ref() is not None for ref in _held_by_failed)


def column(n):
    """A non-contiguous array: every other element of a block."""
    return np.arange(2 * n, dtype=float).reshape(n, 2)[:, 0]


def cached_payloads():
    """The keys whose pickled value this worker keeps beside the value."""
    from mpifutures.taskrun import current_worker

    return set(current_worker().payloads)


def raise_own_timeout(_=None):
    raise TimeoutError("the call's own timeout")


def fail_in_a_group_keeping_the_error():
    """As fail_keeping_the_error, with the cycle inside an exception group."""
    try:
        fail_keeping_the_error()
    except ValueError as exc:
        raise ExceptionGroup("grouped", [exc]) from None
