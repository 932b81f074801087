"""What the scheduler knows of one key: :class:`TaskState`, and the set helpers it uses.

Most of a task's sets stay empty, so they all start as one shared empty frozenset (``NONE``)
and become real sets only when :func:`with_item` first adds to one.
"""

from __future__ import annotations

from typing import AbstractSet, Any, Mapping, Optional

#: the states a task does not leave (until it is retried or forgotten)
ENDED = ("memory", "erred", "cancelled")
NONE: frozenset = frozenset()
#: A task that must first fetch more than this from other ranks is not due soon: moving
#: 1 MiB takes a good part of rank 0's quick-poll window even between cores of one machine.
SOON_FETCH_BYTES = 1 << 20


def with_item(items: AbstractSet, item: Any) -> set:
    """``items`` with ``item`` added: the shared empty frozenset becomes a new set."""
    if items is NONE:
        return {item}
    items.add(item)  # type: ignore[attr-defined]
    return items  # type: ignore[return-value]


def without_item(items: AbstractSet, item: Any) -> None:
    if item in items:  # then it is a real set (only empty ones are shared)
        items.discard(item)  # type: ignore[attr-defined]


class TaskState:
    """Everything the scheduler knows of one key (written out by hand, not a dataclass: see
    :mod:`~mpifutures.events`)."""

    __slots__ = ("key", "spec", "deps", "seq", "priority", "workers", "loose", "retries",
                 "status", "waiting_on", "dependents", "clients", "keep", "worker", "holders",
                 "expected", "nbytes", "error", "attempt", "copy", "first_copy", "recalled",
                 "blocker")

    def __init__(self, key: str, spec: Any, deps: tuple[str, ...], seq: int, priority: int = 0,
                 workers: Optional[tuple[int, ...]] = None, loose: bool = False,
                 retries: int = 0) -> None:
        self.key, self.spec, self.deps, self.seq = key, spec, deps, seq
        self.priority, self.workers, self.loose, self.retries = priority, workers, loose, retries
        self.status = "waiting"
        # The sets start as the shared empty frozenset (most stay empty) and are made by with_item.
        self.waiting_on: AbstractSet[str] = NONE
        self.dependents: AbstractSet[str] = NONE
        self.clients: AbstractSet[int] = NONE
        self.keep = False
        self.worker: Optional[int] = None
        self.holders: AbstractSet[int] = NONE
        self.expected: AbstractSet[int] = NONE  # scatter copies not yet confirmed
        self.nbytes = 0
        self.error: Any = None
        self.attempt = 0  # the number of its latest dispatch; outcomes of older ones are stale
        self.recalled = False  # its worker, stalled, was asked to give this dispatch back
        self.blocker: tuple[str, ...] = ()  # the inputs that kept it from being sent early
        # in memory: the versions of its current data run from first_copy to copy (scatters
        # of the same value may add newer copies; a computed value has one version)
        self.copy = self.first_copy = 0

    @property
    def rerunnable(self) -> bool:
        """Failed or cancelled, with the spec a retry runs again (scattered data has none)."""
        return self.status in ("erred", "cancelled") and self.spec is not None

    def __repr__(self) -> str:
        return (f"TaskState({self.key!r}, {self.status}, worker={self.worker}, "
                f"holders={set(self.holders)}, waiting_on={set(self.waiting_on)})")


def inputs_at_hand(tasks: Mapping[str, TaskState], deps: Any, worker: int,
                   quick: AbstractSet[str]) -> bool:
    """Whether the inputs ``deps`` (``(key, holder, version)``) of a task sent to ``worker``
    let it start soon: each is computed or in ``quick`` (tasks due soon), and those held on
    other ranks total at most :data:`SOON_FETCH_BYTES`."""
    far = 0
    for key, holder, _ in deps:
        if key in quick:
            continue
        task = tasks.get(key)  # (a later event of the batch may have forgotten it)
        if task is None or task.status != "memory":
            return False  # a task sent early waits for its input
        if holder != worker:
            far += task.nbytes
    return far <= SOON_FETCH_BYTES


def rerun_chain(tasks: Mapping[str, TaskState], task: TaskState) -> list[TaskState]:
    """What a retry of ``task`` re-runs: it and the failed or cancelled tasks linked to it
    through such tasks (the inputs it needs, the dependents that ended with it, their other
    ended inputs...), each after its inputs, so that none is left failed by an error that is
    now stale. A released task is not there to re-run."""
    chain, todo = {task.key: task}, [task]
    while todo:
        t = todo.pop()
        for k in (*t.deps, *t.dependents):
            other = tasks.get(k)
            if other is not None and k not in chain and other.rerunnable:
                chain[k] = other
                todo.append(other)
    order: list[TaskState] = []
    seen: set[str] = set()
    for first in chain.values():  # depth first over inputs: each after those it needs
        if first.key in seen:
            continue
        seen.add(first.key)
        stack, path = [(first, iter(first.deps))], {first.key}
        while stack:
            t, keys = stack[-1]
            for k in keys:
                if k in path:  # only a key given again to a new computation can do this
                    raise ValueError(
                        f"retrying {task.key!r} would make {k!r} wait for its own result: "
                        f"{k!r} is among its own inputs, through a key= given again to a "
                        "new computation. Submit the work again with keys of its own.")
                if k in chain and k not in seen:
                    seen.add(k)
                    path.add(k)
                    stack.append((chain[k], iter(chain[k].deps)))
                    break
            else:
                stack.pop()
                path.discard(t.key)
                order.append(t)
    return order
