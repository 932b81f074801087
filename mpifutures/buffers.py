"""Receive memory for large buffers, reused once nothing refers to it any more.

A fresh 100 MB ``np.empty`` is page-faulted in during the transfer, which costs about as much
as the copy itself. The pool lends *blocks* it keeps, and a block is free again only when
nothing but the pool refers to it. The test is the block's reference count, not the life of
the view handed out: numpy collapses chains of views, so the arrays that unpickling makes
refer to the block itself, and the view dies as soon as the message is unpacked. Whatever
uses the memory (an array, a view of it, a memoryview) holds a reference to the block, so
the count is exact. Free blocks count against ``limit`` bytes (a block freed beyond it is
let go, and the oldest free block makes room for a new one); ``limit=0`` turns the pool off.
A look for freed blocks costs one reference count per lent block: every ``take`` looks while
at most ``SCAN_ALWAYS`` blocks are lent, and beyond that at most every ``SCAN_EVERY`` seconds,
so a rank holding thousands of received arrays does not pay for all of them on each receive.
The pool belongs to the one thread that polls the transport; it takes no locks.

Arrays that tasks make meet the same cost inside ``malloc``: glibc gives a freed block of
more than ~16 MB at the top of its heap back to the system, so a task making 8 MB arrays
page-faults each one in anew (40,000 faults/s per worker in W3).
:func:`mpifutures.launch.keep_freed_memory` raises those limits on every rank.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import Any

import numpy as np

SMALLEST = 1 << 20  # below this malloc is cheap and pooling would only hold memory


def _unused_count() -> int:
    """The reference count ``reclaim`` reads for a block that only the pool holds, measured
    the way it reads it (an element of a list, in a ``for`` loop): CPython versions differ in
    which references they count (3.11 counts three: the list's, the loop variable's and the
    argument's; newer versions may leave some out)."""
    count = 0
    for block in [np.empty(1)]:
        count = sys.getrefcount(block)
    return count


_POOL_REFS = _unused_count()
SCAN_ALWAYS = 64  # up to this many lent blocks, every take looks for freed ones
SCAN_EVERY = 0.05  # seconds between looks beyond that, and between the transport's looks


class BufferPool:
    """Hands out uninitialised byte arrays; reuses blocks that nothing refers to any more."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lent: list[Any] = []  # blocks whose memory may be in use
        self._free: deque[Any] = deque()
        self.reused = 0
        self._next_scan = 0.0

    def take(self, size: int) -> Any:
        """An uninitialised ``uint8`` array of ``size`` bytes."""
        if size < SMALLEST or size > self.limit:
            return np.empty(size, dtype=np.uint8)
        self.reclaim(when_due=len(self._lent) > SCAN_ALWAYS)
        block = self._reuse(size)
        if block is None:
            self._trim(self.limit - size)
            block = np.empty(size, dtype=np.uint8)
        else:
            self.reused += 1
        self._lent.append(block)
        return block[:size]

    def reclaim(self, when_due: bool = False) -> None:
        """Take back every lent block that nothing outside the pool refers to, keeping it
        free while the free blocks stay within the limit and letting it go otherwise; with
        ``when_due``, only if ``SCAN_EVERY`` seconds have passed since the last look."""
        now = time.monotonic()
        if when_due and now < self._next_scan:
            return
        self._next_scan = now + SCAN_EVERY
        in_use = []
        for block in self._lent:
            if sys.getrefcount(block) > _POOL_REFS:  # held outside the pool
                in_use.append(block)
            elif self.free_bytes() + block.nbytes <= self.limit:
                self._free.append(block)
        self._lent = in_use

    @property
    def lent(self) -> int:
        """How many blocks may still be in use."""
        return len(self._lent)

    def free_bytes(self) -> int:
        return sum(block.nbytes for block in self._free)

    def _reuse(self, size: int) -> Any:
        for i, block in enumerate(self._free):
            if size <= block.nbytes <= 2 * size:
                del self._free[i]  # by position: ``remove`` would compare arrays with ==
                return block
        return None

    def _trim(self, keep: int) -> None:
        """Drop free blocks, oldest first, until at most ``keep`` bytes stay free."""
        total = self.free_bytes()
        while self._free and total > keep:
            total -= self._free.popleft().nbytes
