"""The job scripts in jobscripts/ run unchanged on a real Slurm.

The module fixture starts a two-node test cluster on this machine with tests/slurm/slurm.sh
("n1" and "n2", 4 CPUs each; the two-node set-up serves the one-node jobs as well) and stops it
afterwards; a cluster that is already up is used and left running. Each test submits a script
from jobscripts/ with ``sbatch --wait`` from the project root, exactly as a user would; only
the output file, the job name and the script to run are given on the command line. The tests
skip when Slurm is not installed (``tests/slurm/slurm.sh install`` installs it).

Exit status 0 is not enough: with the wrong MPI wiring every rank starts as rank 0 of a world of
one and the job "succeeds". So a probe script prints the world size that rank 0 sees and asks
every worker, through a task pinned to it, for its Slurm node; the tests check the size, the
workers, the nodes, and that the probe printed once.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parent.parent
SLURM_SH = ROOT / "tests" / "slurm" / "slurm.sh"
JOBSCRIPTS = ROOT / "jobscripts"
SLURM_SCRIPTS = ["slurm_srun_single_node.sh", "slurm_srun_multi_node.sh", "slurm_mpiexec.sh"]
TASKS = 4  # what every Slurm job script asks for
JOB_TIMEOUT_S = 120  # a tree reduction takes seconds; a job still running by then is hung

# Rank 0 runs the user script, so this prints once, with the size of the whole world and the
# Slurm node of each worker (asked through a task pinned to it).
PROBE = """\
import os, sys
from mpi4py import MPI
from mpifutures import Executor

def where():
    return MPI.COMM_WORLD.Get_rank(), os.environ.get("SLURMD_NODENAME", "?")

size = MPI.COMM_WORLD.Get_size()
with Executor() as ex:
    found = [ex.submit(where, workers=[w], pure=False).result(timeout=60) for w in ex.workers]
nodes = sorted({node for _, node in found})
# One write per line: ranks' lines must not interleave if something prints on every rank.
sys.stdout.write(f"probe: world size {size}, workers {[r for r, _ in found]}, "
                 f"nodes {nodes}, args {sys.argv[1:]}\\n")
"""


@dataclass(frozen=True)
class Job:
    returncode: int
    output: str


@pytest.fixture(scope="module")
def slurm_env() -> Iterator[dict[str, str]]:
    """Start the test cluster (unless one is already up) and give the environment to use it."""
    if shutil.which("sbatch") is None:
        require(False, "Slurm is not installed (sbatch not found): run tests/slurm/slurm.sh install")
    # Variables of an enclosing Slurm job (or a user's SBATCH_* defaults) would leak into ours.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))}
    env.update(_slurm_conf_env(), PYTHON=sys.executable)
    # The mpich wheel's default UCX network module hands srun's pmi2 plugin address lines that
    # can pass 1024 bytes, which Slurm 22.05 reads in one 1024-byte read: MPI_Init then fails
    # now and then ("mpi/pmi2: value not properly terminated"). The OFI module's addresses are
    # short. The job scripts and README give users the same advice.
    env["MPIR_CVAR_CH4_NETMOD"] = "ofi"
    already_up = _run_slurm_sh("status", check=False).returncode == 0
    if not already_up:
        _run_slurm_sh("start", "2", timeout=90)
    try:
        nodes = subprocess.run(["sinfo", "--noheader", "--Node", "--format=%N"], env=env,
                               capture_output=True, text=True, timeout=30,
                               check=False).stdout.split()
        if nodes != ["n1", "n2"]:
            pytest.fail(f"the test cluster has nodes {nodes}, these tests need n1 and n2: "
                        "run 'tests/slurm/slurm.sh stop' and try again")
        yield env
    finally:
        if not already_up:  # a cluster somebody else started is theirs to stop
            _run_slurm_sh("stop", timeout=90)


def _run_slurm_sh(*args: str, check: bool = True,
                  timeout: float = 30) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(SLURM_SH), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if check and done.returncode != 0:
        pytest.fail(f"slurm.sh {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done


def _slurm_conf_env() -> dict[str, str]:
    """SLURM_CONF=... as printed by `slurm.sh env`."""
    line = _run_slurm_sh("env").stdout.strip()
    key, _, value = line.removeprefix("export ").partition("=")
    return {key: value}


def sbatch(env: dict[str, str], tmp_path: Path, jobscript: str, *args: str,
           timeout: int = JOB_TIMEOUT_S) -> Job:
    """Submit jobscripts/<jobscript> from the project root, wait for it, return status and output.

    A job still running after ``timeout`` seconds is cancelled (killing sbatch leaves it running).
    """
    name = f"mpifutures-test-{uuid.uuid4().hex[:8]}"
    out = tmp_path / f"{name}.out"
    cmd = ["sbatch", "--wait", f"--job-name={name}", f"--output={out}", f"--chdir={ROOT}",
           f"--time={timeout // 60 + 1}", str(JOBSCRIPTS / jobscript), *args]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        subprocess.run(["scancel", f"--name={name}"], env=env, timeout=30, check=False)
        text = out.read_text() if out.exists() else "(no output file)"
        pytest.fail(f"{jobscript} still running after {timeout}s, cancelled:\n{text}")
    text = out.read_text() if out.exists() else ""
    return Job(done.returncode, f"{done.stderr}{text}")


def write_script(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def probe_lines(job: Job) -> list[str]:
    """The probe's lines: exactly one when rank 0 alone runs the script."""
    return [line for line in job.output.splitlines() if line.startswith("probe:")]


@pytest.mark.parametrize("jobscript", SLURM_SCRIPTS)
def test_script_sees_whole_world(slurm_env, tmp_path, jobscript):
    probe = write_script(tmp_path, "probe.py", PROBE)
    job = sbatch(slurm_env, tmp_path, jobscript, probe, "a", "b c")
    assert job.returncode == 0, job.output
    # Wrong wiring shows as several lines of "world size 1".
    assert len(probe_lines(job)) == 1, job.output
    assert f"probe: world size {TASKS}, workers [1, 2, 3]," in job.output, job.output
    assert "args ['a', 'b c']" in job.output, job.output


@pytest.mark.parametrize("jobscript", SLURM_SCRIPTS)
def test_default_example_runs(slurm_env, tmp_path, jobscript):
    """With no arguments a job script runs examples/tree_reduction.py, which prints its result."""
    job = sbatch(slurm_env, tmp_path, jobscript)
    assert job.returncode == 0, job.output
    assert "examples/tree_reduction.py" in job.output, job.output
    # The example's summary line, once: 16 leaves merged pairwise make 31 tasks.
    summaries = [line for line in job.output.splitlines() if line.startswith("tasks: ")]
    assert len(summaries) == 1 and summaries[0].startswith("tasks: 31,"), job.output


def test_multi_node_job_spans_two_nodes(slurm_env, tmp_path):
    probe = write_script(tmp_path, "probe.py", PROBE)
    job = sbatch(slurm_env, tmp_path, "slurm_srun_multi_node.sh", probe)
    assert job.returncode == 0, job.output
    assert "on 2 node(s) n[1-2]" in job.output, job.output
    # The one MPI world of 4 ranks is spread over both nodes, and tasks run on each.
    assert "nodes ['n1', 'n2']" in job.output, job.output


def test_failing_script_fails_the_job(slurm_env, tmp_path):
    script = write_script(tmp_path, "fails.py", "raise ValueError('deliberate failure')\n")
    job = sbatch(slurm_env, tmp_path, "slurm_srun_single_node.sh", script)
    assert job.returncode != 0, job.output
    assert "ValueError: deliberate failure" in job.output, job.output


def test_script_exit_status_is_the_jobs(slurm_env, tmp_path):
    script = write_script(tmp_path, "exits.py", "import sys\nsys.exit(3)\n")
    job = sbatch(slurm_env, tmp_path, "slurm_srun_single_node.sh", script)
    assert job.returncode == 3, job.output


@pytest.mark.parametrize("jobscript", ["slurm_srun_single_node.sh", "slurm_srun_multi_node.sh"])
def test_rank_that_dies_before_mpi_ends_the_job(slurm_env, tmp_path, jobscript):
    """A worker whose python cannot start must not leave the others waiting in MPI_Init.

    (MPICH's mpiexec does wait, until the time limit: pmodels/mpich#6124. Not tested for
    slurm_mpiexec.sh for that reason; its comments say so.)
    """
    wrapper = tmp_path / "python-fails-on-rank-1"
    wrapper.write_text(f"""#!/bin/bash
if [[ $SLURM_PROCID == 1 ]]; then echo "rank 1: python failed to start" >&2; exit 7; fi
exec {sys.executable} "$@"
""")
    wrapper.chmod(0o755)
    env = dict(slurm_env, PYTHON=str(wrapper))
    job = sbatch(env, tmp_path, jobscript, timeout=30)
    assert job.returncode != 0, job.output
    assert "rank 1: python failed to start" in job.output, job.output


PLAIN_SRUN = """#!/bin/bash
#SBATCH --nodes=1 --ntasks=3
srun --mpi=pmi2 "$PYTHON" -m mpifutures "$@"
"""
KILLS = {
    "worker": """
import os, signal
from mpifutures import Executor
def die():
    os.kill(os.getpid(), signal.SIGKILL)
with Executor() as ex:
    ex.submit(die, workers=[1], pure=False).result()
""",
    "rank 0": """
import os, signal
from mpifutures import Executor
with Executor() as ex:
    ex.submit(abs, -1).result()  # the workers are up, and know rank 0's process
os.kill(os.getpid(), signal.SIGKILL)
""",
}


@pytest.mark.parametrize("killed, says", [
    ("worker", r"WorkerLostError: worker rank 1 \(pid \d+ on \S+\) has died, running "
               r"\['die-\w+'\]"),
    ("rank 0", r"rank 0 \(pid \d+\) has died; worker rank \d aborts the MPI job"),
])
def test_a_rank_killed_under_a_plain_srun_ends_the_job_at_once(slurm_env, tmp_path, killed,
                                                                says):
    """Without --kill-on-bad-exit, srun leaves the other ranks running when one is killed (by
    the out-of-memory killer, say), and MPI tells them nothing: the ranks on its machine notice
    (mpifutures.liveness) and end the job, instead of it waiting for its time limit."""
    jobscript = write_script(tmp_path, "plain_srun.sh", PLAIN_SRUN)
    script = write_script(tmp_path, "kills.py", KILLS[killed])
    start = time.monotonic()
    job = sbatch(slurm_env, tmp_path, jobscript, script, timeout=60)
    assert job.returncode != 0, job.output
    assert re.search(says, job.output), job.output
    assert time.monotonic() - start < 40, job.output


@pytest.mark.parametrize("jobscript", sorted(p.name for p in JOBSCRIPTS.glob("*.sh")))
def test_job_script_is_valid_bash(jobscript):
    """PBS and LSF are not installed here: their scripts are only checked for syntax."""
    done = subprocess.run(["bash", "-n", str(JOBSCRIPTS / jobscript)], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
