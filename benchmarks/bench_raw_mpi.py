"""Physical limits with plain mpi4py: pickled ping-pong (W1) and Send/Recv bandwidth (W4).

Run: ``mpiexec -n 3 python benchmarks/bench_raw_mpi.py [--quick]``. Rank 0 and 1 play
ping-pong; ranks 1 and 2 (the last two ranks) measure bandwidth. A rank that only waits
polls with ``Iprobe`` and sleeps, because MPICH spins a whole core in a blocking receive
and the 2-core machine would otherwise lose a core to a bystander.
"""

from __future__ import annotations

import time

import harness
import numpy as np
from mpi4py import MPI
from workloads_common import noop

comm = MPI.COMM_WORLD
TAG_GO, TAG_RESULT = 11, 12


def lazy_recv(source, tag):
    """Receive without spinning: poll every millisecond."""
    while not comm.Iprobe(source=source, tag=tag):
        time.sleep(0.001)
    return comm.recv(source=source, tag=tag)


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
    harness.not_applicable(["W2", "W3", "W5", "W6", "W7", "W9"],
                           "raw MPI has no tasks; it is the limit for W1, W4 and W8")


def main():
    args = harness.parse_args()
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


if __name__ == "__main__":
    main()
