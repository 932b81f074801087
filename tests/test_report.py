"""Tests for the Chrome trace export and the self-contained HTML report (no MPI needed)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from tests.conftest import require

from mpifutures import report, trace

SETTINGS = {"ranks": 8, "hosts": "node01,node02", "MPI library": "MPICH 4.1", "python": "3.11"}


def synth(n: int, ranks: int = 8, seed: int = 0, errors: float = 0.02) -> list:
    """Synthetic task-stream records: back-to-back tasks on ranks 1..ranks-1."""
    rng = random.Random(seed)
    prefixes = ["load", "transform", "reduce", "write"]
    free = {r: 1000.0 for r in range(1, ranks)}
    out = []
    for i in range(n):
        rank = min(free, key=free.get)
        prefix = prefixes[i % len(prefixes)]
        start = free[rank] + rng.uniform(0, 0.001)
        stop = start + rng.expovariate(20.0)
        free[rank] = stop
        fetches = [{"from": rng.randrange(ranks), "nbytes": rng.randrange(1, 10**6),
                    "seconds": rng.uniform(0, 0.002)} for _ in range(rng.randrange(3))]
        out.append({"key": f"{prefix}-{i}", "prefix": prefix, "rank": rank, "start": start,
                    "stop": stop, "status": "error" if rng.random() < errors else "finished",
                    "nbytes": rng.randrange(10**5), "fetches": fetches})
    return out


def small() -> list:
    """Three hand-made records with known totals."""
    return [
        {"key": "a-1", "prefix": "a", "rank": 1, "start": 10.0, "stop": 11.0,
         "status": "finished", "nbytes": 100, "fetches": []},
        {"key": "a-2", "prefix": "a", "rank": 2, "start": 10.5, "stop": 12.5,
         "status": "error", "nbytes": 0, "fetches": [{"from": 1, "nbytes": 100, "seconds": 0.1}]},
        {"key": "b-1", "prefix": "b", "rank": 1, "start": 11.0, "stop": 11.5,
         "status": "finished", "nbytes": 7,
         "fetches": [{"from": 2, "nbytes": 5, "seconds": 0.0},
                     {"from": 0, "nbytes": 30, "seconds": 0.2}]},
    ]


# ---------------------------------------------------------------- trace


def test_trace_is_valid_and_complete() -> None:
    recs = synth(500)
    tr = trace.to_chrome_trace(recs)
    trace.validate_trace(tr)
    assert tr["displayTimeUnit"] == "ms"
    tasks = [e for e in tr["traceEvents"] if e["ph"] == "X" and e["cat"].startswith("task")]
    assert len(tasks) == len(recs)
    for ev in tr["traceEvents"]:
        assert {"name", "ph", "pid", "tid"} <= ev.keys()
        if ev["ph"] == "X":
            assert ev["dur"] >= 0 and ev["ts"] >= 0
    assert min(e["ts"] for e in tr["traceEvents"] if e["ph"] == "X") == 0


def test_trace_one_named_process_per_rank() -> None:
    recs = synth(300, ranks=5)
    tr = trace.to_chrome_trace(recs)
    names = [e for e in tr["traceEvents"] if e["ph"] == "M" and e["name"] == "process_name"]
    pids = [e["pid"] for e in names]
    assert sorted(pids) == sorted({r["rank"] for r in recs})
    assert all(e["args"]["name"] == f"rank {e['pid']}" for e in names)
    assert {e["pid"] for e in tr["traceEvents"]} == set(pids)


def test_trace_fetches_and_errors() -> None:
    tr = trace.to_chrome_trace(small())
    trace.validate_trace(tr)
    fetches = [e for e in tr["traceEvents"] if e.get("cat") == "transfer"]
    assert sorted((e["args"]["from"], e["args"]["to"], e["args"]["nbytes"]) for e in fetches) == [
        (0, 1, 30), (1, 2, 100), (2, 1, 5)]
    assert all(e["tid"] == trace.TRANSFER_TID for e in fetches)
    err = [e for e in tr["traceEvents"] if e.get("cat") == "task,error"]
    assert [e["args"]["key"] for e in err] == ["a-2"]
    # fetch before b-1 ends where the task starts; the earliest event is at ts 0
    b1 = next(e for e in tr["traceEvents"] if e.get("args", {}).get("key") == "b-1"
              and e["cat"] == "task")
    assert max(e["ts"] + e["dur"] for e in fetches if e["pid"] == 1) == pytest.approx(b1["ts"])


def test_trace_empty_and_malformed() -> None:
    assert trace.to_chrome_trace([]) == {"traceEvents": [], "displayTimeUnit": "ms"}
    bad = [{"key": "x"}, {"key": "y", "rank": 1, "start": "nan?", "stop": 2}]
    tr = trace.to_chrome_trace(bad + small()[:1])
    trace.validate_trace(tr)
    assert sum(e["ph"] == "X" for e in tr["traceEvents"]) == 1


def test_validate_rejects_bad_events() -> None:
    good = {"name": "t", "ph": "X", "ts": 0, "dur": 1, "pid": 1, "tid": 0}
    trace.validate_trace({"traceEvents": [good]})
    for broken in ({**good, "dur": -1}, {**good, "ts": float("nan")},
                   {k: v for k, v in good.items() if k != "pid"}, {**good, "ph": "?"},
                   {"name": "bogus", "ph": "M", "pid": 1, "tid": 0, "args": {}}):
        with pytest.raises(ValueError):
            trace.validate_trace({"traceEvents": [broken]})
    with pytest.raises(ValueError):
        trace.validate_trace({"events": []})


def test_write_chrome_trace_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "trace.json"
    written = trace.write_chrome_trace(str(path), synth(50))
    assert json.loads(path.read_text()) == written
    gz = tmp_path / "trace.json.gz"
    trace.write_chrome_trace(str(gz), synth(50))
    import gzip
    assert json.loads(gzip.decompress(gz.read_bytes())) == written


# ---------------------------------------------------------------- summarize


def test_summarize_counts() -> None:
    s = report.summarize(small())
    assert (s["n_tasks"], s["n_finished"], s["n_errors"]) == (3, 2, 1)
    assert s["ranks"] == [1, 2]
    assert s["start"] == 10.0 and s["stop"] == 12.5 and s["wall"] == 2.5
    a, b = s["prefixes"]["a"], s["prefixes"]["b"]
    assert (a["count"], a["errors"], a["total"], a["mean"], a["max"]) == (2, 1, 3.0, 1.5, 2.0)
    assert (b["count"], b["total"]) == (1, 0.5)
    assert list(s["prefixes"]) == ["a", "b"]  # sorted by total time
    assert s["transfers"] == {0: {1: 30}, 1: {2: 100}, 2: {1: 5}}
    assert (s["bytes_moved"], s["n_fetches"], s["result_bytes"]) == (135, 3, 107)
    assert s["per_rank"][1]["count"] == 2 and s["per_rank"][2]["busy"] == 2.0
    tp = s["throughput"]
    assert sum(tp["finished"]) == 2 and sum(tp["error"]) == 1


def test_summarize_empty_and_big() -> None:
    s = report.summarize([])
    assert s["n_tasks"] == 0 and s["ranks"] == [] and s["bytes_moved"] == 0
    big = report.summarize(synth(5000), bins=50)
    assert big["n_tasks"] == 5000 and len(big["throughput"]["finished"]) == 50
    assert sum(p["count"] for p in big["prefixes"].values()) == 5000


# ---------------------------------------------------------------- HTML report

_REMOTE = re.compile(r"""(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/|@import|\bsrc\s*=|url\(""", re.I)


def _check_offline(text: str) -> None:
    assert "http://" not in text and "https://" not in text
    assert not _REMOTE.search(text), _REMOTE.search(text)
    assert "<link" not in text.lower()


@pytest.mark.parametrize("n", [0, 1, 2000])
def test_report_self_contained(tmp_path: Path, n: int) -> None:
    path = tmp_path / "r.html"
    report.write_report(str(path), synth(n), SETTINGS)
    text = path.read_text(encoding="utf-8")
    _check_offline(text)
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert "$" not in text.split("<script>")[0]  # every template field substituted
    assert "MPICH 4.1" in text and "node01,node02" in text
    if n:
        assert text.count('class="c') >= n and "<title>" in text and 'id="matrix"' in text
    else:
        assert "No tasks recorded." in text


def test_report_escapes_and_marks_errors(tmp_path: Path) -> None:
    recs = small()
    recs[0]["prefix"] = "<script>alert(1)</script>"
    path = tmp_path / "r.html"
    report.write_report(str(path), recs, {"<b>": "</table>"})
    text = path.read_text(encoding="utf-8")
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)" in text
    assert "&lt;/table&gt;" in text
    assert len(re.findall(r'class="c\d+ err"', text)) == 1


def test_report_100k_records_is_bounded(tmp_path: Path) -> None:
    recs = synth(100_000, ranks=16)
    path = tmp_path / "big.html"
    report.write_report(str(path), recs, SETTINGS)
    size = path.stat().st_size
    assert size < 5_000_000, size
    text = path.read_text(encoding="utf-8")
    _check_offline(text)
    assert "aggregated into time bins" in text
    assert text.count("<rect") < 40_000


def test_report_many_ranks_and_prefixes(tmp_path: Path) -> None:
    recs = synth(3000, ranks=200)
    for i, r in enumerate(recs):
        r["prefix"] = f"p{i % 120}"
    path = tmp_path / "r.html"
    report.write_report(str(path), recs, {})
    text = path.read_text(encoding="utf-8")
    assert "more prefixes" in text and "other</span>" in text
    assert text.count('class="mx"') <= report.MAX_MATRIX ** 2


def test_template_ships_next_to_module() -> None:
    assert report.TEMPLATE.is_file()


def test_modules_do_not_need_mpi4py() -> None:
    code = ("import importlib.util, sys; sys.modules['mpi4py'] = None\n"
            "for name in ('trace', 'report', 'progress'):\n"
            "    spec = importlib.util.spec_from_file_location(\n"
            "        'mpf_' + name, sys.argv[1] + '/' + name + '.py')\n"
            "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n")
    pkg = os.path.dirname(report.__file__)
    subprocess.run([sys.executable, "-c", code, pkg], check=True, timeout=60)


# ---------------------------------------------------------------- headless browser


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome", "headless_shell"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _chrome_cmd(binary: str, profile: Path) -> list:
    return [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}"]


def _png_pixels(data: bytes) -> tuple:
    """Decode an 8-bit RGB/RGBA, non-interlaced PNG into (width, height, channels, rows)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, hdr = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, ctype, _, _, interlace = hdr
    assert depth == 8 and ctype in (2, 6) and interlace == 0, hdr
    ch = 3 if ctype == 2 else 4
    raw, stride, rows, prev = zlib.decompress(idat), width * ch, [], bytearray(width * ch)
    for y in range(height):
        base = y * (stride + 1)
        ftype, line = raw[base], bytearray(raw[base + 1:base + 1 + stride])
        for i in range(stride):
            a = line[i - ch] if i >= ch else 0
            b, c = prev[i], prev[i - ch] if i >= ch else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 255
            elif ftype == 2:
                line[i] = (line[i] + b) & 255
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line)
        prev = line
    return width, height, ch, rows


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    binary = _chromium()
    if binary is None:
        require(False, "no chromium binary on PATH (apt-get install -y chromium); CI installs it")
    html_path, png = tmp_path / "r.html", tmp_path / "r.png"
    report.write_report(str(html_path), synth(400), SETTINGS)
    url = html_path.resolve().as_uri()
    dom = subprocess.run(_chrome_cmd(binary, tmp_path / "p1") + [
        "--enable-logging=stderr", "--v=0", "--dump-dom", url],
        capture_output=True, text=True, timeout=120)
    status = re.search(r'<p id="jsstatus">([^<]*)</p>', dom.stdout)
    assert status, (dom.stdout[-2000:], dom.stderr[-2000:])
    # the page's script replaces the status text; an error handler would write "js-error"
    assert re.fullmatch(r"report-ready: \d+ timeline shapes", status.group(1)), status.group(1)
    assert int(status.group(1).split()[1]) >= 400
    assert not re.search(r"Uncaught|CONSOLE.*Error", dom.stderr), dom.stderr[-2000:]
    subprocess.run(_chrome_cmd(binary, tmp_path / "p2") + [
        f"--screenshot={png}", "--window-size=1200,900", url],
        capture_output=True, timeout=120, check=True)
    width, height, ch, rows = _png_pixels(png.read_bytes())
    assert (width, height) == (1200, 900)
    # the timeline band (roughly y 250..450) must hold many saturated (coloured) pixels
    coloured = sum(1 for y in range(240, 460, 4) for x in range(0, width * ch, ch * 4)
                   if max(rows[y][x:x + 3]) - min(rows[y][x:x + 3]) > 60)
    assert coloured > 1000, coloured
    distinct = {bytes(rows[y][x:x + 3]) for y in range(0, height, 8)
                for x in range(0, width * ch, ch * 8)}
    assert len(distinct) > 8
