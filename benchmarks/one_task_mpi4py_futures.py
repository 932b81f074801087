"""W8: one task, whole process.

``mpiexec -n 3 python -m mpi4py.futures one_task_mpi4py_futures.py``
"""

from mpi4py.futures import MPIPoolExecutor

if __name__ == "__main__":
    with MPIPoolExecutor() as ex:
        assert ex.submit(abs, -1).result() == 1
