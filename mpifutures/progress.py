"""Block until futures are done while showing a progress bar.

On a terminal the bar redraws in place (tqdm when installed, else a plain
``\\r`` line).  When the output is not a terminal (a batch job's log) it
writes one plain line every ``interval`` seconds and a final line, with no
control characters.  Waiting uses a condition variable with a timeout, notified
when the last future completes.
"""

from __future__ import annotations

import logging
import numbers
import sys
import threading
import time
from collections.abc import Iterable
from concurrent.futures import CancelledError
from typing import Any, Optional, TextIO

logger = logging.getLogger(__name__)

FINAL_STATES = ("finished", "error", "cancelled")
BAR_WIDTH = 30


def _state(fut: Any) -> str:
    """Final state of a done future: ``.status`` if it has one, else derived."""
    status = getattr(fut, "status", None)
    if status in FINAL_STATES:
        return status
    if fut.cancelled():
        return "cancelled"
    try:
        return "finished" if fut.exception() is None else "error"
    except CancelledError:
        return "cancelled"


def _as_list(futures: Any) -> list[Any]:
    """Accept one future, a mapping (its values) or an iterable; drop duplicates."""
    if hasattr(futures, "add_done_callback"):
        futures = [futures]
    elif hasattr(futures, "values"):
        futures = futures.values()
    seen: dict[int, Any] = {}
    for f in futures:
        if not hasattr(f, "add_done_callback"):
            raise TypeError(f"progress takes futures, not {type(f).__qualname__}: {f!r}")
        seen.setdefault(id(f), f)
    return list(seen.values())


class _Counter:
    """Counts completions as the futures end (told on the thread that ends them)."""

    def __init__(self, futures: list[Any]) -> None:
        self.total = len(futures)
        self.counts = dict.fromkeys(FINAL_STATES, 0)
        self.cond = threading.Condition()
        from .future import Future  # here: workers import this module, not futures
        from .hooks import when_done

        for f in futures:
            if isinstance(f, Future):  # told at once, not behind (slow) user done-callbacks
                when_done(f, self._count)
            else:
                f.add_done_callback(self._on_done)

    def _on_done(self, fut: Any) -> None:
        try:
            state = _state(fut)
        except Exception:  # a broken future must not hide completion
            logger.exception("could not classify future %r", fut)
            state = "error"
        self._count(fut, state)

    def _count(self, fut: Any, state: str) -> None:
        with self.cond:
            self.counts[state] += 1
            if self.done() >= self.total:
                self.cond.notify_all()

    def done(self) -> int:
        return sum(self.counts.values())

    def snapshot(self) -> dict[str, int]:
        with self.cond:
            snap = dict(self.counts)
        snap["total"] = self.total
        snap["pending"] = max(0, self.total - sum(snap[s] for s in FINAL_STATES))
        return snap


def _line(snap: dict[str, int], elapsed: float, bar: bool) -> str:
    """One status line, e.g. ``[####----] 40/100 finished 38 failed 2 ...``."""
    total, done = snap["total"], snap["total"] - snap["pending"]
    text = (f"{done}/{total} finished {snap['finished']} failed {snap['error']} "
            f"cancelled {snap['cancelled']} pending {snap['pending']} {elapsed:.1f}s")
    if not bar:
        return "progress: " + text
    fill = BAR_WIDTH * done // total if total else BAR_WIDTH
    return "[" + "#" * fill + "-" * (BAR_WIDTH - fill) + "] " + text


class _TextBar:
    """Plain bar: ``\\r`` redraws on a terminal, one line per update otherwise."""

    def __init__(self, out: TextIO, tty: bool) -> None:
        self.out, self.tty, self.width = out, tty, 0

    def update(self, snap: dict[str, int], elapsed: float, final: bool = False) -> None:
        text = _line(snap, elapsed, bar=self.tty)
        if self.tty:
            pad = " " * max(0, self.width - len(text))
            self.width = len(text)
            self.out.write("\r" + text + pad + ("\n" if final else ""))
        else:
            self.out.write(text + ("  done\n" if final else "\n"))
        self.out.flush()


class _TqdmBar:
    """Adapter over ``tqdm.tqdm`` with the same ``update`` interface."""

    def __init__(self, tqdm_cls: Any, out: TextIO, total: int, interval: float) -> None:
        self.bar = tqdm_cls(total=total, file=out, unit="task", mininterval=interval,
                            desc="mpifutures")
        self.shown = 0

    def update(self, snap: dict[str, int], elapsed: float, final: bool = False) -> None:
        done = snap["total"] - snap["pending"]
        self.bar.set_postfix(failed=snap["error"], cancelled=snap["cancelled"],
                             pending=snap["pending"], refresh=False)
        self.bar.update(done - self.shown)
        self.shown = done
        if final:
            self.bar.close()


def _isatty(out: Any) -> bool:
    try:
        return bool(out.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _make_bar(out: TextIO, tty: bool, use_tqdm: Optional[bool], total: int,
              interval: float) -> Any:
    """tqdm when asked for (or by default on a terminal) and importable, else plain."""
    if use_tqdm or (use_tqdm is None and tty):
        try:
            from tqdm import tqdm
        except ImportError:
            if use_tqdm:
                logger.warning("tqdm is not installed; using a plain progress line")
        else:
            return _TqdmBar(tqdm, out, total, interval)
    return _TextBar(out, tty)


MOST_INTERVAL = 86400.0  # a day between redraws: longer ones would overflow the waits


def progress(futures: Iterable[Any], *, interval: Optional[float] = None,
             file: Optional[TextIO] = None, use_tqdm: Optional[bool] = None) -> dict[str, Any]:
    """Block until all *futures* are done, showing finished/failed/pending counts.

    *interval* is the seconds between redraws (default 0.1 on a terminal, 5 when
    *file* is not a terminal); *file* defaults to ``sys.stderr``.  tqdm is used on a
    terminal when installed unless *use_tqdm* is False (True forces it).  Returns
    ``{"total", "finished", "error", "cancelled", "pending", "elapsed"}``.
    """
    if interval is not None:
        if isinstance(interval, bool) or not isinstance(interval, numbers.Real):
            raise TypeError(f"interval must be a number of seconds, not {interval!r}")
        if not 0 < interval <= MOST_INTERVAL:  # (NaN too)
            raise ValueError(f"interval must be a positive number of seconds, at most "
                             f"{MOST_INTERVAL:g}, not {interval!r}")
    futs = _as_list(futures)
    out = file if file is not None else sys.stderr
    if not callable(getattr(out, "write", None)) or getattr(out, "closed", False):
        raise TypeError(f"file must be an open text file (with write()), not {out!r}")
    tty = _isatty(out)
    interval = max(0.01, interval if interval is not None else (0.1 if tty else 5.0))
    counter = _Counter(futs)
    bar = _make_bar(out, tty, use_tqdm, counter.total, interval)
    t0 = time.monotonic()
    finished = False
    try:
        if tty:
            bar.update(counter.snapshot(), 0.0)
        while True:
            with counter.cond:
                finished = counter.cond.wait_for(lambda: counter.done() >= counter.total,
                                                 timeout=interval)
            if finished:
                break
            bar.update(counter.snapshot(), time.monotonic() - t0)
    finally:
        snap: dict[str, Any] = counter.snapshot()
        snap["elapsed"] = time.monotonic() - t0
        bar.update(snap, snap["elapsed"], final=True)
    logger.debug("progress done: %s", snap)
    return snap
