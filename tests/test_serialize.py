"""Serialization and keys, without MPI: arrays travel out-of-band, never inside the pickle."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest

from mpifutures import keys
from mpifutures.errors import SerializationError
from mpifutures.serialize import Payload, dumps, dumps_args, functions, loads
from mpifutures.transport import pack, unpack


def wire(payload: Payload) -> Payload:
    """Send a payload through the transport's packing, copying buffers as a network would."""
    header, buffers = pack([payload])
    return unpack(header, [bytearray(b.raw()) for b in buffers])[0]


ARRAYS = {
    "contiguous": np.arange(1000, dtype=np.float64),
    "non-contiguous": np.arange(200.0).reshape(10, 20)[:, ::3],
    "fortran": np.asfortranarray(np.ones((30, 40))),
    "0-d": np.array(3.25),
    "structured": np.array([(1, 2.0), (3, 4.0)] * 50, dtype=[("a", "i4"), ("b", "f8")]),
    "empty": np.empty((0, 3)),
}


@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_arrays_go_out_of_band_and_come_back_equal_and_writable(name):
    a = ARRAYS[name]
    payload = dumps(a)
    assert len(payload.header) < 400, "array bytes were copied into the pickle"
    out = loads(wire(payload))
    np.testing.assert_array_equal(out, a)
    assert out.dtype == a.dtype and out.shape == a.shape
    assert out.flags.writeable


def test_object_arrays_and_nested_containers():
    value = {"objs": np.array([1, "a", None], dtype=object), "t": (b"x" * 10, [1.5, {2}]),
             "arrays": [np.ones(100), np.zeros(5, dtype=np.int8)]}
    out = loads(wire(dumps(value)))
    assert out["t"] == value["t"] and list(out["objs"]) == [1, "a", None]
    np.testing.assert_array_equal(out["arrays"][0], np.ones(100))
    assert len(dumps(value).buffers) == 2  # the two numeric arrays, out-of-band


def test_bytes_like_values():
    for value in (b"abc" * 1000, bytearray(b"xyz" * 10), memoryview(b"q" * 50).tobytes()):
        assert loads(wire(dumps(value))) == value


def test_an_array_pickle_buffer_is_never_copied_when_packing():
    a = np.ones(10_000)
    payload = dumps(a)
    header, buffers = pack([payload])
    assert len(header) < 1000
    assert buffers[0].raw().nbytes == a.nbytes
    assert np.shares_memory(np.frombuffer(buffers[0].raw(), dtype=np.uint8), a)


def test_unpicklable_values_name_their_type():
    with pytest.raises(SerializationError, match="lock"):
        dumps(threading.Lock())


def test_unpicklable_argument_is_named_by_position():
    with pytest.raises(TypeError, match="argument 2 .*lock"):
        dumps_args((1, 2, threading.Lock()), {})
    with pytest.raises(TypeError, match="keyword argument 'g' .*generator"):
        dumps_args((), {"g": (i for i in range(3))})


def test_lambdas_and_main_functions_use_cloudpickle():
    token, data = functions.dumps(lambda x: x * 3)
    assert functions.loads(token, data)(2) == 6
    assert functions.dumps(len) == functions.dumps(len)


def test_function_pickle_is_cached_per_function_object():
    def f(x):
        return x

    first = functions.dumps(f)
    assert functions.dumps(f) is not None and functions.dumps(f)[0] == first[0]
    assert functions._by_id[id(f)][0] is f


class Scaler:
    """A callable object: its state is pickled with it, and may change between submits."""

    def __init__(self, factor):
        self.factor = factor

    def __call__(self, x):
        return x * self.factor


def test_a_cached_function_pickle_follows_changes_to_what_it_captured():
    namespace = {"__name__": "__main__"}  # as in a script: pickled by value
    exec("scale = 2\ndef helper(x):\n    return x * scale\n"
         "def f(x, k=1):\n    return helper(x) * k\n", namespace)
    f = namespace["f"]

    def run(fn):
        return functions.loads(*functions.dumps(fn))(3)

    first = functions.dumps(f)
    assert functions.dumps(f)[1] is first[1] and run(f) == 6  # unchanged: the cached pickle
    namespace["scale"] = 5  # a global of a function it calls
    assert functions.dumps(f)[0] != first[0] and run(f) == 15
    f.__defaults__ = (10,)
    assert run(f) == 150
    offset = 1

    def g(x):
        return x + offset

    assert run(g) == 4
    offset = 7
    assert run(g) == 10  # a closure cell changed
    namespace = {"__name__": "__main__"}
    exec("import functools\nSCALE = 2\nvalue = 0\n"
         "def logged(fn):\n    @functools.wraps(fn)\n    def wrapper(*a):\n"
         "        return fn(*a)\n    return wrapper\n"
         "@logged\ndef decorated(x):\n    return x * SCALE\n"
         "class Model:\n    def predict(self, x):\n        return x * SCALE\n"
         "def use_model(x):\n    return Model().predict(x)\n"
         "def attribute(p):\n    return p.value\n", namespace)
    decorated, use_model = namespace["decorated"], namespace["use_model"]
    # (use_model is not unpickled here: in the process that pickled it, cloudpickle would
    # patch the original class with the unpickled methods)
    assert run(decorated) == 6 and functions.dumps(use_model) == functions.dumps(use_model)
    before = functions.dumps(use_model)[0]
    namespace["SCALE"] = 3  # reached through the wrapper's closure, and through a class
    assert run(decorated) == 9 and functions.dumps(use_model)[0] != before
    exec("PARAMS = {'scale': 2}\ndef from_dict(x):\n    return x * PARAMS['scale']\n", namespace)
    assert run(namespace["from_dict"]) == 6
    namespace["PARAMS"]["scale"] = 4  # changed inside: such a function is never cached
    assert run(namespace["from_dict"]) == 12
    exec("def with_defaults(x, y=[1], *, z={'k': 2}):\n    return x + sum(y) + z['k']\n",
         namespace)
    with_defaults = namespace["with_defaults"]
    assert run(with_defaults) == 6
    with_defaults.__defaults__[0].append(100)  # a default changed inside: never cached
    assert run(with_defaults) == 106
    with_defaults.__kwdefaults__["z"]["k"] = 20
    assert run(with_defaults) == 124
    attribute = namespace["attribute"]
    cached = functions.dumps(attribute)
    namespace["value"] = 1  # a global that is only an attribute's namesake there
    assert functions.dumps(attribute)[1] is cached[1]
    scaler = Scaler(2)
    assert run(scaler) == 6
    scaler.factor = 4
    assert run(scaler) == 12  # an object's state: pickled each time


def test_pure_keys_are_deterministic_and_distinguish_arguments():
    def key(fn, *args, **kwargs):
        token, _ = functions.dumps(fn)
        return keys.pure_key(keys.prefix(fn), token, dumps_args(args, kwargs)[0])

    assert key(abs, 1) == key(abs, 1)
    assert key(abs, 1) != key(abs, 2) != key(abs, 1.0 + 1)
    assert key(abs, np.ones(5)) == key(abs, np.ones(5)) != key(abs, np.zeros(5))
    assert key(abs, x=1) != key(abs, y=1)
    assert key(abs, 1).startswith("abs-")
    assert keys.prefix(lambda: 0) == "lambda"
    assert keys.unique_key(abs) != keys.unique_key(abs)


def test_plain_pickle_of_a_payload_keeps_buffers_out_of_band():
    payload = dumps(np.arange(100))
    buffers = []
    pickle.dumps(payload, protocol=5, buffer_callback=buffers.append)
    assert len(buffers) == 1


def test_numpy_half_imported_by_another_thread_is_waited_for(tmp_path):
    """A task importing numpy for the first time on a worker while the worker's loop sizes
    the previous task's result: the loop must not see numpy half built (it crashed the rank).
    A stand-in ``numpy`` that takes 0.5 s to import makes the window certain."""
    import os
    import subprocess
    import sys
    import textwrap

    (tmp_path / "numpy.py").write_text("import time\ntime.sleep(0.5)\nclass ndarray:\n    pass\n")
    script = textwrap.dedent("""
        import sys, threading, time
        from mpifutures.serialize import value_nbytes
        importer = threading.Thread(target=__import__, args=("numpy",))
        importer.start()
        while "numpy" not in sys.modules:
            time.sleep(0.001)
        print("sized", value_nbytes(None))
        importer.join()
    """)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.getcwd()}"}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "sized 64" in r.stdout


def test_a_large_pickled_value_travels_as_a_buffer_not_copied_into_the_message():
    value = list(range(50_000))  # pickled in-band: a header of ~250 KB
    payload = dumps(value)
    assert not payload.buffers and len(payload.header) > 1 << 16
    head, buffers = pack([("DONE", payload)])
    assert len(head) < 1000 and [b.raw().nbytes for b in buffers] == [len(payload.header)]
    (_, arrived), = unpack(head, [bytearray(b.raw()) for b in buffers])
    assert loads(arrived) == value
    head, buffers = pack([("DATA", arrived)])  # sent on again from where it arrived
    (_, again), = unpack(head, [bytearray(b.raw()) for b in buffers])
    assert loads(again) == value
