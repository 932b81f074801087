"""The client API: :class:`Executor` submits tasks to the cluster's workers.

An ``Executor`` is a *session* on a cluster (the workers of the MPI job, started by
``python -m mpifutures``, ``mpifutures.init()`` or spawned). Closing it releases the session's
futures and keeps the workers, so many executors may come and go in one script. Every method
validates its input on the calling thread, so bad input raises here, at the call site, and
nothing is sent. All methods are safe to call from several threads at once.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import itertools
import logging
import sys
import threading
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

from . import exchange, failure, keys as keymod
from .errors import ExecutorClosedError, NoWorkersError
from .events import KeepRequested, TaskSubmitted
from .future import Future, check_timeout
from .serialize import dumps_args, functions, unpickled
from .options import DEFAULT_OPTIONS, flag, integer, task_options

log = logging.getLogger(__name__)

_sessions = itertools.count(1)
_CANCEL_WAIT = 60.0  # seconds cancel() waits for rank 0's answer before TimeoutError


class Executor:
    """Submit functions to the workers of this MPI job and get futures back.

    Args:
        max_workers: in spawn mode (a plain ``python`` process), the number of workers to
            spawn; checked, then ignored, when the job's ranks are the workers.
        cluster: the scheduler to use (tests pass an in-process one); by default the job's.
    """

    def __init__(self, max_workers: Optional[int] = None, *, cluster: Any = None) -> None:
        if cluster is None:
            from .launch import current_cluster
            cluster = current_cluster(max_workers)
        self._cluster = cluster
        self._owns_cluster = getattr(cluster, "spawned", None) is not None
        self._session = next(_sessions)
        self._lock = threading.Lock()
        self._closed = False
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
            ValueError: a future belongs to another executor, or ``workers`` names a rank
                that is not a worker.
            ExecutorClosedError: the executor was shut down.
            NoWorkersError: the job has no worker ranks.
        """
        options = self._options(workers, allow_other_workers, priority, retries, pure)
        return self._submit_call(fn, args, kwargs, key, pure, options)

    def _submit_call(self, fn: Callable, args: tuple, kwargs: dict, key: Optional[str] = None,
                     pure: bool = True, options: dict = DEFAULT_OPTIONS) -> Future:
        future, event = self._prepare(fn, args, kwargs, key, pure, options)
        self._post_submits([(future, event)])
        return future

    def map(self, fn: Callable, *iterables: Iterable, key: Union[str, Sequence[str], None] = None,
            pure: bool = True, workers: Optional[Sequence[int]] = None,
            allow_other_workers: bool = False, priority: int = 0, retries: int = 0,
            batch_size: Optional[int] = None) -> Union[list[Future], Iterator[Future]]:
        """Submit ``fn(*items)`` for each tuple of items, stopping at the shortest iterable.

        ``key`` may be a list of keys (one per task, all different) or a prefix for generated
        keys. Without ``batch_size`` the iterables are consumed now and a list of futures is
        returned. With ``batch_size=k`` an iterator of futures is returned that submits ``k``
        tasks at a time, ahead of the consumer, so iterables may be endless.
        """
        options = self._options(workers, allow_other_workers, priority, retries, pure)
        return self._map_calls("map", fn, zip(*iterables), key, pure, options, batch_size)

    def starmap(self, fn: Callable, iterable: Iterable[Sequence], *,
                key: Union[str, Sequence[str], None] = None, pure: bool = True,
                workers: Optional[Sequence[int]] = None, allow_other_workers: bool = False,
                priority: int = 0, retries: int = 0,
                batch_size: Optional[int] = None) -> Union[list[Future], Iterator[Future]]:
        """Like :meth:`map`, with each item of ``iterable`` unpacked as the arguments."""
        options = self._options(workers, allow_other_workers, priority, retries, pure)
        calls = (tuple(args) for args in iterable)
        return self._map_calls("starmap", fn, calls, key, pure, options, batch_size)

    def _map_calls(self, name: str, fn: Callable, calls: Iterator[tuple],
                   key: Union[str, Sequence[str], None], pure: bool, options: dict,
                   batch_size: Optional[int]) -> Union[list[Future], Iterator[Future]]:
        self._check_open(name)
        if not callable(fn):
            raise TypeError(f"{name} needs a callable, not {type(fn).__qualname__}: {fn!r}")
        if batch_size is not None and not 1 <= integer("batch_size", batch_size) <= sys.maxsize:
            raise ValueError(f"batch_size must be an int from 1 to {sys.maxsize}, not "
                             f"{batch_size!r}")
        if batch_size is None:
            calls = list(calls)  # type: ignore[assignment]
            return self._submit_batch(fn, calls, keymod.map_keys(key, len(calls)), pure, options)
        return self._map_lazily(fn, calls, keymod.map_keys(key), pure, options, batch_size)

    def _submit_batch(self, fn: Callable, calls: list, task_keys: Iterator[Optional[str]],
                      pure: bool, options: dict) -> list[Future]:
        pairs: list = []
        try:
            pickled = functions.dumps(fn) if calls else None  # once per batch
            for items in calls:
                try:
                    k = next(task_keys)
                except StopIteration:
                    raise ValueError("map got fewer keys than tasks") from None
                pairs.append(self._prepare(fn, items, {}, k, pure, options, pickled))
        except BaseException:
            for future, _ in pairs:  # never posted: shutdown must not wait for them
                self._cluster.registry.release(future)
            raise
        self._post_submits(pairs)
        return [future for future, _ in pairs]

    def _map_lazily(self, fn: Callable, calls: Iterator, task_keys: Iterator, pure: bool,
                    options: dict, batch_size: int) -> Iterator[Future]:
        pending: collections.deque[Future] = collections.deque()
        exhausted = False
        while True:
            if not exhausted and len(pending) <= batch_size:  # keep one batch ahead
                batch = list(itertools.islice(calls, batch_size))
                pending.extend(self._submit_batch(fn, batch, task_keys, pure, options))
                exhausted = not batch
            if not pending:
                return
            yield pending.popleft()

    def _options(self, workers: Optional[Sequence[int]], loose: bool, priority: int,
                 retries: int, pure: bool = True) -> dict:
        if pure is not True and pure is not False:
            flag("pure", pure)
        return task_options(workers, loose, priority, retries, self._cluster.workers)

    def _prepare(self, fn: Callable, args: tuple, kwargs: dict, key: Optional[str],
                 pure: bool, options: dict, pickled: Optional[tuple[str, bytes]] = None
                 ) -> tuple[Future, TaskSubmitted]:
        self._check_open("submit")
        if not callable(fn):
            raise TypeError(f"submit needs a callable, not {type(fn).__qualname__}: {fn!r}")
        if not self._cluster.workers:
            raise NoWorkersError(
                "this MPI job has no worker ranks (it runs on 1 rank), so no task can run. "
                "Start it with more ranks, e.g. `mpiexec -n 4 python -m mpifutures script.py`.")
        token, fn_bytes = pickled or functions.dumps(fn)
        payload, deps = dumps_args(args, kwargs)
        dep_keys = tuple(dict.fromkeys(self._own(f) for f in deps)) if deps else ()
        if key is None or type(key) is keymod.Prefix:
            name = keymod.prefix(fn) if key is None else str.__str__(key)
            key = keymod.pure_key(name, token, payload) if pure else keymod.unique_key(name)
        else:
            key = keymod.given(key, dep_keys)
        future = self._cluster.registry.new_future(key, self)
        event = TaskSubmitted(key, (token, fn_bytes, payload), dep_keys, self._session,
                              options["priority"], options["workers"], options["loose"],
                              options["retries"])
        return future, event

    def _post_submits(self, pairs: list[tuple[Future, TaskSubmitted]]) -> None:
        with self._lock:
            self._check_open("submit")
            for future, _ in pairs:
                self._cluster.registry.arm(future, self._session)
            self._post_or_fail(("submit", self._session, pairs), pairs)

    def _post_or_fail(self, item: tuple, pairs: Iterable[tuple[Future, Any]]) -> None:
        """Post ``item``; if the cluster is gone, fail the futures of ``pairs`` (nothing else
        would end them) and raise."""
        try:
            self._cluster.post(item)
        except ExecutorClosedError as exc:
            for future, _ in pairs:
                future._fail(exc)
            raise

    def _these(self, futures: Union[Future, Iterable[Future]], what: str) -> list[Future]:
        """``futures`` as a list, each checked to be a future of this executor."""
        fs = list(futures) if hasattr(futures, "__iter__") else [futures]  # a Future has none
        for f in fs:
            if not isinstance(f, Future):
                raise TypeError(f"{what} takes futures, not {type(f).__qualname__}: {f!r}")
            self._check_mine(f)
        return fs

    def _check_mine(self, future: Future) -> None:
        if future._executor is not self:
            raise ValueError(f"{future!r} belongs to another executor; pass futures only to "
                             "the executor that made them (or pass future.result()).")

    def _own(self, future: Future) -> str:
        self._check_mine(future)
        if future._released:
            raise ValueError(f"{future!r} was released; it can no longer be used as an input")
        return future.key

    # ------------------------------------------------------------ data

    def scatter(self, data: Any, workers: Optional[Sequence[int]] = None,
                broadcast: bool = False, hash: bool = True,
                timeout: Optional[float] = None) -> Any:
        """Place values on workers; return futures of them in the same shape.

        ``data`` is one value, a list (or tuple) of values, or a dict of values. Values are
        spread round-robin over ``workers`` (default: all); ``broadcast=True`` puts a copy on
        every one of them, forwarded along a binary tree of workers rather than sent N times
        from rank 0. ``hash=True`` derives keys from the values (scattering equal data twice
        reuses it); ``hash=False`` makes unique keys. It returns once every copy is stored;
        ``timeout`` bounds that wait (TimeoutError).
        """
        return exchange.scatter(self, data, workers, broadcast, hash, timeout)

    def gather(self, futures: Any, errors: str = "raise",
               timeout: Optional[float] = None) -> Any:
        """Wait for futures and return their values, in the same nested shape.

        ``futures`` may be a future or a list, tuple, set or dict (nested) of futures; any
        other item raises TypeError. With ``errors="skip"``, failed and cancelled futures
        are left out of their containers (a namedtuple missing some becomes a plain tuple);
        a single one gives None. ``timeout`` bounds the wait for the tasks to end, as in
        :meth:`Future.result` (TimeoutError; they keep running).
        """
        try:
            return exchange.gather(self, futures, errors, timeout)
        finally:  # a raised error's traceback holds this frame: it must not hold them
            del futures

    def run(self, fn: Callable, /, *args: Any, timeout: Optional[float] = None,
            **kwargs: Any) -> dict[int, Any]:
        """Call ``fn(*args, **kwargs)`` once on every worker now; return ``{rank: result}``.

        It runs on each worker's message loop, between tasks: keep it short. ``timeout``
        bounds the wait (TimeoutError naming the workers that did not answer; the call still
        runs on them later); it is not passed to ``fn`` (use :func:`functools.partial` for a
        keyword of that name).
        """
        self._check_open("run")
        timeout = check_timeout(timeout)
        if not callable(fn):
            raise TypeError(f"run needs a callable, not {type(fn).__qualname__}: {fn!r}")
        token, fn_bytes = functions.dumps(fn)
        payload, deps = dumps_args(args, kwargs)
        if deps:
            raise TypeError("run does not take futures as arguments; pass their results")
        replies = self._cluster.call(token + keymod.unique_key("run"), fn_bytes, payload,
                                     timeout)
        out = {}
        for rank in sorted(replies):
            ok, value = replies[rank]
            if not ok:
                raise failure.rebuild(value)
            out[rank] = unpickled(value, f"the result of run() on rank {rank}")
        return out

    def who_has(self, futures: Optional[Iterable[Future]] = None) -> dict[str, list[int]]:
        """``{key: [ranks holding its data]}`` for ``futures`` (default: all of this session)."""
        self._check_open("who_has")
        if futures is None:
            futures = self._cluster.registry.futures_of(self)
        keys = [f.key for f in self._these(futures, "who_has")]
        return self._cluster.query(lambda s: {k: list(s.state.who_has(k)) for k in keys})

    def cancel(self, futures: Union[Future, Iterable[Future]]) -> None:
        """Cancel pending tasks and, transitively, their dependents."""
        self._check_open("cancel")
        self._cancel_now(self._these(futures, "cancel"))

    def fire_and_forget(self, futures: Union[Future, Iterable[Future]]) -> None:
        """Let these tasks run to the end even if every future of them is dropped."""
        self._check_open("fire_and_forget")
        for f in self._these(futures, "fire_and_forget"):
            self._cluster.post(("event", KeepRequested(self._own(f))))

    def get_task_stream(self, *, record: Optional[bool] = None,
                        timeout: Optional[float] = None) -> list[dict]:
        """The task-stream records collected so far, one dict per task, oldest first.

        Records exist only while recording is on: inside :func:`mpifutures.performance_report`,
        with ``--report`` or ``MPIFUTURES_TASK_STREAM=1``, or after ``record=True`` here
        (``record=False`` stops it). Each worker answers between tasks; ``timeout`` bounds the
        wait (TimeoutError naming the workers that did not answer).
        """
        self._check_open("get_task_stream")
        timeout = check_timeout(timeout)
        from .diagnostics import set_recording

        return set_recording(self._cluster, record, timeout)

    # ------------------------------------------------------------ used by Future

    def _fetch(self, record: Any) -> None:
        self._cluster.post(("fetch", ((record.key, record),)))

    def _cancel(self, futures: list[Future]) -> None:
        """Cancel without waiting for the scheduler (safe anywhere, in a garbage collection
        too): a task that finishes meanwhile may start its dependents."""
        keys = tuple(f.key for f in futures if f._cancel_locally())
        if keys:
            self._cluster.post(("cancel", self._session, keys, None))

    def _cancel_now(self, futures: list[Future]) -> None:
        """Cancel on the scheduler thread and wait: a task that finished first stays
        finished, so no dependent runs on the value of a task said to be cancelled."""
        session, keys = self._session, tuple(f.key for f in futures if not f.done())
        if threading.current_thread() is self._cluster.thread:  # (it cannot wait for itself)
            self._cancel(futures)
        elif keys:
            try:  # (the scheduler thread answers between two of its steps)
                self._cluster.ask(("cancel", session, keys, cf.Future()), _CANCEL_WAIT)
            except cf.TimeoutError:
                raise cf.TimeoutError(f"rank 0 did not answer cancel() in {_CANCEL_WAIT} s; "
                                      "is its scheduler thread stuck?") from None

    def _retry(self, future: Future) -> None:
        self._check_open("retry")
        reset = self._cluster.registry.reset(future.key)
        self._post_or_fail(("retry", future.key, reset), reset)
        # once the scheduler thread has answered, no future of the chain shows the old outcome
        self._cluster.query(lambda scheduler: None)

    def _release(self, future: Future) -> None:
        if not self._closed:
            self._cluster.release_future(future)

    def _keep_until_done(self, future: Future) -> None:
        with self._lock:
            self._keepalive.add(future)

    def _run_callbacks(self, future: Future, callbacks: list) -> bool:
        """Hand ``callbacks`` to the callback thread; False if it has stopped."""
        queued = not callbacks or self._cluster.callbacks.submit(future, callbacks)
        if future in self._keepalive:
            with self._lock:
                self._keepalive.discard(future)
        return queued

    # ------------------------------------------------------------ lifetime

    def statistics(self) -> dict:
        """Counters of the cluster: tasks, bytes moved, tasks in memory."""
        self._check_open("statistics")
        return self._cluster.query(lambda s: s.statistics())

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Release this session's futures; the workers stay (spawned ones end with it).

        With ``wait=True`` wait for pending futures first; ``cancel_futures=True`` cancels
        the ones that have not finished. With ``wait=False`` the tasks still pending lose
        their last claim and are cancelled, and so are their futures. Either way a task
        that another executor holds a future of (the same pure call) runs on for it.
        """
        self._shutdown(wait, cancel_futures, keep=False)

    def _shutdown(self, wait: bool, cancel_futures: bool, keep: bool) -> None:
        """``keep``: a :class:`~mpifutures.PoolExecutor`'s shutdown (see
        :mod:`mpifutures.settle`): results stay readable afterwards."""
        with self._lock:
            closed, self._closed = self._closed, True
        # Only futures whose submit was posted: another thread's map or submit still being
        # prepared now fails (the executor is closed), and nothing would ever end its futures.
        live = [f for f in self._cluster.registry.futures_of(self)
                if f._ref.session is not None]
        if closed:  # by another thread, which may still wait for them: so does this one
            if wait:
                cf.wait(live)
            return
        pending = [f for f in live if not f.done()]
        if cancel_futures and pending:
            # A pool's calls have keys of their own: cancel them outright. Otherwise closing
            # the session lets go of them: a task that no other executor holds a future of is
            # cancelled by that; one shared with another executor (the same pure call) runs on.
            if keep:
                self._cancel(pending)
            else:
                for f in pending:
                    f._cancel_locally()
            pending = []
        if keep:
            from .settle import wind_down

            wind_down(self, live, pending, wait)
            return
        if wait and pending:
            cf.wait(pending)
        self._close()
        if not wait:  # released above: nothing will finish them any more
            for f in pending:
                f._cancel_locally()

    def _close(self) -> None:
        try:
            self._cluster.post(("close", self._session))
        except ExecutorClosedError:
            pass  # the cluster is gone (stopped, or failed): nothing of the session is left
        if self._owns_cluster:  # spawn mode: these workers are ours alone
            from .spawn import stop
            stop(self._cluster)

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise ExecutorClosedError(f"cannot {what} after shutdown: this executor was shut "
                                      "down; create a new Executor()")

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown(wait=exc[0] is None, cancel_futures=exc[0] is not None)

    @property
    def workers(self) -> dict[int, str]:
        """``{rank: host name}`` of every worker."""
        return dict(self._cluster.hosts())

    @property
    def nworkers(self) -> int:
        """The number of worker ranks."""
        return len(self._cluster.workers)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<mpifutures.Executor {state} workers={len(self._cluster.workers)}>"

