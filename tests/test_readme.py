"""Every Python block of README.md that imports mpifutures runs as a script under mpiexec."""

from __future__ import annotations

import os
import re

import pytest

from tests.mpirun import ROOT, mpiexec

with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as _fh:
    README = _fh.read()
BLOCKS = [b for b in re.findall(r"```python\n(.*?)```", README, re.S) if "mpifutures" in b]


def test_the_readme_has_examples():
    assert len(BLOCKS) >= 8


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, tmp_path):
    block = BLOCKS[index]
    path = tmp_path / f"block{index}.py"
    path.write_text(block)
    spmd = "mpifutures.init()" in block
    args = [str(path)] if spmd else ["-m", "mpifutures", str(path)]
    r = mpiexec(3, args, timeout=120, env={"PYTHONPATH": ROOT})
    assert r.returncode == 0, f"README block {index}:\n{block}\n{r}"
    assert "Traceback" not in r.stderr, r
