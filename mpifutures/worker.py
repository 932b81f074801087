"""A worker rank: a loop that is the rank's only MPI caller, and compute threads.

::

    scheduler (rank 0)           this worker                         peer workers
       RUN/FREE/CANCEL ──► main loop ── ready heap ──► compute thread(s): run the task
             ◄── DONE/FAILED ◄──   ◄──── done deque ◄──┘
                                 GET ──►   (inputs it lacks)   ──► owner
                                 ◄── DATA  (and it serves GETs from peers and rank 0)

The main loop receives messages, fetches missing inputs straight from the ranks that hold
them, starts tasks whose inputs are all in the store, sends results' metadata to the
scheduler, and answers fetches from peers even while a long task runs. Compute threads only
run tasks and append the outcome to a deque; the main loop owns the store.
"""

from __future__ import annotations

import faulthandler
import heapq
import itertools
import logging
import os
import threading
import time
from collections import defaultdict, deque
from typing import Any, Callable, Optional

from . import failure, protocol as P
from .backoff import Backoff, tighten_timer_slack
from .config import Config
from .errors import DataLostError, SerializationError
from .serialize import Payload, dumps, functions, loads, value_nbytes
from .transport import Transport

log = logging.getLogger(__name__)

_CACHE_HEADER = 1 << 16  # keep the payload of results whose pickle is this small
_context = threading.local()
_RECORDS_BATCH = 256  # task-stream records go to rank 0 in batches of this many
_RUNNER = "def run_task(fn, args, kwargs):\n    return fn(*args, **kwargs)\n"


def current_rank() -> Optional[int]:
    """The rank of the worker running the calling task (None outside a task)."""
    return getattr(_context, "rank", None)


def current_worker() -> Optional["Worker"]:
    """The worker whose thread calls this (a task, or a function given to ``run``)."""
    return getattr(_context, "worker", None)


def task_stream_control(on: Optional[bool]) -> list[dict]:
    """Run on a worker's loop: switch task-stream recording (None: leave it); return and
    forget the records not yet sent to rank 0."""
    worker = current_worker()
    if worker is None:
        raise RuntimeError("task_stream_control runs on workers only")
    if on is not None:
        worker.trace = on
    records, worker.records = worker.records, []
    return records


def report_crashes(rank: int) -> None:
    """In a worker process: make a dying worker name its rank and task on stderr.

    A segfault prints every thread's stack (the task's frame names rank and task); a task
    calling ``os._exit`` prints which task did so before the process ends.
    """
    faulthandler.enable(all_threads=True)
    real_exit = os._exit

    def _exit(code: int) -> None:
        key = getattr(_context, "key", None)
        os.write(2, (f"mpifutures: task {key!r} called os._exit({code}) on rank {rank}; "
                     "this worker process ends, and the MPI job with it.\n").encode())
        real_exit(code)

    os._exit = _exit


class _Task:
    __slots__ = ("key", "token", "fn_bytes", "args", "deps", "priority", "missing", "fetched")

    def __init__(self, msg: tuple) -> None:
        _, self.key, self.token, self.fn_bytes, self.args, self.deps, self.priority = msg
        self.missing: set[str] = set()
        self.fetched: list[tuple[str, int, int, float]] = []  # key, source, bytes, seconds


class Worker:
    """The event loop of one worker rank."""

    def __init__(self, transport: Transport, config: Config, scheduler: int = 0) -> None:
        self.t = transport
        self.rank = transport.rank
        self.scheduler = scheduler
        self.config = config
        self.store: dict[str, Any] = {}
        self.payloads: dict[str, Payload] = {}
        self.waiters: dict[str, list[_Task]] = defaultdict(list)
        self.fetching: dict[str, float] = {}
        self.pending: dict[str, _Task] = {}  # received, not finished
        self.cancelled: set[str] = set()
        self.outbox: dict[int, list] = defaultdict(list)
        self.done: deque = deque()
        self.ready: list = []
        self.ready_cond = threading.Condition()
        self.seq = itertools.count()
        self.trace = config.task_stream
        self.records: list[dict] = []
        self._runners: dict[str, Callable] = {}
        self.backoff = Backoff(config.backoff, config.idle_backoff, config.idle_after)
        transport.wake = self.backoff.wake
        self.running = True
        self.stats = {"bytes_fetched": 0, "tasks": 0}
        self.threads = [
            threading.Thread(target=self._compute, name=f"mpifutures-compute-{i}", daemon=True)
            for i in range(config.threads_per_worker)
        ]

    # ------------------------------------------------------------ main loop

    def run(self) -> None:
        """Serve until the scheduler says STOP."""
        tighten_timer_slack()
        _context.worker, _context.rank = self, self.rank
        for thread in self.threads:
            thread.start()
        try:
            while self.running:
                active = False
                for source, msgs in self.t.poll():
                    active = True
                    for msg in msgs:
                        self._handlers[msg[0]](self, source, msg)
                while self.done:
                    active = True
                    self._finish(*self.done.popleft())
                self._flush()
                if active or self.t.busy():
                    self.backoff.reset()
                else:
                    self.backoff.idle(self.done.__len__)
        finally:
            with self.ready_cond:
                self.ready_cond.notify_all()
            self._drain()

    def _flush(self) -> None:
        if len(self.records) >= _RECORDS_BATCH:
            self.outbox[self.scheduler].append((P.RECORDS, self.records))
            self.records = []
        for dest, msgs in self.outbox.items():
            if msgs:
                self.t.send(dest, msgs)
        self.outbox.clear()

    def _drain(self, timeout: float = 5.0) -> None:
        """Let the last sends complete (bounded)."""
        deadline = time.monotonic() + timeout
        while self.t.busy() and time.monotonic() < deadline:
            self.t.poll()

    # ------------------------------------------------------------ messages

    def _on_run(self, source: int, msg: tuple) -> None:
        task = _Task(msg)
        self.cancelled.discard(task.key)
        self.pending[task.key] = task
        for key, owner in task.deps:
            if key in self.store:
                continue
            task.missing.add(key)
            self.waiters[key].append(task)
            if owner != self.rank and key not in self.fetching:
                self.fetching[key] = time.perf_counter()
                self.outbox[owner].append((P.GET, key))
        if not task.missing:
            self._push_ready(task)

    def _on_free(self, source: int, msg: tuple) -> None:
        for key in msg[1]:
            self.store.pop(key, None)
            self.payloads.pop(key, None)

    def _on_cancel(self, source: int, msg: tuple) -> None:
        for key in msg[1]:
            task = self.pending.pop(key, None)
            if task is not None:
                self.cancelled.add(key)
                for dep in task.missing:
                    if task in self.waiters.get(dep, ()):
                        self.waiters[dep].remove(task)

    def _on_store(self, source: int, msg: tuple) -> None:
        """Keep scattered data; pass it on down a binary tree of the ranks in ``forward``."""
        _, key, payload, forward = msg
        half = (len(forward) + 1) // 2
        for part in (forward[:half], forward[half:]):
            if part:
                self.outbox[part[0]].append((P.STORE, key, payload, part[1:]))
        self.payloads[key] = payload
        self._arrived(key, loads(payload))

    def _on_stop(self, source: int, msg: tuple) -> None:
        self.running = False
        if self.records:
            self.outbox[self.scheduler].append((P.RECORDS, self.records))
            self.records = []
        self.outbox[self.scheduler].append((P.STOPPED, dict(self.stats)))
        self._flush()

    def _on_call(self, source: int, msg: tuple) -> None:
        _, call_id, token, fn_bytes, args = msg
        try:
            fn = functions.loads(token, fn_bytes)
            a, kw = loads(args)
            reply = (P.CALLED, call_id, True, dumps(fn(*a, **kw)))
        except BaseException as exc:  # noqa: BLE001 - every error goes back to the caller
            reply = (P.CALLED, call_id, False, failure.capture(exc, "run", self.rank))
        self.outbox[source].append(reply)

    def _on_get(self, source: int, msg: tuple) -> None:
        key = msg[1]
        if key not in self.store:
            self.outbox[source].append((P.MISSING, key, f"rank {self.rank} does not hold it"))
            return
        payload = self.payloads.get(key)
        if payload is None:
            try:
                payload = dumps(self.store[key])
            except Exception as exc:  # noqa: BLE001 - the requester gets the reason
                self.outbox[source].append((P.MISSING, key, str(exc)))
                return
        self.outbox[source].append((P.DATA, key, payload))

    def _on_data(self, source: int, msg: tuple) -> None:
        _, key, payload = msg
        started = self.fetching.pop(key, None)
        seconds = time.perf_counter() - started if started is not None else 0.0
        try:
            value = loads(payload)
        except Exception as exc:  # noqa: BLE001 - fail the tasks that needed it
            self._fail_waiters(key, f"input {key!r} fetched from rank {source} failed to "
                                    f"unpickle on rank {self.rank}: {exc!r}", SerializationError)
            return
        self.stats["bytes_fetched"] += payload.nbytes
        for task in self.waiters.get(key, ()):
            task.fetched.append((key, source, payload.nbytes, seconds))
        self._arrived(key, value)

    def _on_missing(self, source: int, msg: tuple) -> None:
        _, key, reason = msg
        self.fetching.pop(key, None)
        self._fail_waiters(key, f"input {key!r} could not be fetched from rank {source}: "
                                f"{reason}")

    _handlers = {
        P.RUN: _on_run, P.FREE: _on_free, P.CANCEL: _on_cancel, P.STORE: _on_store,
        P.STOP: _on_stop, P.CALL: _on_call, P.GET: _on_get,
        P.DATA: _on_data, P.MISSING: _on_missing,
    }

    # ------------------------------------------------------------ inputs arriving

    def _arrived(self, key: str, value: Any) -> None:
        self.store[key] = value
        for task in self.waiters.pop(key, ()):
            task.missing.discard(key)
            if not task.missing and task.key in self.pending:
                self._push_ready(task)

    def _fail_waiters(self, key: str, message: str, kind: type = DataLostError) -> None:
        for task in self.waiters.pop(key, ()):
            if self.pending.pop(task.key, None) is not None:
                err = failure.describe(message, task.key, self.rank, kind)
                self.outbox[self.scheduler].append((P.FAILED, task.key, err))

    def _push_ready(self, task: _Task) -> None:
        with self.ready_cond:
            heapq.heappush(self.ready, (-task.priority, next(self.seq), task))
            self.ready_cond.notify()

    # ------------------------------------------------------------ compute

    def _compute(self) -> None:
        _context.worker, _context.rank = self, self.rank
        while self.running:
            with self.ready_cond:
                while not self.ready and self.running:
                    self.ready_cond.wait(1.0)
                if not self.running:
                    return
                task = heapq.heappop(self.ready)[2]
            if task.key in self.cancelled:
                continue
            self.done.append(self._execute(task))
            if self.backoff.asleep:
                self.backoff.wake.set()

    def _execute(self, task: _Task) -> tuple:
        start = time.time() if self.trace else 0.0
        ok, value, payload = self._run(task)
        return task, ok, value, payload, (start, time.time() if self.trace else 0.0)

    def _run(self, task: _Task) -> tuple[bool, Any, Optional[Payload]]:
        """Run one task: (True, value, payload) or (False, failure, None)."""
        _context.key = task.key
        try:
            fn = functions.loads(task.token, task.fn_bytes)
            args, kwargs = loads(task.args, self.store)
        except Exception as exc:  # noqa: BLE001 - a bad argument fails only this task
            err = SerializationError(f"the function or arguments of task {task.key!r} failed "
                                     f"to unpickle on rank {self.rank}: {exc!r}")
            err.__cause__ = exc
            return False, failure.capture(err, task.key, self.rank), None
        try:
            value = self._runner(task.key)(fn, args, kwargs)
        except BaseException as exc:  # noqa: BLE001 - the worker survives every task error
            return False, failure.capture(exc, task.key, self.rank), None
        try:
            return True, value, dumps(value)
        except Exception as exc:  # noqa: BLE001 - unpicklable result fails only this task
            return False, failure.unpicklable_result(value, task.key, self.rank, exc), None

    def _runner(self, key: str) -> Callable:
        """A trampoline whose frame names the rank and task, for crash dumps (faulthandler)."""
        prefix = key.rsplit("-", 1)[0]
        runner = self._runners.get(prefix)
        if runner is None:
            where = f"<mpifutures worker rank {self.rank}, running a task {prefix!r}>"
            namespace: dict = {}
            exec(compile(_RUNNER, where, "exec"), namespace)
            runner = self._runners[prefix] = namespace["run_task"]
        return runner

    def _finish(self, task: _Task, ok: bool, value: Any, payload: Any,
                times: tuple[float, float]) -> None:
        if self.pending.pop(task.key, None) is None or task.key in self.cancelled:
            self.cancelled.discard(task.key)
            return
        self.stats["tasks"] += 1
        if self.trace:
            self._record(task, ok, times, payload)
        if not ok:
            self.outbox[self.scheduler].append((P.FAILED, task.key, value))
            return
        fetched = tuple(k for k, *_ in task.fetched if k in self.store)
        fetched_bytes = sum(f[2] for f in task.fetched)
        inline = payload if payload.nbytes <= self.config.inline_bytes else None
        if len(payload.header) <= _CACHE_HEADER:
            self.payloads[task.key] = payload
        self.outbox[self.scheduler].append(
            (P.DONE, task.key, value_nbytes(value, payload), inline, fetched, fetched_bytes))
        self._arrived(task.key, value)

    def _record(self, task: _Task, ok: bool, times: tuple[float, float], payload: Any) -> None:
        self.records.append({
            "key": task.key, "prefix": task.key.rsplit("-", 1)[0], "rank": self.rank,
            "start": times[0], "stop": times[1], "status": "finished" if ok else "error",
            "nbytes": payload.nbytes if payload is not None else 0,
            "fetches": [{"from": s, "nbytes": n, "seconds": t} for _, s, n, t in task.fetched],
        })
