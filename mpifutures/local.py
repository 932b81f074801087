"""An in-process cluster: the real scheduler and workers, connected without MPI.

``LocalCluster(n)`` runs rank 0's scheduler and ``n`` worker loops as threads of this process,
joined by a :class:`~mpifutures.transport.LocalFabric` that really pickles every message. It
exists for tests and debugging: the same executor code runs on it as under ``mpiexec``.
"""

from __future__ import annotations

import threading
from typing import Any, Optional

from . import config as configmod
from .scheduler import Scheduler
from .transport import LocalFabric
from .worker import Worker


class LocalCluster:
    """A scheduler and ``n_workers`` workers in threads of this process."""

    def __init__(self, n_workers: int = 2, config: Optional[configmod.Config] = None) -> None:
        config = config or configmod.load()
        self.fabric = LocalFabric(n_workers + 1)
        self.scheduler = Scheduler(self.fabric.endpoints[0], config)
        self.workers = [Worker(ep, config) for ep in self.fabric.endpoints[1:]]
        self.threads = [threading.Thread(target=w.run, name=f"mpifutures-worker-{w.rank}",
                                         daemon=True) for w in self.workers]
        for thread in self.threads:
            thread.start()
        self.scheduler.start()

    def close(self, timeout: float = 10.0) -> bool:
        """Stop the workers and the scheduler; True if everything stopped in time."""
        clean = self.scheduler.stop(timeout)
        for thread in self.threads:
            thread.join(timeout)
        return clean and not any(t.is_alive() for t in self.threads)

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
