"""The receive-buffer pool: blocks come back only when every array made from them is gone."""

from __future__ import annotations

import gc
import pickle

import numpy as np

from mpifutures.buffers import SMALLEST, BufferPool

MB = 1 << 20


def address(array):
    return array.__array_interface__["data"][0]


def test_block_is_reused_only_after_every_array_made_from_it_dies():
    pool = BufferPool(64 * MB)
    first = pool.take(4 * MB)
    first[:] = 7
    header = pickle.dumps(np.zeros(MB // 2), protocol=5, buffer_callback=lambda _: None)
    derived = pickle.loads(header, buffers=[first])  # what unpickling makes: base is the block
    view = derived[::2]
    where = address(first)
    del first, derived
    gc.collect()
    second = pool.take(4 * MB)  # the first block is still referenced by `view`
    assert address(second) != where and pool.reused == 0
    assert (view.copy().view(np.uint8) == 7).all()  # not overwritten
    del view, second
    gc.collect()
    third = pool.take(4 * MB)
    assert pool.reused == 1
    assert third.nbytes == 4 * MB
    assert address(third) == where  # freed first, reused first


def test_memoryviews_of_a_block_keep_it_lent():
    pool = BufferPool(64 * MB)
    block = pool.take(4 * MB)
    window = memoryview(memoryview(block))[MB:]
    del block
    pool.reclaim()
    assert pool.lent == 1 and pool.free_bytes() == 0
    del window
    pool.reclaim()
    assert pool.lent == 0 and pool.free_bytes() == 4 * MB


def test_reused_block_is_cut_to_the_size_asked_for():
    pool = BufferPool(64 * MB)
    big = pool.take(6 * MB)
    where = address(big)
    del big
    smaller = pool.take(4 * MB)  # 6 MB is within twice 4 MB: reused
    assert smaller.nbytes == 4 * MB
    assert address(smaller) == where
    del smaller
    tiny = pool.take(2 * MB)  # 6 MB is more than twice 2 MB: a fresh block
    assert address(tiny) != where
    assert pool.reused == 1


def test_a_free_block_behind_one_of_another_size_is_reused():
    pool = BufferPool(64 * MB)
    big, middle = pool.take(8 * MB), pool.take(3 * MB)
    where = address(middle)
    del big, middle
    again = pool.take(3 * MB - 1)  # fits the second free block only (8 MB is over twice)
    assert address(again) == where
    assert pool.reused == 1 and pool.free_bytes() == 8 * MB


def test_free_blocks_stay_within_the_limit():
    pool = BufferPool(10 * MB)
    views = [pool.take(4 * MB) for _ in range(5)]
    del views
    pool.reclaim()
    assert pool.lent == 0
    assert pool.free_bytes() == 8 * MB  # two 4 MB blocks fit, the others were let go
    held = pool.take(8 * MB)  # room is made by dropping free blocks, oldest first
    assert pool.free_bytes() == 0
    del held
    pool.reclaim()
    assert pool.free_bytes() == 8 * MB


def test_small_sizes_and_a_zero_limit_bypass_the_pool():
    pool = BufferPool(64 * MB)
    small = pool.take(SMALLEST - 1)
    assert small.nbytes == SMALLEST - 1
    del small
    pool.reclaim()
    assert pool.free_bytes() == 0 and pool.lent == 0
    off = BufferPool(0)
    off.take(4 * MB)
    off.reclaim()
    assert off.free_bytes() == 0 and off.reused == 0


def test_with_many_blocks_lent_a_take_looks_for_freed_ones_only_now_and_then(monkeypatch):
    from mpifutures import buffers

    monkeypatch.setattr(buffers, "SCAN_EVERY", 1000.0)
    pool = BufferPool(1 << 40)
    held = [pool.take(SMALLEST) for _ in range(buffers.SCAN_ALWAYS + 1)]  # the last one looked
    where = address(held.pop(0))
    again = pool.take(SMALLEST)  # beyond SCAN_ALWAYS lent and not due: no look, a fresh block
    assert address(again) != where and pool.reused == 0
    pool.reclaim(when_due=True)  # what the transport's poll does: still not due
    assert pool.free_bytes() == 0
    pool.reclaim()  # due (the transport's look once SCAN_EVERY has passed)
    assert pool.free_bytes() == SMALLEST
    assert address(pool.take(SMALLEST)) == where and pool.reused == 1


def test_a_received_array_keeps_its_memory_while_later_arrays_arrive():
    """Unpickling makes arrays whose base is the pool's block, not the view handed out, so
    the block is free only when nothing at all refers to it (CI once summed one array twice)."""
    from mpi4py import MPI

    from mpifutures.mpi_transport import MPITransport

    transport = MPITransport(MPI.COMM_SELF, buffer_pool=64 * MB)

    def through(array):
        transport.send(0, [array])
        arrived = []
        for _ in range(10_000):
            arrived += transport.poll()
            if arrived and not transport.busy():  # the sends are done too
                return arrived[0][1][0]
        raise AssertionError("a message to self did not arrive")

    first = through(np.full(MB // 8, 1.0))
    second = through(np.full(MB // 8, 2.0))  # same size: would land in a freed block
    assert (first == 1.0).all() and (second == 2.0).all()
    derived = first.reshape(2, -1)[1]  # a view of a view keeps the block too
    del first, second
    gc.collect()
    third = through(np.full(MB // 8, 3.0))
    assert (derived == 1.0).all() and (third == 3.0).all()
    assert transport._pool.reused == 1  # the second's block, free once it died


def test_small_buffers_travel_packed_in_one_message_and_arrive_equal_and_aligned(monkeypatch):
    from mpi4py import MPI

    from mpifutures import mpi_transport
    from mpifutures.mpi_transport import MPITransport

    transport = MPITransport(MPI.COMM_SELF)
    sent = []
    real_chunks = mpi_transport._chunks
    monkeypatch.setattr(mpi_transport, "_chunks", lambda view: sent.append(len(view)) or
                        real_chunks(view))
    value = [np.arange(i, dtype=dtype) for i in (3, 0, 1, 17)
             for dtype in (np.float64, np.int8, np.complex128)]
    value.append(np.full(1 << 17, 7.0))  # a large one travels on its own
    value.append(np.nonzero(np.zeros((2, 2))))  # two empty arrays: no message, no pack
    transport.send(0, [value])
    arrived = []
    for _ in range(10_000):
        arrived += transport.poll()
        if arrived and not transport.busy():
            break
    (_, [got]), = arrived
    assert len(got) == len(value)
    for a, b in zip(got[:-1], value[:-1]):
        assert a.dtype == b.dtype and np.array_equal(a, b) and a.flags.aligned
        assert a.base is None or a.base.nbytes == a.nbytes  # its own memory, not the pack's
    assert [x.size for x in got[-1]] == [0, 0]
    # sends: the pack of the nine small non-empty ones, then the large one (receives follow)
    assert [n for n in sent if n][:2] == [sum(b.nbytes for b in value[:-2]), 1 << 20]
