"""The thread that runs futures' done-callbacks on rank 0.

Futures are resolved on the scheduler thread, which must never run user code: a slow or
blocking callback would stall every task. Callbacks are queued here instead and run in order on
one thread owned (started and joined) by the scheduler. A callback that raises is logged.
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
        self._thread = threading.Thread(target=self._run, name="mpifutures-callbacks",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, future: Any, callbacks: Iterable[Callable[[Any], Any]]) -> None:
        """Queue ``callbacks`` to be called with ``future``."""
        self._queue.put((future, list(callbacks)))

    def stop(self, timeout: float) -> None:
        """Run what is queued, then end the thread (waits at most ``timeout`` seconds)."""
        if self._thread.is_alive():
            self._queue.put(None)
            if self._thread is not threading.current_thread():  # a callback may stop us
                self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, callbacks = item
            for callback in callbacks:
                try:
                    callback(future)
                except BaseException:  # noqa: BLE001 - a user callback must never kill
                    # the thread (not even with sys.exit): later callbacks would never run
                    log.exception("done-callback %r of %r raised", callback, future)
            del item, future, callbacks, callback  # keep no future alive while idle
