#!/bin/bash
# mpifutures under Slurm, ranks started by the MPI library's own mpiexec.
#
#   cd /path/to/your/project && sbatch jobscripts/slurm_mpiexec.sh [script.py [args...]]
#
# Use this when srun's MPI plugins do not match your MPI. MPICH's and Open MPI's mpiexec both see
# the Slurm allocation and start their ranks inside it (through srun) on the allocated nodes.
#SBATCH --job-name=mpifutures
#SBATCH --ntasks=4
#SBATCH --time=00:10:00
#SBATCH --output=mpifutures-%j.out
# Sites often also need a partition or an account: #SBATCH --partition=... / --account=...
set -euo pipefail

# MPI: on a cluster, load the site's MPI here and build mpi4py against it once (on a login node):
#   module load openmpi            # or mpich, intel-mpi, ... (`module avail mpi`)
#   env MPICC=mpicc python -m pip install --no-binary=mpi4py mpi4py
# mpiexec must come from the same MPI that mpi4py was built with: with the PyPI wheels
# (`pip install mpi4py mpich`) that is the mpiexec the mpich wheel puts next to python.
# Activate your environment here too if you use one: source ~/venvs/mpifutures/bin/activate

PYTHON=${PYTHON:-python3}
MPIEXEC=${MPIEXEC:-mpiexec}
# The script and its arguments: this job's own arguments, else $MPIFUTURES_SCRIPT. A relative
# path is taken from the directory sbatch was called in (Slurm starts the job there).
(($# > 0)) || set -- "${MPIFUTURES_SCRIPT:-examples/tree_reduction.py}"

echo "mpifutures: job ${SLURM_JOB_ID} on ${SLURM_JOB_NUM_NODES} node(s) ${SLURM_JOB_NODELIST}," \
    "${SLURM_NTASKS} tasks: $*"

# Say -n explicitly: left alone, an mpiexec may count cores instead of Slurm tasks.
# Caveat: if a rank dies before MPI is up (a bad environment, an import error), MPICH's mpiexec
# leaves the other ranks waiting in MPI_Init until the job's time limit, so keep --time short
# while trying things out; the srun scripts end such a job at once (--kill-on-bad-exit).
# Open MPI run as root (containers) also needs OMPI_ALLOW_RUN_AS_ROOT=1 and
# OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1, and --oversubscribe if tasks outnumber cores.
"$MPIEXEC" -n "$SLURM_NTASKS" "$PYTHON" -m mpifutures "$@"
