"""Logging set-up: one logger per module under ``mpifutures``, rank in every line."""

from __future__ import annotations

import logging

from .config import Config


def setup_logging(config: Config, rank: int) -> None:
    """Send ``mpifutures.*`` records at ``MPIFUTURES_LOG_LEVEL`` and above to stderr."""
    logger = logging.getLogger("mpifutures")
    if any(getattr(h, "_mpifutures", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler()
    handler._mpifutures = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s rank {rank} %(name)s %(levelname)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(getattr(logging, config.log_level))
    logger.propagate = False
