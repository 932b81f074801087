"""Rank 0's scheduler thread: the driver between client threads, the state machine and MPI.

::

    user threads ── inbox (deque) ──►  scheduler thread  ──► SchedulerState.handle(events)
        ▲                              │    ▲                        │ commands
        └── futures resolved ◄─────────┘    └── transport.poll()     ▼
                                                              transport.send (coalesced)

Client threads never touch MPI or the state: they append requests to the inbox and wait on
their futures. The scheduler thread collects events from the inbox and from workers'
messages, feeds them to :class:`~mpifutures.state.SchedulerState`, turns its commands into
messages — in the order the state emitted them, coalesced into one list per destination per
loop — and resolves client futures. It makes no decision.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import defaultdict, deque
from concurrent.futures import Future as _Reply, TimeoutError as _ReplyTimeout
from typing import Any, Callable, Optional

from . import liveness, protocol as P
from .backoff import Backoff, RunTimes, tighten_timer_slack
from .callbacks import CallbackThread
from .config import Config
from .errors import ExecutorClosedError, WorkerLostError
from .events import (CancelRequested, CancelTask, Dispatch, FreeData, FutureReleased,
                     RecallTask, ReplicaStored, ResetFutures, ResolveFuture, RetryRequested,
                     TaskDropped, TaskFailed, TaskFinished)
from .future import Future, KeyRecord, lost
from .registry import Registry
from .stalls import Stalls
from .state import SchedulerState
from .taskstate import inputs_at_hand
from .transport import Transport

log = logging.getLogger(__name__)

_PROGRESS = frozenset((P.DONE, P.FAILED, P.DROPPED))  # reports that a task left a worker


class Scheduler:
    """Owns rank 0's side of a cluster: the state machine, the futures and the thread."""

    def __init__(self, transport: Transport, config: Config) -> None:
        self.t = transport
        self.config = config
        self.workers = tuple(range(1, transport.size))
        self.state = SchedulerState(self.workers, config.tasks_per_worker,
                                    config.threads_per_worker)
        self.inbox: deque = deque()
        self.registry = Registry(self._post_from_gc)
        self.backoff = Backoff(config.backoff, config.idle_backoff, config.idle_after)
        transport.wake = self.backoff.wake
        self.refs: dict[int, dict[str, int]] = {}
        self.outbox: dict[int, list] = defaultdict(list)
        self.fetches: dict[str, list[KeyRecord]] = {}
        self.run_times, self.quick = RunTimes(), set()  # quick: see _step
        self.stalls = Stalls(self.workers, config.threads_per_worker)
        self._released: list[str] = []  # keys whose records may go, at the end of a drain
        self.stats = {"bytes_to_rank0": 0, "bytes_between_workers": 0}
        self.calls: dict[int, tuple[_Reply, dict, Optional[Callable]]] = {}
        self._call_ids = itertools.count()
        self.task_records: deque[tuple] = deque(maxlen=config.task_stream_max)
        self.callbacks = CallbackThread()
        self.fatal: Optional[BaseException] = None
        self._hosts: dict[int, str] = {}  # from each worker's first message
        self._pids: dict[int, tuple[int, Optional[str]]] = {}  # rank: (pid, machine)
        self.watch: Optional[liveness.Watch] = None  # the workers on rank 0's machine
        self._hosts_known = threading.Event()
        if not self.workers:
            self._hosts_known.set()
        self._stopping: Optional[float] = None
        self._stopped: set[int] = set()
        self.thread = threading.Thread(target=self._run, name="mpifutures-scheduler",
                                       daemon=True)

    # ------------------------------------------------------------ client side (any thread)

    def start(self) -> None:
        self.callbacks.start()
        self.thread.start()

    def post(self, item: tuple) -> None:
        """Queue a request for the scheduler thread and wake it (ExecutorClosedError if the
        cluster was stopped, or its scheduler failed)."""
        self._check_alive()
        self.inbox.append(item)
        if self.backoff.asleep:
            self.backoff.wake.set()
        self._check_alive()  # it may have ended while we appended: nobody would answer

    def _post_from_gc(self, item: tuple) -> None:
        """Queue a decref from a garbage-collection callback, and wake the scheduler: safe
        wherever the collector runs (a deque append and a raw lock's release never block);
        without the wake, a quiet rank 0 would free the data up to ``QUIET_CAP`` s late."""
        self.inbox.append(item)
        if self.backoff.asleep:
            self.backoff.wake.set()

    @property
    def failure(self) -> Optional[BaseException]:
        """What ended the cluster, if it failed (None while it runs or once it was stopped)."""
        fatal = self.fatal
        return None if isinstance(fatal, ExecutorClosedError) else fatal

    def _check_alive(self) -> None:
        if self.fatal is not None:
            raise ExecutorClosedError(f"the mpifutures cluster is gone: {self.fatal}")

    def release_future(self, future: Future) -> None:
        """Drop ``future``'s claim on its key now instead of at garbage collection."""
        item = self.registry.release(future)
        if item is not None:
            self.post(item)

    def call(self, token: str, fn_bytes: bytes, payload: Any, timeout: Optional[float] = None,
             each: Optional[Callable[["Scheduler", bool, Any], None]] = None) -> dict:
        """Run a function on every worker's loop; return ``{rank: (ok, payload)}``.

        ``each(scheduler, ok, payload)``, if given, runs on the scheduler thread for every
        answer as it arrives, also for answers that come after the caller gave up.

        Raises:
            TimeoutError: some worker did not answer within ``timeout`` seconds.
        """
        reply: _Reply = _Reply()
        answers: dict = {}
        self.post(("call", next(self._call_ids), token, fn_bytes, payload, reply, answers, each))
        try:
            return reply.result(timeout)
        except _ReplyTimeout:  # (not the built-in TimeoutError before Python 3.11)
            missing = sorted(set(self.workers) - set(list(answers)))
            raise TimeoutError(
                f"worker ranks {missing} did not answer within {timeout} s. A worker answers "
                "between tasks; one running a task inside C code that holds the GIL answers "
                "when that call returns.") from None

    def hosts(self, timeout: float = 60.0) -> dict[int, str]:
        """``{rank: host name}`` of the workers, as each told in its first message
        (TimeoutError if a worker has not said hello within ``timeout`` seconds)."""
        if not self._hosts_known.wait(timeout):
            missing = sorted(set(self.workers) - set(self._hosts))
            raise TimeoutError(f"worker ranks {missing} did not report to rank 0 within "
                               f"{timeout} s of asking; look in the job's output for why they "
                               "did not start (or pass a longer timeout)")
        self._check_alive()
        return dict(sorted(self._hosts.items()))

    def statistics(self) -> dict:
        """Counters of the cluster (call on the scheduler thread, through :meth:`query`)."""
        return {
            "tasks_completed": self.state.completed,
            "tasks_failed": self.state.failed,
            "tasks_in_scheduler": len(self.state.tasks),
            "bytes_to_rank0": self.stats["bytes_to_rank0"],
            "bytes_between_workers": self.stats["bytes_between_workers"],
            "workers": len(self.workers),
        }

    def query(self, fn: Callable[["Scheduler"], Any], timeout: float = 60.0) -> Any:
        """Run ``fn(self)`` on the scheduler thread and return its result."""
        return self.ask(("query", fn, _Reply()), timeout)

    def ask(self, item: tuple, timeout: float) -> Any:
        """Post a request whose last item is its reply; wait for the answer."""
        self.post(item)
        return item[-1].result(timeout)

    def stop(self, timeout: float) -> bool:
        """Stop every worker; True if all confirmed within ``timeout`` seconds."""
        if self.thread.is_alive() and self.fatal is None:
            self.post(("stop", time.monotonic() + timeout))
            self.thread.join(timeout + 1.0)
        self.callbacks.stop(timeout=2.0)
        return not self.thread.is_alive() and self._stopped == set(self.workers)

    # ------------------------------------------------------------ the loop

    def _run(self) -> None:
        tighten_timer_slack()
        try:
            while self._step():
                pass
        except WorkerLostError as exc:
            log.error("%s", exc)
            self._fail_everything(exc)
            return
        except BaseException as exc:  # noqa: BLE001 - fail every future, never hang
            log.exception("the scheduler thread failed")
            self._fail_everything(RuntimeError(f"the scheduler thread failed: {exc!r}"))
            return
        self._fail_everything(ExecutorClosedError("the cluster was stopped; its workers "
                                                  "have left"))

    def _step(self) -> bool:
        events: list = []
        active = self._drain_inbox(events)
        now = time.monotonic()
        for source, msgs in self.t.poll():
            active = True
            for msg in msgs:
                self._on_message(source, msg, events)
        self.stalls.check(self.state.load, now, events)
        self._handle(events)
        for dest, msgs in self.outbox.items():
            if msgs:
                self.t.send(dest, msgs)
        self.outbox.clear()
        if self._stopping is not None:
            if self._stopped == set(self.workers) and not self.t.busy():
                return False
            if time.monotonic() > self._stopping:
                log.error("workers %s did not stop in time",
                          sorted(set(self.workers) - self._stopped))
                return False
        if self.watch is not None:
            if now >= self.watch.next:
                for rank, pid in self.watch.dead(now):
                    self._lost(rank, pid)
        if active or self.t.busy():
            self.backoff.reset()
        else:
            # Workers only ever answer rank 0: with nothing owed, only a client request (it
            # sets the wake event) can bring work, so sleeps may grow long. Quick polls pay
            # while a reply may be due soon, from a task in ``quick``: its function last ran
            # shorter than the hot phase (or never), its inputs are computed (and small, if
            # held elsewhere) or quick too.
            owed = self.state.awaiting_workers()  # (tasks running, copies to confirm)
            if not owed:
                self.quick.clear()  # (a key whose end went unseen must not linger)
            soon = self.fetches or self.calls or self._stopping is not None
            self.backoff.idle(self.inbox.__len__, not (owed or soon),
                              bool(soon or self.quick or self.state.unconfirmed))
        return True

    def _handle(self, events: list) -> None:
        """Feed ``events`` to the state now and carry out its commands (empties the list)."""
        if events:
            self._execute(self.state.handle(*events))
            events.clear()

    def _drain_inbox(self, events: list) -> bool:
        active = False
        while self.inbox:
            active = True
            item = self.inbox.popleft()
            try:
                self._requests[item[0]](self, item, events)
            except BaseException:  # the loop fails: a caller waiting for this item's reply
                self.inbox.appendleft(item)  # learns of it from _fail_everything
                raise
        if self._released:  # one pass under the registry's lock, not one per decref
            self.registry.drop(self._released)
            self._released.clear()
        return active

    # ------------------------------------------------------------ requests from clients

    def _rq_submit(self, item: tuple, events: list) -> None:
        _, session, pairs = item
        counts = self.refs.setdefault(session, {})  # the futures each session holds, per key
        for future, ev in pairs:
            future._posted = 0  # resolutions from now on reach it (Registry.resolve)
            counts[ev.key] = counts.get(ev.key, 0) + 1
            events.append(ev)

    def _rq_scatter(self, item: tuple, events: list) -> None:
        _, session, first, msg, ev, future = item
        self._handle(events)  # a FREE of an earlier copy of this key must go out first
        ev.copy = self.state.number()  # the version of this scatter's copies
        future._posted = 0
        counts = self.refs.setdefault(session, {})
        counts[ev.key] = counts.get(ev.key, 0) + 1
        ranks = (first, *msg[3])
        task = self.state.tasks.get(ev.key)
        if task is not None and task.status == "memory":  # equal data (its key says so) is
            # not sent again where it is: a transfer saved, and no second confirmation to
            # tell apart from the first
            ranks = tuple(r for r in ranks if r not in task.holders)
        if ranks:
            self.outbox[ranks[0]].append(msg[:3] + (ranks[1:], ev.copy))
        events.append(ev)

    def _rq_event(self, item: tuple, events: list) -> None:
        events.append(item[1])

    def _rq_decref(self, item: tuple, events: list) -> None:
        _, session, key = item
        counts = self.refs.get(session)
        if counts is not None and key in counts:
            counts[key] -= 1
            if counts[key] > 0:
                return
            del counts[key]
            if not counts:  # an executor dropped without shutdown() leaves nothing behind
                del self.refs[session]
            events.append(FutureReleased(key, session))
        self._released.append(key)

    def _rq_close(self, item: tuple, events: list) -> None:
        keys = self.refs.pop(item[1], {})
        events.extend(FutureReleased(key, item[1]) for key in keys)
        self.registry.drop(keys)

    def _rq_cancel(self, item: tuple, events: list) -> None:
        _, session, keys, reply = item
        events.append(CancelRequested(keys, session))
        self._handle(events)  # now: it reaches only the futures posted before it
        if reply is not None:  # the caller waits for rank 0's decision (Future.cancel)
            reply.set_result(None)

    def _rq_retry(self, item: tuple, events: list) -> None:
        _, key, futures = item
        self._handle(events)  # what was posted before resolves without them
        for f, gen in futures:  # the retry's outcome reaches them (Registry.resolve), unless
            f._posted = max(f._posted, gen)  # a reset of this thread's came in between
        events.append(RetryRequested(key))

    def _rq_fetch(self, item: tuple, events: list) -> None:
        self._handle(events)  # fetch from where the data is after what was posted before
        for key, record in item[1]:
            task = self.state.tasks.get(key)
            if task is None or not task.holders:
                record.deliver(None, lost(key, "it was released"))
                continue
            waiting = self.fetches.setdefault(key, [])
            if not waiting:
                self.outbox[min(task.holders)].append((P.GET, key, task.first_copy))
            waiting.append(record)

    def _rq_call(self, item: tuple, events: list) -> None:
        _, call_id, token, fn_bytes, args, reply, answers, each = item
        self._handle(events)  # the call sees the effects of everything posted before it
        if not self.workers:
            reply.set_result({})
            return
        self.calls[call_id] = (reply, answers, each)
        for w in self.workers:
            self.outbox[w].append((P.CALL, call_id, token, fn_bytes, args))

    def _rq_query(self, item: tuple, events: list) -> None:
        _, fn, reply = item
        self._handle(events)  # the query must see everything posted before it
        try:
            reply.set_result(fn(self))
        except Exception as exc:  # noqa: BLE001 - the caller gets it
            reply.set_exception(exc)

    def _rq_stop(self, item: tuple, events: list) -> None:
        self._stopping = item[1]
        self._handle(events)
        for w in self.workers:
            self.outbox[w].append((P.STOP,))

    _requests = {
        "submit": _rq_submit, "scatter": _rq_scatter, "event": _rq_event, "decref": _rq_decref,
        "close": _rq_close, "cancel": _rq_cancel, "retry": _rq_retry, "fetch": _rq_fetch,
        "call": _rq_call, "query": _rq_query, "stop": _rq_stop,
    }

    # ------------------------------------------------------------ messages from workers

    def _on_message(self, source: int, msg: tuple, events: list) -> None:
        op = msg[0]
        if op in _PROGRESS and (op != P.DROPPED or msg[3]):  # a compute thread is done with
            self.stalls.heard(source, time.monotonic(), events)  # a task: it is not stalled
        if op == P.DONE:
            _, key, attempt, nbytes, inline, fetched_bytes, ran = msg
            self.stats["bytes_between_workers"] += fetched_bytes
            spec = getattr(self.state.tasks.get(key), "spec", None)  # (None: forgotten since)
            if spec is not None:
                self.run_times.record(spec[0], ran)
            self.quick.discard(key)
            # The value inline goes to the futures only if the state takes this finish (a
            # cancelled attempt's late report must not overwrite a retry's value).
            events.append(TaskFinished(key, source, nbytes, attempt, inline))
        elif op == P.FAILED:
            self.quick.discard(msg[1])
            events.append(TaskFailed(msg[1], source, msg[3], msg[2]))
        elif op == P.DROPPED:
            self.quick.discard(msg[1])
            events.append(TaskDropped(msg[1], source, msg[2]))
        elif op == P.STORED:
            events.append(ReplicaStored(msg[1], source, msg[2]))
        elif op in (P.DATA, P.MISSING):
            self._on_data(source, msg)
        elif op == P.CALLED:
            self._on_called(source, msg)
        elif op == P.RECORDS:
            self.task_records.extend(msg[1])
        elif op == P.STOPPED:
            self._stopped.add(source)
        elif op == P.HELLO:
            self._hosts[source], self._pids[source] = msg[1], msg[2:]
            self._join_ring(source)
            if len(self._hosts) == len(self.workers):
                self._hosts_known.set()
        elif op == P.LOST:
            self._lost(msg[1], msg[2], source)

    def _join_ring(self, rank: int) -> None:
        """Watch, or have watched, what a worker's HELLO adds to its machine's ring."""
        for watcher, watched, pid in liveness.ring_links(self._pids, rank, os.getpid()):
            if watcher == 0:
                self.watch = liveness.Watch({watched: pid}, time.monotonic())
            else:
                self.outbox[watcher].append((P.PEERS, {watched: pid}))

    def _lost(self, rank: int, pid: int, seen_by: int = 0) -> None:
        """A worker has died: end the cluster (its tasks and data are gone) with an error
        that says so (raised out of the loop, caught by :meth:`_run`)."""
        if rank in self._stopped or self._stopping is not None:
            return  # it said goodbye, or is about to: its leaving is no loss
        raise liveness.lost_error(rank, pid, self._hosts.get(rank, "?"),
                                  sorted(self.state.sent[rank]), seen_by)

    def _on_data(self, source: int, msg: tuple) -> None:
        key, version = msg[1], msg[3]  # DATA: the version sent; MISSING: the version asked
        task = self.state.tasks.get(key)
        if task is not None and task.holders and version < task.first_copy \
                and self.fetches.get(key):
            # The answer to a GET of the key's earlier computation (forgotten, then given
            # anew since): whoever waits now wants the current value. Ask for it.
            self.outbox[min(task.holders)].append((P.GET, key, task.first_copy))
            return
        for record in self.fetches.pop(key, ()):
            if msg[0] == P.DATA:
                self.stats["bytes_to_rank0"] += msg[2].nbytes
                record.deliver(msg[2])
            else:
                record.deliver(None, lost(key, f"rank {source}: {msg[2]}"))

    def _on_called(self, source: int, msg: tuple) -> None:
        _, call_id, ok, payload = msg
        reply, results, each = self.calls[call_id]
        results[source] = (ok, payload)
        if each is not None:
            try:
                each(self, ok, payload)
            except Exception:  # noqa: BLE001 - the scheduler thread must go on
                log.exception("handling rank %d's answer to call %d failed", source, call_id)
        if len(results) == len(self.workers):
            del self.calls[call_id]
            reply.set_result(results)

    # ------------------------------------------------------------ commands

    def _execute(self, commands: list) -> None:
        """Turn commands into messages, in order per destination (a FREE or CANCEL must not
        overtake the RUN before it, nor a RUN the FREE before it)."""
        outbox = self.outbox
        for cmd in commands:
            kind = type(cmd)
            if kind is Dispatch:
                token, fn_bytes, args = cmd.spec
                if not self.run_times.longer_than(token, self.backoff.hot) and (
                        not cmd.deps or inputs_at_hand(self.state.tasks, cmd.deps,
                                                       cmd.worker, self.quick)):
                    self.quick.add(cmd.key)
                outbox[cmd.worker].append((P.RUN, cmd.key, token, fn_bytes, args, cmd.deps,
                                           cmd.priority, cmd.attempt))
            elif kind is ResolveFuture:
                delivered = self.registry.resolve(cmd.key, cmd.status, cmd.error, cmd.value)
                if delivered:
                    self.stats["bytes_to_rank0"] += delivered
            elif kind is FreeData:
                P.append_key(outbox[cmd.worker], P.FREE,
                             (cmd.key, cmd.copy) if cmd.copy else cmd.key)
            elif kind is CancelTask:
                self.quick.discard(cmd.key)
                P.append_key(outbox[cmd.worker], P.CANCEL, cmd.key)
            elif kind is RecallTask:
                P.append_key(outbox[cmd.worker], P.RECALL, (cmd.key, cmd.attempt))
            elif kind is ResetFutures:
                for future, gen in self.registry.reset(cmd.key, taken_in=True):
                    future._posted = gen  # as _rq_retry: the new run's outcome reaches them

    def _fail_everything(self, exc: BaseException) -> None:
        self.fatal = exc
        self._hosts_known.set()
        self.registry.fail_all(exc)
        for records in self.fetches.values():
            for record in records:
                record.deliver(None, exc)
        while self.inbox:
            item = self.inbox.popleft()
            if item[0] in ("query", "call", "cancel"):  # a caller waits for the reply
                reply = item[-3] if item[0] == "call" else item[-1]
                if reply is not None:
                    reply.set_exception(exc)
        for reply, _, _ in self.calls.values():
            reply.set_exception(exc)
