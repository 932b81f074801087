"""The MPI transport: the only module that calls MPI after start-up.

One coalesced list of messages travels as a *header* message (tag ``_TAG_HEAD``: the sizes of
the out-of-band buffers, then the pickle) followed by each buffer as raw memory (tag
``_TAG_DATA``), cut into chunks of at most ``_CHUNK`` bytes so that arrays above 2 GiB fit MPI's
int counts; buffers under ``_SMALL`` bytes travel copied into one pack, sent before the
others, when a list holds more than one (and are copied out of it on arrival). MPI keeps
messages of one (source, tag, communicator) in order, and buffer receives for a header are
posted before the next header is taken, so buffers always meet their header.

Nothing here blocks on the network: sends are ``Isend``, buffers are ``Irecv`` into memory
taken from a :class:`~mpifutures.buffers.BufferPool` by the header's sizes (uninitialised, and
already mapped when a block is reused), and the caller polls. A poll hands the pool back the
blocks whose arrays have all died, at most every ``buffers.SCAN_EVERY`` seconds. While a
transfer is in flight :meth:`busy` is true and the caller polls without sleeping, because MPICH
moves a large message forward only inside MPI calls.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

from mpi4py import MPI

from .transport import Transport, pack, unpack

log = logging.getLogger(__name__)

_TAG_HEAD = 11
_TAG_DATA = 12
_CHUNK = 1 << 30
_SIZE = struct.Struct("<Q")
#: non-empty buffers below this size travel packed together, copied into one message, when
#: a list holds two or more of them (a value made of 100,000 small arrays took 5 s to reach
#: rank 0 as one message each); the receiver copies each out of the pack, so that one value
#: kept does not keep the whole pack
_SMALL = 1 << 16


def _chunks(view: memoryview) -> list[memoryview]:
    return [view[i:i + _CHUNK] for i in range(0, len(view), _CHUNK)]


def _packing(sizes: list[int]) -> tuple[int, dict[int, int]]:
    """Where each small buffer goes in the pack: ``(pack size, {index: offset})``, the same
    on both sides; no pack (size 0) unless two or more buffers are small."""
    offsets, end = {}, 0
    for i, size in enumerate(sizes):
        if 0 < size < _SMALL:  # (an empty buffer is no message at all)
            offsets[i] = end
            end += size
    return (end, offsets) if len(offsets) > 1 else (0, {})


def _unpacked(header: bytes, bufs: list, packed: Any) -> list:
    """The message list, once its buffers have arrived (each packed one copied out)."""
    for i in packed:
        bufs[i] = bufs[i].copy()
    return unpack(header, bufs)


class MPITransport(Transport):
    """Point-to-point messaging on a private communicator."""

    def __init__(self, comm: Any, buffer_pool: int = 0) -> None:
        self.comm = comm
        self._pool: Any = None
        self._pool_limit = buffer_pool
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self._sends: list[tuple[Any, Any]] = []  # (request, memory kept alive until done)
        self._recvs: list[tuple] = []  # (source, header, bufs, reqs, indices of packed bufs)
        self._status = MPI.Status()
        self.bytes_sent = 0
        self.bytes_received = 0

    def send(self, dest: int, msgs: list) -> None:
        pickled, buffers = pack(msgs)
        views = [b.raw() for b in buffers]
        sizes = [len(v) for v in views]
        head = b"".join([_SIZE.pack(len(views)), *map(_SIZE.pack, sizes), pickled])
        self._track(self.comm.Isend([head, MPI.BYTE], dest, _TAG_HEAD), head)
        packed, offsets = _packing(sizes)
        if packed:
            memory = bytearray(packed)
            for i, offset in offsets.items():
                memory[offset:offset + sizes[i]] = views[i]
            views = [memoryview(memory)] + [v for i, v in enumerate(views) if i not in offsets]
        for view in views:
            for chunk in _chunks(view):
                self._track(self.comm.Isend([chunk, MPI.BYTE], dest, _TAG_DATA), chunk)
        self.bytes_sent += len(head) + sum(len(v) for v in views)

    def _track(self, request: Any, memory: Any) -> None:
        """Keep an unfinished send (and its memory) until a poll sees it complete; a small
        message is usually done at once, and then nobody has to poll for it."""
        if not request.Test():
            self._sends.append((request, memory))

    def poll(self) -> list[tuple[int, list]]:
        if self._sends:
            self._sends = [(r, m) for r, m in self._sends if not r.Test()]
        if self._pool is not None and self._pool.lent:
            self._pool.reclaim(when_due=True)
        # Lists from one source are handed over in the order they were sent: a list whose
        # buffers are still arriving holds back every later list from the same source.
        arrived: list[tuple[int, list]] = []
        waiting: set[int] = set()
        if self._recvs:
            pending = []
            for entry in self._recvs:
                if entry[0] not in waiting and MPI.Request.Testall(entry[3]):
                    arrived.append((entry[0], _unpacked(entry[1], entry[2], entry[4])))
                else:
                    waiting.add(entry[0])
                    pending.append(entry)
            self._recvs = pending
        second_look = True
        while True:
            msg = MPI.Message.Iprobe(self.comm, MPI.ANY_SOURCE, _TAG_HEAD, self._status)
            if msg is None:
                if not second_look:
                    return arrived
                # A probe that finds nothing may still have made progress that queued a
                # newly arrived message (MPICH does): probing once more finds it now rather
                # than one sleep later, which halved the time to notice a message.
                second_look = False
                continue
            source = self._status.Get_source()
            head = bytearray(self._status.Get_count(MPI.BYTE))
            msg.Recv([head, MPI.BYTE])
            header, bufs, reqs, packed = self._post_buffers(source, head)
            if source not in waiting and MPI.Request.Testall(reqs):
                arrived.append((source, _unpacked(header, bufs, packed)))
            else:
                waiting.add(source)
                self._recvs.append((source, header, bufs, reqs, packed))

    def _post_buffers(self, source: int, head: bytearray) -> tuple[bytes, list, list, Any]:
        (count,) = _SIZE.unpack_from(head, 0)
        sizes = [_SIZE.unpack_from(head, 8 * (i + 1))[0] for i in range(count)]
        header = bytes(memoryview(head)[8 * (count + 1):])
        bufs: list = [None] * count
        reqs = []
        packed, offsets = _packing(sizes)
        if packed:  # it comes first; each small buffer is a view of it
            memory = self._memory(packed)
            reqs += self._receive(source, memory)
            for i, offset in offsets.items():
                bufs[i] = memory[offset:offset + sizes[i]]
        for i, size in enumerate(sizes):
            if i not in offsets:
                bufs[i] = self._memory(size)
                reqs += self._receive(source, bufs[i])
        self.bytes_received += len(head) + sum(sizes)
        return header, bufs, reqs, offsets.keys()

    def _receive(self, source: int, memory: Any) -> list:
        return [self.comm.Irecv([chunk, MPI.BYTE], source, _TAG_DATA)
                for chunk in _chunks(memoryview(memory))]

    def _memory(self, size: int) -> Any:
        if self._pool is None:  # numpy only once a message carries buffers
            from .buffers import BufferPool

            self._pool = BufferPool(self._pool_limit)
        return self._pool.take(size)

    def busy(self) -> bool:
        return bool(self._sends) or bool(self._recvs)

    def abort(self, code: int) -> None:
        MPI.COMM_WORLD.Abort(code)

    def describe(self) -> str:
        from .launch import library_name

        return f"{library_name(MPI)} (MPI {'.'.join(map(str, MPI.Get_version()))})"
