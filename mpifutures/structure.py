"""Walk and rebuild nested containers of futures (``gather``); split ``scatter``'s data."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

#: returned by a leaf function to leave that item out of its container
SKIP = object()


def walk(obj: Any, found: Callable[[Any], None], leaf: type) -> None:
    """Call ``found`` on every ``leaf`` instance; raise TypeError on any other item."""
    if isinstance(obj, leaf):
        found(obj)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for item in obj:  # leaves without a call each: gather's lists hold thousands
            if isinstance(item, leaf):
                found(item)
            else:
                walk(item, found, leaf)
    elif isinstance(obj, dict):
        for item in obj.values():
            walk(item, found, leaf)
    else:
        raise TypeError(f"gather takes futures, or lists, tuples, sets and dicts of them, "
                        f"not {type(obj).__qualname__}: {obj!r}")


def rebuild(obj: Any, leaf: type, value: Callable[[Any], Any]) -> Any:
    """The same shape as ``obj`` with each ``leaf`` replaced by ``value(leaf)``."""
    if isinstance(obj, leaf):
        return value(obj)
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [v for v in (value(i) if isinstance(i, leaf) else rebuild(i, leaf, value)
                             for i in obj) if v is not SKIP]
        if hasattr(obj, "_fields"):  # a namedtuple; one that lost items is a plain tuple
            return type(obj)(*items) if len(items) == len(obj) else tuple(items)
        return type(obj)(items)
    if isinstance(obj, dict):
        pairs = ((k, rebuild(v, leaf, value)) for k, v in obj.items())
        kept = ((k, v) for k, v in pairs if v is not SKIP)
        if isinstance(obj, defaultdict):  # its factory comes first
            return type(obj)(obj.default_factory, kept)
        return type(obj)(kept)
    return obj


def parts(data: Any) -> tuple[str, list[tuple[Any, Any]], Callable[[list], Any]]:
    """What ``scatter`` places: ``"key"``, ``"item"`` or ``"value"`` (what a position in
    ``data`` is), ``data``'s ``(position, value)`` pairs, and how to put futures back into
    ``data``'s shape. A dict keeps its keys; a list, a tuple or a namedtuple keeps its type
    (another subclass becomes a plain list or tuple); anything else is one value."""
    if isinstance(data, dict):
        keys = list(data)
        return "key", list(data.items()), lambda fs: dict(zip(keys, fs))
    if isinstance(data, (list, tuple)):
        kind = type(data)
        if isinstance(data, tuple) and hasattr(data, "_fields"):
            shape: Callable = lambda fs: kind(*fs)  # noqa: E731
        elif kind in (list, tuple):
            shape = kind
        else:
            shape = list if isinstance(data, list) else tuple
        return "item", list(enumerate(data)), shape
    return "value", [(None, data)], lambda fs: fs[0]


def position(what: str, where: Any) -> str:
    """A position that :func:`parts` gave, in words (for a message)."""
    return {"key": f"the value of key {where!r}", "item": f"item {where}"}.get(what, "the value")
