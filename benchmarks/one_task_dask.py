"""W8: one task, whole process, on a dask LocalCluster. ``python one_task_dask.py [workers]``."""

import sys

from dask.distributed import Client, LocalCluster

if __name__ == "__main__":
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        assert client.submit(abs, -1).result() == 1
