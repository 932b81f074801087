"""Tests for mpifutures.progress using stdlib concurrent.futures futures (no MPI needed)."""

from __future__ import annotations

import io
import sys
import threading
import time
import types
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from mpifutures.progress import progress


class TTY(io.StringIO):
    """A StringIO that claims to be a terminal."""

    def isatty(self) -> bool:
        return True


def done_future(value: object = None, exc: BaseException | None = None) -> Future:
    f: Future = Future()
    if exc is not None:
        f.set_exception(exc)
    else:
        f.set_result(value)
    return f


def later(delay: float, fn) -> threading.Timer:
    t = threading.Timer(delay, fn)
    t.daemon = True
    t.start()
    return t


def test_already_done_returns_at_once() -> None:
    futs = [done_future(i) for i in range(5)] + [done_future(exc=ValueError("x"))]
    out = io.StringIO()
    t = time.monotonic()
    summary = progress(futs, file=out, interval=10)
    assert time.monotonic() - t < 0.5
    assert (summary["total"], summary["finished"], summary["error"], summary["pending"]) == (
        6, 5, 1, 0)
    assert out.getvalue().count("\n") == 1  # only the final line


def test_empty_list() -> None:
    out = io.StringIO()
    summary = progress([], file=out)
    assert summary["total"] == 0 and "0/0" in out.getvalue()


def test_non_tty_plain_lines_without_control_chars() -> None:
    futs: list[Future] = [Future() for _ in range(4)]
    for i, f in enumerate(futs):
        later(0.15 * (i + 1), lambda f=f: f.set_result(1))
    out = io.StringIO()
    summary = progress(futs, file=out, interval=0.1)
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text and "\b" not in text
    lines = text.splitlines()
    assert len(lines) >= 3
    assert all(line.startswith("progress: ") for line in lines)
    assert "4/4 finished 4 failed 0 cancelled 0 pending 0" in lines[-1]
    assert lines[-1].endswith("done")
    assert summary["finished"] == 4


def test_tty_redraws_in_place() -> None:
    futs: list[Future] = [Future() for _ in range(3)]
    for i, f in enumerate(futs):
        later(0.1 * (i + 1), lambda f=f: f.set_result(1))
    out = TTY()
    progress(futs, file=out, interval=0.05, use_tqdm=False)
    text = out.getvalue()
    assert text.count("\r") >= 3 and text.endswith("\n") and text.count("\n") == 1
    final = text.rsplit("\r", 1)[1]
    assert final.startswith("[" + "#" * 30 + "]") and "3/3" in final


def test_errors_and_cancelled_are_counted() -> None:
    ok, bad, cancelled, slow = Future(), Future(), Future(), Future()
    assert cancelled.cancel()
    later(0.05, lambda: ok.set_result(1))
    later(0.1, lambda: bad.set_exception(RuntimeError("boom")))
    later(0.15, lambda: slow.set_result(2))
    out = io.StringIO()
    summary = progress([ok, bad, cancelled, slow, ok], file=out, interval=0.05)
    assert {k: summary[k] for k in ("total", "finished", "error", "cancelled", "pending")} == {
        "total": 4, "finished": 2, "error": 1, "cancelled": 1, "pending": 0}
    assert "failed 1 cancelled 1" in out.getvalue().splitlines()[-1]


def test_status_attribute_is_preferred() -> None:
    class StatusFuture(Future):
        status = "pending"

    f = StatusFuture()
    later(0.05, lambda: (setattr(f, "status", "error"), f.set_result(None)))
    summary = progress([f], file=io.StringIO(), interval=1)
    assert summary["error"] == 1 and summary["finished"] == 0


def test_accepts_single_future_and_mapping() -> None:
    assert progress(done_future(1), file=io.StringIO())["finished"] == 1
    assert progress({"a": done_future(1), "b": done_future(2)}, file=io.StringIO())["total"] == 2


def test_returns_promptly_when_last_future_completes() -> None:
    f: Future = Future()
    later(0.2, lambda: f.set_result(1))
    t = time.monotonic()
    progress([f], file=io.StringIO(), interval=30)  # long interval: must not wait for it
    assert time.monotonic() - t < 2.0


def test_no_busy_wait() -> None:
    f: Future = Future()
    later(1.0, lambda: f.set_result(1))
    cpu, wall = time.process_time(), time.monotonic()
    progress([f], file=TTY(), interval=0.02, use_tqdm=False)
    assert time.monotonic() - wall >= 0.9
    assert time.process_time() - cpu < 0.3


def test_with_thread_pool() -> None:
    def work(i: int) -> int:
        time.sleep(0.01)
        if i % 10 == 0:
            raise ValueError(i)
        return i

    with ThreadPoolExecutor(4) as pool:
        futs = [pool.submit(work, i) for i in range(50)]
        summary = progress(futs, file=io.StringIO(), interval=0.05)
    assert (summary["finished"], summary["error"]) == (45, 5)


def test_uses_tqdm_when_available(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict = {"update": 0, "closed": False}

    class FakeTqdm:
        def __init__(self, total: int, file, **kw) -> None:
            calls["total"], calls["file"] = total, file

        def update(self, n: int) -> None:
            calls["update"] += n

        def set_postfix(self, **kw) -> None:
            calls["postfix"] = kw

        def close(self) -> None:
            calls["closed"] = True

    monkeypatch.setitem(sys.modules, "tqdm", types.SimpleNamespace(tqdm=FakeTqdm))
    out = TTY()
    futs = [done_future(1), done_future(exc=KeyError("k"))]
    progress(futs, file=out)
    assert calls["total"] == 2 and calls["file"] is out and calls["update"] == 2
    assert calls["closed"] and calls["postfix"]["failed"] == 1
    assert out.getvalue() == ""  # the fake wrote nothing, so no plain bar was drawn
    progress(futs, file=out, use_tqdm=False)
    assert "2/2" in out.getvalue()


def test_missing_tqdm_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)  # makes `import tqdm` raise ImportError
    out = io.StringIO()
    progress([done_future(1)], file=out, use_tqdm=True)
    assert "1/1" in out.getvalue() and "\r" not in out.getvalue()


def test_plain_futures_cancelled_later_end_the_wait() -> None:
    import mpifutures

    for wait in (lambda f: progress([f], file=io.StringIO(), interval=0.05),
                 lambda f: list(mpifutures.as_completed([f], timeout=10))):
        f: Future = Future()
        later(0.1, f.cancel)  # a bare cancel() tells no waiter, only done-callbacks
        t = time.monotonic()
        wait(f)
        assert time.monotonic() - t < 5
