"""How a :class:`~mpifutures.PoolExecutor` winds down: as the standard library's pools do,
every call not cancelled runs and every result stays readable after ``shutdown()``.

The pool's session is not released at shutdown: each future's garbage collection releases
its key. Where the pool owns its workers (spawn mode), which leave when it closes, every live
value is brought to rank 0 first. With ``wait=False`` that waiting happens on a thread, and
the job's end (or the spawned cluster's stop) waits for those threads.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
from typing import Any

from .errors import ExecutorClosedError

#: threads finishing the calls of pools shut down without waiting, and each one's cluster
_settling: dict = {}


def wind_down(executor: Any, live: list, pending: list, wait: bool) -> None:
    """Wait for a closed pool's ``pending`` futures (now, or on a thread if not ``wait``)."""
    fetch = executor._owns_cluster
    todo = [f for f in live if not f.cancelled()] if fetch else pending
    if wait or not todo:
        _settle(executor, todo, fetch)
        return
    thread = threading.Thread(target=_settle, args=(executor, todo, fetch),
                              name="mpifutures-shutdown", daemon=True)
    _settling[thread] = executor._cluster
    thread.start()


def _settle(executor: Any, futures: list, fetch: bool) -> None:
    """Wait for ``futures`` (``fetch``: bring their values to rank 0, then close)."""
    try:
        if not fetch:
            cf.wait(futures)
            return
        for f in futures:
            try:
                f.result()  # brought to rank 0 while the session still holds it
            except BaseException:  # noqa: BLE001 - the future keeps its own error
                pass
        try:
            executor._close()
        except ExecutorClosedError:
            pass  # the cluster is gone: nothing left to release
    finally:
        _settling.pop(threading.current_thread(), None)


def finish_pending_calls(cluster: Any = None) -> None:
    """Wait until pools shut down with ``wait=False`` have finished their pending calls (the
    standard library's pools do so at exit); called before the workers of ``cluster`` (by
    default: of every cluster) are stopped."""
    for thread, its_cluster in list(_settling.items()):
        if thread is not threading.current_thread() and cluster in (None, its_cluster):
            thread.join()
