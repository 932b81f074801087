"""The thread that runs futures' done-callbacks on rank 0.

Futures are resolved on the scheduler thread, which must never run user code: a slow or
blocking callback would stall every task. Callbacks are queued here instead and run in order on
one thread owned (started and joined) by the scheduler. A callback that raises is logged.
Once the thread has stopped, :meth:`CallbackThread.submit` queues nothing and says so.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable, Iterable

log = logging.getLogger(__name__)


class CallbackThread:
    """Runs ``callback(future)`` calls in order, off the scheduler thread."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="mpifutures-callbacks",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, future: Any, callbacks: Iterable[Callable[[Any], Any]]) -> bool:
        """Queue ``callbacks`` to be called with ``future``; False if the thread has stopped
        (they are not queued)."""
        with self._lock:
            if not self._stopped:
                self._queue.put((future, list(callbacks)))
            return not self._stopped

    def stop(self, timeout: float) -> None:
        """Run what is queued, then end the thread (waits at most ``timeout`` seconds)."""
        with self._lock:
            self._stopped = True
        if self._thread.is_alive():
            self._queue.put(None)
            if self._thread is not threading.current_thread():  # a callback may stop us
                self._thread.join(timeout)
                if self._thread.is_alive():  # the thread is a daemon: Python drops it at exit
                    log.warning("a done-callback was still running after %s s at shutdown; "
                                "it, and the callbacks queued after it, may never end", timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, callbacks = item
            call_all(future, callbacks)
            del item, future, callbacks  # keep no future alive while idle


def call_all(future: Any, callbacks: Iterable[Callable[[Any], Any]]) -> None:
    """Call each callback with ``future``, logging what one raises."""
    for callback in callbacks:
        try:
            callback(future)
        except BaseException:  # noqa: BLE001 - a user callback must never kill the
            # thread (not even with sys.exit): later callbacks would never run
            log.exception("done-callback %r of %r raised", callback, future)
