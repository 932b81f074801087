"""Failure injection for the tests, in one place: values that break at each pickling step."""

from __future__ import annotations

import os
import signal
import sys
import time


def _raise_on_load(where):
    raise RuntimeError(f"injected failure while unpickling ({where})")


def _fail_on_rank0():
    from mpifutures.taskrun import current_rank
    if current_rank() is None:
        raise RuntimeError("injected failure while unpickling on rank 0")
    return UnpicklesOnlyOnWorkers()


class FailsToUnpickle:
    """Pickles fine; raises when unpickled anywhere."""

    def __reduce__(self):
        return _raise_on_load, ("anywhere",)


class UnpicklesOnlyOnWorkers:
    """Pickles fine; unpickles on workers; raises when unpickled on rank 0."""

    def __reduce__(self):
        return _fail_on_rank0, ()


class FailsToPickle:
    def __reduce__(self):
        raise TypeError("injected failure while pickling")


def make_fails_to_unpickle():
    return FailsToUnpickle()


def make_unpicklable_only_on_rank0():
    return UnpicklesOnlyOnWorkers()


def make_fails_to_pickle():
    return FailsToPickle()


def raise_memory_error():
    raise MemoryError("injected: no memory left")


def recurse(n=0):
    return recurse(n + 1)


def crash_exit(code=3):
    os._exit(code)


def crash_segfault():
    import ctypes
    ctypes.string_at(0)


def hang_forever():
    while True:
        time.sleep(0.1)


def hold_gil_forever():
    """Backtracks for ages inside the regex engine, which never releases the GIL."""
    import re
    return re.match(r"(a+)+$", "a" * 60 + "b")


def use(x):
    return type(x).__name__


def dump_stacks_after(seconds):
    """Print every thread's stack if the test has not finished in time (deadlock guard)."""
    import faulthandler
    faulthandler.dump_traceback_later(seconds, exit=False, file=sys.stderr)
    return faulthandler.cancel_dump_traceback_later


__all__ = ["signal"]
