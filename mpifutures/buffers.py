"""Receive memory for large buffers, reused once nothing refers to it any more.

A fresh 100 MB ``np.empty`` is page-faulted in during the transfer, which costs about as much
as the copy itself. The pool hands out *views* of blocks it keeps; a weak reference to each
view puts its block back on the free list when the last array made from it dies, so the next
receive of a similar size lands in memory that is already mapped. Blocks that are free count
against ``limit`` bytes (a block returned beyond it is let go, and the oldest free block makes
room for a new one); ``limit=0`` turns the pool off.

Arrays that tasks make meet the same cost inside ``malloc``: glibc gives a freed block of
more than ~16 MB at the top of its heap back to the system, so a task making 8 MB arrays
page-faults each one in anew (40,000 faults/s per worker in W3).
:func:`mpifutures.launch.keep_freed_memory` raises those limits on every rank.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from typing import Any

import numpy as np

SMALLEST = 1 << 20  # below this malloc is cheap and pooling would only hold memory


class BufferPool:
    """Hands out uninitialised byte arrays; reuses blocks whose views have all died."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free: deque[Any] = deque()  # appended from whichever thread drops a view
        self._lock = threading.Lock()  # taken only by take(), never by the finaliser
        self.reused = 0

    def take(self, size: int) -> Any:
        """An uninitialised ``uint8`` array of ``size`` bytes."""
        if size < SMALLEST or size > self.limit:
            return np.empty(size, dtype=np.uint8)
        with self._lock:
            block = self._reuse(size)
            if block is None:
                self._trim(self.limit - size)
                block = np.empty(size, dtype=np.uint8)
            else:
                self.reused += 1
        view = block[:size]
        weakref.finalize(view, self._give_back, block).atexit = False
        return view

    def _give_back(self, block: Any) -> None:
        """Finaliser of a view: keep its block if the free ones stay within the limit."""
        if self.free_bytes() + block.nbytes <= self.limit:
            self._free.append(block)

    def free_bytes(self) -> int:
        return sum(block.nbytes for block in list(self._free))

    def _reuse(self, size: int) -> Any:
        for i, block in enumerate(list(self._free)):
            if size <= block.nbytes <= 2 * size:
                del self._free[i]  # by position: ``remove`` would compare arrays with ==
                return block
        return None

    def _trim(self, keep: int) -> None:
        """Drop free blocks, oldest first, until at most ``keep`` bytes stay free."""
        total = self.free_bytes()
        while self._free and total > keep:
            total -= self._free.popleft().nbytes
