"""Checks of the scheduling options that submit, map and scatter take (at the call site)."""

from __future__ import annotations

import operator
from typing import Any


def integer(name: str, value: Any) -> int:
    """``value`` as an int (numpy integers too); TypeError for anything else, bools included."""
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, not {value!r}") from None


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
