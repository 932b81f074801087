"""Self-contained HTML report of an mpifutures task stream.

The page (``report_template.html`` beside this module) embeds its CSS, SVG
and a few lines of JS; it loads nothing from the network, so it can be
copied off a cluster and opened anywhere.  Above ``EXACT_LIMIT`` tasks the
timeline is aggregated into time bins per rank so the file stays a few MB.
"""

from __future__ import annotations

import html
import logging
import math
import string
import time
import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

logger = logging.getLogger(__name__)

EXACT_LIMIT = 10_000  # more tasks than this: aggregate the timeline into bins
MAX_PREFIX_COLOURS = 40  # further prefixes share the "other" colour
MAX_MATRIX = 48  # more ranks than this: bucket ranks in the transfer matrix
WIDTH, LEFT, RIGHT = 1100, 80, 30
TEMPLATE = Path(__file__).with_name("report_template.html")
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948",
           "#9c755f", "#ff9da7", "#2f6690", "#8cd17d", "#a0cbe8", "#d4a6c8")
_esc = html.escape


class Task(NamedTuple):
    """One normalised task-stream record; ``fetches`` holds (from_rank, nbytes, seconds)."""

    key: str
    prefix: str
    rank: int
    start: float
    stop: float
    error: bool
    nbytes: int
    fetches: tuple[tuple[int, int, float], ...]


def _task(r: Mapping[str, Any]) -> Task:
    start = float(r["start"])
    stop = max(start, float(r.get("stop", start)))
    fetches = tuple((int(f["from"]), int(f.get("nbytes") or 0), float(f.get("seconds") or 0))
                    for f in (r.get("fetches") or ()))
    return Task(str(r.get("key", "")), str(r.get("prefix") or "?"), int(r["rank"]), start,
                stop, r.get("status") == "error", int(r.get("nbytes") or 0), fetches)


def normalize(records: Iterable[Mapping[str, Any]]) -> list[Task]:
    """Parse records into ``Task`` tuples, dropping (and logging) malformed ones."""
    tasks, bad = [], 0
    for r in records:
        try:
            tasks.append(_task(r))
        except (KeyError, TypeError, ValueError):
            bad += 1
    if bad:
        logger.warning("ignored %d malformed task records", bad)
    return tasks


def _throughput(tasks: Sequence[Task], t0: float, span: float, bins: int) -> dict:
    """Completions per time bin (by stop time), split into finished and error."""
    n = max(1, min(bins, len(tasks)))
    width = span / n
    fin, err = [0] * n, [0] * n
    for t in tasks:
        i = min(n - 1, int((t.stop - t0) / width))
        (err if t.error else fin)[i] += 1
    return {"bin_seconds": width, "finished": fin, "error": err}


def summarize(records: Iterable[Mapping[str, Any]], bins: int = 100) -> dict:
    """Aggregate counts, per-prefix timings, per-rank load, transfer bytes, throughput."""
    return _summarize(normalize(records), bins)


def _summarize(tasks: list[Task], bins: int = 100) -> dict:
    prefixes: dict[str, dict] = {}
    ranks: dict[int, dict] = {}
    moved: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for t in tasks:
        d = t.stop - t.start
        p = prefixes.setdefault(t.prefix, {"count": 0, "errors": 0, "total": 0.0, "max": 0.0})
        p["count"] += 1
        p["errors"] += t.error
        p["total"] += d
        p["max"] = max(p["max"], d)
        r = ranks.setdefault(t.rank, {"count": 0, "errors": 0, "busy": 0.0})
        r["count"] += 1
        r["errors"] += t.error
        r["busy"] += d
        for src, nbytes, _ in t.fetches:
            moved[src][t.rank] += nbytes
    for p in prefixes.values():
        p["mean"] = p["total"] / p["count"]
    t0 = min((t.start for t in tasks), default=0.0)
    t1 = max((t.stop for t in tasks), default=0.0)
    span = (t1 - t0) or 1.0
    n_err = sum(t.error for t in tasks)
    return {
        "n_tasks": len(tasks), "n_finished": len(tasks) - n_err, "n_errors": n_err,
        "start": t0, "stop": t1, "wall": t1 - t0,
        "ranks": sorted(ranks), "per_rank": dict(sorted(ranks.items())),
        "prefixes": dict(sorted(prefixes.items(), key=lambda kv: -kv[1]["total"])),
        "transfers": {s: dict(d) for s, d in sorted(moved.items())},
        "bytes_moved": sum(sum(d.values()) for d in moved.values()),
        "n_fetches": sum(len(t.fetches) for t in tasks),
        "result_bytes": sum(t.nbytes for t in tasks),
        "throughput": _throughput(tasks, t0, span, bins) if tasks else
        {"bin_seconds": 0.0, "finished": [], "error": []},
    }


def _fmt_s(s: float) -> str:
    if s == 0 or s >= 100:
        return f"{s:.0f} s"
    return f"{s * 1e6:.0f} µs" if s < 1e-3 else f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def _fmt_b(n: float) -> str:
    k = 0
    while abs(n) >= 1000 and k < 4:
        n, k = n / 1000, k + 1
    return f"{n:.0f} B" if k == 0 else f"{n:.1f} {'kMGT'[k - 1]}B"


def _colour(i: int, prefix: str) -> str:
    if i < len(PALETTE):
        return PALETTE[i]
    return f"hsl({zlib.crc32(prefix.encode()) % 360},55%,55%)"


def _ticks(span: float, n: int = 8) -> list[float]:
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    return [i * step for i in range(int(span / step) + 1)]


def _axis(span: float, scale: float, y: float) -> list[str]:
    out = [f'<line x1="{LEFT}" y1="{y}" x2="{WIDTH - RIGHT}" y2="{y}" class="ax"/>']
    for t in _ticks(span):
        x = LEFT + t * scale
        out.append(f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + 4}" class="ax"/>'
                   f'<text x="{x:.1f}" y="{y + 15}" class="tk">{_fmt_s(t)}</text>')
    return out


def _exact_rects(tasks: Sequence[Task], t0: float, scale: float, rows: dict[int, float],
                 row_h: float, cls: dict[str, int]) -> list[str]:
    """One rectangle per task; overlapping tasks on a rank are split into lanes."""
    by_rank: dict[int, list[Task]] = defaultdict(list)
    for t in tasks:
        by_rank[t.rank].append(t)
    out = []
    for rank, ts in by_rank.items():
        ts.sort(key=lambda t: t.start)
        lanes: list[float] = []
        placed = []
        for t in ts:
            lane = next((i for i, end in enumerate(lanes) if end <= t.start), len(lanes))
            lanes[lane:lane + 1] = [t.stop]
            placed.append((lane, t))
        h = (row_h - 2) / max(1, len(lanes))
        for lane, t in placed:
            c = cls.get(t.prefix, "o")
            title = (f"{t.key} ({t.prefix}) on rank {rank}: {_fmt_s(t.stop - t.start)} "
                     f"from +{_fmt_s(t.start - t0)}, {'ERROR' if t.error else 'finished'}, "
                     f"{_fmt_b(t.nbytes)}")
            out.append(f'<rect x="{LEFT + (t.start - t0) * scale:.1f}" '
                       f'y="{rows[rank] + 1 + lane * h:.1f}" '
                       f'width="{max(0.6, (t.stop - t.start) * scale):.1f}" height="{h:.1f}" '
                       f'class="c{c}{" err" if t.error else ""}">'
                       f'<title>{_esc(title)}</title></rect>')
    return out


def _bin_busy(tasks: Sequence[Task], t0: float, width: float, nb: int) -> dict:
    """Per (rank, bin): busy time in bin units, task count, errors, time per prefix."""
    busy: dict[int, list[float]] = defaultdict(lambda: [0.0] * (nb + 1))
    full: dict[int, list[int]] = defaultdict(lambda: [0] * (nb + 1))
    cells: dict[tuple[int, int], list] = {}
    for t in tasks:
        a, b = (t.start - t0) / width, min(nb, (t.stop - t0) / width)
        ia, ib = min(nb - 1, int(a)), min(nb - 1, int(b))
        if ia == ib:
            busy[t.rank][ia] += b - a
        else:
            busy[t.rank][ia] += ia + 1 - a
            busy[t.rank][ib] += b - ib
            full[t.rank][ia + 1] += 1
            full[t.rank][ib] -= 1
        cell = cells.setdefault((t.rank, ia), [0, 0, defaultdict(float)])
        cell[0] += 1
        cell[1] += t.error
        cell[2][t.prefix] += t.stop - t.start
    for rank, diff in full.items():
        run = 0
        for i in range(nb):
            run += diff[i]
            busy[rank][i] += run
    return {"busy": busy, "cells": cells}


def _binned_rects(tasks: Sequence[Task], t0: float, span: float, rows: dict[int, float],
                  row_h: float, cls: dict[str, int]) -> list[str]:
    """Aggregated timeline: per rank and time bin, height = busy fraction."""
    nb = max(50, min(600, 20_000 // max(1, len(rows))))
    width = span / nb
    px = (WIDTH - LEFT - RIGHT) / nb
    agg = _bin_busy(tasks, t0, width, nb)
    out = []
    for rank, busy in agg["busy"].items():
        for i in range(nb):
            frac = min(1.0, busy[i])
            if frac <= 0:
                continue
            n, nerr, per = agg["cells"].get((rank, i), (0, 0, {}))
            top = max(per, key=per.get) if per else None
            h = max(0.5, frac * (row_h - 2))
            title = (f"rank {rank}, +{_fmt_s(i * width)}..+{_fmt_s((i + 1) * width)}: "
                     f"busy {frac:.0%}, {n} started" + (f", mostly {top}" if top else "")
                     + (f", {nerr} errors" if nerr else ""))
            c = cls.get(top, "o") if top else "o"
            out.append(f'<rect x="{LEFT + i * px:.1f}" y="{rows[rank] + row_h - 1 - h:.1f}" '
                       f'width="{px + 0.3:.1f}" height="{h:.1f}" class="c{c}">'
                       f'<title>{_esc(title)}</title></rect>')
            if nerr:
                out.append(f'<rect x="{LEFT + i * px:.1f}" y="{rows[rank]:.1f}" '
                           f'width="{max(px, 1.5):.1f}" height="3" class="errmark"/>')
    return out


def _timeline(tasks: Sequence[Task], s: dict, cls: dict[str, int]) -> str:
    """SVG task stream: one row per rank."""
    if not tasks:
        return '<p class="empty">No tasks recorded.</p>'
    ranks = s["ranks"]
    row_h = max(3.0, min(24.0, 640.0 / len(ranks)))
    rows = {r: 10 + i * row_h for i, r in enumerate(ranks)}
    span = s["wall"] or 1e-6
    scale = (WIDTH - LEFT - RIGHT) / span
    height = 10 + row_h * len(ranks)
    every = max(1, math.ceil(11 / row_h))
    parts = [f'<svg id="timeline" viewBox="0 0 {WIDTH} {height + 24:.0f}" width="100%">']
    for i, r in enumerate(ranks):
        if i % every == 0:
            parts.append(f'<text x="{LEFT - 6}" y="{rows[r] + min(row_h, 14) - 3:.1f}" '
                         f'class="lbl">rank {r}</text>')
    parts += _axis(span, scale, height + 2)
    if len(tasks) <= EXACT_LIMIT:
        parts += _exact_rects(tasks, s["start"], scale, rows, row_h, cls)
    else:
        parts += _binned_rects(tasks, s["start"], span, rows, row_h, cls)
    return "\n".join(parts) + "</svg>"


def _rate_chart(s: dict) -> str:
    """SVG bar chart of completed tasks per second (errors stacked in red)."""
    tp = s["throughput"]
    if not tp["finished"]:
        return '<p class="empty">No tasks recorded.</p>'
    w, n, h = tp["bin_seconds"], len(tp["finished"]), 150
    rates = [(f + e) / w for f, e in zip(tp["finished"], tp["error"])]
    top = max(rates) or 1.0
    bw = (WIDTH - LEFT - RIGHT) / n
    parts = [f'<svg id="rate" viewBox="0 0 {WIDTH} {h + 30}" width="100%">',
             f'<text x="{LEFT - 6}" y="14" class="lbl">{top:,.1f}/s</text>',
             f'<text x="{LEFT - 6}" y="{h}" class="lbl">0/s</text>']
    for i, (f, e) in enumerate(zip(tp["finished"], tp["error"])):
        for val, base, c, what in ((f, 0, "bar", "finished"), (e, f, "errbar", "errors")):
            if val:
                bh, y0 = val / w / top * (h - 10), h - base / w / top * (h - 10)
                parts.append(f'<rect x="{LEFT + i * bw:.1f}" y="{y0 - bh:.1f}" width="'
                             f'{max(bw - 0.5, 0.5):.1f}" height="{bh:.1f}" class="{c}"><title>'
                             f'+{_fmt_s(i * w)}: {val / w:,.1f} {what}/s'
                             f'</title></rect>')
    parts += _axis(w * n, (WIDTH - LEFT - RIGHT) / (w * n), h + 1)
    return "\n".join(parts) + "</svg>"


def _buckets(ranks: list[int]) -> tuple[list[str], dict[int, int]]:
    """Matrix axis labels and rank -> index, bucketing ranks when there are many."""
    if len(ranks) <= MAX_MATRIX:
        return [str(r) for r in ranks], {r: i for i, r in enumerate(ranks)}
    size = math.ceil(len(ranks) / MAX_MATRIX)
    groups = [ranks[i:i + size] for i in range(0, len(ranks), size)]
    return ([f"{g[0]}-{g[-1]}" for g in groups],
            {r: gi for gi, g in enumerate(groups) for r in g})


def _matrix(s: dict) -> str:
    """SVG heat map of bytes fetched: row = source rank, column = destination rank."""
    moved = s["transfers"]
    if not s["bytes_moved"]:
        return '<p class="empty">No bytes moved between ranks.</p>'
    ranks = sorted(set(moved) | {d for row in moved.values() for d in row})
    labels, index = _buckets(ranks)
    cell = max(10, min(48, 640 // len(labels)))
    grid: dict[tuple[int, int], int] = defaultdict(int)
    for src, row in moved.items():
        for dst, nb in row.items():
            grid[index[src], index[dst]] += nb
    top = math.log1p(max(grid.values()))
    size = 60 + cell * len(labels)
    parts = [f'<svg id="matrix" viewBox="0 0 {size + 10} {size + 10}" '
             f'width="{min(size + 10, 700)}">']
    for i, lab in enumerate(labels):
        c = 60 + i * cell + cell / 2
        parts.append(f'<text x="55" y="{c + 4:.0f}" class="lbl">{lab}</text>'
                     f'<text x="{c:.0f}" y="52" class="tk">{lab}</text>')
    for (i, j), nb in grid.items():
        op = 0.15 + 0.85 * math.log1p(nb) / top if top else 1.0
        x, y = 60 + j * cell, 60 + i * cell
        label = (f'<text x="{x + cell / 2:.0f}" y="{y + cell / 2 + 4:.0f}" class="mv">'
                 f'{_fmt_b(nb)}</text>') if cell >= 44 else ""
        parts.append(f'<rect x="{x}" y="{y}" width="{cell - 1}" '
                     f'height="{cell - 1}" class="mx" fill-opacity="{op:.2f}"><title>rank '
                     f'{labels[i]} \u2192 rank {labels[j]}: {_fmt_b(nb)}</title></rect>{label}')
    return "\n".join(parts) + "</svg>"


def _prefix_table(s: dict, cls: dict[str, int]) -> str:
    """HTML table with count/total/mean/max per prefix and a bar of total time."""
    if not s["prefixes"]:
        return '<p class="empty">No tasks recorded.</p>'
    items = list(s["prefixes"].items())
    top = items[0][1]["total"] or 1.0
    rows = []
    for name, p in items[:50]:
        c = cls.get(name, "o")
        rows.append(f'<tr><td><span class="sw s{c}"></span>{_esc(name)}</td>'
                    f'<td>{p["count"]:,}</td><td>{p["errors"]:,}</td>'
                    f'<td>{_fmt_s(p["total"])}</td><td>{_fmt_s(p["mean"])}</td>'
                    f'<td>{_fmt_s(p["max"])}</td><td class="bc"><div class="hb s{c}" '
                    f'style="width:{100 * p["total"] / top:.1f}%"></div></td></tr>')
    if len(items) > 50:
        rows.append(f'<tr><td colspan="7">... {len(items) - 50} more prefixes</td></tr>')
    return ('<table><tr><th>prefix</th><th>count</th><th>errors</th><th>total</th>'
            '<th>mean</th><th>max</th><th>total time</th></tr>' + "".join(rows) + "</table>")


def _settings_table(settings: Mapping[str, Any]) -> str:
    if not settings:
        return '<p class="empty">No settings given.</p>'
    rows = "".join(f"<tr><th>{_esc(str(k))}</th><td>{_esc(str(v))}</td></tr>"
                   for k, v in settings.items())
    return f'<table class="kv">{rows}</table>'


def _colour_css(cls: dict[str, int]) -> str:
    return "\n".join(f".c{i}, .s{i} {{ fill: {_colour(i, p)}; background: {_colour(i, p)}; }}"
                     for p, i in cls.items())


def write_report(path: str, records: Iterable[Mapping[str, Any]],
                 settings: Mapping[str, Any]) -> None:
    """Write one self-contained HTML report of *records* and *settings* to *path*."""
    tasks = normalize(records)
    s = _summarize(tasks)
    cls = {p: i for i, p in enumerate(list(s["prefixes"])[:MAX_PREFIX_COLOURS])}
    legend = "".join(f'<span class="lg"><span class="sw s{i}"></span>{_esc(p)}</span>'
                     for p, i in cls.items())
    if len(s["prefixes"]) > len(cls):
        legend += '<span class="lg"><span class="sw so"></span>other</span>'
    mode = ("one bar per task" if len(tasks) <= EXACT_LIMIT else
            f"{len(tasks):,} tasks aggregated into time bins (bar height = busy fraction)")
    head = (f'{s["n_tasks"]:,} tasks ({s["n_errors"]:,} errors) on {len(s["ranks"])} ranks '
            f'in {_fmt_s(s["wall"])}; {_fmt_b(s["bytes_moved"])} moved in '
            f'{s["n_fetches"]:,} fetches; {_fmt_b(s["result_bytes"])} of results')
    doc = string.Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        colours=_colour_css(cls), when=_esc(time.strftime("%Y-%m-%d %H:%M:%S")),
        head=_esc(head),
        legend=legend, mode=_esc(mode), timeline=_timeline(tasks, s, cls),
        rate=_rate_chart(s), prefixes=_prefix_table(s, cls), matrix=_matrix(s),
        settings=_settings_table(settings or {}))
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(doc)
    logger.info("wrote report for %d tasks to %s (%d bytes)", len(tasks), path, len(doc))


