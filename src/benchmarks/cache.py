"""Base-model scores computed once and reused across a grid.

Every cell of a grid with data amount 0 evaluates the same untouched base model; its predictions and
metrics depend only on the model, the benchmark (name, version, every setting), the data files the
settings point at, the code that scores it, and the numeric setup (dtype, device type). That is the cache key; a hit copies
predictions.jsonl and metrics.json back instead of evaluating again. Imitation-trained models are never
cached (each cell's weights differ).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from src import resolve_path
from src.benchmarks.base import BenchmarkResult


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


def code_digest(name: str) -> str:
    """The benchmark's module and the model handle: an edited prompt or scorer is a new key even where
    someone forgot to bump the version."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    helpers = {"humaneval": [root / "execution.py"]}  # the sandbox decides what passes
    for file in (root / f"{name}.py", root / "base.py", root.parent / "models.py", *helpers.get(name, [])):
        if file.exists():
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def cache_key(model_identity: dict[str, Any], name: str, settings: Any) -> str:
    payload = {"model": model_identity, "benchmark": name, "settings": dataclasses.asdict(settings),
               "data": data_digests(settings), "code": code_digest(name)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def read_result(directory: Path) -> BenchmarkResult:
    meta = json.loads((directory / "metrics.json").read_text(encoding="utf-8"))
    with open(directory / "predictions.jsonl", encoding="utf-8") as handle:
        predictions = [json.loads(line) for line in handle if line.strip()]
    return BenchmarkResult(meta["benchmark"], meta["version"], meta["metrics"], predictions,
                           settings=meta["settings"], lower_is_better=meta.get("lower_is_better", []),
                           requested=meta.get("requested", {}),
                           seconds=meta.get("seconds", 0.0))


def cached(cache_root: Path, key: str, compute) -> tuple[BenchmarkResult, bool]:
    """(result, hit): read <cache_root>/<key>/ if a finished copy is there, else compute and store it."""
    directory = Path(cache_root) / key
    if (directory / "DONE").exists():
        return read_result(directory), True
    result = compute()
    # a temporary name of this process's own: cells running in parallel may fill the same key
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{key}.", suffix=".tmp"))
    try:
        result.write(tmp)
        (tmp / "DONE").touch()
        shutil.rmtree(directory, ignore_errors=True)  # an unfinished entry (no DONE) left by a kill
        try:
            tmp.rename(directory)  # a half-written entry is never read as finished
        except OSError:
            if not (directory / "DONE").exists():  # not another process's finished copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result, False
