"""Completion hooks: how rank 0's own waiting learns that futures ended.

``as_completed``, ``progress``, ``gather``, ``await`` and ``PoolExecutor`` need to hear of
completions at once, not in the queue of user done-callbacks on the callback thread, where a
slow callback would hold them up. A hook is a ``concurrent.futures`` waiter on the future: it
runs on the thread that ends the future (the scheduler thread), is told the outcome, must be
quick and never block, and can be disarmed when its waiter gives up.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
from typing import Callable, Optional

from .future import _CANCELLED, _ENDED, Future

log = logging.getLogger(__name__)

#: How a future ended, as :func:`when_done` hooks are told.
FINISHED, ERROR, CANCELLED = "finished", "error", "cancelled"


def _outcome(future: cf.Future) -> str:
    """How an ended future ended (read under its Condition, or on the thread ending it)."""
    if future._state in _CANCELLED:
        return CANCELLED
    return ERROR if future._exception is not None else FINISHED


class _Notify:
    """A ``concurrent.futures`` waiter that calls ``fn(future, outcome)`` as the future ends.

    The outcome comes with the call, so a hook never reads a state that a ``retry()`` on
    another thread may already have reset. A hook that raises is logged, never passed on:
    it runs on the thread that resolves futures.
    """

    __slots__ = ("fn", "future")

    def __init__(self, fn: Callable[[cf.Future, str], None], future: cf.Future) -> None:
        self.fn: Optional[Callable] = fn
        self.future: Optional[cf.Future] = future

    def _tell(self, future: cf.Future, outcome: str) -> None:
        fn, self.fn, self.future = self.fn, None, None  # once; then it holds nothing
        if fn is not None:
            try:
                fn(future, outcome)
            except Exception:  # noqa: BLE001 - never break the resolving thread
                log.exception("a completion hook of %r raised", future)

    def add_result(self, future: cf.Future) -> None:
        self._tell(future, FINISHED)

    def add_exception(self, future: cf.Future) -> None:
        self._tell(future, ERROR)

    def add_cancelled(self, future: cf.Future) -> None:
        self._tell(future, CANCELLED)

    def __call__(self, future: cf.Future) -> None:  # as a done-callback of a plain future
        self._tell(future, _outcome(future))

    def disarm(self) -> None:
        """Drop the hook: it will not be called, and (on our futures) leaves the future."""
        future, self.fn, self.future = self.future, None, None
        if isinstance(future, Future):
            with future._condition:
                if self in future._waiters:
                    future._waiters.remove(self)


def when_done(future: cf.Future, fn: Callable[[cf.Future, str], None]) -> Callable[[], None]:
    """Call ``fn(future, outcome)`` once ``future`` has ended (now if it has), with outcome
    ``"finished"``, ``"error"`` or ``"cancelled"``; return a function that disarms the hook.

    For the library's own waiting (``as_completed``, ``progress``, ``gather``, ``await``):
    on mpifutures futures it runs on the thread that ends the future, not behind user
    done-callbacks, so ``fn`` must be quick and never block. Other futures get it as a
    done-callback (a bare ``cancel()`` of theirs tells no waiter).
    """
    notify = _Notify(fn, future)
    if not isinstance(future, Future):
        future.add_done_callback(notify)
        return notify.disarm
    if future._hook_unwatched(notify):
        return notify.disarm
    with future._condition:
        outcome = _outcome(future) if future._state in _ENDED else None
        if outcome is None:
            future._waiters.append(notify)
    if outcome is not None:
        notify._tell(future, outcome)
    return notify.disarm


def wait_ended(futures: list, stop_at_failure: bool,
               timeout: Optional[float] = None) -> Optional[cf.Future]:
    """Wait until every future has ended, or (``stop_at_failure``) one failed or was
    cancelled; return a failed or cancelled one (the first in order, when it was seen
    before waiting), or None. TimeoutError after ``timeout`` seconds."""
    pending, failed = [], None
    for f in futures:
        if f._state not in _ENDED:
            pending.append(f)
        elif failed is None and (f._exception is not None or f._state in _CANCELLED):
            failed = f
    if not pending or (stop_at_failure and failed is not None):
        return failed
    stop = threading.Event()
    ended: list = []
    failures: list = []

    def one_ended(f: cf.Future, outcome: str) -> None:  # quick, and no lock needed
        ended.append(None)
        if outcome != FINISHED:
            failures.append(f)
            if stop_at_failure:
                stop.set()
        if len(ended) >= len(pending):
            stop.set()

    hooks = [when_done(f, one_ended) for f in pending]
    stop.wait(timeout)
    if len(ended) < len(pending):  # stopped early: the rest must not keep us (or them) alive
        for disarm in hooks:
            disarm()
        if not stop.is_set():
            raise cf.TimeoutError(f"{len(pending) - len(ended)} of {len(futures)} futures "
                                  f"did not end within {timeout} s; their tasks keep running: "
                                  "wait longer, or cancel() them")
    return failed or (failures[0] if failures else None)
