"""Spawn mode: a plain ``python`` process starts its own workers with ``MPI.COMM_SELF.Spawn``.

``Executor(max_workers=k)`` outside ``mpiexec`` spawns ``k`` processes running
``python -m mpifutures.spawn``, merges the intercommunicator into one communicator whose rank 0
is this process, and drives them like any cluster. That executor owns the workers: its
``shutdown()`` (or the interpreter's exit) stops them and disconnects.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import time
from typing import Any, Optional

from .config import Config
from .errors import MpiFuturesError

log = logging.getLogger(__name__)
_live: list = []  # spawned clusters not stopped yet: stopped at the interpreter's exit


def spawn_cluster(MPI: Any, config: Config, max_workers: Optional[int]) -> Any:
    """Spawn workers; return a scheduler that owns them (stop it with :func:`stop`)."""
    from .launch import start_scheduler

    n = config.max_workers if max_workers is None else max_workers  # (checked by the caller)
    try:
        inter = MPI.COMM_SELF.Spawn(sys.executable, args=_worker_command(),
                                    maxprocs=n)
    except MPI.Exception as exc:
        raise MpiFuturesError(
            f"could not spawn {n} worker processes ({exc}). Some MPI set-ups cannot spawn "
            "(Cray, srun with PMI, MPI built without a process manager). Start the script "
            "under MPI instead: `mpiexec -n N python -m mpifutures script.py`.") from exc
    comm = inter.Merge(high=False)
    try:
        scheduler = start_scheduler(comm, config, "spawn", register=False)
    except BaseException:
        _let_go(comm, inter, config.shutdown_timeout)
        raise
    scheduler.spawned = (comm, inter)
    if not _live:
        atexit.unregister(_stop_all)  # registered once, whatever the number of clusters
        atexit.register(_stop_all)
    _live.append(scheduler)
    return scheduler


def _stop_all() -> None:
    """At the interpreter's exit: stop every spawned cluster. A pool's thread may be stopping
    one right now (it left ``_live`` already): wait for it, since the interpreter's end
    would freeze that daemon thread half way and MPI_Finalize then waits for its workers."""
    from . import settle

    settle.finish_pending_calls()
    for scheduler in list(_live):
        try:
            settle.finish_kept_tasks(scheduler)
        except KeyboardInterrupt:  # Ctrl-C: stop waiting, but still stop the workers
            pass
        stop(scheduler)


def stop(scheduler: Any) -> None:
    """Stop spawned workers and disconnect from them; abort if they do not stop in time."""
    comms = getattr(scheduler, "spawned", None)
    if comms is None:
        return
    from .settle import finish_pending_calls

    finish_pending_calls(scheduler)  # this cluster's only: another's may be stopping too
    comms = getattr(scheduler, "spawned", None)  # a pool that finished may have stopped it
    if comms is None:
        return
    scheduler.spawned = None
    if scheduler in _live:
        _live.remove(scheduler)
    if scheduler.stop(scheduler.config.shutdown_timeout):
        merged, inter = comms
        merged.Free()  # Open MPI 5.0 hangs in Disconnect of a merged intracommunicator
        inter.Disconnect()
        return
    log.error("spawned workers did not stop within %s s; aborting",
              scheduler.config.shutdown_timeout)
    scheduler.t.abort(1)


def _let_go(comm: Any, inter: Any, timeout: float) -> None:
    """Stop spawned workers that have no scheduler (it failed to start): left alone, they
    would wait for it for ever, and outlive this process."""
    from . import protocol as P
    from .mpi_transport import MPITransport

    workers = set(range(1, comm.Get_size()))
    try:
        t = MPITransport(comm)
        for w in workers:
            t.send(w, [(P.STOP,)])
        deadline = time.monotonic() + timeout
        while workers and time.monotonic() < deadline:
            for source, msgs in t.poll():
                if any(msg[0] == P.STOPPED for msg in msgs):
                    workers.discard(source)
            time.sleep(0.001)
    except Exception:  # noqa: BLE001 - the scheduler's own error is the one to raise
        log.exception("could not stop the spawned workers")
    if workers:
        log.error("spawned workers %s did not stop; they may outlive this process",
                  sorted(workers))
        return
    comm.Free()
    inter.Disconnect()


def _worker_command() -> list[str]:
    """A spawned worker's arguments to ``python``: it imports from where this process does
    (the script's folder, folders the script put on ``sys.path``, this copy of mpifutures).
    One that cannot import mpifutures would die before MPI starts, and ``Spawn`` would wait
    for it for ever."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = [p for p in (here, *sys.path) if p and os.path.isdir(p)]
    return ["-c", f"import sys; sys.path[:0] = {paths!r}; "
                  "from mpifutures.spawn import _worker_main; _worker_main()"]


def _worker_main() -> None:
    """Entry of a spawned worker process."""
    from . import config as configmod
    from .launch import mpi, serve

    config = configmod.load()
    MPI = mpi(config)
    parent = MPI.Comm.Get_parent()
    if parent == MPI.COMM_NULL:
        raise SystemExit("mpifutures.spawn is started by Executor() in spawn mode, not by hand")
    comm = parent.Merge(high=True)
    serve(comm, config)
    comm.Free()  # as in stop(): only the intercommunicator is disconnected
    parent.Disconnect()


if __name__ == "__main__":
    _worker_main()
