"""Rank 0's watch for workers that have gone quiet while they owe tasks.

A worker that has owed at least as many tasks as it has compute threads for
:data:`STALL_AFTER` seconds without reporting that one has ended runs something long on each
thread. Tasks queued on it would wait behind that one while another worker may idle (and wait
for ever behind one that never ends, or one waiting for a task queued behind it), so rank 0
marks it stalled (:class:`~mpifutures.events.WorkerStalled`) and the state machine sends it no
more work that another worker can take, and lets a worker with an idle thread take back
tasks already sent there (see :meth:`~mpifutures.placement.Placement._take_back`), until it
reports that a task has ended or owes fewer tasks than it has threads.
"""

from __future__ import annotations

import time
from typing import Iterable, Mapping

from .events import WorkerStalled

#: Seconds of silence from a worker that owes tasks before it counts as stalled: far more
#: than the gap between two reports of a worker running short tasks.
STALL_AFTER = 0.1
#: The most a worker's silence is stretched by false alarms (see :meth:`Stalls.heard`).
MOST_PATIENCE = 8


class Stalls:
    """Tracks when each worker last reported a task's end or was idle; emits WorkerStalled
    events."""

    def __init__(self, workers: Iterable[int], threads: int = 1,
                 after: float = STALL_AFTER) -> None:
        self.after = after
        self.threads = threads  # each worker's compute threads (MPIFUTURES_THREADS_PER_WORKER)
        self.quiet_since = dict.fromkeys(workers, time.monotonic())
        self.stalled: set[int] = set()
        self.patience = dict.fromkeys(self.quiet_since, 1)  # times ``after``, per worker
        self._since: dict[int, float] = {}  # when each stalled worker was found so
        self._next_check = 0.0

    def heard(self, worker: int, now: float, events: list) -> None:
        """``worker`` reported that a task has left it (DONE, FAILED, or DROPPED of one that a
        compute thread had taken): a thread is free, or was. Other messages come from its
        loop, which answers while the threads are busy.

        A stall that ends within the silence that started it was a false alarm (a worker
        starved of CPU by oversubscription, or tasks just over ``after``): that worker's
        patience doubles, up to :data:`MOST_PATIENCE`; one that lasts four times as long
        halves it again."""
        self.quiet_since[worker] = now
        if worker in self.stalled:
            self.stalled.discard(worker)
            events.append(WorkerStalled(worker, False))
            lasted, patience = now - self._since.pop(worker, now), self.patience[worker]
            if lasted < patience * self.after:
                self.patience[worker] = min(2 * patience, MOST_PATIENCE)
            elif lasted > 4 * patience * self.after:
                self.patience[worker] = max(patience // 2, 1)

    def check(self, load: Mapping[int, int], now: float, events: list) -> None:
        """A few times per ``after``: mark the workers owing a task for each thread and
        quiet since then (one owing fewer has a free thread, and is not stalled)."""
        if self.stalled:
            for worker in [w for w in self.stalled if load[w] < self.threads]:
                self.heard(worker, now, events)
        if now < self._next_check:
            return
        # A check this late means rank 0's own loop was busy (a huge batch of submits): it
        # did not listen meanwhile, so the silence proves nothing yet.
        late = now - self._next_check > self.after / 2
        self._next_check = now + self.after / 4
        for worker, owed in load.items():
            if owed < self.threads or (late and worker not in self.stalled):
                self.quiet_since[worker] = now  # a thread is free: silence says nothing
            elif (worker not in self.stalled
                  and now - self.quiet_since[worker] > self.after * self.patience[worker]):
                self.stalled.add(worker)
                self._since[worker] = now
                events.append(WorkerStalled(worker, True))
