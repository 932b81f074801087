"""Checks of the scheduling options that submit, map and scatter take (at the call site)."""

from __future__ import annotations

import operator
import sys
from typing import Any, Collection

DEFAULT_OPTIONS = {"workers": None, "loose": False, "priority": 0, "retries": 0}  # read only


def task_options(workers: Any, loose: bool, priority: Any, retries: Any,
                 valid: Collection[int]) -> dict:
    """The options of a submit, checked; ``valid``: the worker ranks.

    Raises:
        TypeError, ValueError: an option of the wrong type, or out of range.
    """
    if workers is None and loose is False and priority == 0 and retries == 0 \
            and type(priority) is int and type(retries) is int:
        return DEFAULT_OPTIONS  # most submits: skip the checks and the new dict
    if workers is not None:
        workers = ranks(workers)
        bad = [w for w in workers if w not in valid]
        if bad or not workers:
            raise ValueError(f"workers={list(workers)} names no worker rank; the workers "
                             f"are ranks {list(valid)}")
    priority, retries = integer("priority", priority), integer("retries", retries)
    if retries < 0:
        raise ValueError(f"retries must be 0 or more, not {retries}")
    return {"workers": workers, "loose": flag("allow_other_workers", loose), "priority": priority,
            "retries": retries}


def integer(name: str, value: Any) -> int:
    """``value`` as an int (numpy integers too); TypeError for anything else, bools included."""
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, not {value!r}") from None


def flag(name: str, value: Any) -> bool:
    """``value`` as a bool (numpy's too); TypeError for anything else: a string such as
    ``"no"`` would be true."""
    np = sys.modules.get("numpy")  # (not imported for this: it costs rank 0 ~0.1 s to start)
    if isinstance(value, bool) or (np is not None and isinstance(value, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, not {value!r}")


def ranks(workers: Any) -> tuple[int, ...]:
    """``workers=`` as a tuple of ranks: one rank or an iterable of them."""
    try:
        return (integer("workers", workers),)
    except TypeError:
        pass
    try:
        if isinstance(workers, (str, bytes)):
            raise TypeError
        return tuple(integer("workers", w) for w in workers)
    except TypeError:
        raise TypeError(f"workers must be a worker rank or a list of ranks (ints), not "
                        f"{workers!r}") from None
