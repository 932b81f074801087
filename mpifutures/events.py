"""Events fed to :class:`~mpifutures.state.SchedulerState` and the commands it returns.

Events are past-tense facts (something happened); commands are imperatives (the driver must
do this). Both are plain records with no behaviour, so that tests can build them and compare
lists of them exactly. They are treated as immutable but not declared ``frozen``: a frozen
dataclass takes five times longer to build, and several are built per task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

# ---------------------------------------------------------------- events


@dataclass(slots=True)
class TaskSubmitted:
    """A client asked for ``key``; ``spec`` is opaque and travels in :class:`Dispatch`."""

    key: str
    spec: Any
    deps: tuple[str, ...] = ()
    client: int = 0
    priority: int = 0
    workers: Optional[tuple[int, ...]] = None
    loose: bool = False
    retries: int = 0


@dataclass(slots=True)
class DataScattered:
    """A client sent a value for ``key`` to ``workers[0]``, which forwards it to the others."""

    key: str
    workers: tuple[int, ...]
    nbytes: int
    client: int = 0


@dataclass(slots=True)
class ReplicaStored:
    """``worker`` keeps a copy of ``key`` (an input it fetched, or forwarded scattered data)."""

    key: str
    worker: int


@dataclass(slots=True)
class TaskFinished:
    """``worker`` computed dispatch number ``attempt`` of ``key``."""

    key: str
    worker: int
    nbytes: int
    attempt: int = 0


@dataclass(slots=True)
class TaskFailed:
    """Dispatch ``attempt`` of ``key`` raised on ``worker``; ``error`` is opaque here."""

    key: str
    worker: int
    error: Any
    attempt: int = 0


@dataclass(slots=True)
class FutureReleased:
    """``client`` holds no future of ``key`` any more."""

    key: str
    client: int = 0


@dataclass(slots=True)
class CancelRequested:
    """``client`` cancelled ``keys`` (and so everything that depends on them)."""

    keys: tuple[str, ...]
    client: int = 0


@dataclass(slots=True)
class RetryRequested:
    """``client`` asked to run the failed task ``key`` again."""

    key: str


@dataclass(slots=True)
class KeepRequested:
    """The task ``key`` must run even if every future of it is dropped (fire and forget)."""

    key: str


# ---------------------------------------------------------------- commands


@dataclass(slots=True)
class Dispatch:
    """Send task ``key`` to ``worker``; ``deps`` pairs each input key with a rank holding it.

    A dependency whose rank is ``worker`` itself may still be computing there: the worker
    starts the task once that key is in its store.
    """

    worker: int
    key: str
    spec: Any
    deps: tuple[tuple[str, int], ...]
    priority: int = 0
    attempt: int = 0


@dataclass(slots=True)
class ResolveFuture:
    """Tell the client futures of ``key`` that it ended: finished, error or cancelled."""

    key: str
    status: str
    error: Any = None


@dataclass(slots=True)
class FreeData:
    """``worker`` must drop its copy of ``key``."""

    worker: int
    key: str


@dataclass(slots=True)
class CancelTask:
    """``worker`` must not run ``key`` (if it already runs, its result is dropped)."""

    worker: int
    key: str
