"""The task stream and the performance report.

Workers record one dict per task (key, prefix, rank, start, stop, status, result bytes, and
each input fetched: from which rank, how many bytes, how long) only while recording is on, so
the cost is one flag test per task when nobody asks. Records go to rank 0 in batches; the rest
are collected when someone reads the stream. :func:`performance_report` turns recording on
for a block and writes one self-contained HTML file (see :mod:`mpifutures.report`) and,
optionally, a Chrome trace-event file that Perfetto opens (see :mod:`mpifutures.trace`).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import os
import sys
import time
from typing import Any, Iterator, Optional

from .serialize import dumps_args, functions, loads

log = logging.getLogger(__name__)


def set_recording(cluster: Any, on: Optional[bool],
                  timeout: Optional[float] = None) -> list[dict]:
    """Switch recording on every worker (None: leave it); return the records collected, as
    dicts, oldest first.

    Raises:
        TimeoutError: a worker did not answer within ``timeout`` seconds (the records of
        those that did, and of late answers, are kept for the next read).
    """
    from .taskrun import task_stream_control

    if on is not None and not isinstance(on, bool):
        raise TypeError(f"record must be True, False or None (leave it), not {on!r}")
    token, fn_bytes = functions.dumps(task_stream_control)
    cluster.call(token, fn_bytes, dumps_args((on,), {})[0], timeout, each=_keep_records)
    return cluster.query(_records)


def _keep_records(scheduler: Any, ok: bool, payload: Any) -> None:
    """On the scheduler thread: keep the records a worker handed over (they left it)."""
    if ok:
        scheduler.task_records.extend(loads(payload))


def _records(scheduler: Any) -> list[dict]:
    return [as_dict(r) for r in sorted(scheduler.task_records, key=lambda r: r[2])]


def as_dict(record: tuple) -> dict:
    """A worker's record tuple as the documented dict."""
    key, rank, start, stop, ok, nbytes, fetches = record
    return {"key": key, "prefix": key.rsplit("-", 1)[0], "rank": rank, "start": start,
            "stop": stop, "status": "finished" if ok else "error", "nbytes": nbytes,
            "fetches": [{"from": s, "nbytes": n, "seconds": t} for s, n, t in fetches]}


def settings(cluster: Any) -> dict[str, Any]:
    """The job's settings shown in reports: ranks, hosts, MPI library, versions."""
    import platform
    import socket

    import cloudpickle
    import numpy

    from . import __version__

    hosts = cluster.hosts()
    return {
        "ranks": len(cluster.workers) + 1,
        "workers": len(cluster.workers),
        "hosts": ", ".join(sorted(set(hosts.values()) | {socket.gethostname()})),
        "MPI": cluster.t.describe(),
        "mpifutures": __version__,
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "cloudpickle": cloudpickle.__version__,
        "platform": platform.platform(),
        "threads per worker": cluster.config.threads_per_worker,
    }


@contextlib.contextmanager
def performance_report(path: str, *, trace: Optional[str] = None,
                       executor: Any = None) -> Iterator[None]:
    """Record the task stream inside the block; then write an HTML report to ``path``.

    Args:
        path: the HTML file (self-contained: it opens offline, e.g. after ``scp``).
        trace: also write the timeline as Chrome trace-event JSON here (open in Perfetto).
        executor: whose cluster to record (default: this process's cluster).
    """
    from .executor import Executor
    from .report import write_report
    from .trace import write_chrome_trace

    check_writable("path", path)  # before the block's work, not after it
    if trace is not None:
        check_writable("trace", trace)
    if executor is not None and not isinstance(executor, Executor):
        raise TypeError(f"executor must be an mpifutures Executor, not {executor!r}")
    cluster = executor._cluster if executor is not None else _current()
    started = time.time()
    try:  # a worker in C code that holds the GIL answers late: its tasks may be missing
        set_recording(cluster, True, cluster.config.shutdown_timeout)
    except cf.TimeoutError as exc:
        log.warning("performance report %s may lack some tasks: %s", path, exc)
    try:
        yield
    finally:
        try:
            collected = set_recording(cluster, cluster.config.task_stream,
                                      cluster.config.shutdown_timeout)
        except cf.TimeoutError as exc:  # write what rank 0 has rather than wait on
            log.warning("performance report %s lacks some tasks: %s", path, exc)
            collected = cluster.query(_records)
        records = [r for r in collected if r["stop"] >= started]
        write_report(path, records, settings(cluster))
        if trace is not None:
            write_chrome_trace(trace, records)


def check_writable(name: str, path: Any) -> None:
    """Raise at once if a file cannot be written at ``path`` (a str or path-like)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a file name (str or path-like), not {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise ValueError(f"{name}={os.fspath(path)!r} cannot be written: give a file name in "
                         "an existing, writable directory")


def _current() -> Any:
    from .launch import current_cluster

    return current_cluster()
