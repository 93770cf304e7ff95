"""The `pretrain` recipe: a base model trained from scratch on the world's encyclopedia, cached by a
hash of everything that determines its weights, under <cache_dir>/toyworld/models/.

A model config with a `toy:` section (conf/model/toy_*.yaml) is such a model: the toy model source
(src/toyworld/plugin.py) hands src/models the folder `pretrained_dir` returns, training it first
when it is missing. Same spec,
same seed, same machine -> the same weights (tests/toyworld/test_toyworld.py checks it on a micro model).
Llama and GPT-2 toys learn next-token prediction; the encoder-decoder toy (t5) a prefix LM
(src/toyworld/prefix_lm.py says why).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from src.config import ConfigError, ModelConfig, build_dataclass
from src.io import write_json_atomic
from src.store import Store, cache_root, digest
from src.toyworld.corpus import biographies
from src.toyworld.files import write_files
from src.toyworld.prefix_lm import prefix_lm_batches, t5_config
from src.toyworld.tokenizer import build_tokenizer
from src.toyworld.world import WorldSpec, make_world

log = logging.getLogger(__name__)
PRETRAIN_VERSION = 1  # bump when the same spec would train different weights
ARCHITECTURES = ("llama", "gpt2", "t5")


@dataclass
class ToySpec:
    """The `toy` section of a model config: which world, which architecture, how it is pretrained."""

    world: WorldSpec = field(default_factory=WorldSpec)
    architecture: str = "llama"  # llama | gpt2 | t5 (Hugging Face architectures, built from scratch)
    hidden_size: int = 64
    layers: int = 2  # t5: each stack's (encoder and decoder alike)
    heads: int = 4
    intermediate_size: int = 256
    bios_per_entity: int = 8  # write-ups per corpus entity: varied phrasings make facts retrievable
    epochs: int = 12
    seq_len: int = 128  # tokens per training row (documents laid end to end); t5: a document's cap
    batch_size: int = 16  # rows a step; t5: documents a step
    lr: float = 3e-3
    warmup_steps: int = 30
    min_lr_ratio: float = 0.1  # cosine decay to this share of lr
    weight_decay: float = 0.1
    seed: int = 0  # initialization and document order

    def validate(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"model.toy.architecture: {self.architecture!r} is not one of {', '.join(ARCHITECTURES)}")
        if self.hidden_size % self.heads:
            raise ConfigError(f"model.toy: hidden_size {self.hidden_size} is not a multiple of heads {self.heads}")
        for key in ("layers", "heads", "epochs", "seq_len", "batch_size", "bios_per_entity"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"model.toy.{key} must be > 0")
        try:
            self.world.validate()
        except ValueError as err:
            raise ConfigError(f"model.toy.world: {err}") from None


def toy_spec(raw: dict[str, Any]) -> ToySpec:
    spec = build_dataclass(ToySpec, dict(raw), "model.toy")
    spec.validate()
    return spec


def spec_key(cfg: ModelConfig) -> str:
    """What determines the weights: the spec, the vocabulary and the corpus's documents themselves (an
    edited template, a new word or another sampling order is a new model, never a stale cache hit;
    hashing the documents rather than a list of corpus constants means no change can slip past)."""
    from src.toyworld.tokenizer import vocabulary

    spec = toy_spec(cfg.toy)
    documents = hashlib.sha256("\n".join(biographies(make_world(spec.world), spec.bios_per_entity)).encode())
    return digest({"version": PRETRAIN_VERSION, "toy": dataclasses.asdict(spec), "context_length": cfg.context_length,
                   "vocabulary": vocabulary(), "corpus": documents.hexdigest()}, length=12)


def build_model(spec: ToySpec, tokenizer, context_length: int):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, GPT2Config, LlamaConfig

    if spec.architecture == "t5":  # relative position buckets: no context length to set
        torch.manual_seed(spec.seed)
        return AutoModelForSeq2SeqLM.from_config(t5_config(spec, tokenizer), dtype=torch.float32)
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    if spec.architecture == "gpt2":
        config = GPT2Config(vocab_size=len(tokenizer), n_embd=spec.hidden_size, n_layer=spec.layers,
                            n_head=spec.heads, n_inner=spec.intermediate_size, n_positions=context_length, **ids)
    else:
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=spec.hidden_size, num_hidden_layers=spec.layers,
                             num_attention_heads=spec.heads, num_key_value_heads=spec.heads,
                             intermediate_size=spec.intermediate_size, max_position_embeddings=context_length,
                             tie_word_embeddings=True, **ids)
    torch.manual_seed(spec.seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def epoch_order(n_docs: int, spec: ToySpec, epoch: int) -> list[int]:
    """The documents' seeded order in one epoch (every architecture's)."""
    order = list(range(n_docs))
    random.Random(f"pretrain-{spec.seed}-{epoch}").shuffle(order)
    return order


def training_rows(docs: list[list[int]], spec: ToySpec, epoch: int) -> torch.Tensor:
    """One epoch: the documents in a seeded order, end to end, cut into rows of seq_len tokens."""
    order = epoch_order(len(docs), spec, epoch)
    stream = [t for i in order for t in docs[i]]
    n = len(stream) // spec.seq_len
    return torch.tensor(stream[: n * spec.seq_len]).view(n, spec.seq_len)


@dataclass
class Objective:
    """What one architecture learns from the documents: each epoch's batches and the loss of one."""

    batches: Callable[[int], Iterator[Any]]  # epoch -> that epoch's batches
    steps_per_epoch: int
    tokens_per_epoch: int  # tokens the model reads in an epoch (t5: encoder and decoder together)
    loss: Callable[[torch.nn.Module, Any], torch.Tensor]


def next_token(texts_ids: list[list[int]], spec: ToySpec, tokenizer) -> Objective:
    """Causal LM: documents between <s> and </s>, end to end, rows of seq_len tokens."""
    docs = [[tokenizer.bos_token_id, *ids, tokenizer.eos_token_id] for ids in texts_ids]
    rows_per_epoch = sum(map(len, docs)) // spec.seq_len

    def batches(epoch: int) -> Iterator[torch.Tensor]:
        rows = training_rows(docs, spec, epoch)
        return (rows[i:i + spec.batch_size] for i in range(0, len(rows), spec.batch_size))

    def loss(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids=batch).logits
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), batch[:, 1:].flatten())

    return Objective(batches, math.ceil(rows_per_epoch / spec.batch_size), rows_per_epoch * spec.seq_len, loss)


def prefix_lm(texts_ids: list[list[int]], spec: ToySpec, tokenizer) -> Objective:
    """Encoder-decoder: one document an example, cut into prefix and rest (src/toyworld/prefix_lm.py)."""
    docs = [ids[: spec.seq_len] for ids in texts_ids]
    return Objective(lambda epoch: prefix_lm_batches(docs, epoch_order(len(docs), spec, epoch), spec, epoch, tokenizer),
                     math.ceil(len(docs) / spec.batch_size), sum(len(d) + 2 for d in docs),  # + <s> and </s>
                     lambda model, batch: model(**batch).loss)  # mean over the labels that are not padding


def pretrain(spec: ToySpec, tokenizer, context_length: int) -> tuple[torch.nn.Module, dict]:
    """The architecture's objective on the encyclopedia; AdamW, linear warm-up then cosine decay."""
    world = make_world(spec.world)
    texts_ids = tokenizer(biographies(world, spec.bios_per_entity), add_special_tokens=False)["input_ids"]
    objective = (prefix_lm if spec.architecture == "t5" else next_token)(texts_ids, spec, tokenizer)
    model = build_model(spec, tokenizer, context_length)
    total = spec.epochs * objective.steps_per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(0.9, 0.98), weight_decay=spec.weight_decay)

    def multiplier(step: int) -> float:
        if step < spec.warmup_steps:
            return (step + 1) / spec.warmup_steps
        progress = (step - spec.warmup_steps) / max(1, total - spec.warmup_steps)
        return spec.min_lr_ratio + (1 - spec.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
    params = sum(p.numel() for p in model.parameters())
    log.info("pretrain %s: %d documents, %d tokens and %d steps per epoch, %d epochs -> %d steps; %d parameters",
             spec.architecture, len(texts_ids), objective.tokens_per_epoch, objective.steps_per_epoch, spec.epochs,
             total, params)
    model.train()
    start, step, history = time.perf_counter(), 0, []
    for epoch in range(spec.epochs):
        for batch in objective.batches(epoch):
            loss = objective.loss(model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
        history.append({"epoch": epoch + 1, "step": step, "loss": round(loss.item(), 4)})
        log.info("pretrain epoch %d/%d: loss %.3f", epoch + 1, spec.epochs, loss.item())
    model.eval()
    seconds = time.perf_counter() - start
    return model, {"steps": step, "documents": len(texts_ids), "tokens_per_epoch": objective.tokens_per_epoch,
                   "parameters": params, "final_loss": history[-1]["loss"], "history": history,
                   "seconds": round(seconds, 1)}


def pretrained_dir(cfg: ModelConfig, cache_dir: str) -> Path:
    """The folder (HF format: model, tokenizer, pretrain.json) of this toy model, trained on first use
    and kept in the store under <cache_dir>/toyworld/models. The world's data files are written too,
    so a toy run needs nothing prepared by hand."""
    spec = toy_spec(cfg.toy)
    write_files(spec.world, cache_dir)
    key = spec_key(cfg)  # generates and hashes the whole corpus: once per call

    def train_and_save(folder: Path) -> None:
        tokenizer = build_tokenizer()
        model, record = pretrain(spec, tokenizer, cfg.context_length)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        write_json_atomic(folder / "pretrain.json", {"spec": dataclasses.asdict(spec), "key": key, **record})

    path, _ = Store(cache_root(cache_dir) / "toyworld" / "models").get_or_make(f"{cfg.name}-{key}", train_and_save)
    return path
