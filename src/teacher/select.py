"""Choose which prompts of a pool to pay the teacher for, before asking it.

Three selectors, each deterministic under its seed and nested (the choice at a smaller budget is a
prefix of the choice at a larger one, so a budget grid asks the teacher once for the largest):

    random       a seeded permutation of the pool: the baseline every other selector must beat
    uncertainty  the student's mean next-token entropy over its own greedy reply to the prompt (nats per
                 token), highest first: the prompts the student is least sure how to answer
    diversity    k-center greedy on the student's prompt embeddings (the mean of its last hidden layer
                 over the chat-formatted prompt): each pick is the prompt farthest from all picked so far,
                 the first one drawn with the seed (Sener and Savarese's core-set selection)

The student is a Hugging Face model behind src.models.hf.ModelHandle (the `hf` backend), or
src.models.seq2seq.Seq2SeqHandle for an encoder-decoder student (entropy over its decoder's reply,
embeddings from its encoder): the scores read its hidden states and full next-token distributions,
which an OpenAI-compatible endpoint does not give.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from src.io import write_json_atomic
from src.progress import progress

SELECTORS = ("random", "uncertainty", "diversity")
SELECTION_VERSION = 1  # bump when the same pool, student and settings would choose differently


class SelectionError(ValueError):
    """A selector, budget or pool that cannot give a selection; the message says which."""


@dataclass
class Selection:
    """What was chosen and why: written beside the collected data (<out>.selection.json) and into
    <out>.collect.json, so a data source built from it can be audited and reproduced."""

    selector: str
    budget: int
    seed: int
    student: str | None  # the model that scored the pool (None for random)
    pool_size: int
    pool_digest: str  # of the pool's (id, prompt) pairs in order: a different pool is a different selection
    chosen: list[str]  # prompt ids, in the order the selector picked them
    scores: dict[str, float | None] = field(default_factory=dict)  # per pool id: entropy, or k-center distance
    score_name: str = ""
    seconds: float = 0.0
    version: int = SELECTION_VERSION
    student_max_tokens: int | None = None  # uncertainty: tokens of the student's reply that were scored

    def settings(self) -> dict:
        """What decides the choice: a saved selection with the same settings is reused, never redone."""
        return {"selector": self.selector, "budget": self.budget, "seed": self.seed, "student": self.student,
                "pool_digest": self.pool_digest, "version": self.version,
                "student_max_tokens": self.student_max_tokens}

    def to_dict(self) -> dict:
        return asdict(self)


def pool_digest(pairs: Sequence[tuple[str, str]], prior: Sequence[tuple[str, str]] = ()) -> str:
    """Of the pool and, in a later round, of the prompts chosen before it (they steer diversity)."""
    pool = [list(p) for p in pairs]
    blob = json.dumps([pool, [list(p) for p in prior]] if prior else pool, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_budget(budget: int, pool_size: int) -> None:
    if budget < 1:
        raise SelectionError(f"--budget must be at least 1 (got {budget})")
    if budget > pool_size:
        raise SelectionError(f"--budget {budget} is larger than the pool ({pool_size} prompts after "
                             "duplicates are dropped): lower it or give a larger pool")


# --- the selectors, on scores or points already computed --------------------------------------------


def pick_random(pool_size: int, budget: int, seed: int) -> list[int]:
    order = list(range(pool_size))
    random.Random(f"select-random-{seed}").shuffle(order)  # a string seed: stable across Python versions
    return order[:budget]


def pick_highest(scores: Sequence[float], budget: int) -> list[int]:
    """Indices of the `budget` highest scores, highest first; equal scores in pool order."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:budget]


def pick_k_center(points: np.ndarray, budget: int, seed: int,
                  centers: np.ndarray | None = None) -> tuple[list[int], list[float | None]]:
    """Greedy k-center (farthest-first traversal) under Euclidean distance: the indices in pick order and,
    for each, its distance to the nearest point picked before it (None for the seeded first pick). Ties
    go to the lowest index, so the order depends on the seed only through the first pick. `centers`
    (points chosen in an earlier round) count as picked already: then there is no seeded first pick."""
    points = np.asarray(points, dtype=np.float64)
    chosen: list[int] = []
    gaps: list[float | None] = []
    if centers is not None and len(centers):
        centers = np.asarray(centers, dtype=np.float64)
        nearest = np.linalg.norm(points[:, None, :] - centers[None, :, :], axis=2).min(axis=1)
    else:
        first = random.Random(f"select-diversity-{seed}").randrange(len(points))
        chosen, gaps = [first], [None]
        nearest = np.linalg.norm(points - points[first], axis=1)
        nearest[first] = -np.inf
    while len(chosen) < budget:
        pick = int(np.argmax(nearest))  # argmax returns the first of equal maxima
        chosen.append(pick)
        gaps.append(float(nearest[pick]))
        nearest = np.minimum(nearest, np.linalg.norm(points - points[pick], axis=1))
        nearest[chosen] = -np.inf  # with duplicate points all at distance 0, never the same pick twice
    return chosen, gaps


# --- what the student says about each prompt --------------------------------------------------------


@torch.no_grad()
def reply_entropy(handle, prompts: Sequence[str], max_new_tokens: int = 32, batch_size: int = 8) -> list[float]:
    """Mean entropy (nats) of the student's next-token distribution over its own greedy reply to each
    prompt (the first reply token's distribution included; an empty reply scores that one alone)."""
    chat = [handle.chat_prompt(p) for p in prompts]
    replies = handle.generate(chat, max_new_tokens, batch_size=batch_size, chat=True, desc="student replies")
    sequences, positions = [], []
    for context, reply in zip(chat, replies, strict=True):
        n_context = len(handle.encode(context, chat=True))
        whole = handle.encode(context + reply, chat=True)
        # position t holds the distribution that chose token t + 1: the reply's tokens are
        # whole[n_context:], chosen at n_context - 1 ... len(whole) - 2 (an empty reply: the first alone)
        sequences.append(whole)
        positions.append(list(range(n_context - 1, max(len(whole) - 1, n_context))))
    rows = handle.logprobs_at(sequences, positions, batch_size, shared_prefix=False, desc="student entropy")
    return [float(torch.special.entr(row.exp()).sum(dim=-1).mean()) for row in rows]


@torch.no_grad()
def prompt_embeddings(handle, prompts: Sequence[str], batch_size: int = 16) -> np.ndarray:
    """The mean of the student's last hidden layer over each chat-formatted prompt's tokens (an
    encoder-decoder student's encoder's: the layer that reads the prompt)."""
    model = handle.model
    model.eval()
    body = model.get_encoder() if getattr(model.config, "is_encoder_decoder", False) else model.base_model
    encoded = [handle.encode(handle.chat_prompt(p), chat=True) for p in prompts]
    pad = handle.tokenizer.pad_token_id
    out = np.zeros((len(prompts), model.config.hidden_size), dtype=np.float64)
    batches = [list(range(i, min(i + batch_size, len(encoded)))) for i in range(0, len(encoded), batch_size)]
    for batch in progress(batches, "student embeddings"):
        width = max(len(encoded[i]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        # right padding: a causal model's real tokens never see the pads after them; an encoder masks them
        for row, i in enumerate(batch):
            ids[row, :len(encoded[i])] = torch.tensor(encoded[i])
            mask[row, :len(encoded[i])] = 1
        hidden = body(input_ids=ids.to(handle.device), attention_mask=mask.to(handle.device)
                      ).last_hidden_state.float().cpu()
        pooled = (hidden * mask[..., None]).sum(dim=1) / mask.sum(dim=1, keepdim=True)
        out[batch] = pooled.double().numpy()
    return out


# --- the whole choice -------------------------------------------------------------------------------


def select(pairs: Sequence[tuple[str, str]], selector: str, budget: int, seed: int = 0, handle=None,
           student: str | None = None, max_new_tokens: int = 32, batch_size: int = 8,
           prior: Sequence[tuple[str, str]] = ()) -> Selection:
    """Choose `budget` of the (id, prompt) pairs. `handle` (the student) is needed by uncertainty and
    diversity; `student` names it in the record. `prior`: prompts chosen in earlier rounds (not in
    `pairs`); diversity keeps its distance from them too (src/teacher/rounds.py)."""
    if selector not in SELECTORS:
        raise SelectionError(f"--select {selector!r} is not known (known: {', '.join(SELECTORS)})")
    check_budget(budget, len(pairs))
    if selector != "random" and handle is None:
        raise SelectionError(f"--select {selector} needs a student model (--student NAME)")
    start = time.perf_counter()
    ids = [pid for pid, _ in pairs]
    prompts = [text for _, text in pairs]
    scores: dict[str, float | None] = {}
    score_name = ""
    if selector == "random":
        picked = pick_random(len(pairs), budget, seed)
        student = None
    elif selector == "uncertainty":
        entropy = reply_entropy(handle, prompts, max_new_tokens, batch_size)
        picked = pick_highest(entropy, budget)
        scores, score_name = dict(zip(ids, entropy, strict=True)), "mean reply-token entropy (nats)"
    else:
        points = prompt_embeddings(handle, prompts + [text for _, text in prior], batch_size)
        picked, gaps = pick_k_center(points[:len(prompts)], budget, seed, centers=points[len(prompts):])
        scores = {ids[i]: gap for i, gap in zip(picked, gaps, strict=True)}
        score_name = "distance to the nearest earlier pick (k-center)"
    return Selection(selector=selector, budget=budget, seed=seed, student=student, pool_size=len(pairs),
                     pool_digest=pool_digest(pairs, prior), chosen=[ids[i] for i in picked], scores=scores,
                     score_name=score_name, seconds=round(time.perf_counter() - start, 2),
                     student_max_tokens=max_new_tokens if selector == "uncertainty" else None)


def selection_path(out) -> Path:
    out = Path(out)
    return out.with_name(out.name.rsplit(".", 1)[0] + ".selection.json")


def load_or_select(pairs: Sequence[tuple[str, str]], selector: str, budget: int, seed: int, student: str | None,
                   path: Path, open_student: Callable[[], object], prior: Sequence[tuple[str, str]] = (),
                   **kwargs) -> tuple[Selection, bool]:
    """The selection saved at `path` when it was made with the same settings (a resumed collect run
    asks the same prompts without scoring the pool again), else a new one, saved before any prompt is
    asked. Returns (selection, whether it was reused)."""
    wanted = {"selector": selector, "budget": budget, "seed": seed,
              "student": None if selector == "random" else student, "pool_digest": pool_digest(pairs, prior),
              "version": SELECTION_VERSION,
              "student_max_tokens": kwargs.get("max_new_tokens", 32) if selector == "uncertainty" else None}
    if path.exists():
        try:
            saved = Selection(**json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as err:
            raise SelectionError(f"{path}: not a selection record ({err}); move it away to select again") from err
        if saved.settings() == wanted:
            return saved, True
    check_budget(budget, len(pairs))
    handle = None if selector == "random" else open_student()
    selection = select(pairs, selector, budget, seed, handle=handle, student=student, prior=prior, **kwargs)
    write_json_atomic(path, selection.to_dict())
    return selection, False
