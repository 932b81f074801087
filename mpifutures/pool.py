"""A drop-in ``concurrent.futures.Executor`` on the same workers.

:class:`PoolExecutor` behaves as ``ProcessPoolExecutor`` and mpi4py's ``MPIPoolExecutor``:
``map`` returns an iterator of results in order, ``timeout`` counts from the call to ``map``,
an exception is raised when its result is reached, ``chunksize`` sends items in chunks, and
``shutdown(wait, cancel_futures=...)`` has the standard meaning. Swap the class and code
written for those runs unchanged, unless it passes ``initializer``/``initargs``,
``mp_context`` or mpi4py's ``unordered=`` (not taken: README lists the differences).
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Optional

from .errors import ExecutorClosedError, SerializationError
from .executor import Executor
from .future import Future, check_timeout
from .hooks import when_done
from .options import integer
from .serialize import dumps_args


def _run_chunk(fn: Callable, chunk: list[tuple]) -> list:
    return [fn(*args) for args in chunk]


def _name_the_call(chunk: list[tuple], first: int) -> None:
    """Raise the error of the first call of ``chunk`` (numbered from ``first``) whose
    arguments cannot be pickled, naming it by its place among the map's calls."""
    for i, call in enumerate(chunk, first):
        try:
            dumps_args(call, {})
        except SerializationError as exc:
            raise SerializationError(f"call {i} of map: {exc}") from exc.__cause__


class PoolExecutor(cf.Executor):
    """``concurrent.futures.Executor`` whose tasks run on the MPI job's workers.

    Args:
        max_workers: as for :class:`~mpifutures.Executor` (spawn mode only).
        cluster: the scheduler to use; by default the job's.
    """

    def __init__(self, max_workers: Optional[int] = None, *, cluster: Any = None) -> None:
        self._executor = Executor(max_workers, cluster=cluster)
        self._running: dict[int, Future] = {}  # every call runs, even if its future is dropped
        self._lock = threading.Lock()

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        """Schedule ``fn(*args, **kwargs)``; every call runs (no deduplication), whether or
        not its future is kept. All of ``kwargs`` go to ``fn``."""
        try:
            future = self._executor._submit_call(fn, args, kwargs, pure=False)
        except ExecutorClosedError:
            if not self._executor._closed:
                raise  # the cluster is gone: its error says why
            raise RuntimeError("cannot schedule new futures after shutdown") from None
        with self._lock:
            self._running[id(future)] = future
        when_done(future, self._ended)
        # kept by the scheduler too: at a normal end of the script the workers stop only once
        # it has ended, as the standard library's pools finish their calls at exit
        try:
            self._executor.fire_and_forget(future)
        except ExecutorClosedError:
            pass  # shut down meanwhile (its wait covers the call), or the cluster is gone
        return future

    def _ended(self, future: Future, outcome: str) -> None:  # quick: on the scheduler thread
        with self._lock:
            self._running.pop(id(future), None)

    def map(self, fn: Callable, *iterables: Iterable, timeout: Optional[float] = None,
            chunksize: int = 1) -> Iterator[Any]:
        """Like the built-in ``map``, computed on the workers; yields results in order.

        Raises:
            TimeoutError: from the iterator, if a result is not ready ``timeout`` seconds
                after this call.
            Exception: a call's exception, when its result is reached.
        """
        return self._map(fn, zip(*iterables), timeout, chunksize, "map")

    def starmap(self, fn: Callable, iterable: Iterable[Iterable], timeout: Optional[float] = None,
                chunksize: int = 1) -> Iterator[Any]:
        """Like ``itertools.starmap``, computed on the workers; yields results in order."""
        return self._map(fn, (tuple(args) for args in iterable), timeout, chunksize, "starmap")

    def _map(self, fn: Callable, calls: Iterator[tuple], timeout: Optional[float],
             chunksize: int, name: str) -> Iterator[Any]:
        timeout = check_timeout(timeout)
        if integer("chunksize", chunksize) < 1:
            raise ValueError("chunksize must be >= 1.")
        if not callable(fn):
            raise TypeError(f"{name} needs a callable, not {fn!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        chunks = iter(lambda: list(itertools.islice(calls, chunksize)), [])
        futures: list[Future] = []
        for chunk in chunks:
            try:
                futures.append(self.submit(_run_chunk, fn, chunk))
            except SerializationError:
                self._executor._cancel(futures)  # the map raises: nobody could read these
                _name_the_call(chunk, len(futures) * chunksize)
                raise
        return self._results(futures, timeout, deadline)

    def _results(self, futures: list[Future], timeout: Optional[float],
                 deadline: Optional[float]) -> Iterator[Any]:
        try:
            futures.reverse()
            while futures:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    results = futures[-1].result(left)
                except cf.TimeoutError:
                    if futures[-1].done():  # the call's own error
                        raise
                    raise cf.TimeoutError(f"map: the results were not all ready {timeout} s "
                                          "after the call; the calls not done are "
                                          "cancelled") from None
                futures.pop()
                yield from results
        finally:  # the one that timed out too, as the standard library's pools do
            self._executor._cancel(futures)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        # As the standard library's pools: wait for every call. But interrupted (Ctrl-C, or
        # SIGTERM, which the launcher raises as KeyboardInterrupt) the job must end within
        # moments: the calls not done are cancelled instead of waited for.
        interrupted = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
        self.shutdown(wait=True, cancel_futures=interrupted)
        return False

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work; ``wait`` for pending calls, or cancel them first.

        As in the standard library, every call not cancelled runs (also with ``wait=False``)
        and every result stays readable afterwards: a call's data is released when its
        future is garbage-collected.
        """
        self._executor._shutdown(wait, cancel_futures, keep=True)
