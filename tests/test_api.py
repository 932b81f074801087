"""The whole client API (scatter, run, who_has, cancel, retries, priorities, interop, pool).

Part of the behaviour suite: runs on an in-process cluster and again under mpiexec.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import itertools
import threading
import time

import numpy as np
import pytest

import mpifutures
from mpifutures import PoolExecutor
from tests import tasks


def test_scatter_a_value_a_list_and_a_dict(executor):
    x = executor.scatter(np.arange(10))
    assert isinstance(x, mpifutures.Future)
    np.testing.assert_array_equal(x.result(10), np.arange(10))
    xs = executor.scatter([1, 2, 3])
    assert executor.gather(xs) == [1, 2, 3]
    d = executor.scatter({"a": 1, "b": np.ones(3)})
    assert set(d) == {"a", "b"}
    assert executor.submit(tasks.array_sum, d["b"]).result(10) == 3.0


def test_scatter_places_data_where_who_has_says(executor):
    ranks = list(executor.workers)
    xs = executor.scatter(list(range(6)), workers=ranks)
    holders = executor.who_has(xs)
    assert [holders[f.key] for f in xs] == [[ranks[i % len(ranks)]] for i in range(6)]
    one = executor.scatter(np.zeros(100), workers=[ranks[-1]])
    assert executor.who_has([one]) == {one.key: [ranks[-1]]}
    assert one.owner == ranks[-1]
    assert executor.submit(tasks.rank, one).result(10) == ranks[-1]


def test_broadcast_puts_a_copy_on_every_worker(executor):
    b = executor.scatter(np.ones(1000), broadcast=True)
    assert executor.who_has([b])[b.key] == sorted(executor.workers)
    for rank in executor.workers:
        assert executor.submit(tasks.array_sum, b, workers=[rank], pure=False).result(10) == 1000


def test_scatter_hash_gives_shared_or_unique_keys(executor):
    assert executor.scatter(5).key == executor.scatter(5).key
    assert executor.scatter(5, hash=False).key != executor.scatter(5, hash=False).key


def test_gather_timeout_bounds_the_wait_and_the_tasks_run_on(executor):
    quick, slow = executor.submit(tasks.inc, 1), executor.submit(tasks.slow_inc, 1, 1.5)
    for errors in ("raise", "skip"):
        with pytest.raises(TimeoutError, match="1 of 2 futures did not end within 0.2 s; "
                                               "their tasks keep running"):
            executor.gather([quick, slow], errors=errors, timeout=0.2)
    assert executor.gather({"q": quick, "s": [slow]}, timeout=30) == {"q": 2, "s": [2]}
    assert executor.gather([quick], timeout=0) == [2]  # ended already: no wait needed
    for bad, kind in ((-1, ValueError), ("1", TypeError)):
        with pytest.raises(kind, match="timeout"):
            executor.gather(quick, timeout=bad)


def test_gather_can_skip_errors(executor):
    good, bad = executor.submit(tasks.inc, 1), executor.submit(tasks.fail, "x")
    assert executor.gather([good, bad, good], errors="skip") == [2, 2]
    assert executor.gather({"g": good, "b": bad}, errors="skip") == {"g": 2}
    with pytest.raises(ValueError):
        executor.gather([good, bad])
    with pytest.raises(ValueError, match="errors"):
        executor.gather([good], errors="ignore")
    assert executor.gather(bad, errors="skip") is None  # a single failed future


def test_map_in_batches_takes_endless_iterables(executor):
    futures = executor.map(tasks.inc, itertools.count(), batch_size=10, pure=False)
    first = [f.result(10) for f in itertools.islice(futures, 25)]
    assert first == list(range(1, 26))
    assert isinstance(executor.map(tasks.inc, [1]), list)
    for bad in (0, 10**30):  # (islice's own message for the second, before)
        with pytest.raises(ValueError, match="batch_size must be an int from 1 to "):
            executor.map(tasks.inc, [1], batch_size=bad)


def test_starmap(executor):
    assert [f.result(10) for f in executor.starmap(tasks.add, [(1, 2), (3, 4)])] == [3, 7]


def test_priorities_order_execution_on_one_worker(executor):
    rank = list(executor.workers)[0]
    blocker = executor.submit(tasks.sleep, 0.5, workers=[rank], pure=False)
    order = [0, 3, 1, 5, 2, 4]
    fs = [executor.submit(tasks.started_at, p, priority=p, workers=[rank], pure=False)
          for p in order]
    blocker.result(10)
    started = sorted((f.result(10)[1], f.result(10)[0]) for f in fs)
    assert [p for _, p in started] == sorted(order, reverse=True)


def test_equal_priorities_run_first_in_first_out(executor):
    rank = list(executor.workers)[0]
    executor.submit(tasks.sleep, 0.3, workers=[rank], pure=False)
    fs = [executor.submit(tasks.started_at, i, workers=[rank], pure=False) for i in range(6)]
    started = sorted((f.result(10)[1], f.result(10)[0]) for f in fs)
    assert [i for _, i in started] == list(range(6))


def test_retries_are_counted_exactly(executor, tmp_path):
    ok = executor.submit(tasks.flaky, str(tmp_path / "a"), 2, retries=2, pure=False)
    assert ok.result(20) == 3
    bad = executor.submit(tasks.flaky, str(tmp_path / "b"), 2, retries=1, pure=False)
    with pytest.raises(RuntimeError, match="attempt 2 fails"):
        bad.result(20)
    assert (tmp_path / "b").read_text() == "xx"
    bad.retry()
    assert bad.result(20) == 3
    assert bad.status == "finished"


def test_retrying_a_dependent_reruns_the_failed_input_it_needs(executor, tmp_path):
    source = executor.submit(tasks.flaky, str(tmp_path / "a"), 1, pure=False)
    step = executor.submit(tasks.inc, source)
    final = executor.submit(tasks.add, step, 10)
    with pytest.raises(RuntimeError, match="attempt 1 fails"):
        final.result(20)
    assert source.status == step.status == "error"
    final.retry()  # as after fixing the cause: the failed chain runs again, in order
    assert final.result(20) == 2 + 1 + 10
    assert (source.result(5), step.result(5)) == (2, 3)  # their futures got the new run's
    assert (tmp_path / "a").read_text() == "xx"


def test_retrying_a_pipeline_whose_steps_you_did_not_keep_reruns_its_failed_steps(executor,
                                                                                 tmp_path):
    final = executor.submit(tasks.add, executor.submit(
        tasks.inc, executor.submit(tasks.flaky, str(tmp_path / "a"), 1, pure=False)), 10)
    with pytest.raises(RuntimeError, match="attempt 1 fails"):
        final.result(20)
    final.retry()
    assert final.result(20) == 2 + 1 + 10


def test_retrying_the_failed_first_step_reruns_the_steps_that_failed_with_it(executor,
                                                                           tmp_path):
    source = executor.submit(tasks.flaky, str(tmp_path / "a"), 1, pure=False)
    final = executor.submit(tasks.add, executor.submit(tasks.inc, source), 10)
    with pytest.raises(RuntimeError, match="attempt 1 fails"):
        final.result(20)
    source.retry()
    assert (source.result(20), final.result(20)) == (2, 2 + 1 + 10)


def test_retrying_one_failed_input_reruns_the_other_failed_inputs_of_its_dependents(
        executor, tmp_path):
    a = executor.submit(tasks.flaky, str(tmp_path / "a"), 1, pure=False)
    b = executor.submit(tasks.flaky, str(tmp_path / "b"), 1, pure=False)
    both, after_b = executor.submit(tasks.add, a, b), executor.submit(tasks.inc, b)
    for f in (a, b):
        with pytest.raises(RuntimeError, match="attempt 1 fails"):
            f.result(20)
    a.retry()  # both needs b too, which failed on its own: it runs again as well
    assert (both.result(20), after_b.result(20)) == (2 + 2, 3)
    assert (tmp_path / "b").read_text() == "xx"


def test_allow_other_workers_is_only_a_preference(executor):
    rank = list(executor.workers)[0]
    fs = [executor.submit(tasks.rank, i, workers=[rank], allow_other_workers=True, pure=False)
          for i in range(20)]
    assert set(f.result(10) for f in fs) <= set(executor.workers)


def test_run_calls_every_worker(executor):
    hosts = executor.run(tasks.hostname)
    assert sorted(hosts) == sorted(executor.workers)
    assert executor.run(tasks.add, 1, y=2) == {r: 3 for r in executor.workers}
    assert executor.run(dict, a=1, timeout=10) == {r: {"a": 1} for r in executor.workers}
    with pytest.raises(ValueError, match="timeout"):
        executor.run(dict, timeout=-1)
    with pytest.raises(ValueError, match="from run"):
        executor.run(tasks.fail, "from run")
    assert executor.workers == hosts
    assert executor.nworkers == len(hosts)


def test_cancel_and_fire_and_forget(executor, tmp_path):
    rank = list(executor.workers)[0]
    executor.submit(tasks.sleep, 0.3, workers=[rank], pure=False)
    pending = executor.submit(tasks.inc, 5, workers=[rank], pure=False)
    child = executor.submit(tasks.inc, pending)
    executor.cancel([pending])
    assert pending.cancelled()
    with pytest.raises(cf.CancelledError):
        child.result(10)
    path = tmp_path / "forgotten"
    f = executor.submit(tasks.touch, str(path), pure=False)
    executor.fire_and_forget(f)
    del f
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.read_text() == "done"


def test_future_traceback_release_and_owner(executor):
    bad = executor.submit(tasks.fail, "traced")
    text = bad.traceback(10)
    assert "ValueError: traced" in text and "in fail" in text
    good = executor.submit(tasks.make_array, 10, pure=False)
    assert good.traceback(10) is None
    assert good.owner in executor.workers
    good.release()
    deadline = time.monotonic() + 10
    while executor.who_has([good])[good.key] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert executor.who_has([good])[good.key] == []
    with pytest.raises(ValueError, match="released"):
        executor.submit(tasks.inc, good)


def test_a_raising_callback_is_logged_and_others_still_run(executor):
    ran = threading.Event()
    f = executor.submit(tasks.inc, 1, pure=False)

    def bad(_):
        raise RuntimeError("callback failed on purpose")

    f.add_done_callback(bad)
    f.add_done_callback(lambda _: ran.set())
    assert ran.wait(10)
    assert executor.submit(tasks.inc, 2).result(10) == 3


def test_a_callback_added_to_a_done_future_runs_on_the_callback_thread(executor):
    """As one added before the end: never on the caller's thread, where a raising callback
    (sys.exit included) would end the script."""
    import queue
    import sys

    f = executor.submit(tasks.inc, 1, pure=False)
    f.result(30)
    where: queue.SimpleQueue = queue.SimpleQueue()
    f.add_done_callback(lambda _: sys.exit("callback exits on purpose"))  # logged only
    f.add_done_callback(lambda _: where.put(threading.current_thread().name))
    assert where.get(timeout=10) == "mpifutures-callbacks"


def test_await_in_asyncio(executor):
    async def main():
        a = executor.submit(tasks.inc, 1)
        b = executor.submit(tasks.add, a, 10)
        return await a, await b

    assert asyncio.run(main()) == (2, 12)


def test_module_level_wait_and_as_completed(executor):
    fast = executor.submit(tasks.inc, 1, pure=False)
    slow = executor.submit(tasks.sleep, 1.0, pure=False)
    done, not_done = mpifutures.wait([fast, slow], return_when=mpifutures.FIRST_COMPLETED)
    assert fast in done and slow in not_done
    done, _ = mpifutures.wait([fast, slow], timeout=10)
    assert done == {fast, slow}
    with pytest.raises(ValueError):
        mpifutures.wait([fast], return_when="SOMETIME")
    with pytest.raises(ValueError):
        mpifutures.wait([fast], timeout=-1)


def test_as_completed_accepts_futures_added_while_iterating(executor):
    ac = mpifutures.as_completed([executor.submit(tasks.inc, 0, pure=False)],
                                 with_results=True)
    seen = []
    for future, value in ac:
        seen.append(value)
        if value < 5:
            ac.add(executor.submit(tasks.inc, value, pure=False))
    assert seen == [1, 2, 3, 4, 5]
    slow = executor.submit(tasks.sleep, 2.0, pure=False)
    with pytest.raises(cf.TimeoutError):
        list(mpifutures.as_completed([slow], timeout=0.2))


def test_shutdown_cancel_futures_and_calls_after_shutdown(cluster):
    ex = mpifutures.Executor(cluster=cluster)
    rank = list(ex.workers)[0]
    ex.submit(tasks.sleep, 0.3, workers=[rank], pure=False)
    queued = ex.submit(tasks.inc, 1, workers=[rank], pure=False)
    ex.shutdown(wait=True, cancel_futures=True)
    assert queued.cancelled()
    calls = {
        "submit": lambda: ex.submit(tasks.inc, 1), "map": lambda: ex.map(tasks.inc, [1]),
        "scatter": lambda: ex.scatter(1), "run": lambda: ex.run(tasks.inc, 1),
        "who_has": lambda: ex.who_has(), "cancel": lambda: ex.cancel([queued]),
        "fire_and_forget": lambda: ex.fire_and_forget([queued]),
        "starmap": lambda: ex.starmap(tasks.add, [(1, 2)]),
        "gather": lambda: ex.gather([queued]), "statistics": lambda: ex.statistics(),
        "get_task_stream": lambda: ex.get_task_stream(),
    }
    for name, call in calls.items():
        with pytest.raises(RuntimeError, match=f"cannot {name} after shutdown"):
            call()


def test_shutdown_without_waiting_cancels_what_is_pending(cluster):
    ex = mpifutures.Executor(cluster=cluster)
    slow = ex.submit(tasks.sleep, 0.5, pure=False)
    waiter = ex.submit(tasks.inc, slow, pure=False)
    ex.shutdown(wait=False)
    for f in (slow, waiter):  # their keys were released: they end now, never hang
        with pytest.raises(cf.CancelledError):
            f.result(10)


def test_submits_from_four_threads_and_callbacks_that_submit(executor):
    results: dict[int, list] = {}

    def client(t):
        fs = [executor.submit(tasks.add, t * 1000, i, pure=False) for i in range(300)]
        results[t] = [f.result(30) for f in fs]

    threads = [threading.Thread(target=client, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert all(results[t] == [t * 1000 + i for i in range(300)] for t in range(4))
    chained, done = [], threading.Event()

    def resubmit(f):
        chained.append(executor.submit(tasks.inc, f.result(), pure=False))
        done.set()

    executor.submit(tasks.inc, 1, pure=False).add_done_callback(resubmit)
    assert done.wait(10) and chained[0].result(10) == 3


class TestPoolExecutor:
    @pytest.fixture
    def pool(self, cluster):
        p = PoolExecutor(cluster=cluster)
        yield p
        p.shutdown(wait=False, cancel_futures=True)

    def test_map_yields_results_in_order(self, pool):
        assert list(pool.map(tasks.add, range(10), range(10))) == list(range(0, 20, 2))
        assert list(pool.map(tasks.inc, range(25), chunksize=4)) == list(range(1, 26))
        assert list(pool.starmap(tasks.add, [(1, 1), (2, 2)])) == [2, 4]
        assert isinstance(pool, cf.Executor)

    def test_map_raises_at_iteration_and_times_out(self, pool):
        results = pool.map(tasks.fail, ["first"])
        with pytest.raises(ValueError, match="first"):
            next(results)
        it = pool.map(tasks.sleep, [0.01, 2.0], timeout=0.5)
        assert next(it) == 0.01
        with pytest.raises(cf.TimeoutError):
            next(it)
        with pytest.raises(ValueError):
            pool.map(tasks.inc, [1], chunksize=0)

    def test_a_map_timing_out_cancels_the_call_it_waited_for_too(self, pool, tmp_path):
        busy = [pool.submit(tasks.sleep, 0.5) for _ in range(2 * len(pool._executor.workers))]
        it = pool.map(tasks.touch, [str(tmp_path / "ran")], timeout=0.1)
        with pytest.raises(cf.TimeoutError, match=r"0\.1 s after the call; the calls not"):
            next(it)
        pool.shutdown(wait=True)
        assert all(f.done() for f in busy) and not (tmp_path / "ran").exists()

    def test_a_calls_own_timeout_error_comes_through_map_as_it_was(self, pool):
        with pytest.raises(TimeoutError, match="the call's own timeout") as raised:
            list(pool.map(tasks.raise_own_timeout, [1]))
        assert raised.value.__cause__ is not None  # the worker's traceback

    def test_submit_and_shutdown_follow_the_standard_library(self, pool):
        f = pool.submit(tasks.inc, 1)
        assert f.result(10) == 2
        pool.shutdown(wait=True)
        with pytest.raises(RuntimeError, match="after shutdown"):
            pool.submit(tasks.inc, 1)
        with PoolExecutor(cluster=pool._executor._cluster) as p2:
            futures = [p2.submit(tasks.slow_inc, i, 0.05) for i in range(4)]
        assert all(f.done() for f in futures)

    def test_every_keyword_goes_to_the_function(self, pool):
        assert pool.submit(tasks.total, 1, priority=5, key=2, workers=3, retries=4,
                           pure=5, allow_other_workers=6).result(10) == 26
        assert pool.submit(sorted, [3, -5, 1], key=abs).result(10) == [1, 3, -5]

    def test_calls_whose_futures_are_dropped_still_run(self, cluster, tmp_path):
        import gc
        import os

        with PoolExecutor(cluster=cluster) as p:
            p.map(tasks.touch, [str(tmp_path / f"m{i}") for i in range(4)])  # not consumed
            for i in range(4):
                p.submit(tasks.touch, str(tmp_path / f"s{i}"))  # future dropped
            gc.collect()
        assert len(os.listdir(tmp_path)) == 8  # shutdown(wait=True) waited for all of them

    def test_shutdown_without_waiting_lets_pending_calls_finish(self, cluster):
        p = PoolExecutor(cluster=cluster)
        results = p.map(tasks.slow_inc, range(4), [0.1] * 4)
        p.shutdown(wait=False)
        with pytest.raises(RuntimeError, match="after shutdown"):
            p.submit(tasks.inc, 1)
        assert list(results) == [1, 2, 3, 4]  # as with the standard library's pools
