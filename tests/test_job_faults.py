"""Faults that end the job, and load: whole programs under mpiexec, each with a timeout."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from tests.mpirun import ROOT, kill_tree, mpi_vendor, mpiexec

ENV = {"PYTHONPATH": ROOT}


def launch(n, code, timeout=60, env=None):
    return mpiexec(n, ["-m", "mpifutures", "-c", textwrap.dedent(code)], timeout=timeout,
                   env={**ENV, **(env or {})})


@pytest.mark.parametrize("call, expect", [
    ("submit(faults.crash_exit)", r"task 'crash_exit-\w+' called os._exit\(3\) on rank \d"),
    # status 0 too must not end the job as a success; nor must os._exit given as the task
    ("submit(faults.crash_exit, 0)", r"task 'crash_exit-\w+' called os._exit\(0\) on rank"),
    ("submit(os._exit, 0)", r"task '_exit-\w+' called os._exit\(0\) on rank \d"),
    ("run(os._exit, 0)", r"a function given to run\(\) called os._exit\(0\) on rank \d"),
    ("submit(faults.crash_segfault)", r"Segmentation fault[\s\S]*mpifutures worker rank \d, "
                                      r"running a task 'crash_segfault'"),
])
def test_a_dying_worker_ends_the_job_and_names_rank_and_task(call, expect):
    start = time.monotonic()
    r = launch(3, f"""
        import os
        from concurrent.futures import Future
        from mpifutures import Executor
        from tests import faults
        out = Executor().{call}
        if isinstance(out, Future):
            out.result(timeout=60)
        print("the script went on")
    """)
    assert not r.timed_out and r.returncode != 0, str(r)  # str: the whole output, stacks too
    assert time.monotonic() - start < 30
    assert re.search(expect, r.stderr), str(r)
    assert "the script went on" not in r.stdout, str(r)


def _running(p):
    """False once ``p`` has ended (a zombie has ended, only not been reaped)."""
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("sig, waiting", [(signal.SIGTERM, "script"), (signal.SIGINT, "script"),
                                         (signal.SIGTERM, "thread"), (signal.SIGTERM, "pool"),
                                         (signal.SIGTERM, "script and thread"),
                                         (signal.SIGINT, "atexit"),
                                         (signal.SIGTERM, "error and thread"),
                                         (signal.SIGINT, "worker holding its GIL")])
def test_a_signal_to_mpiexec_ends_every_rank_promptly(sig, waiting):
    # The script has ended in "thread", "pool", "atexit" and "error and thread": rank 0 waits
    # for a thread it started, for PoolExecutor calls still running after
    # shutdown(wait=False), or in one of its atexit handlers. In "script and thread", Python
    # would wait for the thread after the script was interrupted.
    code = textwrap.dedent(f"""
        import threading, time
        from mpifutures import Executor, PoolExecutor
        ex = Executor()
        ex.submit(time.sleep, 600)

        def wait():
            time.sleep(0 if {waiting!r} == "script" else 0.3)
            print("running", flush=True)
            time.sleep(600)

        if {waiting!r} == "thread":
            threading.Thread(target=wait).start()
        elif {waiting!r} == "script and thread":
            threading.Thread(target=time.sleep, args=(600,)).start()
            wait()
        elif {waiting!r} == "atexit":
            import atexit
            atexit.register(wait)
        elif {waiting!r} == "worker holding its GIL":
            from tests import faults
            held = [ex.submit(faults.hold_gil_forever, pure=False) for _ in range(2)]
            time.sleep(1.0)  # both have started: no worker's loop can answer any more
            wait()
        elif {waiting!r} == "error and thread":
            threading.Thread(target=wait).start()
            raise ValueError("the script failed on purpose")
        elif {waiting!r} == "pool":
            pool = PoolExecutor()
            calls = [pool.submit(time.sleep, 600) for _ in range(2)]
            pool.shutdown(wait=False)
            threading.Thread(target=wait, daemon=True).start()
        else:
            wait()
    """)
    cmd = ["mpiexec", "-n", "3", sys.executable, "-m", "mpifutures", "-c", code]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env={**os.environ, **ENV})
    try:
        assert proc.stdout.readline().strip() == "running"
        family = psutil.Process(proc.pid).children(recursive=True)  # ranks, proxies
        sent = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        assert time.monotonic() - sent < 6  # (within seconds, not SHUTDOWN_TIMEOUT's 10)
        deadline = time.monotonic() + 5
        while any(map(_running, family)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(map(_running, family)), f"left running: {family}"
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
            proc.communicate()
    assert proc.returncode != 0
    if mpi_vendor() == "openmpi" or waiting == "error and thread":
        # prterun ends the ranks itself (SIGCONT, SIGTERM, SIGKILL within about 0.5 s) and
        # stops forwarding their output at once: rank 0's message cannot reach the terminal.
        # So does MPICH's mpiexec once the workers have left (after an error, here).
        return
    assert "mpifutures: the job was interrupted" in err, err
    assert proc.returncode == 128 + sig, (proc.returncode, err)


def test_an_endless_task_times_out_and_the_job_still_ends():
    start = time.monotonic()
    r = launch(3, """
        import concurrent.futures as cf
        from mpifutures import Executor
        from tests import faults
        ex = Executor()
        stuck = ex.submit(faults.hang_forever)
        try:
            stuck.result(timeout=2)
        except cf.TimeoutError:
            print("timed out as asked")
        ex.shutdown(wait=True, cancel_futures=True)
        print("shut down")
    """, env={"MPIFUTURES_SHUTDOWN_TIMEOUT": "5"}, timeout=60)
    assert "timed out as asked" in r.stdout and "shut down" in r.stdout, r
    assert r.returncode == 0, r
    assert time.monotonic() - start < 25


@pytest.mark.slow
def test_200k_dropped_tasks_keep_memory_flat():
    r = launch(3, """
        import os, time
        from mpifutures import Executor
        from tests import tasks

        def rss(*_):
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

        ex = Executor()
        def all_rss():
            ranks = {w: ex.submit(rss, w, workers=[w], pure=False) for w in ex.workers}
            return [rss()] + [f.result() for f in ranks.values()]
        window = []
        for i in range(200_000):
            window.append(ex.submit(tasks.inc, i, pure=False))
            if len(window) == 2000:
                ex.gather(window)
                window = []
            if i == 20_000:
                warm = all_rss()
        end = all_rss()
        print("growth MB", max(e - w for e, w in zip(end, warm)))
        print("left", ex.statistics()["tasks_in_scheduler"])
    """, timeout=600)
    assert r.returncode == 0, r
    growth = float(re.search(r"growth MB ([-\d.]+)", r.stdout).group(1))
    assert growth < 50, r


@pytest.mark.slow
def test_a_3gb_array_moves_worker_to_worker_and_to_rank0_intact():
    r = launch(3, """
        import numpy as np
        from mpifutures import Executor

        def make(n):
            a = np.arange(n, dtype=np.uint8)
            return a

        def checksum(a):
            return int(a[::4096].astype(np.uint64).sum()), int(a.size), int(a[-1])

        ex = Executor()
        a, b = list(ex.workers)
        n = 3 * 2**30 + 12345
        x = ex.submit(make, n, workers=[a])
        there = ex.submit(checksum, x, workers=[b]).result(timeout=300)
        local = ex.submit(checksum, x, workers=[a]).result(timeout=300)
        here = checksum(x.result(timeout=300))
        print("sums", here == there == local, here)
        print("moved", ex.statistics()["bytes_between_workers"] >= n)
    """, timeout=600)
    assert r.returncode == 0, r
    assert "sums True" in r.stdout and "moved True" in r.stdout, r


def test_a_script_failing_after_a_pool_shut_down_without_waiting_ends_promptly():
    # At a clean exit the pending calls of such a pool run first (as the standard library
    # does); after an error the job ends within seconds instead.
    start = time.monotonic()
    r = launch(3, """
        from mpifutures import PoolExecutor
        from tests import faults
        pool = PoolExecutor()
        calls = [pool.submit(faults.hang_forever) for _ in range(2)]
        pool.shutdown(wait=False)
        raise RuntimeError("the script failed")
    """, env={"MPIFUTURES_SHUTDOWN_TIMEOUT": "5"}, timeout=90)
    assert "the script failed" in r.stderr and r.returncode != 0, r
    assert not r.timed_out and time.monotonic() - start < 45, r
