"""Capped exponential backoff for the polling loops.

MPICH spins a core inside blocking calls, so every rank polls with ``Iprobe``/``Test`` and
sleeps between empty polls. For ``hot`` seconds after traffic the sleep stays at its shortest
(tens of microseconds: a request/response pipeline keeps its pace); then it doubles up to
``cap``, and after ``idle_after`` seconds without traffic up to ``idle_cap``, so an idle job
costs almost no CPU. The loop never spins without sleeping: sleeping releases the GIL, which
the rank's other threads (the user's script, the compute thread) need. Sleeping happens on a
``threading.Event`` so that another thread of the same process can wake the loop at once.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)

_SHORTEST = 1e-5
#: longest sleep of a loop that nobody owes a message (rank 0 with no task running anywhere)
QUIET_CAP = 0.5
_PR_SET_TIMERSLACK = 29


def tighten_timer_slack() -> None:
    """Let this thread's short sleeps last microseconds, not Linux's default 50 us slack."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None).prctl(_PR_SET_TIMERSLACK, 1000, 0, 0, 0)
    except (OSError, AttributeError):  # not fatal: sleeps are only coarser
        log.debug("could not set the timer slack")


class Backoff:
    """Decides how long an idle polling loop sleeps."""

    def __init__(self, cap: float, idle_cap: float, idle_after: float,
                 hot: float = 2e-3) -> None:
        self.cap = max(cap, _SHORTEST)
        self.idle_cap = max(idle_cap, self.cap)
        self.idle_after = idle_after
        self.hot = hot
        self.wake = threading.Event()
        #: True while the loop sleeps: only then must another thread set :attr:`wake`
        self.asleep = False
        self._delay = _SHORTEST
        self._last_activity = time.monotonic()

    def reset(self) -> None:
        """Note traffic: the next sleeps are short again."""
        self._delay = _SHORTEST
        self._last_activity = time.monotonic()

    def idle(self, pending: Callable[[], bool] = lambda: False, quiet: bool = False) -> None:
        """Wait after an empty poll; returns early when :attr:`wake` is set.

        ``pending()`` is checked after :attr:`asleep` is raised, so work queued by a thread
        that saw ``asleep`` still false is never slept over. ``quiet``: no other rank owes
        this one a message, so only :attr:`wake` can bring work; once idle, sleeps grow to
        ``QUIET_CAP``.
        """
        idle_for = time.monotonic() - self._last_activity
        if idle_for > self.hot:
            if idle_for <= self.idle_after:
                cap = self.cap
            else:
                cap = max(self.idle_cap, QUIET_CAP) if quiet else self.idle_cap
            self._delay = min(cap, self._delay * 2)
        self.asleep = True
        try:
            if not pending() and self.wake.wait(self._delay):
                self.wake.clear()
                self.reset()
        finally:
            self.asleep = False
