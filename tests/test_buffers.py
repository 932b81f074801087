"""The receive-buffer pool: blocks come back only when every array made from them is gone."""

from __future__ import annotations

import gc

import numpy as np

from mpifutures.buffers import SMALLEST, BufferPool

MB = 1 << 20


def test_block_is_reused_only_after_its_arrays_die():
    pool = BufferPool(64 * MB)
    first = pool.take(4 * MB)
    derived = np.frombuffer(memoryview(first), dtype=np.float64)  # what unpickling makes
    address = first.__array_interface__["data"][0]
    del first
    gc.collect()
    second = pool.take(4 * MB)  # the first block is still referenced by `derived`
    assert second.__array_interface__["data"][0] != address
    assert pool.reused == 0
    del derived, second
    gc.collect()
    third = pool.take(4 * MB)
    assert pool.reused == 1
    assert third.nbytes == 4 * MB
    assert third.__array_interface__["data"][0] == address  # freed first, reused first


def test_reused_block_is_cut_to_the_size_asked_for():
    pool = BufferPool(64 * MB)
    big = pool.take(6 * MB)
    address = big.__array_interface__["data"][0]
    del big
    smaller = pool.take(4 * MB)  # 6 MB is within twice 4 MB: reused
    assert smaller.nbytes == 4 * MB
    assert smaller.__array_interface__["data"][0] == address
    del smaller
    tiny = pool.take(2 * MB)  # 6 MB is more than twice 2 MB: a fresh block
    assert tiny.__array_interface__["data"][0] != address
    assert pool.reused == 1


def test_a_free_block_behind_one_of_another_size_is_reused():
    pool = BufferPool(64 * MB)
    big, middle = pool.take(8 * MB), pool.take(3 * MB)
    address = middle.__array_interface__["data"][0]
    del big, middle
    gc.collect()
    again = pool.take(3 * MB - 1)  # fits the second free block only (8 MB is over twice)
    assert again.__array_interface__["data"][0] == address
    assert pool.reused == 1 and pool.free_bytes() == 8 * MB


def test_free_blocks_stay_within_the_limit():
    pool = BufferPool(10 * MB)
    views = [pool.take(4 * MB) for _ in range(5)]
    del views
    assert pool.free_bytes() <= 10 * MB
    assert pool.free_bytes() == 8 * MB  # two 4 MB blocks fit, the others were let go
    held = pool.take(8 * MB)  # room is made by dropping free blocks, oldest first
    assert pool.free_bytes() == 0
    del held
    assert pool.free_bytes() == 8 * MB


def test_small_sizes_and_a_zero_limit_bypass_the_pool():
    pool = BufferPool(64 * MB)
    small = pool.take(SMALLEST - 1)
    assert small.nbytes == SMALLEST - 1
    del small
    assert pool.free_bytes() == 0
    off = BufferPool(0)
    off.take(4 * MB)
    assert off.free_bytes() == 0 and off.reused == 0
