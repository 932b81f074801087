"""The real executor, scheduler and workers in one thread, every message delivered in a random
order (in order per sender and receiver, as MPI guarantees) and client calls made at random
moments between deliveries: no MPI, no threads, each run replayable from its seed.

Each run checks the scheduler's invariants after every turn of its loop; at the end, that every
future is done as the calls allow (a value equal to a serial evaluation's, the error of a failing
input, or cancelled after a cancel upstream or its executor's shutdown); and, once everything is
released, that no rank holds any data or bookkeeping. ``MPIFUTURES_FUZZ_RUNS=n`` runs more seeds.
"""

from __future__ import annotations

import collections
import gc
import heapq
import os
import random
from typing import Any, Optional

from mpifutures import Executor
from mpifutures.config import Config
from mpifutures.errors import DataLostError
from mpifutures.scheduler import Scheduler
from mpifutures.transport import LocalTransport, pack
from mpifutures.worker import Worker
from tests import tasks

RUNS = int(os.environ.get("MPIFUTURES_FUZZ_RUNS", "300"))
STEPS = 150


class Network:
    """Endpoints whose messages wait on a channel per (sender, receiver) until delivered."""

    def __init__(self, size: int, rng: random.Random) -> None:
        self.size, self.rng = size, rng
        self.channels: dict[tuple[int, int], collections.deque] = collections.defaultdict(
            collections.deque)
        self.endpoints = [Endpoint(self, rank) for rank in range(size)]

    def deliver(self) -> bool:
        """Hand the oldest message of a random busy channel to its receiver."""
        busy = sorted(c for c, q in self.channels.items() if q)
        if not busy:
            return False
        source, dest = self.rng.choice(busy)
        header, buffers = self.channels[source, dest].popleft()
        self.endpoints[dest].inbox.append((source, header, buffers))
        return True

    def quiet(self) -> bool:
        return not any(self.channels.values()) and not any(e.inbox for e in self.endpoints)


class Endpoint(LocalTransport):
    def send(self, dest: int, msgs: list) -> None:
        header, buffers = pack(msgs)
        self.fabric.channels[self.rank, dest].append(
            (header, [bytearray(b.raw()) for b in buffers]))


class Spec:
    """What a future stands for: a scattered value, or ``tasks.node(i, fails, None, *inputs)``."""

    def __init__(self, i: int, fails: bool = False, inputs: tuple = (), scattered: bool = False):
        self.i, self.fails, self.inputs, self.scattered = i, fails, inputs, scattered
        self.key: Optional[str] = None
        self.pure = False  # submitted with pure=True (submitting it again gives the same key)

    def value(self) -> int:
        return self.i + sum(s.value() for s in self.inputs)

    def errors(self) -> set[str]:
        """The messages of the failing nodes at or above this one."""
        own = {f"node {self.i} failed"} if self.fails else set()
        return own.union(*(s.errors() for s in self.inputs))

    def keys(self) -> set[str]:
        return {self.key}.union(*(s.keys() for s in self.inputs))


class Rig:
    def __init__(self, seed: int) -> None:
        self.rng = rng = random.Random(seed)
        config = Config(inline_bytes=rng.choice([0, 4096]),
                        tasks_per_worker=rng.choice([1, 2, 64]), task_stream=rng.random() < 0.3)
        self.net = Network(rng.choice([3, 4]), rng)
        self.scheduler = Scheduler(self.net.endpoints[0], config)
        self.workers = [Worker(ep, config) for ep in self.net.endpoints[1:]]
        for part in (self.scheduler, *self.workers):
            part.backoff.idle = lambda *args, **kwargs: None  # never sleep
        self.executors: list[Executor] = []
        self.closed: set[int] = set()  # sessions shut down
        self.futures: list[tuple[Any, Spec]] = []  # held, not released
        self.scattering: list[tuple[Any, Spec]] = []  # scattered, not yet confirmed
        self.cancelled: set[str] = set()  # keys cancel() was called on
        self.released: set[str] = set()  # keys a future of was released or dropped
        self.log: list[str] = []
        self.next_i = 100
        self.new_executor()

    # ------------------------------------------------------------ client calls

    def open_executors(self) -> list[Executor]:
        return [e for e in self.executors if e._session not in self.closed]

    def new_executor(self) -> None:
        self.executors.append(Executor(cluster=self.scheduler))
        self.log.append(f"executor {self.executors[-1]._session}")

    def shutdown(self) -> None:
        ex = self.rng.choice(self.open_executors())
        cancel = self.rng.random() < 0.5
        self.log.append(f"shutdown {ex._session} cancel_futures={cancel}")
        ex.shutdown(wait=False, cancel_futures=cancel)
        self.closed.add(ex._session)

    def submit(self) -> None:
        ex = self.rng.choice(self.open_executors())
        mine = [(f, s) for f, s in self.futures if f.executor is ex]
        picked = self.rng.sample(mine, self.rng.randint(0, min(3, len(mine))))
        self.next_i += 1
        spec = Spec(self.next_i, self.rng.random() < 0.1, tuple(s for _, s in picked))
        pure = self.rng.random() < 0.3
        self._submit(ex, spec, [f for f, _ in picked], pure)

    def submit_shared(self) -> None:
        """A pure call with no inputs: equal keys in every executor that makes it."""
        ex = self.rng.choice(self.open_executors())
        i = self.rng.randint(0, 4)
        self._submit(ex, Spec(i, i == 0), [], True)

    def submit_again(self) -> None:
        """The same pure call with the same inputs again: the same key."""
        held = {(f.executor, s.key): f for f, s in self.futures}
        again = [(f.executor, s, [held.get((f.executor, d.key)) for d in s.inputs])
                 for f, s in self.futures if s.pure]
        again = [(ex, s, ins) for ex, s, ins in again if None not in ins
                 and ex._session not in self.closed]
        if again:
            ex, spec, inputs = self.rng.choice(again)
            self._submit(ex, spec, inputs, True)

    def _submit(self, ex: Executor, spec: Spec, inputs: list, pure: bool) -> None:
        options: dict = {}
        if self.rng.random() < 0.2:
            options["retries"] = 1
        if self.rng.random() < 0.2:
            options["priority"] = self.rng.randint(-1, 1)
        if self.rng.random() < 0.2:
            options["workers"] = [self.rng.choice(self.workers).rank]
            options["allow_other_workers"] = self.rng.random() < 0.5
        future = ex.submit(tasks.node, spec.i, spec.fails, None, *inputs, pure=pure, **options)
        assert spec.key in (None, future.key)
        spec.key, spec.pure = future.key, pure
        self.futures.append((future, spec))
        self.log.append(f"submit {future.key} <- {[f.key for f in inputs]} "
                        f"session={ex._session} fails={spec.fails} {options}")

    def map(self) -> None:
        ex = self.rng.choice(self.open_executors())
        specs = []
        for _ in range(self.rng.randint(1, 4)):
            self.next_i += 1
            specs.append(Spec(self.next_i, self.rng.random() < 0.1))
        pure = self.rng.random() < 0.5
        futures = ex.map(tasks.node, [s.i for s in specs], [s.fails for s in specs],
                         [None] * len(specs), pure=pure)
        for future, spec in zip(futures, specs):
            spec.key, spec.pure = future.key, pure
            self.futures.append((future, spec))
        self.log.append(f"map {[f.key for f in futures]} session={ex._session}")

    def fire_and_forget(self) -> None:
        future, spec = self.futures.pop(self.rng.randrange(len(self.futures)))
        self.released.add(spec.key)
        if future.executor._session not in self.closed:
            self.log.append(f"fire_and_forget {spec.key}")
            future.executor.fire_and_forget(future)
        del future

    def scatter(self) -> None:
        ex = self.rng.choice(self.open_executors())
        value = self.rng.choice([10, 20, 30])
        ranks = tuple(self.rng.sample(ex._cluster.workers,
                                      self.rng.randint(1, len(ex._cluster.workers))))
        future = ex._scatter_one(value, ranks, self.rng.random() < 0.7)
        spec = Spec(value, scattered=True)
        spec.key = future.key
        self.scattering.append((future, spec))  # scatter() returns it once it is done
        self.log.append(f"scatter {future.key} to {ranks} session={ex._session}")

    def cancel(self) -> None:
        future, spec = self.rng.choice(self.futures)
        if future.executor._session in self.closed:
            return
        self.cancelled.add(spec.key)
        self.log.append(f"cancel {spec.key}: {future.cancel()}")

    def retry(self) -> None:
        ended = [(f, s) for f, s in self.futures if f.status in ("error", "cancelled")
                 and f.executor._session not in self.closed]
        if ended:
            future, spec = self.rng.choice(ended)
            self.log.append(f"retry {spec.key}")
            future.retry()

    def release(self) -> None:
        future, spec = self.futures.pop(self.rng.randrange(len(self.futures)))
        self.released.add(spec.key)
        if self.rng.random() < 0.5:
            self.log.append(f"release {spec.key}")
            future.release()
        else:
            self.log.append(f"drop {spec.key}")  # its garbage collection releases it
        del future

    def fetch(self) -> None:
        future, spec = self.rng.choice(self.futures)
        if future.status == "finished":
            self.log.append(f"fetch {spec.key}")
            self._fetch(future)

    @staticmethod
    def _fetch(future: Any) -> None:
        """Ask for the value as ``result()`` does, without waiting for it."""
        record = future._record
        if record.error is not None and record.payload is None:
            record.requested = False  # an earlier fetch's error: result() would raise it, once
        if record.claim_fetch():
            future.executor._fetch(record)

    # ------------------------------------------------------------ the ranks' loops

    def scheduler_turn(self) -> None:
        self.scheduler._step()
        self.scheduler.state.check_invariants()

    def worker_turn(self) -> None:
        self.rng.choice(self.workers)._turn()

    def compute(self) -> None:
        worker = self.rng.choice(self.workers)
        if worker.ready:
            worker._run_task(heapq.heappop(worker.ready)[2])

    def quiet(self) -> bool:
        return (self.net.quiet() and not self.scheduler.inbox
                and not any(w.ready or w.outbox for w in self.workers))

    def drain(self) -> None:
        for _ in range(1000):
            self.scheduler_turn()
            for worker in self.workers:
                worker._turn()
                while worker.ready:
                    worker._run_task(heapq.heappop(worker.ready)[2])
            while self.net.deliver():
                pass
            if self.quiet():
                self.scheduler_turn()  # act on the last arrivals; nothing more may come of it
                if self.quiet():
                    return
        raise AssertionError("the ranks did not settle within 1000 rounds")

    # ------------------------------------------------------------ a run

    def play(self, steps: int) -> None:
        actions = [(self.submit, 12), (self.submit_shared, 3), (self.submit_again, 2),
                   (self.map, 1), (self.fire_and_forget, 1), (self.scatter, 3),
                   (self.cancel, 3), (self.retry, 2), (self.release, 3), (self.fetch, 2),
                   (self.new_executor, 0.5), (self.shutdown, 0.5),
                   (self.scheduler_turn, 10), (self.worker_turn, 10), (self.compute, 10),
                   (self.net.deliver, 30)]
        calls, weights = zip(*actions)
        weights = [w * self.rng.uniform(0.2, 2.0) for w in weights]  # each run its own mix
        for _ in range(steps):
            self.futures += [(f, s) for f, s in self.scattering if f.done()]
            self.scattering = [(f, s) for f, s in self.scattering if not f.done()]
            call = self.rng.choices(calls, weights)[0]
            if call in (self.cancel, self.release, self.fetch, self.fire_and_forget) \
                    and not self.futures:
                continue
            if call == self.shutdown and len(self.open_executors()) < 2:
                continue  # keep one open
            if call == self.new_executor and len(self.open_executors()) >= 3:
                continue
            call()

    def check_outcomes(self) -> None:
        self.drain()
        self.futures += self.scattering
        self.scattering = []
        for future, spec in self.futures:
            closed = future.executor._session in self.closed
            assert future.done(), f"{future!r} never ended"
            status = future.status
            if status == "finished":
                assert not spec.errors(), f"{future!r} finished, but an input fails"
                if not closed:  # a closed executor's values are released (README)
                    self._fetch(future)
            elif status == "error":
                exc = future.exception()
                if isinstance(exc, DataLostError) and "already released" in str(exc):
                    # a retried task whose input's futures were all let go (README: retry)
                    assert spec.keys() & self.released, f"{future!r}: {exc!r}"
                    continue
                assert type(exc) is ValueError and str(exc) in spec.errors(), \
                    f"{future!r} failed with {exc!r}; the failing inputs: {spec.errors()}"
            else:
                assert closed or spec.keys() & self.cancelled, \
                    f"{future!r} was cancelled with no cancel upstream and its executor open"
        self.drain()
        for future, spec in self.futures:
            if future.status == "finished" and future.executor._session not in self.closed:
                record = future._record
                assert record.loaded or record.payload is not None, \
                    f"the value of {future!r} did not reach rank 0: {record.error!r}"
                assert future.result() == spec.value(), f"{future!r} has a wrong value"

    def check_nothing_left(self) -> None:
        for ex in self.open_executors():
            ex.shutdown(wait=False, cancel_futures=self.rng.random() < 0.5)
        self.futures.clear()
        gc.collect()
        self.drain()
        state = self.scheduler.state
        assert not state.tasks, f"rank 0 still tracks {sorted(state.tasks)}"
        assert not self.scheduler.registry.records, "rank 0 still has key records"
        assert not self.scheduler.refs and not self.scheduler.fetches
        for w in self.workers:
            held = {name: sorted(getattr(w, name)) for name in
                    ("store", "payloads", "copies", "pending", "waiters", "fetching")
                    if getattr(w, name)}
            assert not held, f"rank {w.rank} still holds {held}"


def run(seed: int) -> None:
    rig = Rig(seed)
    try:
        rig.play(STEPS)
        rig.check_outcomes()
        rig.check_nothing_left()
    except AssertionError as exc:
        steps = "\n  ".join(rig.log[-60:])
        hashseed = os.environ.get("PYTHONHASHSEED", "random")
        raise AssertionError(f"seed {seed} (PYTHONHASHSEED={hashseed}): {exc}\n"
                             f"last client calls:\n  {steps}") from exc


def test_random_interleavings_end_every_future_rightly_and_leave_nothing_behind():
    for seed in range(RUNS):
        run(seed)


_calls = [0]


def first_small_then_large():
    """A task whose value differs between runs: small (inline) the first time, large after."""
    _calls[0] += 1
    return "first" if _calls[0] == 1 else "second" * 2000


def test_a_cancelled_attempts_late_report_does_not_give_its_value_to_the_retry():
    _calls[0] = 0
    net = Network(2, random.Random(0))
    scheduler, worker = Scheduler(net.endpoints[0], Config()), Worker(net.endpoints[1], Config())
    for part in (scheduler, worker):
        part.backoff.idle = lambda *args, **kwargs: None

    def settle():
        for _ in range(10):
            scheduler._step()
            while net.deliver():
                pass
            worker._turn()
            while worker.ready:
                worker._run_task(heapq.heappop(worker.ready)[2])

    f = Executor(cluster=scheduler).submit(first_small_then_large, pure=False)
    scheduler._step()
    net.deliver()
    worker._turn()
    worker._run_task(heapq.heappop(worker.ready)[2])  # attempt 1: "first"
    worker._turn()  # its report, with the value inline, is on its way ...
    f.cancel()  # ... when the client cancels
    settle()
    f.retry()
    settle()
    assert worker.store[f.key] == "second" * 2000
    Rig._fetch(f)  # as result() does, without waiting (nothing else runs the scheduler)
    settle()
    assert f.result(timeout=0) == "second" * 2000
