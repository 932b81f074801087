"""Rows, targets and the printed table of the benchmark run."""

from __future__ import annotations

from harness import sizes as sizes_for

SYSTEM_LABELS = {
    "mpifutures": "mpifutures",
    "mpi4py": "mpi4py.futures",
    "mpi4py-b0": "mpi4py.f. BACKOFF=0",
    "dask": "dask.distributed",
    "raw": "raw mpi4py",
}


def row_specs(quick, w10_ranks=32):
    """``(row id, label, target text, check)``; ``check(value, rows)`` -> bool or None."""
    s = sizes_for(quick)
    n1, n2, n3 = (f"{n:,}" for n in s["w9_sizes"])
    final = s["w3_length"] * 8
    w10 = f"W10 {w10_ranks} ranks:"
    return [
        ("W1", f"W1 {s['w1_trips']} round trips, median µs", "≤ 100 µs", _at_most(100)),
        ("W2.submit", f"W2 {s['w2_tasks']:,} submit+gather, tasks/s", "≥ 50,000/s",
         _at_least(50_000)),
        ("W2.map", f"W2 {s['w2_tasks']:,} map+gather, tasks/s", "≥ 50,000/s",
         _at_least(50_000)),
        ("W3", f"W3 tree sum {s['w3_arrays']}×{final / 1e6:g} MB, median s", "≤ 0.08 s",
         _at_most(0.08)),
        ("W3.bytes", "W3 bytes to rank 0, MB", f"≈ final {final / 1e6:g} MB",
         _at_most(final + 65_536)),
        ("W4", f"W4 {s['w4_bytes'] / 1e6:g} MB worker→worker, GB/s", _w4_target, _w4_check),
        ("W5", f"W5 chain of {s['w5_chain']:,}, tasks/s", "≥ 20,000/s", _at_least(20_000)),
        ("W6", f"W6 {s['w6_tasks']:,} tasks + 1 sum, median s", "≤ 0.05 s", _at_most(0.05)),
        ("W7.workers", f"W7 idle {s['w7_idle_s']:g} s, max worker CPU %", "≤ 1%", _at_most(1.0)),
        ("W7.rank0", f"W7 idle {s['w7_idle_s']:g} s, rank-0 CPU %", "≤ 1%", _at_most(1.0)),
        ("W8", "W8 one task, whole process, s", _w8_target, _w8_check),
        ("W9.n1", f"W9 {n1} tasks, µs/task", "", None),
        ("W9.n2", f"W9 {n2} tasks, µs/task", "", None),
        ("W9.n3", f"W9 {n3} tasks, µs/task", "", None),
        ("W9.flat", "W9 slowest/fastest µs/task", "≤ 1.5×", _at_most(1.5)),
        ("W9.mem", f"W9 rank-0 RSS per pending task ({n3})", "≤ 2 KB", _at_most(2048)),
        ("W10.W2.submit", f"{w10} W2 submit, tasks/s", "completes", _completes),
        ("W10.W3", f"{w10} W3, median s", "completes", _completes),
        ("W10.idle.workers", f"{w10} idle, max worker CPU %", "≤ 5%", _at_most(5.0)),
        ("W10.idle.rank0", f"{w10} idle, rank-0 CPU %", "≤ 5%", _at_most(5.0)),
    ]


def _at_most(limit):
    return lambda value, rows: value <= limit


def _at_least(limit):
    return lambda value, rows: value >= limit


def _completes(value, rows):
    return value is not None


def _value(rows, row, system):
    return rows.get(row, {}).get(system, {}).get("value")


def _w4_target(rows):
    raw = _value(rows, "W4", "raw")
    return "≥ 75% of raw" + (f" = {0.75 * raw:.2f} GB/s" if raw is not None else "")


def _w4_check(value, rows):
    raw = _value(rows, "W4", "raw")
    return None if raw is None else value >= 0.75 * raw


def _w8_target(rows):
    reference = _value(rows, "W8", "mpi4py")
    limit = f" = {1.25 * reference:.3f} s" if reference is not None else ""
    return f"≤ 0.6 s and ≤ 1.25× mpi4py.futures{limit}"


def _w8_check(value, rows):
    reference = _value(rows, "W8", "mpi4py")
    if value > 0.6:
        return False
    return None if reference is None else value <= 1.25 * reference


def target_met(check, row, rows):
    value = _value(rows, row, "mpifutures")
    if check is None or value is None:
        return None
    return bool(check(value, rows))


def format_value(record):
    """Text for one cell: the figure, or ``—`` (the JSON says why)."""
    value, unit = record.get("value"), record.get("unit")
    if value is None:
        return "—" if "na" in record else "error" if "error" in record else "—"
    formats = {"µs": "{:,.0f}", "tasks/s": "{:,.0f}", "s": "{:.3f}", "GB/s": "{:.2f}",
               "%": "{:.2f}", "ratio": "{:.2f}×", "µs/task": "{:,.1f}", "B/task": "{:,.0f} B"}
    if unit == "B":
        return f"{value / 1e6:,.2f}"
    return formats.get(unit, "{}").format(value)


def render(rows, specs, systems, header, show_marks):
    """The table as text: one line per row that any system reported."""
    columns = [SYSTEM_LABELS[s] for s in systems]
    width0 = max(len(label) for _, label, _, _ in specs)
    widths = [max(12, len(c)) for c in columns]
    lines = [*header, ""]
    title = ["workload".ljust(width0)] + [c.rjust(w) for c, w in zip(columns, widths)]
    lines.append("  ".join(title) + "  target (mpifutures)")
    lines.append("-" * len(lines[-1]))
    for row, label, target, check in specs:
        if row not in rows:
            continue
        cells = [format_value(rows[row].get(s, {})).rjust(w) for s, w in zip(systems, widths)]
        mark = {True: " ✓", False: " ✗", None: ""}[target_met(check, row, rows)]
        text = target(rows) if callable(target) else target
        lines.append("  ".join([label.ljust(width0), *cells]) + "  " + text
                     + (mark if show_marks else ""))
    return "\n".join(lines)
