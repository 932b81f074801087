"""Run a command under ``mpiexec`` with a timeout that ends exactly what it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Optional, Sequence

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
    """Run ``cmd`` in a new session; on timeout kill that session's process group."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return Result(proc.returncode, out, err, False)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return Result(proc.returncode, out, err, True)
