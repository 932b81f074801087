"""Task stream, performance report, trace export and progress, on a live cluster.

Part of the behaviour suite (in-process and under mpiexec).
"""

from __future__ import annotations

import io
import json
import os

import mpifutures
from mpifutures.trace import validate_trace
from tests import tasks


def test_task_stream_has_one_complete_record_per_task(executor):
    executor.get_task_stream(record=True)
    try:
        ranks = list(executor.workers)
        x = executor.submit(tasks.make_array, 50_000, workers=[ranks[0]], pure=False)
        y = executor.submit(tasks.array_sum, x, workers=[ranks[-1]], pure=False)
        fs = [executor.submit(tasks.inc, i, pure=False) for i in range(20)] + [x, y]
        executor.gather(fs)
        records = executor.get_task_stream()
    finally:
        executor.get_task_stream(record=False)
    by_key = {r["key"]: r for r in records}
    assert all(f.key in by_key for f in fs)
    assert len([r for r in records if r["key"] in {f.key for f in fs}]) == len(fs)
    for f in fs:
        r = by_key[f.key]
        assert r["rank"] in executor.workers and r["start"] <= r["stop"]
        assert r["status"] == "finished" and r["prefix"] == f.key.rsplit("-", 1)[0]
    assert by_key[x.key]["rank"] == ranks[0] and by_key[y.key]["rank"] == ranks[-1]
    fetch = by_key[y.key]["fetches"]
    assert [(f["from"], f["nbytes"] >= 400_000) for f in fetch] == [(ranks[0], True)]


def test_recording_is_off_unless_asked(executor):
    executor.get_task_stream(record=False)
    executor.gather(executor.map(tasks.inc, range(5), pure=False))
    before = len(executor.get_task_stream())
    executor.gather(executor.map(tasks.inc, range(5), pure=False))
    assert len(executor.get_task_stream()) == before


def test_performance_report_and_chrome_trace(executor, tmp_path):
    html, trace = tmp_path / "report.html", tmp_path / "trace.json"
    with mpifutures.performance_report(str(html), trace=str(trace), executor=executor):
        executor.gather(executor.map(tasks.slow_inc, range(6), [0.01] * 6, pure=False))
        executor.submit(tasks.fail, "in report", pure=False).exception(10)
    page = html.read_text()
    assert "Task stream" in page and "slow_inc" in page and "Settings" in page
    assert "http://" not in page and "https://" not in page
    data = json.loads(trace.read_text())
    validate_trace(data)
    names = [e.get("name", "") for e in data["traceEvents"] if e.get("ph") == "X"]
    assert sum("slow_inc" in n for n in names) == 6


def test_progress_counts_finished_and_failed(executor):
    fs = [executor.submit(tasks.slow_inc, i, 0.01, pure=False) for i in range(8)]
    fs.append(executor.submit(tasks.fail, "progress", pure=False))
    out = io.StringIO()
    summary = mpifutures.progress(fs, file=out, interval=0.05)
    assert summary["total"] == 9 and summary["finished"] == 8 and summary["error"] == 1
    assert "\r" not in out.getvalue() and out.getvalue().strip().endswith("done")
    assert os.linesep in out.getvalue()
