"""Noticing a dead rank on the same machine (mpifutures.liveness), without MPI: real processes
for the checks, an in-process cluster for what rank 0 and the workers do about a death."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from mpifutures import Executor, PoolExecutor, WorkerLostError, liveness, protocol as P
from mpifutures.config import Config
from mpifutures.errors import ExecutorClosedError
from mpifutures.local import LocalCluster
from mpifutures.transport import LocalFabric
from mpifutures.worker import Worker
from tests import tasks

pytestmark = pytest.mark.skipif(liveness.machine() is None, reason="needs Linux's /proc")


def ended_process() -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child


def test_a_process_is_alive_until_it_ends_zombie_or_reaped():
    assert liveness.alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        assert liveness.alive(child.pid)
        child.stdin.close()
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # ended, not yet reaped
        assert not liveness.alive(child.pid)  # a zombie
    finally:
        child.wait()
    assert not liveness.alive(child.pid)  # gone


def test_ranks_on_one_machine_share_its_identity():
    here = liveness.machine()
    out = subprocess.run([sys.executable, "-c", "from mpifutures import liveness; "
                          "print(liveness.machine())"], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == here


def test_a_watch_skips_its_own_process_and_reports_each_death_once():
    dead = ended_process().pid
    watch = liveness.Watch({0: os.getpid(), 2: dead, 3: os.getppid()}, now=0.0)
    assert watch.peers == {2: dead, 3: os.getppid()}
    assert watch.next == liveness.PERIOD
    assert watch.dead(now=5.0) == [(2, dead)] and watch.next == 5.0 + liveness.PERIOD
    assert watch.dead(now=7.0) == []


def test_a_worker_tells_rank_0_of_a_dead_worker_and_aborts_the_job_if_rank_0_died():
    worker = Worker(LocalFabric(4).endpoints[1], Config())
    dead = ended_process().pid
    with worker.lock:
        worker._handle(0, (P.PEERS, {2: dead, 3: os.getppid()}))
    worker.watch.next = 0.0
    worker._turn()
    sent = worker.t.fabric.endpoints[0].inbox
    assert any((P.LOST, 2, dead) in msgs for _, msgs in map(_unpacked, sent))
    assert worker.watch.peers == {3: os.getppid()}
    with worker.lock:
        worker._handle(0, (P.PEERS, {0: dead}))
    worker.watch.next = 0.0
    with pytest.raises(RuntimeError, match="aborted with code 1"):  # the local transport's
        worker._turn()


def _unpacked(entry):
    from mpifutures.transport import unpack

    source, header, buffers = entry
    return source, unpack(header, buffers)


def test_the_ranks_of_each_machine_watch_each_other_in_a_ring_that_grows_with_each_hello():
    cluster = LocalCluster(5)
    try:
        scheduler = cluster.scheduler
        here = liveness.machine()
        # Everything below runs on the scheduler thread (query), between its steps: the
        # workers' real HELLOs and the thread's own sends must not interleave with it.
        deadline = time.monotonic() + 30
        while scheduler.query(lambda s: len(s._pids) < len(s.workers)):  # all HELLOs in
            assert time.monotonic() < deadline, "the workers' HELLOs did not all arrive"
            time.sleep(0.01)

        def hello(rank, pid, machine):  # what _on_message does with a HELLO, and its sends
            def on_the_thread(s):
                s._pids[rank] = (pid, machine)
                s._join_ring(rank)
                sent = {r: msgs[-1][1] for r, msgs in s.outbox.items() if msgs}
                s.outbox.clear()
                if s.watch:
                    s.watch.next = float("inf")  # made-up pids: never checked, however slow
                return sent, dict(s.watch.peers) if s.watch else None

            return scheduler.query(on_the_thread)

        scheduler.query(lambda s: (s._pids.clear(), s.outbox.clear()))
        assert hello(3, 103, here) == ({3: {0: os.getpid()}}, {3: 103})  # 0 -> 3 -> 0
        assert hello(2, 102, "elsewhere") == ({}, {3: 103})  # alone on its machine
        assert hello(1, 101, here) == ({1: {3: 103}}, {1: 101})  # 0 -> 1 -> 3 -> 0
        assert hello(5, 105, "there") == ({}, {1: 101})
        assert hello(4, 104, "there") == ({5: {4: 104}, 4: {5: 105}}, {1: 101})
        assert hello(6, os.getpid(), here) == ({}, {1: 101})  # a thread of rank 0: no
        scheduler.query(lambda s: setattr(s, "watch", None))  # (its pids are made up)
    finally:
        assert cluster.close()


def test_a_lost_worker_fails_every_future_with_an_error_naming_it_and_its_task():
    cluster = LocalCluster(2)
    ex = Executor(cluster=cluster.scheduler)
    f = ex.submit(tasks.sleep, 2, workers=[1], pure=False)
    deadline = time.monotonic() + 30
    while f.key not in cluster.workers[0].pending and time.monotonic() < deadline:
        time.sleep(0.01)
    other = cluster.workers[1]
    with other.lock:  # worker 2 reports worker 1 dead
        other.outbox[0].append((P.LOST, 1, 4321))
    other.backoff.wake.set()
    with pytest.raises(WorkerLostError, match=rf"worker rank 1 \(pid 4321 on .*\) has died, "
                                              rf"running \['{f.key}'\].*noticed by rank 2"):
        f.result(timeout=30)
    try:
        ex.submit(abs, 1)
    except ExecutorClosedError as exc:  # kept, and with it (its traceback) the new future
        kept = exc
    assert "cluster is gone: worker rank 1" in str(kept)
    pool = PoolExecutor(cluster=cluster.scheduler)
    with pytest.raises(ExecutorClosedError, match="cluster is gone: worker rank 1"):
        pool.submit(abs, 1)  # the reason, not "cannot schedule new futures after shutdown"
    pool.shutdown()
    ex.shutdown()  # quiet, and no wait for the future the failed submit made
    cluster.scheduler.stop(timeout=1)  # the workers are told nothing: end them here
    for worker in cluster.workers:
        worker.running = False
        worker.backoff.wake.set()


def test_a_worker_that_stopped_or_is_stopping_is_not_lost_when_its_process_ends():
    cluster = LocalCluster(2)
    scheduler = cluster.scheduler
    try:
        scheduler._stopped.add(1)  # as when its STOPPED came before the others'
        scheduler._lost(1, 1234)  # no error: it said goodbye
        scheduler._stopped.discard(1)
        scheduler._stopping = time.monotonic() + 60  # STOP sent: a peer may report it first
        scheduler._lost(2, 1235)
        scheduler._stopping = None
        with pytest.raises(WorkerLostError):
            scheduler._lost(2, 1235)
    finally:
        assert cluster.close()
