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


#: each numeric variable: its type, least and greatest values (the greatest keep sleeps,
#: timeouts and thread counts in what the system can do: an hour-long poll sleep or a
#: million compute threads would look like a hang)
BOUNDS: dict[str, tuple[Callable[[str], Any], float, float]] = {
    "MPIFUTURES_BACKOFF": (float, 0.0, 1.0),
    "MPIFUTURES_IDLE_BACKOFF": (float, 0.0, 60.0),
    "MPIFUTURES_IDLE_AFTER": (float, 0.0, 86400.0),
    "MPIFUTURES_INLINE_BYTES": (int, 0, 1 << 30),
    "MPIFUTURES_BUFFER_POOL": (int, 0, 1 << 62),
    "MPIFUTURES_MALLOC_KEEP": (int, 0, 1 << 62),
    "MPIFUTURES_GC_THRESHOLD": (int, 0, (1 << 31) - 1),
    "MPIFUTURES_TASKS_PER_WORKER": (int, 1, 1 << 30),
    "MPIFUTURES_SHUTDOWN_TIMEOUT": (float, 0.1, 86400.0),
    "MPIFUTURES_MAX_WORKERS": (int, 1, 1 << 20),
    "MPIFUTURES_THREADS_PER_WORKER": (int, 1, 1024),
    "MPIFUTURES_TASK_STREAM": (int, 0, 1 << 62),
    "MPIFUTURES_TASK_STREAM_MAX": (int, 1, 1 << 62),
}


def parse(name: str, raw: str) -> Any:
    """``raw`` as a value of the variable ``name``; ValueError saying what is wrong with it
    (without the name: the launcher's options use this too)."""
    cast, least, most = BOUNDS[name]
    try:
        value = cast(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not {'an integer' if cast is int else 'a number'}"
                         ) from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{raw!r} is not a finite number")
    if value < least:
        raise ValueError(f"{raw!r} must be at least {least}")
    if value > most:
        raise ValueError(f"{raw!r} must be at most {most}")
    return value


def _number(name: str, default: Any) -> Any:
    """The variable ``name`` (see BOUNDS); unset or "" gives ``default``."""
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return parse(name, raw)
    except ValueError as exc:
        raise ValueError(f"{name}={exc}") from None


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
    value = _number("MPIFUTURES_MALLOC_KEEP", 256 << 20)
    if 0 < value < 32 << 20:
        raise ValueError(f"MPIFUTURES_MALLOC_KEEP={value} must be 0 (leave malloc alone) or at "
                         f"least {32 << 20} (32 MB)")
    return value


def load() -> Config:
    """Read the ``MPIFUTURES_*`` variables; raise ValueError naming a bad one."""
    return Config(
        backoff=_number("MPIFUTURES_BACKOFF", 0.001),
        idle_backoff=_number("MPIFUTURES_IDLE_BACKOFF", 0.05),
        idle_after=_number("MPIFUTURES_IDLE_AFTER", 0.25),
        inline_bytes=_number("MPIFUTURES_INLINE_BYTES", 4096),
        buffer_pool=_number("MPIFUTURES_BUFFER_POOL", 256 << 20),
        malloc_keep=_malloc_keep(),
        gc_threshold=_number("MPIFUTURES_GC_THRESHOLD", 10_000),
        tasks_per_worker=_number("MPIFUTURES_TASKS_PER_WORKER", 64),
        shutdown_timeout=_number("MPIFUTURES_SHUTDOWN_TIMEOUT", 10.0),
        max_workers=_number("MPIFUTURES_MAX_WORKERS", os.cpu_count() or 1),
        threads_per_worker=_number("MPIFUTURES_THREADS_PER_WORKER", 1),
        log_level=_level("MPIFUTURES_LOG_LEVEL", "WARNING"),
        task_stream=_number("MPIFUTURES_TASK_STREAM", 0) > 0,
        task_stream_max=_number("MPIFUTURES_TASK_STREAM_MAX", 1_000_000),
    )
