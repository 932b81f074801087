"""Every way to start mpifutures: SPMD scripts, spawn mode, launcher options, wrong wiring."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from mpifutures import config as configmod
from mpifutures.errors import MpiFuturesError
from tests.mpirun import ROOT, mpiexec, run

ENV = {"PYTHONPATH": ROOT}


def run_as(how, path, timeout):
    """Run the script at ``path`` in spawn mode (plain python) or under the launcher."""
    if how == "spawn":
        return run([sys.executable, path], timeout=timeout, env=ENV)
    return mpiexec(3, ["-m", "mpifutures", path], timeout=timeout, env=ENV)


def script(tmp_path, body, name="job.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_spmd_init_returns_on_rank0_and_workers_exit_with_the_job(tmp_path):
    path = script(tmp_path, """
        import sys
        import mpifutures
        mpifutures.init()                      # workers serve here and exit with the job
        from mpi4py import MPI
        ex = mpifutures.Executor()
        print("rank", MPI.COMM_WORLD.rank, "got", ex.submit(sum, [1, 2]).result(), flush=True)
        sys.exit(int(sys.argv[1]))
    """)
    r = mpiexec(3, [path, "0"], timeout=60, env=ENV)
    assert r.returncode == 0, r
    assert r.stdout.count("got 3") == 1 and "rank 0 got 3" in r.stdout, r
    assert mpiexec(3, [path, "3"], timeout=60, env=ENV).returncode == 3


def test_spmd_context_manager(tmp_path):
    path = script(tmp_path, """
        import mpifutures
        from mpi4py import MPI
        with mpifutures.spmd() as ex:
            if ex is not None:
                print("result", ex.gather(ex.map(abs, [-1, -2])), flush=True)
        print("after", MPI.COMM_WORLD.rank, flush=True)
    """)
    r = mpiexec(3, [path], timeout=60, env=ENV)
    assert r.returncode == 0, r
    assert "result [1, 2]" in r.stdout and r.stdout.count("after") == 3, r


def test_two_spmd_blocks_one_after_the_other(tmp_path):
    path = script(tmp_path, """
        import mpifutures
        from mpi4py import MPI
        for round in (1, 2):  # a worker's loop thread is the script's main thread again
            with mpifutures.spmd() as ex:
                if ex is not None:
                    print("round", round, ex.gather(ex.map(abs, [-round])), flush=True)
            assert MPI.COMM_WORLD.allreduce(1) == 3
    """)
    r = mpiexec(3, [path], timeout=60, env=ENV)
    assert r.returncode == 0, r
    assert "round 1 [1]" in r.stdout and "round 2 [2]" in r.stdout, r


def test_log_level_and_rank_tags_apply_to_spmd_scripts_too(tmp_path):
    path = script(tmp_path, """
        import logging
        import mpifutures
        with mpifutures.spmd() as ex:
            if ex is not None:
                logging.getLogger("mpifutures.user").info("from the script")
                ex.submit(abs, -1).result()
    """)
    r = mpiexec(3, [path], timeout=60, env={**ENV, "MPIFUTURES_LOG_LEVEL": "INFO"})
    assert r.returncode == 0, r
    assert "rank 0 mpifutures.user INFO: from the script" in r.stderr, r


def test_spawn_mode_spawns_and_shutdown_ends_the_workers(tmp_path):
    path = script(tmp_path, """
        import os, time
        from mpifutures import Executor
        with Executor(max_workers=2) as ex:
            pids = set(ex.run(os.getpid).values())
            print("workers", ex.nworkers, ex.gather(ex.map(abs, [-3, -4])), flush=True)
            late = ex.submit(bytes, 100_000)   # finished, never fetched
            late.exception()
        def alive(pid):                        # a zombie has ended, only not been reaped
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
            except FileNotFoundError:
                return False
        deadline = time.monotonic() + 10
        while any(map(alive, pids)) and time.monotonic() < deadline:
            time.sleep(0.05)
        print("ended", not any(map(alive, pids)))
        try:
            late.result(timeout=10)            # its workers are gone: an error, not a hang
        except Exception as exc:
            print("late", type(exc).__name__)
        ex2 = Executor()                       # MPIFUTURES_MAX_WORKERS decides
        print("second", ex2.nworkers)          # no shutdown: ended at exit
    """)
    r = run([sys.executable, path], timeout=60, env={**ENV, "MPIFUTURES_MAX_WORKERS": "3"})
    assert r.returncode == 0, r
    assert "workers 2 [3, 4]" in r.stdout and "ended True" in r.stdout, r
    assert "second 3" in r.stdout and "late ExecutorClosedError" in r.stdout, r


@pytest.mark.parametrize("how", ["spawn", "launcher"])
def test_a_pool_runs_every_call_and_keeps_every_result_after_shutdown(tmp_path, how):
    path = script(tmp_path, f"""
        import os, time
        from mpifutures import PoolExecutor
        def touch(i):
            time.sleep(0.5)
            open(os.path.join({str(tmp_path)!r}, f"done{{i}}"), "w").close()
        def big(n):
            return bytes(n)
        pool = PoolExecutor({'max_workers=2' if how == 'spawn' else ''})
        for i in range(4):
            pool.submit(touch, i)
        pool.shutdown(wait=False)
        # Results stay readable after shutdown (these are too big to come with the reply).
        with PoolExecutor({'max_workers=2' if how == 'spawn' else ''}) as pool:
            done = pool.submit(big, 100_000)
            done.result()
            fs = [pool.submit(big, 100_000) for _ in range(3)]
            results = pool.map(big, [50_000] * 3)
        print("read after", len(done.result()), [len(f.result()) for f in fs], list(map(len, results)))
        with PoolExecutor({'max_workers=2' if how == 'spawn' else ''}) as pool:
            fs = [pool.submit(big, 100_000) for _ in range(2)]
            pool.shutdown(wait=False)
        print("read after wait=False", [len(f.result()) for f in fs])
        print("script ends", flush=True)
    """)
    r = run_as(how, path, timeout=60)
    assert r.returncode == 0 and "script ends" in r.stdout, r
    assert "read after 100000 [100000, 100000, 100000] [50000, 50000, 50000]" in r.stdout, r
    assert "read after wait=False [100000, 100000]" in r.stdout, r
    assert sorted(p.name for p in tmp_path.glob("done*")) == [f"done{i}" for i in range(4)], r


@pytest.mark.parametrize("how", ["launcher", "spawn"])
def test_at_a_normal_end_kept_tasks_and_calls_of_pools_never_shut_down_run_to_their_end(
        tmp_path, how):
    path = script(tmp_path, f"""
        import os, time
        import mpifutures
        from mpifutures import settle
        settle.KEPT_NOTICE_AFTER = 0.3
        def touch(name):
            time.sleep(1.5)
            open(os.path.join({str(tmp_path)!r}, name), "w").close()
        kw = {{'max_workers': 1}} if {how == 'spawn'} else {{}}
        ex = mpifutures.Executor(**kw)
        ex.fire_and_forget(ex.submit(touch, "kept", pure=False))
        pool = mpifutures.PoolExecutor(**kw)
        pool.submit(touch, "pooled")
        del pool  # never shut down, and gone: as with the standard library, its call runs
        print("script ends", flush=True)
    """)
    r = run_as(how, path, timeout=90)
    assert r.returncode == 0 and "script ends" in r.stdout, r
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".py") == ["kept", "pooled"]
    assert "waiting for" in r.stderr and "kept by fire_and_forget or a PoolExecutor" in r.stderr


def test_after_an_error_the_job_ends_without_waiting_for_kept_tasks(tmp_path):
    path = script(tmp_path, """
        import sys, time
        import mpifutures
        ex = mpifutures.Executor()
        ex.fire_and_forget(ex.submit(time.sleep, 600, pure=False))
        mpifutures.PoolExecutor().submit(time.sleep, 600)
        sys.exit(3)
    """)
    r = mpiexec(3, ["-m", "mpifutures", path], timeout=60, env=ENV)
    assert not r.timed_out and r.returncode == 3, r


@pytest.mark.parametrize("how", ["spawn", "init"])
def test_after_an_uncaught_error_spawn_mode_and_init_do_not_wait_for_kept_tasks(tmp_path, how):
    path = script(tmp_path, f"""
        import time
        import mpifutures
        if {how == 'init'}:
            mpifutures.init()
        ex = mpifutures.Executor(**({{}} if {how == 'init'} else {{'max_workers': 1}}))
        ex.fire_and_forget(ex.submit(time.sleep, 600, pure=False))
        raise ValueError("the script failed")
    """)
    r = run([sys.executable, path], timeout=60, env=ENV) if how == "spawn" else \
        mpiexec(3, [path], timeout=60, env=ENV)
    assert not r.timed_out and r.returncode == 1 and "the script failed" in r.stderr, r


def test_two_spawned_pools_shut_down_without_waiting_let_the_script_end(tmp_path):
    path = script(tmp_path, """
        import time
        from mpifutures import PoolExecutor
        pools = [PoolExecutor(max_workers=1), PoolExecutor(max_workers=1)]
        fs = [pool.submit(time.sleep, 0.5 + i / 2) for i, pool in enumerate(pools)]
        for pool in pools:
            pool.shutdown(wait=False)  # each stops its own workers once its calls ended
        print("results", [f.result(30) for f in fs], flush=True)
    """)
    r = run([sys.executable, path], timeout=60, env=ENV)
    assert not r.timed_out and r.returncode == 0 and "results [None, None]" in r.stdout, r


def test_spawned_workers_import_from_where_the_script_does(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "helpers_of_the_script.py").write_text("def triple(x):\n    return 3 * x\n")
    path = script(tmp_path, f"""
        import sys
        sys.path.insert(0, {str(lib)!r})  # a folder only this script knows of
        import helpers_of_the_script
        from mpifutures import Executor
        with Executor(max_workers=1) as ex:
            print("tripled", ex.submit(helpers_of_the_script.triple, 5).result(30))
    """)
    r = run([sys.executable, path], timeout=120, env=ENV)
    assert r.returncode == 0 and "tripled 15" in r.stdout, r


def test_spawned_workers_whose_scheduler_cannot_start_are_stopped(tmp_path):
    path = script(tmp_path, """
        import time, psutil
        import mpifutures.scheduler as s
        def broken(self):
            raise OverflowError("no room")
        s.Scheduler.start = broken
        from mpifutures import Executor
        def serving(p):
            try:
                return p.status() != "zombie" and "_worker_main" in " ".join(p.cmdline())
            except psutil.Error:  # ended
                return False
        def workers():
            return [p for p in psutil.Process().children(recursive=True) if serving(p)]
        try:
            Executor(max_workers=2)
        except OverflowError as exc:
            print("raised", exc, flush=True)
        deadline = time.monotonic() + 20
        while workers() and time.monotonic() < deadline:
            time.sleep(0.05)
        print("workers left", len(workers()), flush=True)
    """)
    r = run([sys.executable, path], timeout=60, env=ENV)
    assert r.returncode == 0 and "raised no room" in r.stdout, r
    assert "workers left 0" in r.stdout, r  # they waited for ever, and outlived the script


def test_spawn_failure_says_what_to_do_instead():
    class FakeMPI:
        class Exception(Exception):
            pass

        class COMM_SELF:
            @staticmethod
            def Spawn(*args, **kwargs):
                raise FakeMPI.Exception("spawn not supported")

    from mpifutures.spawn import spawn_cluster
    with pytest.raises(MpiFuturesError, match="python -m mpifutures script.py"):
        spawn_cluster(FakeMPI, configmod.Config(max_workers=2), None)
    from mpifutures.launch import current_cluster  # checks max_workers for spawn_cluster
    with pytest.raises(ValueError, match="max_workers must be at least 1, not 0"):
        current_cluster(0)
    with pytest.raises(TypeError, match="max_workers must be an int, not '2'"):
        current_cluster("2")
    with pytest.raises(MpiFuturesError, match="could not spawn 2 worker"):  # numpy's ints too
        spawn_cluster(FakeMPI, configmod.Config(), np.int64(2))


@pytest.mark.parametrize("start", ["Executor()", "init()", "spmd().__enter__()"])
def test_a_launcher_of_another_mpi_is_detected(tmp_path, start):
    r = run([sys.executable, "-c", f"import mpifutures; mpifutures.{start}"], timeout=60,
            env={**ENV, "OMPI_COMM_WORLD_SIZE": "4"})
    assert r.returncode != 0
    assert "different MPI libraries" in r.stderr and "every process thinks it is rank 0" \
        in r.stderr, r


def test_launcher_options(tmp_path):
    r = mpiexec(2, ["-m", "mpifutures", "--mpi-info"], timeout=60, env=ENV)
    assert r.returncode == 0 and "thread level multiple" in r.stdout and "2 ranks" in r.stdout
    ran = script(tmp_path, "print('the script ran')", name="ran.py")
    r = mpiexec(2, ["-m", "mpifutures", "--mpi-info", ran], timeout=60, env=ENV)
    assert r.returncode == 0 and "2 ranks" in r.stdout and "the script ran" not in r.stdout, r
    path = script(tmp_path, """
        import threading, time
        from mpifutures import Executor
        def overlap(_):
            time.sleep(0.3)
            return threading.current_thread().name
        ex = Executor()
        start = time.monotonic()
        names = set(ex.gather(ex.map(overlap, range(4))))
        print("threads", len(names), "elapsed", round(time.monotonic() - start, 2))
    """)
    r = mpiexec(2, ["-m", "mpifutures", "--threads-per-worker", "4", "--backoff", "0.002",
                    path], timeout=60, env=ENV)
    assert r.returncode == 0 and "threads 4" in r.stdout, r
    r = run([sys.executable, "-m", "mpifutures", "--help"], timeout=60, env=ENV)
    assert "--threads-per-worker" in r.stdout and "MPIFUTURES_BACKOFF" in r.stdout


def test_settings_beyond_what_the_system_can_do_are_refused(monkeypatch):
    # Each was accepted, then hung the job (a rank-0 OverflowError before its scheduler
    # started), crashed a worker or left the first task waiting for minutes.
    for name, bad in (("MPIFUTURES_TASK_STREAM_MAX", "100000000000000000000"),
                      ("MPIFUTURES_BACKOFF", "1000"), ("MPIFUTURES_IDLE_BACKOFF", "1e300"),
                      ("MPIFUTURES_SHUTDOWN_TIMEOUT", "1e10"),
                      ("MPIFUTURES_GC_THRESHOLD", "10000000000000"),
                      ("MPIFUTURES_THREADS_PER_WORKER", "100000")):
        monkeypatch.setenv(name, bad)
        with pytest.raises(ValueError, match=f"{name}='{bad}' must be at most"):
            configmod.load()
        monkeypatch.delenv(name)


def test_a_bad_setting_is_said_once_and_a_bad_option_names_the_option():
    r = mpiexec(3, ["-m", "mpifutures", "-c", "print('ran')"], timeout=60,
                env={**ENV, "MPIFUTURES_BACKOFF": "1e300"})
    assert r.returncode == 2 and "ran" not in r.stdout, r
    assert r.stderr.count("MPIFUTURES_BACKOFF='1e300' must be at most 1.0\n") == 1, r
    assert "Traceback" not in r.stderr, r
    r = mpiexec(3, ["-m", "mpifutures", "--threads-per-worker", "0", "-c", "print('ran')"],
                timeout=60, env=ENV)
    assert r.returncode == 2 and "ran" not in r.stdout, r
    assert r.stderr.count("argument --threads-per-worker: '0' must be at least 1\n") == 1, r
    assert "MPIFUTURES_" not in r.stderr and "Traceback" not in r.stderr, r


def test_a_scheduler_that_cannot_start_ends_the_job_instead_of_leaving_the_workers_waiting():
    code = ("import sys, mpifutures.scheduler as s\n"
            "def broken(self): raise OverflowError('no room')\n"
            "s.Scheduler.start = broken\n"
            "from mpifutures.__main__ import main\n"
            "sys.exit(main(['-c', 'print(\"ran\")']))\n")
    r = mpiexec(3, ["-c", code], timeout=60, env=ENV)
    assert not r.timed_out and r.returncode != 0 and "ran" not in r.stdout, r
    assert "OverflowError: no room" in r.stderr, r
    assert "rank 0 could not start its scheduler; aborting the MPI job" in r.stderr, r


def test_an_unknown_option_is_named_alone_and_once():
    r = mpiexec(3, ["-m", "mpifutures", "--bogus", "x.py"], timeout=60, env=ENV)
    assert r.returncode == 2, r
    assert r.stderr.count("unrecognized arguments: --bogus\n") == 1, r


def test_bad_configuration_is_named(monkeypatch):
    monkeypatch.setenv("MPIFUTURES_BACKOFF", "fast")
    with pytest.raises(ValueError, match="MPIFUTURES_BACKOFF"):
        configmod.load()
    monkeypatch.setenv("MPIFUTURES_BACKOFF", "0.001")
    for bad in ("nan", "inf"):  # accepted once, then a successful job ended with status 1
        for name in ("MPIFUTURES_IDLE_AFTER", "MPIFUTURES_SHUTDOWN_TIMEOUT"):
            monkeypatch.setenv(name, bad)
            with pytest.raises(ValueError, match=f"{name}='{bad}' is not a finite number"):
                configmod.load()
            monkeypatch.delenv(name)
    monkeypatch.setenv("MPIFUTURES_SHUTDOWN_TIMEOUT", "0")
    with pytest.raises(ValueError, match="MPIFUTURES_SHUTDOWN_TIMEOUT='0' must be at least"):
        configmod.load()
    monkeypatch.delenv("MPIFUTURES_SHUTDOWN_TIMEOUT")
    monkeypatch.setenv("MPIFUTURES_THREADS_PER_WORKER", "0")
    with pytest.raises(ValueError, match="MPIFUTURES_THREADS_PER_WORKER"):
        configmod.load()
    monkeypatch.setenv("MPIFUTURES_THREADS_PER_WORKER", "1")
    monkeypatch.setenv("MPIFUTURES_MALLOC_KEEP", str(1 << 20))  # below glibc's 32 MB ceiling
    with pytest.raises(ValueError, match="MPIFUTURES_MALLOC_KEEP=1048576 must be 0 .* or at "
                                         "least 33554432"):
        configmod.load()
    monkeypatch.setenv("MPIFUTURES_MALLOC_KEEP", "0")
    assert configmod.load().malloc_keep == 0
    monkeypatch.setenv("MPIFUTURES_LOG_LEVEL", "LOUD")
    with pytest.raises(ValueError, match="MPIFUTURES_LOG_LEVEL='LOUD' must be one of DEBUG"):
        configmod.load()
    monkeypatch.setenv("MPIFUTURES_LOG_LEVEL", "info")
    assert configmod.load().log_level == "INFO"


def test_gc_threshold_is_raised_on_every_rank_but_never_lowered(tmp_path):
    path = script(tmp_path, """
        import gc
        from mpifutures import Executor
        ex = Executor()
        print("rank0", gc.get_threshold()[0])
        print("workers", sorted(set(t[0] for t in ex.run(gc.get_threshold).values())))
    """)
    r = mpiexec(3, ["-m", "mpifutures", path], timeout=60, env=ENV)
    assert r.returncode == 0 and "rank0 10000" in r.stdout and "workers [10000]" in r.stdout, r
    default = run([sys.executable, "-c", "import gc; print(gc.get_threshold()[0])"],
                  timeout=60).stdout.strip()
    r = mpiexec(3, ["-m", "mpifutures", path], timeout=60,
                env={**ENV, "MPIFUTURES_GC_THRESHOLD": "0"})
    assert r.returncode == 0, r
    assert f"rank0 {default}\n" in r.stdout and f"workers [{default}]" in r.stdout, r


def test_tune_gc_keeps_a_higher_threshold_set_by_the_program():
    import gc

    from mpifutures.launch import tune_gc

    saved = gc.get_threshold()
    try:
        gc.set_threshold(50_000, 20, 30)
        tune_gc(configmod.Config(gc_threshold=10_000))
        assert gc.get_threshold() == (50_000, 20, 30)
        gc.set_threshold(700, 20, 30)
        tune_gc(configmod.Config(gc_threshold=10_000))
        assert gc.get_threshold() == (10_000, 20, 30)
    finally:
        gc.set_threshold(*saved)


def test_freed_task_memory_is_reused_without_page_faults_on_every_rank(tmp_path):
    """glibc hands a freed block of over ~16 MB at its heap's top back to the system, so a task
    making 8 MB arrays page-faults each anew (~2,000 faults a round here); every rank now
    keeps such memory (MPIFUTURES_MALLOC_KEEP), and 0 leaves malloc as it was."""
    path = script(tmp_path, """
        import resource
        import numpy as np
        from mpifutures import Executor

        def faults_per_round():
            np.ones(10**6)
            before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
            for _ in range(20):
                a = np.ones(10**6); b = np.ones(10**6); c = a + b
                del a, b, c
            return (resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before) // 20

        with Executor() as ex:
            counts = [faults_per_round()] + list(ex.run(faults_per_round).values())
            counts.append(ex.submit(faults_per_round, pure=False).result())  # compute thread
            print("faults", counts)
    """)
    kept = mpiexec(3, ["-m", "mpifutures", path], timeout=60, env=ENV)
    left = mpiexec(3, ["-m", "mpifutures", path], timeout=60,
                   env={**ENV, "MPIFUTURES_MALLOC_KEEP": "0"})
    assert kept.returncode == 0 and left.returncode == 0, (kept, left)
    kept_counts = eval(kept.stdout.split("faults", 1)[1])
    left_counts = eval(left.stdout.split("faults", 1)[1])
    assert len(kept_counts) == 4 and max(kept_counts) < 300, kept_counts
    assert min(left_counts) > 1000, left_counts


def test_workers_import_only_what_they_need_and_every_public_name_resolves():
    """Start-up time is the job's: a worker rank must not import the client side (executor,
    futures, state machine) nor cloudpickle, dataclasses or hashlib until it needs them, nor
    the client side numpy."""
    code = textwrap.dedent("""
        import sys, types
        import mpifutures, mpifutures.launch, mpifutures.worker, mpifutures.mpi_transport
        import mpifutures.taskrun
        heavy = ["mpifutures.executor", "mpifutures.future", "mpifutures.state",
                 "mpifutures.scheduler", "cloudpickle", "dataclasses", "hashlib", "socket",
                 "numpy"]
        print("loaded", [m for m in heavy if m in sys.modules])
        import mpifutures.executor, mpifutures.diagnostics, mpifutures.waiting, mpifutures.pool
        print("client loaded numpy", "numpy" in sys.modules)  # ~0.1 s more at rank 0's start
        bad = [n for n in mpifutures.__all__
               if isinstance(getattr(mpifutures, n), types.ModuleType)]
        print("modules among public names", bad, sorted(mpifutures.__all__) == sorted(
            n for n in dir(mpifutures) if n in mpifutures.__all__))
    """)
    r = run([sys.executable, "-c", code], timeout=60, env=ENV)
    assert r.returncode == 0, r
    assert "loaded []" in r.stdout and "modules among public names [] True" in r.stdout, r
    assert "client loaded numpy False" in r.stdout, r


def test_spmd_under_the_launcher_says_what_to_do_instead_of_hanging():
    r = mpiexec(3, ["-m", "mpifutures", "-c", textwrap.dedent("""
        import mpifutures
        with mpifutures.spmd() as ex:
            print("inside", ex)
    """)], timeout=60, env=ENV)
    assert not r.timed_out and r.returncode != 0, r
    assert "started by `python -m mpifutures`" in r.stderr and "inside" not in r.stdout, r


def test_spmd_stops_its_workers_even_after_its_scheduler_failed(monkeypatch):
    import types

    from mpifutures import launch
    from mpifutures.config import Config
    from mpifutures.scheduler import Scheduler
    from mpifutures.transport import LocalFabric

    scheduler = Scheduler(LocalFabric(2).endpoints[0], Config())
    scheduler.start()

    class World:  # rank 0 of two ranks
        def Dup(self):
            return self

        def Get_rank(self):
            return 0

        def Get_size(self):
            return 2

    monkeypatch.setattr(launch, "mpi", lambda config: types.SimpleNamespace(COMM_WORLD=World()))
    monkeypatch.setattr(launch, "start_scheduler", lambda *args, **kwargs: scheduler)
    # Leaving the block must still stop the workers; they cannot answer, so the job is
    # aborted (the in-process transport raises instead of ending the process).
    with pytest.raises(RuntimeError, match="aborted with code 1"):
        with launch.spmd():
            scheduler.post(("query", None, None))  # the scheduler thread fails on it
            scheduler.thread.join(10)
            assert scheduler.fatal is not None
