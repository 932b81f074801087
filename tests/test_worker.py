"""A worker's message handling, driven by hand on an in-process transport (no MPI, no threads:
the worker's loop and compute threads are not started)."""

from __future__ import annotations

import heapq
import time

from mpifutures import protocol as P
from mpifutures.config import Config
from mpifutures.serialize import dumps, dumps_args, functions
from mpifutures.transport import LocalFabric
from mpifutures.worker import Worker

from . import tasks


def run_msg(key, deps=(), attempt=1):
    token, fn_bytes = functions.dumps(abs)
    return (P.RUN, key, token, fn_bytes, dumps_args((-1,), {})[0], deps, 0, attempt)


def handled(worker, *messages):
    with worker.lock:
        for source, msg in messages:
            worker._handle(source, msg)
        return worker._take_outbox()


def test_a_copy_arriving_after_its_key_is_sent_to_run_here_anew_is_dropped():
    worker = Worker(LocalFabric(3).endpoints[1], Config())
    out = handled(worker, (0, run_msg("d", deps=(("k", 2, 1),))))
    assert (P.GET, "k", 1) in out[2]  # fetching the old "k" for "d"
    # "d" is cancelled, "k" forgotten, then computed again on this worker; the old copy, or
    # word that it is missing, arrives only now.
    out = handled(worker, (0, (P.CANCEL, ["d"])), (0, run_msg("k", attempt=2)),
                  (0, run_msg("e", deps=(("k", 1, 2),), attempt=3)),
                  (2, (P.DATA, "k", dumps("old"), 1)), (2, (P.MISSING, "k", "gone", 1)))
    assert "k" not in worker.store
    assert out[0] == [(P.DROPPED, "d", 1, False)]  # "d" never ran; no STORED of the old copy
    assert [t.key for t in worker.waiters["k"]] == ["e"]  # "e" waits for the new "k"
    assert set(worker.pending) == {"k", "e"}  # nobody failed


def test_a_new_attempt_drops_the_value_an_older_one_left():
    worker = Worker(LocalFabric(2).endpoints[1], Config())
    worker.store["k"], worker.payloads["k"] = "stale", dumps("stale")
    handled(worker, (0, run_msg("k", attempt=2)))
    assert "k" not in worker.store and "k" not in worker.payloads


def test_freeing_an_earlier_scatter_spares_a_later_copy_that_overtook_it():
    worker = Worker(LocalFabric(3).endpoints[2], Config())
    # Scatter 5 forwarded by rank 1 arrives before rank 0's FREE of scatter 3's copy.
    out = handled(worker, (1, (P.STORE, "d", dumps("new"), (), 5)),
                  (0, (P.FREE, [("d", 3)])))
    assert worker.store["d"] == "new" and out[0][-1] == (P.STORED, "d", 5)
    handled(worker, (0, (P.FREE, [("d", 5)])))  # its own FREE
    assert "d" not in worker.store and "d" not in worker.versions
    handled(worker, (0, (P.STORE, "d", dumps("x"), (), 6)), (0, (P.FREE, ["d"])))
    assert "d" not in worker.store  # a plain key: dropped whatever its number


def test_an_input_freed_here_while_its_task_waits_for_another_is_still_given_to_it():
    worker = Worker(LocalFabric(4).endpoints[1], Config())
    # "k" is in the store (a cancelled attempt's value, say) when "d" arrives: "d" takes it
    # and fetches "j"; the FREE of that "k" comes before "j" arrives.
    worker.store["k"], worker.versions["k"] = 5, 2
    out = handled(worker, (0, run_msg("d", deps=(("k", 2, 2), ("j", 3, 4)))),
                  (0, (P.FREE, ["k"])))
    assert out[3] == [(P.GET, "j", 4)]
    handled(worker, (3, (P.DATA, "j", dumps(7), 4)))
    (_, _, task), = worker.ready
    assert task.key == "d" and task.inputs == {"k": 5, "j": 7}


def test_a_stale_copy_here_is_not_an_input_the_version_named_is_fetched():
    worker = Worker(LocalFabric(3).endpoints[1], Config())
    # An old value of "k" (version 1: fetched before "k" was forgotten, its FREE not yet
    # here) when "d" arrives needing version 5 of "k", computed anew on rank 2.
    worker.store["k"], worker.versions["k"] = "old", 1
    out = handled(worker, (0, run_msg("d", deps=(("k", 2, 5),), attempt=6)))
    assert out[2] == [(P.GET, "k", 5)] and not worker.ready
    out = handled(worker, (0, (P.FREE, [("k", 1)])), (2, (P.DATA, "k", dumps("new"), 5)))
    assert out[0] == [(P.STORED, "k", 5)]
    (_, _, task), = worker.ready
    assert task.inputs == {"k": "new"} and worker.versions["k"] == 5
    handled(worker, (0, (P.FREE, [("k", 1)])))  # a late FREE of the old copy spares it
    assert worker.store["k"] == "new"


def test_an_owner_without_the_version_asked_for_says_it_is_missing():
    worker = Worker(LocalFabric(3).endpoints[1], Config())
    worker.store["k"], worker.versions["k"] = "old", 1
    out = handled(worker, (2, (P.GET, "k", 5)), (2, (P.GET, "k", 1)))
    (missing, *_, asked), (data, _, payload, version) = out[2]
    assert (missing, asked) == (P.MISSING, 5)
    assert (data, version) == (P.DATA, 1) and payload.header == dumps("old").header


def test_an_answer_to_a_fetch_of_an_older_version_is_dropped():
    worker = Worker(LocalFabric(4).endpoints[1], Config())
    handled(worker, (0, run_msg("d", deps=(("k", 2, 1),), attempt=2)), (0, (P.CANCEL, ["d"])))
    out = handled(worker, (0, run_msg("e", deps=(("k", 3, 5),), attempt=6)))
    assert out[3] == [(P.GET, "k", 5)]  # the older fetch is still out: it will not do
    out = handled(worker, (2, (P.DATA, "k", dumps("old"), 1)), (2, (P.MISSING, "k", "x", 1)))
    assert out == {} and "k" not in worker.store and not worker.ready
    handled(worker, (3, (P.DATA, "k", dumps("new"), 5)))
    (_, _, task), = worker.ready
    assert task.key == "e" and task.inputs == {"k": "new"}


def test_a_late_copy_of_an_older_scatter_leaves_the_newer_value_and_version():
    worker = Worker(LocalFabric(3).endpoints[2], Config())
    out = handled(worker, (1, (P.STORE, "d", dumps("new"), (), 5)),
                  (0, (P.STORE, "d", dumps("old"), (), 3)))
    assert worker.store["d"] == "new" and worker.versions["d"] == 5
    assert out[0][-1] == (P.STORED, "d", 3)  # confirmed all the same: rank 0 counts copies


def test_the_loop_skips_quick_polls_while_every_compute_thread_is_in_a_long_task():
    """Polling every 10 us after traffic pays when a reply is due at once; while the only
    compute thread runs a task that took long last time, it would take the task's CPU (its
    core, under srun's binding)."""
    worker = Worker(LocalFabric(2).endpoints[1], Config(threads_per_worker=1))
    worker.backoff.hot = 0.05  # tasks of 0.3 s are long; the test ends each hot phase itself
    token, fn_bytes = functions.dumps(tasks.sleep)
    worker.threads[0].start()
    deadline = time.monotonic() + 20

    def hot_while_it_runs(key, attempt):
        handled(worker, (0, (P.RUN, key, token, fn_bytes, dumps_args((0.3,), {})[0], (), 0,
                             attempt)))
        while worker.ready and time.monotonic() < deadline:  # until the thread takes it
            time.sleep(0.001)
        time.sleep(0.02)
        worker.backoff.reset()
        worker.answer_due = True  # as after a task's end: rank 0 may answer at once
        worker.backoff.hot = 60.0  # only the flag can end this hot phase
        for _ in range(5):
            worker._turn()
        hot = worker.backoff._delay <= 1e-5 * 1.01
        worker.backoff.hot = 0.05
        while key in worker.pending and time.monotonic() < deadline:
            time.sleep(0.01)
        assert key not in worker.pending
        return hot

    try:
        assert hot_while_it_runs("first", 1)  # how long it takes is not known yet
        assert not hot_while_it_runs("second", 2)  # known now: 0.3 s, longer than 0.05
        assert worker.long_tasks == 0
    finally:
        worker.running = False
        with worker.ready_cond:
            worker.ready_cond.notify_all()
        worker.threads[0].join(10)


def test_the_loop_polls_quickly_only_while_an_answer_may_be_due():
    """Quick polls pay after a task's end went to rank 0 (which may send the next task at
    once) until rank 0 speaks, and while inputs are on their way. An idle worker polled every
    10 us for 2 ms after any message all the same, a free included."""
    fabric = LocalFabric(3)
    worker = Worker(fabric.endpoints[1], Config(threads_per_worker=1))
    rank0 = fabric.endpoints[0]

    def hot(*messages):
        for msg in messages:
            rank0.send(1, [msg])
        worker.backoff.reset()
        worker.backoff.hot = 60.0  # only the flags decide
        for _ in range(5):
            worker._turn()
        return worker.backoff._delay <= 1e-5 * 1.01

    assert not hot()  # (its HELLO asks for no task)
    assert not hot(run_msg("a"))  # queued: no compute thread runs here
    assert hot((P.CANCEL, ["a"]))  # "a" left (DROPPED): rank 0 may send another task
    assert hot((P.FREE, ["x"]))  # a free is no answer
    assert not hot((P.CANCEL, ["y"]))  # rank 0 spoke: nothing is due any more
    assert hot(run_msg("d", deps=(("k", 2, 1),)))  # "k" is being fetched from rank 2
    fabric.endpoints[2].send(1, [(P.DATA, "k", dumps(-3), 1)])
    assert not hot()  # "k" is here ("d" waits for a compute thread)
    worker.store["r"], worker.versions["r"] = "result", 1
    assert hot((P.GET, "r", 1))  # rank 0 fetched a result: its next task may follow at once
    worker.answer_due = False
    worker.backoff._delay = 0.001
    rank0.send(1, [(P.FREE, ["x"])])
    worker.backoff.wake.wait(0.001)  # (set by the in-process fabric's send; MPI sets none)
    worker._turn()
    assert worker.backoff._delay == 0.001  # a free is no traffic: sleeps stay as long
    assert [m[0] for _, msgs in rank0.poll() for m in msgs] == [
        P.HELLO, P.DROPPED, P.STORED, P.DATA]


def test_a_cancelled_task_reports_once_that_it_has_left_the_worker():
    # Rank 0 keeps the worker's slot taken until then: a running task cannot be stopped.
    worker = Worker(LocalFabric(2).endpoints[1], Config())
    handled(worker, (0, run_msg("a")), (0, run_msg("b", attempt=2)), (0, run_msg("c", attempt=3)))
    taken = heapq.heappop(worker.ready)[2]  # a compute thread takes "a" (as _compute does)
    taken.taken = True
    out = handled(worker, (0, (P.CANCEL, ["a", "b"])))
    assert out[0] == [(P.DROPPED, "b", 2, False)]  # "b" never ran; "a" is the thread's to report
    worker._run_task(taken)  # the thread finds "a" cancelled: it does not run it
    assert handled(worker)[0] == [(P.DROPPED, "a", 1, True)]
    skipped = heapq.heappop(worker.ready)[2]  # "b", left in the heap (no search per cancel)
    worker._run_task(skipped)
    assert skipped.key == "b" and handled(worker) == {}  # reported once, at the cancel
    running = heapq.heappop(worker.ready)[2]  # "c" is cancelled while it runs
    running.taken = True
    assert handled(worker, (0, (P.CANCEL, ["c"]))) == {}
    with worker.lock:
        worker._finish(running, True, 1, dumps(1), (0.0, 0.0), 0.0)
    assert handled(worker)[0] == [(P.DROPPED, "c", 3, True)] and "c" not in worker.store
    assert handled(worker, (0, (P.CANCEL, ["c"]))) == {}  # gone: nothing more to say


def test_a_broken_finish_of_an_old_attempt_leaves_the_newer_one_pending():
    worker = Worker(LocalFabric(2).endpoints[1], Config())
    handled(worker, (0, run_msg("k", attempt=1)))
    old = heapq.heappop(worker.ready)[2]
    old.taken = True
    handled(worker, (0, run_msg("k", attempt=2)))  # a retry replaced it meanwhile
    worker._report_broken_finish(old, RuntimeError("recording failed on purpose"))
    out = handled(worker)
    assert [m[:3] for m in out[0]] == [(P.FAILED, "k", 1)]  # the old attempt's end, stale
    assert worker.pending["k"].attempt == 2  # the new one still runs and reports


def test_a_recalled_task_is_given_back_unless_a_compute_thread_has_taken_it():
    # Rank 0 recalls what it sent to a worker it found stalled (mpifutures.stalls).
    worker = Worker(LocalFabric(3).endpoints[1], Config())
    handled(worker, (0, run_msg("a")), (0, run_msg("b", attempt=2)),
            (0, run_msg("w", deps=(("k", 2, 1),), attempt=3)))
    taken = heapq.heappop(worker.ready)[2]  # a compute thread takes "a"
    taken.taken = True
    out = handled(worker, (0, (P.RECALL, [("a", 1), ("b", 2), ("w", 3), ("gone", 9)])))
    assert out[0] == [(P.DROPPED, "b", 2, False), (P.DROPPED, "w", 3, False)]
    assert set(worker.pending) == {"a"} and "k" not in worker.waiters
    handled(worker, (2, (P.DATA, "k", dumps(5), 1)))  # "w"'s input arrives all the same
    assert [t.key for _, _, t in worker.ready] == ["b"]  # (left in the heap, skipped)
    worker._run_task(heapq.heappop(worker.ready)[2])
    assert handled(worker) == {}  # "b" does not run, and was reported once
    worker._run_task(taken)  # "a" runs and reports as usual
    assert [m[:3] for m in handled(worker)[0]] == [(P.DONE, "a", 1)]
    # An attempt other than the one recalled (a retry sent here since) stays.
    handled(worker, (0, run_msg("c", attempt=7)))
    assert handled(worker, (0, (P.RECALL, [("c", 6)]))) == {} and "c" in worker.pending
