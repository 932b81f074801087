#!/bin/bash
# mpifutures across two Slurm nodes, ranks started by srun.
#
#   cd /path/to/your/project && sbatch jobscripts/slurm_srun_multi_node.sh [script.py [args...]]
#
# Rank 0 (script and scheduler) lands on the first node; workers fill both nodes. Results stay
# on the worker that made them and move rank to rank only when a task needs them.
#SBATCH --job-name=mpifutures
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=2
#SBATCH --time=00:10:00
#SBATCH --output=mpifutures-%j.out
# Sites often also need a partition or an account: #SBATCH --partition=... / --account=...
set -euo pipefail

# MPI: on a cluster, load the site's MPI here and build mpi4py against it once (on a login node):
#   module load openmpi            # or mpich, intel-mpi, ... (`module avail mpi`)
#   env MPICC=mpicc python -m pip install --no-binary=mpi4py mpi4py
# With the PyPI wheels instead (`pip install mpi4py mpich`) nothing is loaded here; the wheel
# talks TCP between nodes, a site MPI built for the cluster's network is faster.
# The environment (and the project) must be visible on every node, e.g. on a shared file system.
# Activate your environment here too if you use one: source ~/venvs/mpifutures/bin/activate

PYTHON=${PYTHON:-python3}
# The script and its arguments: this job's own arguments, else $MPIFUTURES_SCRIPT. A relative
# path is taken from the directory sbatch was called in (Slurm starts the job there).
(($# > 0)) || set -- "${MPIFUTURES_SCRIPT:-examples/tree_reduction.py}"

echo "mpifutures: job ${SLURM_JOB_ID} on ${SLURM_JOB_NUM_NODES} node(s) ${SLURM_JOB_NODELIST}," \
    "${SLURM_NTASKS} tasks: $*"

# --mpi=pmi2 is how MPICH (and the mpich wheel) learns its rank and size from srun. Without the
# right plugin every rank starts as rank 0 of 1 and the job "succeeds" with the wrong answer.
# Open MPI 5 wants --mpi=pmix instead; `srun --mpi=list` shows what your Slurm offers.
# With the mpich wheel, MPI_Init can fail at random under srun with "mpi/pmi2: value not
# properly terminated": Slurm's pmi2 plugin (22.05 at least) reads each request in one
# 1024-byte read, and the wheel's UCX addresses can make longer ones. Its OFI module's
# addresses are short; uncomment for the wheel (a site MPI needs none of this):
# export MPIR_CVAR_CH4_NETMOD=ofi
# --kill-on-bad-exit: if a rank dies before MPI is up (a bad environment on one node, an import
# error), the others would wait for it in MPI_Init until the time limit; this ends the job now.
srun --mpi=pmi2 --kill-on-bad-exit=1 "$PYTHON" -m mpifutures "$@"
