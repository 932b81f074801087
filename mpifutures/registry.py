"""Rank 0's futures, by key: made on client threads, resolved on the scheduler thread.

Each key has one :class:`~mpifutures.future.KeyRecord` shared by all of its futures. A future
releases its claim on the key when it is garbage-collected: the callback of its :class:`Claim`
(a weak reference) appends ``("decref", session, key)`` to the scheduler's inbox and wakes it
(only steps that never block are safe in a GC callback: a deque append, a raw lock's release).
A claim is armed only once the future's submit is posted, so a future made for a submit that
then failed releases nothing, and it is disarmed by an explicit ``release()``, so no claim is
released twice.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Callable, Iterable, Optional

from .future import Future, KeyRecord, Unbuilt


class Claim(weakref.ref):
    """Weak reference to a future; once armed with a session, its death posts a decref.

    Made as ``Claim(future, callback)``, then given ``key`` and ``session`` (no ``__init__``
    of its own: a Python one doubled the cost of making one, and one is made per future).
    """

    __slots__ = ("key", "session")


class Registry:
    """The records of every key that has futures on rank 0."""

    def __init__(self, inbox_append: Callable[[tuple], None]) -> None:
        self.records: dict[str, KeyRecord] = {}
        self.lock = threading.Lock()
        self._append = inbox_append

    def new_future(self, key: str, executor: Any) -> Future:
        """A future of ``key``; call :meth:`arm` once its submit is posted."""
        with self.lock:
            record = self.records.get(key)
            if record is None or not _any_held(record.handles):
                # No future of the key is left, or only ended ones of shut-down executors
                # (which no longer hold the key): a value held for them belongs to the task
                # they saw, which may be gone (a reused key= can name a new computation).
                record = self.records[key] = KeyRecord(key)
            future = Future(key, record, executor)
            future._ref = claim = Claim(future, self._collected)
            claim.key, claim.session = key, None
            handles = record.handles
            # Dead references go once the list has doubled since the last pass (a pass at
            # every new future took time quadratic in the number of futures that live).
            if len(handles) > max(8, 2 * record.live):
                handles = record.handles = [r for r in handles if r() is not None]
                record.live = len(handles)
            handles.append(claim)
        return future

    def _collected(self, claim: Claim) -> None:
        session = claim.session
        if session is not None:
            self._append(("decref", session, claim.key))

    @staticmethod
    def arm(future: Future, session: int) -> None:
        """From now on, the future's garbage collection releases its claim on the key."""
        future._ref.session = session

    def release(self, future: Future) -> Optional[tuple]:
        """Disarm the future and forget it; return the decref to post (None if unarmed).

        The key's record goes with its last future (a future never posted, e.g. of a ``map``
        that failed part way, has no decref that would drop it later)."""
        with self.lock:
            claim = future._ref
            session, claim.session = claim.session, None
            item = None if session is None else ("decref", session, claim.key)
            record = future._record
            handles = record.handles
            if handles and handles[-1] is claim:  # (futures let go newest first: each at once)
                handles.pop()
            elif claim in handles:
                handles.remove(claim)
            self._drop_unused(claim.key, record)
        return item

    def _drop_unused(self, key: str, record: Optional[KeyRecord]) -> None:
        """Forget ``record`` (the key's current one) if no future of it lives (under the lock)."""
        if record is not None and self.records.get(key) is record and _all_dead(record.handles):
            del self.records[key]

    def get(self, key: str) -> Optional[KeyRecord]:
        return self.records.get(key)

    def handles(self, key: str) -> list[Future]:
        """The live futures of ``key`` (a snapshot).

        No lock: reading the dict and copying the list are single steps under the GIL, and
        a list that new_future replaces lacks only dead references. (Taking the lock here,
        once per resolved task, made the scheduler thread and submitting threads contend.)
        """
        record = self.records.get(key)
        refs = list(record.handles) if record is not None else ()
        return [f for f in (ref() for ref in refs) if f is not None]

    def futures_of(self, executor: Any) -> list[Future]:
        """The live, unreleased futures made by ``executor``."""
        with self.lock:
            refs = [ref for record in self.records.values() for ref in record.handles]
        return [f for f in (ref() for ref in refs) if f is not None and f._executor is executor]

    def drop(self, keys: Iterable[str]) -> None:
        """Forget the records of ``keys`` that have no live future left."""
        with self.lock:
            for key in keys:
                self._drop_unused(key, self.records.get(key))

    def resolve(self, key: str, status: str, error: Any, value: Any = None) -> int:
        """Finish, fail or cancel every live future of ``key`` whose submit (or retry) the
        scheduler has taken in (a newer one is answered by the state when its submit comes:
        the task it finds may be another, e.g. if the older futures were all released
        meanwhile; and a cancellation handled before a retry leaves the retried futures be).

        ``value``: a finished task's small result, come with its report; it is kept for the
        futures first. Returns the bytes so kept."""
        record = self.records.get(key)
        if record is None:
            return 0
        delivered = 0
        if value is not None and not record.loaded:
            record.deliver(value)
            delivered = value.nbytes
        handles = [f for f in (ref() for ref in list(record.handles))  # see handles()
                   if f is not None and f._posted == f._gen]
        if status == "memory":
            for f in handles:
                f._finish()
        elif status == "erred":
            exc = Unbuilt(error) if isinstance(error, tuple) else error  # built when asked
            for f in handles:
                f._fail(exc)
        else:
            for f in handles:
                f._cancel_locally()
        return delivered

    def reset(self, key: str, taken_in: bool = False) -> list[tuple[Future, int]]:
        """Make the failed or cancelled futures of ``key`` pending again (for a retry), and
        return them with their new generation (see ``Future._posted``). ``taken_in``: only
        those whose submit or retry the scheduler has taken in (a reset the scheduler makes
        itself must not overtake one still on its way, which would then undo it).

        Resolutions pass them by until the scheduler takes the retry in (it marks them
        posted again): a cancellation posted before the retry, and handled after this reset,
        leaves them pending. A shut-down executor's futures stay as they are: their session
        has let go of the key, so nothing would end them."""
        reset = []
        for future in self.handles(key):
            if future._executor._closed or (taken_in and future._posted != future._gen):
                continue
            gen = future._reset()
            if gen is not None:
                reset.append((future, gen))
            if future._executor._closed:  # shut down meanwhile: its list of pending
                future._cancel_locally()  # futures may have been made before the reset
        record = self.records.get(key)
        if record is not None:
            record.forget_error()
        return reset

    def fail_all(self, error: BaseException) -> None:
        """Fail every future and every pending fetch (the scheduler is gone)."""
        with self.lock:
            records = list(self.records.values())
        for record in records:
            record.deliver(None, error)
            for f in (ref() for ref in list(record.handles)):
                if f is not None:
                    f._fail(error)


def _any_held(refs: list) -> bool:
    """True if a future among ``refs`` lives and its executor is not shut down, or it is
    still pending (an executor shutting down waits for it: its resolution must reach it).
    The newest are looked at first: older ones are the likelier to have died."""
    _trim(refs)
    for ref in reversed(refs):
        f = ref()
        if f is not None and (not f._executor._closed or not f.done()):
            return True
    return False


def _all_dead(refs: list) -> bool:
    _trim(refs)
    return not refs


def _trim(refs: list) -> None:
    """Take the dead references off the end of ``refs`` (under the registry's lock). Each
    goes once, so looking from the end stays cheap when many futures of a key lived and
    most have died; new_future takes out those further in once the list has doubled."""
    while refs and refs[-1]() is None:
        refs.pop()
