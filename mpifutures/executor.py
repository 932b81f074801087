"""The client API: :class:`Executor` submits tasks to the cluster's workers.

An ``Executor`` is a *session* on a cluster (the workers of the MPI job, started by
``python -m mpifutures``, ``mpifutures.init()`` or spawned). Closing it releases the session's
futures and keeps the workers, so many executors may come and go in one script. Every method
validates its input on the calling thread, so bad input raises here, at the call site, and
nothing is sent.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import logging
import threading
import weakref
from typing import Any, Callable, Iterable, Optional, Sequence

from . import keys as keymod
from .errors import ExecutorClosedError, NoWorkersError
from .events import CancelRequested, TaskSubmitted
from .future import Future
from .serialize import dumps_args, functions

log = logging.getLogger(__name__)

_sessions = itertools.count(1)


class Executor:
    """Submit functions to the workers of this MPI job and get futures back.

    Args:
        max_workers: in spawn mode (a plain ``python`` process), the number of workers to
            spawn; ignored when the job's ranks are the workers.
        cluster: the scheduler to use (tests pass an in-process one); by default the job's.
    """

    def __init__(self, max_workers: Optional[int] = None, *, cluster: Any = None) -> None:
        if cluster is None:
            from .launch import current_cluster
            cluster = current_cluster(max_workers)
        self._cluster = cluster
        self._session = next(_sessions)
        self._lock = threading.Lock()
        self._closed = False
        self._futures: weakref.WeakSet[Future] = weakref.WeakSet()
        self._keepalive: set[Future] = set()  # futures with callbacks still to run

    # ------------------------------------------------------------ submitting

    def submit(self, fn: Callable, /, *args: Any, key: Optional[str] = None, pure: bool = True,
               workers: Optional[Sequence[int]] = None, allow_other_workers: bool = False,
               priority: int = 0, retries: int = 0, **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` on a worker; return a future of its result.

        Futures anywhere in ``args``/``kwargs`` are dependencies: the task runs once they are
        done, on the worker holding most of their bytes, and receives their values.

        Args:
            key: the task's key; by default derived from the function and arguments
                (``pure=True``: equal submits share one task) or unique (``pure=False``).
            workers: ranks the task may run on (``allow_other_workers``: only a preference).
            priority: higher runs first among tasks that are ready together.
            retries: run the task again this many times if it raises.

        Raises:
            TypeError: ``fn`` is not callable, or an argument cannot be pickled.
            ValueError: a future belongs to another or a closed executor, or ``workers``
                names a rank that is not a worker.
            ExecutorClosedError: the executor was shut down.
            NoWorkersError: the job has no worker ranks.
        """
        return self._submit(fn, args, kwargs, key, pure,
                            self._options(workers, allow_other_workers, priority, retries))

    def map(self, fn: Callable, *iterables: Iterable, key: Optional[str] = None,
            pure: bool = True, workers: Optional[Sequence[int]] = None,
            allow_other_workers: bool = False, priority: int = 0,
            retries: int = 0) -> list[Future]:
        """Submit ``fn(*items)`` for each tuple of items, stopping at the shortest iterable.

        ``key`` may be a list of keys (one per task) or a prefix for generated keys.
        """
        options = self._options(workers, allow_other_workers, priority, retries)
        calls = list(zip(*iterables))
        task_keys: list[Optional[str]] = [None] * len(calls)
        if isinstance(key, (list, tuple)):
            if len(key) != len(calls):
                raise ValueError(f"map got {len(key)} keys for {len(calls)} tasks")
            task_keys = list(key)
        elif key is not None:
            task_keys = [f"{key}-{i}" for i in range(len(calls))]
        return [self._submit(fn, items, {}, k, pure, options)
                for items, k in zip(calls, task_keys)]

    def _options(self, workers: Optional[Sequence[int]], loose: bool, priority: int,
                 retries: int) -> dict:
        if workers is not None:
            workers = (workers,) if isinstance(workers, int) else tuple(workers)
            bad = [w for w in workers if w not in self._cluster.workers]
            if bad or not workers:
                raise ValueError(f"workers={list(workers)} names no worker rank; the workers "
                                 f"are ranks {list(self._cluster.workers)}")
        if not isinstance(priority, int) or not isinstance(retries, int) or retries < 0:
            raise TypeError("priority must be an int and retries an int >= 0")
        return {"workers": workers, "loose": bool(loose), "priority": priority,
                "retries": retries}

    def _submit(self, fn: Callable, args: tuple, kwargs: dict, key: Optional[str],
                pure: bool, options: dict) -> Future:
        self._check_open("submit")
        if not callable(fn):
            raise TypeError(f"submit needs a callable, not {type(fn).__qualname__}: {fn!r}")
        if not self._cluster.workers:
            raise NoWorkersError(
                "this MPI job has no worker ranks (it runs on 1 rank), so no task can run. "
                "Start it with more ranks, e.g. `mpiexec -n 4 python -m mpifutures script.py`.")
        token, fn_bytes = functions.dumps(fn)
        payload, deps = dumps_args(args, kwargs)
        dep_keys = tuple(dict.fromkeys(self._own(f) for f in deps))
        if key is None:
            key = keymod.pure_key(fn, token, payload) if pure else keymod.unique_key(fn)
        elif not isinstance(key, str):
            raise TypeError(f"key must be a str, not {type(key).__qualname__}")
        future = self._cluster.new_future(key, self, self._session)
        ev = TaskSubmitted(key, (token, fn_bytes, payload), dep_keys, self._session,
                           options["priority"], options["workers"], options["loose"],
                           options["retries"])
        with self._lock:
            self._check_open("submit")
            self._futures.add(future)
            self._cluster.post(("submit", self._session, ev))
        return future

    def _own(self, future: Future) -> str:
        if future._executor is not self:
            raise ValueError(f"{future!r} belongs to another executor; pass futures only to "
                             "the executor that made them (or pass future.result()).")
        if self._closed:
            raise ExecutorClosedError("this executor was shut down; its futures cannot be used")
        return future.key

    # ------------------------------------------------------------ results

    def gather(self, futures: Any, errors: str = "raise") -> Any:
        """Wait for futures and return their values, in the same nested shape.

        ``futures`` may be a future or a list, tuple, set or dict (nested) of futures; any
        other item raises TypeError. With ``errors="skip"``, failed and cancelled futures
        are left out of lists (and dicts).
        """
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors must be 'raise' or 'skip', not {errors!r}")
        found: list[Future] = []
        _walk(futures, found.append)
        for f in found:
            if f._executor is not self:
                raise ValueError(f"{f!r} belongs to another executor")
        cf.wait(found)
        wanted = {f.key: f._record for f in found if f.status == "finished"}
        remote = tuple(k for k, record in wanted.items() if record.claim_fetch())
        if remote:
            self._cluster.post(("fetch", remote))
        return _rebuild(futures, errors)

    def _fetch(self, key: str) -> None:
        self._cluster.post(("fetch", (key,)))

    def _cancel(self, futures: Iterable[Future]) -> None:
        keys = tuple(f.key for f in futures)
        if keys:
            self._cluster.post(("event", CancelRequested(keys, self._session)))

    def _keep_until_done(self, future: Future) -> None:
        with self._lock:
            self._keepalive.add(future)

    def _run_callbacks(self, future: Future, callbacks: list) -> None:
        if callbacks:
            self._cluster.callbacks.submit(future, callbacks)
        if future in self._keepalive:
            with self._lock:
                self._keepalive.discard(future)

    # ------------------------------------------------------------ lifetime

    def statistics(self) -> dict:
        """Counters of the cluster: tasks, bytes moved, tasks in memory."""
        def snapshot(s: Any) -> dict:
            return {
                "tasks_completed": s.state.completed,
                "tasks_failed": s.state.failed,
                "tasks_in_scheduler": len(s.state.tasks),
                "bytes_to_rank0": s.stats["bytes_to_rank0"],
                "bytes_between_workers": s.stats["bytes_between_workers"],
                "workers": len(s.workers),
            }
        return self._cluster.query(snapshot)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Release this session's futures; the workers stay for the next executor.

        With ``wait=True`` wait for pending futures first; ``cancel_futures=True`` cancels
        the ones that have not finished.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        pending = [f for f in list(self._futures) if not f.done()]
        if cancel_futures and pending:
            self._cancel(pending)
            for f in pending:
                f._cancel_locally()
        if wait and pending:
            cf.wait(pending)
        self._cluster.post(("close", self._session))

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise ExecutorClosedError(f"cannot {what} after shutdown: this executor was shut "
                                      "down; create a new Executor()")

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown(wait=exc[0] is None, cancel_futures=exc[0] is not None)

    @property
    def workers(self) -> tuple[int, ...]:
        """The worker ranks."""
        return tuple(self._cluster.workers)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<mpifutures.Executor {state} workers={len(self._cluster.workers)}>"


def _walk(obj: Any, found: Callable[[Any], None]) -> None:
    if isinstance(obj, Future):
        found(obj)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for item in obj:
            _walk(item, found)
    elif isinstance(obj, dict):
        for item in obj.values():
            _walk(item, found)
    else:
        raise TypeError(f"gather takes futures, or lists, tuples, sets and dicts of them, "
                        f"not {type(obj).__qualname__}: {obj!r}")


_SKIP = object()


def _rebuild(obj: Any, errors: str) -> Any:
    if isinstance(obj, Future):
        if errors == "skip" and obj.status in ("error", "cancelled"):
            return _SKIP
        return obj.result()
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [v for v in (_rebuild(i, errors) for i in obj) if v is not _SKIP]
        return type(obj)(items) if not hasattr(obj, "_fields") else type(obj)(*items)
    if isinstance(obj, dict):
        pairs = ((k, _rebuild(v, errors)) for k, v in obj.items())
        return type(obj)((k, v) for k, v in pairs if v is not _SKIP)
    return obj

