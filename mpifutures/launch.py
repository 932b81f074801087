"""Where rank roles are decided: rank 0 runs the user's code, every other rank is a worker.

Three ways in, one branching point:

* ``python -m mpifutures script.py`` (:func:`run_launcher`): the cluster lives as long as the
  launcher; rank 0 runs the script as ``__main__``, the others serve until it ends.
* ``mpifutures.init()`` in an SPMD script (:func:`init`): workers serve and exit inside the
  call; rank 0 returns and its cluster stops when the interpreter exits. The context manager
  :func:`spmd` does the same within a ``with`` block and lets every rank go on after it.
* spawn mode (:func:`current_cluster` in a 1-rank job): ``Executor(max_workers=k)`` spawns k
  worker processes with ``MPI.COMM_SELF.Spawn``.

The running cluster of this process is held in :data:`_state` (one per process, as MPI
itself is); everything else is passed explicitly.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import logging
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any, Iterator, Optional

from . import config as configmod
from .errors import ExecutorClosedError, MpiFuturesError

log = logging.getLogger(__name__)


class _ProcessState:
    """The one cluster this process drives (rank 0) or serves (workers)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.scheduler: Any = None
        self.owner = ""  # "launcher", "init" or "spawn"


_state = _ProcessState()


def mpi(config: configmod.Config) -> Any:
    """Import and initialise MPI with the thread level we need; fail clearly if too low."""
    import mpi4py

    mpi4py.rc.thread_level = "multiple"
    from mpi4py import MPI

    provided = MPI.Query_thread()
    log.info(describe(MPI))
    if provided < MPI.THREAD_SERIALIZED:
        names = {MPI.THREAD_SINGLE: "SINGLE", MPI.THREAD_FUNNELED: "FUNNELED"}
        raise MpiFuturesError(
            f"the MPI library gives thread level {names.get(provided, provided)}, but mpifutures "
            "needs MPI_THREAD_SERIALIZED or MPI_THREAD_MULTIPLE (rank 0 calls MPI from its "
            "scheduler thread). Use an MPI built with thread support.")
    return MPI


def describe(MPI: Any) -> str:
    """One line: the MPI library, its version, the thread level and the world size."""
    levels = {MPI.THREAD_SINGLE: "single", MPI.THREAD_FUNNELED: "funneled",
              MPI.THREAD_SERIALIZED: "serialized", MPI.THREAD_MULTIPLE: "multiple"}
    return (f"MPI: {library_name(MPI)}; "
            f"MPI standard {'.'.join(map(str, MPI.Get_version()))}; thread "
            f"level {levels.get(MPI.Query_thread(), '?')}; {MPI.COMM_WORLD.Get_size()} ranks")


def library_name(MPI: Any) -> str:
    """The MPI library and its version, short: "MPICH 5.0.2", "Open MPI v5.0.11", ...

    Open MPI's version string is one long line ending in a NUL character; MPICH's is a table
    whose first line is "MPICH Version:      5.0.2". Others: their first line, cleaned.
    """
    text = MPI.Get_library_version().replace("\x00", " ").strip()
    first = " ".join(text.splitlines()[0].split()) if text else "unknown MPI library"
    if first.startswith("MPICH Version:"):
        return "MPICH " + first[len("MPICH Version:"):].strip()
    if first.startswith("Open MPI "):
        return first.split(",", 1)[0]
    return first


def check_wiring(MPI: Any) -> None:
    """Detect a launcher from another MPI: every process then believes it is rank 0 of 1."""
    if MPI.COMM_WORLD.Get_size() != 1:
        return
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 1:
            raise MpiFuturesError(
                f"the launcher started {value} processes ({var}={value}) but MPI reports a "
                "world of 1: mpiexec/srun and mpi4py come from different MPI libraries, so "
                "every process thinks it is rank 0. Use the mpiexec of the MPI that mpi4py "
                "was built with (python -c 'import mpi4py; print(mpi4py.get_config())'), "
                "or under Slurm `srun --mpi=pmi2` with MPICH (the PyPI mpich wheel included), "
                "`srun --mpi=pmix` with Open MPI 5.")


def tune_gc(config: configmod.Config) -> None:
    """Collect young objects less often: each task makes a dozen short-lived objects, and
    with the default threshold (700) the cycle collector took ~18% of rank 0's time at
    10,000 tasks in flight. Never lowers a threshold the program set itself."""
    if config.gc_threshold:
        first, *rest = gc.get_threshold()
        gc.set_threshold(max(first, config.gc_threshold), *rest)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling: larger blocks are always mapped afresh


def keep_freed_memory(nbytes: int) -> bool:
    """Let glibc keep up to ``nbytes`` (0, or at least 32 MB: see config) of freed heap
    memory for reuse (0: leave malloc alone).

    Sets ``M_TRIM_THRESHOLD`` to ``nbytes`` and ``M_MMAP_THRESHOLD`` to its ceiling (32 MB),
    so blocks up to that size come from the heap and go back to it. Returns whether malloc
    took the settings (False off glibc, e.g. with musl or on macOS).
    """
    if not nbytes or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        log.debug("no mallopt here: freed memory goes back to the system as malloc decides")
        return False
    return (mallopt(_M_TRIM_THRESHOLD, min(nbytes, 2**31 - 1)) == 1
            and mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1)


def start_scheduler(comm: Any, config: configmod.Config, owner: str,
                    register: bool = True) -> Any:
    """Start rank 0's scheduler on ``comm``; ``register``: make it this process's cluster."""
    from .logs import setup_logging
    from .mpi_transport import MPITransport
    from .scheduler import Scheduler

    setup_logging(config, comm.Get_rank())
    tune_gc(config)
    keep_freed_memory(config.malloc_keep)
    try:
        scheduler = Scheduler(MPITransport(comm, config.buffer_pool), config)
        about = f"{scheduler.t.describe()}, {len(scheduler.workers)} workers"
        scheduler.start()  # the last step that may fail (spawn mode relies on it)
    except BaseException:  # the workers, already serving, would wait for it for ever
        if owner == "spawn":  # the caller's own process (a notebook, say) must live on
            raise
        traceback.print_exc()
        sys.stderr.write("mpifutures: rank 0 could not start its scheduler; aborting the MPI "
                         "job.\n")
        sys.stderr.flush()
        comm.Abort(1)
        raise
    if register:
        with _state.lock:
            _state.scheduler, _state.owner = scheduler, owner
    log.info("mpifutures %s on %s", owner, about)
    return scheduler


def serve(comm: Any, config: configmod.Config) -> None:
    """Run the worker loop on this rank until rank 0 stops it."""
    from .logs import setup_logging
    from .mpi_transport import MPITransport
    from .taskrun import report_crashes
    from .worker import Worker

    setup_logging(config, comm.Get_rank())
    report_crashes(comm.Get_rank())
    tune_gc(config)
    keep_freed_memory(config.malloc_keep)
    Worker(MPITransport(comm, config.buffer_pool), config).run()


def signal_of(exc: KeyboardInterrupt) -> int:
    """The signal behind ``exc``: rank 0's SIGTERM handler passes its number, Ctrl-C none."""
    return exc.args[0] if exc.args and isinstance(exc.args[0], int) else signal.SIGINT


def abort(code: int) -> None:
    """End every rank now with status ``code`` (MPI Abort), once what this process printed
    (atexit handlers and threads too) has had a moment to reach the launcher, which stops
    forwarding output when the ranks are killed."""
    from mpi4py import MPI

    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(ABORT_GRACE)
    MPI.COMM_WORLD.Abort(code)


#: Seconds between rank 0's last words and an Abort (see :func:`abort`).
ABORT_GRACE = 0.2


#: Seconds the workers get to stop after a signal: a worker in a task that holds its GIL
#: cannot answer, and the user asked for the job to end now.
SIGNALLED_STOP_TIMEOUT = 2.0


def stop_scheduler(code: int, signalled: bool = False) -> int:
    """Stop the workers; Abort the job if they do not stop in time (at most
    ``SIGNALLED_STOP_TIMEOUT`` after a signal). Returns the exit code."""
    with _state.lock:
        scheduler, _state.scheduler = _state.scheduler, None
    if scheduler is None:
        return code
    config = scheduler.config
    timeout = config.shutdown_timeout
    if signalled:
        timeout = min(timeout, SIGNALLED_STOP_TIMEOUT)
    try:
        if code == 0:  # after an error, exit within seconds instead: the calls still
            from . import settle  # pending fail as the workers stop

            settle.finish_pending_calls()
            settle.finish_kept_tasks(scheduler)
        if scheduler.stop(timeout):
            return code
    except BaseException as exc:  # a signal during the wait: end now, not later in MPI_Finalize
        if isinstance(exc, KeyboardInterrupt):
            signum = signal_of(exc)
            code = code or 128 + signum
            why = f"the job was interrupted ({signal.Signals(signum).name})"
        else:
            why = f"{type(exc).__name__} was raised"
        sys.stderr.write(f"mpifutures: {why} while stopping the workers; aborting the MPI "
                         "job.\n")
        abort(code or 1)
        raise
    if scheduler.failure is not None:
        sys.stderr.write(f"mpifutures: the cluster failed ({type(scheduler.failure).__name__}, "
                         "see above); aborting the MPI job.\n")
    else:
        sys.stderr.write(f"mpifutures: workers did not stop within {timeout} s (a task may "
                         "be stuck); aborting the MPI job.\n")
    abort(code or 1)
    return code or 1


def _refuse_inside_a_task(what: str) -> None:
    from .taskrun import current_worker

    if current_worker() is not None:
        raise RuntimeError(
            f"{what} cannot be used inside a task: tasks run on worker ranks, and only rank 0 "
            "submits. Return data from the task and submit the next step from rank 0.")


def current_cluster(max_workers: Optional[int] = None) -> Any:
    """The scheduler that a new ``Executor()`` should use, starting one if needed."""
    from .options import integer

    if max_workers is not None and integer("max_workers", max_workers) < 1:
        raise ValueError(f"max_workers must be at least 1, not {max_workers!r}")
    with _state.lock:
        if _state.scheduler is not None:
            return _state.scheduler
    _refuse_inside_a_task("Executor()")
    config = configmod.load()
    MPI = mpi(config)
    check_wiring(MPI)
    if MPI.COMM_WORLD.Get_size() > 1:
        raise MpiFuturesError(
            "this script runs on several MPI ranks but no mpifutures cluster is running. Start "
            "it with `mpiexec -n N python -m mpifutures script.py`, or call "
            "mpifutures.init() at the top of the script.")
    from .spawn import spawn_cluster

    return spawn_cluster(MPI, config, max_workers)


def init() -> Any:
    """SPMD entry: on rank 0 return the cluster; on other ranks serve, then exit the process.

    Call it at the top of a script started on every rank (``srun python script.py``). The
    workers leave with status 0 once rank 0's script ends (rank 0 stops them at exit).
    """
    with _state.lock:
        if _state.scheduler is not None:
            return _state.scheduler
    _refuse_inside_a_task("mpifutures.init()")
    config = configmod.load()
    MPI = mpi(config)
    check_wiring(MPI)
    comm = MPI.COMM_WORLD.Dup()
    if comm.Get_rank() != 0:
        serve(comm, config)
        sys.stdout.flush()
        raise SystemExit(0)  # the worker's life ends with the job; rank 0's script goes on
    scheduler = start_scheduler(comm, config, "init")
    atexit.register(stop_scheduler, 0)
    return scheduler


@contextlib.contextmanager
def spmd(comm: Any = None) -> Iterator[Any]:
    """SPMD block: rank 0 gets an :class:`~mpifutures.Executor`, every other rank ``None``.

    ::

        with mpifutures.spmd() as ex:
            if ex is not None:          # rank 0 only; the workers serve meanwhile
                print(ex.submit(f, 1).result())
        # every rank goes on here once rank 0 left the block

    Args:
        comm: the communicator whose ranks form the cluster (default: ``COMM_WORLD``).
    """
    from .executor import Executor

    if comm is not None and not callable(getattr(comm, "Dup", None)):
        raise TypeError(f"comm must be an mpi4py communicator, not {comm!r}")
    _refuse_inside_a_task("mpifutures.spmd()")
    with _state.lock:
        running = _state.owner if _state.scheduler is not None else None
    if running:  # its other ranks serve that cluster: they would never join the Dup below
        how = "`python -m mpifutures`" if running == "launcher" else "mpifutures.init()"
        raise RuntimeError(
            f"mpifutures.spmd() found this process already running a cluster, started by {how}; "
            "the other ranks serve it and cannot join a second one. Either run the script with "
            "plain `mpiexec -n N python script.py`, or use Executor() instead of spmd().")
    config = configmod.load()
    MPI = mpi(config)
    check_wiring(MPI)
    comm = (MPI.COMM_WORLD if comm is None else comm).Dup()
    if comm.Get_rank() != 0:
        serve(comm, config)
        yield None
        return
    scheduler = start_scheduler(comm, config, "spmd", register=False)
    executor = Executor(cluster=scheduler)
    try:
        yield executor
    finally:
        try:
            executor.shutdown(wait=False, cancel_futures=True)
        except ExecutorClosedError:  # the scheduler failed: the workers must still stop
            pass
        if not scheduler.stop(config.shutdown_timeout):
            why = ("the cluster failed" if scheduler.failure is not None
                   else "workers did not stop in time")
            sys.stderr.write(f"mpifutures: {why}; aborting the job.\n")
            scheduler.t.abort(1)
