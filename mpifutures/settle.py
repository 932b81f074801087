"""How work winds down: as the standard library's pools do, every call of a
:class:`~mpifutures.PoolExecutor` not cancelled runs and every result stays readable after
``shutdown()``; at a normal end of the script, the calls of pools never shut down and the
tasks given to ``fire_and_forget`` run to their end before the workers stop.

The pool's session is not released at shutdown: each future's garbage collection releases
its key. Where the pool owns its workers (spawn mode), which leave when it closes, every live
value is brought to rank 0 first. With ``wait=False`` that waiting happens on a thread, and
the job's end (or the spawned cluster's stop) waits for those threads.
"""

from __future__ import annotations

import concurrent.futures as cf
import sys
import threading
import time
from typing import Any

from .errors import ExecutorClosedError

#: threads finishing the calls of pools shut down without waiting, and each one's cluster
_settling: dict = {}
#: seconds of waiting at exit for kept tasks before saying so on stderr
KEPT_NOTICE_AFTER = 5.0


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


def finish_kept_tasks(scheduler: Any) -> None:
    """At a normal exit, before the workers of ``scheduler`` stop: wait until no task is kept
    to run to its end (``fire_and_forget``, a pool's calls). Waits as long as they run, as
    the standard library's pools do; past ``KEPT_NOTICE_AFTER`` seconds it says so (Ctrl-C
    ends the job). Returns at once if the cluster is gone, or if the script ended with an
    uncaught exception (Python then sets ``sys.last_value`` before the exit handlers run):
    after an error the job ends within seconds."""
    if getattr(sys, "last_value", None) is not None:
        return
    start, said = time.monotonic(), False
    while True:
        try:
            left = scheduler.query(lambda s: s.state.kept(), timeout=10.0)
        except Exception:  # noqa: BLE001 - gone or stuck: stopping the workers says why
            return
        if not left:
            return
        if not said and time.monotonic() - start > KEPT_NOTICE_AFTER:
            said = True
            sys.stderr.write(f"mpifutures: waiting for {left} task(s) kept by fire_and_forget "
                             "or a PoolExecutor to end before the workers stop (Ctrl-C ends "
                             "the job now).\n")
            sys.stderr.flush()
        time.sleep(0.05)
