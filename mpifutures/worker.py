"""A worker rank: a message loop, its rank's only MPI caller, and compute threads.

::

    scheduler (rank 0)               this worker                        peer workers
     RUN/FREE/CANCEL/RECALL ──► main loop ── ready heap ──► compute thread(s): run the task,
     ◄── DONE/FAILED/DROPPED ◄── outbox ◄──────────────── record it, ready what waited
     ◄── STORED                      GET ──►   (inputs it lacks)   ──► owner
                                     ◄── DATA  (and it serves GETs from peers and rank 0)

The main loop receives messages, fetches missing inputs straight from the ranks that hold
them, starts tasks whose inputs are all in the store, sends what is queued in the outbox, and
answers fetches from peers even while a long task runs. A compute thread runs a task outside
any lock, then, holding the worker's lock, stores the result, queues its report (``DONE``) in
the outbox for the loop, readies the tasks that waited for it, and takes the next ready task
itself: a chain of tasks on one worker goes on without a round trip through the loop per link.
The loop handles messages under the same lock, so one thread at a time touches the store and
the queues; MPI calls stay on the loop, outside the lock. A task gets its inputs handed over
when it becomes ready, so a FREE handled while it runs cannot take them away. Every copy of
data the worker keeps besides its own results (a fetched input, scattered data) is reported
to the scheduler (``STORED``), which frees it with the original.

Each value in the store has a version (see :mod:`~mpifutures.state`): a task takes an input
only in the version its ``RUN`` names or a newer one, and a ``FREE`` spares newer versions,
so a stale copy left from a key's earlier computation is neither read nor mistaken for it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import sys
import threading
import time
from collections import defaultdict
from typing import Any

from . import failure, liveness, protocol as P, taskrun
from .backoff import Backoff, RunTimes, tighten_timer_slack
from .config import Config
from .errors import DataLostError, MpiFuturesError, SerializationError
from .serialize import Payload, dumps, functions, loads, value_nbytes
from .taskrun import Broken
from .transport import Transport

log = logging.getLogger(__name__)

# reports after which rank 0 may send the next task at once
_REPLY_DUE_AFTER = frozenset((P.DONE, P.FAILED, P.DROPPED, P.DATA, P.MISSING, P.CALLED))
_CACHE_HEADER = 1 << 16  # keep the payload of results whose pickle is this small
_RECORDS_BATCH = 65536  # records wait on the worker until read, or go to rank 0 in batches this big


class _Task:
    __slots__ = ("key", "token", "fn_bytes", "args", "deps", "priority", "attempt",
                 "missing", "fetched", "inputs", "taken", "dropped")

    def __init__(self, msg: tuple) -> None:
        (_, self.key, self.token, self.fn_bytes, self.args, self.deps, self.priority,
         self.attempt) = msg
        self.missing: dict[str, int] = {}  # inputs not here yet: the version each needs
        self.fetched: list[tuple[str, int, int, float]] = []  # key, source, bytes, seconds
        self.inputs: dict[str, Any] = {}
        self.taken = False  # by a compute thread (set under ready_cond)
        self.dropped = False  # cancelled in the ready heap: skipped when popped


def _host_name() -> str:
    """This node's name, as ``socket.gethostname()`` gives it (without importing socket)."""
    if hasattr(os, "uname"):
        return os.uname().nodename
    import socket

    return socket.gethostname()


class Worker:
    """The event loop of one worker rank."""

    def __init__(self, transport: Transport, config: Config, scheduler: int = 0) -> None:
        self.t = transport
        self.rank = transport.rank
        self.scheduler = scheduler
        self.config = config
        self.store: dict[str, Any] = {}
        self.payloads: dict[str, Payload] = {}
        self.versions: dict[str, int] = {}  # the version of each value in the store
        # tasks waiting for each key, in order (a dict: a cancel removes one at once)
        self.waiters: dict[str, dict[_Task, None]] = defaultdict(dict)
        self.fetching: dict[str, tuple[float, int]] = {}  # key: (asked at, version asked)
        self.pending: dict[str, _Task] = {}  # received, not finished: the current attempt
        self.outbox: dict[int, list] = defaultdict(list)
        self.outbox[scheduler].append((P.HELLO, _host_name(), os.getpid(), liveness.machine()))
        self.watch: Any = None  # the other ranks on this machine, once rank 0 names them
        self.lock = threading.Lock()  # the store, the queues and the transport
        self.ready: list = []
        # Compute threads inside a task whose function last ran longer than the loop's hot
        # phase (changed under ready_cond), and how long each function last ran.
        self.long_tasks = 0
        self.run_times = RunTimes()
        self.ready_cond = threading.Condition()
        self.seq = itertools.count()
        self.trace = config.task_stream
        self.records: list[tuple] = []
        self.backoff = Backoff(config.backoff, config.idle_backoff, config.idle_after)
        transport.wake = self.backoff.wake
        self.running = True
        self.answer_due = False  # a task's end went to rank 0, which has not spoken since
        self.stats = {"bytes_fetched": 0, "tasks": 0}
        self.threads = [
            threading.Thread(target=self._compute, name=f"mpifutures-compute-{i}", daemon=True)
            for i in range(config.threads_per_worker)
        ]

    # ------------------------------------------------------------ main loop

    def run(self) -> None:
        """Serve until the scheduler says STOP."""
        tighten_timer_slack()
        taskrun.enter(self)
        for thread in self.threads:
            thread.start()
        try:
            while self.running:
                self._turn()
        finally:
            with self.ready_cond:
                self.ready_cond.notify_all()
            self._drain()
            taskrun.leave()  # the thread may go on with the script (a second spmd() block)

    def _turn(self) -> None:
        """One pass of the loop: handle what arrived, send what is queued, back off if idle."""
        if self.watch is not None:
            now = time.monotonic()
            if now >= self.watch.next:
                self._check_peers(now)
        news = False  # a message other than a free: frees ask for nothing, answer nothing
        for source, msgs in self.t.poll():  # MPI: this thread only, and outside the lock
            if source != self.scheduler or any(msg[0] != P.FREE for msg in msgs):
                news = True
                self.answer_due = self.answer_due and source != self.scheduler
            for msg in msgs:
                if msg[0] == P.CALL:  # the user's function runs without the lock
                    self._handle(source, msg)
                else:
                    with self.lock:
                        self._handle(source, msg)
        with self.lock:
            out = self._take_outbox()
        for dest, msgs in out.items():
            self.t.send(dest, msgs)
        if any(msg[0] in _REPLY_DUE_AFTER for msg in out.get(self.scheduler, ())):
            self.answer_due = True
        if news or out or self.t.busy():
            self.backoff.reset()
        else:
            # Quick polls after traffic pay while an answer may be due at once: a task's end
            # went to rank 0, which may send the next task, and has not spoken since; or
            # inputs are on their way. While every compute thread is in a long task they
            # would only take CPU.
            self.backoff.idle(self._unsent, hot=self.long_tasks < len(self.threads) and (
                self.answer_due or bool(self.fetching)))

    def _check_peers(self, now: float) -> None:
        """Abort the job if rank 0 has died; tell rank 0 of a worker that has."""
        for rank, pid in self.watch.dead(now):
            if rank == self.scheduler:
                sys.stderr.write(f"mpifutures: rank 0 (pid {pid}) has died; worker rank "
                                 f"{self.rank} aborts the MPI job.\n")
                sys.stderr.flush()
                self.t.abort(1)
                continue
            with self.lock:
                self.outbox[self.scheduler].append((P.LOST, rank, pid))

    def _handle(self, source: int, msg: tuple) -> None:
        try:
            self._handlers[msg[0]](self, source, msg)
        except BaseException:  # noqa: BLE001 - one bad message must not stop the worker
            log.exception("rank %d could not handle message %r from rank %d",
                          self.rank, msg[0], source)

    def _take_outbox(self) -> dict[int, list]:
        """The messages to send now, in the order they were queued (call under the lock)."""
        if len(self.records) >= _RECORDS_BATCH:
            self.outbox[self.scheduler].append((P.RECORDS, self.records))
            self.records = []
        if not self.outbox:
            return {}  # an idle loop allocates nothing
        out, self.outbox = self.outbox, defaultdict(list)
        return out

    def _unsent(self) -> bool:
        """Messages waiting in the outbox, or sends the loop must drive on (no lock needed)."""
        return bool(self.outbox) or self.t.busy()

    def _drain(self, timeout: float = 5.0) -> None:
        """Let the last sends complete (bounded)."""
        deadline = time.monotonic() + timeout
        while self.t.busy() and time.monotonic() < deadline:
            self.t.poll()

    # ------------------------------------------------------------ messages

    def _on_run(self, source: int, msg: tuple) -> None:
        task = _Task(msg)
        self.pending[task.key] = task  # replaces an older attempt, whose outcome is dropped
        # A value kept from an older attempt is stale (the scheduler sends a task only where
        # nobody holds its key): drop it, so that neither a dependent nor a leak keeps it.
        self._drop(task.key)
        self.fetching.pop(task.key, None)  # an older copy still on its way is stale too
        for key, owner, version in task.deps:
            # Each input is handed to the task as it is found here or arrives: a FREE handled
            # later (of a stale copy, say) cannot pull it from under the task.
            if self.versions.get(key, -1) >= version:  # (an older one here is stale)
                task.inputs[key] = self.store[key]
                continue
            task.missing[key] = version
            self.waiters[key][task] = None
            if owner != self.rank and self.fetching.get(key, (0, 0))[1] < version:
                self.fetching[key] = (time.perf_counter(), version)
                self.outbox[owner].append((P.GET, key, version))
        if not task.missing:
            self._push_ready(task)

    def _on_free(self, source: int, msg: tuple) -> None:
        for key in msg[1]:
            if type(key) is tuple:  # (key, version): a newer value of it stays
                key, version = key
                if self.versions.get(key, 0) > version:
                    continue
            self._drop(key)

    def _drop(self, key: str) -> None:
        """Forget this rank's value of ``key``, if any (call under the lock)."""
        self.store.pop(key, None)
        self.payloads.pop(key, None)
        self.versions.pop(key, None)

    def _on_cancel(self, source: int, msg: tuple) -> None:
        """Drop these tasks. One that a compute thread has taken (it may be running) reports
        DROPPED when that thread is done with it; the others report it now."""
        for key in msg[1]:
            task = self.pending.pop(key, None)
            if task is None:
                continue  # it left already: its DONE, FAILED or DROPPED is on its way
            if self._give_up(task):
                self._left(task)

    def _on_recall(self, source: int, msg: tuple) -> None:
        """Give back these tasks (rank 0 found this worker stalled), except those a compute
        thread has taken: they run and report as usual."""
        for key, attempt in msg[1]:
            task = self.pending.get(key)
            if task is not None and task.attempt == attempt and self._give_up(task):
                del self.pending[key]
                self._left(task)

    def _give_up(self, task: _Task) -> bool:
        """Take ``task`` off its inputs' waiters or out of the ready heap; False if a compute
        thread has taken it already (call under the lock)."""
        if not task.missing:  # in the ready heap, or taken by a compute thread
            with self.ready_cond:
                task.dropped = not task.taken
            return task.dropped
        for dep in task.missing:
            waiting = self.waiters.get(dep)
            if waiting is not None and task in waiting:
                del waiting[task]
                if not waiting:
                    del self.waiters[dep]
        return True

    def _left(self, task: _Task, freed: bool = False) -> None:
        """Tell rank 0 that cancelled or recalled ``task`` has left this worker; ``freed``:
        a compute thread had taken it, and is free again (call under the lock)."""
        self.outbox[self.scheduler].append((P.DROPPED, task.key, task.attempt, freed))

    def _on_store(self, source: int, msg: tuple) -> None:
        """Keep scattered data; pass it on down a binary tree of the ranks in ``forward``."""
        _, key, payload, forward, copy = msg
        half = (len(forward) + 1) // 2
        for part in (forward[:half], forward[half:]):
            if part:
                self.outbox[part[0]].append((P.STORE, key, payload, part[1:], copy))
        self.outbox[self.scheduler].append((P.STORED, key, copy))
        if self.versions.get(key, 0) > copy:
            return  # a newer value is here (an older scatter's copy came late): it stays
        self.payloads[key] = payload
        try:
            value: Any = loads(payload)
        except BaseException as exc:  # noqa: BLE001 - even SystemExit: tasks reading it fail
            value = Broken(f"scattered data failed to unpickle on rank {self.rank}: {exc!r}")
        self._arrived(key, value, copy)

    def _on_peers(self, source: int, msg: tuple) -> None:
        watch = liveness.Watch(msg[1], time.monotonic())
        self.watch = watch if watch.peers else None

    def _on_stop(self, source: int, msg: tuple) -> None:
        self.running = False
        if self.records:
            self.outbox[self.scheduler].append((P.RECORDS, self.records))
            self.records = []
        self.outbox[self.scheduler].append((P.STOPPED, dict(self.stats)))  # the last message

    def _on_call(self, source: int, msg: tuple) -> None:
        _, call_id, token, fn_bytes, args = msg
        try:
            try:
                fn = functions.loads(token, fn_bytes)
                a, kw = loads(args)
            except BaseException as exc:  # noqa: BLE001 - said as submit says it
                raise SerializationError(f"the function or arguments given to run() failed "
                                         f"to unpickle on rank {self.rank}: {exc!r}") from exc
            reply = (P.CALLED, call_id, True, dumps(fn(*a, **kw)))
        except BaseException as exc:  # noqa: BLE001 - every error goes back to the caller
            reply = (P.CALLED, call_id, False, failure.capture(exc, "run", self.rank))
        with self.lock:
            self.outbox[source].append(reply)

    def _on_get(self, source: int, msg: tuple) -> None:
        _, key, wanted = msg
        value = self.store.get(key, self)
        version = self.versions.get(key, 0)
        # (scattered data that failed to unpickle here goes as it came, in its payload: the
        # asker unpickles it, or tells why it cannot)
        payload = self.payloads.get(key)
        if value is self or version < wanted or (type(value) is Broken and payload is None):
            self.outbox[source].append((P.MISSING, key, f"rank {self.rank} does not hold it",
                                        wanted))
            return
        if payload is None:
            try:
                payload = dumps(value)
            except Exception as exc:  # noqa: BLE001 - the requester gets the reason
                self.outbox[source].append((P.MISSING, key, failure.safe_str(exc), wanted))
                return
        self.outbox[source].append((P.DATA, key, payload, version))

    def _answered(self, key: str, version: int) -> Any:
        """When the fetch of ``key`` that an answer of ``version`` ends was asked; None if it
        ends none (the key is computed here again, or a newer version was asked since)."""
        asked = self.fetching.get(key)
        if asked is None or version < asked[1]:
            return None
        del self.fetching[key]
        return asked[0]

    def _on_data(self, source: int, msg: tuple) -> None:
        _, key, payload, version = msg
        started = self._answered(key, version)
        if started is None or self.versions.get(key, -1) >= version:
            # (a copy as new or newer came meanwhile, by a scatter: it served the waiters,
            # and keeping this older one under its version would invite a FREE of it)
            return
        seconds = time.perf_counter() - started
        try:
            value = loads(payload)
        except BaseException as exc:  # noqa: BLE001 - even SystemExit: fail the tasks needing it
            self._fail_waiters(key, f"input {key!r} fetched from rank {source} failed to "
                                    f"unpickle on rank {self.rank}: {exc!r}", SerializationError)
            return
        self.stats["bytes_fetched"] += payload.nbytes
        for task in self.waiters.get(key, ()):
            task.fetched.append((key, source, payload.nbytes, seconds))
        self.outbox[self.scheduler].append((P.STORED, key, version))  # freed with the original
        self._arrived(key, value, version)

    def _on_missing(self, source: int, msg: tuple) -> None:
        _, key, reason, version = msg
        if self._answered(key, version) is None:
            return  # the tasks waiting wait for the newer value
        self._fail_waiters(key, f"input {key!r} could not be fetched from rank {source}: "
                                f"{reason}")

    _handlers = {
        P.RUN: _on_run, P.FREE: _on_free, P.CANCEL: _on_cancel, P.RECALL: _on_recall,
        P.STORE: _on_store, P.STOP: _on_stop, P.CALL: _on_call, P.GET: _on_get,
        P.DATA: _on_data, P.MISSING: _on_missing, P.PEERS: _on_peers,
    }

    # ------------------------------------------------------------ inputs arriving

    def _arrived(self, key: str, value: Any, version: int) -> None:
        self.store[key] = value
        self.versions[key] = version
        waiting = self.waiters.pop(key, ())
        for task in waiting:
            if task.missing[key] > version:  # a stale value: it waits for the one it names
                self.waiters[key][task] = None
                continue
            task.inputs[key] = value
            del task.missing[key]
            if not task.missing and self.pending.get(task.key) is task:
                self._push_ready(task)

    def _fail_waiters(self, key: str, message: str, kind: type = DataLostError) -> None:
        for task in self.waiters.pop(key, ()):
            if self.pending.get(task.key) is task:
                self._fail(task, message, kind)

    def _fail(self, task: _Task, message: str, kind: type = DataLostError) -> None:
        """Drop ``task`` and report it failed with ``message`` (call under the lock). A newer
        attempt of its key that replaced it stays."""
        if self.pending.get(task.key) is task:
            del self.pending[task.key]
        err = failure.describe(message, task.key, self.rank, kind)
        self.outbox[self.scheduler].append((P.FAILED, task.key, task.attempt, err))

    def _push_ready(self, task: _Task) -> None:
        with self.ready_cond:
            heapq.heappush(self.ready, (-task.priority, next(self.seq), task))
            self.ready_cond.notify()

    # ------------------------------------------------------------ compute

    def _compute(self) -> None:
        taskrun.enter(self)
        while self.running:
            with self.ready_cond:
                while not self.ready and self.running:
                    self.ready_cond.wait(1.0)
                if not self.running:
                    return
                task = heapq.heappop(self.ready)[2]
                task.taken = True
                long = self.run_times.longer_than(task.token, self.backoff.hot)
                self.long_tasks += long
            try:
                self._run_task(task)
            finally:
                if long:  # a short task (most) takes the lock once, not twice
                    with self.ready_cond:
                        self.long_tasks -= 1
            if self.backoff.asleep:  # the loop sends the report (with whatever else is queued)
                self.backoff.wake.set()

    def _run_task(self, task: _Task) -> None:
        """Run ``task`` on the calling compute thread and queue its report."""
        if task.dropped:
            return  # cancelled before it was taken: reported then
        if self.pending.get(task.key) is not task:  # cancelled, or replaced by a newer attempt
            with self.lock:
                self._left(task, freed=True)
            return
        start = time.time() if self.trace else 0.0
        began = time.perf_counter()
        outcome = taskrun.execute(task.key, task.token, task.fn_bytes, task.args,
                                  task.inputs, self.rank)
        ran = time.perf_counter() - began
        self.run_times.record(task.token, ran)
        task.inputs = {}
        try:
            with self.lock:
                self._finish(task, *outcome, (start, time.time() if self.trace else 0.0), ran)
        except Exception as exc:  # noqa: BLE001 - the thread must live on, and say so
            self._report_broken_finish(task, exc)

    def _report_broken_finish(self, task: _Task, exc: Exception) -> None:
        """A bug while recording a finished task: fail that task instead of losing it."""
        log.exception("rank %d could not record the end of task %r", self.rank, task.key)
        with self.lock:
            self._fail(task, f"rank {self.rank} could not record the end of task "
                             f"{task.key!r}: {failure.safe_str(exc)}", MpiFuturesError)

    def _finish(self, task: _Task, ok: bool, value: Any, payload: Any,
                times: tuple[float, float], ran: float) -> None:
        if self.pending.get(task.key) is not task:  # cancelled, or replaced by a newer
            # attempt: drop the outcome, and say the attempt has left this worker
            self._left(task, freed=True)
            return
        del self.pending[task.key]
        self.stats["tasks"] += 1
        if self.trace:
            self._record(task, ok, times, payload)
        if not ok:
            self.outbox[self.scheduler].append((P.FAILED, task.key, task.attempt, value))
            return
        fetched_bytes = sum(f[2] for f in task.fetched)
        inline = payload if payload.nbytes <= self.config.inline_bytes else None
        if len(payload.header) <= _CACHE_HEADER and not payload.copied:
            self.payloads[task.key] = payload
        self.outbox[self.scheduler].append(
            (P.DONE, task.key, task.attempt, value_nbytes(value, payload), inline,
             fetched_bytes, ran))
        self._arrived(task.key, value, task.attempt)

    def _record(self, task: _Task, ok: bool, times: tuple[float, float], payload: Any) -> None:
        # A flat tuple: a tenth of a dict's cost to build and pickle; rank 0 makes the dicts
        # when somebody reads the stream (diagnostics.as_dict).
        self.records.append((task.key, self.rank, times[0], times[1], ok,
                             payload.nbytes if payload is not None else 0,
                             tuple((s, n, t) for _, s, n, t in task.fetched)))
