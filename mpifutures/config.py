"""Every ``MPIFUTURES_*`` environment variable, read in one place.

=============================  =========  ==================================================
variable                       default    meaning
=============================  =========  ==================================================
MPIFUTURES_BACKOFF             0.001      longest sleep between polls right after traffic, in s
MPIFUTURES_IDLE_BACKOFF        0.05       longest sleep of an idle rank, in seconds
MPIFUTURES_IDLE_AFTER          0.25       seconds without traffic before sleeps grow past
                                          ``MPIFUTURES_BACKOFF`` (to 1/20 of the idle time)
MPIFUTURES_INLINE_BYTES        4096       results up to this size travel with the reply
MPIFUTURES_BUFFER_POOL         268435456  bytes of freed receive memory kept for reuse (0: off)
MPIFUTURES_MALLOC_KEEP         268435456  bytes of freed heap memory kept by malloc (0: leave)
MPIFUTURES_GC_THRESHOLD        10000      raise gc's first threshold to this on every rank (0: leave)
MPIFUTURES_TASKS_PER_WORKER    64         tasks without inputs queued on each worker
MPIFUTURES_SHUTDOWN_TIMEOUT    10.0       seconds to wait for workers at exit, then Abort
MPIFUTURES_MAX_WORKERS         (cores)    workers spawned by ``Executor()`` in spawn mode
MPIFUTURES_THREADS_PER_WORKER  1          compute threads on each worker
MPIFUTURES_LOG_LEVEL           WARNING    level of the ``mpifutures`` loggers
MPIFUTURES_TASK_STREAM         0          1: record the task stream from the start
MPIFUTURES_TASK_STREAM_MAX     1000000    task-stream records kept on rank 0 (oldest dropped)
=============================  =========  ==================================================
"""

from __future__ import annotations

import os
from typing import Any, Callable, NamedTuple


def _number(name: str, default: Any, cast: Callable[[str], Any], minimum: float) -> Any:
    """Read ``name`` as a number (``cast``) not below ``minimum``; None or "" gives default."""
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not {'an integer' if cast is int else 'a number'}"
                         ) from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name}={raw!r} is not a finite number")
    if value < minimum:
        raise ValueError(f"{name}={raw!r} must be at least {minimum}")
    return value


def _float(name: str, default: float, minimum: float = 0.0) -> float:
    return _number(name, default, float, minimum)


def _int(name: str, default: int, minimum: int = 1) -> int:
    return _number(name, default, int, minimum)


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _level(name: str, default: str) -> str:
    raw = os.environ.get(name, default)
    level = raw.strip().upper()
    if level not in LEVELS:
        raise ValueError(f"{name}={raw!r} must be one of {', '.join(LEVELS)}")
    return level


class Config(NamedTuple):
    """Settings of one process, read from the environment by :func:`load` (immutable; a
    NamedTuple rather than a dataclass, whose import costs every rank ~7 ms at start-up)."""

    backoff: float = 0.001
    idle_backoff: float = 0.05
    idle_after: float = 0.25
    inline_bytes: int = 4096
    buffer_pool: int = 256 << 20
    malloc_keep: int = 256 << 20
    tasks_per_worker: int = 64
    gc_threshold: int = 10_000
    shutdown_timeout: float = 10.0
    max_workers: int = 0
    threads_per_worker: int = 1
    log_level: str = "WARNING"
    task_stream: bool = False
    task_stream_max: int = 1_000_000


def _malloc_keep() -> int:
    """0, or at least 32 MB: below glibc's largest mmap threshold, fixing the threshold would
    map every larger block afresh, worse than leaving malloc alone."""
    value = _int("MPIFUTURES_MALLOC_KEEP", 256 << 20, minimum=0)
    if 0 < value < 32 << 20:
        raise ValueError(f"MPIFUTURES_MALLOC_KEEP={value} must be 0 (leave malloc alone) or at "
                         f"least {32 << 20} (32 MB)")
    return value


def load() -> Config:
    """Read the ``MPIFUTURES_*`` variables; raise ValueError naming a bad one."""
    return Config(
        backoff=_float("MPIFUTURES_BACKOFF", 0.001),
        idle_backoff=_float("MPIFUTURES_IDLE_BACKOFF", 0.05),
        idle_after=_float("MPIFUTURES_IDLE_AFTER", 0.25),
        inline_bytes=_int("MPIFUTURES_INLINE_BYTES", 4096, minimum=0),
        buffer_pool=_int("MPIFUTURES_BUFFER_POOL", 256 << 20, minimum=0),
        malloc_keep=_malloc_keep(),
        gc_threshold=_int("MPIFUTURES_GC_THRESHOLD", 10_000, minimum=0),
        tasks_per_worker=_int("MPIFUTURES_TASKS_PER_WORKER", 64),
        shutdown_timeout=_float("MPIFUTURES_SHUTDOWN_TIMEOUT", 10.0, minimum=0.1),
        max_workers=_int("MPIFUTURES_MAX_WORKERS", os.cpu_count() or 1),
        threads_per_worker=_int("MPIFUTURES_THREADS_PER_WORKER", 1),
        log_level=_level("MPIFUTURES_LOG_LEVEL", "WARNING"),
        task_stream=_int("MPIFUTURES_TASK_STREAM", 0, minimum=0) > 0,
        task_stream_max=_int("MPIFUTURES_TASK_STREAM_MAX", 1_000_000),
    )
