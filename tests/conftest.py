"""Shared fixtures: one executor per test, on the job's workers or on an in-process cluster.

Run plainly (``python -m pytest``), the executor tests use a :class:`LocalCluster` in this
process. Run as the script of ``mpiexec -n 3 python -m mpifutures -m pytest ...``, the very
same tests use the MPI job's workers.
"""

from __future__ import annotations

import os

import pytest

from mpifutures import Executor, launch


def require(available: bool, reason: str) -> None:
    """Skip when a system tool is missing, unless MPIFUTURES_REQUIRE_ALL=1 (set by
    tests/run.sh, which installs every tool): there a missing tool fails the test."""
    if available:
        return
    if os.environ.get("MPIFUTURES_REQUIRE_ALL") == "1":
        pytest.fail(f"{reason} (MPIFUTURES_REQUIRE_ALL=1: every tool must be installed)")
    pytest.skip(reason)


def under_mpi_launcher() -> bool:
    return launch._state.scheduler is not None


@pytest.fixture(scope="session")
def cluster():
    """The scheduler the executor tests talk to."""
    if under_mpi_launcher():
        yield launch._state.scheduler
        return
    from mpifutures.local import LocalCluster

    local = LocalCluster(2)
    yield local.scheduler
    assert local.close(), "the in-process cluster did not stop"


@pytest.fixture
def executor(cluster):
    """A fresh client session; its futures are released after the test."""
    ex = Executor(cluster=cluster)
    yield ex
    ex.shutdown(wait=False, cancel_futures=True)
