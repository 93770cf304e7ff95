"""Cells that never redo work.

A cell's work lives in `<store_dir>/<run_id>/` (run_id = hash of model, data, recipe and seed), so a
relaunched grid — in a new Hydra sweep folder or the same one — finds what is done: a cell whose
results.json already holds every requested benchmark at the same version and settings is skipped
(`force=true` reruns it). Hydra's job folder gets a copy of results.json and a status.json
(running / done / skipped / failed with the error), so failures show while the sweep runs and a
relaunch retries only the cells that did not finish.

Within a cell, stages are skipped too: a saved checkpoint (train.json beside it) is evaluated instead
of retraining, and a benchmark already scored with the same version and settings is reused.
"""

from __future__ import annotations

import dataclasses
import json
import time
import traceback
from pathlib import Path

from src import resolve_path
from src.benchmarks import benchmark_settings
from src.config import RunConfig
from src.io import copy_file_atomic, write_json_atomic

STATUS = "status.json"


def work_dir(cfg: RunConfig) -> Path:
    return resolve_path(cfg.store_dir) / cfg.run_id()


def finished_results(cfg: RunConfig) -> dict | None:
    """The cell's results.json if it already covers every requested benchmark, else None."""
    path = work_dir(cfg) / "results.json"
    if not path.exists():
        return None
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None  # written atomically, so this is a foreign or damaged file: redo the cell
    if results.get("run_id") != cfg.run_id():
        return None
    if any(finished_benchmark(work_dir(cfg), name, raw) is None for name, raw in cfg.benchmark.items()):
        return None
    return results


def finished_training(work: Path) -> dict | None:
    """{"data", "train"} of a training that saved its checkpoint, else None. train.json is written
    after the checkpoint, so its presence means the checkpoint is complete."""
    record = work / "train.json"
    if not record.exists() or not (work / "checkpoint" / "config.json").exists():
        return None
    return json.loads(record.read_text(encoding="utf-8"))


def write_training_record(work: Path, data_summary: dict, train_summary: dict, **extra) -> None:
    """train.json beside a saved checkpoint (write it last: its presence marks the checkpoint complete).
    `extra`: how it was trained (mode, the run_id of the run that trained it, the amount)."""
    write_json_atomic(work / "train.json", {"data": data_summary, "train": train_summary, **extra})


def finished_benchmark(work: Path, name: str, raw: dict) -> dict | None:
    """metrics.json of this benchmark when it was scored with the same version and settings."""
    path = work / "benchmarks" / name / "metrics.json"
    if not path.exists():
        return None
    recorded = json.loads(path.read_text(encoding="utf-8"))
    wanted = dataclasses.asdict(benchmark_settings(name, raw))
    if recorded.get("requested") != json.loads(json.dumps(wanted)):  # compared as JSON: tuples are lists there
        return None
    return recorded


def write_status(job_dir: Path, cfg: RunConfig, state: str, **extra) -> None:
    write_json_atomic(job_dir / STATUS, {"state": state, "cell": cfg.cell_name(), "run_id": cfg.run_id(),
                                         "work_dir": str(work_dir(cfg)), "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                                         **extra})


def run_cell(cfg: RunConfig, raw: dict, job_dir: Path, train_and_eval) -> dict:
    """Skip a finished cell, or run it in its work folder; mirror results and status into job_dir."""
    job_dir.mkdir(parents=True, exist_ok=True)
    work = work_dir(cfg)
    results = None if cfg.force else finished_results(cfg)
    if results is not None:
        write_status(job_dir, cfg, "skipped", reason="already done (force=true reruns it)")
    else:
        started, started_unix = time.strftime("%Y-%m-%d %H:%M:%S"), time.time()
        write_status(job_dir, cfg, "running", started=started, started_unix=started_unix)
        try:
            results = train_and_eval(dataclasses.replace(cfg, output_dir=str(work)), raw)
        except BaseException as err:
            write_status(job_dir, cfg, "failed", error=f"{type(err).__name__}: {err}",
                         traceback=traceback.format_exc(limit=20), started=started)
            raise
        write_status(job_dir, cfg, "done", started=started, started_unix=started_unix, finished_unix=time.time())
    if job_dir.resolve() != work.resolve():
        copy_file_atomic(work / "results.json", job_dir / "results.json")  # the report reads these copies
    return results


def failed_cells(sweep_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) | {"job_dir": str(p.parent)} for p in sorted(sweep_dir.rglob(STATUS))
            if json.loads(p.read_text()).get("state") in ("failed", "running")]
