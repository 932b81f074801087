"""The real executor, scheduler and workers in one thread, every message delivered in a random
order (in order per sender and receiver, as MPI guarantees) and client calls made at random
moments between deliveries (in half the runs, one channel lags far behind the others): no MPI,
no threads, each run replayable from its seed. The calls include ``key=`` given again once the
cluster has forgotten the key, so a stale copy of its old value would show as a wrong result.

Each run checks the scheduler's invariants after every turn of its loop; at the end, that every
future is done as the calls allow (a value equal to a serial evaluation's, the error of a failing
input, or cancelled after a cancel upstream or its executor's shutdown); and, once everything is
released, that no rank holds any data or bookkeeping. ``MPIFUTURES_FUZZ_RUNS=n`` runs more seeds.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import gc
import heapq
import os
import random
from typing import Any, Callable, Optional

from mpifutures import Executor
from mpifutures.config import Config
from mpifutures.errors import DataLostError
from mpifutures.exchange import scatter_one
from mpifutures.events import WorkerStalled
from mpifutures.scheduler import Scheduler
from mpifutures.transport import LocalTransport, pack
from mpifutures.worker import Worker
from tests import tasks
from tests.invariants import check_invariants

RUNS = int(os.environ.get("MPIFUTURES_FUZZ_RUNS", "300"))
STEPS = 150


class Network:
    """Endpoints whose messages wait on a channel per (sender, receiver) until delivered."""

    def __init__(self, size: int, rng: random.Random, slow: float = 0.0) -> None:
        self.size, self.rng = size, rng
        self.channels: dict[tuple[int, int], collections.deque] = collections.defaultdict(
            collections.deque)
        self.endpoints = [Endpoint(self, rank) for rank in range(size)]
        # With probability ``slow``, one channel lags far behind the others (a message held
        # up for a long time is what exposes stale copies).
        pairs = [(a, b) for a in range(size) for b in range(size) if a != b]
        self.slow = rng.choice(pairs) if rng.random() < slow else None

    def deliver(self) -> bool:
        """Hand the oldest message of a random busy channel to its receiver."""
        busy = sorted(c for c, q in self.channels.items() if q)
        if not busy:
            return False
        if self.slow in busy and len(busy) > 1 and self.rng.random() > 0.02:
            busy.remove(self.slow)
        self.deliver_from(*self.rng.choice(busy))
        return True

    def deliver_from(self, source: int, dest: int) -> None:
        header, buffers = self.channels[source, dest].popleft()
        self.endpoints[dest].inbox.append((source, header, buffers))

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
        self.net = Network(rng.choice([3, 4]), rng, slow=0.5)
        self.scheduler = Scheduler(self.net.endpoints[0], config)
        self.scheduler.stalls.after = float("inf")  # stalls come from the seed (see stall)
        self.workers = [Worker(ep, config) for ep in self.net.endpoints[1:]]
        for part in (self.scheduler, *self.workers):
            part.backoff.idle = lambda *args, **kwargs: None  # never sleep
        self.scheduler.ask = self._ask
        self.executors: list[Executor] = []
        self.closed: set[int] = set()  # sessions shut down
        self.futures: list[tuple[Any, Spec]] = []  # held, not released
        self.scattering: list[tuple[Any, Spec]] = []  # scattered, not yet confirmed
        self.cancelled: set[str] = set()  # keys cancel() was called on
        self.released: set[str] = set()  # keys a future of was released or dropped
        self.log: list[str] = []
        self.next_i = 100
        self.given: set[str] = set()  # keys given to key=
        self.renewed: set[str] = set()  # ... and given anew after an earlier computation
        self.either: set[str] = set()  # keys whose value may come from either computation
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

    def _inputs(self, ex: Executor) -> list[tuple[Any, Spec]]:
        """Futures ``ex`` may pass to a task: not those naming a key given anew since (the
        task would take the key's new computation, as a retry of theirs would: README)."""
        return [(f, s) for f, s in self.futures
                if f.executor is ex and not s.keys() & self.renewed]

    def submit(self) -> None:
        ex = self.rng.choice(self.open_executors())
        mine = self._inputs(ex)
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
                 and ex._session not in self.closed and not s.keys() & self.renewed]
        if again:
            ex, spec, inputs = self.rng.choice(again)
            self._submit(ex, spec, inputs, True)

    def submit_keyed(self) -> None:
        """A ``key=`` from a small set, reused once the cluster has forgotten it (a new
        computation, whose value differs from the last one's), or given while a future of it
        is held (the same task). Only when rank 0 has taken in every earlier call, so that
        which of the two it is is known here."""
        key = f"key-{self.rng.randint(0, 2)}"
        task = self.scheduler.state.tasks.get(key)
        if self.scheduler.inbox or (task is None) != (key not in self.scheduler.registry.records):
            return
        ex = self.rng.choice(self.open_executors())
        if task is not None:
            held = [(f, s) for f, s in self.futures if f.key == key and f.executor is ex]
            if not held or task.status == "cancelled":
                return
            spec, inputs = held[0][1], []
        else:
            if key in self.given:
                self.renewed.add(key)
            self.given.add(key)
            mine = self._inputs(ex)
            picked = self.rng.sample(mine, self.rng.randint(0, min(2, len(mine))))
            self.next_i += 1
            spec = Spec(self.next_i, self.rng.random() < 0.1, tuple(s for _, s in picked))
            inputs = [f for f, _ in picked]
        self._submit(ex, spec, inputs, False, key=key)

    def _submit(self, ex: Executor, spec: Spec, inputs: list, pure: bool,
                key: Optional[str] = None) -> None:
        options: dict = {}
        if self.rng.random() < 0.2:
            options["retries"] = 1
        if self.rng.random() < 0.2:
            options["priority"] = self.rng.randint(-1, 1)
        if self.rng.random() < 0.2:
            options["workers"] = [self.rng.choice(self.workers).rank]
            options["allow_other_workers"] = self.rng.random() < 0.5
        future = ex.submit(tasks.node, spec.i, spec.fails, None, *inputs, pure=pure, key=key,
                           **options)
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
        future = scatter_one(ex, value, ranks, self.rng.random() < 0.7)
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
                 and f.executor._session not in self.closed and not s.keys() & self.renewed]
        if ended:
            future, spec = self.rng.choice(ended)
            self.log.append(f"retry {spec.key}")
            future.retry()
            # The retry re-runs the ended tasks linked to this one (README: retry); one that
            # reads a key given anew since it ended now computes with the key's new data.
            self.either.update(s.key for f, s in self.futures
                               if f.status == "pending" and s.keys() & self.renewed)

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

    def _ask(self, item: tuple, timeout: float = 60.0) -> Any:
        """``Scheduler.ask`` as the client's thread sees it: the ranks go on, a random step
        at a time, until the scheduler thread has answered."""
        reply: cf.Future = item[-1]
        self.scheduler.post(item)
        steps = [self.scheduler_turn, self.worker_turn, self.compute, self.net.deliver]
        for _ in range(10_000):
            if reply.done():
                return reply.result()
            self.rng.choice(steps)()
        raise AssertionError("the scheduler did not answer a query")

    # ------------------------------------------------------------ the ranks' loops

    def scheduler_turn(self) -> None:
        self.scheduler._step()
        check_invariants(self.scheduler.state)

    def worker_turn(self) -> None:
        self.rng.choice(self.workers)._turn()

    def stall(self) -> None:
        """Rank 0 finds a worker that owes tasks quiet for long (here the seed decides)."""
        stalls = self.scheduler.stalls
        owing = [w for w, n in self.scheduler.state.load.items() if n and w not in stalls.stalled]
        if owing:
            worker = self.rng.choice(owing)
            stalls.stalled.add(worker)  # ended by its next report of a task's end
            self.scheduler.post(("event", WorkerStalled(worker, True)))

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
                   (self.submit_keyed, 3),
                   (self.map, 1), (self.fire_and_forget, 1), (self.scatter, 3),
                   (self.cancel, 3), (self.retry, 2), (self.release, 3), (self.fetch, 2),
                   (self.new_executor, 0.5), (self.shutdown, 0.5),
                   (self.scheduler_turn, 10), (self.worker_turn, 10), (self.compute, 10),
                   (self.stall, 1),
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
                if spec.key not in self.either:
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
                    ("store", "payloads", "versions", "pending", "waiters", "fetching")
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


class Small:
    """A scheduler and ``n`` workers whose loops a test turns by hand."""

    def __init__(self, n: int, config: Config = Config()) -> None:
        self.net = Network(n + 1, random.Random(0))
        self.scheduler = Scheduler(self.net.endpoints[0], config)
        self.scheduler.stalls.after = float("inf")  # no stall unless a test makes one
        self.workers = [Worker(ep, config) for ep in self.net.endpoints[1:]]
        for part in (self.scheduler, *self.workers):
            part.backoff.idle = lambda *args, **kwargs: None  # never sleep
        self.scheduler.ask = self._ask

    def _ask(self, item: tuple, timeout: float = 60.0) -> Any:
        """``Scheduler.ask``: the scheduler's loop turns (and only it) until it answers."""
        reply: cf.Future = item[-1]
        self.scheduler.post(item)
        for _ in range(10):
            self.scheduler._step()
            if reply.done():
                return reply.result()
        raise AssertionError("the scheduler did not answer a query")

    def settle(self, held: set = frozenset()) -> None:
        """Turn every loop until nothing moves, delivering every channel but ``held``."""
        for _ in range(10):
            self.scheduler._step()
            for channel, queue in list(self.net.channels.items()):
                while queue and channel not in held:
                    self.net.deliver_from(*channel)
            for worker in self.workers:
                worker._turn()
                while worker.ready:
                    worker._run_task(heapq.heappop(worker.ready)[2])

    def value(self, future: Any) -> Any:
        Rig._fetch(future)  # as result() does, without waiting (nothing else runs the loops)
        self.settle()
        return future.result(timeout=0)


_calls = [0]


def first_small_then_large():
    """A task whose value differs between runs: small (inline) the first time, large after."""
    _calls[0] += 1
    return "first" if _calls[0] == 1 else "second" * 2000


def test_a_cancelled_attempts_late_report_does_not_give_its_value_to_the_retry():
    _calls[0] = 0
    small = Small(1)
    worker = small.workers[0]
    f = Executor(cluster=small.scheduler).submit(first_small_then_large, pure=False)
    small.scheduler._step()
    small.net.deliver()
    worker._turn()
    worker._run_task(heapq.heappop(worker.ready)[2])  # attempt 1: "first"
    worker._turn()  # its report, with the value inline, is on its way ...
    f.cancel()  # ... when the client cancels
    small.settle()
    f.retry()
    small.settle()
    assert worker.store[f.key] == "second" * 2000
    assert small.value(f) == "second" * 2000


def test_a_stale_copy_on_a_worker_is_not_used_for_a_key_given_anew():
    """Worker 2 fetched key "k"; its report of that copy is still on its way when "k" is
    forgotten and then given to a new computation. A task sent to worker 2 that needs the new
    "k" must not read the old copy, which rank 0 has not yet freed there."""
    small = Small(2)
    ex = Executor(cluster=small.scheduler)
    old = ex.submit(tasks.node, 1, False, None, key="k", workers=[1])
    small.settle()
    user = ex.submit(tasks.node, 10, False, None, old, workers=[2])
    small.settle(held={(2, 0)})  # worker 2 has fetched "k"; its STORED waits
    assert "k" in small.workers[1].store
    user.cancel()
    old.release()
    del old
    small.settle(held={(2, 0)})
    assert "k" not in small.scheduler.state.tasks
    new = ex.submit(tasks.node, 5, False, None, key="k", workers=[1])
    small.settle(held={(2, 0)})
    assert new.status == "finished"
    total = ex.submit(tasks.node, 100, False, None, new, workers=[2])
    small.settle()
    assert small.value(total) == 105


def test_a_key_given_anew_shares_the_task_the_cluster_still_has_else_names_a_new_one():
    small = Small(1)
    ex = Executor(cluster=small.scheduler)
    kept = ex.submit(tasks.node, 1, False, None, key="k")
    ex.fire_and_forget(kept)
    del kept
    shared = ex.submit(tasks.node, 2, False, None, key="k")  # fire_and_forget keeps "k"
    small.settle()
    assert small.value(shared) == 1
    del shared
    small.settle()
    assert "k" not in small.scheduler.state.tasks
    assert small.value(ex.submit(tasks.node, 3, False, None, key="k")) == 3  # anew
    # A dependent of a failed "j", retried once "j" names a new computation, takes that one.
    failing = ex.submit(tasks.node, 4, True, None, key="j")
    dependent = ex.submit(tasks.node, 10, False, None, failing)
    small.settle()
    assert dependent.status == "error"
    del failing
    small.settle()
    again = ex.submit(tasks.node, 6, False, None, key="j")
    assert small.value(again) == 6
    dependent.retry()
    small.settle()
    assert small.value(dependent) == 16


def test_a_retry_taken_in_after_a_retried_dependent_reset_the_same_future_still_ends_it():
    """A dependent's retry re-runs its failed input and resets the input's futures on rank
    0. The client's own retry of the input, posted before that and taken in after, must not
    hand the future back to its older reset, which nothing resolves any more."""
    small = Small(1)
    ex = Executor(cluster=small.scheduler)
    source = ex.submit(tasks.node, 1, True, None, key="s")
    dependent = ex.submit(tasks.node, 10, False, None, source)
    small.settle()
    assert source.status == dependent.status == "error"
    small.scheduler.ask = lambda item, timeout=60.0: None  # as if each call came from its own
    # thread: one waiting for rank 0 to take its retry in does not hold up the others
    dependent.retry()  # rank 0 will reset source's future when it takes this in
    source.retry()  # the client resets it now ...
    ex._cancel([source])  # ... and it ends here before rank 0 takes either retry in (a
    # cancel that waits for no answer, as a pool's or a shutdown's)
    small.settle()
    assert source.done() and dependent.done()
    assert source.status == "cancelled" and dependent.status == "cancelled"


def test_a_retried_dependent_leaves_alone_a_future_whose_submit_is_on_its_way():
    """Rank 0 resets the futures of an input it re-runs for a retried dependent. A future of
    that key whose submit rank 0 has not taken in yet (made, then cancelled at once) is not
    its to reset: taking the submit in afterwards would undo the reset and strand it."""
    small = Small(1)
    ex = Executor(cluster=small.scheduler)
    source = ex.submit(tasks.node, 1, True, None, key="s")
    first = ex.submit(tasks.node, 10, False, None, source)
    second = ex.submit(tasks.node, 20, False, None, source)
    small.settle()
    small.scheduler.ask = lambda item, timeout=60.0: None  # (as above: threads of their own)
    first.retry()
    second.retry()  # rank 0 carries out first's retry (and resets "s") when it takes this in
    again = ex.submit(tasks.node, 1, True, None, key="s")  # ... before this submit
    ex._cancel([again])  # (without waiting for rank 0, as above)
    small.settle()
    assert all(f.done() for f in (source, first, second, again))
    assert again.status == "cancelled"


def test_a_late_answer_to_an_abandoned_fetch_leaves_a_newer_scattered_copy_alone():
    """Worker 2 asks worker 1 for scattered "x" for a task that is then cancelled; "x" is
    forgotten and the same value scattered again, straight to worker 2. The old answer
    arrives after that: taking it would label worker 2's copy with the old version, and rank
    0's FREE of that version would drop worker 2's only copy while rank 0 still counts on it,
    so a task needing it there would wait forever."""
    small = Small(2)
    ex = Executor(cluster=small.scheduler)
    x = scatter_one(ex, 10, (1,), True)  # scatter() without waiting (nothing else turns loops)
    small.settle()
    t = ex.submit(tasks.node, 1, False, None, x, workers=[2])
    small.settle(held={(1, 2)})  # worker 1's DATA waits
    t.cancel()
    x.release()
    del x, t
    small.settle(held={(1, 2)})
    assert not small.scheduler.state.tasks
    again = scatter_one(ex, 10, (2,), True)
    small.settle(held={(1, 2)})
    assert again.status == "finished"
    small.settle()  # the old DATA arrives now
    assert again.key in small.workers[1].store
    u = ex.submit(tasks.node, 5, False, None, again, workers=[2])
    small.settle()
    assert small.value(u) == 15


def test_rank_0_fetching_a_key_given_anew_gets_the_new_value_not_an_old_answer():
    """Rank 0 asked for "k"; before the answer came, "k" was released, given to a new
    computation, and that one's value asked for: the old answer must not stand for it."""
    small = Small(2, Config(inline_bytes=0))  # values stay on the workers until fetched
    ex = Executor(cluster=small.scheduler)
    old = ex.submit(tasks.node, 1, False, None, key="k", workers=[1])
    small.settle()
    Rig._fetch(old)
    small.settle(held={(1, 0)})  # worker 1 answered; the DATA waits
    old.release()
    del old
    small.settle(held={(1, 0)})
    new = ex.submit(tasks.node, 5, False, None, key="k", workers=[2])
    small.settle(held={(1, 0)})
    assert new.status == "finished"
    Rig._fetch(new)
    small.settle()
    assert new.result(timeout=0) == 5


def _quick_polls_after(small: Small, *submits: Callable[[], Any]) -> bool:
    """Whether rank 0's first idle pass after sending the tasks of ``submits`` polls quickly."""
    hot: list = []
    small.scheduler.backoff.idle = lambda pending, quiet, quick: hot.append(quick)
    futures = [submit() for submit in submits]
    small.scheduler._step()  # takes the submits in and sends the tasks
    hot.clear()
    small.scheduler._step()  # nothing arrives: idle
    small.settle()
    assert all(f.done() for f in futures)
    return hot[0]


def test_rank_0_polls_quickly_only_while_a_short_task_may_answer_soon():
    """Polling every 10 us after traffic pays when a reply may come at once. While every task
    out is of a function that ran longer than that window last time (or waits for such an
    input), rank 0 would only take CPU from the tasks sharing its cores."""
    small = Small(1)
    ex = Executor(cluster=small.scheduler)
    assert _quick_polls_after(small, lambda: ex.submit(tasks.sleep, 0.05, pure=False))  # unknown
    assert not _quick_polls_after(small, lambda: ex.submit(tasks.sleep, 0.05, pure=False))
    assert _quick_polls_after(small, lambda: ex.submit(tasks.inc, 1, pure=False))  # short
    long = ex.submit(tasks.sleep, 0.05, pure=False)
    assert not _quick_polls_after(small, lambda: long, lambda: ex.submit(tasks.inc, long))
    short = ex.submit(tasks.inc, 2, pure=False)
    assert _quick_polls_after(small, lambda: short, lambda: ex.submit(tasks.inc, short))
    assert not small.scheduler.quick  # every task ended


def test_rank_0_polls_slowly_while_a_short_task_must_first_fetch_a_large_input():
    """Moving megabytes between ranks takes longer than the quick-poll window: rank 0's
    polls during the transfer would only take CPU from the two ranks moving the data."""
    small = Small(2)
    ex = Executor(cluster=small.scheduler)
    large = ex.submit(tasks.make_array, 200_000, workers=[1], pure=False)  # 1.6 MB on rank 1
    little = ex.submit(tasks.make_array, 1_000, workers=[1], pure=False)
    small.settle()

    def array_sum(a, rank):
        return lambda: ex.submit(tasks.array_sum, a, workers=[rank], pure=False)

    assert _quick_polls_after(small, array_sum(large, 1))  # at hand
    assert not _quick_polls_after(small, array_sum(large, 2))  # to fetch first
    assert _quick_polls_after(small, array_sum(little, 2))  # small to fetch
    assert not small.scheduler.quick


def test_a_callback_added_once_the_callback_thread_stopped_runs_on_the_callers_thread():
    small = Small(1)
    ex = Executor(cluster=small.scheduler)
    f = ex.submit(tasks.inc, 1, pure=False)
    small.settle()
    small.scheduler.callbacks.stop(timeout=1.0)  # as at the cluster's stop
    seen: list = []
    f.add_done_callback(lambda _: 1 / 0)  # logged
    f.add_done_callback(seen.append)
    assert seen == [f]


def test_rank_0_decides_a_cancel_that_races_with_the_task_finishing():
    """The client's future has not heard yet that its task finished when the client cancels
    it: the task is not cancelled after all (its dependents ran on its value), so cancel()
    must say False, not True."""
    small = Small(1)
    ex = Executor(cluster=small.scheduler)
    a = ex.submit(tasks.node, 1, False, None)
    b = ex.submit(tasks.node, 2, False, None, a)
    resolve = small.scheduler.registry.resolve
    small.scheduler.registry.resolve = lambda key, *rest: 0 if key == a.key else \
        resolve(key, *rest)  # a's end is on its way to its future
    small.settle()
    assert small.scheduler.state.tasks[a.key].status == "memory" and not a.done()
    assert a.cancel() is False
    assert b.status == "finished" and not a.cancelled()
