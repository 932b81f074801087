"""Noticing that a rank on the same machine has died when the launcher does not end the job.

``mpiexec`` (MPICH's and Open MPI's) and ``srun --kill-on-bad-exit`` end every rank once one
dies, but a plain ``srun`` leaves the others running, and MPI tells no rank that a peer sharing
its memory is gone: rank 0 would wait forever for the tasks of a worker that the out-of-memory
killer took. So the ranks of each machine watch each other in a ring (each checks the next,
about once a second, by process ID: they come with each worker's first message, and count only
between ranks that share a kernel and a PID namespace, :func:`machine`). A worker that finds
rank 0 gone aborts the job; one that finds another worker gone tells rank 0, which then fails
every future with :class:`~mpifutures.errors.WorkerLostError`. A rank is watched only by a
rank on its own machine: one alone there, or a whole machine lost, is left to the launcher.
"""

from __future__ import annotations

import os
from typing import Optional

#: seconds between two checks of the same ranks
PERIOD = 1.0


def machine() -> Optional[str]:
    """What ranks must share for one's process IDs to mean something to another: the kernel's
    boot ID and the PID namespace. None where there is no ``/proc`` (nothing is watched)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            boot = fh.read().strip()
        if os.readlink("/proc/self") != str(os.getpid()):
            return None  # this /proc shows another PID namespace: its PIDs are not ours
        return f"{boot} {os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def alive(pid: int) -> bool:
    """False once process ``pid`` has ended: gone, or a zombie nobody has reaped yet."""
    try:
        os.kill(pid, 0)  # (not fooled by a /proc mounted with hidepid)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:  # hidden or unreadable, yet it exists: alive (a false alarm ends the job)
        return True
    end = stat.rfind(b")")  # the state follows the command name, which may hold anything
    return stat[end + 2:end + 3] not in (b"Z", b"X")


class Watch:
    """Ranks (``{rank: pid}``) of this machine to check, at most once per :data:`PERIOD`."""

    def __init__(self, peers: dict[int, int], now: float) -> None:
        self.peers = {rank: pid for rank, pid in peers.items() if pid != os.getpid()}
        self.next = now + PERIOD

    def dead(self, now: float) -> list[tuple[int, int]]:
        """``(rank, pid)`` of the ranks found gone since the last check (no longer watched)."""
        self.next = now + PERIOD
        gone = [(rank, pid) for rank, pid in self.peers.items() if not alive(pid)]
        for rank, _ in gone:
            del self.peers[rank]
        return gone


def ring_links(pids: dict[int, tuple[int, Optional[str]]], rank: int,
               own_pid: int) -> list[tuple[int, int, int]]:
    """The watches that ``rank``'s HELLO adds to the ring of its machine's ranks, in which each
    watches the next: ``(watcher, watched, pid of watched)``, the rank watching the one after
    it and the one before watching it. ``pids``: ``{rank: (pid, machine)}`` of the workers
    known so far; rank 0 (``own_pid``) joins the ring of its own machine.

    One watcher per rank is enough, since the first death found stops the cluster; and the
    ring grows with each HELLO, so a worker is watched from its first message on."""
    pid, where = pids[rank]
    if where is None or pid == own_pid:  # no /proc there; or a thread of rank 0's
        return []
    peers = {r: p for r, (p, m) in pids.items() if m == where and p != own_pid}
    if where == machine():
        peers[0] = own_pid
    ring = sorted(peers)
    if len(ring) < 2:
        return []
    i = ring.index(rank)
    return [(watcher, watched, peers[watched])
            for watcher, watched in ((ring[i - 1], rank), (rank, ring[(i + 1) % len(ring)]))]


def lost_error(rank: int, pid: int, host: str, running: list, seen_by: int) -> Exception:
    """The error that ends a cluster whose worker ``rank`` has died while ``running`` tasks."""
    from .errors import WorkerLostError

    tasks = f", running {running[:5]}{' ...' if len(running) > 5 else ''}" if running else ""
    return WorkerLostError(
        f"worker rank {rank} (pid {pid} on {host}) has died{tasks}: its process is gone "
        f"(noticed by rank {seen_by}), killed by a signal such as the out-of-memory killer's "
        "or ended without a word. Its tasks and the data it held are lost, so the cluster "
        "stops and the job ends. Look for the cause in the job's output and the system log "
        "(dmesg); if memory ran out, give each rank more.")
