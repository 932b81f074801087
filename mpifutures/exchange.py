"""``scatter`` and ``gather``: values into the cluster and back out of it (for
:class:`~mpifutures.executor.Executor`, whose methods document them)."""

from __future__ import annotations

import concurrent.futures as cf
import time
from typing import Any, Optional

from . import keys as keymod, protocol as P
from .errors import NoWorkersError, SerializationError
from .events import DataScattered
from .future import Future, check_timeout
from .hooks import wait_ended
from .options import flag
from .serialize import dumps, value_nbytes
from .structure import SKIP, parts, position, rebuild, walk


def scatter(ex: Any, data: Any, workers: Any, broadcast: Any, hash: Any, timeout: Any) -> Any:
    ex._check_open("scatter")
    timeout = check_timeout(timeout)
    targets = ex._options(workers, False, 0, 0)["workers"] or tuple(ex._cluster.workers)
    if not targets:
        raise NoWorkersError("this MPI job has no worker ranks to scatter data to")
    what, items, shape = parts(data)
    broadcast, hashed = flag("broadcast", broadcast), flag("hash", hash)
    out = []
    for i, (where, value) in enumerate(items):
        ranks = targets if broadcast else (targets[i % len(targets)],)
        try:
            out.append(scatter_one(ex, value, ranks, hashed))
        except SerializationError as exc:
            raise SerializationError(f"scatter: {position(what, where)} cannot be sent: "
                                     f"{exc}") from exc
    unconfirmed = cf.wait(out, timeout).not_done  # (a broadcast confirms each copy)
    if unconfirmed:
        raise cf.TimeoutError(
            f"scatter: workers did not confirm storing {len(unconfirmed)} of {len(out)} "
            f"values within {timeout} s (a worker in a long call that holds the GIL answers "
            "only when it ends); the values are let go")
    return shape(out)


def scatter_one(ex: Any, value: Any, ranks: tuple[int, ...], hashed: bool) -> Future:
    """Post the scatter of one value to ``ranks`` (its future ends once they hold it)."""
    payload = dumps(value)
    name = keymod.prefix(type(value))
    key = keymod.data_key(name, payload) if hashed else keymod.unique_key(name)
    future = ex._cluster.registry.new_future(key, ex)
    first, rest = ranks[0], ranks[1:]
    event = DataScattered(key, ranks, value_nbytes(value, payload), ex._session)
    with ex._lock:
        ex._check_open("scatter")
        ex._cluster.registry.arm(future, ex._session)
        # (the scheduler thread numbers the scatter: the STORE's last item, the event's copy)
        ex._post_or_fail(("scatter", ex._session, first, (P.STORE, key, payload, rest, 0),
                          event, future), ((future, None),))
    return future


def gather(ex: Any, futures: Any, errors: str, timeout: Any) -> Any:
    ex._check_open("gather")
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', not {errors!r}")
    timeout = check_timeout(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    found: list[Future] = []
    walk(futures, found.append, Future)
    for f in found:
        if f._executor is not ex:  # the check inline: gather's lists hold thousands
            ex._check_mine(f)
    f = timed_out = None  # (f: the loop's last future; see below)
    try:
        failed = wait_ended(found, errors == "raise", timeout)
    except cf.TimeoutError as exc:
        timed_out = str(exc)
    if timed_out is not None or (failed is not None and errors == "raise"):
        # A raised error's traceback keeps this frame (and the error may be kept, by the
        # failed future or by the caller): it must not keep the futures.
        del found, futures
        if timed_out is not None:
            raise cf.TimeoutError(timed_out)  # (not the first one: its frames hold them)
        failed.result()  # raises its exception (or CancelledError), at once
    wanted = {f._key: f._record for f in found if f.status == "finished"}
    remote = tuple((k, r) for k, r in wanted.items() if r.claim_fetch())
    if remote:
        try:
            ex._cluster.post(("fetch", remote))
        except BaseException as exc:  # nobody will answer: a later call must not wait
            for _, record in remote:
                record.deliver(None, exc)
            raise

    def left() -> Optional[float]:  # (a finished future's value gets a grace period more)
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    if errors == "raise":
        return rebuild(futures, Future, lambda f: f.result(left()))
    gathered = rebuild(futures, Future, lambda f: f._value_or(SKIP, left()))
    return None if gathered is SKIP else gathered  # a single future that failed
