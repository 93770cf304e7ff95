"""Base-model scores computed once and reused across a grid (an entry of the store, src/store.py).

Every cell of a grid with data amount 0 evaluates the same untouched base model; its predictions and
metrics depend only on the model, the benchmark (name, version, every setting), the data files the
settings point at, the code that scores it, and the numeric setup (dtype, device type). That is the
key; a hit reads predictions.jsonl and metrics.json back instead of evaluating again, and cells that
ask for the same key at once compute it once (the store's lock). Imitation-trained models are never
cached (each cell's weights differ).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from src import resolve_path
from src.benchmarks.base import BenchmarkResult
from src.benchmarks.uncertainty import ItemOutcomes
from src.store import Store

MODELS_PACKAGE = Path(__file__).resolve().parent.parent / "models"  # the backends that produce the outputs


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def data_digests(settings: Any) -> dict[str, str]:
    """Content hashes of the local files or directories named by path-like settings (a hub id is kept
    as written: its revision is the hub's business)."""
    out = {}
    for key, value in dataclasses.asdict(settings).items():
        if key.endswith("path") and isinstance(value, str) and resolve_path(value).exists():
            out[key] = _file_digest(resolve_path(value))
    return out


def code_digest(code: Sequence[Callable]) -> str:
    """The modules that define `code` (the benchmark's run function and its helpers), the shared result
    record and the model backends: an edited prompt or scorer is a new key even where someone forgot
    to bump the version."""
    files = {Path(inspect.getsourcefile(obj)) for obj in code}
    files |= {Path(__file__).with_name("base.py"), Path(__file__).with_name("uncertainty.py"),
              *(p for p in MODELS_PACKAGE.glob("*.py"))}
    digest = hashlib.sha256()
    for file in sorted(files):
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def read_result(directory: Path) -> BenchmarkResult:
    meta = json.loads((directory / "metrics.json").read_text(encoding="utf-8"))
    with open(directory / "predictions.jsonl", encoding="utf-8") as handle:
        predictions = [json.loads(line) for line in handle if line.strip()]
    return BenchmarkResult(meta["benchmark"], meta["version"], meta["metrics"], predictions,
                           settings=meta["settings"], lower_is_better=meta.get("lower_is_better", []),
                           requested=meta.get("requested", {}),
                           seconds=meta.get("seconds", 0.0), items=ItemOutcomes.from_dict(meta.get("items")),
                           uncertainty=meta.get("uncertainty") or {})


class BaseScores:
    """<cache_dir>/benchmarks: one entry per base model x benchmark x settings x data x code."""

    def __init__(self, root: Path):
        self.store = Store(root)

    def key(self, model_identity: dict[str, Any], name: str, settings: Any, code: Sequence[Callable]) -> str:
        return self.store.key({"model": model_identity, "benchmark": name, "settings": dataclasses.asdict(settings),
                               "data": data_digests(settings), "code": code_digest(code)})

    def get_or_compute(self, key: str, compute: Callable[[], BenchmarkResult]) -> tuple[BenchmarkResult, bool]:
        """(result, hit): the stored entry, or `compute()` stored under `key`."""
        made: list[BenchmarkResult] = []

        def write(folder: Path) -> None:
            result = compute()
            result.settings["base_cache_key"] = key
            result.write(folder)
            made.append(result)

        folder, hit = self.store.get_or_make(key, write)
        return (read_result(folder), True) if hit else (made[0], False)
