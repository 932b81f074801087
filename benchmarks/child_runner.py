"""Start one benchmark child, read its ``@@BENCH`` lines, and stop it if it overruns.

Each child runs in its own session (process group). A child that exceeds the time budget
of the workload it is in is killed by process group and by the process ids of all its
descendants (never by name); it is then started again for the workloads it did not reach.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time

import psutil

PREFIX = "@@BENCH "


def spawn(argv, env, cwd):
    """Start ``argv`` in a new session; stderr goes to a temporary file."""
    # closed by stderr_tail() once the child has ended
    stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")  # noqa: SIM115
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=stderr,
                            stdin=subprocess.DEVNULL, text=True, errors="replace",
                            start_new_session=True)
    proc.stderr_file = stderr
    return proc


def kill_tree(proc, grace=3.0):
    """Stop the child, its process group and every descendant, by id."""
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        for child in family:
            try:
                child.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        _, alive = psutil.wait_procs(family, timeout=grace)
        if not alive:
            return
    psutil.wait_procs(family, timeout=grace)


def _pump(stream, lines):
    for line in stream:
        lines.put(line)
    lines.put(None)


def read_records(proc, budget_for, startup_s):
    """Collect records until the child ends or a workload overruns its budget.

    Returns ``(records, overrun)``; ``overrun`` names the workload (or ``"startup"``)
    that ran out of time, else None.
    """
    lines, records = queue.Queue(), []
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    current, deadline = "startup", time.monotonic() + startup_s
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return records, current
        if line is None:
            return records, None
        if not line.startswith(PREFIX):
            continue
        record = json.loads(line[len(PREFIX):])
        records.append(record)
        if record["row"] == "_start":
            current = record["workload"]
            deadline = time.monotonic() + budget_for(current)
        elif record["row"] == "_done":
            current, deadline = "between workloads", time.monotonic() + startup_s


def stderr_tail(proc, chars=3000):
    proc.stderr_file.seek(0)
    text = proc.stderr_file.read()
    proc.stderr_file.close()
    return text[-chars:]


def run_once(argv, env, cwd, budget_for, startup_s):
    """One child run: its records and a summary of how it ended."""
    start = time.monotonic()
    proc = spawn(argv, env, cwd)
    records, overrun = read_records(proc, budget_for, startup_s)
    if overrun is not None:
        kill_tree(proc)
    else:
        try:
            proc.wait(timeout=startup_s)
        except subprocess.TimeoutExpired:  # printed everything but does not exit
            overrun = "exit"
            kill_tree(proc)
    info = {"argv": argv, "returncode": proc.returncode, "overrun": overrun,
            "elapsed_s": round(time.monotonic() - start, 2), "stderr_tail": stderr_tail(proc)}
    return records, info


def run_with_restarts(argv_for, workloads, env, cwd, budget_for, startup_s):
    """Run the child; after a crash or overrun, start it again for the workloads left.

    ``argv_for(remaining)`` builds the command line for a list of workload ids.
    """
    remaining, records, runs = list(workloads), [], []
    while remaining:
        got, info = run_once(argv_for(remaining), env, cwd, budget_for, startup_s)
        records += got
        runs.append(info)
        started = [r["workload"] for r in got if r["row"] == "_start"]
        finished = {r["workload"] for r in got if r["row"] == "_done"}
        if info["returncode"] == 0 and info["overrun"] is None:
            break
        if not started:  # it cannot even start: trying again would fail the same way
            break
        failed = started[-1] if started[-1] not in finished else None
        if failed:
            records.append({"row": "_error", "workload": failed,
                            "error": _why(info, failed)})
        remaining = [w for w in remaining if w not in started]
    return records, runs


def _why(info, workload):
    if info["overrun"] == workload:
        return f"timed out in {workload}; child killed"
    return f"child exited with code {info['returncode']} during {workload}"


def time_command(argv, env, cwd, timeout):
    """Wall time of one whole command; killed (by id) after ``timeout`` seconds."""
    start = time.perf_counter()
    proc = spawn(argv, env, cwd)
    try:
        proc.communicate(timeout=timeout)
        overrun = None
    except subprocess.TimeoutExpired:
        overrun = "timeout"
    seconds = time.perf_counter() - start
    if overrun:
        kill_tree(proc)
        proc.communicate()
    info = {"argv": argv, "returncode": proc.returncode, "overrun": overrun,
            "stderr_tail": stderr_tail(proc, 600)}
    return seconds, info
