"""The scheduler's decisions, as a pure state machine.

:class:`SchedulerState` is changed only through ``handle(*events) -> list[command]``. It
decides readiness, placement, ownership, reference counts, error fan-out and release; it does
no I/O, starts no thread, reads no clock and knows nothing of MPI, so tests feed it events and
compare the exact commands it returns.

A task moves through these states::

    waiting ──► queued ──► processing ──► memory ──► (forgotten)
       │           │           │  ▲
       │           │           ▼  │ retry
       └───────────┴──────► erred / cancelled ──► (forgotten)

*waiting*: some input is not computed yet. *queued*: ready, has no inputs and no placement
hint, and waits for a free slot (each worker keeps ``slots`` such tasks in flight, so that a
huge ``map`` neither floods one worker nor leaves one idle). *processing*: sent to a worker.
A task whose unfinished inputs all run on one worker is sent there at once, before they finish,
so chains run without a round trip through rank 0 per link. A task cancelled while sent keeps
its worker's slot until the worker says that attempt has left it (it may be running, and a
running task cannot be stopped): meanwhile new work goes to the other workers.

A task is kept while a client holds a future of it, while an unfinished task needs it, or while
it is kept on purpose (fire and forget). When none of these holds, it is forgotten and every
rank holding its data is told to free it. A task that ended without running (an input failed
or was cancelled) stays linked to its inputs that hold no data, for a retry: an unfinished one
that nothing else wants is cancelled, and a retry re-runs it with the rest of the chain.

Every copy of data on a worker carries a *version*: the dispatch number of the attempt that
computed it, or the number of the scatter that placed it (one counter for both, so a key
forgotten and given anew always gets higher numbers). A dispatch names the oldest version of
each input that will do, and a FREE the newest version it drops, so a stale copy (of a
cancelled attempt, or of a key since given to a new computation) is never read as an input
nor frees the current one.
"""

from __future__ import annotations

import itertools
from typing import AbstractSet, Any, Iterable, Optional

from .errors import DataLostError
from .events import (
    CancelRequested,
    CancelTask,
    DataScattered,
    FreeData,
    FutureReleased,
    KeepRequested,
    ReplicaStored,
    ResetFutures,
    ResolveFuture,
    RetryRequested,
    TaskDropped,
    TaskFailed,
    TaskFinished,
    TaskSubmitted,
    WorkerStalled,
)
from .placement import Placement
from .taskstate import (ENDED as _ENDED, NONE as _NONE, TaskState, rerun_chain,
                        with_item as _with, without_item as _without)


class SchedulerState(Placement):
    """Pure scheduling state of one cluster: ``handle(*events) -> list[command]``."""

    def __init__(self, workers: Iterable[int], slots: int = 64, threads: int = 1) -> None:
        self.workers: tuple[int, ...] = tuple(workers)
        self.slots = slots
        self.threads = threads  # compute threads per worker: fewer tasks owed, one is idle
        self.tasks: dict[str, TaskState] = {}
        self.load: dict[int, int] = {w: 0 for w in self.workers}  # tasks sent, not ended
        self.sent: dict[int, dict[str, None]] = {w: {} for w in self.workers}  # their keys
        # (key, attempt) -> worker: cancelled while sent; their slots stay taken until the
        # worker says they left (a running task cannot be stopped: the worker is busy)
        self.leaving: dict[tuple[str, int], int] = {}
        self.stalled: set[int] = set()  # busy with something long: no queued work for them
        # stalled workers found with nothing another could take, until what they were sent
        # or hold changes (each change discards the worker)
        self.barren: set[int] = set()
        self._hungry = False  # a worker's load fell below its threads while others stalled
        self.queue: list[tuple[int, int, str]] = []
        self.completed = 0
        self.failed = 0
        self._seq = itertools.count()
        self._numbers = itertools.count(1)  # dispatch and scatter numbers: data versions
        self._out: list = []
        self._early: dict[str, None] = {}  # dependents of tasks just sent (a set, in order)
        self.unconfirmed: set[str] = set()  # scattered keys with copies not yet confirmed

    # ------------------------------------------------------------ entry point

    def number(self) -> int:
        """A new data version, for a scatter (the driver numbers scatters as it sends them)."""
        return next(self._numbers)

    def kept(self) -> int:
        """Tasks kept to run to their end (fire and forget) that have not ended."""
        return sum(1 for task in self.tasks.values() if task.keep)

    def awaiting_workers(self) -> bool:
        """True while some worker owes an answer: a task it runs, a copy it confirms."""
        return bool(self.unconfirmed) or any(self.load.values())

    def handle(self, *events: Any) -> list:
        """Apply ``events`` in order; return the commands they call for, in order."""
        out = self._out = []
        handlers = self._handlers
        for event in events:
            handlers[type(event)](self, event)
            if self._early:
                self._run_early()
        if self._hungry:
            self._steal()
        self._fill()
        if self._early:
            self._run_early()
        self._out = []
        return out

    # ------------------------------------------------------------ queries

    def who_has(self, key: str) -> tuple[int, ...]:
        """Ranks holding ``key``'s data (empty if not computed or unknown)."""
        task = self.tasks.get(key)
        return tuple(sorted(task.holders)) if task else ()

    def status(self, key: str) -> Optional[str]:
        """The task's state name, or None if the key is unknown."""
        task = self.tasks.get(key)
        return task.status if task else None

    # ------------------------------------------------------------ events

    def _submitted(self, ev: TaskSubmitted) -> None:
        task = self.tasks.get(ev.key)
        if task is not None and task.status != "cancelled" and (
                task.clients or task.status != "erred"):
            task.clients = _with(task.clients, ev.client)
            if task.status in _ENDED:
                self._out.append(ResolveFuture(task.key, task.status, task.error))
            return
        # A cancelled key submitted again runs anew, for every session still holding a
        # future of it too (one may retry it, and must then get this run's outcome); so does
        # a failed one that only failed dependents keep (for their retry, which then takes
        # the new run).
        clients = {ev.client}
        if task is not None:
            clients.update(task.clients)
            self._drop_inputs(task)  # the links it kept to its own failed inputs
            self._forget(task)
        task = TaskState(ev.key, ev.spec, ev.deps, next(self._seq), ev.priority,
                         ev.workers, ev.loose, ev.retries)
        task.clients = clients
        self.tasks[ev.key] = task
        self._start(task)

    def _start(self, task: TaskState) -> None:
        """Link a new (or retried) task to its inputs; then run, queue or wait. One whose
        input has failed or was cancelled ends at once, linked to its inputs like any task
        that ended without running (see :meth:`_unlink_inputs`): a retry can reach them."""
        ended = None
        for dep_key in task.deps:
            dep = self.tasks.get(dep_key)
            if dep is task:  # (Executor refuses this: here for the state's own sake)
                self._end(task, "erred", ValueError(f"task {task.key!r} needs its own result"))
                return
            if dep is None:
                if ended is not None:
                    continue  # an earlier input decided already
                err = DataLostError(f"input {dep_key!r} of task {task.key!r} was already "
                                    "released (no future of it was left); keep a future of "
                                    "each input while its dependents may be submitted or "
                                    "retried")
                self._end(task, "erred", err)
                return
            dep.dependents = _with(dep.dependents, task.key)
            if ended is None and dep.status in ("erred", "cancelled"):
                ended = dep
            elif dep.status != "memory":
                task.waiting_on = _with(task.waiting_on, dep_key)
        if ended is not None:
            task.waiting_on = _NONE
            self._end(task, ended.status, ended.error)
            return
        if not task.waiting_on:
            self._ready(task)
        else:
            self._maybe_run_early(task)

    def _scattered(self, ev: DataScattered) -> None:
        task = self.tasks.get(ev.key)
        if task is not None and task.status == "memory":
            task.clients = _with(task.clients, ev.client)
            task.copy = max(task.copy, ev.copy)
            task.expected = set(task.expected) | (set(ev.workers) - task.holders)
            self._resolve_scattered(task)
            return
        clients = {ev.client}  # and, as in _submitted, the sessions holding the old one
        if task is not None:
            clients.update(task.clients)
            self._forget(task)
        task = TaskState(ev.key, None, (), next(self._seq))
        self.tasks[ev.key] = task
        task.clients = clients
        task.status, task.nbytes = "memory", ev.nbytes
        task.copy = task.first_copy = ev.copy
        # The first worker counts as a holder (fetches sent there queue behind the data), but
        # the future waits for its confirmation too: a peer's request for the data may reach
        # that worker before the data has (MPI orders messages per sender only).
        task.holders, task.expected = {ev.workers[0]}, set(ev.workers)
        self.barren.discard(ev.workers[0])
        self._resolve_scattered(task)

    def _resolve_scattered(self, task: TaskState) -> None:
        if task.expected:
            self.unconfirmed.add(task.key)
        else:  # every copy is in place: the future is done
            self.unconfirmed.discard(task.key)
            self._out.append(ResolveFuture(task.key, "memory"))

    def _replica(self, ev: ReplicaStored) -> None:
        task = self.tasks.get(ev.key)
        if task is None or task.status != "memory" or ev.copy < task.first_copy:
            # A copy nobody needs any more, or one of an earlier version of the key, which
            # was freed. The FREE names its version: a newer value there (a scatter's that
            # overtook it, the key computed there anew) stays.
            self._out.append(FreeData(ev.worker, ev.key, ev.copy))
            return
        task.holders = _with(task.holders, ev.worker)
        self.barren.discard(ev.worker)
        self._hungry = bool(self.stalled)  # a task that fetched it may move now
        if ev.worker in task.expected:
            task.expected.discard(ev.worker)
            self._resolve_scattered(task)

    def _finished(self, ev: TaskFinished) -> None:
        task = self.tasks.get(ev.key)
        if task is None or task.status != "processing" or task.worker != ev.worker \
                or task.attempt != ev.attempt:
            self._dropped(ev)
            self._stale(ev.key, task, ev.worker, ev.attempt)
            return
        self._unload(task)
        task.status, task.holders, task.nbytes = "memory", {ev.worker}, ev.nbytes
        task.copy = task.first_copy = ev.attempt
        task.keep = False  # fire and forget: it ran; now it lives as long as it is needed
        self.completed += 1
        self._out.append(ResolveFuture(task.key, "memory", None, ev.value))
        for dep_key in list(task.dependents):
            dependent = self.tasks[dep_key]
            if dependent.status in _ENDED:  # it ended without running: no data kept for it
                task.dependents.discard(dep_key)
                continue
            _without(dependent.waiting_on, task.key)
            if not dependent.waiting_on and dependent.status == "waiting":
                self._ready(dependent)
        self._drop_inputs(task)
        self._maybe_forget(task)

    def _stale(self, key: str, task: Optional[TaskState], worker: int, attempt: int) -> None:
        """An outcome of a dispatch that no longer counts (cancelled, released, re-sent)."""
        if task is not None and (worker in task.holders or (
                task.status == "processing" and task.worker == worker)):
            return  # the worker's copy of the key is the current one, or will be
        self._out.append(FreeData(worker, key, attempt))

    def _failed(self, ev: TaskFailed) -> None:
        task = self.tasks.get(ev.key)
        if task is None or task.status != "processing" or task.worker != ev.worker \
                or task.attempt != ev.attempt:
            self._dropped(ev)  # a stale attempt: it left nothing in the worker's store
            return
        if task.retries > 0:
            # Same worker: dependents sent there early wait for this key in its store.
            task.retries -= 1
            self._out.append(self._dispatch(task, ev.worker))
            return
        self._unload(task)
        task.status = "erred"  # no longer on its worker: nothing to cancel there
        self.failed += 1
        self._end(task, "erred", ev.error)

    def _dropped(self, ev: Any) -> None:
        """An attempt cancelled while sent has left its worker: its slot is free again. One
        recalled has come back without running: it goes elsewhere."""
        worker = self.leaving.pop((ev.key, ev.attempt), None)
        if worker is not None:
            self.load[worker] -= 1
            self._hungry = bool(self.stalled)
            return
        task = self.tasks.get(ev.key)
        if (task is not None and task.recalled and task.status == "processing"
                and task.worker == ev.worker and task.attempt == ev.attempt):
            self._returned(task)

    def _stall(self, ev: WorkerStalled) -> None:
        self.barren.discard(ev.worker)
        if ev.stalled:
            self.stalled.add(ev.worker)
        else:
            self.stalled.discard(ev.worker)
        self._hungry = bool(self.stalled)  # a worker with an idle thread may take from one

    def _released(self, ev: FutureReleased) -> None:
        task = self.tasks.get(ev.key)
        if task is not None:
            _without(task.clients, ev.client)
            self._maybe_forget(task)
            if task.dependents and self._only_for_retries(task):
                self._abandon(task)
                self._drop_inputs_tree(task)

    def _cancel(self, ev: CancelRequested) -> None:
        for key in ev.keys:
            task = self.tasks.get(key)
            if task is not None and task.status not in _ENDED:
                self._end(task, "cancelled", None)

    def _retry(self, ev: RetryRequested) -> None:
        task = self.tasks.get(ev.key)
        if task is None or not task.rerunnable:
            # Nothing to re-run; the client reset its futures, so tell them how it stands.
            if task is None:
                self._out.append(ResolveFuture(ev.key, "erred", DataLostError(
                    f"{ev.key!r} cannot be retried: it was released")))
            elif task.status in _ENDED:
                self._out.append(ResolveFuture(task.key, task.status, task.error))
            return
        try:
            chain = rerun_chain(self.tasks, task)
        except ValueError as exc:  # a cycle: it would wait for ever
            task.status, task.error = "erred", exc
            self._out.append(ResolveFuture(task.key, "erred", exc))
            return
        for t in chain:  # all waiting first: none of them looks ended to another's start
            if t is not task:  # (the client that asked reset the task's own futures)
                self._out.append(ResetFutures(t.key))
            t.status, t.error, t.waiting_on = "waiting", None, _NONE
        for t in chain:
            if self.tasks.get(t.key) is t and t.status == "waiting":  # (else an input's
                self._start(t)  # start failed, e.g. on a released input, and ended it)

    def _keep(self, ev: KeepRequested) -> None:
        task = self.tasks.get(ev.key)
        if task is not None and task.status not in _ENDED:
            task.keep = True

    _handlers = {
        TaskSubmitted: _submitted,
        DataScattered: _scattered,
        ReplicaStored: _replica,
        TaskFinished: _finished,
        TaskFailed: _failed,
        TaskDropped: _dropped,
        WorkerStalled: _stall,
        FutureReleased: _released,
        CancelRequested: _cancel,
        RetryRequested: _retry,
        KeepRequested: _keep,
    }

    # ------------------------------------------------------------ endings and release

    def _recall(self, task: TaskState) -> None:
        """Cancel ``task`` on its worker, whose slot stays taken until the attempt has left."""
        self.leaving[(task.key, task.attempt)] = task.worker
        del self.sent[task.worker][task.key]
        self.barren.discard(task.worker)  # a task that waited for it may move now
        self._out.append(CancelTask(task.worker, task.key))

    def _end(self, task: TaskState, status: str, error: Any) -> None:
        """End ``task`` and, transitively, every unfinished task that needs it."""
        stack, ended = [task], {task.key}
        while stack:
            t = stack.pop()
            if t is not task and t.status in _ENDED:
                continue  # reached twice through a diamond
            if t.status == "processing":
                self._recall(t)
            t.status, t.error, t.keep = status, error, False
            ended.add(t.key)
            self._out.append(ResolveFuture(t.key, status, error))
            stack.extend(self.tasks[k] for k in t.dependents
                         if self.tasks[k].status not in _ENDED)
        self._drop_inputs_tree(task, ended)

    def _drop_inputs_tree(self, task: TaskState, ended: AbstractSet[str] = frozenset()) -> None:
        """``task`` and the dependents that ended with it (``ended``, keys) have ended
        without running: each lets go of its computed inputs and stays linked to the others
        (see :meth:`_unlink_inputs`); an input still to compute that only such tasks want is
        cancelled, and stays linked for their retry too. Dependents that had ended before
        are not walked again: their inputs were let go then (a sum over 10,000 inputs that
        fail one by one walked all of them at each failure)."""
        roots: list[TaskState] = [task]
        seen: set[str] = set()
        while roots:
            stack, unfinished, roots = roots, [], []
            while stack:
                t = stack.pop()
                if t.key in seen:
                    continue
                seen.add(t.key)
                stack.extend(self.tasks[k] for k in t.dependents
                             if k in ended and k in self.tasks)
                for dep in self._unlink_inputs(t, unfinished):
                    self._maybe_forget(dep)
                self._maybe_forget(t)
            for dep in dict.fromkeys(unfinished):  # checked once the walk is over, each
                if self._only_for_retries(dep):  # once: O(links), not more
                    self._abandon(dep)
                    roots.append(dep)

    def _drop_inputs(self, task: TaskState) -> None:
        """``task`` no longer needs its inputs: they may be freed."""
        for dep in self._unlink_inputs(task):
            self._maybe_forget(dep)

    def _unlink_inputs(self, task: TaskState,
                       unfinished: Optional[list] = None) -> list[TaskState]:
        """Unlink ``task`` from its inputs; returns those unlinked. With ``unfinished`` (a
        list), the task ended without running: it stays linked to the inputs that hold no
        data (failed, cancelled, or still to compute), so that its retry can re-run them,
        and those still to compute are added to the list."""
        unlinked = []
        for dep_key in task.deps:
            dep = self.tasks.get(dep_key)
            if dep is not None and task.key in dep.dependents:
                if unfinished is not None and dep.status != "memory" and dep.spec is not None:
                    if dep.status not in _ENDED:
                        unfinished.append(dep)
                    continue
                dep.dependents.discard(task.key)
                unlinked.append(dep)
        return unlinked

    def _only_for_retries(self, task: TaskState) -> bool:
        """Still to compute, but wanted only by dependents that ended without running."""
        return (self.tasks.get(task.key) is task and task.status not in _ENDED
                and not task.clients and not task.keep
                and all(self.tasks[k].status in _ENDED for k in task.dependents))

    def _abandon(self, task: TaskState) -> None:
        """Cancel an unfinished task nobody waits for (no future of it is held)."""
        if task.status == "processing":
            self._recall(task)
        task.status = "cancelled"

    def _maybe_forget(self, task: TaskState) -> None:
        """Forget ``task`` if nothing wants it, then each input only it wanted, and so on
        (a loop, not recursion: a chain may be thousands of tasks long). An input still to
        compute that is left wanted only by dependents that ended without running is
        cancelled and kept for their retry, as :meth:`_drop_inputs_tree` does."""
        if task.clients or task.keep or task.dependents:
            return  # (most calls, at once)
        # (input, whether it just lost an unfinished dependent: only then can it have become
        # wanted only for retries; scanning its dependents at every release was quadratic)
        stack: list[tuple[TaskState, bool]] = [(task, False)]
        while stack:
            t, lost_unfinished = stack.pop()
            if t.clients or t.keep or self.tasks.get(t.key) is not t:
                continue
            if t.dependents:  # an input, still to compute, wanted only for retries: cancel
                if lost_unfinished and self._only_for_retries(t):  # it, and let go of its
                    self._abandon(t)  # own inputs likewise
                    unfinished: list[TaskState] = []
                    stack += [(d, True) for d in self._unlink_inputs(t, unfinished) + unfinished]
                continue
            unfinished_before = t.status not in _ENDED
            if unfinished_before:
                self._abandon(t)
            # (an ended task reached before its turn in _drop_inputs_tree is still linked)
            stack += [(d, unfinished_before) for d in self._unlink_inputs(t)]
            self._forget(t)

    def _forget(self, task: TaskState) -> None:
        holders = task.holders
        for worker in sorted(holders) if len(holders) > 1 else holders:
            self._out.append(FreeData(worker, task.key, task.copy))
        task.holders = _NONE
        self.unconfirmed.discard(task.key)
        del self.tasks[task.key]
