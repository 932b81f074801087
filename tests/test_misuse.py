"""Misuse of the API gets a clear error at the call, never a hang or a dead job.

Part of the behaviour suite (in-process and under mpiexec).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import mpifutures
from mpifutures.errors import SerializationError
from tests import tasks


def test_a_key_given_as_a_str_subclass_travels_as_a_plain_str(executor):
    class Name(str):  # defined here: no worker could import it
        pass

    f = executor.submit(tasks.inc, 1, key=Name("counted"))
    assert type(f.key) is str and f.key == "counted"
    assert f.result(10) == 2
    mapped = executor.map(tasks.inc, [1, 2], key=Name("prefix"))
    assert executor.gather(mapped) == [2, 3]
    assert all(type(g.key) is str and g.key.startswith("prefix-") for g in mapped)
    listed = executor.map(tasks.inc, [1, 2], key=[Name("one"), Name("two")])
    assert [g.key for g in listed] == ["one", "two"] and executor.gather(listed) == [2, 3]


def test_a_key_must_be_a_non_empty_str(executor):
    with pytest.raises(ValueError, match="empty"):
        executor.submit(tasks.inc, 1, key="")
    with pytest.raises(TypeError, match="key must be a str"):
        executor.submit(tasks.inc, 1, key=7)


def test_a_task_given_a_future_of_its_own_key_is_refused(executor):
    a = executor.submit(tasks.sleep, 5, key="state")
    a.cancel()
    with pytest.raises(ValueError, match="would wait for its own result"):
        executor.submit(tasks.inc, a, key="state")
    assert a.cancelled()


def test_a_retry_that_would_make_a_task_wait_for_itself_fails_at_once(executor):
    c = executor.submit(tasks.sleep, 5, key="cycle-c")
    c.cancel()
    d = executor.submit(tasks.inc, c, key="cycle-d")  # cancelled with c
    e = executor.submit(tasks.inc, d, key="cycle-c")  # a new computation under c's key
    mpifutures.wait([d, e], timeout=10)
    assert d.cancelled() and e.cancelled()
    c.retry()  # c's key now needs d, which needs c's key
    with pytest.raises(ValueError, match="wait for its own result"):
        c.result(10)


def test_threads_sharing_one_as_completed_all_end(executor):
    futures = executor.map(tasks.inc, range(20), pure=False)
    each = mpifutures.as_completed(futures, timeout=30)
    got: list = []

    def drain():
        got.extend(each)  # StopIteration in every thread once all are yielded

    threads = [threading.Thread(target=drain) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert sorted(f.result(0) for f in got) == list(range(1, 21))


def test_a_result_whose_unpickling_exits_raises_an_error_instead(executor):
    f = executor.submit(tasks.exits_on_rank0)
    with pytest.raises(SerializationError, match="failed to unpickle: SystemExit"):
        f.result(10)
    with pytest.raises(SerializationError, match="failed to unpickle"):
        executor.gather([f])
    with pytest.raises(SerializationError, match=r"run\(\) on rank \d+ arrived on rank 0"):
        executor.run(tasks.exits_on_rank0, timeout=10)


def test_owner_after_shutdown_is_none_for_an_executor_and_the_worker_for_a_pool(cluster):
    ex = mpifutures.Executor(cluster=cluster)
    f = ex.submit(tasks.inc, 1, pure=False)
    assert f.result(10) == 2 and f.owner in ex.workers
    ex.shutdown()
    assert f.owner is None  # its data was released with the session
    pool = mpifutures.PoolExecutor(cluster=cluster)
    g = pool.submit(tasks.inc, 2)
    pool.shutdown()
    assert g.owner in ex.workers and g.result(10) == 3  # a pool's results stay readable


def test_a_task_exception_that_cannot_be_pickled_arrives_saying_so(executor):
    f = executor.submit(tasks.raise_holding_a_lock, pure=False)
    with pytest.raises(mpifutures.MpiFuturesError, match=r"HoldsLock: has a lock \(the "
                       "exception itself could not be pickled") as info:
        f.result(10)
    assert "raise HoldsLock" in str(info.value.__cause__)


def test_methods_taking_futures_name_what_they_got_instead(executor):
    for call in (executor.fire_and_forget, executor.cancel, executor.who_has):
        with pytest.raises(TypeError, match=r"takes futures, not int: 3"):
            call(3)


def test_map_needs_exactly_one_key_per_task(executor):
    with pytest.raises(ValueError, match="map got 3 keys for 2 tasks"):
        executor.map(tasks.inc, [1, 2], key=["a", "b", "c"])
    with pytest.raises(ValueError, match="map got 1 keys for 2 tasks"):
        executor.map(tasks.inc, [1, 2], key=["a"])
    lazy = executor.map(tasks.inc, range(4), key=[f"k{i}" for i in range(4)], batch_size=2)
    assert [f.result(10) for f in lazy] == [1, 2, 3, 4]


def test_a_released_future_can_be_neither_retried_nor_kept(executor):
    f = executor.submit(tasks.fail, pure=False)
    assert f.exception(10) is not None
    f.release()
    with pytest.raises(ValueError, match="was released; it can no longer be retried"):
        f.retry()
    with pytest.raises(ValueError, match="was released"):
        executor.fire_and_forget(f)


def test_pool_chunksize_and_progress_interval_are_checked(cluster):
    with mpifutures.PoolExecutor(cluster=cluster) as pool:
        with pytest.raises(TypeError, match="chunksize must be an int, not '2'"):
            pool.map(tasks.inc, [1], chunksize="2")
        with pytest.raises(ValueError, match="chunksize must be >= 1"):
            pool.map(tasks.inc, [1], chunksize=0)
    with pytest.raises(TypeError, match="not 'x'"):
        mpifutures.progress([], interval="x")
    with pytest.raises(ValueError, match="interval must be a positive number of seconds"):
        mpifutures.progress([], interval=-1)


def test_pool_starmap_and_spmd_name_what_is_wrong(cluster):
    with mpifutures.PoolExecutor(cluster=cluster) as pool:
        with pytest.raises(TypeError, match="starmap needs a callable, not None"):
            pool.starmap(None, [(1,)])
    with pytest.raises(TypeError, match="comm must be an mpi4py communicator, not 'x'"):
        with mpifutures.spmd(comm="x"):
            pass


def test_a_pool_map_names_the_call_that_cannot_be_pickled(cluster):
    with mpifutures.PoolExecutor(cluster=cluster) as pool:
        for chunksize in (1, 2):
            with pytest.raises(SerializationError, match=r"call 2 of map: argument 0 \(of "
                                                         r"type lock\) cannot be pickled"):
                pool.map(tasks.inc, [1, 2, threading.Lock()], chunksize=chunksize)
        assert list(pool.map(tasks.inc, [1, 2], chunksize=2)) == [2, 3]


def test_an_argument_exiting_as_it_unpickles_fails_its_task_as_a_serialization_error(executor):
    f = executor.submit(tasks.identity, tasks.ExitsOnWorker(), pure=False)
    with pytest.raises(SerializationError, match=r"failed to unpickle on rank \d+: "
                                                 r"SystemExit\('unpickled on a worker'\)"):
        f.result(30)
    with pytest.raises(SerializationError, match=r"given to run\(\) failed to unpickle on "
                                                 r"rank \d+: SystemExit"):
        executor.run(tasks.identity, tasks.ExitsOnWorker(), timeout=30)
    assert executor.submit(tasks.inc, 1, pure=False).result(30) == 2  # the workers live on


def test_an_endless_lazy_map_takes_its_keys_as_it_goes(executor):
    import itertools

    keys = (f"endless-{i}" for i in itertools.count())
    mapped = executor.map(tasks.inc, itertools.count(), key=keys, batch_size=2)
    assert [next(mapped).result(30) for _ in range(5)] == [1, 2, 3, 4, 5]
    mapped = executor.map(tasks.inc, range(3), key=iter(["a1", "b1", "a1"]), batch_size=1)
    with pytest.raises(ValueError, match="map got the same key twice"):
        list(mapped)
    with pytest.raises(TypeError, match="key must be a str .* not b'ab'"):
        executor.map(tasks.inc, [1, 2], key=b"ab")
    with pytest.raises(TypeError, match=r"map's keys must be str, not list: \['a'\]"):
        next(executor.map(tasks.inc, [1], key=iter([["a"]]), batch_size=1))


def test_recording_and_report_arguments_are_checked_before_any_work(executor, tmp_path):
    with pytest.raises(TypeError, match="record must be True, False or None"):
        executor.get_task_stream(record="no")  # was taken as true: recording went on
    ran = []
    for path, error in ((tmp_path / "no" / "r.html", ValueError), (tmp_path, ValueError),
                        (1, TypeError), (None, TypeError)):
        with pytest.raises(error, match="path"):
            with mpifutures.performance_report(path, executor=executor):
                ran.append(path)  # (the block ran, then the report failed)
    with pytest.raises(ValueError, match="trace="):
        with mpifutures.performance_report(tmp_path / "r.html", trace=tmp_path / "no" / "t",
                                           executor=executor):
            ran.append("trace")
    with pytest.raises(TypeError, match="executor must be an mpifutures Executor"):
        with mpifutures.performance_report(tmp_path / "r.html", executor="x"):
            ran.append("executor")
    assert ran == []


def test_progress_refuses_an_endless_interval_and_a_file_it_cannot_write(executor):
    f = executor.submit(tasks.inc, 1)
    for interval in (float("inf"), 1e300):
        with pytest.raises(ValueError, match="at most 86400"):
            mpifutures.progress([f], interval=interval)
    with pytest.raises(TypeError, match="file must be an open text file"):
        mpifutures.progress([f], file="x")
    closed = open(__file__)
    closed.close()
    with pytest.raises(TypeError, match="file must be an open text file"):
        mpifutures.progress([f], file=closed)


def test_max_workers_is_checked_also_where_a_cluster_runs_already(cluster):
    from mpifutures import launch

    with pytest.raises(TypeError, match="max_workers"):
        launch.current_cluster("x")
    with pytest.raises(ValueError, match="max_workers must be at least 1, not 0"):
        launch.current_cluster(0)


def test_yes_no_options_take_only_bools(executor):
    for call, name in ((lambda: executor.submit(tasks.inc, 1, pure="no"), "pure"),
                       (lambda: executor.map(tasks.inc, [1], pure=None), "pure"),
                       (lambda: executor.starmap(tasks.inc, [(1,)], pure=1), "pure"),
                       (lambda: executor.submit(tasks.inc, 1, allow_other_workers="no"),
                        "allow_other_workers"),
                       (lambda: executor.scatter([1], broadcast="no"), "broadcast"),
                       (lambda: executor.scatter([1], hash="no"), "hash")):
        with pytest.raises(TypeError, match=f"{name} must be True or False, not "):
            call()  # a string such as "no" was taken as true
    rank = list(executor.workers)[0]
    f = executor.submit(tasks.inc, 1, pure=np.False_, workers=rank,
                        allow_other_workers=np.True_)
    assert f.result(10) == 2 and executor.gather(executor.scatter([3], hash=np.False_)) == [3]


def test_scatter_names_the_item_that_cannot_be_sent(executor):
    for data, where in (([1, 2, threading.Lock()], "item 2"),
                        ({"a": 1, "b": threading.Lock()}, "the value of key 'b'"),
                        (threading.Lock(), "the value")):
        with pytest.raises(SerializationError, match=f"scatter: {where} cannot be sent: "
                                                     "cannot pickle a value of type lock"):
            executor.scatter(data)


    class Key(str):  # a key is described only for a message: its repr is not needed before
        def __repr__(self):
            raise RuntimeError("no repr")

    assert executor.gather(executor.scatter({Key("k"): 1})) == {"k": 1}
