"""W8: one task, whole process. ``mpiexec -n 3 python -m mpifutures one_task_mpifutures.py``."""

from mpifutures import Executor

if __name__ == "__main__":
    with Executor() as ex:
        assert ex.submit(abs, -1).result() == 1
