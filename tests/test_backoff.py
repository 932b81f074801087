"""How polling loops sleep: short right after traffic, capped, longer once idle or quiet."""

from __future__ import annotations

import gc
import threading
import time

from mpifutures.backoff import QUIET_AFTER, QUIET_CAP, Backoff, Wakeup


def grown(backoff: Backoff, idle_for: float, quiet: bool = False, rounds: int = 40,
          hot: bool = True) -> float:
    """The sleep the backoff settles on after ``idle_for`` seconds without traffic."""
    backoff._last_activity = time.monotonic() - idle_for
    for _ in range(rounds):  # "work is pending": idle() returns at once but grows the delay
        backoff.idle(lambda: True, quiet=quiet, hot=hot)
    return backoff._delay


def test_sleeps_grow_to_the_cap_then_in_proportion_to_the_idle_time():
    b = Backoff(cap=0.001, idle_cap=0.05, idle_after=0.25)
    assert grown(b, 0.0005) <= 1e-5 * 1.01  # hot: right after traffic the sleep stays shortest
    assert grown(Backoff(0.001, 0.05, 0.25), 0.2) == 0.001  # not yet idle_after
    assert abs(grown(Backoff(0.001, 0.05, 0.25), 0.4) - 0.02) < 0.001  # 1/20 of 0.4 s
    assert grown(Backoff(0.001, 0.05, 0.25), 3.0) == 0.05  # never beyond the idle cap


def exchange(backoff: Backoff, waited: float) -> None:
    """A wait of ``waited`` seconds that a message from another rank ended."""
    backoff._last_activity = time.monotonic() - waited
    backoff.idle()  # one empty poll's sleep (at most the cap), then the message arrives
    backoff.reset()


def test_the_hot_phase_is_skipped_while_waits_last_longer_than_it():
    b = Backoff(cap=0.001, idle_cap=0.05, idle_after=0.25, hot=0.002)
    for _ in range(10):
        exchange(b, 0.0002)  # a request/response pace: answers come within the hot phase
    assert grown(b, 0.0005) <= 1e-5 * 1.01  # hot: the sleep stays shortest
    for _ in range(10):
        exchange(b, 0.005)  # tasks of milliseconds: polling hot would only burn CPU
    assert grown(b, 0.0005, rounds=3) >= 8e-5  # doubling from the first empty poll
    for _ in range(4):
        exchange(b, 0.0002)  # the pace is back: after a few quick exchanges, hot again
    assert grown(b, 0.0005) <= 1e-5 * 1.01


def test_a_loop_told_no_reply_is_due_soon_skips_the_hot_phase():
    b = Backoff(cap=0.001, idle_cap=0.05, idle_after=0.25, hot=0.002)
    for _ in range(10):
        exchange(b, 0.0002)  # answers come within the hot phase...
    assert grown(b, 0.0005, rounds=3, hot=False) >= 8e-5  # ...but the caller says not now
    b.reset()
    assert grown(b, 0.0005) <= 1e-5 * 1.01  # the estimate is untouched: hot again


def test_a_loop_skipping_the_hot_phase_starts_its_sleeps_at_a_quarter_of_the_cap():
    """Doubling from 10 us woke such a loop seven times in the first 1.3 ms after every
    message (~50 us of CPU each on this machine), where nothing was due."""
    b = Backoff(cap=0.001, idle_cap=0.05, idle_after=0.25, hot=0.002)
    assert [grown(b, 0.0, rounds=1, hot=False) for _ in range(4)] == [
        0.00025, 0.0005, 0.001, 0.001]
    b.reset()
    assert grown(b, 0.0, rounds=3) == 1e-5  # hot: the shortest, as before


def test_waits_another_thread_of_the_rank_ends_do_not_count():
    """A submit or a finished task wakes the loop at once, however it polls: the user's
    script pausing between submits must not turn off quick polls for the workers' replies."""
    b = Backoff(cap=0.001, idle_cap=0.05, idle_after=0.25, hot=0.002)
    for _ in range(10):
        b._last_activity = time.monotonic() - 0.005
        b.wake.set()
        b.idle()  # woken by the rank's own thread after 5 ms
        b._last_activity = time.monotonic() - 0.005
        b.idle(lambda: True)  # work queued by the rank's own thread
        b.reset()
    assert b.typical_wait == 0.0
    assert grown(b, 0.0005) <= 1e-5 * 1.01


def test_a_wait_is_counted_up_to_the_last_empty_poll():
    """The sleep that overshot the message's arrival is not part of the wait, or the
    estimate would feed on its own longer sleeps and never come back."""
    b = Backoff(cap=0.001, idle_cap=0.05, idle_after=0.25, hot=0.002)
    b.typical_wait = 0.004  # after long waits: no hot phase, sleeps doubling to 1 ms
    for _ in range(6):
        b._last_activity = time.monotonic() - 0.0012
        b._delay = 0.001
        b.idle()  # the last empty poll came 1.2 ms in; this sleep ends ~1 ms later
        b.reset()
    assert b.typical_wait < 0.002
    assert grown(b, 0.0005) <= 1e-5 * 1.01


def test_one_long_pause_leaves_the_hot_phase_on():
    b = Backoff(cap=0.001, idle_cap=0.05, idle_after=0.25, hot=0.002)
    exchange(b, 60.0)  # a minute at the prompt counts as two hot phases at most
    assert grown(b, 0.0005) <= 1e-5 * 1.01
    exchange(b, 60.0)
    exchange(b, 60.0)  # three long waits in a row: hot polling would not have paid
    assert grown(b, 0.0005, rounds=3) >= 8e-5


def test_quiet_loops_sleep_longer_only_once_idle():
    assert grown(Backoff(0.001, 0.05, 0.25), QUIET_AFTER * 1.5, quiet=True) == QUIET_CAP
    assert grown(Backoff(0.001, 0.05, 0.25), 0.01, quiet=True) == 0.001


def test_wakeup_is_consumed_by_the_wait_it_ends():
    w = Wakeup()
    assert not w.wait(0.001) and not w.is_set()
    w.set()
    w.set()  # setting twice is one wake-up, not an error
    assert w.is_set()
    assert w.wait(10.0)
    assert not w.is_set() and not w.wait(0.001)


def test_wake_ends_a_long_sleep_at_once():
    b = Backoff(cap=0.001, idle_cap=QUIET_CAP, idle_after=0.0)
    b._delay = QUIET_CAP
    threading.Timer(0.05, b.wake.set).start()
    start = time.monotonic()
    b.idle(quiet=True)
    assert time.monotonic() - start < QUIET_CAP / 2


class WatchedWakeup(Wakeup):
    """A wake-up signal that shows how long the sleep in progress may last."""

    __slots__ = ("sleeping",)

    def __init__(self) -> None:
        super().__init__()
        self.sleeping = 0.0

    def wait(self, timeout: float) -> bool:
        self.sleeping = timeout
        try:
            return super().wait(timeout)
        finally:
            self.sleeping = 0.0


def test_a_collected_future_wakes_a_quiet_rank0_to_free_its_data(monkeypatch):
    """Rank 0 sleeps long while nobody owes it a message; a future dying must still free
    its data on the worker at once, not after the sleep."""
    from mpifutures import Executor, backoff
    from mpifutures.local import LocalCluster
    from tests import tasks

    def wait_for(predicate, timeout):
        deadline = time.monotonic() + timeout
        while not predicate() and time.monotonic() < deadline:
            time.sleep(0.01)
        return predicate()

    monkeypatch.setattr(backoff, "QUIET_CAP", 60.0)  # without the wake-up: up to 60 s late
    with LocalCluster(1) as local:
        sched = local.scheduler
        sched.backoff.wake = sched.t.wake = watched = WatchedWakeup()
        ex = Executor(cluster=sched)
        future = ex.submit(tasks.make_array, 1000, pure=False)
        future.result(10)
        key, worker = future.key, local.workers[0]
        assert key in worker.store
        assert wait_for(lambda: watched.sleeping > 0.1, 10), "rank 0 never became quiet"
        sched.backoff._delay = 30.0  # its next sleep lasts 30 to 60 s
        assert wait_for(lambda: watched.sleeping >= 30.0, 10)
        del future
        gc.collect()
        assert wait_for(lambda: key not in worker.store, 2.0)
        ex.shutdown()
