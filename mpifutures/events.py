"""Events fed to :class:`~mpifutures.state.SchedulerState` and the commands it returns.

Events are past-tense facts (something happened); commands are imperatives (the driver must
do this). Both are plain records with no behaviour, so that tests can build them and compare
lists of them exactly. They are treated as immutable but not frozen (several are built per
task). They are written out by hand rather than as dataclasses: generating thirteen classes
and importing ``dataclasses`` cost rank 0 ~15 ms at every start, on the job's critical path.
"""

from __future__ import annotations

from typing import Any, Optional


class Record:
    """Fields in ``__slots__``; equal to a record of the same type with equal fields."""

    __slots__: tuple[str, ...] = ()
    __hash__ = None  # type: ignore[assignment]  # mutable, like a non-frozen dataclass

    def _fields(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() == other._fields()  # type: ignore[attr-defined]

    def replace(self, **changes: Any) -> "Record":
        """A copy with ``changes`` applied (tests use it)."""
        copy = object.__new__(type(self))
        for name in self.__slots__:
            setattr(copy, name, changes.pop(name, getattr(self, name)))
        if changes:
            raise TypeError(f"{type(self).__name__} has no field {', '.join(changes)}")
        return copy

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"


# ---------------------------------------------------------------- events


class TaskSubmitted(Record):
    """A client asked for ``key``; ``spec`` is opaque and travels in :class:`Dispatch`."""

    __slots__ = ("key", "spec", "deps", "client", "priority", "workers", "loose", "retries")

    def __init__(self, key: str, spec: Any, deps: tuple[str, ...] = (), client: int = 0,
                 priority: int = 0, workers: Optional[tuple[int, ...]] = None,
                 loose: bool = False, retries: int = 0) -> None:
        self.key, self.spec, self.deps, self.client = key, spec, deps, client
        self.priority, self.workers, self.loose, self.retries = priority, workers, loose, retries


class DataScattered(Record):
    """A client sent a value for ``key`` to ``workers[0]``, which forwards it to the others;
    ``copy`` numbers this scatter (rank 0 draws it from ``SchedulerState.number``): copies
    carry it as their version, so that freeing an older copy never drops a newer one that
    overtook the FREE on another path."""

    __slots__ = ("key", "workers", "nbytes", "client", "copy")

    def __init__(self, key: str, workers: tuple[int, ...], nbytes: int, client: int = 0,
                 copy: int = 0) -> None:
        self.key, self.workers, self.nbytes, self.client = key, workers, nbytes, client
        self.copy = copy


class ReplicaStored(Record):
    """``worker`` keeps a copy of ``key`` (an input it fetched, or scattered data) whose
    version is ``copy`` (see :mod:`~mpifutures.state`)."""

    __slots__ = ("key", "worker", "copy")

    def __init__(self, key: str, worker: int, copy: int = 0) -> None:
        self.key, self.worker, self.copy = key, worker, copy


class TaskFinished(Record):
    """``worker`` computed dispatch number ``attempt`` of ``key``; ``value`` (opaque here) is
    the result when small enough to come with the report, else None."""

    __slots__ = ("key", "worker", "nbytes", "attempt", "value")

    def __init__(self, key: str, worker: int, nbytes: int, attempt: int = 0,
                 value: Any = None) -> None:
        self.key, self.worker, self.nbytes, self.attempt = key, worker, nbytes, attempt
        self.value = value


class TaskFailed(Record):
    """Dispatch ``attempt`` of ``key`` raised on ``worker``; ``error`` is opaque here."""

    __slots__ = ("key", "worker", "error", "attempt")

    def __init__(self, key: str, worker: int, error: Any, attempt: int = 0) -> None:
        self.key, self.worker, self.error, self.attempt = key, worker, error, attempt


class TaskDropped(Record):
    """Dispatch ``attempt`` of ``key``, cancelled or recalled, has left ``worker``: it did not
    run, or (cancelled) its run ended and its outcome was dropped."""

    __slots__ = ("key", "worker", "attempt")

    def __init__(self, key: str, worker: int, attempt: int) -> None:
        self.key, self.worker, self.attempt = key, worker, attempt


class WorkerStalled(Record):
    """``worker`` has owed tasks for a while without a word (``stalled``: it runs something
    long), or has spoken again (not ``stalled``). See :mod:`~mpifutures.stalls`."""

    __slots__ = ("worker", "stalled")

    def __init__(self, worker: int, stalled: bool) -> None:
        self.worker, self.stalled = worker, stalled


class FutureReleased(Record):
    """``client`` holds no future of ``key`` any more."""

    __slots__ = ("key", "client")

    def __init__(self, key: str, client: int = 0) -> None:
        self.key, self.client = key, client


class CancelRequested(Record):
    """``client`` cancelled ``keys`` (and so everything that depends on them)."""

    __slots__ = ("keys", "client")

    def __init__(self, keys: tuple[str, ...], client: int = 0) -> None:
        self.keys, self.client = keys, client


class RetryRequested(Record):
    """``client`` asked to run the failed task ``key`` again."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key


class KeepRequested(Record):
    """The task ``key`` must run even if every future of it is dropped (fire and forget)."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key


# ---------------------------------------------------------------- commands


class Dispatch(Record):
    """Send task ``key`` to ``worker``; ``deps`` gives each input as ``(key, rank holding
    it, oldest version that will do)``.

    A dependency whose rank is ``worker`` itself may still be computing there: the worker
    starts the task once that key is in its store.
    """

    __slots__ = ("worker", "key", "spec", "deps", "priority", "attempt")

    def __init__(self, worker: int, key: str, spec: Any, deps: tuple[tuple[str, int, int], ...],
                 priority: int = 0, attempt: int = 0) -> None:
        self.worker, self.key, self.spec, self.deps = worker, key, spec, deps
        self.priority, self.attempt = priority, attempt


class ResolveFuture(Record):
    """Tell the client futures of ``key`` that it ended: finished, error or cancelled; a
    finish may carry its ``value`` (see :class:`TaskFinished`)."""

    __slots__ = ("key", "status", "error", "value")

    def __init__(self, key: str, status: str, error: Any = None, value: Any = None) -> None:
        self.key, self.status, self.error, self.value = key, status, error, value


class ResetFutures(Record):
    """The futures of ``key`` are pending again: its task runs anew, as a failed or
    cancelled input of a task being retried (rank 0 resets them before it resolves them)."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key


class FreeData(Record):
    """``worker`` must drop its copy of ``key`` (one whose version is above ``copy``, when
    given, is newer: it stays)."""

    __slots__ = ("worker", "key", "copy")

    def __init__(self, worker: int, key: str, copy: int = 0) -> None:
        self.worker, self.key, self.copy = worker, key, copy


class RecallTask(Record):
    """``worker`` gives dispatch ``attempt`` of ``key`` back (it answers DROPPED) unless a
    compute thread has taken it, which then runs and reports as usual."""

    __slots__ = ("worker", "key", "attempt")

    def __init__(self, worker: int, key: str, attempt: int) -> None:
        self.worker, self.key, self.attempt = worker, key, attempt


class CancelTask(Record):
    """``worker`` must not run ``key`` (if it already runs, its result is dropped)."""

    __slots__ = ("worker", "key")

    def __init__(self, worker: int, key: str) -> None:
        self.worker, self.key = worker, key
