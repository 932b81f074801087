"""Capped exponential backoff for the polling loops.

MPICH spins a core inside blocking calls, so every rank polls with ``Iprobe``/``Test`` and
sleeps between empty polls. The sleep starts at zero right after traffic (so a busy pipeline
runs at full speed), doubles up to ``cap`` and, after ``idle_after`` seconds without traffic,
up to ``idle_cap`` (so an idle job costs almost no CPU). Sleeping happens on a
``threading.Event`` so that another thread of the same process can wake the loop at once.
"""

from __future__ import annotations

import threading
import time

_FIRST_SLEEP = 2e-5  # after the free spins, the first real sleep


class Backoff:
    """Decides how long an idle polling loop sleeps."""

    def __init__(self, cap: float, idle_cap: float, idle_after: float, spins: int = 50) -> None:
        self.cap = cap
        self.idle_cap = max(idle_cap, cap)
        self.idle_after = idle_after
        self.spins = spins
        self.wake = threading.Event()
        self._delay = 0.0
        self._empty = 0
        self._last_activity = time.monotonic()

    def reset(self) -> None:
        """Note traffic: the next empty polls spin before sleeping again."""
        self._delay = 0.0
        self._empty = 0
        self._last_activity = time.monotonic()

    def idle(self) -> None:
        """Wait after an empty poll; returns early when :attr:`wake` is set."""
        self._empty += 1
        if self._empty <= self.spins:
            if self.wake.is_set():
                self.wake.clear()
                self.reset()
            return
        idle_for = time.monotonic() - self._last_activity
        cap = self.idle_cap if idle_for > self.idle_after else self.cap
        self._delay = min(cap, max(self._delay * 2, _FIRST_SLEEP))
        if self.wake.wait(self._delay):
            self.wake.clear()
            self.reset()
