"""The preference stage after imitation: DPO (Rafailov et al. 2023) from a cell's SFT checkpoint.

    preference_stage(cell, ...)   the pipeline's door for a cell with `preference` set: its SFT stage
                                  (the same cell without a preference stage, src/cell.py sft_stage:
                                  trained, or found saved) -> pairs (src/training/preference_pairs.py,
                                  written once to pairs.jsonl) -> the reference's log-probabilities ->
                                  DPO steps -> the checkpoint (same tokenizer, same chat template)

Loss, per pair (x, y_w chosen, y_l rejected), with the SFT model as the frozen reference:

    -log sigmoid(beta * ((log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))))

where log pi(y|x) sums the log-probabilities of the reply's tokens only (the reply and its end-of-turn,
as the SFT loss counts them; the prompt and the template's glue count nothing), averaged over a step's
pairs.

Why the project's own loop and not TRL's DPOTrainer: TRL is not a dependency (nor installed here), and
its trainer brings its own Trainer loop, collator and padding; fitting it to this project would redo
around it what the SFT loop already does (sequences packed whole into rows kept apart by the
block-diagonal mask CPU attention needs, the reply-only masks of src/data/template.py, the optimizer
and schedule of train.optimizer, resumable states, one-line errors). The loss itself is a few lines,
tested against a hand computation (tests/training/test_dpo.py).

The reference is never held as a second model: the policy starts equal to it, so the reference's
log-probabilities of every pair are computed once before the first update (TRL's
precompute_ref_log_probs) and kept; a resumed stage recomputes them from the SFT checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from src.cell import Cell, sft_stage
from src.config import ConfigError, DpoConfig, TrainConfig
from src.data.formats.records import DataError
from src.data.packing import PackedRow, collate
from src.data.template import IGNORE, ChatFormat, Rendered, TemplateError, bos_prefix
from src.io import file_lock, write_text_atomic
from src.models.backend import ModelWeights
from src.models.load import model_is_encoder_decoder
from src.results import TrainingRecord
from src.stages import reached
from src.training import attention
from src.training import checkpoint as ckpt
from src.training.loop import _plain_head
from src.training.optim import make_optimizer, make_scheduler
from src.training.preference_pairs import Pair, build_pairs

log = logging.getLogger(__name__)
PAIRS_VERSION = 2  # bump when the same config would build other pairs (2: replies compared by their tokens)


# --------------------------------------------------------------------------------------------------
# the loss


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, dict[str, float]]:
    """The mean DPO loss over pairs (each argument: [pairs] summed reply log-probabilities) and its
    readings: the implicit rewards beta * (log pi - log ref) of chosen and rejected, their margin, the
    share of pairs whose chosen reward is higher, and the log-ratio margin itself (the quantity DPO
    pushes up: (log pi_w - log ref_w) - (log pi_l - log ref_l))."""
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    logits = chosen_ratio - rejected_ratio
    loss = -F.logsigmoid(beta * logits).mean()
    with torch.no_grad():
        stats = {"loss": loss.item(), "log_ratio_margin": logits.mean().item(),
                 "reward_chosen": (beta * chosen_ratio).mean().item(),
                 "reward_rejected": (beta * rejected_ratio).mean().item(),
                 "reward_accuracy": (logits > 0).float().mean().item()}
    stats["reward_margin"] = stats["reward_chosen"] - stats["reward_rejected"]
    return loss, stats


# --------------------------------------------------------------------------------------------------
# sequences: prompt + reply, loss on the reply only


def render_reply(prompt: Sequence, reply: str, tokenizer, fmt: ChatFormat, max_length: int) -> Rendered:
    """The prompt and one reply in the SFT stage's chat format, labels on the final reply's tokens only
    (its end-of-turn included, as in SFT; an earlier assistant turn of the prompt carries none). Longer
    than max_length: the prompt loses its start, then the reply its end (TRL's truncation)."""
    from src.data.conversation import Message

    segments = fmt.segments([*prompt, Message("assistant", reply)])
    last = max((i for i, (_, loss) in enumerate(segments) if loss), default=None)
    if last is None:
        raise TemplateError("the chat format rendered no reply")
    encoded = tokenizer([text for text, _ in segments], add_special_tokens=False)["input_ids"]
    prompt_ids = bos_prefix(tokenizer, fmt) + [t for ids in encoded[:last] for t in ids]
    reply_ids = list(encoded[last])
    reply_ids = reply_ids[:max_length - 1]  # at least one prompt token stays: it predicts the reply's first
    prompt_ids = prompt_ids[-(max_length - len(reply_ids)):]
    return Rendered(prompt_ids + reply_ids, [IGNORE] * len(prompt_ids) + reply_ids)


def pack_whole(sequences: Sequence[Rendered], block_length: int) -> list[tuple[PackedRow, list[int]]]:
    """Sequences laid whole into rows of at most block_length tokens, in order (a sequence never splits:
    its log-probability needs all of it in one row); each row with its owner list (the sequence index of
    each token). A block-diagonal mask (collate) keeps the sequences of a row apart."""
    rows: list[tuple[PackedRow, list[int]]] = []
    current, owners = PackedRow([], [], [], []), []
    for index, seq in enumerate(sequences):
        if current.input_ids and len(current.input_ids) + len(seq.input_ids) > block_length:
            rows.append((current, owners))
            current, owners = PackedRow([], [], [], []), []
        segment = current.segment_ids[-1] + 1 if current.segment_ids else 0
        current.input_ids += seq.input_ids
        current.labels += seq.labels
        current.position_ids += list(range(len(seq.input_ids)))
        current.segment_ids += [segment] * len(seq.input_ids)
        owners += [index] * len(seq.input_ids)
    if current.input_ids:
        rows.append((current, owners))
    return rows


def sequence_logps(model, sequences: Sequence[Rendered], pad_id: int, device: torch.device,
                   block_length: int, attention_impl: str = "sdpa_mask") -> torch.Tensor:
    """[len(sequences)]: the sum of log p(token) over each sequence's labelled (reply) tokens, with
    gradients when the model has them. The vocabulary projection runs at labelled positions only."""
    rows = pack_whole(sequences, block_length)
    batch = collate([r for r, _ in rows], pad_id)
    owners = torch.full(batch["labels"].shape, -1, dtype=torch.long)
    for i, (_, owner) in enumerate(rows):
        owners[i, :len(owner)] = torch.tensor(owner)
    batch = {k: v.to(device) for k, v in batch.items()}
    inputs, labels = attention.model_inputs(batch, attention_impl)
    owners = owners.to(device).reshape(labels.shape)
    targets, keep = labels[:, 1:], labels[:, 1:] != IGNORE  # logits at t predict the token at t+1
    if _plain_head(model):  # logits only where a reply token is predicted, as the SFT loss does
        hidden = model.base_model(**inputs).last_hidden_state[:, :-1]
        logits = model.get_output_embeddings()(hidden[keep]).float()
    else:
        logits = model(**inputs).logits[:, :-1][keep].float()
    token_logps = torch.log_softmax(logits, dim=-1).gather(1, targets[keep][:, None]).squeeze(1)
    total = torch.zeros(len(sequences), dtype=torch.float32, device=device)
    return total.index_add(0, owners[:, 1:][keep], token_logps)


# --------------------------------------------------------------------------------------------------
# the DPO loop


@dataclass
class DpoStats:
    pairs: int = 0
    steps: int = 0
    epochs: int = 1
    tokens_seen: int = 0  # real tokens of chosen + rejected sequences processed by the policy
    reply_tokens_seen: int = 0  # of them, the reply tokens the log-probabilities sum over
    seconds: float = 0.0
    reference_seconds: float = 0.0  # the reference's log-probabilities, once, before the first step
    resumed_from_step: int = 0
    first: dict = field(default_factory=dict)  # the first step's readings (dpo_loss)
    final: dict = field(default_factory=dict)  # the last step's
    history: list[dict] = field(default_factory=list)


def dpo_steps(n_pairs: int, cfg: DpoConfig, seed: int) -> list[list[int]]:
    """Pair indices per step: the pairs' own order in the first epoch, reshuffled with the seed after."""
    steps = []
    for epoch in range(cfg.epochs):
        order = list(range(n_pairs))
        if epoch:
            random.Random(seed + epoch).shuffle(order)
        steps += [order[i:i + cfg.pairs_per_step] for i in range(0, n_pairs, cfg.pairs_per_step)]
    return steps


def optimizer_config(train: TrainConfig) -> TrainConfig:
    """train.optimizer's settings at train.dpo's rate, constant after train.dpo.warmup_steps."""
    return dataclasses.replace(train, lr=train.dpo.lr, warmup_steps=train.dpo.warmup_steps, warmup_ratio=0.0,
                               schedule="constant")


def train_dpo(model, encoded: list[tuple[Rendered, Rendered]], train: TrainConfig, pad_id: int,
              device: torch.device, block_length: int, on_step=None, state_dir=None, seed: int = 0,
              reference: torch.Tensor | None = None) -> DpoStats:
    """DPO on `encoded` (chosen, rejected) pairs, in place; the model as it comes in is the reference
    (or `reference`: [pairs, 2] log-probabilities computed before). States every
    train.dpo.checkpoint_every steps in state_dir; a rerun resumes from the newest."""
    cfg = train.dpo
    stats = DpoStats(pairs=len(encoded), epochs=cfg.epochs)
    attention_impl = attention.resolve(train.attention, device, train.precision == "bf16")
    own_attention = attention.use(model, attention_impl)
    if reference is None:
        clock = time.perf_counter()
        reference = reference_logps(model, encoded, pad_id, device, block_length, attention_impl, cfg.pairs_per_step)
        stats.reference_seconds = time.perf_counter() - clock
    steps = dpo_steps(len(encoded), cfg, seed)
    opt_cfg = optimizer_config(train)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, opt_cfg)
    scheduler = make_scheduler(optimizer, len(steps), opt_cfg)
    first_step = 0
    if (resume := ckpt.latest(state_dir)) is not None:
        state = torch.load(resume / "state.pt", weights_only=False, map_location="cpu")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        for key, value in state["stats"].items():
            setattr(stats, key, value)
        ckpt.load_rng(resume, 0)
        first_step = stats.resumed_from_step = state["step"]
        log.info("dpo: resuming from %s: step %d of %d", resume, first_step, len(steps))
    log.info("dpo: %d pairs, %d per step, %d epoch(s) -> %d steps; beta %g, lr %g", len(encoded),
             cfg.pairs_per_step, cfg.epochs, len(steps), cfg.beta, cfg.lr)
    model.train()
    start = time.perf_counter()
    for step in range(first_step, len(steps)):
        idx = steps[step]
        sequences = [s for i in idx for s in encoded[i]]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=train.precision == "bf16"):
            logps = sequence_logps(model, sequences, pad_id, device, block_length, attention_impl)
        ref = reference[idx].to(device)
        loss, readings = dpo_loss(logps[0::2], logps[1::2], ref[:, 0], ref[:, 1], cfg.beta)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, train.max_grad_norm).item()
        if not math.isfinite(grad_norm) or not math.isfinite(readings["loss"]):
            raise RuntimeError(f"dpo diverged at step {step + 1}: loss {readings['loss']}, gradient norm "
                               f"{grad_norm}; the weights were not updated with it (try a lower train.dpo.lr)")
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        stats.steps = step + 1
        stats.tokens_seen += sum(len(s.input_ids) for s in sequences)
        stats.reply_tokens_seen += sum(sum(label != IGNORE for label in s.labels[1:]) for s in sequences)
        record = {"step": step + 1, **readings, "lr": lr, "grad_norm": grad_norm, "tokens_seen": stats.tokens_seen}
        stats.first = stats.first or record
        stats.final = record
        if (step + 1) % cfg.log_every == 0 or step + 1 == len(steps):
            stats.history.append(record)
            if on_step:
                on_step({f"dpo/{k}": v for k, v in record.items() if k != "step"} | {"step": step + 1})
        if state_dir is not None and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 \
                and step + 1 < len(steps):
            _save_state(state_dir, step + 1, model, optimizer, scheduler, stats)
    stats.seconds += time.perf_counter() - start
    model.eval()
    attention.restore(model, own_attention)
    if state_dir is not None:
        shutil.rmtree(state_dir, ignore_errors=True)  # done: the states are spent
    return stats


@torch.no_grad()
def reference_logps(model, encoded: list[tuple[Rendered, Rendered]], pad_id: int, device: torch.device,
                    block_length: int, attention_impl: str = "sdpa_mask", batch_pairs: int = 8) -> torch.Tensor:
    """[pairs, 2]: the frozen reference's (chosen, rejected) reply log-probabilities."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(encoded), batch_pairs):
        sequences = [s for pair in encoded[i:i + batch_pairs] for s in pair]
        out.append(sequence_logps(model, sequences, pad_id, device, block_length, attention_impl).view(-1, 2).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros((0, 2))


def _save_state(state_dir, step: int, model, optimizer, scheduler, stats: DpoStats) -> None:
    from src.training.dist import Dist

    def write(folder) -> None:
        torch.save({"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "stats": {k: v for k, v in dataclasses.asdict(stats).items()}}, folder / "state.pt")

    ckpt.save(state_dir, step, Dist.current(), write)
    reached("dpo:state-saved")


# --------------------------------------------------------------------------------------------------
# the stage


def template_identity(tokenizer, fmt: ChatFormat) -> dict:
    """The chat format a stage trained with: its name and the tokenizer's template text (hashed)."""
    text = getattr(tokenizer, "chat_template", None) or ""
    return {"name": fmt.name, "chat_template_sha256": hashlib.sha256(text.encode()).hexdigest()[:16]}


def pairs_key(cell: Cell, sft_run_id: str) -> str:
    raw = {"version": PAIRS_VERSION, "sft": sft_run_id, "preference": dataclasses.asdict(cell.cfg.preference),
           "seed": cell.cfg.seed}
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_or_build_pairs(cell: Cell, sft_run_id: str, weights: ModelWeights, tokenizer, fmt: ChatFormat,
                        device: torch.device) -> tuple[list[Pair], dict]:
    """pairs.jsonl of the cell when it was built for the same SFT stage and settings, else built (with
    the SFT model generating) and written: a rerun trains on the same pairs."""
    key = pairs_key(cell, sft_run_id)
    if cell.pairs_path.exists():
        lines = cell.pairs_path.read_text(encoding="utf-8").splitlines()
        header = json.loads(lines[0]) if lines else {}
        if header.get("key") == key:
            log.info("preference pairs from %s", cell.pairs_path)
            return [Pair.from_dict(json.loads(line)) for line in lines[1:]], header["report"]
    from src.models.hf import open_hf

    pairs, report = build_pairs(cell.cfg, open_hf(weights, tokenizer, fmt, device), tokenizer, fmt)
    text = "\n".join([json.dumps({"key": key, "report": report})] + [json.dumps(p.to_dict()) for p in pairs])
    write_text_atomic(cell.pairs_path, text + "\n")
    log.info("preference pairs: %s", report)
    return pairs, report


def preference_stage(cell: Cell, resolved: dict, tokenizer, fmt: ChatFormat, device: torch.device, on_step=None):
    """The cell's model after its SFT stage and DPO (a Trained, as src/training/recipe.py obtain gives)."""
    from src.training.milestones import name_later_stage
    from src.training.recipe import Trained, obtain

    cfg = cell.cfg
    if model_is_encoder_decoder(cfg.model, cfg.cache_dir):  # before the SFT stage spends any time
        raise ConfigError(f"preference.source={cfg.preference.source}: DPO is built for decoder-only models; model "
                          f"'{cfg.model.name}' is an encoder-decoder (set preference=none)")
    sft_cell = Cell.of(sft_stage(cfg))
    weights = ModelWeights(cfg.model, cfg.cache_dir, trained=True, seed=cfg.seed)
    with file_lock(cell.train_lock):
        if (record := cell.training()) is not None:
            log.info("the preference stage was done earlier: loaded %s", cell.checkpoint)
            return Trained(dataclasses.replace(weights, checkpoint=cell.checkpoint), record)
        # the SFT stage: trained here (its checkpoint kept, so a rerun of this cell trains only DPO) or found
        timings: dict[str, float] = {}
        clock = time.perf_counter()
        # a torchrun worker (train.nproc > 1) reads this config: the SFT cell's, without the preference stage
        sft_resolved = {**resolved, "preference": dataclasses.asdict(sft_cell.cfg.preference)} if resolved else resolved
        name_later_stage(sft_cell, cell.run_id)  # before it is looked up: the imitation-only cell must not remove it
        sft = obtain(sft_cell, sft_resolved, tokenizer, fmt, device, on_step=on_step, keep_model=False)
        timings.update({f"sft_{k}": v for k, v in sft.timings.items()})
        if sft.record is None:
            raise RuntimeError(f"the SFT stage {sft_cell.run_id} left no training record")
        template = template_identity(tokenizer, fmt)
        sft_template = sft.record.data.get("template")
        if sft_template != fmt.name:  # the LLaMA-Factory bug: a stage trained on another template
            raise DataError(f"the SFT stage {sft_cell.run_id} trained with chat format {sft_template!r}, the "
                            f"preference stage would use {fmt.name!r}: one format must serve both")
        model = sft.weights.load(device, tokenizer)
        timings["sft_s"] = time.perf_counter() - clock
        clock = time.perf_counter()
        pairs, report = load_or_build_pairs(cell, sft_cell.run_id, sft.weights, tokenizer, fmt, device)
        timings["pairs_s"] = time.perf_counter() - clock
        max_length = min(cfg.train.dpo.max_length, cfg.model.context_length)
        encoded = [(render_reply(p.prompt, p.chosen, tokenizer, fmt, max_length),
                    render_reply(p.prompt, p.rejected, tokenizer, fmt, max_length)) for p in pairs]
        block_length = max(min(cfg.train.block_length, cfg.model.context_length),
                           max(len(s.input_ids) for pair in encoded for s in pair))
        clock = time.perf_counter()
        stats = train_dpo(model, encoded, cfg.train, tokenizer.pad_token_id, device, block_length,
                          on_step=on_step, state_dir=cell.dpo_state, seed=cfg.seed)
        timings["dpo_s"] = time.perf_counter() - clock
        preference = {"source": cfg.preference.source, "sft_run_id": sft_cell.run_id, "template": template,
                      "pair_report": report, **{k: v for k, v in dataclasses.asdict(stats).items() if k != "history"},
                      "history": stats.history, "settings": dataclasses.asdict(cfg.train.dpo)}
        record = TrainingRecord(sft.record.data, sft.record.train, sft.record.mode, cell.run_id,
                                sft.record.amount, preference)
        if cfg.train.save_checkpoint:
            cell.replacing_checkpoint()
            shutil.rmtree(cell.checkpoint, ignore_errors=True)
            model.save_pretrained(cell.checkpoint)
            tokenizer.save_pretrained(cell.checkpoint)  # the SFT stage's tokenizer and chat template, unchanged
            cell.write_training(record)
    checkpoint = cell.checkpoint if cfg.train.save_checkpoint else None
    return Trained(dataclasses.replace(weights, checkpoint=checkpoint, module=model), record, timings)
