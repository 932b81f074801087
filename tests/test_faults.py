"""Faults inside tasks: each fails only its own future (and dependents); the worker serves on.

Part of the behaviour suite (in-process and under mpiexec).
"""

from __future__ import annotations

import concurrent.futures as cf
import gc
import time

import pytest

from mpifutures import RemoteTraceback, SerializationError
from tests import faults, tasks


def assert_worker_alive(executor):
    assert [f.result(10) for f in executor.map(tasks.inc, range(4), pure=False)] == [1, 2, 3, 4]


def assert_names_key_and_rank(exc, key):
    cause = exc.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert key in cause.text and "on rank " in cause.text


@pytest.mark.parametrize("fn, error, match", [
    (faults.raise_memory_error, MemoryError, "no memory left"),
    (faults.recurse, RecursionError, "recursion"),
    (faults.make_fails_to_pickle, SerializationError, "FailsToPickle"),
])
def test_task_faults_fail_only_their_future(executor, fn, error, match):
    # In-process, a worker's thread shares rank 0's heap: garbage of earlier tests that the
    # cycle collector found during the deep recursion ran its weakref callbacks there, at
    # the recursion limit (an unraisable RecursionError). A worker rank holds no futures.
    gc.collect()
    gc.disable()
    try:
        f = executor.submit(fn, pure=False)
        dependent = executor.submit(tasks.identity, f)
        with pytest.raises(error, match=match) as info:
            f.result(30)
        assert_names_key_and_rank(info.value, f.key)
        with pytest.raises(error):
            dependent.result(30)
    finally:
        gc.enable()
    assert_worker_alive(executor)


def test_argument_that_fails_to_unpickle_on_the_worker(executor):
    f = executor.submit(faults.use, faults.FailsToUnpickle(), pure=False)
    with pytest.raises(SerializationError, match="failed to unpickle on rank") as info:
        f.result(30)
    assert f.key in str(info.value)
    assert_worker_alive(executor)


def test_result_that_fails_to_unpickle_on_rank0(executor):
    f = executor.submit(faults.make_unpicklable_only_on_rank0, pure=False)
    with pytest.raises(SerializationError, match="failed to unpickle"):
        f.result(30)
    assert f.status == "finished"  # the task ran; only the trip to rank 0 failed
    assert executor.submit(faults.use, f, pure=False).result(30) == "UnpicklesOnlyOnWorkers"
    assert_worker_alive(executor)


def test_dependency_that_fails_to_unpickle_on_the_fetching_worker(executor):
    ranks = list(executor.workers)
    assert len(ranks) >= 2, "the suite runs with two workers, so the input is fetched"
    bad = executor.submit(faults.make_fails_to_unpickle, workers=[ranks[0]], pure=False)
    user = executor.submit(faults.use, bad, workers=[ranks[1]], pure=False)
    with pytest.raises(SerializationError, match=f"fetched from rank {ranks[0]}"):
        user.result(30)
    assert_worker_alive(executor)


def test_endless_task_times_out_and_shutdown_still_completes(cluster):
    from mpifutures import Executor

    ex = Executor(cluster=cluster)
    stuck = ex.submit(tasks.sleep, 3, pure=False)
    start = time.monotonic()
    with pytest.raises(cf.TimeoutError):
        stuck.result(timeout=1)
    assert 0.9 < time.monotonic() - start < 2.5
    ex.shutdown(wait=True, cancel_futures=True)
    assert stuck.cancelled()
