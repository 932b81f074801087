"""Exceptions raised by mpifutures.

::

    Exception
     ├── MpiFuturesError                 base of every error mpifutures raises itself
     │    ├── NoWorkersError             the job has no worker ranks to run tasks on
     │    ├── WorkerLostError            a worker rank died; the cluster stops
     │    ├── DataLostError              a result is no longer held anywhere (released, shut down)
     │    ├── TaskExit                   a task raised SystemExit or KeyboardInterrupt
     │    └── SerializationError (+TypeError)   a value could not be pickled or unpickled
     ├── RuntimeError ─ ExecutorClosedError (+MpiFuturesError)   call after shutdown
     └── concurrent.futures.TimeoutError / CancelledError        as in the standard library

    RemoteTraceback                   the worker's traceback, set as ``__cause__``

An exception raised by a task is re-raised on rank 0 with its own type and message; its
``__cause__`` is a :class:`RemoteTraceback` carrying the text of the traceback on the worker,
stamped with the task key, rank and host.
"""

from __future__ import annotations


class MpiFuturesError(Exception):
    """Base class of the errors that mpifutures raises itself."""


class NoWorkersError(MpiFuturesError):
    """The MPI job has no worker ranks, so no task can run."""


class WorkerLostError(MpiFuturesError):
    """A worker rank died (see :mod:`mpifutures.liveness`): its tasks and data are lost, so
    the cluster stops and every future not yet ended fails with this."""


class DataLostError(MpiFuturesError):
    """The future's data is no longer held by any rank."""


class TaskExit(MpiFuturesError):
    """A task raised ``SystemExit`` or ``KeyboardInterrupt``; the worker kept running."""


class SerializationError(MpiFuturesError, TypeError):
    """A function, argument or result could not be pickled or unpickled."""


class ExecutorClosedError(MpiFuturesError, RuntimeError):
    """The executor was shut down; it accepts no more calls."""


class RemoteTraceback(Exception):
    """The traceback text of an exception raised on another rank."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'
