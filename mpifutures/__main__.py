"""``python -m mpifutures [options] (script.py | -m module | -c code) [args...]``

Run under ``mpiexec -n N`` or ``srun``: rank 0 runs the target as ``__main__`` with
``sys.argv`` as the target expects, ranks 1..N-1 are workers. The job's exit status is the
target's: 0, the code given to ``sys.exit``, or 1 after an uncaught exception (whose traceback
is printed). The workers are stopped whatever the target did (after a target that ended
normally, at exit: Python's wait for non-daemon threads and the target's atexit handlers come
first); if they do not answer in time the job is aborted. A signal ends every rank at once.
"""

from __future__ import annotations

import argparse
import atexit
import os
import runpy
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable, NoReturn, Optional, Sequence

USAGE = "python -m mpifutures [options] (script.py | -m module | -c code) [args ...]"


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, str, str, list[str]]:
    """Split ``argv`` into launcher options and the target, as ``python`` itself does."""
    parser = _Parser(
        prog="python -m mpifutures", usage=USAGE,
        description="Run a Python script on rank 0 of an MPI job, with every other rank "
                    "serving it as an mpifutures worker. Start it with mpiexec or srun, e.g. "
                    "`mpiexec -n 4 python -m mpifutures script.py`.",
        epilog="Environment: MPIFUTURES_BACKOFF (longest sleep between polls after recent "
               "traffic, s), MPIFUTURES_IDLE_BACKOFF (longest sleep when idle, s), "
               "MPIFUTURES_SHUTDOWN_TIMEOUT, MPIFUTURES_LOG_LEVEL, ... (see README.md, "
               "'Configuration').")
    parser.add_argument("--threads-per-worker", type=_setting("THREADS_PER_WORKER"), metavar="N",
                        help="compute threads on each worker (default 1)")
    parser.add_argument("--backoff", type=_setting("BACKOFF"), metavar="SECONDS",
                        help="longest sleep between polls of a busy-then-idle rank "
                             "(default 0.001)")
    parser.add_argument("--idle-backoff", type=_setting("IDLE_BACKOFF"), metavar="SECONDS",
                        help="longest sleep of a rank without traffic (default 0.05); "
                             "it answers within 1/20 of the time it was idle")
    parser.add_argument("--mpi-info", action="store_true",
                        help="print one line naming the MPI library and thread level, and "
                             "the world size, then exit")
    parser.add_argument("--report", metavar="FILE.html",
                        help="record the task stream and write a performance report here")
    parser.add_argument("-m", dest="module", metavar="module", help="run a library module")
    parser.add_argument("-c", dest="code", metavar="code", help="run a string of code")
    opts, rest = _split(parser, list(argv))
    if opts.mpi_info:  # print, then exit: whatever follows is not run
        return opts, "info", "", []
    if opts.module is not None:
        return opts, "module", opts.module, rest
    if opts.code is not None:
        return opts, "code", opts.code, rest
    if not rest:
        parser.error("give a script, -m module or -c code to run")
    return opts, "script", rest[0], rest[1:]


def _setting(variable: str) -> Callable[[str], Any]:
    """An option's type: the value as ``MPIFUTURES_<variable>`` would take it."""
    from . import config as configmod

    def parse(raw: str) -> Any:
        try:
            return configmod.parse(f"MPIFUTURES_{variable}", raw)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> "NoReturn":  # type: ignore[override]
        _refuse(message, self)


def _refuse(message: str, parser: Optional[argparse.ArgumentParser] = None) -> "NoReturn":
    """Print a usage error on the first rank only (every rank parses the same argv and
    environment); the others leave a moment later, as Open MPI's launcher stops forwarding
    output once a rank has failed."""
    if _launcher_rank() in (None, "0"):
        if parser is not None:
            parser.print_usage(sys.stderr)
        sys.stderr.write(f"python -m mpifutures: error: {message}\n")
        sys.stderr.flush()
    else:
        time.sleep(0.5)
    sys.exit(2)


def _launcher_rank() -> Optional[str]:
    """This process's rank as the launcher tells it (MPICH, Open MPI, Slurm), before MPI."""
    for name in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID"):
        if name in os.environ:
            return os.environ[name]
    return None


def _split(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.Namespace, list]:
    # Options end at the target: everything after `-m mod`, `-c code` or the script is the
    # target's own argv, even when it looks like an option.
    with_value = [s for a in parser._actions if a.nargs is None
                  for s in a.option_strings if s.startswith("--")]
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-m", "-c"):
            return parser.parse_args(argv[:i + 2]), argv[i + 2:]
        if not arg.startswith("-"):
            return parser.parse_args(argv[:i]), argv[i:]
        takes_value = "=" not in arg and any(s.startswith(arg) for s in with_value) \
            and len(arg) > 2  # a known option that takes a value (or its abbreviation)
        i += 2 if takes_value else 1
    return parser.parse_args(argv), []


def _apply(opts: argparse.Namespace) -> None:
    if opts.threads_per_worker is not None:
        os.environ["MPIFUTURES_THREADS_PER_WORKER"] = str(opts.threads_per_worker)
    if opts.backoff is not None:
        os.environ["MPIFUTURES_BACKOFF"] = str(opts.backoff)
    if opts.idle_backoff is not None:
        os.environ["MPIFUTURES_IDLE_BACKOFF"] = str(opts.idle_backoff)


def run_target(kind: str, target: str, args: list[str]) -> int:
    """Run the user's code as ``__main__``; return its exit status."""
    try:
        if kind == "script":
            sys.argv = [target, *args]
            runpy.run_path(target, run_name="__main__")
        elif kind == "module":
            sys.argv = [target, *args]
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            sys.argv = ["-c", *args]
            exec(compile(target, "<string>", "exec"), {"__name__": "__main__"})
    except SystemExit as exc:
        return _exit_code(exc.code)
    except KeyboardInterrupt as exc:
        return _interrupted(exc)
    except BaseException:  # noqa: BLE001 - print it as python would, then stop the job
        traceback.print_exc()
        return 1
    return 0


def _interrupted(exc: KeyboardInterrupt) -> int:
    global _signalled
    from .launch import signal_of

    signum = _signalled = signal_of(exc)
    name = signal.Signals(signum).name
    sys.stderr.write(f"mpifutures: the job was interrupted ({name}: Ctrl-C, a time limit, "
                     "scancel, or the launcher ending the job because another rank died);"
                     " stopping every rank.\n")
    traceback.print_exc()
    return 128 + signum


def _stop_at_exit() -> None:
    """Stop the workers at exit (at once if they were stopped already): Python has run the
    script's exit handlers and waited for its non-daemon threads by then, which may still
    submit. A signal during either (Python prints and disregards the KeyboardInterrupt) ends
    the job with the signal's status."""
    from . import launch

    if not _signalled:
        launch.stop_scheduler(0)
        return
    sys.stderr.write(f"mpifutures: the job was interrupted ({signal.Signals(_signalled).name}) "
                     "while Python ran the script's exit handlers or waited for its threads; "
                     "stopping every rank.\n")
    # (abort, not an exception: Python would disregard one raised here)
    launch.abort(launch.stop_scheduler(128 + _signalled, signalled=True))


def _threads_left() -> bool:
    """Whether a thread other than this one that is not a daemon still runs."""
    me = threading.current_thread()
    return any(t is not me and not t.daemon and t.is_alive() for t in threading.enumerate())


_signalled = 0  # the signal that interrupted rank 0, if one did


def _interrupt(signum: int, frame: object) -> None:
    """Rank 0's SIGTERM handler (and SIGINT's, once the script has ended)."""
    global _signalled
    _signalled = signum
    raise KeyboardInterrupt(signum)


def _disregard(signum: int, frame: object) -> None:
    """A worker's SIGINT/SIGTERM handler: do nothing (rank 0 tells the worker when to go)."""


def install_signal_handlers(rank: int) -> None:
    """Rank 0 turns SIGTERM (Slurm's time limit, mpiexec's kill) into KeyboardInterrupt so
    that its script unwinds and stops the workers; workers disregard SIGINT and SIGTERM and
    leave when rank 0 tells them, so a Ctrl-C ends the job cleanly rather than in pieces.

    Workers use a handler that does nothing rather than ``SIG_IGN``: an ignored signal stays
    ignored in every program a task starts (``subprocess``, a spawned ``multiprocessing``
    pool), which then cannot be terminated; a handler is reset to the default at ``exec``,
    and a child forked without ``exec`` gets Python's defaults back at the fork."""
    if rank == 0:
        signal.signal(signal.SIGTERM, _interrupt)
    else:
        signal.signal(signal.SIGINT, _disregard)
        signal.signal(signal.SIGTERM, _disregard)
        os.register_at_fork(after_in_child=_default_signal_handlers)


def _default_signal_handlers() -> None:
    """In a child a task forked: SIGINT and SIGTERM act as in any Python program again."""
    if signal.getsignal(signal.SIGINT) is _disregard:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) is _disregard:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_reported(path: str, kind: str, target: str, args: list[str]) -> int:
    """:func:`run_target` inside a performance report written to ``path``; never raises, so
    that the workers are always stopped afterwards."""
    from .diagnostics import check_writable, performance_report

    try:
        check_writable("--report", path)
    except ValueError:
        sys.stderr.write(f"mpifutures: cannot write the report to {path!r} (no such "
                         "directory, or no permission); fix --report, the script did not run.\n")
        return 2
    code = 1
    try:
        with performance_report(path, executor=None):
            code = run_target(kind, target, args)
    except Exception:  # noqa: BLE001 - writing the report failed
        traceback.print_exc()
        sys.stderr.write(f"mpifutures: the performance report {path!r} could not be written.\n")
        code = code or 1
    return code


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    sys.stderr.write(f"{code}\n")
    return 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The launcher: decide this rank's role, run it, return the job's exit status."""
    global _signalled
    opts, kind, target, args = parse(sys.argv[1:] if argv is None else argv)
    _apply(opts)
    # As `python script.py` would, on every rank: workers unpickle what the script imports.
    sys.path.insert(0, os.path.dirname(os.path.abspath(target)) if kind == "script"
                    else os.getcwd() if kind == "module" else "")
    from . import config as configmod, launch

    try:
        config = configmod.load()
    except ValueError as exc:  # a bad MPIFUTURES_* variable: said once, not once per rank
        _refuse(str(exc))
    MPI = launch.mpi(config)
    launch.check_wiring(MPI)
    if kind == "info":
        if MPI.COMM_WORLD.Get_rank() == 0:
            print(launch.describe(MPI))
        return 0
    comm = MPI.COMM_WORLD.Dup()
    install_signal_handlers(comm.Get_rank())
    if comm.Get_rank() != 0:
        try:
            launch.serve(comm, config)
        except BaseException:  # noqa: BLE001 - a worker that cannot serve ends the job now
            traceback.print_exc()
            sys.stderr.write(f"mpifutures: worker rank {comm.Get_rank()} failed; aborting "
                             "the MPI job.\n")
            sys.stderr.flush()
            MPI.COMM_WORLD.Abort(1)
        return 0
    scheduler = launch.start_scheduler(comm, config, "launcher")
    atexit.register(_stop_at_exit)  # before the script's own: they may still submit
    if opts.report:
        code = run_reported(opts.report, kind, target, args)
    else:
        code = run_target(kind, target, args)
    sys.stdout.flush()
    sys.stderr.flush()
    del scheduler
    interrupted, _signalled = _signalled, 0  # (from now on, one means: at exit)
    if code != 0:  # stopped now; after a script that ended normally, at exit (as init() does)
        code = launch.stop_scheduler(code, signalled=bool(interrupted))
        if interrupted and _threads_left():  # a signal: Python must not wait for them
            launch.abort(code)
    signal.signal(signal.SIGINT, _interrupt)  # a Ctrl-C at exit is noted too (_stop_at_exit)
    return code


if __name__ == "__main__":
    sys.exit(main())
