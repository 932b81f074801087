"""Convert task-stream records into Chrome trace-event JSON (opens in Perfetto).

Each worker rank becomes one process row ("rank N").  Tasks are complete
events (``"ph": "X"``) on thread 0; data fetches that preceded a task are
complete events on thread 1 ("transfers") of the receiving rank.  Records
carry no fetch timestamps, so fetches are laid back to back ending at the
task's start.  Times are microseconds relative to the earliest event.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

TASK_TID = 0
TRANSFER_TID = 1
_META_NAMES = {"process_name", "thread_name", "process_sort_index", "thread_sort_index"}


def _fetches(rec: Mapping[str, Any]) -> list[tuple[int, int, float]]:
    """Return ``(from_rank, nbytes, seconds)`` for each well-formed fetch."""
    out = []
    for f in rec.get("fetches") or ():
        try:
            out.append((int(f["from"]), int(f.get("nbytes") or 0),
                        max(0.0, float(f.get("seconds") or 0.0))))
        except (KeyError, TypeError, ValueError):
            logger.debug("skipping malformed fetch %r", f)
    return out


def _clean(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Drop records without a usable rank/start/stop, logging how many."""
    good, bad = [], 0
    for r in records:
        try:
            int(r["rank"]), float(r["start"]), float(r["stop"])
        except (KeyError, TypeError, ValueError):
            bad += 1
            continue
        good.append(r)
    if bad:
        logger.warning("ignored %d malformed task records", bad)
    return good


def _us(seconds: float) -> float:
    return round(seconds * 1e6, 3)


def _task_events(rec: Mapping[str, Any], t0: float) -> list[dict]:
    """Complete events for one task and the fetches that fed it."""
    rank, start = int(rec["rank"]), float(rec["start"])
    stop = max(start, float(rec["stop"]))
    key, status = str(rec.get("key", "")), str(rec.get("status", "finished"))
    fetches = _fetches(rec)
    task = {
        "name": str(rec.get("prefix") or key or "task"),
        "cat": "task" if status != "error" else "task,error",
        "ph": "X", "ts": _us(start - t0), "dur": _us(stop - start),
        "pid": rank, "tid": TASK_TID,
        "args": {"key": key, "status": status, "nbytes": int(rec.get("nbytes") or 0),
                 "fetched_bytes": sum(f[1] for f in fetches)},
    }
    if status == "error":
        task["cname"] = "terrible"
    events = [task]
    t = start
    for src, nbytes, seconds in reversed(fetches):
        t -= seconds
        events.append({
            "name": f"fetch from rank {src}", "cat": "transfer", "ph": "X",
            "ts": _us(t - t0), "dur": _us(seconds), "pid": rank, "tid": TRANSFER_TID,
            "args": {"from": src, "to": rank, "nbytes": nbytes, "key": key},
        })
    return events


def _metadata(ranks: Iterable[int], with_transfers: set) -> list[dict]:
    """Process/thread naming events: one process row per rank."""
    meta: list[dict] = []
    for rank in sorted(ranks):
        meta.append({"name": "process_name", "ph": "M", "pid": rank, "tid": 0,
                     "args": {"name": f"rank {rank}"}})
        meta.append({"name": "process_sort_index", "ph": "M", "pid": rank, "tid": 0,
                     "args": {"sort_index": rank}})
        meta.append({"name": "thread_name", "ph": "M", "pid": rank, "tid": TASK_TID,
                     "args": {"name": "tasks"}})
        if rank in with_transfers:
            meta.append({"name": "thread_name", "ph": "M", "pid": rank,
                         "tid": TRANSFER_TID, "args": {"name": "transfers"}})
    return meta


def to_chrome_trace(records: Iterable[Mapping[str, Any]]) -> dict:
    """Build a Chrome trace-event object (``traceEvents`` + ``displayTimeUnit``)."""
    recs = _clean(records)
    if not recs:
        return {"traceEvents": [], "displayTimeUnit": "ms"}
    t0 = min(float(r["start"]) - sum(f[2] for f in _fetches(r)) for r in recs)
    events: list[dict] = []
    ranks, with_transfers = set(), set()
    for r in recs:
        evs = _task_events(r, t0)
        ranks.add(int(r["rank"]))
        if len(evs) > 1:
            with_transfers.add(int(r["rank"]))
        events.extend(evs)
    events.sort(key=lambda e: (e["pid"], e["tid"], e["ts"]))
    return {"traceEvents": _metadata(ranks, with_transfers) + events,
            "displayTimeUnit": "ms"}


def write_chrome_trace(path: str, records: Iterable[Mapping[str, Any]]) -> dict:
    """Write the trace as JSON (gzip-compressed if *path* ends in ``.gz``); return it."""
    trace = to_chrome_trace(records)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as fh:
        json.dump(trace, fh, separators=(",", ":"), allow_nan=False)
    logger.info("wrote %d trace events to %s", len(trace["traceEvents"]), path)
    return trace


def _event_problems(i: int, ev: Any) -> list[str]:
    """Schema problems of one trace event (empty list when fine)."""
    if not isinstance(ev, dict):
        return [f"event {i}: not an object"]
    probs = []
    for field, kind in (("name", str), ("ph", str), ("pid", int), ("tid", int)):
        if not isinstance(ev.get(field), kind) or isinstance(ev.get(field), bool):
            probs.append(f"event {i}: field {field!r} missing or not {kind.__name__}")
    ph = ev.get("ph")
    if ph == "X":
        for field in ("ts", "dur"):
            v = ev.get(field)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                probs.append(f"event {i}: {field!r} must be a finite number")
            elif v < 0:
                probs.append(f"event {i}: {field!r} is negative ({v})")
    elif ph == "M":
        if ev.get("name") not in _META_NAMES:
            probs.append(f"event {i}: unknown metadata name {ev.get('name')!r}")
        if not isinstance(ev.get("args"), dict):
            probs.append(f"event {i}: metadata event without args")
    elif ph is not None:
        probs.append(f"event {i}: unsupported phase {ph!r}")
    if "args" in ev and not isinstance(ev["args"], dict):
        probs.append(f"event {i}: 'args' must be an object")
    return probs


def validate_trace(obj: Any) -> None:
    """Raise ``ValueError`` listing schema problems of a trace object."""
    if not isinstance(obj, dict) or not isinstance(obj.get("traceEvents"), list):
        raise ValueError("trace must be an object with a 'traceEvents' list")
    probs: list[str] = []
    if obj.get("displayTimeUnit", "ms") not in ("ms", "ns"):
        probs.append("displayTimeUnit must be 'ms' or 'ns'")
    for i, ev in enumerate(obj["traceEvents"]):
        probs.extend(_event_problems(i, ev))
    try:
        json.dumps(obj, allow_nan=False)
    except (TypeError, ValueError) as exc:
        probs.append(f"not JSON-serialisable: {exc}")
    if probs:
        more = f" (+{len(probs) - 10} more)" if len(probs) > 10 else ""
        raise ValueError("invalid trace: " + "; ".join(probs[:10]) + more)
