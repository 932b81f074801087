"""Where tasks run: the placement half of :class:`~mpifutures.state.SchedulerState`.

A task with no inputs and no placement hint waits in a priority queue for a free slot (each
worker keeps ``slots`` tasks in flight); one with inputs goes where most of their bytes are,
and one whose unfinished inputs all run on one worker is sent there at once, before they
finish, so that chains run without a round trip through rank 0 per link. A worker that has
owed tasks for a while without reporting one's end (``stalled``: see
:mod:`~mpifutures.stalls`) gets no queued task, and no placed one that another worker can
take, until it reports: they would wait there behind something long. Whenever another worker
has an idle compute thread, the newest of the tasks already sent to a stalled one that it
could take are recalled, a share in proportion to the idle threads (half, for one idle worker
and one stalled): those no compute thread has taken come back and go elsewhere, and then the
dependents sent early to wait for them there come back too and follow them.
"""

from __future__ import annotations

import heapq
from typing import Any, Optional

from .events import Dispatch, RecallTask
from .taskstate import TaskState


class Placement:
    """Readiness, placement and dispatch; the state it reads and writes (``tasks``, ``load``,
    ``sent``, ``queue``, ``slots``, ``threads``, ``workers``, ``stalled``, ``barren``,
    ``_out``, ``_early``, ``_numbers``, ``_hungry``) is made by
    :class:`~mpifutures.state.SchedulerState`."""

    tasks: dict[str, TaskState]
    load: dict[int, int]
    threads: int
    _hungry: bool
    sent: dict[int, dict[str, None]]
    queue: list[tuple[int, int, str]]
    slots: int
    workers: tuple[int, ...]
    stalled: set[int]
    barren: set[int]
    _out: list
    _early: dict[str, None]
    _numbers: Any

    def _ready(self, task: TaskState) -> None:
        """All inputs are computed: queue a free task, place one with inputs or hints."""
        if not task.deps and task.workers is None:
            task.status = "queued"
            heapq.heappush(self.queue, (-task.priority, task.seq, task.key))
            return
        self._out.append(self._dispatch(task, self._place(task)))

    def _place(self, task: TaskState) -> int:
        candidates = self._candidates(task)
        best, best_score = candidates[0], None
        for w in candidates:
            held = sum(self.tasks[d].nbytes for d in task.deps if w in self.tasks[d].holders)
            score = (held, -self.load[w])
            if best_score is None or score > best_score:
                best, best_score = w, score
        return best

    def _candidates(self, task: TaskState) -> tuple[int, ...]:
        if task.workers and not task.loose:
            choice = task.workers
        elif task.workers:  # (allow_other_workers) where it may go now, else anywhere
            idle = [w for w in task.workers if self.load[w] < self.slots
                    and w not in self.stalled]
            choice = tuple(idle) or self.workers
        else:
            choice = self.workers
        if self.stalled:
            choice = tuple(w for w in choice if w not in self.stalled) or choice
        return choice

    def _maybe_run_early(self, task: TaskState) -> None:
        """Send ``task`` now if every input is on, or computing on, one worker.

        The inputs that ruled it out last time are looked at first: a fan-in over thousands
        of futures is checked as each of them is sent, and a full look each time took time
        quadratic in their number."""
        if task.blocker and self._rule_out(task.blocker, set()) is not None:
            return
        where: set[int] = set()
        blocker = self._rule_out(task.deps, where)
        task.blocker = blocker or ()
        if blocker is None and (task.workers is None or where <= set(task.workers)):
            self._out.append(self._dispatch(task, where.pop()))

    def _rule_out(self, deps: tuple[str, ...], where: set[int]) -> Optional[tuple[str, ...]]:
        """None if ``deps`` are all on, or computing on, one worker (added to ``where``), and
        none is being recalled; else the inputs that show it is not so: the first that fails,
        with the first input if together they are on two workers."""
        for dep_key in deps:
            found = self._where(dep_key)
            if found is None:
                return (dep_key,)
            where |= found
            if len(where) > 1:
                return (deps[0], dep_key) if dep_key != deps[0] else (dep_key,)
        return None if where else deps[:1]

    def _where(self, key: str) -> Optional[set[int]]:
        """The workers that hold ``key``, or the one computing it; None if neither (or it
        may come back from a stalled worker and run elsewhere)."""
        dep = self.tasks[key]
        if dep.status == "processing":
            return None if dep.recalled else {dep.worker}
        return set(dep.holders) if dep.status == "memory" else None

    def _run_early(self) -> None:
        """Dependents of newly dispatched tasks may now be sent early (see _maybe_run_early)."""
        while self._early:
            dependent = self.tasks.get(self._early.popitem()[0])
            if dependent is not None and dependent.status == "waiting":
                self._maybe_run_early(dependent)

    def _fill(self) -> None:
        """Hand queued tasks to workers that have free slots, highest priority first.

        Neighbours in the queue go to the same worker in runs (a fair share each), so that
        tasks submitted together — ``map`` results later combined pairwise — sit together.
        """
        if not self.queue or not self.workers:
            return
        load, queue, tasks, out = self.load, self.queue, self.tasks, self._out
        free = [w for w in load if w not in self.stalled] if self.stalled else load
        if not free:
            return  # every worker runs something long: the queue waits for the first free
        share = -(-len(queue) // len(load))
        # With some workers stalled, the others take their shares only: the stalled ones'
        # come when they speak again (the first to speak must not take the whole queue).
        left = share * len(free) if self.stalled else len(queue)
        while queue and left > 0:
            worker = min(free, key=load.__getitem__)
            run = min(share, self.slots - load[worker], left)
            if run <= 0:
                return
            while run > 0 and queue:
                key = heapq.heappop(queue)[2]
                task = tasks.get(key)
                if task is not None and task.status == "queued":
                    out.append(self._dispatch(task, worker))
                    run -= 1
                    left -= 1

    def _steal(self) -> None:
        """Workers with an idle compute thread take work from the stalled ones (see
        _take_back); called when a worker stalls or one's load falls below its threads."""
        self._hungry = False
        idle = sum(self.threads - self.load[w] for w in self.workers
                   if w not in self.stalled and self.load[w] < self.threads)
        if idle and len(self.stalled) < len(self.workers):
            for worker in sorted(self.stalled):
                self._take_back(worker, idle, idle + len(self.stalled) * self.threads)

    def _take_back(self, worker: int, idle: int, pool: int) -> None:
        """Recall from stalled ``worker`` the newest of the tasks it was sent that a worker
        with an idle compute thread can take: their share ``idle / pool`` (the idle threads
        among the ``pool`` of the idle and the stalled workers' threads), counting tasks
        already asked back.
        One idle worker facing one stalled takes half; with tasks of similar length, moving
        all would only make the others wait in turn. The idle workers ask again when they
        run dry.

        Not a task pinned there, nor one fetching inputs from other ranks (moved, it would
        fetch them again), nor one with a dependent sent early that may not follow it (pinned
        there). The dependents sent early to wait for a task are recalled once it is back:
        before, they would come back even when it had started and could not move."""
        if worker in self.barren:
            return  # nothing there could move, and nothing it holds has changed since
        load, threads = self.load, self.threads
        givable, asked = self.givable(worker)
        if not givable:
            self.barren.add(worker)
            return
        movable = [task for task in givable
                   if any(w != worker and w not in self.stalled and load[w] < threads
                          for w in self._candidates(task))]
        share = -(-(len(movable) + asked) * idle // pool) - asked
        for task in movable[:max(share, 0)]:
            self._ask_back(task, worker)

    def givable(self, worker: int) -> tuple[list[TaskState], int]:
        """The tasks sent to ``worker`` that another worker could take (see _take_back),
        newest first, whatever the others' load; and how many were asked back already.
        Looking over all of them at each event where a worker ran dry took 11.6 ms per round
        trip with 10,000 chained tasks behind a long one, hence :attr:`barren`."""
        tasks = self.tasks
        sent = [tasks[key] for key in reversed(self.sent[worker])]
        return [task for task in sent
                if not task.recalled and all(worker in tasks[d].holders for d in task.deps)
                and (task.loose or not task.workers or any(w != worker for w in task.workers))
                and self._sent_after(task, worker) is not None
                ], sum(task.recalled for task in sent)

    def _ask_back(self, task: TaskState, worker: int) -> None:
        task.recalled = True
        self._out.append(RecallTask(worker, task.key, task.attempt))

    def _sent_after(self, task: TaskState, worker: int,
                    movable: bool = True) -> Optional[list[TaskState]]:
        """The dependents sent early to wait on ``worker`` for ``task`` (and for them, in
        turn). ``movable``: None if one may not follow the task elsewhere (pinned there)."""
        found: dict[str, TaskState] = {}
        todo = [task]
        while todo:
            for key in todo.pop().dependents:
                dependent = self.tasks[key]
                if dependent.status != "processing" or dependent.recalled or key in found \
                        or dependent.worker != worker:
                    continue
                if movable and dependent.workers and not dependent.loose:
                    return None
                found[key] = dependent
                todo.append(dependent)
        return list(found.values())

    def _returned(self, task: TaskState) -> None:
        """Recalled ``task`` came back without running: the dependents sent early to wait
        for it are recalled too, and it is placed anew (or, itself sent early and its inputs
        not all computed yet, waits for them again)."""
        for dependent in self._sent_after(task, task.worker, movable=False):  # (sent early
            self._ask_back(dependent, task.worker)  # since its recall, pinned ones too)
        self._unload(task)
        task.status = "waiting"
        if task.waiting_on:
            self._maybe_run_early(task)
        else:
            self._ready(task)

    def _unload(self, task: TaskState) -> None:
        """``task`` no longer runs on its worker (it ended, or came back)."""
        if task.status == "processing" and task.worker is not None:
            self.barren.discard(task.worker)
            self.load[task.worker] -= 1
            del self.sent[task.worker][task.key]
            task.recalled = False
            if self.stalled and self.load[task.worker] < self.threads:
                self._hungry = True  # it may take work from a stalled worker

    def _dispatch(self, task: TaskState, worker: int) -> Dispatch:
        self.barren.discard(worker)
        if task.status != "processing":
            self.load[worker] += 1
            self.sent[worker][task.key] = None
        task.recalled = False
        task.status, task.worker = "processing", worker
        task.attempt = next(self._numbers)  # unique, even across re-created tasks
        for key in task.dependents:
            self._early[key] = None
        deps = tuple([self._source(d, worker) for d in task.deps]) if task.deps else ()
        return Dispatch(worker, task.key, task.spec, deps, task.priority, task.attempt)

    def _source(self, key: str, worker: int) -> tuple[str, int, int]:
        """``(key, rank to get it from, oldest version that will do)`` for an input."""
        dep = self.tasks[key]
        if dep.status == "processing":  # on ``worker`` itself (see _maybe_run_early)
            return key, dep.worker, dep.attempt
        if worker in dep.holders:
            return key, worker, dep.first_copy
        return key, min(dep.holders, key=self.load.__getitem__), dep.first_copy
