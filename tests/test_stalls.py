"""Rank 0's watch for workers that owe tasks and have gone quiet (mpifutures.stalls)."""

from __future__ import annotations

from mpifutures.events import WorkerStalled
from mpifutures.stalls import Stalls


def test_a_worker_quiet_while_each_of_its_threads_owes_a_task_is_stalled_until_it_speaks():
    stalls = Stalls([1, 2], threads=2, after=0.1)
    events: list = []
    stalls.check({1: 0, 2: 0}, 10.0, events)  # idle: the clock starts when work comes
    for now in (10.03, 10.06, 10.09):  # (rank 0 checks every 25 ms or so)
        stalls.check({1: 1, 2: 2}, now, events)
    assert events == []
    stalls.check({1: 1, 2: 2}, 10.12, events)  # worker 1 has a free thread
    assert events == [WorkerStalled(2, True)]
    stalls.check({1: 1, 2: 2}, 10.15, events)
    assert events == [WorkerStalled(2, True)]  # said once
    stalls.heard(2, 10.6, events)
    assert events[1:] == [WorkerStalled(2, False)] and not stalls.stalled
    stalls.heard(1, 10.7, events)
    assert len(events) == 2  # a worker that was not stalled: nothing to say


def test_silence_while_rank_0_itself_was_busy_proves_nothing():
    stalls = Stalls([1], after=0.1)
    events: list = []
    stalls.check({1: 0}, 10.0, events)
    stalls.check({1: 1}, 10.5, events)  # the loop spent 0.5 s on one batch: no check between
    assert events == []
    stalls.check({1: 1}, 10.56, events)
    assert events == []
    stalls.check({1: 1}, 10.62, events)  # 0.12 s of silence heard out: stalled
    assert events == [WorkerStalled(1, True)]


def test_a_stalled_worker_owing_fewer_tasks_than_it_has_threads_is_stalled_no_more():
    # (its long task was cancelled and has left it, or what queued behind it was recalled)
    stalls = Stalls([1], threads=1, after=0.1)
    events: list = []
    stalls.check({1: 0}, 10.0, events)
    for now in (10.03, 10.06, 10.09, 10.12):
        stalls.check({1: 2}, now, events)
    assert events == [WorkerStalled(1, True)]
    stalls.check({1: 1}, 10.13, events)  # the long one still runs
    assert events == [WorkerStalled(1, True)]
    stalls.check({1: 0}, 10.131, events)  # at once, not at the next timed check
    assert events == [WorkerStalled(1, True), WorkerStalled(1, False)] and not stalls.stalled


def test_false_alarms_make_rank_0_more_patient_with_that_worker_and_real_stalls_less():
    stalls = Stalls([1, 2], after=0.1)
    events: list = []

    def stall_then_hear(start, heard_after):
        stalls.heard(1, start, [])  # it reports a task's end at start, and owes 2 since
        now, checks = start, 0
        while 1 not in stalls.stalled:
            checks += 1
            now = start + 0.0251 * checks  # (a check every 25 ms or so)
            stalls.check({1: 2, 2: 0}, now, events)
        stalls.heard(1, now + heard_after, events)
        return round(now - start, 3)

    assert stall_then_hear(10.0, 0.05) == 0.126  # found after 0.1 s; speaks 0.05 s later
    assert stalls.patience[1] == 2 and stalls.patience[2] == 1
    assert stall_then_hear(11.0, 0.05) == 0.226  # now after 0.2 s
    for start in (12.0, 13.0, 14.0):
        stall_then_hear(start, 0.05)
    assert stalls.patience[1] == 8  # at most 0.8 s
    assert stall_then_hear(20.0, 5.0) == 0.828  # a long task: found, and it lasted
    assert stalls.patience[1] == 4
