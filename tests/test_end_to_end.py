"""One tiny cell in-process, and a two-cell grid through the real command line."""

import csv
import json
import math
import subprocess
import sys

from src import PROJECT_ROOT
from src.cell import Cell
from src.pipeline import train_and_eval
from src.plugins import load_config
from src.report.tables import report
from tests.conftest import compose_config

SMALL = ["model=tiny", "data.source.path=tests/fixtures/sharegpt_small.json", "train.block_length=128",
         "benchmark.nq.limit=4", "benchmark.nq.max_new_tokens=8", "benchmark.humaneval.limit=2",
         "benchmark.humaneval.max_new_tokens=8", "train.save_checkpoint=false"]


def test_tiny_cell(tmp_path):
    raw = compose_config([*SMALL, f"store_dir={tmp_path}", f"output_dir={tmp_path}/job", "data.amount=600",
                          "tracker.mode=offline"])
    cell = Cell.of(load_config(raw))
    train_and_eval(cell, raw)
    work = cell.dir  # the cell's own folder: <store_dir>/<run_id>

    results = json.loads((work / "results.json").read_text())
    assert results["run_id"] == cell.run_id
    assert results["axes"] == {"model": "tiny", "data_source": "demo", "amount": 600, "amount_label": "600", "seed": 0,
                               "preference": "none"}
    assert results["tokens"]["total"] == 600
    assert 0 < results["tokens"]["loss_bearing"] < 600
    assert results["train"]["tokens_seen"] == 600  # exactly the budget went through the model
    rows = math.ceil(600 / 128)
    assert results["data"]["rows"] == rows and results["train"]["steps"] == math.ceil(rows / 4)
    assert set(results["metrics"]) == {"nq/em", "nq/f1", "nq/unparsable", "humaneval/pass@1"}
    assert results["mode"] == "separate_run" and results["versions"]["torch"]

    nq_lines = (work / "benchmarks" / "nq" / "predictions.jsonl").read_text().splitlines()
    assert len(nq_lines) == 4 and {"prompt", "output", "gold", "em"} <= set(json.loads(nq_lines[0]))
    nq_metrics = json.loads((work / "benchmarks" / "nq" / "metrics.json").read_text())
    assert nq_metrics["settings"]["shots"] == 3 and nq_metrics["settings"]["chat_wrapped"] is True
    assert nq_metrics["uncertainty"]["em"]["method"] == "wilson" and len(nq_metrics["items"]["ids"]) == 4
    assert results["benchmarks"]["nq"]["uncertainty"] == nq_metrics["uncertainty"]  # copied into results.json
    assert len((work / "benchmarks" / "humaneval" / "predictions.jsonl").read_text().splitlines()) == 2
    runs = list((work / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert len(list(runs[0].glob("files/media/table/nq/predictions_*.table.json"))) == 1  # capped W&B table


def test_grid_from_the_command_line(tmp_path):
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "-m", "src.main", "-m", *SMALL, "data.amount=0,300", "sweep=t", f"hydra.sweep.dir={sweep}",
         f"store_dir={tmp_path / 'cells'}"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
        env={**__import__("os").environ, "WANDB_MODE": "offline"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cells = sorted(sweep.glob("*/results.json"))
    assert len(cells) == 2
    results = [json.loads(p.read_text()) for p in cells]
    assert [r["axes"]["amount"] for r in results] == [0, 300]
    assert results[0]["mode"] == "base_model" and results[0]["tokens"]["total"] == 0 and results[0]["train"] is None
    assert results[1]["tokens"]["total"] == 300
    assert results[0]["run_id"] != results[1]["run_id"]
    for cell in cells:
        status = json.loads((cell.parent / "status.json").read_text())
        assert status["state"] == "done" and status["work_dir"] == str(tmp_path / "cells" / status["run_id"])
        assert len(list((tmp_path / "cells" / status["run_id"] / "wandb").glob("offline-run-*"))) == 1

    assert (sweep / "index.html").exists()  # the Hydra callback wrote the report when the grid ended
    text = report(sweep)
    assert "tiny" in text and "humaneval/pass@1" in text
    with open(sweep / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [row["amount"] for row in table] == ["0", "300"]
    assert (sweep / "scaling.png").stat().st_size > 10_000


def test_grid_as_separate_processes(tmp_path):
    """hydra/launcher=local_parallel (submitit_local): each cell in its own process."""
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "-m", "src.main", "-m", "experiment=smoke", "data.amount=0,1K", "hydra/launcher=local_parallel",
         f"hydra.sweep.dir={sweep}", f"store_dir={tmp_path / 'cells'}", "tracker.mode=disabled"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]
    assert [r["tokens"]["total"] for r in results] == [0, 1000]
    assert len(list((sweep / ".submitit").iterdir())) >= 2  # submitit job folders: separate processes
