"""Carry a task's exception from a worker to rank 0 with its type, message and traceback.

On the worker, :func:`capture` turns an exception into a small picklable tuple (the exception
pickled if it can be, its type name and message, the formatted traceback, the task key, rank
and host). On rank 0, :func:`rebuild` makes the exception again, with a
:class:`~mpifutures.errors.RemoteTraceback` as ``__cause__``. ``SystemExit`` and
``KeyboardInterrupt`` raised by a task become :class:`~mpifutures.errors.TaskExit`, so that
``result()`` never ends the user's script by surprise.
"""

from __future__ import annotations

import builtins
import pickle
import traceback
from typing import Optional

from .errors import MpiFuturesError, RemoteTraceback, SerializationError, TaskExit


_GROUP = getattr(builtins, "BaseExceptionGroup", ())  # (Python 3.11 and later)

#: (pickled exception or None, type name, message, traceback text, key, rank, host)
Failure = tuple[Optional[bytes], str, str, str, str, int, str]


def capture(exc: BaseException, key: str, rank: int) -> Failure:
    """Describe ``exc``, raised by task ``key`` on ``rank``, for the trip to rank 0; then
    let go of the frames its traceback holds (see :func:`_let_go`)."""
    try:
        return _capture(exc, key, rank)
    finally:
        _let_go(exc)


def _capture(exc: BaseException, key: str, rank: int) -> Failure:
    if not isinstance(exc, Exception):
        exc = TaskExit(f"task {key!r} raised {type(exc).__name__}({_args(exc)}) on rank {rank}; "
                       "the worker kept running")
    try:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException:  # noqa: BLE001 - a broken __str__ must not lose the failure
        text = f"{type(exc).__qualname__}: {safe_str(exc)}\n"
    import cloudpickle  # only when something failed: it costs every rank's start-up ~12 ms
    import socket

    try:
        pickled: Optional[bytes] = cloudpickle.dumps(exc)
        cloudpickle.loads(pickled)  # an exception that cannot come back travels as text
    except BaseException:  # noqa: BLE001 - an unpicklable exception still travels as text
        pickled = None
    return (pickled, type(exc).__qualname__, safe_str(exc), text, key, rank,
            socket.gethostname())


def _let_go(exc: BaseException) -> None:
    """Clear the local variables of the finished frames in the tracebacks of ``exc`` and of
    its causes and contexts. A task that keeps its exception in a variable (``except E as e:
    last = e``) makes a cycle, exception to traceback to frame to exception, that holds every
    local of the task (its inputs too) until the garbage collector runs, which an idle worker
    never does."""
    stack: list = [exc]
    seen: set[int] = set()
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        traceback.clear_frames(e.__traceback__)
        e.__traceback__ = None
        stack += (e.__cause__, e.__context__)
        if isinstance(e, _GROUP):
            stack += e.exceptions


def safe_str(obj: object) -> str:
    """``str(obj)``, or a placeholder if its ``__str__`` raises."""
    try:
        return str(obj)
    except BaseException:  # noqa: BLE001 - describing an error must never raise
        return f"<{type(obj).__qualname__} whose str() failed>"


def describe(message: str, key: str, rank: int, exc_type: type = MpiFuturesError) -> Failure:
    """A failure that mpifutures itself detected (no user traceback)."""
    return capture(exc_type(message), key, rank)


def rebuild(failure: Failure) -> BaseException:
    """Make the exception described by ``failure``, its remote traceback as ``__cause__``."""
    pickled, type_name, message, text, key, rank, host = failure
    exc: Optional[BaseException] = None
    if pickled is not None:
        try:
            exc = pickle.loads(pickled)  # imports cloudpickle if the exception needs it
        except BaseException:  # noqa: BLE001 - even SystemExit: fall back to the text below
            exc = None
    if not isinstance(exc, BaseException):
        exc = MpiFuturesError(f"{type_name}: {message} (the exception itself could not be "
                              "pickled on the worker or rebuilt on rank 0, so it comes as "
                              "MpiFuturesError; its remote traceback is its __cause__)")
    exc.__cause__ = RemoteTraceback(f"task {key!r} on rank {rank} ({host}):\n{text}")
    return exc


def unpicklable_result(value: object, key: str, rank: int, err: BaseException) -> Failure:
    """The failure of a task whose result cannot be pickled."""
    return describe(
        f"the result of task {key!r} (of type {type(value).__qualname__}) cannot be pickled, "
        f"so it cannot leave rank {rank}: {safe_str(err)}. Return data that pickles.",
        key, rank, SerializationError,
    )


def _args(exc: BaseException) -> str:
    try:
        return ", ".join(repr(a) for a in exc.args)
    except BaseException:  # noqa: BLE001 - describing an error must never raise
        return "..."
