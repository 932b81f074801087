"""Random task graphs end exactly as a serial evaluation says: with failures and cancellations,
and with arrays large enough to be received into pooled memory.

Part of the behaviour suite (in-process and under mpiexec).
"""

from __future__ import annotations

import concurrent.futures as cf
import gc
import time

from hypothesis import HealthCheck, Phase, assume, given, settings, strategies as st

from tests import tasks


def draw_dag(draw, size, node):
    """``(inputs, *node)`` for each of ``size`` nodes; inputs: up to 3 earlier nodes."""
    nodes = []
    for i in range(draw(size)):
        deps = draw(st.lists(st.integers(0, i - 1), max_size=3, unique=True)) if i else []
        nodes.append((deps, *draw(node)))
    return nodes


@st.composite
def graphs(draw):  # (inputs, fails, cancelled)
    return draw_dag(draw, st.integers(1, 500), st.tuples(
        st.integers(0, 19).map(lambda x: x == 0), st.integers(0, 29).map(lambda x: x == 0)))


@st.composite
def array_graphs(draw):  # (inputs, size step, worker index or anywhere)
    return draw_dag(draw, st.integers(1, 40),
                    st.tuples(st.integers(0, 20), st.sampled_from([None, 0, 1])))


def serial(nodes):
    """What each node must end as: ("finished", value), ("error", {messages}), ("cancelled",)."""
    out = []
    for i, (deps, fails, cancelled) in enumerate(nodes):
        ins = [out[d] for d in deps]
        if cancelled or any(s[0] == "cancelled" for s in ins):
            out.append(("cancelled",))  # cancels land before anything runs
        elif any(s[0] == "error" for s in ins):  # never runs: fails as one of its inputs
            out.append(("error", set().union(*(s[1] for s in ins if s[0] == "error"))))
        elif fails:
            out.append(("error", {f"node {i} failed"}))
        else:
            out.append(("finished", i + sum(s[1] for s in ins)))
    return out


# No shrinking: a failing 500-task graph would take minutes to shrink; it is printed whole.
@settings(max_examples=12, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(nodes=graphs())
def test_random_graphs_match_a_serial_evaluation(executor, nodes):
    gate = executor.submit(tasks.sleep, 0.5, pure=False)  # holds every task until cancels land
    futures = []
    for i, (deps, fails, _) in enumerate(nodes):
        futures.append(executor.submit(tasks.node, i, fails, gate, *[futures[d] for d in deps],
                                       pure=False))
    for f, (_, _, cancelled) in zip(futures, nodes):
        if cancelled:
            f.cancel()
    assume(not gate.done())  # the cancels must land before any node can run
    cf.wait(futures, timeout=120)
    for i, (f, want) in enumerate(zip(futures, serial(nodes))):
        assert f.status == want[0], (i, f, want)
        if want[0] == "finished":
            assert f.result() == want[1]
        elif want[0] == "error":
            assert str(f.exception()) in want[1]
    keys = {f.key for f in futures} | {gate.key}
    del futures, gate, f
    gc.collect()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        left = set().union(*executor.run(tasks.stored_keys).values()) & keys
        if not left:
            break
        time.sleep(0.05)
    assert not left, f"{len(left)} keys still held by workers"


MB_OF_FLOATS = 1 << 17  # arrays from 1 MB up: received into pooled memory


@settings(max_examples=6, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(nodes=array_graphs())
def test_random_graphs_of_arrays_keep_every_value(executor, nodes):
    # Arrays of similar sizes, moved between workers and all gathered to rank 0 side by side:
    # memory reused while an array still lives shows as a torn input or a wrong value.
    workers = sorted(executor.workers)
    futures, want = [], []
    for i, (deps, step, where) in enumerate(nodes):
        pin = None if where is None else [workers[where % len(workers)]]
        futures.append(executor.submit(tasks.array_node, i, MB_OF_FLOATS + 1000 * step,
                                       *[futures[d] for d in deps], workers=pin, pure=False))
        want.append((i + sum(want[d] for d in deps)) % 1_000_003)
    got = executor.gather(futures)
    for i, (array, value, (_, step, _)) in enumerate(zip(got, want, nodes)):
        assert array.shape == (MB_OF_FLOATS + 1000 * step,), i
        assert array.min() == array.max() == value, (i, array.min(), array.max(), value)
