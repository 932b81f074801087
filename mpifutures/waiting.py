"""Module-level helpers to wait on many futures: :func:`wait` and :func:`as_completed`."""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from collections import deque
from typing import Any, Iterable, Iterator, Optional

from .future import check_timeout
from .hooks import when_done

FIRST_COMPLETED = cf.FIRST_COMPLETED
FIRST_EXCEPTION = cf.FIRST_EXCEPTION
ALL_COMPLETED = cf.ALL_COMPLETED


def wait(fs: Iterable[cf.Future], timeout: Optional[float] = None,
         return_when: str = ALL_COMPLETED) -> cf._base.DoneAndNotDoneFutures:
    """Wait for futures, as ``concurrent.futures.wait``; returns ``(done, not_done)`` sets.

    Raises:
        ValueError: ``return_when`` is not one of the three constants, or ``timeout`` < 0.
    """
    if return_when not in (FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED):
        raise ValueError(f"return_when must be FIRST_COMPLETED, FIRST_EXCEPTION or "
                         f"ALL_COMPLETED, not {return_when!r}")
    fs = list(fs)
    for f in fs:
        if not isinstance(f, cf.Future):
            raise TypeError(f"wait takes futures, not {type(f).__qualname__}: {f!r}")
    return cf.wait(fs, check_timeout(timeout), return_when)


class as_completed:  # noqa: N801 - a function-like name, as in concurrent.futures
    """Iterate over futures as they finish; more may be added while iterating.

    ``for f in as_completed(fs): ...`` yields each future once it is done (finished, failed
    or cancelled); with ``with_results=True`` it yields ``(future, result)`` pairs and
    re-raises a failed task's exception. ``ac.add(f)`` adds a future at any time, also from
    inside the loop. ``timeout`` bounds the whole iteration, from the call.
    """

    def __init__(self, fs: Iterable[cf.Future] = (), timeout: Optional[float] = None,
                 with_results: bool = False) -> None:
        timeout = check_timeout(timeout)
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._with_results = with_results
        self._cond = threading.Condition()
        self._ready: deque = deque()
        self._ready_ids: set[int] = set()  # so that a future is queued once
        self._waiting: dict = {}  # id -> (future, disarm its hook): keeps pending ones alive
        for f in fs:
            self.add(f)

    def add(self, future: cf.Future) -> None:
        """Also yield ``future`` once it is done."""
        if not isinstance(future, cf.Future):
            raise TypeError(f"as_completed takes futures, not {type(future).__qualname__}: "
                            f"{future!r}")
        with self._cond:
            if id(future) in self._waiting or id(future) in self._ready_ids:
                return  # already to be yielded (once)
            self._waiting[id(future)] = (future, None)
        # Not a done-callback: those run one after another on the callback thread, where a
        # slow user callback would hold this loop up.
        disarm = when_done(future, self._done)
        with self._cond:
            if id(future) in self._waiting:  # still pending: keep the way to disarm it
                self._waiting[id(future)] = (future, disarm)

    def update(self, futures: Iterable[cf.Future]) -> None:
        """Add several futures."""
        for f in futures:
            self.add(f)

    def _done(self, future: cf.Future, outcome: str) -> None:
        with self._cond:
            self._ready.append(future)
            self._ready_ids.add(id(future))
            self._waiting.pop(id(future), None)
            self._cond.notify_all()

    def count(self) -> int:
        """Futures added and not yet yielded."""
        with self._cond:
            return len(self._waiting) + len(self._ready)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        with self._cond:
            while not self._ready:
                if not self._waiting:  # (another thread may have taken the last one)
                    raise StopIteration
                left = None if self._deadline is None else self._deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(left)
            if not self._ready:
                unfinished = len(self._waiting)
                future = None
            else:
                future = self._ready.popleft()
                self._ready_ids.discard(id(future))
        if future is None:  # past the deadline: every later call ends here too
            self._disarm()  # outside our lock: a hook takes it under the future's lock
            raise cf.TimeoutError(f"{unfinished} futures unfinished after timeout")
        if self._with_results:
            if future.cancelled() or future.exception(0) is not None:
                return future, future.result(0)  # raises the task's own exception, once
            left = None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
            try:
                return future, future.result(left)
            except cf.TimeoutError:  # its value did not arrive in time: yield it next time
                with self._cond:
                    if id(future) not in self._ready_ids:
                        self._ready.appendleft(future)
                        self._ready_ids.add(id(future))
                raise
        return future

    def _disarm(self) -> None:
        with self._cond:
            hooks = [disarm for _, disarm in self._waiting.values() if disarm is not None]
        for disarm in hooks:
            disarm()
