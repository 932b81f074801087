"""The invariants of :class:`~mpifutures.state.SchedulerState`, checked by the state and
interleaving tests after every step."""

from __future__ import annotations

from mpifutures.taskstate import ENDED


def check_invariants(state) -> None:
    """Raise AssertionError if ``state``'s bookkeeping is inconsistent."""
    loads = {w: 0 for w in state.workers}
    for worker in state.leaving.values():  # cancelled while sent, not yet left the worker
        loads[worker] += 1
    for task in state.tasks.values():
        if task.status == "processing":
            loads[task.worker] += 1
        for k in task.dependents:
            assert k in state.tasks, f"{task.key} lists forgotten dependent {k}"
            assert task.key in state.tasks[k].deps, f"{k} does not depend on {task.key}"
        if task.status == "memory":
            assert task.holders, f"{task.key} in memory without holders"
            for k in task.dependents:  # (one that ended keeps no computed input)
                assert state.tasks[k].status not in ENDED, f"{k} ended but keeps {task.key}"
        else:
            assert not task.holders, f"{task.key} ({task.status}) has holders"
        if task.status not in ENDED:
            for d in task.deps:
                assert d in state.tasks and task.key in state.tasks[d].dependents, \
                    f"{task.key} is not linked to its input {d}"
            missing = {d for d in task.deps if state.tasks[d].status != "memory"}
            assert task.waiting_on <= missing, f"{task.key} waits on computed inputs"
        else:
            assert not task.keep, f"{task.key} ended but is still kept"
        if task.status == "queued":
            assert any(k == task.key for *_, k in state.queue), f"{task.key} not queued"
        assert task.clients or task.keep or task.dependents, f"{task.key} is unwanted"
    assert loads == state.load, f"load {state.load} != counted {loads}"
    for w in state.barren:  # (the take-back check skips these: none may have become givable)
        assert not state.givable(w)[0], f"worker {w} said barren but has {state.givable(w)}"
    sent = {w: {k for k, t in state.tasks.items() if t.status == "processing" and t.worker == w}
            for w in state.workers}
    assert sent == {w: set(keys) for w, keys in state.sent.items()}, f"sent {state.sent}"
    assert state.stalled <= set(state.workers), f"stalled {state.stalled}"
    expected = {k for k, t in state.tasks.items() if t.expected}
    assert state.unconfirmed == expected, f"unconfirmed {state.unconfirmed} != {expected}"
