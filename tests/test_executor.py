"""The executor behaviour suite: runs on an in-process cluster and again under mpiexec."""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time

import numpy as np
import pytest

from mpifutures import (ExecutorClosedError, Future, RemoteTraceback, SerializationError,
                        TaskExit)
from tests import tasks


def test_submit_returns_the_value(executor):
    f = executor.submit(tasks.inc, 1)
    assert isinstance(f, Future)
    assert f.result(timeout=10) == 2
    assert f.done() and not f.cancelled()
    assert f.status == "finished"


def test_kwargs_and_lambdas_and_closures(executor):
    assert executor.submit(tasks.total, 1, 2, a=3).result(10) == 6
    assert executor.submit(lambda x: x * 2, 21).result(10) == 42
    offset = 5
    assert executor.submit(lambda x: x + offset, 1).result(10) == 6


def test_futures_anywhere_in_arguments_are_replaced_by_values(executor):
    a, b = executor.submit(tasks.inc, 1), executor.submit(tasks.inc, 2)
    out = executor.submit(tasks.identity, {"list": [a, (b, 1)], "set": {a}, "d": {"b": b}})
    assert out.result(10) == {"list": [2, (3, 1)], "set": {2}, "d": {"b": 3}}
    assert executor.submit(tasks.total, a, b, c=a).result(10) == 7


def test_pure_keys_are_shared_and_impure_keys_unique(executor):
    f1, f2 = executor.submit(tasks.inc, 10), executor.submit(tasks.inc, 10)
    assert f1.key == f2.key and f1.key.startswith("inc-")
    assert executor.submit(tasks.inc, 11).key != f1.key
    g1, g2 = executor.submit(tasks.inc, 10, pure=False), executor.submit(tasks.inc, 10, pure=False)
    assert g1.key != g2.key
    assert executor.submit(tasks.inc, 1, key="mine").key == "mine"
    assert [f.result(10) for f in (f1, f2, g1, g2)] == [11] * 4
    # Futures of one key are the same input, whichever of them is passed
    assert executor.submit(tasks.add, f1, f1).key == executor.submit(tasks.add, f1, f2).key


def test_map_stops_at_the_shortest_iterable(executor):
    fs = executor.map(tasks.add, [1, 2, 3], [10, 20])
    assert [f.result(10) for f in fs] == [11, 22]
    assert [f.result(10) for f in executor.map(tasks.inc, range(50))] == list(range(1, 51))


def test_gather_keeps_the_shape(executor):
    a, b = executor.submit(tasks.inc, 1), executor.submit(tasks.inc, 2)
    assert executor.gather(a) == 2
    assert executor.gather([a, (b, b), {"k": [b]}]) == [2, (3, 3), {"k": [3]}]


def test_arrays_round_trip_in_every_layout(executor):
    values = [np.arange(12.0).reshape(3, 4)[:, ::2], np.float64(3.5), np.array(7),
              np.zeros(3, dtype=[("a", "i4"), ("b", "f8")]), np.asfortranarray(np.ones((3, 2))),
              np.array([1, "a", None], dtype=object)]
    for value in values:
        out = executor.submit(tasks.identity, value).result(10)
        assert type(out) is type(value)
        np.testing.assert_array_equal(out, value)


def test_task_exception_keeps_type_message_and_remote_traceback(executor):
    f = executor.submit(tasks.fail, "bad input")
    with pytest.raises(ValueError, match="bad input") as info:
        f.result(10)
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "rank" in cause.text and "in fail" in cause.text and f.key in cause.text
    assert f.status == "error"
    assert isinstance(f.exception(10), ValueError)


def test_dependents_of_a_failed_task_fail_with_the_same_error(executor):
    bad = executor.submit(tasks.fail, "root cause")
    child = executor.submit(tasks.inc, bad)
    grandchild = executor.submit(tasks.add, child, 1)
    for f in (child, grandchild):
        with pytest.raises(ValueError, match="root cause"):
            f.result(10)


def test_workers_survive_unpicklable_results_and_exits(executor):
    f = executor.submit(tasks.unpicklable_result)
    with pytest.raises(SerializationError, match="lock"):
        f.result(10)
    with pytest.raises(TaskExit, match="SystemExit"):
        executor.submit(tasks.exit_task, 3).result(10)
    with pytest.raises(TaskExit, match="KeyboardInterrupt"):
        executor.submit(tasks.interrupt_task).result(10)
    assert [f.result(10) for f in executor.map(tasks.inc, range(8), pure=False)] == \
        list(range(1, 9))


def test_task_runs_where_its_input_lives(executor):
    for worker in executor.workers:
        x = executor.submit(tasks.make_array, 100_000, workers=[worker], pure=False)
        assert executor.submit(tasks.rank, [x]).result(10) == worker


def test_chain_of_dependent_tasks(executor):
    f = executor.submit(tasks.inc, 0)
    for _ in range(200):
        f = executor.submit(tasks.inc, f)
    assert f.result(30) == 201


def test_result_timeout(executor):
    f = executor.submit(tasks.sleep, 1.0, pure=False)
    start = time.monotonic()
    with pytest.raises(cf.TimeoutError, match="did not finish within 0.1 s .pending.; it keeps"):
        f.result(timeout=0.1)
    assert time.monotonic() - start < 0.9
    with pytest.raises(cf.TimeoutError, match=f"task '{f.key}' did not finish"):
        f.exception(timeout=0.05)
    assert f.result(timeout=10) == 1.0


@pytest.mark.parametrize("bad", [-1, "1", float("nan"), True])
def test_bad_timeouts_are_rejected(executor, bad):
    f = executor.submit(tasks.inc, 1)
    with pytest.raises((TypeError, ValueError)):
        f.result(timeout=bad)
    assert f.result() == 2  # now the value is on rank 0: a bad timeout is still an error
    with pytest.raises((TypeError, ValueError)):
        f.result(timeout=bad)


def test_a_nan_timeout_is_named_as_such():
    from mpifutures.future import check_timeout

    with pytest.raises(ValueError, match="timeout must be a number of seconds or None, not nan"):
        check_timeout(float("nan"))


def test_wait_progress_and_gather_name_what_is_not_a_future(executor):
    import collections

    import mpifutures

    f = executor.submit(tasks.inc, 1)
    with pytest.raises(TypeError, match="wait takes futures, not int: 1"):
        mpifutures.wait([f, 1])
    with pytest.raises(TypeError, match="progress takes futures, not int: 2"):
        mpifutures.progress([f, 2])
    got = executor.gather(collections.defaultdict(list, k=f))  # a dict of its own kind
    assert type(got) is collections.defaultdict and got == {"k": 2} and got["new"] == []


def test_an_endless_timeout_means_no_limit(executor):
    import mpifutures

    slow = executor.submit(tasks.slow_inc, 1, 0.2, pure=False)
    assert slow.result(timeout=float("inf")) == 2
    big = executor.submit(tasks.slow_inc, 2, 0.2, pure=False)
    assert big.exception(timeout=10 ** 400) is None
    done, _ = mpifutures.wait([executor.submit(tasks.inc, 1, pure=False)], timeout=float("inf"))
    assert len(done) == 1


def test_standard_library_wait_and_as_completed(executor):
    fs = [executor.submit(tasks.slow_inc, i, 0.05, pure=False) for i in range(6)]
    done, not_done = cf.wait(fs, timeout=20)
    assert len(done) == 6 and not not_done
    fs = [executor.submit(tasks.inc, i, pure=False) for i in range(6)]
    assert sorted(f.result() for f in cf.as_completed(fs, timeout=20)) == list(range(1, 7))


def test_done_callbacks_run_off_the_scheduler_thread(executor):
    seen, event = [], threading.Event()

    def callback(fut):
        seen.append((fut.result(), threading.current_thread().name))
        event.set()

    executor.submit(tasks.inc, 41, pure=False).add_done_callback(callback)
    assert event.wait(10)
    assert seen[0][0] == 42 and seen[0][1] == "mpifutures-callbacks"


def test_cancel_a_pending_task_and_its_dependents(executor):
    worker = list(executor.workers)[0]
    blocker = executor.submit(tasks.sleep, 0.5, workers=[worker], pure=False)
    queued = executor.submit(tasks.inc, 1, workers=[worker], pure=False)
    child = executor.submit(tasks.inc, queued)
    assert queued.cancel()
    assert queued.cancelled()
    with pytest.raises(cf.CancelledError):
        child.result(10)
    assert blocker.result(10) == 0.5
    assert not blocker.cancel()


def test_bad_input_fails_at_the_call_site(executor, cluster):
    with pytest.raises(TypeError, match="callable"):
        executor.submit(42)
    with pytest.raises(TypeError, match="argument 1 .*lock"):
        executor.submit(tasks.add, 1, threading.Lock())
    with pytest.raises(TypeError, match="keyword argument 'y'"):
        executor.submit(tasks.add, 1, y=(i for i in range(3)))
    with pytest.raises(ValueError, match="workers"):
        executor.submit(tasks.inc, 1, workers=[999])
    with pytest.raises(TypeError, match="cannot be pickled on its own"):
        import pickle
        pickle.dumps(executor.submit(tasks.inc, 1))
    with pytest.raises(TypeError, match="not int: 3"):
        executor.gather([executor.submit(tasks.inc, 1), 3])


def test_closed_and_foreign_executors_refuse_work(executor, cluster):
    from mpifutures import Executor

    other = Executor(cluster=cluster)
    theirs = other.submit(tasks.inc, 1)
    with pytest.raises(ValueError, match="another executor"):
        executor.submit(tasks.inc, theirs)
    other.shutdown()
    with pytest.raises(ValueError, match="another executor"):
        executor.submit(tasks.inc, theirs)  # a future of a shut-down executor
    with pytest.raises(ExecutorClosedError, match="submit after shutdown"):
        other.submit(tasks.inc, 1)
    with pytest.raises(ExecutorClosedError):
        other.map(tasks.inc, [1])


def test_context_manager_releases_session_but_keeps_workers(cluster):
    from mpifutures import Executor

    for i in range(3):
        with Executor(cluster=cluster) as ex:
            assert ex.submit(tasks.inc, i).result(10) == i + 1


def test_released_futures_free_worker_memory(executor):
    before = executor.statistics()["tasks_in_scheduler"]
    for i in range(50):
        f = executor.submit(tasks.make_array, 1000, float(i), pure=False)
        f.result(10)
        del f
    deadline = time.monotonic() + 10
    while executor.statistics()["tasks_in_scheduler"] > before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert executor.statistics()["tasks_in_scheduler"] <= before


def test_statistics_count_bytes(executor):
    x = executor.submit(tasks.make_array, 250_000, workers=[list(executor.workers)[0]], pure=False)
    before = executor.statistics()
    total = executor.submit(tasks.array_sum, x, pure=False, workers=[list(executor.workers)[-1]])
    assert total.result(10) == 250_000.0
    after = executor.statistics()
    assert after["tasks_completed"] >= before["tasks_completed"] + 1
    if len(executor.workers) > 1:
        moved = after["bytes_between_workers"] - before["bytes_between_workers"]
        assert moved >= 2_000_000
    assert after["bytes_to_rank0"] - before["bytes_to_rank0"] < 10_000
    np.testing.assert_array_equal(x.result(10), np.ones(250_000))
    assert executor.statistics()["bytes_to_rank0"] - after["bytes_to_rank0"] >= 2_000_000
