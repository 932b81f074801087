"""The seam between the drivers and MPI: a :class:`Transport` moves lists of messages.

A message is a small tuple (see :mod:`mpifutures.protocol`) that may hold
:class:`~mpifutures.serialize.Payload` objects; ``send(dest, msgs)`` ships a whole list as one
unit (coalescing), and ``poll()`` returns the lists that have fully arrived. The MPI
implementation lives in :mod:`mpifutures.mpi_transport`, the only module that calls MPI;
:class:`LocalFabric` here connects in-process endpoints so that the executor, scheduler and
workers can be tested in one process without ``mpiexec``.
"""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from collections import deque
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from .backoff import Wakeup

_PROTOCOL = 5


def pack(msgs: list) -> tuple[bytes, list[pickle.PickleBuffer]]:
    """Pickle ``msgs`` with every payload buffer taken out-of-band."""
    buffers: list[pickle.PickleBuffer] = []
    return pickle.dumps(msgs, protocol=_PROTOCOL, buffer_callback=buffers.append), buffers


def unpack(header: bytes, buffers: list) -> list:
    """Inverse of :func:`pack`, using ``buffers`` (received memory) without copying."""
    return pickle.loads(header, buffers=buffers)


class Transport(ABC):
    """Moves lists of messages between ranks; never blocks."""

    rank: int
    size: int
    #: set when a message arrives, so that a sleeping poll loop can wake (may stay None)
    wake: Optional[Wakeup] = None

    @abstractmethod
    def send(self, dest: int, msgs: list) -> None:
        """Queue ``msgs`` for ``dest``; returns at once."""

    @abstractmethod
    def poll(self) -> list[tuple[int, list]]:
        """Advance transfers; return ``(source, msgs)`` for every list that has arrived."""

    @abstractmethod
    def busy(self) -> bool:
        """True while a transfer is in flight (the caller must poll again without sleeping)."""

    def abort(self, code: int) -> None:
        """End the whole job at once (the last resort of a stuck shutdown)."""
        raise SystemExit(code)

    def describe(self) -> str:
        """One line naming the transport (and the MPI library under it)."""
        return type(self).__name__


class LocalFabric:
    """In-process network: endpoints that exchange pickled messages through queues."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.endpoints = [LocalTransport(self, rank) for rank in range(size)]


class LocalTransport(Transport):
    """One rank's endpoint on a :class:`LocalFabric`; messages are really pickled."""

    def __init__(self, fabric: LocalFabric, rank: int) -> None:
        self.fabric = fabric
        self.rank = rank
        self.size = fabric.size
        self.inbox: deque[tuple[int, bytes, list]] = deque()
        self.wake = None
        self.bytes_received = 0

    def send(self, dest: int, msgs: list) -> None:
        header, buffers = pack(msgs)
        # Copy each buffer, as a real transfer would: the receiver must not share memory.
        copies = [bytearray(b.raw()) for b in buffers]
        peer = self.fabric.endpoints[dest]
        peer.inbox.append((self.rank, header, copies))
        if peer.wake is not None:
            peer.wake.set()

    def poll(self) -> list[tuple[int, list]]:
        out = []
        while self.inbox:
            source, header, buffers = self.inbox.popleft()
            self.bytes_received += len(header) + sum(len(b) for b in buffers)
            out.append((source, unpack(header, buffers)))
        return out

    def busy(self) -> bool:
        return False

    def abort(self, code: int) -> None:
        raise RuntimeError(f"local transport aborted with code {code}")
