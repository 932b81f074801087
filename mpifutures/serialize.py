"""Turn values into a small pickle plus out-of-band buffers, and back.

A :class:`Payload` is what travels: ``header`` is a pickle (protocol 5) and ``buffers`` are the
raw memory of the numpy arrays and other buffer-protocol objects inside the value, taken with
``buffer_callback`` so that no array byte is copied into the pickle. The transport sends each
buffer as its own buffer-protocol MPI message and receives it into preallocated memory.

Plain ``pickle`` is tried first (it is the fastest); values it cannot handle, and values that
refer to ``__main__`` (which the workers cannot import), go through ``cloudpickle``, which is
imported only then (it costs ~12 ms of every rank's start-up).
Futures inside task arguments are pickled as *persistent ids* holding their key, so that any
future anywhere in the arguments becomes a dependency and the worker puts its value there.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import sys
import threading
from collections import OrderedDict
from typing import Any, Callable, Iterable, Mapping

from .errors import SerializationError

_PROTOCOL = 5
#: a payload's header of this many bytes or more travels as a buffer of its own
_HEADER_APART = 1 << 16


def _numpy() -> Any:
    """numpy if this process imported it (a value can only hold arrays once it has): so
    that mpifutures itself starts without paying numpy's import time.

    While another thread is still importing numpy (a task's module importing it), the
    module is already in ``sys.modules`` but half built; ``import`` then waits for it.
    """
    np = sys.modules.get("numpy")
    if np is not None and getattr(getattr(np, "__spec__", None), "_initializing", False):
        import numpy as np
    return np


_copying = threading.local()  # .made: the pickle being made holds a copy of some array


def _reduce_ndarray(a: Any) -> Any:
    # numpy pickles non-contiguous arrays in-band (bytes copied into the pickle); a contiguous
    # copy goes out-of-band instead. Object arrays hold Python objects: leave them to numpy.
    if not a.dtype.hasobject and not (a.flags.c_contiguous or a.flags.f_contiguous):
        a = _numpy().ascontiguousarray(a)
        _copying.made = True
    return a.__reduce_ex__(_PROTOCOL)


_DISPATCH = copyreg.dispatch_table.copy()


def _dispatch_table() -> dict:
    np = _numpy()
    if np is not None and np.ndarray not in _DISPATCH:
        _DISPATCH[np.ndarray] = _reduce_ndarray
    return _DISPATCH


class Payload:
    """A pickled value: ``header`` bytes plus out-of-band ``buffers``. ``copied``: some
    buffer is a copy made for the pickle, not the value's own memory (so keeping the payload
    beside the value would hold that memory twice)."""

    __slots__ = ("header", "buffers", "copied")

    def __init__(self, header: bytes, buffers: list, copied: bool = False) -> None:
        self.header = header
        self.buffers = buffers
        self.copied = copied

    @property
    def nbytes(self) -> int:
        """Bytes on the wire: the header plus every buffer."""
        if not self.buffers:
            return len(self.header)
        return len(self.header) + sum(memoryview(b).nbytes for b in self.buffers)

    def __reduce__(self) -> Any:
        # PickleBuffer wrappers make the outer (transport) pickle send these out-of-band too;
        # a large header as well (a big list, or bytes): copied into the outer pickle, it
        # took four times its size on the sender
        header = self.header
        if len(header) >= _HEADER_APART or type(header) is not bytes:  # (a view of one)
            header = pickle.PickleBuffer(header)
        if not self.buffers:  # most task arguments and results: a fifth cheaper
            return Payload, (header, [])
        return Payload, (header, [pickle.PickleBuffer(b) for b in self.buffers])


class _Pickler(pickle.Pickler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dispatch_table = _dispatch_table()


class _DepMixin:
    """Pickles futures as persistent ids (their keys) and records them."""

    future_type: type | None = None
    deps: list
    keys: dict

    def persistent_id(self, obj: Any) -> Any:
        if type(obj) is _DepMixin.future_type:
            self.deps.append(obj)
            # One string object per key: pickle's memo then writes a key passed twice the
            # same way whether one future or two futures of it carry it (a pure key must not
            # depend on which).
            return self.keys.setdefault(obj.key, obj.key)
        return None


def register_future_type(cls: type) -> None:
    """Tell the picklers which class is a future (pickled as a dependency key)."""
    _DepMixin.future_type = cls


class _ArgPickler(_DepMixin, _Pickler):
    pass


_CLOUD: dict[bool, type] = {}


def _cloud_pickler(with_deps: bool) -> type:
    """cloudpickle's pickler with out-of-band arrays (and futures as dependencies)."""
    cls = _CLOUD.get(with_deps)
    if cls is None:
        import cloudpickle

        class CloudPickler(cloudpickle.CloudPickler):
            def reducer_override(self, obj: Any) -> Any:
                np = _numpy()
                if np is not None and type(obj) is np.ndarray:
                    return _reduce_ndarray(obj)
                return super().reducer_override(obj)

        _CLOUD[False] = CloudPickler
        _CLOUD[True] = type("CloudArgPickler", (_DepMixin, CloudPickler), {})
        cls = _CLOUD[with_deps]
    return cls


def _by_value_modules() -> bool:
    """True if the program told cloudpickle to pickle some modules by value."""
    cloudpickle = sys.modules.get("cloudpickle")
    # getattr: another thread may be importing it (nothing is registered before that ends)
    registry = getattr(cloudpickle, "list_registry_pickle_by_value", None)
    return bool(registry and registry())


def _run_pickler(cls: type, obj: Any) -> tuple[Payload, list]:
    buffers: list = []
    out = io.BytesIO()
    pickler = cls(out, protocol=_PROTOCOL, buffer_callback=buffers.append)
    pickler.deps, pickler.keys = [], {}
    _copying.made = False
    pickler.dump(obj)
    return Payload(out.getvalue(), [b.raw() for b in buffers] if buffers else buffers,
                   _copying.made), pickler.deps


def _dumps(obj: Any, fast: type, with_deps: bool) -> tuple[Payload, list]:
    if not _by_value_modules():
        try:
            payload, deps = _run_pickler(fast, obj)
            if b"__main__" not in payload.header:
                return payload, deps
        except Exception:  # noqa: BLE001 - any failure of plain pickle means: try cloudpickle
            pass
    return _run_pickler(_cloud_pickler(with_deps), obj)


def dumps(value: Any) -> Payload:
    """Serialize a value; raise :class:`SerializationError` naming its type on failure."""
    if type(value) in _SCALAR_TYPES:  # most small results: the C pickler alone
        return Payload(pickle.dumps(value, _PROTOCOL), [])
    try:
        return _dumps(value, _Pickler, False)[0]  # a future inside raises its own TypeError
    except Exception as exc:
        raise SerializationError(
            f"cannot pickle a value of type {type(value).__qualname__}: {exc}"
        ) from exc


def loads(payload: Payload, deps: Mapping[str, Any] | None = None) -> Any:
    """Rebuild a value; futures inside it are replaced by ``deps[key]``."""
    if not deps and not payload.buffers:
        return pickle.loads(payload.header)  # nothing to substitute or to place out-of-band
    unpickler = pickle.Unpickler(io.BytesIO(payload.header), buffers=payload.buffers)
    if deps is not None:
        unpickler.persistent_load = deps.__getitem__
    return unpickler.load()


def unpickled(payload: Payload, what: str) -> Any:
    """``loads(payload)`` on rank 0, where a failure must reach the caller as an error:
    even ``SystemExit`` from a reconstructor, which would otherwise end the script (only a
    ``KeyboardInterrupt``, most likely the user's Ctrl-C, passes through)."""
    try:
        return loads(payload)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - see above
        raise SerializationError(f"{what} arrived on rank 0 but failed to unpickle: {exc!r}. "
                                 "Make sure rank 0 can import what it needs.") from exc


def dumps_args(args: tuple, kwargs: dict) -> tuple[Payload, list]:
    """Serialize task arguments; return the payload and the futures found inside them.

    The memory of arrays among them is copied: the arguments are those of the moment of the
    call, as with any pickle, whatever the caller writes into the arrays before they are sent.

    Raises:
        SerializationError: an argument cannot be pickled; the message names its position
            (or keyword) and type.
    """
    try:
        kind = _kind(args, kwargs)
        if kind == _SCALARS:  # the C pickler alone: no futures, no arrays, no __main__
            return Payload(pickle.dumps((args, kwargs), _PROTOCOL), []), []
        if kind == _ATOMIC:
            payload, deps = _dumps((args, kwargs), _Pickler, False)[0], []
        else:
            payload, deps = _dumps((args, kwargs), _ArgPickler, True)
        if payload.buffers:
            payload.buffers = [bytearray(b) for b in payload.buffers]  # (see above)
        return payload, deps
    except Exception as exc:
        where, culprit = _find_unpicklable(args, kwargs)
        raise SerializationError(
            f"{where} (of type {type(culprit).__qualname__}) cannot be pickled, so it cannot "
            f"be sent to a worker: {exc}. Pass data that pickles, or create the object "
            "inside the task."
        ) from exc


_SCALAR_TYPES = frozenset({int, float, str, bytes, bool, type(None), complex})
_SCALARS, _ATOMIC, _ANY = 0, 1, 2


def _kind(args: tuple, kwargs: dict) -> int:
    """_SCALARS: plain scalars only; _ATOMIC: also arrays (no future can hide); else _ANY."""
    kind = _SCALARS
    for values in (args, kwargs.values()):
        for v in values:
            t = type(v)
            if t in _SCALAR_TYPES:
                continue
            np = _numpy()
            if np is not None and (t is np.float64 or t is np.int64 or (
                    t is np.ndarray and not v.dtype.hasobject)):  # objects may hold futures
                kind = _ATOMIC
            else:
                return _ANY
    return kind


def _find_unpicklable(args: tuple, kwargs: dict) -> tuple[str, Any]:
    named: Iterable[tuple[str, Any]] = [
        *((f"argument {i}", a) for i, a in enumerate(args)),
        *((f"keyword argument {k!r}", v) for k, v in kwargs.items()),
    ]
    for where, value in named:
        try:
            _dumps(value, _ArgPickler, True)
        except Exception:  # noqa: BLE001 - this is the search for the failing argument
            return where, value
    return "an argument", (args, kwargs)


def _pickle_function(fn: Callable) -> tuple[bytes, bool]:
    """``(pickle, by_value)``: by reference with plain pickle when the workers can import
    ``fn``, else by value with cloudpickle."""
    if not _by_value_modules():
        try:
            data = pickle.dumps(fn, protocol=_PROTOCOL)
            if b"__main__" not in data:
                return data, False
        except Exception:  # noqa: BLE001 - lambdas, closures, ...: cloudpickle handles them
            pass
    import cloudpickle

    return cloudpickle.dumps(fn, protocol=_PROTOCOL), True


_MISSING = object()


class _Captured:
    """What a by-value pickle of a function took along that the program can rebind later:
    the globals its code reads, its defaults and closure cells, and the same of the functions
    and classes of its module that it reaches (a helper it calls, a class whose methods it
    uses, the function a decorator wraps). ``current()``: are all of them still the same
    objects? A rebound name makes the cached pickle stale. A change inside an object would
    not show: ``fixed`` is False when any of them could change inside (a dict, a list, an
    array, an instance), and then the function is not cached at all."""

    __slots__ = ("names", "cells", "defaults", "fixed")

    def __init__(self, fn: Any) -> None:
        import dis

        self.names: list = []  # (namespace, name, value)
        self.cells: list = []  # (cell, contents)
        self.defaults: list = []  # (function, __defaults__, __kwdefaults__)
        self.fixed = True
        module, todo, seen = fn.__module__, [fn], set()
        while todo:
            f = todo.pop()
            if id(f) in seen:
                continue
            seen.add(id(f))
            if isinstance(f, type):  # a class of the script: its attributes and methods
                for name, value in vars(f).items():
                    self.names.append((vars(f), name, value))
                    if name.startswith("__") and name.endswith("__"):
                        continue  # the class's own machinery (__dict__, __module__, ...)
                    self.fixed = self.fixed and _fixed(value)
                    value = getattr(value, "__func__", getattr(value, "fget", value))
                    if type(value) is type(fn):
                        todo.append(value)
                continue
            self.defaults.append((f, f.__defaults__, f.__kwdefaults__))
            for value in (*(f.__defaults__ or ()), *(f.__kwdefaults__ or {}).values()):
                self.fixed = self.fixed and _fixed(value)
            space = f.__globals__
            for name in _global_names(f.__code__, dis):
                value = space.get(name, _MISSING)
                self.names.append((space, name, value))
                self.fixed = self.fixed and _fixed(value)
                if (type(value) is type(fn) or isinstance(value, type)) and \
                        getattr(value, "__module__", None) == module:
                    todo.append(value)
            for cell in f.__closure__ or ():
                value = _cell(cell)
                self.cells.append((cell, value))
                self.fixed = self.fixed and _fixed(value)
                if type(value) is type(fn):
                    todo.append(value)

    def current(self) -> bool:
        for f, defaults, kwdefaults in self.defaults:
            if f.__defaults__ is not defaults or f.__kwdefaults__ is not kwdefaults:
                return False
        for space, name, value in self.names:
            if space.get(name, _MISSING) is not value:
                return False
        for cell, value in self.cells:
            if _cell(cell) is not value:
                return False
        return True


def _fixed(value: Any) -> bool:
    """True if ``value`` cannot change without being replaced (a number, a string, a
    module, a function or class, a tuple of such)."""
    if type(value) in (tuple, frozenset):
        return all(_fixed(v) for v in value)
    return value is _MISSING or type(value) in _SCALAR_TYPES or isinstance(value, _FIXED_TYPES)


def _global_names(code: Any, dis: Any) -> set[str]:
    """The global names ``code`` (and the code nested in it) reads or writes."""
    names: set[str] = set()
    codes = [code]
    while codes:
        c = codes.pop()
        names.update(i.argval for i in dis.get_instructions(c)
                     if i.opname in ("LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL"))
        codes.extend(k for k in c.co_consts if type(k) is type(code))
    return names


def _cell(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # not filled yet
        return _MISSING


_FIXED_TYPES = (type, type(sys), type(len), type(_cell), type(len.__call__), range,
                staticmethod, classmethod, property)


class _FunctionCache:
    """Bounded LRU cache so that a loop of submits pickles its function once.

    Only what cannot change behind the cache is kept: a function, class or builtin pickled
    by reference, or a plain function pickled by value whose captured globals, defaults and
    closure are unchanged when it is submitted again. Other callables (objects with a
    ``__call__``, bound methods, partials) carry state that may change: pickled each time.
    """

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._by_id: OrderedDict[int, tuple[Any, str, bytes, Any]] = OrderedDict()
        self._by_token: OrderedDict[str, Callable] = OrderedDict()

    def dumps(self, fn: Callable) -> tuple[str, bytes]:
        hit = self._by_id.get(id(fn))  # a dict read is atomic; eviction is first-in first-out
        if hit is not None and hit[0] is fn and (hit[3] is None or hit[3].current()):
            return hit[1], hit[2]
        try:
            data, by_value = _pickle_function(fn)
        except Exception as exc:
            raise SerializationError(
                f"the function {fn!r} cannot be pickled: {exc}. Define it at module level or "
                "avoid capturing unpicklable objects in its closure."
            ) from exc
        import hashlib

        token = hashlib.blake2b(data, digest_size=10).hexdigest()
        kind = type(fn)
        if kind.__name__ == "function" and kind.__module__ == "builtins":
            check = _Captured(fn) if by_value else None
            if check is not None and not check.fixed:
                return token, data  # reads something that may change inside: not cached
        elif not by_value and (isinstance(fn, type) or kind.__name__ in (
                "builtin_function_or_method", "method_descriptor")):
            check = None
        else:
            return token, data
        with self._lock:
            self._by_id[id(fn)] = (fn, token, data, check)  # fn kept: its id stays unique
            if len(self._by_id) > self.size:
                self._by_id.popitem(last=False)
        return token, data

    def loads(self, token: str, data: bytes) -> Callable:
        fn = self._by_token.get(token)
        if fn is not None:
            return fn
        fn = pickle.loads(data)
        with self._lock:
            self._by_token[token] = fn
            if len(self._by_token) > self.size:
                self._by_token.popitem(last=False)
        return fn


functions = _FunctionCache()


def value_nbytes(value: Any, payload: Payload | None = None) -> int:
    """Approximate memory held by a value (used to place tasks near their inputs)."""
    np = _numpy()
    if np is not None and isinstance(value, np.ndarray) and not value.dtype.hasobject:
        return int(value.nbytes)
    if payload is not None:
        return payload.nbytes
    if isinstance(value, (bytes, bytearray, memoryview)):
        return memoryview(value).nbytes
    return 64
