"""A cell of the grid: its identity, its folder and every path in it, the lease, and what it has done.

A cell's work lives in `<store_dir>/<run_id>/` (run_id = hash of model, data, recipe and seed), so a
relaunched grid (in a new Hydra sweep folder or the same one) finds what is done:

    results.json         the source of truth (src/results.py); complete when every requested
                         benchmark is in it at the same version and settings
    checkpoint/          the fine-tuned model (HF format, with the chat template)
    train.json           written after checkpoint/: its presence marks the checkpoint complete
    train_state/         resumable training states (src/training/checkpoint.py)
    pairs.jsonl          a cell with a preference stage: its preference pairs (src/training/dpo.py)
    dpo_state/           ... and the stage's resumable states (its SFT stage is another cell: sft_stage)
    benchmarks/<name>/   predictions.jsonl + metrics.json of each benchmark
    resolved.yaml        the config the training worker reads
    wandb/               the W&B mirror
    lease                who runs the cell now

The lease: one process at a time trains and evaluates a cell, whatever launched it (a relaunch
while a grid still runs, two Slurm arrays over one store). It is an exclusive `flock` on the lease
file, which the kernel releases when its holder dies, however it dies (kill -9 included); the
holder's pid, host and start time are written into the file, so a waiting process can say whom it
waits for, and the next holder can say it took over from one that ended without releasing. On a
shared cluster file system this relies on flock reaching every node: NFSv4 (Linux emulates flock
with POSIX locks there; a lost node's locks go when its NFS lease expires, about 90 s), Lustre
mounted with `-o flock`, GPFS/Spectrum Scale, BeeGFS; a file system that refuses flock is an error
naming the folder, never two runners.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import src.plugins  # noqa: F401  every plug-in registered: a toy model's run_id needs its source
from src import resolve_path
from src.benchmarks import requested_settings
from src.config import PreferenceConfig, RunConfig
from src.data import pretrain_mix
from src.io import OutputError
from src.models.sources import model_identity
from src.results import Results, TrainingRecord
from src.store import Store

log = logging.getLogger(__name__)


def run_id(cfg: RunConfig) -> str:
    """Hash of what determines the trained weights: model (with what its source adds), data source,
    amount, recipe, seed. Benchmarks, tracker and paths are excluded, so re-evaluating a cell keeps
    its identity."""
    semantic = {"model": model_identity(cfg.model), "data": dataclasses.asdict(cfg.data),
                "train": dataclasses.asdict(cfg.train), "seed": cfg.seed}
    semantic["data"]["source"].pop("description", None)
    # data.pretrain_mix: in the id only when it mixes something in, so ids made before it existed
    # (and cells with share 0, which train on the same rows) stay the same
    semantic["data"].pop("pretrain_mix", None)
    if (mix := pretrain_mix.identity(cfg.data)) is not None:
        semantic["data"]["pretrain_mix"] = mix
    # how the same computation is carried out, not what it computes: the nodes a cell's processes are
    # spread over (tested against one process), the attention kernel, the cross-entropy's chunking and
    # torch.compile (each tested equal to the plain path within rounding; results.json records which
    # ran). Left out, so the ids of cells made before these keys existed stay the same
    # (tests/test_run_id.py pins them).
    for key in ("nnodes", "attention", "loss", "compile"):
        semantic["train"].pop(key, None)
    # --- the preference stage: a cell with one is its own run (its SFT stage is the cell without it);
    # without one, neither the stage's knobs nor its source enter the hash, so earlier ids stay the same
    dpo = semantic["train"].pop("dpo", None)
    if cfg.preference.active:
        preference = dataclasses.asdict(cfg.preference)
        preference.pop("description", None)
        preference["path"] = _file_digest(preference["path"])  # by content: edited is new, moved is not
        semantic["preference"] = {**preference, "dpo": dpo}
    return Store.key(semantic, length=12)


def _file_digest(path: str) -> str | None:
    """A pairs file by its content (sha256); None without a path, the path itself when it is no file."""
    if not path:
        return None
    found = resolve_path(path)
    return hashlib.sha256(found.read_bytes()).hexdigest() if found.is_file() else path


def sft_stage(cfg: RunConfig) -> RunConfig:
    """The config of a cell's imitation (SFT) stage: the same cell without its preference stage (whose
    checkpoint is the DPO policy's start and its frozen reference)."""
    return dataclasses.replace(cfg, preference=PreferenceConfig())


@dataclass
class Cell:
    cfg: RunConfig
    run_id: str
    dir: Path

    @classmethod
    def of(cls, cfg: RunConfig) -> Cell:
        rid = run_id(cfg)
        return cls(cfg, rid, resolve_path(cfg.store_dir) / rid)

    def at_amount(self, amount: int | None) -> Cell:
        """The cell of the same model, source, recipe and seed at another data amount (milestones)."""
        return Cell.of(dataclasses.replace(self.cfg, data=dataclasses.replace(self.cfg.data, amount=amount)))

    @property
    def name(self) -> str:
        return self.cfg.cell_name()

    @property
    def trained(self) -> bool:
        """Whether this cell fine-tunes (amount 0 evaluates the base model untouched)."""
        return self.cfg.data.amount != 0

    # --- paths ----------------------------------------------------------------------------------
    @property
    def results_path(self) -> Path:
        return self.dir / "results.json"

    @property
    def checkpoint(self) -> Path:
        return self.dir / "checkpoint"

    @property
    def training_path(self) -> Path:
        return self.dir / "train.json"

    @property
    def train_state(self) -> Path:
        return self.dir / "train_state"

    @property
    def train_lock(self) -> Path:
        """Held while a training run writes this cell's folder (a milestone run writes several)."""
        return self.dir / "train.lock"

    @property
    def pairs_path(self) -> Path:
        """The preference pairs of a cell with a preference stage (written once; a rerun reuses them)."""
        return self.dir / "pairs.jsonl"

    @property
    def dpo_state(self) -> Path:
        """Resumable states of the preference stage (train.dpo.checkpoint_every)."""
        return self.dir / "dpo_state"

    @property
    def resolved_path(self) -> Path:
        return self.dir / "resolved.yaml"

    def benchmark_dir(self, name: str) -> Path:
        return self.dir / "benchmarks" / name

    # --- training ---------------------------------------------------------------------------------
    def training(self) -> TrainingRecord | None:
        """How the saved checkpoint was trained, if a complete one is here."""
        if not self.training_path.exists() or not (self.checkpoint / "config.json").exists():
            return None
        return TrainingRecord.from_dict(json.loads(self.training_path.read_text(encoding="utf-8")))

    def replacing_checkpoint(self) -> None:
        """Before a checkpoint is (re)written: it is not complete until train.json is back."""
        self.training_path.unlink(missing_ok=True)

    def write_training(self, record: TrainingRecord) -> None:
        """Write it after the checkpoint (its presence marks the checkpoint complete)."""
        record.write(self.training_path)

    def remove_checkpoint(self) -> None:
        """After evaluation, when the recipe keeps no checkpoint (one was written only to hand over)."""
        self.training_path.unlink(missing_ok=True)
        shutil.rmtree(self.checkpoint, ignore_errors=True)

    @property
    def later_stages_path(self) -> Path:
        """The run_ids of the cells whose preference stage starts from this cell's checkpoint."""
        return self.dir / "checkpoint.later_stages"

    def keep_checkpoint_for(self, run_id: str) -> None:
        """A later stage (a preference cell's DPO) starts from this checkpoint, now or in a rerun:
        evaluating this cell under train.save_checkpoint=false must not remove it then."""
        if run_id not in self.later_stages():
            self.dir.mkdir(parents=True, exist_ok=True)  # named before the stage runs (the launch, or milestone mode)
            with open(self.later_stages_path, "a", encoding="utf-8") as handle:  # one line each, appended
                handle.write(run_id + "\n")

    def later_stages(self) -> list[str]:
        if not self.later_stages_path.exists():
            return []
        return [line for line in self.later_stages_path.read_text(encoding="utf-8").splitlines() if line]

    # --- evaluation -------------------------------------------------------------------------------
    def scored(self, name: str, raw: dict) -> dict | None:
        """metrics.json of this benchmark when it was scored with the same version and settings."""
        path = self.benchmark_dir(name) / "metrics.json"
        if not path.exists():
            return None
        recorded = json.loads(path.read_text(encoding="utf-8"))
        wanted = json.loads(json.dumps(requested_settings(name, raw)))  # compared as JSON: tuples are lists
        return recorded if recorded.get("requested") == wanted else None

    def finished(self) -> Results | None:
        """The cell's results if they cover every requested benchmark, else None."""
        if not self.results_path.exists():
            return None
        try:
            results = Results.read(self.results_path)
        except (json.JSONDecodeError, KeyError, TypeError):
            return None  # written atomically, so this is a foreign or damaged file: redo the cell
        if results.run_id != self.run_id:
            return None
        if any(self.scored(name, raw) is None for name, raw in self.cfg.benchmark.items()):
            return None
        return results

    def write_results(self, results: Results) -> None:
        results.write(self.results_path)

    # --- the lease --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lease(self) -> Iterator[None]:
        """Hold this cell alone until the block ends; wait while another process holds it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "lease"
        with open(path, "a+", encoding="utf-8") as handle:
            if not _try_lock(handle, path):
                log.info("cell %s is being run by %s: waiting for it", self.name, _holder(handle) or "another process")
                _lock(handle, path)
            if previous := _holder(handle):
                log.warning("cell %s: taking over the lease of %s, which ended without releasing it",
                            self.name, previous)
            _set_holder(handle, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
            try:
                yield
            finally:
                _set_holder(handle, "")
                fcntl.flock(handle, fcntl.LOCK_UN)


_NO_LOCKS = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}


def _refused(path: Path, err: OSError) -> OutputError:
    return OutputError(err.errno, f"cannot lease {path}: the file system refuses file locks ({err.strerror}); "
                                  "cells could run twice there: put store_dir on a file system with flock "
                                  "(a local disk, NFSv4, Lustre mounted with -o flock)")


def _try_lock(handle, path: Path) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as err:
        if err.errno in _NO_LOCKS:
            raise _refused(path, err) from err
        raise


def _lock(handle, path: Path) -> None:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
    except OSError as err:
        if err.errno in _NO_LOCKS:
            raise _refused(path, err) from err
        raise


def _holder(handle) -> str:
    handle.seek(0)
    return handle.read().strip()


def _set_holder(handle, text: str) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(text)
    handle.flush()
