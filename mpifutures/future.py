"""Client futures: ``concurrent.futures.Future`` handles on data that lives on workers.

Every future of one key shares a :class:`KeyRecord` that holds the value once rank 0 has it
(small results come with the task's completion, others are fetched from the owner on the first
``result()``). A future becomes *done* when the task ends on its worker, so the standard
library's ``wait`` and ``as_completed`` work unchanged; ``result()`` then fetches the value.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import numbers
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

from .callbacks import call_all
from .errors import DataLostError, ExecutorClosedError
from .serialize import Payload, register_future_type, unpickled

if TYPE_CHECKING:
    from .executor import Executor

log = logging.getLogger(__name__)

_REMOTE = object()  # the result of a finished future whose value is held by the KeyRecord
_FINISHED, _PENDING = cf._base.FINISHED, cf._base.PENDING
_CANCELLED = (cf._base.CANCELLED, cf._base.CANCELLED_AND_NOTIFIED)
_ENDED = (*_CANCELLED, _FINISHED)
_LAZY = threading.Lock()  # makes conditions, and resolves futures that have none
#: once a task has finished, its value gets at least this many seconds to arrive from its
#: owner, whatever is left of a ``result(timeout)`` (a finished future's result is no wait)
VALUE_GRACE = 60.0
_STATUS = {cf._base.PENDING: "pending", cf._base.RUNNING: "pending",
           cf._base.CANCELLED: "cancelled", cf._base.CANCELLED_AND_NOTIFIED: "cancelled"}


def check_timeout(timeout: Any) -> Optional[float]:
    """Validate a ``timeout`` argument: None or a number of seconds, not negative (``inf``
    and anything beyond ``threading.TIMEOUT_MAX`` mean no limit)."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):  # numpy's too
        raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")
    if timeout != timeout:
        raise ValueError(f"timeout must be a number of seconds or None, not {timeout!r}")
    if timeout < 0:  # (no float() of a huge int)
        raise ValueError(f"timeout must not be negative, got {timeout!r}")
    if timeout > threading.TIMEOUT_MAX:  # inf, or longer than a lock can wait: no limit
        return None
    return float(timeout)


class Unbuilt(Exception):
    """A task's failure as it came from its worker, not yet made into its exception.

    The scheduler thread fails futures with this; the first thread that asks for the
    exception builds it (unpickling may import the user's modules, which must not stall the
    scheduler), and every future of the key then shares the one exception.
    """

    def __init__(self, failure: tuple) -> None:
        super().__init__(failure[1])
        self.failure = failure
        self.lock = threading.Lock()
        self.exc: Optional[BaseException] = None

    def build(self) -> BaseException:
        with self.lock:
            if self.exc is None:
                from .failure import rebuild

                self.exc = rebuild(self.failure)
            return self.exc


class KeyRecord:
    """What rank 0 knows of one key's value, shared by all of its futures."""

    __slots__ = ("key", "handles", "live", "payload", "value", "loaded", "error", "requested",
                 "arrived", "lock", "__weakref__")

    def __init__(self, key: str) -> None:
        self.key = key
        self.handles: list = []  # weakrefs to the Future objects of this key
        self.live = 0  # how many of them lived when dead ones were last taken out
        self.payload: Optional[Payload] = None
        self.value: Any = None
        self.loaded = False
        self.error: Optional[BaseException] = None
        self.requested = False
        self.arrived: Optional[threading.Event] = None  # made when a fetch is requested
        self.lock = threading.Lock()

    def deliver(self, payload: Optional[Payload], error: Optional[BaseException] = None) -> None:
        """Called by the scheduler thread when the value (or a fetch error) arrives."""
        with self.lock:
            self.payload, self.error = payload, error
            arrived = self.arrived
        if arrived is not None:
            arrived.set()

    def forget_error(self) -> None:
        """A retry: a fetch that failed may be made again. A value held stays (it is the
        key's, and a reader may be on its way to it)."""
        with self.lock:
            if self.error is not None:
                self.error, self.requested = None, False

    def claim_fetch(self) -> bool:
        """True if the caller must ask for the value now (nobody asked yet, rank 0 lacks it)."""
        if self.loaded or self.payload is not None:
            return False  # read without the lock: as good as reading it a moment earlier
        with self.lock:
            if self.loaded or self.payload is not None or self.requested:
                return False
            self.requested, self.error = True, None
            self.arrived = threading.Event()
            return True

    def get(self, fetch: Callable[["KeyRecord"], None], timeout: Optional[float]) -> Any:
        """Return the value, asking ``fetch(record)`` for it first if rank 0 lacks it."""
        if self.claim_fetch():
            try:
                fetch(self)
            except BaseException as exc:  # nobody will answer: a later call must not wait
                self.deliver(None, exc)
        with self.lock:
            ready = self.loaded or self.payload is not None or self.error is not None
            arrived = self.arrived
        if not ready and arrived is not None and not arrived.wait(timeout):
            raise cf.TimeoutError(f"the task {self.key!r} finished, but its value did not arrive "
                                  f"within {timeout} s; its owner rank may be inside a task "
                                  "that holds the GIL: try again later")
        with self.lock:
            if self.loaded:
                return self.value
            if self.payload is None:
                self.requested = False  # a later call may try again
                raise self.error or RuntimeError(f"no value arrived for {self.key!r}")
            self.value = unpickled(self.payload, f"the result of task {self.key!r}")
            self.loaded, self.payload = True, None
            return self.value


class Future(cf.Future):
    """A handle on the result of a task, or on data scattered to workers.

    Behaves as a ``concurrent.futures.Future`` (``result``, ``exception``, ``done``,
    ``cancel``, ``add_done_callback``) and can be passed as an argument to later submits,
    where the worker receives its value.
    """

    def __init__(self, key: str, record: KeyRecord, executor: "Executor") -> None:
        # The base class's fields, but its Condition (with an RLock, about 1.3 KB) is made
        # only when a thread first waits on this future: most never are, one by one.
        self._cond: Optional[threading.Condition] = None
        self._state = _PENDING
        self._result: Any = None
        self._exception: Optional[BaseException] = None
        self._waiters: list = []
        self._done_callbacks: list = []
        self._key = key
        self._record = record
        self._executor = executor
        self._ref: Any = None  # the registry's Claim: its death releases the key
        self._released = False
        # Resolutions reach the future while _posted == _gen: the scheduler thread sets
        # _posted once it has taken the submit (0) or a retry (its _gen) in; a retry's reset
        # raises _gen first. (Plain assignments on both sides: no lock, no lost update.)
        self._posted = -1
        self._gen = 0

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        cond = self._cond
        if cond is None:
            with _LAZY:
                if self._cond is None:
                    self._cond = threading.Condition()
                cond = self._cond
        return cond

    def _resolve_unwatched(self, result: Any, exception: Optional[BaseException]) -> bool:
        """Resolve without a Condition if none was made (then no thread sleeps on it; the
        only waiters are :func:`~mpifutures.hooks.when_done` hooks); False if one was."""
        with _LAZY:
            if self._cond is not None:
                return False
            if self._state in _ENDED:
                raise cf.InvalidStateError(f"{self._state}: {self!r}")
            self._result, self._exception, self._state = result, exception, _FINISHED
            hooks = list(self._waiters) if self._waiters else ()  # only when_done's, so far
        for hook in hooks:  # a waiter added from now on sees the future ended
            if exception is None:
                hook.add_result(self)
            else:
                hook.add_exception(self)
        self._invoke_callbacks()
        return True

    def _hook_unwatched(self, notify: Any) -> bool:
        """Add a :func:`~mpifutures.hooks.when_done` hook without making a Condition; False if one exists
        (then the caller goes the standard way) or the future has ended."""
        with _LAZY:
            if self._cond is not None or self._state in _ENDED:
                return False
            self._waiters.append(notify)
            return True

    def set_result(self, result: Any) -> None:
        if not self._resolve_unwatched(result, None):
            super().set_result(result)

    def set_exception(self, exception: Optional[BaseException]) -> None:
        if not self._resolve_unwatched(None, exception):
            super().set_exception(exception)

    def done(self) -> bool:
        return self._state in _ENDED

    def running(self) -> bool:
        return self._state == cf._base.RUNNING

    def cancelled(self) -> bool:
        return self._state in _CANCELLED

    @property
    def key(self) -> str:
        """The task's key (deterministic for ``pure=True`` submits)."""
        return self._key

    @property
    def status(self) -> str:
        """``"pending"``, ``"finished"``, ``"error"`` or ``"cancelled"``."""
        state = self._state  # read once: the exception is set before the state
        if state == _FINISHED:
            return "error" if self._exception is not None else "finished"
        return _STATUS[state]

    @property
    def executor(self) -> "Executor":
        """The executor that made this future."""
        return self._executor

    def result(self, timeout: Optional[float] = None) -> Any:
        """Wait for the task and return its value (fetched from its owner rank).

        ``timeout`` bounds the wait for the task to finish, as in ``concurrent.futures``;
        once it has, fetching its value may take up to ``VALUE_GRACE`` (60) seconds more.

        Raises:
            TimeoutError: not finished within ``timeout`` seconds, or finished but its value
                did not arrive within the grace period.
            CancelledError: the task was cancelled.
            Exception: the task's own exception, remote traceback as ``__cause__``.
        """
        if timeout is None and self._result is _REMOTE and self._record.loaded:
            return self._record.value  # set once, before ``loaded``, and never changed
        timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            # _REMOTE is only ever set by a successful finish, never undone: no Condition needed
            try:
                value = _REMOTE if self._result is _REMOTE else \
                    self._ended(super().result, timeout, deadline)
            except Unbuilt as unbuilt:
                value = unbuilt  # raised below, outside this handler, so no chained context
            if isinstance(value, Unbuilt):
                raise value.build()
            if value is not _REMOTE:
                return value
            left = None if deadline is None else max(VALUE_GRACE, deadline - time.monotonic())
            return self._record.get(self._executor._fetch, left)
        finally:
            # A raised exception's traceback holds this frame, and the future holds the
            # exception: without this, failed futures would wait for the cycle collector.
            self = value = None  # noqa: F841

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        """Wait for the task and return its exception, or None if it succeeded."""
        timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            return self._built(self._ended(super().exception, timeout, deadline))
        finally:
            self = None  # noqa: F841 - as in result(): a kept TimeoutError must not keep it

    def _ended(self, wait: Callable[[Optional[float]], Any], timeout: Optional[float],
               deadline: Optional[float]) -> Any:
        """``wait(...)`` (the base class's result or exception) until the future ends for
        good: a retry that another thread starts may make it pending again between the end
        that woke this thread and its look at the state; then it waits on, for the retry."""
        left = timeout
        while True:
            with self._condition:
                if self._state not in _ENDED:
                    self._condition.wait(left)
            if self._state not in _ENDED:  # not yet, or pending again (a retry)
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        late = self._not_yet(timeout)
                        self = wait = None  # noqa: F841 - a kept error must not keep them
                        raise late from None
                continue
            try:
                return wait(0)
            except BaseException as exc:
                if isinstance(exc, cf.TimeoutError) and self._state not in _ENDED:
                    continue  # a retry made it pending again just now
                # the task's error, kept by the future: its traceback holds this frame,
                self = wait = exc = None  # noqa: F841 - which must not hold them
                raise

    def _value_or(self, skip: Any, timeout: Optional[float] = None) -> Any:
        """The value, or ``skip`` if the task failed or was cancelled (``gather``'s
        ``errors="skip"``; a future a retry made pending again may fail again)."""
        if self._result is not _REMOTE:  # (a finished future stays finished)
            try:
                if self.exception(timeout) is not None:
                    return skip
            except cf.CancelledError:
                return skip
        return self.result(timeout)

    def _built(self, exc: Optional[BaseException]) -> Optional[BaseException]:
        return exc.build() if isinstance(exc, Unbuilt) else exc

    def _not_yet(self, timeout: Optional[float]) -> cf.TimeoutError:
        return cf.TimeoutError(f"task {self._key!r} did not finish within {timeout} s "
                               f"({self.status}); it keeps running: wait longer, or cancel() it")

    def cancel(self) -> bool:
        """Cancel the task and every task that depends on it; False if it finished or
        failed (True if it was cancelled already, as in ``concurrent.futures``)."""
        self._executor._cancel_now([self])  # the scheduler decides, and resolves it
        return self.cancelled()

    @property
    def owner(self) -> Optional[int]:
        """The rank holding the result (None if not computed, or released). Also after
        ``shutdown()``: a pool's results stay on their workers, an executor's are released."""
        key = self._key
        try:
            holders = self._executor._cluster.query(lambda s: s.state.who_has(key))
        except ExecutorClosedError:  # the cluster is gone, and the data with it
            return None
        return holders[0] if holders and not self._released else None

    def traceback(self, timeout: Optional[float] = None) -> Optional[str]:
        """The text of the task's traceback on its worker, or None if it did not fail."""
        exc = self.exception(timeout)
        cause = getattr(exc, "__cause__", None)
        return getattr(cause, "text", None) if exc is not None else None

    def release(self) -> None:
        """Drop this future's claim on the data now (instead of when it is garbage-collected).

        Once no future of the key is left, its worker frees the data. The future cannot be
        used as an input any more.
        """
        if not self._released:
            self._released = True
            self._executor._release(self)
            self._fail(lost(self._key, "this future was released before it finished"))

    def retry(self) -> None:
        """Run a failed (or cancelled) task again, with every failed or cancelled task linked
        to it through such tasks (inputs it needs, dependents that failed with it, their other
        failed inputs), each after its inputs. Their futures and this one are pending when it
        returns."""
        if self.status not in ("error", "cancelled"):
            raise ValueError(f"only a failed or cancelled task can be retried, not a "
                             f"{self.status} one ({self._key!r})")
        if self._released:
            raise ValueError(f"{self!r} was released; it can no longer be retried")
        self._executor._retry(self)

    def _reset(self) -> Optional[int]:
        """Pending again, for a retry, unless it finished: the retry's generation, or None."""
        with self._condition:
            if self._state in _ENDED and self._result is not _REMOTE:
                self._state, self._exception, self._result = _PENDING, None, None
                self._gen += 1  # unreached by resolutions until the retry is taken in
                return self._gen
        return None

    def __await__(self) -> Any:
        return self._wait_async().__await__()

    async def _wait_async(self) -> Any:
        import asyncio

        from .hooks import CANCELLED, when_done

        loop = asyncio.get_running_loop()
        ended = loop.create_future()

        def wake(_: cf.Future, outcome: str) -> None:
            if not loop.is_closed():  # else nobody awaits any more
                loop.call_soon_threadsafe(lambda: ended.done() or ended.set_result(outcome))

        disarm = when_done(self, wake)
        try:
            outcome = await ended
        except asyncio.CancelledError:  # the awaiting coroutine was cancelled: so is the task
            disarm()
            self.cancel()
            raise
        if outcome == CANCELLED:  # as asyncio's own futures do
            raise asyncio.CancelledError(f"task {self._key!r} was cancelled")
        if self._result is _REMOTE and not self._record.loaded:  # fetch off the event loop
            return await loop.run_in_executor(None, self.result)
        return self.result()

    def _cancel_locally(self) -> bool:
        with self._condition:  # reentrant: the whole transition is atomic
            if self._state != _PENDING:
                return self._state in _CANCELLED
            super().cancel()
            self.set_running_or_notify_cancel()  # wakes wait() and as_completed()
        return True

    def add_done_callback(self, fn: Callable[["Future"], Any]) -> None:
        """Call ``fn(future)`` when done (at once if it is), on rank 0's callback thread;
        once the executor's cluster has stopped, on the calling thread.

        The future stays alive (and its task running) until its callbacks have run, even if
        the caller drops every reference to it.
        """
        with self._condition:  # its end is set under it, and its callbacks run after
            if self._state not in _ENDED:
                self._executor._keep_until_done(self)
                self._done_callbacks.append(fn)
                return
        if not self._executor._run_callbacks(self, [fn]):
            call_all(self, [fn])

    def _finish(self) -> None:
        try:  # set_result's two steps, called directly: this runs once per task
            if not self._resolve_unwatched(_REMOTE, None):
                super().set_result(_REMOTE)
        except cf.InvalidStateError:
            pass  # cancelled here before the worker's answer came

    def _fail(self, exc: BaseException) -> None:
        try:
            self.set_exception(exc)
        except cf.InvalidStateError:
            pass

    def _invoke_callbacks(self) -> None:
        # Runs on the scheduler thread: hand user callbacks to the callback thread.
        if self._done_callbacks:  # only futures with callbacks were kept alive for them
            callbacks, self._done_callbacks = self._done_callbacks, []
            self._executor._run_callbacks(self, callbacks)

    def __reduce__(self) -> Any:
        raise TypeError(
            f"a Future ({self._key!r}) cannot be pickled on its own; pass it as an argument "
            "of submit/map (the worker then receives its value), or pass future.result()."
        )

    def __repr__(self) -> str:
        return f"<mpifutures.Future {self.status} key={self._key!r}>"


register_future_type(Future)


def lost(key: str, why: str) -> DataLostError:
    """The error for a value that no rank holds any more."""
    return DataLostError(f"the data of {key!r} is not held by any rank ({why}); fetch results "
                         "with result() or gather() before their executor shuts down.")
