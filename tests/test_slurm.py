"""The cluster path on a real one-node Slurm started by the test (Debian's packages, root).

Cells go through the project's own launcher config (hydra/launcher=slurm -> submitit_slurm).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from src import PROJECT_ROOT
from tests.helpers.slurm_cluster import LocalSlurm

pytestmark = pytest.mark.slurm

GRID = ["experiment=smoke", "tracker.mode=disabled", "benchmark.nq.limit=3", "benchmark.humaneval.limit=2"]
SLURM = ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=0",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=20"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0 and not shutil.which("slurmctld"):
        pytest.skip("needs root (to install Debian's slurm packages) or an installed Slurm")
    slurm = LocalSlurm(tmp_path_factory.mktemp("slurm")).start()
    try:
        yield slurm
    finally:
        slurm.stop()  # also when a test failed


def launch(cluster, tmp_path, sweep: str, *overrides: str, launcher=SLURM, wait=True):
    args = [sys.executable, "-m", "src.main", "-m", *GRID, *launcher, f"hydra.sweep.dir={tmp_path / sweep}",
            f"store_dir={tmp_path / 'cells'}", *overrides]
    if not wait:
        log = open(tmp_path / f"{sweep}.log", "w")  # noqa: SIM115 - the process owns it until it exits
        return subprocess.Popen(args, cwd=PROJECT_ROOT, env=cluster.env(), stdout=log, stderr=subprocess.STDOUT)
    return subprocess.run(args, cwd=PROJECT_ROOT, env=cluster.env(), capture_output=True, text=True, timeout=600)


def statuses(folder: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(folder.glob("*/status.json"))}


def comparable(results: dict) -> dict:
    return {key: results[key] for key in ("run_id", "axes", "tokens", "metrics", "model_parameters")} | {
        "loss": results["train"]["final_loss"] if results["train"] else None}


def test_srun_runs_on_the_node(cluster):
    assert cluster.run("srun", "hostname").stdout.strip() == cluster.host


def test_grid_on_slurm_equals_local_run(cluster, tmp_path):
    proc = launch(cluster, tmp_path, "slurm", "data.amount=0,1K")
    assert proc.returncode == 0, proc.stderr[-3000:]
    local = launch(cluster, tmp_path, "local", "data.amount=0,1K", f"store_dir={tmp_path / 'local_cells'}",
                   launcher=[])
    assert local.returncode == 0, local.stderr[-3000:]
    on_slurm = [json.loads(p.read_text()) for p in sorted((tmp_path / "slurm").glob("*/results.json"))]
    here = [json.loads(p.read_text()) for p in sorted((tmp_path / "local").glob("*/results.json"))]
    assert len(on_slurm) == 2
    assert [comparable(r) for r in on_slurm] == [comparable(r) for r in here]
    assert len(list((tmp_path / "slurm" / ".submitit").iterdir())) >= 1  # it really went through sbatch


def test_array_parallelism_is_capped(cluster, tmp_path):
    proc = launch(cluster, tmp_path, "capped", "data.amount=0,500,1K", "hydra.launcher.array_parallelism=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    scripts = list((tmp_path / "capped" / ".submitit").rglob("*_submission.sh"))
    assert scripts and any(re.search(r"#SBATCH --array=0-2%1", s.read_text()) for s in scripts)
    windows = sorted((s["started_unix"], s["finished_unix"]) for s in statuses(tmp_path / "capped").values())
    assert len(windows) == 3
    for (_, end), (start, _) in zip(windows, windows[1:], strict=False):
        assert start >= end  # one cell at a time


def test_a_failing_cell_is_reported_while_the_others_finish(cluster, tmp_path):
    proc = launch(cluster, tmp_path, "failing", "data.amount=500,99M")
    assert proc.returncode != 0
    states = statuses(tmp_path / "failing")
    assert sorted(s["state"] for s in states.values()) == ["done", "failed"]
    assert "1 cell(s) did not finish" in proc.stdout + proc.stderr


def test_cancelled_cell_is_the_only_one_run_again(cluster, tmp_path):
    # the second cell trains long enough (one row per step) to be cancelled while it runs
    overrides = ["data.amount=0,12K", "train.rows_per_step=1", "train.block_length=64", "train.checkpoint_every=5"]
    sweep = launch(cluster, tmp_path, "cancel", *overrides, wait=False)
    try:
        job_dir = None
        deadline = time.time() + 300
        while time.time() < deadline and job_dir is None:
            for name, status in statuses(tmp_path / "cancel").items():
                if name.startswith("1_") and status["state"] == "running":
                    job_dir = name
            time.sleep(0.5)
        assert job_dir, "the long cell never started"
        work = Path(statuses(tmp_path / "cancel")[job_dir]["work_dir"])
        deadline = time.time() + 300  # cancel once a resumable state exists: the rerun must resume from it
        while time.time() < deadline and not list((work / "train_state").glob("step-*")):
            time.sleep(0.5)
        assert list((work / "train_state").glob("step-*")), "no resumable state was written"
        queue = cluster.run("squeue", "-h", "-o", "%i %j").stdout.split()
        array_ids = [q for q in queue if re.fullmatch(r"\d+_1", q)]
        assert array_ids, queue
        cluster.run("scancel", array_ids[0])
        # Without accounting storage (sacct), submitit cannot see the cancellation and would wait on;
        # a person stops the sweep, as here, once the other cell is done. (Real clusters have sacct.)
        deadline = time.time() + 300
        while time.time() < deadline and cluster.run("squeue", "-h").stdout.strip():
            time.sleep(0.5)
        assert not cluster.run("squeue", "-h").stdout.strip()  # the other cell finished, the cancelled one is gone
        sweep.terminate()
        sweep.communicate(timeout=60)
        assert statuses(tmp_path / "cancel")[job_dir]["state"] == "running"  # killed: never marked done
    finally:
        if sweep.poll() is None:  # never leave a launcher behind
            sweep.kill()

    proc = launch(cluster, tmp_path, "cancel", *overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = statuses(tmp_path / "cancel")
    assert after[job_dir]["state"] == "done"
    assert [s["state"] for name, s in after.items() if name != job_dir] == ["skipped"]
    resumed = json.loads((tmp_path / "cancel" / job_dir / "results.json").read_text())["train"]["resumed_from_step"]
    assert resumed >= 5 and resumed % 5 == 0  # it went on from its last state, not from step 0


def test_two_process_cell_runs_through_the_worker(cluster, tmp_path):
    """A cell with train.nproc=2: its Slurm job starts the same torchrun worker (gloo on CPU) that
    multi-GPU cells use, and trains the model one process trains (same global batch)."""
    two = launch(cluster, tmp_path, "two", "data.amount=1K", "train.nproc=2", "train.rows_per_step=2",
                 "hydra.launcher.cpus_per_task=2", f"store_dir={tmp_path / 'two_cells'}")
    assert two.returncode == 0, two.stderr[-3000:]
    one = launch(cluster, tmp_path, "one", "data.amount=1K", "train.rows_per_step=2", f"store_dir={tmp_path / 'one_cells'}")
    assert one.returncode == 0, one.stderr[-3000:]
    [two_results] = [json.loads(p.read_text()) for p in (tmp_path / "two").glob("*/results.json")]
    [one_results] = [json.loads(p.read_text()) for p in (tmp_path / "one").glob("*/results.json")]
    assert two_results["train"]["world_size"] == 2 and one_results["train"]["world_size"] == 1
    assert (tmp_path / "two_cells" / two_results["run_id"] / "resolved.yaml").exists()  # the worker's input
    assert two_results["train"]["final_loss"] == pytest.approx(one_results["train"]["final_loss"], rel=1e-4)
    assert two_results["tokens"] == one_results["tokens"]
