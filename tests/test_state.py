"""The scheduler state machine alone: events in, exact commands out. No MPI, no threads."""

from __future__ import annotations

import pytest

from mpifutures.events import (CancelRequested, CancelTask, DataScattered, Dispatch, FreeData,
                               FutureReleased, KeepRequested, ReplicaStored, ResetFutures,
                               ResolveFuture, RetryRequested, TaskDropped,
                               TaskFailed, TaskFinished, TaskSubmitted, WorkerStalled)
from mpifutures.state import SchedulerState
from tests.invariants import check_invariants


class Checked(SchedulerState):
    """Checks its invariants after every call. Dispatch numbers and data versions are left
    out of the output (tests compare placement and what is freed where), except through
    :meth:`raw`."""

    def handle(self, *events):
        out = self.raw(*events)
        return [c.replace(attempt=0, deps=tuple(d[:2] for d in c.deps))
                if isinstance(c, Dispatch) else c.replace(copy=0)
                if isinstance(c, FreeData) else c for c in out]

    def raw(self, *events):
        out = super().handle(*(self._current(e) for e in events))
        check_invariants(self)
        return out

    def _current(self, ev):
        # Outcomes written without a dispatch number refer to the task's latest dispatch, and
        # copies written without a version are of the key's current value.
        task = self.tasks.get(getattr(ev, "key", None))
        if isinstance(ev, (TaskFinished, TaskFailed, TaskDropped)) and ev.attempt == 0 and task:
            return ev.replace(attempt=task.attempt)
        if isinstance(ev, ReplicaStored) and ev.copy == 0 and task:
            return ev.replace(copy=task.first_copy or task.attempt)
        return ev


@pytest.fixture
def state():
    return Checked(workers=[1, 2], slots=2)


def submit(key, *deps, **kw):
    return TaskSubmitted(key, f"spec-{key}", tuple(deps), **kw)


def confirmed(state):
    """The workers' reports that each task cancelled while sent to them has left them."""
    return [TaskDropped(key, worker, attempt)
            for (key, attempt), worker in list(state.leaving.items())]


def test_records_compare_by_type_and_fields_and_copy_with_changes():
    assert FreeData(1, "a") == FreeData(1, "a")
    assert FreeData(1, "a") != FreeData(2, "a")
    assert FreeData(1, "a") != CancelTask(1, "a")  # same fields, another command
    d = Dispatch(1, "k", "spec", (), 0, 7)
    assert d.replace(attempt=0) == Dispatch(1, "k", "spec", ())
    assert d.attempt == 7  # the original is unchanged
    assert repr(FreeData(1, "a")) == "FreeData(worker=1, key='a', copy=0)"
    with pytest.raises(TypeError, match="no field nope"):
        d.replace(nope=1)


def test_neighbours_share_a_worker_and_the_work_is_shared_fairly():
    state = Checked(workers=[1, 2], slots=64)
    out = state.handle(*(submit(f"x{i}") for i in range(16)))
    assert [c.worker for c in out] == [1] * 8 + [2] * 8


def test_free_tasks_fill_workers_in_runs_up_to_their_slots(state):
    out = state.handle(*(submit(k) for k in "abcde"))
    assert out == [Dispatch(1, "a", "spec-a", ()), Dispatch(1, "b", "spec-b", ()),
                   Dispatch(2, "c", "spec-c", ()), Dispatch(2, "d", "spec-d", ())]
    assert state.status("e") == "queued"
    out = state.handle(TaskFinished("a", 1, 8))
    assert out == [ResolveFuture("a", "memory"), Dispatch(1, "e", "spec-e", ())]


def test_higher_priority_goes_first_fifo_among_equals(state):
    state.slots = 1
    state.handle(submit("x"), submit("y"))
    out = state.handle(submit("low"), submit("high", priority=5), submit("low2"),
                       submit("high2", priority=5))
    assert out == []
    out = state.handle(TaskFinished("x", 1, 8))
    assert out[-1] == Dispatch(1, "high", "spec-high", (), 5)
    out = state.handle(TaskFinished("y", 2, 8))
    assert out[-1] == Dispatch(2, "high2", "spec-high2", (), 5)


def test_task_goes_to_the_worker_holding_most_input_bytes(state):
    state.handle(submit("small"), submit("big"))
    state.handle(TaskFinished("small", 1, 10), TaskFinished("big", 2, 1000))
    out = state.handle(submit("sum", "small", "big"))
    assert out == [Dispatch(2, "sum", "spec-sum", (("small", 1), ("big", 2)))]


def test_ties_go_to_the_least_loaded_worker(state):
    state.handle(DataScattered("d", (1, 2), 100), ReplicaStored("d", 2), ReplicaStored("d", 1))
    state.handle(submit("busy", workers=(1,)))
    out = state.handle(submit("t", "d"))
    assert out == [Dispatch(2, "t", "spec-t", (("d", 2),))]


def test_dependent_is_sent_early_to_the_worker_computing_its_inputs(state):
    state.handle(submit("a"))
    out = state.handle(submit("b", "a"), submit("c", "b"))
    assert out == [Dispatch(1, "b", "spec-b", (("a", 1),)),
                   Dispatch(1, "c", "spec-c", (("b", 1),))]


def test_inputs_on_two_workers_wait_until_both_are_computed(state):
    state.handle(submit("a"), submit("b"))
    assert state.handle(submit("c", "a", "b")) == []
    assert state.handle(TaskFinished("a", 1, 10)) == [ResolveFuture("a", "memory")]
    out = state.handle(TaskFinished("b", 2, 30))
    assert out == [ResolveFuture("b", "memory"),
                   Dispatch(2, "c", "spec-c", (("a", 1), ("b", 2)))]


def test_a_fan_in_is_sent_early_once_the_input_that_held_it_back_is_sent_beside_the_others():
    state = Checked(workers=[1, 2], slots=1)
    state.handle(submit("x"), submit("y"), submit("z"))  # z waits for a free slot
    assert state.handle(submit("s", "x", "z")) == []  # z is not sent yet
    out = state.handle(TaskFinished("x", 1, 10))
    assert out == [ResolveFuture("x", "memory"), Dispatch(1, "z", "spec-z", ()),
                   Dispatch(1, "s", "spec-s", (("x", 1), ("z", 1)))]


class CountingTasks(dict):
    looks = 0

    def __getitem__(self, key):
        CountingTasks.looks += 1
        return super().__getitem__(key)

    def get(self, key, default=None):
        CountingTasks.looks += 1
        return super().get(key, default)


def test_a_wide_fan_in_is_not_looked_over_again_as_each_input_is_sent():
    # Each input sent makes the fan-in a candidate to be sent early; looking at all of its
    # inputs each time took time quadratic in their number (2,000 inputs: 27 ms more).
    n = 2000
    state = SchedulerState(workers=[1, 2], slots=64)
    state.tasks, CountingTasks.looks = CountingTasks(), 0
    sent = state.handle(*(submit(f"k{i}") for i in range(n)),
                        submit("sum", *(f"k{i}" for i in range(n))))
    while sent:
        done = [TaskFinished(c.key, c.worker, 8, c.attempt) for c in sent]
        sent = [c for i in range(0, len(done), 8) for c in state.handle(*done[i:i + 8])
                if isinstance(c, Dispatch)]
    assert state.status("sum") == "memory"
    assert CountingTasks.looks < 20 * n


@pytest.mark.parametrize("how", ["fail", "cancel"])
def test_inputs_of_a_wide_fan_in_ending_one_by_one_do_not_each_walk_all_of_its_inputs(how):
    # Each input failing (or cancelled) went through the fan-in, ended already, and over all
    # its inputs again: 10,000 inputs took 42 s.
    n = 2000
    state = SchedulerState(workers=[1, 2], slots=64)
    sent = state.handle(*(submit(f"k{i}") for i in range(n)),
                        submit("sum", *(f"k{i}" for i in range(n))))
    state.tasks, CountingTasks.looks = CountingTasks(state.tasks), 0
    while sent and how == "fail":
        ends = [TaskFailed(c.key, c.worker, "boom", c.attempt) for c in sent]
        sent = [c for e in ends for c in state.handle(e) if isinstance(c, Dispatch)]
    for i in range(n if how == "cancel" else 0):  # queued ones too, each on its own
        state.handle(CancelRequested((f"k{i}",), "s"))
    assert state.status("sum") == ("erred" if how == "fail" else "cancelled")
    assert {state.status(f"k{i}") for i in range(n)} == {"erred" if how == "fail"
                                                          else "cancelled"}
    assert CountingTasks.looks < 50 * n


@pytest.mark.parametrize("how", ["one failure", "releases"])
def test_an_input_shared_by_many_ended_dependents_is_not_looked_over_for_each(how):
    # x = slow() (let go), keeper = g(x) (held), d_i = add(x, z_i): when the z's fail, x is
    # left wanted by the keeper and by d's kept for their retry. Asking whether x was wanted
    # only for retries went over all of x's dependents once per ended d (one failure of a
    # shared z: 8,000 d's took 6 s) or per d let go (releases: 8,000 took 3 s).
    n = 2000
    state = SchedulerState(workers=[1, 2], slots=10**9)
    zs = ["z"] * n if how == "one failure" else [f"z{i}" for i in range(n)]
    state.handle(submit("x"), submit("keeper", "x"), *(submit(z) for z in set(zs)))
    state.handle(*(submit(f"d{i}", "x", z) for i, z in enumerate(zs)))
    state.handle(FutureReleased("x"), *(FutureReleased(z) for z in set(zs)))
    if how == "releases":
        for z in zs:
            state.handle(TaskFailed(z, state.tasks[z].worker, "err", state.tasks[z].attempt))
    state.tasks, CountingTasks.looks = CountingTasks(state.tasks), 0
    if how == "one failure":
        state.handle(TaskFailed("z", state.tasks["z"].worker, "err", state.tasks["z"].attempt))
    else:
        for i in range(n):
            state.handle(FutureReleased(f"d{i}"))
    assert state.status("x") == "processing"  # the keeper wants it
    assert CountingTasks.looks < 20 * n


def test_workers_hint_is_honoured_and_loose_hint_may_be_ignored(state):
    out = state.handle(submit("a", workers=(2,)), submit("b", workers=(2,)),
                       submit("c", workers=(2,)))
    assert [c.worker for c in out] == [2, 2, 2]
    out = state.handle(submit("d", workers=(2,), loose=True))
    assert out == [Dispatch(1, "d", "spec-d", ())]


def test_release_frees_data_once_no_client_and_no_dependent_needs_it(state):
    state.handle(submit("a"))
    state.handle(TaskFinished("a", 1, 8))
    state.handle(submit("b", "a"))
    assert state.handle(FutureReleased("a")) == []  # b still needs a
    out = state.handle(TaskFinished("b", 1, 8))
    assert out == [ResolveFuture("b", "memory"), FreeData(1, "a")]
    assert state.handle(FutureReleased("b")) == [FreeData(1, "b")]
    assert state.tasks == {}


def test_copies_fetched_by_a_worker_are_freed_too(state):
    state.handle(submit("a"), submit("b"))
    state.handle(TaskFinished("a", 1, 8), TaskFinished("b", 2, 8))
    state.handle(submit("c", "a", "b"))
    state.handle(ReplicaStored("b", 1), TaskFinished("c", 1, 8))
    assert state.who_has("b") == (1, 2)
    assert state.handle(FutureReleased("b")) == [FreeData(1, "b"), FreeData(2, "b")]
    assert state.handle(ReplicaStored("b", 2)) == [FreeData(2, "b")]  # too late: free it


def test_broadcast_copies_count_once_confirmed(state):
    assert state.handle(DataScattered("d", (1, 2), 100)) == []
    assert state.who_has("d") == (1,)
    assert state.handle(ReplicaStored("d", 2)) == []  # the first copy is not confirmed yet
    assert state.who_has("d") == (1, 2)
    assert state.handle(ReplicaStored("d", 1)) == [ResolveFuture("d", "memory")]


def test_scattered_data_is_done_once_its_worker_confirms_it(state):
    # Until then a peer's request for it could reach that worker before the data does.
    assert state.handle(DataScattered("d", (1,), 100)) == []
    assert state.who_has("d") == (1,)  # fetches from rank 0 queue behind the data
    assert state.handle(ReplicaStored("d", 1)) == [ResolveFuture("d", "memory")]
    assert not state.awaiting_workers()


def test_scatter_numbers_keep_an_earlier_scatter_from_touching_a_later_one(state):
    state.raw(DataScattered("d", (1,), 100, copy=3), ReplicaStored("d", 1, 3))
    assert state.raw(FutureReleased("d")) == [FreeData(1, "d", 3)]  # spares newer copies
    state.raw(DataScattered("d", (2, 1), 100, copy=5))  # the same data again, forwarded
    # rank 1's late confirmation of the earlier copy: not a holder of this one; that copy goes
    assert state.raw(ReplicaStored("d", 1, 3)) == [FreeData(1, "d", 3)]
    assert state.who_has("d") == (2,)
    assert state.raw(ReplicaStored("d", 2, 5), ReplicaStored("d", 1, 5)) == [
        ResolveFuture("d", "memory")]
    assert state.who_has("d") == (1, 2)


def test_a_stale_attempt_never_frees_the_current_copy(state):
    first = state.raw(submit("k", workers=(1,)))[0].attempt
    state.handle(CancelRequested(("k",)))
    second = state.raw(submit("k", workers=(1,)))[0].attempt  # the same key, sent again
    assert first != second
    assert state.raw(TaskFinished("k", 1, 8, first)) == []
    assert state.raw(TaskFinished("k", 1, 8, second)) == [ResolveFuture("k", "memory")]
    assert state.raw(TaskFinished("k", 1, 8, first)) == []   # this worker holds the key
    assert state.raw(TaskFinished("k", 2, 8, first)) == [FreeData(2, "k", first)]
    assert state.raw(TaskFailed("k", 1, "late", first)) == []


def test_releasing_a_pending_task_cancels_it_on_its_worker(state):
    state.handle(submit("a"))
    assert state.handle(FutureReleased("a")) == [CancelTask(1, "a")]
    assert state.handle(TaskFinished("a", 1, 8)) == [FreeData(1, "a")]


def test_a_failure_fans_out_to_every_dependent(state):
    state.handle(submit("a"), submit("x"))
    state.handle(submit("b", "a"), submit("c", "b", "x"))
    out = state.handle(TaskFailed("a", 1, "err"))
    assert out == [ResolveFuture("a", "erred", "err"), CancelTask(1, "b"),
                   ResolveFuture("b", "erred", "err"), ResolveFuture("c", "erred", "err")]
    assert state.status("c") == "erred"
    assert state.handle(submit("d", "c")) == [ResolveFuture("d", "erred", "err")]


def test_retries_rerun_on_the_same_worker_then_fail(state):
    state.handle(submit("a", retries=1))
    assert state.handle(TaskFailed("a", 1, "e1")) == [Dispatch(1, "a", "spec-a", ())]
    assert state.handle(TaskFailed("a", 1, "e2")) == [ResolveFuture("a", "erred", "e2")]
    assert state.failed == 1
    assert state.handle(RetryRequested("a")) == [Dispatch(1, "a", "spec-a", ())]
    assert state.handle(RetryRequested("a")) == []  # running again: nothing to answer


def test_retrying_a_task_reruns_the_failed_inputs_it_needs_first(state):
    state.handle(submit("a"), submit("b", "a"), submit("x"), submit("c", "b", "x"))
    state.handle(TaskFinished("x", state.tasks["x"].worker, 8))
    state.handle(TaskFailed("a", 1, "err"))  # b and c fail with a's error
    state.handle(TaskDropped("b", 1, 0))  # b, sent early to wait for a, leaves worker 1
    out = state.handle(RetryRequested("c"))
    # The futures of a and b are made pending before anything can resolve them; x, which
    # finished, is left as it is; c's own futures were reset by the client that asked.
    assert out[:2] == [ResetFutures("a"), ResetFutures("b")]
    assert [c.key for c in out[2:] if isinstance(c, Dispatch)] == ["a", "b"]  # b early
    assert state.handle(TaskFinished("a", 1, 8)) == [ResolveFuture("a", "memory")]
    out = state.handle(TaskFinished("b", 1, 8))  # c's inputs are ready: it runs now
    assert out[0] == ResolveFuture("b", "memory") and [c.key for c in out[1:]] == ["c"]
    assert state.handle(TaskFinished("c", out[1].worker, 8)) == [ResolveFuture("c", "memory")]


def test_retrying_a_task_reruns_the_dependents_that_failed_with_it_after_it(state):
    state.handle(submit("a"), submit("b", "a"), submit("c", "b"), submit("d", "b", "a"))
    state.handle(submit("x"), submit("y", "x"))  # another chain: not touched
    state.handle(TaskFailed("a", 1, "err"), TaskFailed("x", state.tasks["x"].worker, "e"))
    state.raw(*confirmed(state))  # the tasks sent early to wait have left their workers
    out = state.handle(RetryRequested("a"))
    reset = [c.key for c in out[:3] if isinstance(c, ResetFutures)]
    assert sorted(reset) == ["b", "c", "d"] and reset[0] == "b"  # each after its inputs
    assert sorted(c.key for c in out[3:] if isinstance(c, Dispatch)) == ["a", "b", "c", "d"]
    assert state.status("y") == "erred"
    for key in "abcd":
        state.handle(TaskFinished(key, 1, 8))
    assert {state.status(k) for k in "abcd"} == {"memory"}


def test_retrying_a_task_also_reruns_the_other_failed_inputs_of_what_failed_with_it(state):
    # d needs a and b, which failed on their own; x failed with b. Retrying a alone would
    # leave d to fail again with b's (now stale) error, and x with it.
    state.handle(submit("a"), submit("b"), submit("d", "a", "b"), submit("x", "b"))
    state.handle(submit("m"), submit("n", "m"))  # joined only through a computed task
    state.handle(TaskFinished("m", state.tasks["m"].worker, 8))
    state.handle(TaskFailed("a", state.tasks["a"].worker, "e-a"))
    state.handle(TaskFailed("b", state.tasks["b"].worker, "e-b"))
    state.handle(TaskFailed("n", state.tasks["n"].worker, "e-n"))
    assert state.status("d") == state.status("x") == "erred"
    out = state.handle(RetryRequested("a"))
    reset = [c.key for c in out if isinstance(c, ResetFutures)]
    assert sorted(reset) == ["b", "d", "x"]
    assert reset.index("b") < min(reset.index("d"), reset.index("x"))  # after its inputs
    assert state.status("n") == "erred"  # not linked through a failed task: left alone
    for key in "abdx":
        state.handle(TaskFinished(key, state.tasks[key].worker, 8))
    assert {state.status(k) for k in "abdx"} == {"memory"}


def test_an_input_still_computing_only_for_a_failed_task_is_cancelled_and_rerun_by_retry(
        state):
    # submit(add, submit(f), submit(g)) with only the sum's future kept: g fails while f runs
    state.handle(submit("f"), submit("g"), submit("s", "f", "g"))
    f = state.tasks["f"].worker
    state.handle(FutureReleased("f"), FutureReleased("g"))
    out = state.handle(TaskFailed("g", state.tasks["g"].worker, "err"))
    assert CancelTask(f, "f") in out  # nothing else wants f now
    assert state.status("f") == "cancelled" and state.status("s") == "erred"
    out = state.handle(RetryRequested("s"))  # f runs again too, not DataLostError
    assert sorted(c.key for c in out if isinstance(c, Dispatch)) == ["f", "g"]
    for key in "fgs":
        state.handle(TaskFinished(key, state.tasks[key].worker, 8))
    assert state.status("s") == "memory" and set(state.tasks) == {"s"}


def test_an_input_wanted_elsewhere_runs_on_and_its_data_is_not_kept_for_the_failed_task(
        state):
    state.handle(submit("f"), submit("g"), submit("s", "f", "g"))
    state.handle(TaskFailed("g", state.tasks["g"].worker, "err"))
    assert state.status("f") == "processing"  # its future is held: it runs on
    f = state.tasks["f"].worker
    state.handle(TaskFinished("f", f, 8))
    assert state.handle(FutureReleased("f")) == [FreeData(f, "f")]
    out = state.handle(RetryRequested("s"))
    assert "'f' of task 's' was already released" in str(
        next(c.error for c in out if isinstance(c, ResolveFuture) and c.key == "s"))


def test_releasing_an_input_that_only_failed_tasks_wait_for_cancels_it(state):
    state.handle(submit("f"), submit("g"), submit("s", "f", "g"))
    state.handle(TaskFailed("g", state.tasks["g"].worker, "err"))
    f = state.tasks["f"].worker
    assert state.handle(FutureReleased("f")) == [CancelTask(f, "f")]
    assert state.status("f") == "cancelled"  # kept for a retry of s
    assert state.handle(FutureReleased("s"), FutureReleased("g")) == []
    assert not state.tasks


def test_an_input_left_wanted_only_by_a_failed_task_when_its_other_dependent_goes_is_cancelled(
        state):
    # y = f(); s = add(y, w); e = g(y); only e's and s's futures kept; w fails, then e is let go
    state.handle(submit("y"), submit("w"), submit("s", "y", "w"), submit("e", "y"))
    y = state.tasks["y"].worker
    state.handle(FutureReleased("y"), FutureReleased("w"))
    state.handle(TaskFailed("w", state.tasks["w"].worker, "err"))
    assert state.status("y") == "processing"  # e still wants it
    out = state.handle(FutureReleased("e"))
    assert CancelTask(y, "y") in out  # it ran on for nothing, before
    assert state.status("y") == "cancelled"  # kept for a retry of s
    out = state.handle(RetryRequested("s"))  # y runs again too (s may be sent early)
    assert {"w", "y"} <= {c.key for c in out if isinstance(c, Dispatch)}
    for key in "wys":
        state.handle(TaskFinished(key, state.tasks[key].worker, 8))
    assert state.status("s") == "memory" and set(state.tasks) == {"s"}


def test_an_input_failing_after_its_dependent_ended_is_rerun_by_a_retry_of_either(state):
    state.handle(submit("a"), submit("b"), submit("d", "a", "b"))
    state.handle(TaskFailed("b", state.tasks["b"].worker, "e-b"))  # d ends first, with b
    state.handle(TaskFailed("a", state.tasks["a"].worker, "e-a"))
    out = state.handle(RetryRequested("a"))
    assert sorted(c.key for c in out if isinstance(c, ResetFutures)) == ["b", "d"]


def test_a_retried_chain_reruns_the_rest_when_one_task_of_it_lost_an_input(state):
    state.handle(submit("m"))
    state.handle(TaskFinished("m", state.tasks["m"].worker, 8))
    state.handle(submit("a"), submit("t", "a", "m"), submit("d", "a"))
    state.handle(FutureReleased("m"), FutureReleased("a"))
    state.handle(TaskFailed("a", state.tasks["a"].worker, "err"))  # m is freed: t ran not
    state.handle(RetryRequested("t"))
    assert "'m' of task 't' was already released" in str(state.tasks["t"].error)
    assert state.status("a") == "processing"  # d still wants it: not cancelled with t
    state.handle(TaskFinished("a", state.tasks["a"].worker, 8))
    state.handle(TaskFinished("d", state.tasks["d"].worker, 8))
    assert state.status("d") == "memory"


def test_a_failed_input_stays_for_its_failed_dependents_even_once_its_futures_are_gone(state):
    state.handle(submit("a"), submit("b", "a"), submit("c", "b"))
    state.handle(FutureReleased("a"), FutureReleased("b"))  # as submit(f, submit(g, ...))
    state.handle(TaskFailed("a", 1, "err"))
    state.raw(*confirmed(state))
    assert state.status("a") == state.status("b") == "erred"  # c may be retried
    out = state.handle(RetryRequested("c"))
    assert out[:2] == [ResetFutures("a"), ResetFutures("b")]
    for key in "abc":
        state.handle(TaskFinished(key, 1, 8))
    assert state.status("c") == "memory" and set(state.tasks) == {"c"}  # a and b freed
    assert state.handle(FutureReleased("c")) == [FreeData(1, "c")]


def test_a_task_submitted_after_its_input_failed_keeps_it_for_a_retry(state):
    # A chain submitted while its first task fails: the links made after the failure were
    # missing, so once the script held only the last future, the middle of the chain was
    # forgotten and retrying the last one failed on a "released" input.
    state.handle(submit("a"))
    state.handle(TaskFailed("a", 1, "err"))
    assert state.handle(submit("b", "a"), submit("c", "b")) == [
        ResolveFuture("b", "erred", "err"), ResolveFuture("c", "erred", "err")]
    state.handle(FutureReleased("a"), FutureReleased("b"))
    assert state.status("a") == state.status("b") == "erred"  # kept for c's retry
    out = state.handle(RetryRequested("c"))
    assert [c.key for c in out if isinstance(c, Dispatch)] == ["a", "b", "c"]  # b, c early
    for key in "abc":
        state.handle(TaskFinished(key, 1, 8))
    assert state.status("c") == "memory" and set(state.tasks) == {"c"}


def test_a_key_given_anew_that_only_failed_dependents_kept_runs_anew_and_lets_go(state):
    state.handle(submit("i"), submit("j", "i"), submit("k", "j"))
    state.handle(FutureReleased("i"), FutureReleased("j"))
    state.handle(TaskFailed("i", 1, "err"))  # k keeps j, j keeps i: k may be retried
    state.raw(*confirmed(state))
    out = state.handle(submit("j"))  # "j" given anew, with no inputs: a new computation
    assert out == [Dispatch(1, "j", "spec-j", ())]
    assert "i" not in state.tasks  # nothing needs the old j's failed input any more
    out = state.handle(RetryRequested("k"))  # takes the new "j"
    assert out == [Dispatch(1, "k", "spec-k", (("j", 1),))]


def test_a_failed_tasks_computed_inputs_are_freed_and_its_retry_then_says_so(state):
    state.handle(submit("x"))
    state.handle(TaskFinished("x", state.tasks["x"].worker, 8))
    state.handle(submit("a"), submit("c", "a", "x"), FutureReleased("x"))
    out = state.handle(TaskFailed("a", 1, "err"))
    assert out[-1] == FreeData(1, "x")  # its data is not kept for a retry of c
    out = state.handle(RetryRequested("c"))
    assert out[:2] == [ResetFutures("a"), ResolveFuture("c", "erred", out[1].error)]
    assert "'x' of task 'c' was already released" in str(out[1].error)


def test_a_cancelled_task_keeps_its_worker_busy_until_it_has_left():
    # A running task cannot be stopped: new work goes elsewhere until the worker says the
    # cancelled attempt has left it (it never ran, or its run ended).
    state = Checked(workers=[1, 2], slots=1)
    state.handle(submit("a"))
    assert state.handle(CancelRequested(("a",))) == [CancelTask(1, "a"),
                                                     ResolveFuture("a", "cancelled")]
    assert state.handle(submit("b")) == [Dispatch(2, "b", "spec-b", ())]
    assert state.handle(submit("c")) == []  # both slots taken
    assert state.handle(TaskDropped("a", 1, 0)) == [Dispatch(1, "c", "spec-c", ())]
    assert state.handle(TaskDropped("a", 1, 0)) == []  # counted once
    attempt = state.tasks["c"].attempt
    state.handle(FutureReleased("c"))  # released while sent: cancelled, slot still taken
    assert "c" not in state.tasks and state.handle(submit("d")) == []
    assert state.handle(TaskFinished("c", 1, 8, attempt)) == [  # it ended before the cancel
        FreeData(1, "c"), Dispatch(1, "d", "spec-d", ())]


def test_a_stalled_worker_gets_no_work_another_can_take_until_it_speaks_again():
    # Rank 0 marks a worker that owes tasks and has been quiet for long (mpifutures.stalls):
    # it runs something long, and tasks sent there would wait behind it.
    state = Checked(workers=[1, 2], slots=4)
    state.handle(submit("x", workers=(1,)))
    state.handle(TaskFinished("x", 1, 8), submit("long", workers=(1,)), WorkerStalled(1, True))
    out = state.handle(*(submit(k) for k in "abcd"))
    assert [(c.key, c.worker) for c in out] == [("a", 2), ("b", 2)]  # its share; c, d wait
    out = state.handle(TaskFinished("a", 2, 8))
    assert [(c.key, c.worker) for c in out if isinstance(c, Dispatch)] == [("c", 2)]
    # a task whose input is on the stalled worker goes to one that can take it, and fetches
    # (and each call hands worker 2 a share of what is queued: here d)
    assert state.handle(submit("f", "x")) == [Dispatch(2, "f", "spec-f", (("x", 1),)),
                                             Dispatch(2, "d", "spec-d", ())]
    state.handle(WorkerStalled(2, True))  # every worker stalled: placed by data again,
    assert state.handle(submit("g", "x")) == [Dispatch(1, "g", "spec-g", (("x", 1),))]
    assert state.handle(submit("h", workers=(1,))) == [Dispatch(1, "h", "spec-h", ())]
    assert state.handle(submit("i")) == []  # but the queue waits for a worker to speak
    out = state.handle(WorkerStalled(1, False), TaskFinished("long", 1, 8))
    assert [(c.key, c.worker) for c in out if isinstance(c, Dispatch)] == [("i", 1)]


def kinds(out):
    return [(type(c).__name__, getattr(c, "worker", None), c.key) for c in out]


def test_an_idle_worker_takes_half_of_what_a_stalled_one_can_give_back():
    state = Checked(workers=[1, 2], slots=8)
    state.handle(submit("x", workers=(1,)))
    state.handle(TaskFinished("x", 1, 8))
    state.handle(submit("long"), *(submit(k) for k in "abcd"))  # long, a, b on 1; c, d on 2
    state.handle(TaskFinished("c", 2, 8))
    state.handle(submit("p", workers=(1,)), submit("e", "x"),  # pinned; placed by its input
                 submit("f", "c", workers=(1,), loose=True),  # fetches c from worker 2
                 submit("s", workers=(1,), loose=True), submit("t", "s"))  # t sent early
    assert state.tasks["e"].worker == state.tasks["f"].worker == state.tasks["t"].worker == 1
    assert state.handle(WorkerStalled(1, True)) == []  # worker 2 is busy (d): nothing moves
    out = state.handle(TaskFinished("d", 2, 8))  # now it has an idle thread
    # Not p (pinned), f (moved, it would fetch c again) nor t (it waits for s); of s, e, b, a
    # and long, the newer half.
    assert kinds(out) == [("ResolveFuture", None, "d"), ("RecallTask", 1, "s"),
                          ("RecallTask", 1, "e"), ("RecallTask", 1, "b")]
    assert all(c.attempt == state.tasks[c.key].attempt for c in out[1:])
    assert state.handle(submit("u", "s")) == []  # not sent early to where s may not run
    # s is back: t, sent early to wait for it, is recalled now; s goes to worker 2, u after it
    assert kinds(state.handle(TaskDropped("s", 1, 0))) == [
        ("RecallTask", 1, "t"), ("Dispatch", 2, "s"), ("Dispatch", 2, "u")]
    assert state.handle(TaskDropped("t", 1, 0)) == [Dispatch(2, "t", "spec-t", (("s", 2),))]
    assert state.handle(TaskDropped("e", 1, 0)) == [Dispatch(2, "e", "spec-e", (("x", 1),))]
    state.handle(CancelRequested(("b",)))  # cancelled before its answer: the slot is freed once
    assert state.leaving == {("b", state.tasks["b"].attempt): 1}
    assert state.handle(*confirmed(state)) == [] and state.load == {1: 4, 2: 4}  # long a p f
    assert state.handle(TaskFinished("long", 1, 8)) == [ResolveFuture("long", "memory")]


def test_a_chain_sent_early_is_recalled_once_the_task_it_waits_for_is_back():
    def chained():
        state = Checked(workers=[1, 2], slots=8)
        state.handle(*(submit(k) for k in ("long", "a", "b", "c")))  # long, a on 1; b, c on 2
        state.handle(submit("d", "a"), submit("e", "d"),  # sent early to wait for a on 1
                     submit("f", "a", "b"))  # waits on rank 0: its inputs run on two workers
        assert [state.tasks[k].worker for k in "de"] == [1, 1] and state.tasks["f"].worker is None
        out = state.handle(TaskFinished("b", 2, 8), TaskFinished("c", 2, 8),
                           WorkerStalled(1, True))
        assert kinds(out)[2:] == [("RecallTask", 1, "a")]  # not d, e: they wait for a
        return state

    state = chained()  # a comes back, then what waits for it; it follows a
    out = state.handle(TaskDropped("a", 1, 0))
    assert sorted(kinds(out)) == [("Dispatch", 2, "a"), ("Dispatch", 2, "f"),
                                  ("RecallTask", 1, "d"), ("RecallTask", 1, "e")]
    assert state.handle(TaskDropped("e", 1, 0)) == []  # back to waiting for d
    assert state.handle(TaskDropped("d", 1, 0)) == [
        Dispatch(2, "d", "spec-d", (("a", 2),)), Dispatch(2, "e", "spec-e", (("d", 2),))]
    assert state.handle(TaskFinished("long", 1, 8)) == [ResolveFuture("long", "memory")]

    state = chained()  # a had started: it runs on 1, and its chain stays where it waits
    out = state.handle(TaskFinished("a", 1, 8))
    assert kinds(out) == [("ResolveFuture", None, "a"), ("Dispatch", 2, "f")]
    assert state.load == {1: 3, 2: 1}  # long, d, e

    state = chained()  # the chain grew while a's recall was out: its new pinned task
    assert kinds(state.handle(submit("p", "e", workers=(1,)))) == [("Dispatch", 1, "p")]
    out = state.handle(TaskDropped("a", 1, 0))  # comes back too, or it would wait for ever
    assert sorted(k for k in kinds(out) if k[0] == "RecallTask") == [
        ("RecallTask", 1, "d"), ("RecallTask", 1, "e"), ("RecallTask", 1, "p")]
    out = state.handle(*(TaskDropped(k, 1, 0) for k in "pde"))
    assert kinds(out) == [("Dispatch", 2, "d"), ("Dispatch", 2, "e")]  # p waits for e
    state.handle(TaskFinished("a", 2, 8), TaskFinished("d", 2, 8))
    assert state.handle(TaskFinished("e", 2, 8))[-1] == Dispatch(1, "p", "spec-p", (("e", 2),))


@pytest.mark.parametrize("pinned", [True, False])
def test_a_stalled_worker_with_nothing_to_give_back_is_not_looked_over_at_every_event(pinned):
    # 10,000 chained tasks sent early behind a long one: each round trip on the other
    # worker looked over all of them again (11.6 ms instead of 0.42 ms per round trip).
    n = 10_000
    state = Checked(workers=[1, 2], slots=64)
    state.handle(submit("long", workers=(1,) if pinned else None))
    state.handle(*(submit(f"c{i}", f"c{i - 1}" if i else "long") for i in range(n)))
    assert state.load == {1: n + 1, 2: 0}
    out = state.handle(WorkerStalled(1, True))
    assert kinds(out) == ([] if pinned else [("RecallTask", 1, "long")])  # it has started
    state.tasks, CountingTasks.looks = CountingTasks(state.tasks), 0
    unchecked = super(Checked, state).handle  # (the invariant check looks at every task)
    for i in range(100):  # quick tasks on worker 2
        (sent,) = unchecked(submit(f"q{i}"))
        unchecked(TaskFinished(sent.key, 2, 8, sent.attempt))
    assert CountingTasks.looks < 20 * 100 + 3 * n  # one look over them, not one per trip
    state.tasks = dict(state.tasks)
    state.handle(TaskFinished("long", 1, 8), WorkerStalled(1, False))
    assert state.barren == set() and state.status("c0") == "processing"


def test_a_task_whose_dependent_is_pinned_to_its_worker_stays():
    state = Checked(workers=[1, 2], slots=8)
    state.handle(*(submit(k) for k in ("long", "a", "b", "c")))  # long, a on 1; b, c on 2
    state.handle(submit("p", "a", workers=(1,)))  # sent early to wait for a; may not move
    state.handle(TaskFinished("b", 2, 8), TaskFinished("c", 2, 8))
    assert kinds(state.handle(WorkerStalled(1, True))) == [("RecallTask", 1, "long")]


def test_a_worker_that_runs_dry_takes_half_of_what_the_stalled_ones_hold_each_time():
    state = Checked(workers=[1, 2], slots=8)
    state.handle(submit("long1", workers=(1,)), submit("long2", workers=(2,)))
    state.handle(*(submit(k) for k in "abcd"))  # a, b behind long1; c, d behind long2
    assert state.handle(WorkerStalled(1, True), WorkerStalled(2, True)) == []  # nobody idle
    out = state.handle(WorkerStalled(1, False), TaskFinished("long1", 1, 8),
                       TaskFinished("a", 1, 8))
    assert "RecallTask" not in [k[0] for k in kinds(out)]  # b is still to run on 1
    assert kinds(state.handle(TaskFinished("b", 1, 8))) == [
        ("ResolveFuture", None, "b"), ("RecallTask", 2, "d")]
    assert state.handle(TaskDropped("d", 2, 0)) == [Dispatch(1, "d", "spec-d", ())]
    assert kinds(state.handle(TaskFinished("d", 1, 8))) == [
        ("ResolveFuture", None, "d"), ("RecallTask", 2, "c")]
    assert state.handle(TaskDropped("c", 2, 0)) == [Dispatch(1, "c", "spec-c", ())]
    assert kinds(state.handle(TaskFinished("c", 1, 8))) == [("ResolveFuture", None, "c")]


def test_a_worker_freed_by_cancels_takes_from_a_stalled_one():
    state = Checked(workers=[1, 2], slots=8)
    state.handle(submit("long", workers=(1,)), submit("slow", workers=(2,)))
    state.handle(*(submit(k) for k in "abcd"))  # a, b behind long; c, d behind slow
    assert state.handle(WorkerStalled(1, True), WorkerStalled(2, True)) == []  # nobody idle
    state.handle(CancelRequested(("slow", "c", "d")))
    assert state.handle(*confirmed(state)) == []  # they left worker 2: still marked stalled
    out = state.handle(WorkerStalled(2, False))  # (it owes fewer tasks than it has threads)
    assert kinds(out) == [("RecallTask", 1, "b")]


def test_a_task_that_has_fetched_its_input_may_move_to_an_idle_worker():
    # Fetching when its worker stalled, it stayed; once the copy was there nothing asked again
    state = Checked(workers=[1, 2], slots=8)
    state.handle(submit("x", workers=(2,)), submit("y", workers=(1,)))
    state.handle(TaskFinished("x", 2, 10), TaskFinished("y", 1, 10**6))
    state.handle(submit("long", workers=(1,)), submit("f", "x", "y"))  # f fetches x on 1
    assert state.tasks["f"].worker == 1
    assert state.handle(WorkerStalled(1, True)) == []
    assert kinds(state.handle(ReplicaStored("x", 1))) == [("RecallTask", 1, "f")]


def test_the_half_is_of_what_a_worker_with_an_idle_thread_may_take():
    # p and q may go only to 1 or 3, busy: recalling them left a and b behind the long task
    state = Checked(workers=[1, 2, 3], slots=8)
    state.handle(submit("long", workers=(1,)), *(submit(f"c{i}", workers=(3,)) for i in range(4)))
    state.handle(submit("a", workers=(1,), loose=True), submit("b", workers=(1,), loose=True),
                 submit("p", workers=(1, 3)), submit("q", workers=(1, 3)))
    assert kinds(state.handle(WorkerStalled(1, True))) == [("RecallTask", 1, "b")]


def test_one_idle_thread_takes_its_share_of_many_stalled_workers_not_half_of_each():
    # Eight workers stalled with 16 movable tasks each, one worker idle: half of each queue
    # (64 tasks) would pile up on the idle one. It takes its share, 1/9 of each (2, newest).
    def stalled_eight():
        state = Checked(workers=list(range(1, 10)), slots=32)
        for w in range(1, 9):
            state.handle(submit(f"long{w}", workers=(w,)),
                         *(submit(f"t{w}-{i}", workers=(w,), loose=True) for i in range(16)))
        return state

    state = stalled_eight()
    out = state.handle(*(WorkerStalled(w, True) for w in range(1, 9)))
    assert sorted(kinds(out)) == sorted(("RecallTask", w, f"t{w}-{i}")
                                        for w in range(1, 9) for i in (14, 15))
    # Stalling one by one, each recall counts the tasks already asked back from that worker:
    # 8, then 16/3 of the second's, ... (113 recalls when each took half of the rest)
    state = stalled_eight()
    counts = [len(state.handle(WorkerStalled(w, True))) for w in range(1, 9)]
    assert counts == [8, 6, 4, 4, 3, 3, 2, 2]
    out = state.handle(*(TaskDropped(k, t.worker, 0) for k, t in list(state.tasks.items())
                         if t.recalled))
    assert {c.worker for c in out} == {9} and len(out) == 32


def test_a_task_only_preferring_a_stalled_worker_goes_elsewhere():
    # allow_other_workers: a preference. Placed on the stalled worker, it waited there.
    state = Checked(workers=[1, 2], slots=2)
    state.handle(submit("long", workers=(1,)), submit("a", workers=(1,), loose=True))
    out = state.handle(WorkerStalled(1, True))
    assert [(c.worker, c.key) for c in out] == [(1, "a")]  # worker 1 was full: a may move
    assert state.handle(TaskDropped("a", 1, 0)) == [Dispatch(2, "a", "spec-a", ())]
    assert state.handle(submit("b", workers=(1,), loose=True)) == [Dispatch(2, "b", "spec-b", ())]


def test_the_first_stalled_worker_to_speak_takes_its_share_of_the_queue_not_all():
    state = Checked(workers=[1, 2], slots=64)
    state.handle(submit("long1"), submit("long2"))
    state.handle(WorkerStalled(1, True), WorkerStalled(2, True))
    assert state.handle(*(submit(f"t{i}") for i in range(12))) == []
    out = state.handle(WorkerStalled(1, False), TaskFinished("long1", 1, 8))
    assert [c.worker for c in out if isinstance(c, Dispatch)] == [1] * 6
    out = state.handle(WorkerStalled(2, False), TaskFinished("long2", 2, 8))
    assert [c.worker for c in out if isinstance(c, Dispatch)] == [2] * 6


def test_cancel_cascades_and_a_late_result_is_dropped(state):
    state.handle(submit("a"))
    state.handle(submit("b", "a"))
    out = state.handle(CancelRequested(("a",)))
    assert out == [CancelTask(1, "a"), ResolveFuture("a", "cancelled"),
                   CancelTask(1, "b"), ResolveFuture("b", "cancelled")]
    assert state.handle(TaskFinished("a", 1, 8)) == [FreeData(1, "a")]
    assert [key for key, _ in state.leaving] == ["b"]  # a's late end has freed its slot
    state.raw(*confirmed(state))
    out = state.handle(submit("a"))  # a new submit of a cancelled key runs it again
    assert out == [Dispatch(1, "a", "spec-a", ())]


def test_a_cancelled_key_submitted_again_runs_for_every_session_still_holding_it(state):
    state.handle(submit("k", client=1))
    state.handle(CancelRequested(("k",), 1))  # session 1 keeps its (cancelled) future
    state.handle(submit("k", client=2))  # runs anew; session 1 may retry and wait for it
    assert state.tasks["k"].worker == 2  # (worker 1 may still run the cancelled attempt)
    assert state.handle(RetryRequested("k"), FutureReleased("k", 2)) == []
    assert state.handle(TaskFinished("k", 2, 8)) == [ResolveFuture("k", "memory")]
    assert state.handle(FutureReleased("k", 1)) == [FreeData(2, "k")]


def test_a_failure_unlinks_every_ended_task_from_its_inputs(state):
    # Y is reached before X in the walk over F's dependents; X, unwanted, is forgotten then.
    state.handle(submit("F"), submit("B"))
    b, f = state.tasks["B"].worker, state.tasks["F"].worker
    state.handle(TaskFinished("B", b, 8))
    state.handle(submit("A", "F"), submit("X", "A", "B"), submit("Y", "X", "F"))
    state.handle(FutureReleased("X"))
    state.handle(TaskFailed("F", f, "boom"))  # Checked.handle checks the links after it
    assert state.handle(FutureReleased("B")) == [FreeData(b, "B")]


def test_letting_go_of_a_long_pending_chain_needs_no_deep_recursion(state):
    n = 3000  # each link was two nested calls: Python's limit is 1,000 frames
    state.handle(submit("k0"), *(submit(f"k{i}", f"k{i - 1}") for i in range(1, n)))
    state.handle(*(FutureReleased(f"k{i}") for i in range(n - 1)))
    out = state.handle(FutureReleased(f"k{n - 1}"))
    assert not state.tasks and sum(isinstance(c, CancelTask) for c in out) == n  # all sent


def test_a_whole_chain_submitted_at_once_goes_to_one_worker(state):
    out = state.handle(submit("a"), submit("b", "a"), submit("c", "b"))
    assert out == [Dispatch(1, "a", "spec-a", ()), Dispatch(1, "b", "spec-b", (("a", 1),)),
                   Dispatch(1, "c", "spec-c", (("b", 1),))]


def test_equal_keys_share_one_task(state):
    assert len(state.handle(submit("a"), submit("a", client=2))) == 1
    state.handle(TaskFinished("a", 1, 8))
    assert state.handle(submit("a", client=3)) == [ResolveFuture("a", "memory")]
    assert state.handle(FutureReleased("a"), FutureReleased("a", 2)) == []
    assert state.handle(FutureReleased("a", 3)) == [FreeData(1, "a")]


def test_fire_and_forget_runs_the_task_then_lets_it_go(state):
    state.handle(submit("a"), KeepRequested("a"))
    assert state.handle(FutureReleased("a")) == []
    assert state.handle(TaskFinished("a", 1, 8)) == [ResolveFuture("a", "memory"),
                                                    FreeData(1, "a")]
    assert state.tasks == {}


def test_a_released_input_fails_the_new_task_clearly(state):
    out = state.handle(submit("b", "gone"))
    assert len(out) == 1 and out[0].status == "erred"
    assert "already released" in str(out[0].error)


def test_awaiting_workers_while_a_task_runs_or_a_copy_is_unconfirmed(state):
    """Rank 0 may sleep long only when no worker owes it a message."""
    assert not state.awaiting_workers()
    state.handle(submit("a"))
    assert state.awaiting_workers()  # "a" runs on a worker
    state.handle(TaskFinished("a", 1, 8))
    assert not state.awaiting_workers()
    state.handle(DataScattered("d", (1, 2), 100))
    assert state.awaiting_workers()  # the copies are not confirmed yet
    state.handle(ReplicaStored("d", 2), ReplicaStored("d", 1))
    assert not state.awaiting_workers()


def test_a_stale_copy_is_freed_by_its_version_and_a_current_one_kept(state):
    # Worker 1 fetched "k" (version 1) for a task, "k" was then forgotten, submitted again and
    # sent to run on worker 1; the STORED of the old copy comes after that. Its FREE names
    # version 1, so it spares the new value (version 3) that worker 1 computes.
    old = state.raw(submit("k", client=1, workers=(2,)))[0].attempt
    state.raw(TaskFinished("k", 2, 8, old), FutureReleased("k", 1))
    new = state.raw(submit("k", client=1, workers=(1,)))[0].attempt
    assert new > old
    assert state.raw(ReplicaStored("k", 1, old)) == [FreeData(1, "k", old)]
    assert state.raw(TaskFinished("k", 1, 8, new)) == [ResolveFuture("k", "memory")]
    assert state.raw(ReplicaStored("k", 2, old)) == [FreeData(2, "k", old)]  # still stale
    assert state.who_has("k") == (1,)
    assert state.raw(ReplicaStored("k", 2, new)) == []  # a copy of the current value
    assert state.who_has("k") == (1, 2)
    assert state.raw(FutureReleased("k", 1)) == [FreeData(1, "k", new), FreeData(2, "k", new)]


def test_a_dispatch_names_the_version_of_each_input_it_needs(state):
    first = state.raw(submit("a"))[0].attempt
    state.raw(TaskFinished("a", 1, 8, first))
    out = state.raw(submit("b", "a"), submit("c", "b"))  # c goes early, behind b, on b's rank
    assert [c.deps for c in out] == [(("a", 1, first),), (("b", 1, out[0].attempt),)]
    state.raw(DataScattered("d", (2,), 8, copy=40), ReplicaStored("d", 2, 40))
    assert state.raw(submit("e", "d"))[0].deps == (("d", 2, 40),)


def test_only_an_accepted_finish_hands_its_small_value_to_the_futures(state):
    # Attempt 1 finished on its worker as it was cancelled; its report (with the value
    # inline) comes after the retry's attempt 2 ended: only attempt 2's value may reach rank 0.
    state.handle(submit("k", client=1))
    first = state.tasks["k"].attempt
    state.handle(CancelRequested(("k",), 1), RetryRequested("k"))
    assert state.handle(TaskFinished("k", 2, 8, value="second")) == [
        ResolveFuture("k", "memory", value="second")]
    # (worker 1 finished attempt 1 before the cancel came, and keeps its value: freed)
    assert state.handle(TaskFinished("k", 1, 8, first, value="first")) == [FreeData(1, "k")]


def test_a_retry_that_would_close_a_cycle_of_reused_keys_fails_instead(state):
    state.handle(submit("c"), CancelRequested(("c",)))
    state.handle(submit("d", "c"))  # ends cancelled with c
    state.handle(submit("c", "d"))  # a new computation under c's key, needing d
    assert state.status("c") == "cancelled" and state.status("d") == "cancelled"
    (resolved,) = state.handle(RetryRequested("c"))
    assert (resolved.key, resolved.status) == ("c", "erred")
    assert "would make 'c' wait for its own result" in str(resolved.error)
    assert state.status("c") == "erred" and state.status("d") == "cancelled"
    state.handle(FutureReleased("c"), FutureReleased("d"), *confirmed(state))
    assert state.tasks == {}  # nothing is left behind
