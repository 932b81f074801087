#!/bin/bash
# mpifutures under PBS Pro or Torque, ranks started by mpiexec.
#
#   cd /path/to/your/project && qsub -V jobscripts/pbs_mpiexec.sh
#   qsub -V -v MPIFUTURES_SCRIPT=my_script.py jobscripts/pbs_mpiexec.sh    # another script
#
# qsub passes no arguments to the script, so the script to run comes from $MPIFUTURES_SCRIPT
# (-V passes your whole environment: PATH, PYTHON, an activated virtual environment).
# Rank 0 runs the script (with the scheduler thread); the other ranks are workers.
#PBS -N mpifutures
# PBS Pro asks for resources in chunks; Torque writes the same as: #PBS -l nodes=1:ppn=4
#PBS -l select=1:ncpus=4:mpiprocs=4
#PBS -l walltime=00:10:00
#PBS -j oe
# Sites often also need a queue or an account: #PBS -q ... / #PBS -A ...
set -euo pipefail

# PBS starts the job in $HOME; relative paths are meant from where qsub was run.
cd "${PBS_O_WORKDIR:-.}"

# MPI: load the site's MPI here and build mpi4py against it once (on a login node):
#   module load openmpi            # or mpich, intel-mpi, ... (`module avail mpi`)
#   env MPICC=mpicc python -m pip install --no-binary=mpi4py mpi4py
# mpiexec must come from the same MPI that mpi4py was built with (with the PyPI wheels,
# `pip install mpi4py mpich`, that is the mpich wheel's mpiexec).

PYTHON=${PYTHON:-python3}
MPIEXEC=${MPIEXEC:-mpiexec}
(($# > 0)) || set -- "${MPIFUTURES_SCRIPT:-examples/tree_reduction.py}"

# One line of $PBS_NODEFILE per MPI process we were given.
NP=$(wc -l <"$PBS_NODEFILE")
echo "mpifutures: job ${PBS_JOBID} with ${NP} processes: $*"

# -machinefile is understood by both MPICH's and Open MPI's mpiexec.
# If a rank dies before MPI is up (bad environment, import error), MPICH's mpiexec leaves
# the others waiting in MPI_Init until the walltime: keep it short while trying things out.
"$MPIEXEC" -n "$NP" -machinefile "$PBS_NODEFILE" "$PYTHON" -m mpifutures "$@"
