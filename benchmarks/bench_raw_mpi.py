"""Physical limits with plain mpi4py: pickled ping-pong (W1), Send/Recv bandwidth (W4) and
the compute floor of W3's tree sum with no runtime at all.

Run: ``mpiexec -n 3 python benchmarks/bench_raw_mpi.py [--quick]``. Rank 0 and 1 play
ping-pong; ranks 1 and 2 (the last two ranks) measure bandwidth, then compute W3's arrays and
sums, half each, and send the total to rank 0, which times each round. A rank that only waits
polls with ``Iprobe`` and sleeps, because MPICH spins a whole core in a blocking receive
and the 2-core machine would otherwise lose a core to a bystander. Every rank gets the malloc
settings an mpifutures rank gets (``MPIFUTURES_MALLOC_KEEP``): they are the process's, not
the runtime's, and without them each of W3's 8 MB arrays is page-faulted in anew (raw's W3
took 0.113-0.119 s that way here, against 0.082-0.084 s with them).
"""

from __future__ import annotations

import time

import harness
import numpy as np
from mpi4py import MPI
from workloads_common import noop

from mpifutures import config as configmod
from mpifutures.launch import keep_freed_memory

comm = MPI.COMM_WORLD
TAG_GO, TAG_RESULT, TAG_W3 = 11, 12, 13


def await_message(source, tag, every):
    """Wait without spinning until a message from ``source`` with ``tag`` is there."""
    while not comm.Iprobe(source=source, tag=tag):
        time.sleep(every)


def lazy_recv(source, tag, every=0.001):
    """Receive a pickled message, polling every ``every`` seconds."""
    await_message(source, tag, every)
    return comm.recv(source=source, tag=tag)


def lazy_recv_array(buf, source, tag):
    """Receive into ``buf``, polling every 100 µs."""
    await_message(source, tag, 1e-4)
    comm.Recv(buf, source=source, tag=tag)


def tree_half(count, length, partner, first):
    """One of the pair's halves of W3: make ``count`` arrays, sum them pairwise; the second
    of the pair sends its sum to the first, which adds it and sends the total to rank 0."""
    arrays = [np.random.random(length) for _ in range(count)]
    while len(arrays) > 1:
        arrays = [arrays[i] + arrays[i + 1] for i in range(0, len(arrays) - 1, 2)] + (
            [arrays[-1]] if len(arrays) % 2 else [])
    total = arrays[0]
    if not first:
        comm.Send(total, dest=partner, tag=TAG_W3)
        return
    other = np.empty_like(total)
    lazy_recv_array(other, partner, TAG_W3)
    comm.Send(total + other, dest=0, tag=TAG_W3)


def tree_floor_s(pair, count, length, repeats):
    """Rank 0 side of W3's floor: start both halves, wait for the total; seconds per round."""
    total, times = np.empty(length), []
    for _ in range(repeats + 1):  # first round is a warm-up
        start = time.perf_counter()
        for r in pair:
            comm.send("w3", dest=r, tag=TAG_GO)
        lazy_recv_array(total, pair[0], TAG_W3)
        times.append(time.perf_counter() - start)
    for r in pair:
        comm.send("stop", dest=r, tag=TAG_GO)
    return times[1:]


def ping_pong_us(trips, warmup=20):
    """Rank 0 side of a pickled ping-pong with rank 1; microseconds per round trip."""
    message = (noop, (), {})
    times = []
    for i in range(warmup + trips):
        start = time.perf_counter()
        comm.send(message, dest=1)
        comm.recv(source=1)
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1e6)
    comm.send("stop", dest=1)
    return times


def pong():
    """Rank 1 side of the ping-pong: answer until told to stop."""
    while comm.recv(source=0) != "stop":
        comm.send(None, dest=0)


def bandwidth_gbps(peer, nbytes, repeats, first):
    """Send/Recv and pickled send/recv ping-pong of ``nbytes``; GB/s one way (median)."""
    buf = np.ones(nbytes // 8)
    raw, pickled = [], []
    for _ in range(repeats + 1):  # first round is a warm-up
        for sink, exchange in ((raw, _buffer_exchange), (pickled, _pickle_exchange)):
            start = time.perf_counter()
            exchange(buf, peer, first)
            sink.append(2 * buf.nbytes / (time.perf_counter() - start) / 1e9)
    return harness.median(raw[1:]), harness.median(pickled[1:])


def _buffer_exchange(buf, peer, first):
    if first:
        comm.Send(buf, dest=peer)
        comm.Recv(buf, source=peer)
    else:
        comm.Recv(buf, source=peer)
        comm.Send(buf, dest=peer)


def _pickle_exchange(buf, peer, first):
    if first:
        comm.send(buf, dest=peer)
        comm.recv(source=peer)
    else:
        comm.send(comm.recv(source=peer), dest=peer)


def wanted(args, workload):
    return not args.only or workload in args.only


def rank0_side(args, pair):
    """Rank 0: play W1, start W4 on the pair, report."""
    sz = args.sizes
    if wanted(args, "W1"):
        harness.emit("_start", workload="W1")
        times = ping_pong_us(sz["w1_trips"])
        harness.emit("W1", harness.median(times), "µs", min=min(times), trips=len(times),
                     what="pickled comm.send/recv round trip, rank 0 <-> rank 1")
        harness.emit("_done", workload="W1")
    for r in range(1, comm.size):
        comm.send("go", dest=r, tag=TAG_GO)
    if wanted(args, "W4"):
        harness.emit("_start", workload="W4")
        if pair:
            raw, pickled = lazy_recv(pair[0], TAG_RESULT)
            harness.emit("W4", raw, "GB/s", pickled_GBps=pickled, nbytes=sz["w4_bytes"],
                         what=f"Send/Recv ping-pong rank {pair[0]} <-> rank {pair[1]}")
        else:
            harness.not_applicable(["W4"], "needs two ranks besides rank 0")
        harness.emit("_done", workload="W4")
    if wanted(args, "W3"):
        harness.emit("_start", workload="W3")
        if pair:
            times = tree_floor_s(pair, sz["w3_arrays"], sz["w3_length"], sz["w3_repeats"])
            harness.emit("W3", harness.median(times), "s", times_s=times,
                         what=f"the compute floor: ranks {pair[0]} and {pair[1]} make half the "
                              "arrays each and sum them pairwise, one Send between them, the "
                              "total Sent to rank 0; no runtime")
            harness.not_applicable(["W3.bytes"], "by construction only the total reaches rank 0")
        else:
            harness.not_applicable(["W3"], "needs two ranks besides rank 0")
        harness.emit("_done", workload="W3")
    harness.not_applicable(["W2", "W5", "W6", "W7", "W9"],
                           "raw MPI has no tasks; it is the limit for W1, W3, W4 and W8")


def main():
    args = harness.parse_args()
    keep_freed_memory(configmod.load().malloc_keep)
    rank = comm.rank
    pair = (comm.size - 2, comm.size - 1) if comm.size >= 3 else None  # bandwidth pair
    if rank == 0:
        rank0_side(args, pair)
        return
    if rank == 1 and wanted(args, "W1"):
        pong()
    lazy_recv(0, TAG_GO)
    if pair and rank in pair and wanted(args, "W4"):
        first = rank == pair[0]
        result = bandwidth_gbps(pair[1] if first else pair[0], args.sizes["w4_bytes"],
                                args.sizes["repeats"], first)
        if first:
            comm.send(result, dest=0, tag=TAG_RESULT)
    if pair and rank in pair and wanted(args, "W3"):
        first = rank == pair[0]
        count = args.sizes["w3_arrays"]
        mine = (count + 1) // 2 if first else count // 2
        while lazy_recv(0, TAG_GO, every=1e-4) == "w3":
            tree_half(mine, args.sizes["w3_length"], pair[1] if first else pair[0], first)


if __name__ == "__main__":
    main()
