"""The records a cell writes, as dataclasses: results.json (the source of truth for a cell, read by the
report) and train.json (beside a saved checkpoint: how the model was trained).

results.json carries `schema_version`; a file without it is version 1 (the same fields, written
before the field existed). Fields are only ever added: a reader of version N reads every older file.
"""

from __future__ import annotations

import dataclasses
import json
import time as _time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.io import write_json_atomic

SCHEMA_VERSION = 2
TOKENS_DEFINITION = "tokens of the formatted conversations under the base model's tokenizer"


@dataclass
class Axes:
    model: str
    data_source: str
    amount: int | None  # imitation tokens; 0 = the base model; None = the whole source
    amount_label: str
    seed: int
    # the preference stage's source (none: imitation only). A cell with one names its series
    # "<data_source>+dpo:<source>" in data_source, so the report's tables and plots keep it apart
    preference: str = "none"


@dataclass
class Tokens:
    total: int  # imitation tokens (what data.amount counts)
    loss_bearing: int  # of those, the ones that carry a label
    definition: str = TOKENS_DEFINITION
    # data.pretrain_mix: pre-training text tokens trained on besides (0: none; a file written before
    # the mix existed reads as 0), their loss-bearing tokens, and the source they came from
    pretrain: int = 0
    pretrain_loss_bearing: int = 0
    pretrain_source: str | None = None


@dataclass
class BenchmarkRecord:
    """A benchmark as the cell ran it (its metrics are in Results.metrics as '<name>/<metric>')."""

    version: int
    settings: dict[str, Any]
    n: int
    from_base_cache: bool | None = None  # None: reused from this cell's earlier run (not recorded then)
    # metric -> {"stderr", "ci95": [low, high], "n", "method"} (src/benchmarks/uncertainty.py); a file
    # written before these existed reads as {} / None: the report shows its intervals as unknown
    uncertainty: dict[str, dict[str, Any]] = field(default_factory=dict)
    items: dict[str, Any] | None = None  # the per-item outcomes (ItemOutcomes.to_dict()), for paired tests

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if self.from_base_cache is None:
            out.pop("from_base_cache")
        return out


@dataclass
class Results:
    run_id: str
    cell: str  # model/source/amount
    sweep: str
    experiment: str
    axes: Axes
    tokens: Tokens
    model_parameters: int
    eval_backend: str
    mode: str  # base_model | separate_run | milestone (a checkpoint of the run trained_by)
    trained_by: str | None
    metrics: dict[str, float]
    benchmarks: dict[str, BenchmarkRecord]
    data: dict | None  # the prepared data's summary (None: the base model)
    train: dict | None  # the training run's stats (None: the base model)
    timings_s: dict[str, float]
    device: str
    versions: dict[str, str]
    config: dict | None
    schema_version: int = SCHEMA_VERSION
    # the preference stage (None: none): its source, pairs, tokens, steps, the SFT stage it started from
    # (sft_run_id) and the template both stages used; `tokens`, `data` and `train` stay the SFT stage's
    preference: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["benchmarks"] = {name: record.to_dict() for name, record in self.benchmarks.items()}
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Results:
        values = _known(cls, raw)
        values["axes"] = Axes(**_known(Axes, raw["axes"]))
        values["tokens"] = Tokens(**_known(Tokens, raw["tokens"]))
        values["benchmarks"] = {name: BenchmarkRecord(**_known(BenchmarkRecord, record))
                                for name, record in raw.get("benchmarks", {}).items()}
        values.setdefault("schema_version", 1)
        return cls(**values)

    @classmethod
    def read(cls, path: Path) -> Results:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def write(self, path: Path) -> None:
        write_json_atomic(path, self.to_dict())

    def uncertainty(self, key: str) -> dict[str, Any] | None:
        """The uncertainty of metric '<benchmark>/<metric>'; None when unknown (an older file)."""
        name, _, metric = key.partition("/")
        record = self.benchmarks.get(name)
        entry = record.uncertainty.get(metric) if record and isinstance(record.uncertainty, dict) else None
        return entry if isinstance(entry, dict) else None

    def summary(self) -> dict[str, float]:
        """What W&B's run summary shows: every metric under its stable key, and the token counts."""
        out = {**self.metrics, "tokens/total": self.tokens.total, "tokens/loss_bearing": self.tokens.loss_bearing}
        if self.tokens.pretrain:  # data.pretrain_mix
            out["tokens/pretrain"] = self.tokens.pretrain
        return out


def _known(cls: type, raw: dict[str, Any]) -> dict[str, Any]:
    """The fields of `cls` that `raw` holds: a file from a newer writer (more fields) still reads."""
    return {f.name: raw[f.name] for f in dataclasses.fields(cls) if f.name in raw}


@dataclass
class TrainingRecord:
    """train.json, written after the checkpoint it describes: its presence marks the checkpoint complete."""

    data: dict  # the prepared data's summary for this amount
    train: dict  # TrainStats of the run, as of this amount
    mode: str = "separate_run"  # separate_run | milestone
    trained_by: str | None = None  # run_id of the run that trained it (a milestone run: the largest amount's)
    amount: int | None = None
    preference: dict | None = None  # a checkpoint of a preference stage: that stage's record (data/train: the SFT's)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainingRecord:
        return cls(**_known(cls, raw))

    def write(self, path: Path) -> None:
        write_json_atomic(path, dataclasses.asdict(self))


STATUS = "status.json"


@dataclass
class CellStatus:
    """status.json in Hydra's job folder: what a sweep's cell is doing, or what stopped it."""

    state: str  # running | done | skipped | failed
    cell: str | None = None
    run_id: str | None = None
    work_dir: str | None = None
    time: str = field(default_factory=lambda: _time.strftime("%Y-%m-%d %H:%M:%S"))
    extra: dict[str, Any] = field(default_factory=dict)  # started, reason, error, traceback, ...

    def write(self, job_dir: Path) -> None:
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k != "extra" and v is not None}
        write_json_atomic(job_dir / STATUS, fields | self.extra)


def failed_cells(sweep_dir: Path) -> list[dict]:
    """The status of every cell of a sweep that failed or never finished, with its job folder."""
    found = []
    for path in sorted(sweep_dir.rglob(STATUS)):
        status = json.loads(path.read_text(encoding="utf-8"))
        if status.get("state") in ("failed", "running"):
            found.append(status | {"job_dir": str(path.parent)})
    return found
