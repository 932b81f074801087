"""Capped exponential backoff for the polling loops.

MPICH spins a core inside blocking calls, so every rank polls with ``Iprobe``/``Test`` and
sleeps between empty polls. For ``hot`` seconds after traffic the sleep stays at its shortest
(tens of microseconds: a request/response pipeline keeps its pace); then it doubles up to
``cap``; a loop that skips that hot phase starts at ``SLOW_START * cap``. The hot phase only
pays when messages from other ranks usually come within it: a loop whose recent waits for
such messages lasted longer (tasks of milliseconds) skips it,
since polling every few microseconds would only take CPU from the tasks sharing its cores;
so does a caller that knows no reply is due soon (``idle(hot=False)``: a worker whose compute
threads are all in long tasks).
Waits that another thread of the rank ends (a submit, a finished task) do not count: its
wake-up is immediate, however the loop polls. After ``idle_after`` seconds without traffic
the sleep may grow further, but never beyond
``IDLE_SHARE`` of the time the rank has been idle (a rank idle for ``t`` answers within about
``t / 20``) nor beyond ``idle_cap``, so an idle job costs almost no CPU: on a virtual machine
each timed wake-up after a long sleep costs ~0.1-0.2 ms of CPU, so the number of wake-ups is
what counts. The loop never spins without sleeping: sleeping releases the GIL, which
the rank's other threads (the user's script, the compute thread) need. Sleeping happens on a
:class:`Wakeup` so that another thread of the same process can wake the loop at once.
"""

from __future__ import annotations

import _thread
import ctypes
import logging
import sys
import time
from typing import Callable

log = logging.getLogger(__name__)

_SHORTEST = 1e-5
#: longest sleep of a loop that nobody owes a message (rank 0 with no task running anywhere),
#: reached once it has been idle for QUIET_AFTER seconds. Fixed, not tied to ``idle_after``:
#: only this process's own threads can bring such a loop work, and they always set its wake-up.
QUIET_CAP = 0.5
QUIET_AFTER = 0.25
#: past ``idle_after``, a sleep lasts at most this share of the time the loop has been idle
IDLE_SHARE = 0.05
#: weight of the latest wait in the running estimate of how long the loop waits for a
#: message. A wait counts for at most ``WAIT_SAMPLE_CAP`` hot phases: one long pause leaves
#: the hot phase on, three long waits in a row turn it off, and a few waits well inside it
#: turn it back on.
WAIT_WEIGHT = 0.25
WAIT_SAMPLE_CAP = 2
#: a loop that skips the hot phase starts its sleeps at this share of ``cap``, not at the
#: shortest: doubling from 10 us took seven wake-ups (~50 us of CPU each) in the first
#: 1.3 ms after every message, where nothing was due
SLOW_START = 0.25
_PR_SET_TIMERSLACK = 29


def tighten_timer_slack() -> None:
    """Let this thread's short sleeps last microseconds, not Linux's default 50 us slack."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None).prctl(_PR_SET_TIMERSLACK, 1000, 0, 0, 0)
    except (OSError, AttributeError):  # not fatal: sleeps are only coarser
        log.debug("could not set the timer slack")


class Wakeup:
    """A signal one thread sets to end another thread's timed wait early.

    ``threading.Event`` would do, but its wait is a ``Condition`` written in Python: a timed
    wait there costs ~20% more CPU than this one, a raw lock that is held while no wake-up is
    pending, and an idle rank does little else than wait.
    """

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held = _thread.allocate_lock()
        self._held.acquire()

    def set(self) -> None:
        if self._held.locked():
            try:
                self._held.release()
            except RuntimeError:  # another thread set it first
                pass

    def is_set(self) -> bool:
        return not self._held.locked()

    def wait(self, timeout: float) -> bool:
        """Whether the signal was set within ``timeout`` seconds; waiting consumes it."""
        return self._held.acquire(timeout=timeout)


class Backoff:
    """Decides how long an idle polling loop sleeps."""

    def __init__(self, cap: float, idle_cap: float, idle_after: float,
                 hot: float = 2e-3) -> None:
        self.cap = max(cap, _SHORTEST)
        self.idle_cap = max(idle_cap, self.cap)
        self.idle_after = idle_after
        self.hot = hot
        self.wake = Wakeup()
        #: True while the loop sleeps: only then must another thread set :attr:`wake`
        self.asleep = False
        self._delay = _SHORTEST
        self._last_activity = time.monotonic()
        #: running estimate of how long a wait for a message from another rank lasts
        self.typical_wait = 0.0
        self._waited = False  # the loop slept since the last traffic, and nothing local woke it
        self._polled = self._last_activity  # when the latest empty poll ended

    def reset(self) -> None:
        """Note traffic: the next sleeps are short again."""
        if self._waited:  # polling found a message: the wait lasted at least until the
            # last empty poll (counting to now would add the sleep that overshot it)
            waited = min(self._polled - self._last_activity, WAIT_SAMPLE_CAP * self.hot)
            self.typical_wait += WAIT_WEIGHT * (waited - self.typical_wait)
            self._waited = False
        self._delay = _SHORTEST
        self._last_activity = time.monotonic()

    def idle(self, pending: Callable[[], bool] = lambda: False, quiet: bool = False,
             hot: bool = True) -> None:
        """Wait after an empty poll; returns early when :attr:`wake` is set.

        ``pending()`` is checked after :attr:`asleep` is raised, so work queued by a thread
        that saw ``asleep`` still false is never slept over. ``quiet``: no other rank owes
        this one a message, so only :attr:`wake` can bring work; after ``QUIET_AFTER``
        seconds idle, sleeps grow to ``QUIET_CAP``. ``hot=False``: no quick polls now, the caller
        knows that no reply is due soon.
        """
        now = time.monotonic()
        self._waited, self._polled = True, now
        idle_for = now - self._last_activity
        quick = hot and self.typical_wait < self.hot
        if idle_for > (self.hot if quick else 0.0):
            if quiet and idle_for > QUIET_AFTER:
                cap = max(self.idle_cap, QUIET_CAP)
            elif idle_for > self.idle_after:
                cap = min(self.idle_cap, max(self.cap, IDLE_SHARE * idle_for))
            else:
                cap = self.cap
            longer = self._delay * 2 if quick else max(self._delay * 2, SLOW_START * self.cap)
            self._delay = min(cap, longer)
        self.asleep = True
        try:
            if pending():  # this rank's own threads brought the work (no message)
                self._waited = False
            elif self.wake.wait(self._delay):
                self._waited = False
                self.reset()
        finally:
            self.asleep = False


class RunTimes:
    """How long each function (by token) ran last time: a task of one that took longer than
    the quick-poll window is not worth polling for every few microseconds."""

    KEPT = 1024  # functions remembered (forgotten all at once)

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def record(self, token: str, seconds: float) -> None:
        if len(self._last) >= self.KEPT:
            self._last.clear()
        self._last[token] = seconds  # (one dict call: safe from any thread, under the GIL)

    def longer_than(self, token: str, seconds: float) -> bool:
        """Whether the function last ran longer than ``seconds`` (False if never seen)."""
        return self._last.get(token, 0.0) > seconds
