"""Whole programs under a real ``mpiexec``, each bounded by a timeout that kills its group."""

from __future__ import annotations

import os
import re
import textwrap
import time

import numpy as np
import pytest

from tests.mpirun import ROOT, mpiexec


def launch(n, code, timeout=60, env=None, args=()):
    return mpiexec(n, ["-m", "mpifutures", "-c", textwrap.dedent(code), *args],
                   timeout=timeout, env=env)


def test_tree_reduction_matches_numpy_and_only_the_final_array_reaches_rank0():
    r = mpiexec(4, ["-m", "mpifutures", "examples/tree_reduction.py", "--seed", "7"], 120)
    assert r.returncode == 0, r
    expected = sum(np.random.default_rng(7 + i).random(1_000_000) for i in range(16))
    checksum = float(re.search(r"checksum: (\S+)", r.stdout).group(1))
    assert checksum == pytest.approx(expected.sum(), rel=1e-9), r
    to_rank0 = int(re.search(r"bytes to rank 0: (\d+)", r.stdout).group(1))
    assert 8_000_000 <= to_rank0 <= 8_000_000 + 10_000, r
    assert "tasks: 31," in r.stdout


def test_the_seed_example_runs_as_written():
    r = mpiexec(4, ["-m", "mpifutures", "examples/tree_reduction.py"], 120)
    assert r.returncode == 0, r
    first = [float(v) for v in r.stdout.splitlines()[0].strip("[] ").split()]
    assert len(first) == 5 and all(0 < v < 16 for v in first)


@pytest.mark.parametrize("code, status", [
    ("print('fine')", 0),
    ("import sys; sys.exit(3)", 3),
    ("raise ValueError('script failed on purpose')", 1),
    ("import sys; sys.exit('a message')", 1),
])
def test_exit_status_is_the_scripts(code, status):
    start = time.monotonic()
    r = launch(3, code, timeout=60)
    assert r.returncode == status, r
    assert time.monotonic() - start < 30
    if status == 1 and "ValueError" in code:
        assert "Traceback" in r.stderr and "script failed on purpose" in r.stderr


def test_script_module_and_code_targets_get_their_argv(tmp_path):
    script = tmp_path / "show_argv.py"
    script.write_text("import sys\nprint('argv', sys.argv[1:], __name__)\n")
    r = mpiexec(2, ["-m", "mpifutures", str(script), "a", "--flag"], 60)
    assert "argv ['a', '--flag'] __main__" in r.stdout, r
    mod = tmp_path / "argv_module.py"
    mod.write_text("import sys\nprint('argv', sys.argv[1:], __name__)\n")
    r = mpiexec(2, ["-m", "mpifutures", "-m", "argv_module", "-x", "1"], 60,
                env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"})
    assert "argv ['-x', '1'] __main__" in r.stdout, r
    r = launch(2, "import sys; print('argv', sys.argv[1:], __name__)", args=("b",))
    assert "argv ['b'] __main__" in r.stdout, r


def test_one_rank_fails_at_submit_with_advice():
    r = launch(1, """
        from mpifutures import Executor
        Executor().submit(abs, 1)
    """)
    assert r.returncode == 1, r
    assert "NoWorkersError" in r.stderr and "mpiexec -n 4" in r.stderr


def test_functions_defined_in_the_script_run_on_workers(tmp_path):
    script = tmp_path / "main_funcs.py"
    script.write_text(textwrap.dedent("""
        from mpifutures import Executor

        class Point:
            def __init__(self, x):
                self.x = x

        def shift(p, by):
            return Point(p.x + by)

        ex = Executor()
        print("result", ex.submit(shift, Point(1), 2).result().x)
        print("lambda", ex.submit(lambda: 7).result())
    """))
    r = mpiexec(3, ["-m", "mpifutures", str(script)], 60)
    assert r.returncode == 0 and "result 3" in r.stdout and "lambda 7" in r.stdout, r


def test_a_stuck_task_does_not_hang_the_job_at_exit():
    start = time.monotonic()
    r = launch(3, """
        import time
        from mpifutures import Executor
        ex = Executor()
        ex.submit(time.sleep, 3600)
        print("leaving")
    """, env={"MPIFUTURES_SHUTDOWN_TIMEOUT": "3"}, timeout=60)
    assert "leaving" in r.stdout, r
    assert time.monotonic() - start < 30, r


def test_the_job_waits_for_the_scripts_threads_as_python_does():
    # The launcher stopped the workers as soon as the script's last line ran, so a thread the
    # script had started (not a daemon: Python waits for it) got ExecutorClosedError.
    r = launch(3, """
        import threading, time
        from mpifutures import Executor
        ex = Executor()

        def later():
            time.sleep(0.5)
            print("from the thread:", ex.submit(pow, 2, 10).result(), flush=True)

        threading.Thread(target=later).start()
        print("script done", flush=True)
    """, timeout=60)
    assert r.returncode == 0 and "from the thread: 1024" in r.stdout, r
    assert "ExecutorClosedError" not in r.stderr, r


def test_a_script_exiting_with_a_high_status_still_gets_its_threads_waited_for():
    r = launch(3, """
        import atexit, sys, threading, time
        from mpifutures import Executor
        ex = Executor()
        threading.Thread(target=lambda: (time.sleep(0.5), print("thread done"))).start()
        atexit.register(lambda: threading.Thread(target=time.sleep, args=(0.2,)).start())
        sys.exit(130)  # a status, not a signal: nothing is cut short
    """, timeout=60)
    assert r.returncode == 130 and "thread done" in r.stdout, r
    assert "interrupted" not in r.stderr, r


def test_the_scripts_exit_handlers_may_still_use_the_workers():
    r = launch(3, """
        import atexit
        from mpifutures import Executor
        ex = Executor()
        atexit.register(lambda: print("at exit:", ex.submit(pow, 3, 3).result(), flush=True))
    """, timeout=60)
    assert r.returncode == 0 and "at exit: 27" in r.stdout, r


def test_a_thread_pool_left_open_by_a_library_does_not_keep_the_job_alive():
    # Its idle threads are not daemons: Python ends them at exit before it waits for threads.
    r = launch(3, """
        import json
        from concurrent.futures import ThreadPoolExecutor
        from mpifutures import Executor
        ex = Executor()
        json.pool = ThreadPoolExecutor(2)  # as a library would keep one, module-wide
        print("got", json.pool.submit(lambda: ex.submit(pow, 2, 5).result()).result())
    """, timeout=30)
    assert r.returncode == 0 and "got 32" in r.stdout and not r.timed_out, r


def test_idle_ranks_do_not_spin():
    r = launch(3, """
        import os, time
        from mpifutures import Executor
        ex = Executor()
        pids = [ex.submit(os.getpid, workers=[w], pure=False).result() for w in ex.workers]
        pids.append(os.getpid())
        def cpu(p):
            with open(f"/proc/{p}/stat") as fh:
                v = fh.read().rsplit(")", 1)[1].split()
            return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")
        time.sleep(1.5)
        before, t0 = [cpu(p) for p in pids], time.time()
        time.sleep(3)
        print("cpu%", [100 * (cpu(p) - b) / (time.time() - t0) for p, b in zip(pids, before)])
    """, timeout=60)
    assert r.returncode == 0, r
    loads = [float(v) for v in re.findall(r"[\d.]+", r.stdout.split("cpu%")[1])]
    assert len(loads) == 3 and max(loads) < 10, r  # a spinning rank shows ~100


def test_one_poll_after_a_sleep_finds_a_message_that_arrived_during_it():
    """MPICH's first probe after a message lands makes progress but reports nothing; the
    transport must look again, or every message waits one more sleep of the loop."""
    r = mpiexec(2, ["-c", textwrap.dedent("""
        import time
        from mpi4py import MPI
        from mpifutures.mpi_transport import MPITransport
        comm = MPI.COMM_WORLD.Dup()
        t = MPITransport(comm)
        found = []
        for i in range(10):
            comm.Barrier()
            if comm.Get_rank() == 0:
                t.send(1, [("ping", i)])
                while t.busy():
                    t.poll()
            else:
                time.sleep(0.1)  # the message arrives while this rank makes no MPI call
                got = t.poll()
                found.append(got)
                while not got:
                    got = t.poll()
        comm.Barrier()
        if comm.Get_rank() == 1:
            print("first polls found", sum(bool(f) for f in found), "of", len(found))
    """)], timeout=60)
    assert r.returncode == 0, r
    assert "first polls found 10 of 10" in r.stdout, r


def test_dropping_futures_of_big_arrays_keeps_worker_memory_flat():
    r = launch(3, """
        import os
        import numpy as np
        from mpifutures import Executor

        def make(i):
            return np.full(10 * 2**20 // 8, float(i))   # 10 MB

        def rss(*_):
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

        ex = Executor()
        peaks = {w: 0 for w in ex.workers}
        for i in range(2000):
            x = ex.submit(make, i, pure=False)
            if i % 100 == 99:
                x.result()
                for w in ex.workers:
                    peaks[w] = max(peaks[w], ex.submit(rss, i, workers=[w], pure=False).result())
            del x
        print("peak MB", max(peaks.values()) / 2**20)
        print("in scheduler", ex.statistics()["tasks_in_scheduler"])
    """, timeout=240)
    assert r.returncode == 0, r
    peak = float(re.search(r"peak MB ([\d.]+)", r.stdout).group(1))
    assert peak < 300, r  # 2,000 x 10 MB kept would be 20 GB


def test_behaviour_suite_under_mpiexec():
    r = mpiexec(3, ["-m", "mpifutures", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    "tests/test_executor.py", "tests/test_api.py", "tests/test_faults.py",
                    "tests/test_random_dags.py", "tests/test_diagnostics.py",
                    "tests/test_regressions.py", "tests/test_misuse.py"], timeout=500)
    assert r.returncode == 0, r
    assert re.search(r"\d+ passed", r.stdout) and "failed" not in r.stdout, r


def test_report_option_records_the_whole_script_and_renders(tmp_path):
    import subprocess

    from tests.test_report import _chrome_cmd, _chromium, _png_pixels

    html = tmp_path / "tree.html"
    r = mpiexec(4, ["-m", "mpifutures", "--report", str(html), "examples/tree_reduction.py",
                    "--seed", "1"], 120)
    assert r.returncode == 0, r
    page = html.read_text()
    assert "random" in page or "seeded_random" in page
    from tests.conftest import require

    binary = _chromium()
    require(binary is not None, "no chromium binary on PATH (apt-get install -y chromium)")
    dom = subprocess.run(_chrome_cmd(binary, tmp_path / "p") + ["--dump-dom", html.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert "report-ready: 31 timeline shapes" in dom.stdout, dom.stdout[-1000:]
    png = tmp_path / "tree.png"
    subprocess.run(_chrome_cmd(binary, tmp_path / "p2") + [f"--screenshot={png}",
                   "--window-size=1200,900", html.as_uri()], capture_output=True,
                   timeout=120, check=True)
    width, height, ch, rows = _png_pixels(png.read_bytes())
    coloured = sum(1 for y in range(200, 400, 4) for x in range(0, width * ch, ch * 4)
                   if max(rows[y][x:x + 3]) - min(rows[y][x:x + 3]) > 60)
    assert coloured > 500, coloured


def test_the_worker_list_needs_no_answer_from_a_busy_worker():
    # A task in C code holds its worker's GIL: the worker's loop cannot answer until it ends.
    # The host names came with each worker's first message, so nothing has to be asked.
    r = launch(3, """
        import math, time
        from mpifutures import Executor
        ex = Executor()
        busy = ex.submit(math.factorial, 500_000, pure=False)
        time.sleep(0.3)
        workers = ex.workers
        print("workers", sorted(workers), "while busy", not busy.done())
    """, timeout=120)
    assert r.returncode == 0, r
    assert "workers [1, 2] while busy True" in r.stdout, r


def test_one_rank_alone_lists_no_workers_and_exits_cleanly():
    r = launch(1, """
        import time
        from mpifutures import Executor
        ex = Executor()
        print("workers", ex.workers, "run", ex.run(time.time))
    """)
    assert r.returncode == 0 and "workers {} run {}" in r.stdout, r
    assert "Error" not in r.stderr, r


def test_a_forked_child_of_a_task_leaving_by_os_exit_is_not_reported_as_the_worker():
    r = launch(3, """
        from mpifutures import Executor
        from tests import tasks
        print("child exited with", Executor().submit(tasks.fork_a_child_that_exits, 7).result(30))
    """, env={"PYTHONPATH": ROOT})
    assert r.returncode == 0 and "child exited with 7" in r.stdout, r
    assert "called os._exit" not in r.stderr, r


def test_a_forked_child_of_a_task_gets_the_default_signal_handlers_back():
    r = launch(3, """
        from mpifutures import Executor
        from tests import tasks
        print("child status", Executor().submit(tasks.fork_a_child_that_terminates_itself).result(30))
    """, env={"PYTHONPATH": ROOT})
    assert r.returncode == 0 and "child status -15" in r.stdout, r  # ended by its SIGTERM


def test_task_stream_run_and_report_give_up_on_a_worker_that_cannot_answer(tmp_path):
    report = str(tmp_path / "r.html")
    r = launch(3, f"""
        import math, time, mpifutures
        from mpifutures import Executor
        ex = Executor()
        with mpifutures.performance_report({report!r}):
            ex.submit(abs, -1).result()
            busy = ex.submit(math.factorial, 500_000, pure=False)
            time.sleep(0.3)  # its worker's loop now waits for the GIL
            try:
                ex.get_task_stream(timeout=0.2)
            except TimeoutError as e:
                print("stream:", e)
            try:
                ex.run(abs, -1, timeout=0.2)
            except TimeoutError as e:
                print("run:", e)
        print("report written while busy", not busy.done())
        busy.result()
        print("run after", ex.run(dict, timeout=30, a=1))
        print("kept", sorted({{r["prefix"] for r in ex.get_task_stream()}}))
    """, env={"MPIFUTURES_SHUTDOWN_TIMEOUT": "0.3"}, timeout=120)
    assert r.returncode == 0, r
    assert re.search(r"stream: worker ranks \[\d\] did not answer within 0.2 s", r.stdout), r
    assert re.search(r"run: worker ranks \[\d\] did not answer within 0.2 s", r.stdout), r
    assert "run after {1: {'a': 1}, 2: {'a': 1}}" in r.stdout, r
    assert "report written while busy True" in r.stdout, r
    assert "lacks some tasks" in r.stderr and os.path.getsize(report) > 1000, r
    # The records that came with answers after the timeouts are kept (factorial's may not
    # exist: the report turned recording off, perhaps before that task ended).
    assert re.search(r"kept \['abs'(, 'factorial')?\]", r.stdout), r


def test_a_report_starts_even_while_a_worker_cannot_answer(tmp_path):
    # Switching recording on waited, without a way out, for a worker in C code holding the GIL.
    report = str(tmp_path / "r.html")
    r = launch(3, f"""
        import math, time, mpifutures
        from mpifutures import Executor
        ex = Executor()
        busy = ex.submit(math.factorial, 1_000_000, pure=False)
        time.sleep(0.3)  # its worker's loop now waits for the GIL
        with mpifutures.performance_report({report!r}):
            print("entered while busy", not busy.done())
            print(ex.submit(abs, -1).result())
    """, env={"MPIFUTURES_SHUTDOWN_TIMEOUT": "0.3"}, timeout=120)
    assert "entered while busy True" in r.stdout, r
    assert "may lack some tasks" in r.stderr and os.path.getsize(report) > 1000, r


def test_scatter_and_gather_give_up_after_their_timeout_on_a_worker_that_cannot_answer():
    # Both waited without a way out for a worker in C code holding the GIL.
    r = launch(3, """
        import math, time
        from mpifutures import Executor
        ex = Executor()
        busy = [ex.submit(math.factorial, 1_000_000, workers=w, pure=False) for w in ex.workers]
        time.sleep(0.3)  # their workers' loops now wait for the GIL
        for call in (lambda: ex.scatter([1, 2], timeout=0.3),
                     lambda: ex.gather(busy, timeout=0.3),
                     lambda: ex.gather(busy, errors="skip", timeout=0.3)):
            start = time.monotonic()
            try:
                call()
            except TimeoutError as exc:
                print(f"gave up {time.monotonic() - start < 3}: {exc}", flush=True)
            print("busy still", not any(f.done() for f in busy), flush=True)
        print("gathered", ex.gather(ex.scatter([1, 2], timeout=120), timeout=120))
    """, timeout=120)
    assert r.returncode == 0 and r.stdout.count("busy still True") == 3, r
    assert "gave up True: scatter: workers did not confirm storing 2 of 2 values within 0.3 s" \
        in r.stdout, r
    assert r.stdout.count("gave up True: 2 of 2 futures did not end within 0.3 s") == 2, r
    assert "gathered [1, 2]" in r.stdout, r


def test_a_report_that_cannot_be_written_ends_the_job_instead_of_hanging(tmp_path):
    r = mpiexec(3, ["-m", "mpifutures", "--report", str(tmp_path / "no" / "r.html"), "-c",
                    "print('script ran')"], timeout=60)
    assert not r.timed_out and r.returncode == 2, r
    assert "cannot write the report" in r.stderr and "script ran" not in r.stdout, r
    gone = tmp_path / "gone"
    gone.mkdir()
    r = mpiexec(3, ["-m", "mpifutures", "--report", str(gone / "r.html"), "-c", textwrap.dedent(f"""
        import shutil
        from mpifutures import Executor
        print(Executor().submit(abs, -1).result())
        shutil.rmtree({str(gone)!r})  # the report's folder goes while the script runs
    """)], timeout=60)
    assert not r.timed_out and r.returncode == 1, r
    assert "could not be written" in r.stderr and r.stdout.strip() == "1", r


def test_threads_making_their_first_submits_at_once_all_succeed():
    # The first submits import cloudpickle; the others must not see it half-imported.
    for _ in range(2):
        r = launch(3, """
            import threading
            from mpifutures import Executor
            ex = Executor()
            errors = []

            def first_submits(t):
                try:
                    assert ex.submit(lambda x: x + t, 1, pure=False).result(30) == 1 + t
                except Exception as exc:
                    errors.append(repr(exc))

            threads = [threading.Thread(target=first_submits, args=(t,)) for t in range(8)]
            [t.start() for t in threads]
            [t.join(60) for t in threads]
            print("errors", errors)
        """)
        assert r.returncode == 0 and "errors []" in r.stdout, r


def test_a_callback_still_running_at_exit_is_reported_not_silently_dropped():
    r = launch(3, """
        import time
        from mpifutures import Executor
        ex = Executor()
        f = ex.submit(sum, [1, 2])
        f.add_done_callback(lambda _: time.sleep(600))
        f.add_done_callback(lambda _: print("never", flush=True))
        f.result()
        time.sleep(0.2)
        print("script ends", flush=True)
    """, timeout=60)
    assert r.returncode == 0 and "script ends" in r.stdout and "never" not in r.stdout, r
    assert "a done-callback was still running after 2.0 s at shutdown" in r.stderr, r
