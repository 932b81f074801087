#!/bin/bash
# mpifutures under IBM Spectrum LSF, ranks started by mpiexec.
#
#   cd /path/to/your/project && bsub < jobscripts/lsf_mpiexec.sh
#   MPIFUTURES_SCRIPT=my_script.py bsub < jobscripts/lsf_mpiexec.sh    # another script
#
# The "<" matters: bsub reads the #BSUB lines only from a script given on standard input.
# bsub passes your environment along (PATH, PYTHON, MPIFUTURES_SCRIPT) but no arguments.
# Rank 0 runs the script (with the scheduler thread); the other ranks are workers.
#BSUB -J mpifutures
#BSUB -n 4
#BSUB -W 00:10
#BSUB -o mpifutures-%J.out
# Sites often also need a queue or a project: #BSUB -q ... / #BSUB -P ...
set -euo pipefail

# LSF starts the job in the submission directory; say so for sites that change that.
cd "${LS_SUBCWD:-.}"

# MPI: load the site's MPI here and build mpi4py against it once (on a login node):
#   module load openmpi            # or mpich, intel-mpi, spectrum-mpi, ... (`module avail mpi`)
#   env MPICC=mpicc python -m pip install --no-binary=mpi4py mpi4py
# mpiexec must come from the same MPI that mpi4py was built with (with the PyPI wheels,
# `pip install mpi4py mpich`, that is the mpich wheel's mpiexec). Some sites want their own
# launcher here instead (Spectrum MPI: mpirun; Summit-like machines: jsrun).

PYTHON=${PYTHON:-python3}
MPIEXEC=${MPIEXEC:-mpiexec}
(($# > 0)) || set -- "${MPIFUTURES_SCRIPT:-examples/tree_reduction.py}"

NP=${LSB_DJOB_NUMPROC:-4}
echo "mpifutures: job ${LSB_JOBID:-?} with ${NP} processes on ${LSB_HOSTS:-?}: $*"

# MPICH's and Open MPI's mpiexec read the LSF allocation themselves; -n keeps the count explicit.
# If a rank dies before MPI is up (bad environment, import error), MPICH's mpiexec leaves
# the others waiting in MPI_Init until the walltime: keep it short while trying things out.
"$MPIEXEC" -n "$NP" "$PYTHON" -m mpifutures "$@"
