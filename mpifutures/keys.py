"""Task keys: ``"<function name>-<token>"``.

``pure=True`` keys hash the function's pickle and the arguments' pickle and buffers, so equal
submits share one task and one result. ``pure=False`` keys are unique within the process.
"""

from __future__ import annotations

import collections.abc
import itertools
import os
from typing import Any, Callable, Iterator, Optional, Sequence, Union

from .serialize import Payload

_unique = itertools.count()
_PROCESS = os.urandom(4).hex()


def prefix(fn: Callable) -> str:
    """A readable name for tasks of ``fn`` (shown in keys, progress and reports)."""
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return "lambda" if name == "<lambda>" else name.replace("-", "_")


def pure_key(name: str, fn_token: str, args: Payload) -> str:
    """A deterministic key ``name-<hash>`` from the function's pickle token and the
    arguments' payload."""
    return f"{name}-{_digest(fn_token.encode(), args)}"


def data_key(name: str, payload: Payload) -> str:
    """A deterministic key for scattered data: equal values get equal keys."""
    return f"{name}-{_digest(b'data', payload)}"


def _digest(first: bytes, payload: Payload) -> str:
    import hashlib  # here: pure keys are the only user, and hashlib costs ~3 ms at start-up

    h = hashlib.blake2b(first, digest_size=16)
    h.update(payload.header)
    for buf in payload.buffers:
        h.update(buf)
    return h.hexdigest()


def unique_key(fn: Any) -> str:
    """A key no other task of this process has."""
    name = prefix(fn) if callable(fn) else str(fn)
    return f"{name}-{_PROCESS}{next(_unique):x}"


def given(key: Any, inputs: Sequence[str] = ()) -> str:
    """A key the user gave, as a plain ``str``: a subclass (an enum member, say) would
    travel to workers that cannot import its class. ``inputs``: the keys of the task's
    inputs, which must not include its own."""
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, not {type(key).__qualname__}: {key!r}")
    if not key:
        raise ValueError("key must not be empty")
    key = key if type(key) is str else str.__str__(key)
    if key in inputs:
        raise ValueError(f"task {key!r} would wait for its own result: an input is a future "
                         "of the same key; give the new task a key of its own")
    return key


class Prefix(str):
    """A key prefix given to ``map``: the tasks' keys are made from it."""


_REPEATED = "map got the same key twice; give each task its own key"


def map_keys(key: Union[str, Sequence[str], None],
             tasks: Optional[int] = None) -> Iterator[Optional[str]]:
    """The keys of a ``map``'s tasks, one per task: None (made from each call), a
    :class:`Prefix`, or the given keys, checked to be all different (and, if the number of
    ``tasks`` is known, to be one per task)."""
    if key is None:
        return itertools.repeat(None)
    if isinstance(key, str):  # a prefix: each task's key is the prefix and a token
        return itertools.repeat(Prefix(given(key)))
    if isinstance(key, (bytes, bytearray)):  # (iterable, but of ints)
        raise TypeError(f"key must be a str (a prefix) or a list of str keys, not {key!r}")
    if tasks is None and isinstance(key, collections.abc.Iterator):  # a lazy map: taken as
        return _all_different(key)  # it goes (it may be endless)
    try:
        keys = list(key)
        repeated = len(set(keys)) != len(keys)
    except TypeError:
        raise TypeError(f"key must be a str (a prefix) or a list of str keys, not "
                        f"{key!r}") from None
    if repeated:
        raise ValueError(_REPEATED)
    if tasks is not None and len(keys) != tasks:
        raise ValueError(f"map got {len(keys)} keys for {tasks} tasks; give one key per task")
    return iter(keys)


def _all_different(keys: Iterator[str]) -> Iterator[str]:
    seen: set[str] = set()
    for key in keys:
        if not isinstance(key, str):
            raise TypeError(f"map's keys must be str, not {type(key).__qualname__}: {key!r}")
        if key in seen:
            raise ValueError(_REPEATED)
        seen.add(key)
        yield key
