"""Races and leaks found in review, each pinned by a test. Part of the behaviour suite."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import gc
import threading
import os
import time

import numpy as np
import pytest

from mpifutures import DataLostError, Executor
from tests import tasks


@contextlib.contextmanager
def cycle_collector_off():
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def held_anywhere(executor, keys):
    return set().union(*executor.run(tasks.stored_keys).values()) & set(keys)


def test_cancel_then_resubmit_the_same_key_runs_it_again(executor):
    rank = list(executor.workers)[0]
    executor.submit(tasks.sleep, 0.3, workers=[rank], pure=False)
    first = executor.submit(tasks.slow_inc, 1, 0.05, workers=[rank])
    first.cancel()
    again = executor.submit(tasks.slow_inc, 1, 0.05, workers=[rank])
    assert again.key == first.key
    assert again.result(10) == 2 and first.cancelled()


def test_release_then_garbage_collection_releases_once(executor):
    a = executor.submit(tasks.big, 1000)
    b = executor.submit(tasks.big, 1000)
    a.result(10)
    a.release()
    del a
    gc.collect()
    time.sleep(0.1)
    assert executor.submit(tasks.array_sum, b, pure=False).result(10) == 1000.0


def test_a_failed_map_releases_nothing_it_did_not_claim(executor):
    a = executor.submit(tasks.big, 500)
    a.result(10)
    with pytest.raises(TypeError):
        executor.map(tasks.big, [500, threading.Lock()])
    gc.collect()
    time.sleep(0.1)
    assert executor.submit(tasks.array_sum, a, pure=False).result(10) == 500.0


def test_scatter_drop_and_scatter_the_same_value_again(executor):
    data = np.arange(1000.0)
    x = executor.scatter(data)
    assert executor.submit(tasks.array_sum, x, pure=False).result(10) == data.sum()
    del x
    y = executor.scatter(data)
    assert executor.submit(tasks.array_sum, y, pure=False).result(10) == data.sum()


def test_dropped_broadcasts_and_fetched_copies_leave_every_worker(executor):
    keys = []
    for _ in range(3):
        b = executor.scatter(np.ones(10_000), broadcast=True, hash=False)
        keys.append(b.key)
        del b
    ranks = list(executor.workers)
    x = executor.submit(tasks.big, 100, workers=[ranks[0]], pure=False)
    bad = executor.submit(tasks.fail, x, workers=[ranks[-1]], pure=False)
    bad.exception(10)
    keys += [x.key, bad.key]
    del x, bad
    gc.collect()
    assert wait_until(lambda: not held_anywhere(executor, keys)), held_anywhere(executor, keys)


def test_an_exception_whose_str_raises_fails_only_its_task(executor):
    f = executor.submit(tasks.raise_bad_str, pure=False)
    assert f.exception(10) is not None
    assert executor.submit(tasks.inc, 1, pure=False).result(10) == 2


def test_releasing_a_pending_future_ends_its_wait(executor):
    f = executor.submit(tasks.sleep, 0.5, pure=False)
    f.release()
    with pytest.raises(DataLostError, match="released"):
        f.result(5)


def test_fire_and_forget_results_are_freed_after_they_ran(executor):
    f = executor.submit(tasks.big, 100, pure=False)
    key = f.key
    executor.fire_and_forget(f)
    del f
    gc.collect()
    # The scheduler keeps the task until it ran, then forgets it; then no worker holds it.
    assert wait_until(lambda: executor._cluster.query(lambda s: s.state.status(key)) is None)
    assert executor.statistics()["tasks_completed"] > 0
    assert wait_until(lambda: not held_anywhere(executor, [key]))


def test_closed_sessions_leave_no_records_behind(cluster):
    before = len(cluster.registry.records)
    for _ in range(3):
        with Executor(cluster=cluster) as ex:
            ex.submit(tasks.big, 100_000, pure=False).result(10)
    gc.collect()
    time.sleep(0.2)
    ex = Executor(cluster=cluster)
    ex.statistics()  # one round trip: the scheduler has handled the closes
    assert len(cluster.registry.records) <= before
    ex.shutdown()


def test_a_run_function_waiting_on_a_task_does_not_stop_the_worker(executor, tmp_path):
    """Functions given to run() execute on the worker's loop; compute threads must still be
    able to finish a task and start the next one meanwhile (they share the worker's lock)."""
    rank = list(executor.workers)[0]
    path = str(tmp_path / "flag")
    first = executor.submit(tasks.sleep, 0.3, workers=[rank], pure=False)  # kept: it must run
    done = executor.submit(tasks.touch, path, workers=[rank], pure=False)
    assert executor.run(tasks.wait_for_path_on, path, rank, 20.0)[rank] is True
    assert first.result(timeout=20) == 0.3 and done.result(timeout=20) == path


def test_a_failure_while_recording_a_finished_task_fails_it_and_the_worker_goes_on(executor):
    """A bug in the worker's bookkeeping after a task ran must reach the client as that
    task's error, and the compute thread must survive it."""
    executor.run(tasks.break_finish_for, "identity-broken")
    try:
        bad = executor.submit(tasks.identity, 1, key="identity-broken-1")
        with pytest.raises(Exception, match="could not record the end of task"):
            bad.result(timeout=20)
        for rank in executor.workers:  # every worker still runs tasks
            assert executor.submit(tasks.inc, 41, workers=[rank], pure=False).result(20) == 42
    finally:
        executor.run(tasks.restore_finish)


def test_a_fetch_that_cannot_be_posted_fails_every_call_without_waiting():
    from mpifutures.errors import ExecutorClosedError
    from mpifutures.future import KeyRecord

    def gone(record):
        raise ExecutorClosedError("the mpifutures cluster is gone")

    record = KeyRecord("k")
    for _ in range(2):  # the second call once waited for an answer nobody would send
        with pytest.raises(ExecutorClosedError):
            record.get(gone, timeout=None)


def test_scattered_data_that_exits_while_unpickled_fails_its_tasks_not_the_worker(executor):
    rank = list(executor.workers)[0]
    bad = executor.scatter(tasks.ExitsOnWorker(), workers=[rank])
    with pytest.raises(Exception, match="unpickled on a worker"):
        executor.submit(tasks.identity, bad, workers=[rank], pure=False).result(30)
    assert executor.submit(tasks.inc, 1, workers=[rank], pure=False).result(30) == 2
    # rank 0 gets the data as it was scattered (it can unpickle it), not "not held"
    assert isinstance(bad.result(30), tasks.ExitsOnWorker)


def test_a_key_reused_after_its_futures_died_names_the_new_computation(executor):
    # Once no future of a key is left, the value rank 0 held for them is not the new task's.
    assert [executor.submit(tasks.identity, i, key="step").result(30) for i in range(4)] \
        == [0, 1, 2, 3]
    first = executor.submit(tasks.identity, "A", key="r")
    assert first.result(30) == "A"
    first.release()
    second = executor.submit(tasks.identity, "B", key="r")
    assert second.result(30) == "B"
    assert executor.submit(tasks.identity, second, pure=False).result(30) == "B"


@pytest.mark.parametrize("how", ["spmd", "Executor"])
def test_a_task_starting_mpifutures_gets_a_clear_error(executor, how):
    # spmd() inside a task once called a collective from a worker's thread: a hang, then a crash
    with pytest.raises(RuntimeError, match="cannot be used inside a task"):
        executor.submit(tasks.start_a_cluster, how, pure=False).result(30)
    assert executor.submit(tasks.inc, 1, pure=False).result(30) == 2


def test_a_map_that_fails_part_way_leaves_nothing_for_shutdown_to_wait_for(cluster):
    ex = Executor(cluster=cluster)
    errors = []  # kept, as a REPL or a log handler keeps them
    for call in (lambda: ex.map(tasks.identity, [1, threading.Lock()]),
                 lambda: ex.map(tasks.identity, [1, 2, 3], key=["a1", "a2"]),
                 lambda: ex.map(tasks.identity, [1, 2], key=["ok", 2])):
        with pytest.raises((TypeError, ValueError)) as info:
            call()
        errors.append(info.value)
    with pytest.raises(ValueError, match="same key twice"):
        ex.map(tasks.identity, [1, 2, 3], key=["d", "d", "e"])
    with pytest.raises(TypeError, match="key must be a str"):
        ex.map(tasks.identity, [1], key=5)
    done = threading.Event()
    threading.Thread(target=lambda: (ex.shutdown(), done.set()), daemon=True).start()
    assert done.wait(20), "shutdown waited for futures that were never submitted"


def test_futures_where_they_cannot_go_are_refused_at_the_call(cluster, executor):
    f = executor.submit(tasks.inc, 1, pure=False)
    with pytest.raises(TypeError, match="cannot be pickled on its own"):
        executor.scatter([f, 1])  # once accepted, then broke every task reading it
    other = Executor(cluster=cluster)
    try:
        for call in (other.cancel, other.fire_and_forget, other.who_has):
            with pytest.raises(ValueError, match="another executor"):
                call([f])
            with pytest.raises(TypeError, match="takes futures"):
                call([1])
    finally:
        other.shutdown()
    assert f.result(30) == 2  # the other executor's cancel did not touch it
    objects = np.empty(2, dtype=object)
    objects[0], objects[1] = f, 5
    got = executor.submit(tasks.identity, objects, pure=False).result(30)
    assert list(got) == [2, 5]  # a future inside an object array is an input like any other


def test_programs_a_task_starts_can_be_terminated(executor):
    # Workers once set SIGTERM to SIG_IGN, which every program a task started inherited.
    assert executor.submit(tasks.terminate_a_child, pure=False).result(60) == -15


def test_a_blocked_done_callback_does_not_hold_up_as_completed_progress_or_await(executor):
    import asyncio
    import io

    import mpifutures

    started, release = threading.Event(), threading.Event()

    def checkpoint(_):
        started.set()
        release.wait(60)

    executor.submit(tasks.inc, 0, pure=False).add_done_callback(checkpoint)
    try:
        assert started.wait(10)  # the callback thread is now busy with it
        f = executor.submit(tasks.inc, 1, pure=False)
        assert list(mpifutures.as_completed([f], timeout=10)) == [f]
        g = executor.submit(tasks.inc, 2, pure=False)
        shown = threading.Thread(target=mpifutures.progress, args=([g],),
                                 kwargs={"file": io.StringIO(), "interval": 0.05}, daemon=True)
        shown.start()
        shown.join(10)
        assert not shown.is_alive(), "progress() waited for an unrelated done-callback"

        async def main():
            return await executor.submit(tasks.inc, 3, pure=False)

        assert asyncio.run(asyncio.wait_for(main(), 10)) == 4
    finally:
        release.set()


def test_awaiting_a_future_whose_coroutine_is_cancelled_cancels_the_task(executor):
    import asyncio

    slow = executor.submit(tasks.sleep, 1.0, pure=False)  # short: a running task runs on

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(slow, 0.2)

    asyncio.run(main())
    assert wait_until(slow.cancelled, 10)


def test_gather_raises_the_first_failure_without_waiting_for_the_rest(executor, tmp_path):
    rank = list(executor.workers)[0]
    gate = str(tmp_path / "gate")
    slow = executor.submit(tasks.wait_for_path_on, gate, rank, 60, workers=[rank], pure=False)
    bad = executor.submit(tasks.fail, "at once", pure=False)
    try:
        with pytest.raises(ValueError, match="at once"):
            executor.gather([slow, bad])
        assert not slow.done()  # gather did not wait for it
        cancelled = executor.submit(tasks.inc, slow, pure=False)
        cancelled.cancel()
        with pytest.raises(Exception) as info:
            executor.gather({"a": [slow, cancelled]})
        assert type(info.value).__name__ == "CancelledError" and not slow.done()
    finally:
        open(gate, "w").close()
    assert slow.result(10) is True
    assert executor.gather([slow, bad], errors="skip") == [True]


def test_a_task_exception_is_unpickled_by_the_thread_asking_for_it(executor):
    tasks.UNPICKLED_ON.clear()
    a = executor.submit(tasks.raise_remade, "remade", pure=True)
    b = executor.submit(tasks.raise_remade, "remade", pure=True)  # the same key
    assert a.key == b.key
    import mpifutures

    mpifutures.wait([a], timeout=10)
    assert "mpifutures-scheduler" not in tasks.UNPICKLED_ON
    with pytest.raises(tasks.Remade, match="remade") as info:
        a.result()
    assert a.exception() is info.value is b.exception()  # built once, shared by the key
    assert "remade" in a.traceback()
    assert "mpifutures-scheduler" not in tasks.UNPICKLED_ON
    assert threading.current_thread().name in tasks.UNPICKLED_ON


def test_options_take_numpy_integers_and_refuse_bad_values_with_their_names(executor):
    rank = list(executor.workers)[0]
    f = executor.submit(tasks.inc, 1, workers=np.int64(rank), priority=np.int32(2),
                        retries=np.uint8(1), pure=False)
    assert f.result(np.float32(10)) == 2 and f.result(np.int64(5)) == 2
    assert executor.submit(tasks.inc, 2, workers=[np.int64(rank)], pure=False).result(10) == 3
    for options, kind, words in (({"workers": 1.5}, TypeError, "workers must be"),
                                 ({"workers": "1"}, TypeError, "workers must be"),
                                 ({"priority": 1.0}, TypeError, "priority must be an int"),
                                 ({"retries": -1}, ValueError, "retries must be 0 or more"),
                                 ({"retries": True}, TypeError, "retries must be an int")):
        with pytest.raises(kind, match=words):
            executor.submit(tasks.inc, 1, pure=False, **options)


def test_map_key_prefixes_name_each_call_apart(executor):
    first = executor.map(tasks.identity, ["a", "b"], key="step")
    second = executor.map(tasks.identity, ["c", "d"], key="step")
    assert executor.gather(second) == ["c", "d"] and executor.gather(first) == ["a", "b"]
    assert all(f.key.startswith("step-") for f in first + second)
    again = executor.map(tasks.identity, ["a"], key="step")  # pure: the same call, same key
    assert again[0].key == first[0].key
    impure = executor.map(tasks.identity, ["a", "a"], key="step", pure=False)
    assert len({f.key for f in impure + first}) == 4


def test_scatter_gives_a_namedtuple_back_as_a_namedtuple(executor):
    import collections

    Point = collections.namedtuple("Point", "x y")
    p = executor.scatter(Point(1, np.arange(3)))
    assert type(p) is Point and p.x.result(10) == 1 and list(p.y.result(10)) == [0, 1, 2]
    d = executor.scatter(collections.OrderedDict(a=1, b=2))
    assert {k: v.result(10) for k, v in d.items()} == {"a": 1, "b": 2}


def test_retrying_a_failure_while_its_hooks_run_does_not_stall_the_scheduler(executor):
    import io
    import sys

    import mpifutures

    saved = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # makes the window between resolving and the hooks likely
    try:
        for trial in range(10):
            f = executor.submit(tasks.slow_fail, 0.05, f"boom {trial}", pure=False)
            first = mpifutures.as_completed([f])  # its hook wakes this thread first
            others = [mpifutures.as_completed([f]) for _ in range(50)]  # widen the window
            shown = threading.Thread(target=mpifutures.progress, args=([f],), daemon=True,
                                     kwargs={"file": io.StringIO(), "interval": 0.05})
            shown.start()
            time.sleep(0.01)  # progress's hook comes last
            next(first)
            f.retry()
            assert executor.submit(tasks.inc, trial, pure=False).result(10) == trial + 1
            shown.join(10)
            assert not shown.is_alive()
            del others
            with pytest.raises(ValueError):
                f.result(10)
    finally:
        sys.setswitchinterval(saved)


def test_an_await_left_pending_on_a_closed_event_loop_harms_nothing(executor):
    import asyncio

    slow = executor.submit(tasks.slow_inc, 1, 0.3, pure=False)

    async def wait_for_it():
        return await slow

    loop = asyncio.new_event_loop()
    task = loop.create_task(wait_for_it())
    loop.run_until_complete(asyncio.sleep(0.05))
    loop.close()  # the await never ends; its hook must not fail the scheduler
    assert slow.result(10) == 2 and not task.done()
    assert executor.submit(tasks.inc, 5, pure=False).result(10) == 6


def test_gather_raising_early_and_timed_out_as_completed_keep_nothing_alive(executor, tmp_path):
    import weakref

    import mpifutures

    rank = list(executor.workers)[0]
    gate = str(tmp_path / "gate")
    slow = executor.submit(tasks.wait_for_path_on, gate, rank, 60, workers=[rank], pure=False)
    try:
        for _ in range(20):
            with pytest.raises(cf.TimeoutError):
                next(mpifutures.as_completed([slow], timeout=0))
        assert len(slow._waiters) < 5  # timed-out iterators took their hooks away
        with pytest.raises(ValueError):
            executor.gather([slow, executor.submit(tasks.fail, "now", pure=False)])
        bad = executor.submit(tasks.fail, "first", pure=False)
        cf.wait([bad])
        with pytest.raises(ValueError):  # (gather's loop variable held the last future)
            executor.gather([bad, slow])
        kept = []  # errors a caller keeps (to log later, say)
        for errors in ("raise", "skip"):
            with pytest.raises(cf.TimeoutError) as info:
                executor.gather([slow], errors=errors, timeout=0.01)
            kept.append(info.value)
        for name in ("result", "exception"):
            with pytest.raises(cf.TimeoutError) as info:
                getattr(slow, name)(0.01)
            kept.append(info.value)
        with cycle_collector_off():  # only references keep it alive
            ref = weakref.ref(slow)
            del slow
            assert ref() is None
    finally:
        open(gate, "w").close()


def test_a_finished_future_returns_its_value_whatever_the_timeout(executor):
    import mpifutures

    f = executor.submit(tasks.big, 50_000, pure=False)  # too big to come with the reply
    mpifutures.wait([f], timeout=30)
    assert f.done() and len(f.result(timeout=0)) == 50_000  # finished: no wait, as in cf
    with mpifutures.PoolExecutor(cluster=executor._cluster) as pool:
        results = pool.map(tasks.big, [50_000] * 3, timeout=0.5)
        assert len(next(results)) == 50_000
        time.sleep(0.7)  # past the map's timeout, but every call has finished
        assert [len(r) for r in results] == [50_000, 50_000]


def test_as_completed_raises_a_task_timeout_error_once_and_yields_each_future_once(executor):
    import mpifutures

    bad = executor.submit(tasks.raise_timeout, "from the task", pure=False)
    good = executor.submit(tasks.inc, 1, pure=False)
    mpifutures.wait([bad, good], timeout=30)
    ac = mpifutures.as_completed([bad, good, bad], with_results=True)
    outcomes = []
    for _ in range(5):
        try:
            outcomes.append(next(ac)[1])
        except StopIteration:
            break
        except TimeoutError as e:
            outcomes.append(str(e))
    assert sorted(outcomes, key=str) == [2, "from the task"]
    slow = executor.submit(tasks.sleep, 0.3, pure=False)
    assert list(mpifutures.as_completed([slow, slow], timeout=30)) == [slow]
    ac = mpifutures.as_completed([good])
    assert next(ac) is good
    ac.add(good)  # added again after it was yielded: yielded again
    ac.add(good)
    assert list(ac) == [good]


def test_a_retry_right_after_a_cancel_runs_the_task_for_the_future(executor):
    for i in range(10):
        f = executor.submit(tasks.sleep, 0.01, pure=False)
        f.cancel()
        f.retry()  # the cancel may not have reached the scheduler yet
        assert f.result(timeout=30) == 0.01, i


def test_a_cancelled_attempt_leaves_no_stale_value_on_its_worker(executor):
    import uuid

    rank, key = min(executor.workers), f"stale-{uuid.uuid4().hex}"
    first = executor.submit(tasks.sleep, 0.3, key=key, workers=[rank])
    time.sleep(0.1)  # running on its worker
    blocker = threading.Thread(target=executor._cluster.query, args=(lambda s: time.sleep(1.0),))
    blocker.start()  # the scheduler handles the next requests after attempt 1 finished
    time.sleep(0.1)
    first.cancel()
    second = executor.submit(tasks.sleep, 0.3, key=key, workers=[rank])  # same key and worker
    blocker.join()
    time.sleep(0.1)
    second.cancel()  # before attempt 2 finishes: nobody holds the key any more
    del first, second
    gc.collect()
    deadline = time.monotonic() + 10
    while key in executor.run(tasks.stored_keys)[rank] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert key not in executor.run(tasks.stored_keys)[rank]


def test_failed_maps_dropped_executors_and_failed_futures_leave_no_bookkeeping(executor):
    import weakref

    from mpifutures import SerializationError

    cluster = executor._cluster
    records = len(cluster.registry.records)
    for _ in range(5):  # the third item cannot be pickled: the map fails part way
        with pytest.raises(SerializationError):
            executor.map(tasks.inc, [1, 2, threading.Lock()], pure=False)
    assert len(cluster.registry.records) == records
    sessions = len(cluster.query(lambda s: s.refs))
    for i in range(5):  # dropped without shutdown(): their futures' collection releases all
        assert Executor(cluster=cluster).submit(tasks.inc, i, pure=False).result(10) == i + 1
    gc.collect()
    deadline = time.monotonic() + 10
    while len(cluster.query(lambda s: s.refs)) > sessions and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(cluster.query(lambda s: s.refs)) == sessions
    f = executor.submit(tasks.fail, "x", pure=False)
    with pytest.raises(ValueError):
        f.result(10)
    with cycle_collector_off():  # only references, not the cycle collector, may free it
        ref = weakref.ref(f)
        del f
        assert ref() is None


def test_gather_skip_on_a_namedtuple_with_a_failure_gives_a_plain_tuple(executor):
    import collections

    Pair = collections.namedtuple("Pair", "a b")
    ok, bad = executor.submit(tasks.inc, 1, pure=False), executor.submit(tasks.fail, pure=False)
    assert executor.gather(Pair(ok, bad), errors="skip") == (2,)
    assert executor.gather(Pair(ok, ok), errors="skip") == Pair(2, 2)
    assert type(executor.gather(Pair(ok, ok), errors="skip")) is Pair


def test_leaving_one_executor_on_an_error_leaves_another_executors_same_task_running(executor):
    other = Executor(cluster=executor._cluster)
    try:
        with pytest.raises(KeyError):
            with Executor(cluster=executor._cluster) as ex1:  # leaves with cancel_futures
                mine = ex1.submit(tasks.sleep, 0.3)  # pure: the same key as below
                theirs = other.submit(tasks.sleep, 0.3)
                alone = ex1.submit(tasks.sleep, 5.0, pure=False)
                raise KeyError("leave the block")
        assert mine.cancelled() and alone.cancelled() and theirs.result(10) == 0.3
        deadline = time.monotonic() + 10  # the task nobody else wanted was cancelled
        while executor._cluster.query(lambda s: s.state.status(alone.key)) is not None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # An explicit cancel() ends the task for every executor sharing its key.
        mine, theirs = other.submit(tasks.sleep, 0.31), executor.submit(tasks.sleep, 0.31)
        assert theirs.cancel()
        with pytest.raises(cf.CancelledError):
            mine.result(10)
    finally:
        other.shutdown()


def test_scattering_equal_data_again_sends_nothing_to_a_worker_holding_it(executor):
    # A second copy's confirmation could come after the key was freed there and scattered
    # elsewhere, and make that worker a false holder: nothing is sent, nothing confirmed.
    from mpifutures import protocol as P

    first = min(executor.workers)
    transport = executor._cluster.t
    stores = []

    def send(dest, msgs, real=transport.send):
        stores.extend(dest for m in msgs if m[0] == P.STORE)
        real(dest, msgs)

    transport.send = send  # an instance attribute, shadowing the method
    try:
        data = np.arange(1000.0) + time.time()  # data of its own: a key of its own
        x = executor.scatter(data, workers=[first])
        y = executor.scatter(data, workers=[first])
        assert x.key == y.key and executor.who_has([y]) == {y.key: [first]}
        assert stores == [first]
        z = executor.scatter(data, broadcast=True)  # sent to the workers lacking it only
        assert stores[1:] == [r for r in sorted(executor.workers) if r != first][:1]
        assert executor.who_has([z]) == {z.key: sorted(executor.workers)}
        again = executor.scatter(data, broadcast=True)  # every worker holds it: nothing sent
        assert len(stores) == 2 and again.key == z.key
        assert executor.submit(tasks.inc, z, pure=False).result(10)[0] == data[0] + 1
    finally:
        del transport.send


def test_a_cancellation_that_finds_its_task_ended_leaves_it_finished(executor):
    # cancel() racing the task's end: the scheduler finds it finished.
    f = executor.submit(tasks.inc, 1, pure=False)
    assert f.result(10) == 2
    executor._cancel([f])
    executor._cluster.query(lambda s: None)  # handled by now
    assert f.status == "finished" and f.result(10) == 2


def test_a_submit_slipping_in_ahead_of_a_cancel_is_cancelled_with_its_task(executor):
    import uuid

    x = uuid.uuid4().int % 10**9  # a call no other test makes
    first = executor.submit(tasks.slow_inc, x, 1.0)
    cluster, post, later = executor._cluster, executor._cluster.post, []

    def post_with_a_submit_ahead(item):  # another thread submitting the same call, just
        if item[0] == "cancel" and not later:  # as this one posts its cancel
            later.append(executor.submit(tasks.slow_inc, x, 1.0))
        post(item)

    cluster.post = post_with_a_submit_ahead
    try:
        first.cancel()
    finally:
        del cluster.post
    with pytest.raises(cf.CancelledError):  # the cancel ended the task it shared
        later[0].result(30)


def test_a_resolution_does_not_reach_a_future_whose_submit_is_still_on_its_way(executor):
    # An older task of the same key ending while the new submit waits in the inbox (behind
    # the release of the old futures, which frees that task's data) must not finish it.
    registry = executor._cluster.registry
    f = registry.new_future("key-in-flight", executor)  # made; its submit not taken in yet
    registry.resolve("key-in-flight", "memory", None)
    assert not f.done()
    registry.release(f)
    g = executor.submit(tasks.inc, 1, key="key-in-flight")
    assert g.result(10) == 2 and g._posted == g._gen == 0


def test_a_retry_leaves_a_shut_down_executors_future_of_the_key_as_it_was(cluster):
    import uuid

    key = f"retried-{uuid.uuid4().hex}"
    closed, live = Executor(cluster=cluster), Executor(cluster=cluster)
    old = closed.submit(tasks.sleep, 0.2, key=key)
    closed.shutdown(wait=False)
    assert old.cancelled()
    new = live.submit(tasks.sleep, 0.2, key=key)  # the same key, run again for `live`
    new.cancel()
    new.retry()
    # `old` no longer has a claim on the key: nothing would ever end it again (if `live`
    # let go of the key now, its task would be dropped without a word to any future).
    assert old.cancelled()
    assert new.result(timeout=30) == 0.2
    live.shutdown()


def test_a_retry_keeps_the_value_rank_0_holds_for_the_key():
    import types

    from mpifutures.registry import Registry
    from mpifutures.serialize import dumps

    registry = Registry(lambda item: None)
    executor = types.SimpleNamespace(_closed=False)
    done, cancelled = registry.new_future("k", executor), registry.new_future("k", executor)
    record = done._record
    assert record.claim_fetch()  # a result() of `done` asked for the value ...
    record.deliver(dumps(42))  # ... and it arrived
    cancelled._cancel_locally()
    registry.reset("k")  # the cancelled future of the same key is retried
    assert record.get(lambda r: pytest.fail("fetched again"), timeout=0) == 42


def test_many_live_futures_of_one_key_are_made_in_linear_time(monkeypatch):
    # Each new future of a key with more than 8 took all the others' references out of the
    # list to drop dead ones: 30,000 equal pure submits took 18 s.
    import types

    from mpifutures import registry as registrymod

    looks = []

    class CountedClaim(registrymod.Claim):
        __slots__ = ()

        def __call__(self):
            looks.append(1)
            return super().__call__()

        def __eq__(self, other):  # (a search of the list compares)
            looks.append(1)
            return super().__eq__(other)

        __hash__ = registrymod.Claim.__hash__

    monkeypatch.setattr(registrymod, "Claim", CountedClaim)
    registry = registrymod.Registry(lambda item: None)
    executor = types.SimpleNamespace(_closed=False)
    n = 5000
    futures = [registry.new_future("same", executor) for _ in range(n)]
    assert len(registry.handles("same")) == n
    assert len(looks) < 10 * n
    del futures[::2]  # half die: what is left of the key is the other half
    assert set(registry.handles("same")) == set(futures)
    del futures[:-1]  # all but the newest die; then each new one dies at once
    looks.clear()
    for _ in range(n):
        registry.new_future("same", executor)
    assert len(looks) < 10 * n  # (each walked past the dead ones first: 30 s for 20,481)
    for key in ("newest first", "oldest first"):  # let go by hand, in either order
        made = [registry.new_future(key, executor) for _ in range(n)]
        looks.clear()
        for future in (reversed(made) if key == "newest first" else made):
            registry.release(future)
        assert registry.get(key) is None and len(looks) < 10 * n, key


def test_a_key_reused_after_its_executor_shut_down_names_the_new_computation(cluster):
    import uuid

    key = f"reused-{uuid.uuid4().hex}"
    first = Executor(cluster=cluster)
    old = first.submit(tasks.identity, "A", key=key)
    assert old.result(30) == "A"
    first.shutdown()  # `old` lives on, and keeps its value
    with Executor(cluster=cluster) as ex:
        assert ex.submit(tasks.identity, "B", key=key).result(30) == "B"
    assert old.result(30) == "A"


def test_shutdown_returns_while_another_thread_is_preparing_a_map(cluster):
    ex = Executor(cluster=cluster)
    raised = []

    def producer():
        try:
            ex.map(tasks.inc, range(20_000), pure=False)
        except Exception as exc:  # noqa: BLE001 - the map meets the shutdown
            raised.append(exc)

    thread = threading.Thread(target=producer)
    thread.start()
    time.sleep(0.05)  # the map is preparing its batch (its futures exist, none is posted)
    closer = threading.Thread(target=ex.shutdown)
    closer.start()
    closer.join(60)
    thread.join(60)
    assert not closer.is_alive(), "shutdown(wait=True) waited for futures never submitted"
    assert not raised or "after shutdown" in str(raised[0])


def test_a_shutdown_waits_for_a_task_another_executor_submits_meanwhile(cluster):
    import uuid

    x = uuid.uuid4().int % 10**9  # a call no other test makes
    first, second = Executor(cluster=cluster), Executor(cluster=cluster)
    mine = first.submit(tasks.slow_inc, x, 0.5)
    closer = threading.Thread(target=first.shutdown)  # waits for `mine`
    closer.start()
    time.sleep(0.1)
    assert second.submit(tasks.slow_inc, x, 0.5).result(30) == x + 1  # the same task
    closer.join(30)
    assert not closer.is_alive() and mine.status == "finished"
    second.shutdown()


def test_a_done_callback_calling_sys_exit_does_not_stop_later_callbacks(executor):
    import sys

    executor.submit(tasks.inc, 1, pure=False).add_done_callback(lambda f: sys.exit("bye"))
    seen = threading.Event()
    executor.submit(tasks.inc, 2, pure=False).add_done_callback(lambda f: seen.set())
    assert seen.wait(30)


def test_leaving_a_pool_on_ctrl_c_cancels_its_calls_instead_of_waiting(cluster):
    from mpifutures import PoolExecutor

    with pytest.raises(KeyboardInterrupt):
        with PoolExecutor(cluster=cluster) as pool:
            calls = [pool.submit(time.sleep, 0.5) for _ in range(12)]
            raise KeyboardInterrupt
    assert sum(f.cancelled() for f in calls) >= 8  # those not yet running, at least


def test_a_retry_on_a_stopped_cluster_raises_and_leaves_nothing_pending():
    from mpifutures import ExecutorClosedError
    from mpifutures.local import LocalCluster

    local = LocalCluster(1)
    f = Executor(cluster=local.scheduler).submit(tasks.fail, pure=False)
    assert f.exception(30) is not None
    assert local.close()
    with pytest.raises(ExecutorClosedError):
        f.retry()
    assert f.done()


def test_dropping_a_long_chain_before_it_ran_leaves_the_scheduler_working(executor):
    # Letting go of the last link forgot the chain by recursion, one level per link: the
    # scheduler thread died of RecursionError, failing every future of the cluster.
    head = executor.submit(tasks.sleep, 0.5, pure=False)
    f = head
    for _ in range(1500):
        f = executor.submit(tasks.inc, f)
    del f, head
    gc.collect()
    assert executor.submit(tasks.inc, 1, pure=False).result(20) == 2
    wait_until(lambda: executor.statistics()["tasks_in_scheduler"] == 0)
    assert executor.statistics()["tasks_in_scheduler"] == 0


def _wait_for(path, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)


@pytest.mark.parametrize("end", ["cancel", "release"])
def test_new_tasks_go_around_a_worker_still_running_a_cancelled_task(executor, tmp_path, end):
    # A running task cannot be stopped: new tasks sent to its worker waited behind it (for
    # ever behind one that never ends) while another worker was idle.
    path = str(tmp_path / "slow")
    slow = executor.submit(tasks.announce_then_sleep, path, 2.0, pure=False)
    _wait_for(path)
    with open(path) as fh:
        busy = int(fh.read())
    getattr(slow, end)()
    start = time.monotonic()
    assert executor.submit(tasks.rank, pure=False).result(30) != busy
    assert time.monotonic() - start < 1.5
    _wait_for(path + ".end")  # leave the workers idle for the next test


def test_tasks_submitted_while_a_long_task_runs_go_to_the_other_workers(executor, tmp_path):
    # Rank 0 kept up to 64 tasks queued on each worker: those sent to the one running a long
    # task waited behind it while the others idled (and for ever behind a task waiting for
    # one of them). A worker quiet for 0.1 s while it owes tasks now gets no more.
    path = str(tmp_path / "long")
    long = executor.submit(tasks.announce_then_sleep, path, 3.0, pure=False)
    _wait_for(path)
    with open(path) as fh:
        busy = int(fh.read())
    time.sleep(0.3)
    start = time.monotonic()
    ranks = executor.gather(executor.map(tasks.rank, range(20), pure=False))
    assert busy not in ranks and time.monotonic() - start < 2.0
    assert long.result(30) is None
    assert busy in executor.gather(executor.map(tasks.rank, range(20), pure=False))  # again


def test_tasks_queued_behind_a_long_task_are_taken_back_and_run_elsewhere(executor, tmp_path):
    # A map submitted with a long task: half of it was queued on the long task's worker
    # and waited there until the long task ended. Rank 0 now recalls them from that worker
    # once it has been quiet for 0.1 s, and they run on the other workers.
    path = str(tmp_path / "long")
    long = executor.submit(tasks.announce_then_sleep, path, 4.0, pure=False)
    start = time.monotonic()
    ranks = executor.gather(executor.map(tasks.rank, range(20), pure=False))
    elapsed = time.monotonic() - start
    _wait_for(path)
    with open(path) as fh:
        busy = int(fh.read())
    assert elapsed < 2.5 and busy not in ranks, (elapsed, busy, ranks)
    assert long.result(30) is None


def test_a_chain_queued_behind_a_long_task_is_taken_back_with_what_waits_for_it(executor,
                                                                                tmp_path):
    # A map whose results are combined pairwise: each pair's task was sent early to wait on
    # the worker of its inputs, and a task with such a dependent was never recalled, so half
    # the map waited behind the long task. The chain now comes back as a unit.
    path = str(tmp_path / "long")
    long = executor.submit(tasks.announce_then_sleep, path, 4.0, pure=False)
    start = time.monotonic()
    fs = executor.map(tasks.rank, range(20), pure=False)
    pairs = [executor.submit(tasks.rank, fs[i], fs[i + 1], pure=False) for i in range(0, 20, 2)]
    ranks = executor.gather(fs + pairs)
    elapsed = time.monotonic() - start
    _wait_for(path)
    with open(path) as fh:
        busy = int(fh.read())
    assert elapsed < 2.5 and busy not in ranks, (elapsed, busy, ranks)
    assert long.result(30) is None


@pytest.mark.parametrize("how", ["input", "loose"])
def test_tasks_tied_loosely_to_a_busy_worker_run_elsewhere(executor, tmp_path, how):
    # "input": their input lives on the busy worker. The worker's answer to the recall used
    # to count as a sign of life, so they went straight back to it, again and again.
    # "loose": they prefer it (allow_other_workers), and were placed there all the same.
    busy = sorted(executor.workers)[0]
    x = executor.scatter(np.arange(1000), workers=[busy])
    long = executor.submit(tasks.announce_then_sleep, str(tmp_path / "long"), 4.0,
                           workers=[busy], pure=False)
    start = time.monotonic()
    if how == "input":
        fs = [executor.submit(tasks.rank, x, pure=False) for _ in range(20)]
    else:
        fs = [executor.submit(tasks.rank, workers=[busy], allow_other_workers=True, pure=False)
              for _ in range(20)]
    ranks = executor.gather(fs)
    elapsed = time.monotonic() - start
    assert elapsed < 2.5 and busy not in ranks, (elapsed, busy, ranks)
    assert long.result(30) is None


def test_an_array_argument_is_the_one_of_the_moment_of_submit(executor):
    # Arrays were sent from their memory when the task was dispatched: writing into one after
    # submit changed what the task read (torn sums for large arrays), and a pure key, made
    # of the contents at submit, then named a value computed from other contents.
    first, second = sorted(executor.workers)[:2] if len(executor.workers) > 1 else (
        executor.workers[0], executor.workers[0])
    gate = executor.submit(tasks.slow_inc, 0, 0.3, workers=[first], pure=False)
    arr = np.zeros(100_000)
    late = executor.submit(tasks.sum_of_first, arr, gate, workers=[second])  # sent after gate
    arr[:] = 1.0
    assert late.result(30) == 0.0
    zeros = np.zeros(1000)
    a = executor.submit(tasks.array_sum, zeros)
    zeros[:] = 1.0
    assert a.result(30) == 0.0
    assert executor.submit(tasks.array_sum, np.zeros(1000)).result(30) == 0.0


def test_big_results_kept_side_by_side_keep_their_own_values(executor):
    # Received arrays live in pooled memory; a block went back to the pool when the view
    # handed out died, though the unpickled array (whose numpy base is the block) lived on,
    # so the next array of that size overwrote it: gathering 8 results gave the last 8 times.
    values = [float(v) for v in range(8)]
    gathered = [f.result(30) for f in [executor.submit(np.full, 1 << 18, v) for v in values]]
    assert [float(g.mean()) for g in gathered] == values
    # The same on a worker, for the copies it keeps of what it fetched (one array was summed
    # twice in a tree reduction): the second fetch landed in the first copy's memory.
    first, second = sorted(executor.workers)[:2] if len(executor.workers) > 1 else (
        executor.workers[0], executor.workers[0])
    made = [executor.submit(np.full, 1 << 18, v, workers=[first]) for v in values[:2]]
    assert executor.submit(tasks.means, made[0], workers=[second]).result(30) == [0.0]
    assert executor.submit(tasks.means, made[1], workers=[second]).result(30) == [1.0]
    assert executor.submit(tasks.means, *made, workers=[second]).result(30) == [0.0, 1.0]


def test_a_failed_task_that_keeps_its_exception_lets_go_of_its_locals(executor):
    with cycle_collector_off():  # no collector run may free them instead (in-process workers)
        futures = [executor.submit(tasks.fail_keeping_the_error, pure=False) for _ in range(4)]
        futures.append(executor.submit(tasks.fail_in_a_group_keeping_the_error, pure=False))
        for future in futures:
            with pytest.raises((ValueError, ExceptionGroup)):
                future.result(10)
        assert sum(executor.run(tasks.locals_of_failed_tasks_alive).values()) == 0


@pytest.mark.parametrize("how", ["result", "exception", "result_with_timeout"])
def test_a_waiter_woken_by_a_failure_that_a_retry_undid_waits_for_the_retry(executor, how):
    f = executor._cluster.registry.new_future("failed-then-retried", executor)  # never posted
    outcome = []

    def waiter():
        try:
            if how == "exception":
                outcome.append(f.exception())
            else:
                outcome.append(f.result(None if how == "result" else 30))
        except BaseException as exc:  # noqa: BLE001 - what it raised is the point
            outcome.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    assert wait_until(lambda: f._cond is not None and f._cond._waiters)  # it waits
    with f._condition:  # the waiter looks again only after both steps, as when it races
        f._fail(ValueError("first attempt"))
        assert f._reset() is not None  # a retry made it pending again
    time.sleep(0.1)
    assert thread.is_alive() and not outcome  # still waiting, for the retry
    f._fail(ValueError("second attempt"))
    thread.join(10)
    assert not thread.is_alive()
    (got,) = outcome
    if how != "exception":
        assert isinstance(got, ValueError)
    assert str(got) == "second attempt"


def test_gather_skip_leaves_out_a_failure_that_a_retry_made_pending_again(executor):
    import mpifutures.exchange as exchange_module

    f = executor._cluster.registry.new_future("retried-during-gather", executor)  # never posted
    f._fail(ValueError("first attempt"))
    real_wait_ended = exchange_module.wait_ended

    def then_retried(*args, **kwargs):  # a retry starts after gather saw the failure
        failed = real_wait_ended(*args, **kwargs)
        assert f._reset() is not None
        threading.Timer(0.1, f._fail, [ValueError("second attempt")]).start()
        return failed

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(exchange_module, "wait_ended", then_retried)
        assert executor.gather([f], errors="skip") == []
    assert str(f.exception(0)) == "second attempt"


def test_cancel_of_a_cancelled_future_says_true_as_concurrent_futures_does(executor):
    a = executor.submit(tasks.sleep, 30, pure=False)
    b = executor.submit(tasks.inc, a, pure=False)
    assert b.cancel() and b.cancel() and b.cancelled()
    assert a.cancel() and a.cancel()
    done = executor.submit(tasks.inc, 1, pure=False)
    assert done.result(10) == 2 and not done.cancel()


@pytest.mark.parametrize("kind", ["executor", "pool"])
def test_a_second_shutdown_that_waits_waits_also_while_the_first_is_still_waiting(cluster, kind):
    from mpifutures import PoolExecutor

    made = Executor(cluster=cluster) if kind == "executor" else PoolExecutor(cluster=cluster)
    futures = [made.submit(tasks.slow_inc, i, 0.5) for i in range(2)]
    first = threading.Thread(target=made.shutdown)
    first.start()
    assert wait_until(lambda: (made if kind == "executor" else made._executor)._closed)
    made.shutdown(wait=True)
    assert all(f.done() for f in futures)
    first.join(10)


def test_a_non_contiguous_result_is_not_kept_twice_on_its_worker(executor):
    strided = executor.submit(tasks.column, 1000, pure=False)
    whole = executor.submit(tasks.make_array, 1000, pure=False)
    cf.wait([strided, whole])
    cached = set().union(*executor.run(tasks.cached_payloads).values())
    assert whole.key in cached  # its pickle shares the array's memory: kept, to serve fetches
    assert strided.key not in cached  # its pickle holds a contiguous copy: not kept
    assert np.array_equal(strided.result(10), np.arange(0, 2000, 2, dtype=float))
    assert executor.submit(tasks.array_sum, strided, pure=False).result(10) == 999000.0


def test_a_future_whose_own_exception_is_a_timeout_error_raises_it_at_once(executor):
    f = executor._cluster.registry.new_future("ends-with-a-timeout-error", executor)
    f._fail(TimeoutError("its own"))
    for wait in (f.result, lambda: f.result(5)):
        with pytest.raises(TimeoutError, match="its own"):
            wait()
    assert str(f.exception()) == "its own"


def test_a_state_error_while_cancelling_fails_the_cluster_instead_of_hanging():
    from mpifutures.events import CancelRequested
    from mpifutures.local import LocalCluster

    with LocalCluster(1) as local:
        ex = Executor(cluster=local.scheduler)
        waiting = ex.submit(tasks.sleep, 30, pure=False)
        dependent = ex.submit(tasks.inc, waiting, pure=False)
        real = local.scheduler.state.handle

        def broken(*events):
            if any(isinstance(e, CancelRequested) for e in events):
                raise RuntimeError("a bug in the state machine")
            return real(*events)

        local.scheduler.state.handle = broken
        with pytest.raises(RuntimeError, match="scheduler thread failed"):
            dependent.cancel()
        with pytest.raises(RuntimeError, match="scheduler thread failed"):
            waiting.result(10)
