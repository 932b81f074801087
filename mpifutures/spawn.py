"""Spawn mode: a plain ``python`` process starts its own workers with ``MPI.COMM_SELF.Spawn``."""

from __future__ import annotations

from typing import Any, Optional

from .config import Config
from .errors import MpiFuturesError


def spawn_cluster(MPI: Any, config: Config, max_workers: Optional[int]) -> Any:
    """Spawn workers and return a scheduler that owns them (not implemented yet)."""
    raise MpiFuturesError(
        "no mpifutures cluster is running in this process. Start the script with "
        "`mpiexec -n N python -m mpifutures script.py`, or call mpifutures.init() first.")
