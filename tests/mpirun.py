"""Run a command under ``mpiexec`` with a timeout that ends exactly what it started."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Optional, Sequence

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool

    def __str__(self) -> str:
        return (f"exit {self.returncode}{' (timed out)' if self.timed_out else ''}\n"
                f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}")


def mpiexec(n: int, args: Sequence[str], timeout: float = 60.0,
            env: Optional[dict] = None, cwd: str = ROOT) -> Result:
    """Run ``mpiexec -n n python <args>``; kill its whole process group on timeout."""
    cmd = ["mpiexec", "-n", str(n), sys.executable, *args]
    return run(cmd, timeout, env, cwd)


def run(cmd: Sequence[str], timeout: float, env: Optional[dict] = None,
        cwd: str = ROOT) -> Result:
    """Run ``cmd`` in a new session; on timeout kill it and every process it started."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return Result(proc.returncode, out, err, False)
    except subprocess.TimeoutExpired:
        left = still_running(proc.pid)
        kill_tree(proc.pid)
        out, err = proc.communicate()
        return Result(proc.returncode, out, err + left, True)
    except BaseException:  # pytest-timeout or Ctrl-C ended the wait: leave nothing running
        kill_tree(proc.pid)
        proc.communicate()
        raise


def kill_tree(pid: int) -> None:
    """SIGKILL the process group of ``pid`` and every descendant of ``pid``.

    The group alone is not enough: Open MPI's ``prterun`` and MPICH's ``hydra_pmi_proxy`` start
    each rank in a process group of its own, so ``killpg`` would leave the ranks running.
    """
    try:
        family = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for child in family:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


def still_running(pid: int) -> str:
    """What ``pid`` and its descendants are doing, for the report of a run that timed out:
    each process's state and command line, and its Python stacks when py-spy is installed."""
    lines = ["", "--- still running at the timeout:"]
    try:
        family = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return ""
    spy = shutil.which("py-spy")
    for p in family:
        try:
            lines.append(f"{p.pid} (parent {p.ppid()}) {p.status()}: {' '.join(p.cmdline())[:160]}")
            if spy and "python" in p.name():
                dump = subprocess.run([spy, "dump", "--pid", str(p.pid)], capture_output=True,
                                      text=True, timeout=30)
                lines.append(dump.stdout[-4000:] or dump.stderr[-400:])
        except (psutil.Error, OSError, subprocess.TimeoutExpired) as exc:
            lines.append(f"{p.pid}: {exc!r}")
    return "\n".join(lines) + "\n"


@functools.lru_cache(maxsize=None)
def mpi_vendor() -> str:
    """``"openmpi"``, ``"mpich"`` or ``"unknown"``: whose ``mpiexec`` is first on PATH."""
    try:
        text = subprocess.run(["mpiexec", "--version"], capture_output=True, text=True,
                              timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if "Open MPI" in text:
        return "openmpi"
    if "HYDRA" in text or "MPICH" in text:
        return "mpich"
    return "unknown"
