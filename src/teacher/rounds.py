"""Choose the teacher's prompts in rounds: ask, fine-tune, re-score the rest.

    python -m src.collect --prompts POOL --out OUT --base-url URL --model NAME \\
        --select uncertainty --budget 150 --rounds 3 --student smollm2_135m [--round-train OVERRIDE ...]

Round r of R chooses the next slice of the budget (the first r/R of it, rounded up, minus what earlier
rounds chose) among the prompts not chosen yet, scored by the current student; the teacher answers
them (the same collect run, so <out> and its partial file grow round by round). Before the next round,
one cell fine-tunes the --student model on every answer so far (src.main's run_cell: data_source
sharegpt at <out>, no benchmarks, the checkpoint kept, plus the --round-train overrides, e.g.
experiment=NAME or a train recipe) and that checkpoint scores the rest.

Why from the base each round, on all answers so far, rather than continuing the last round's model:
the round-r student is then exactly the cell a user would train on those prompts, and a rerun with
other round counts reuses the same cells from the store.

Each round's choice is saved as <out stem>.round<r>.selection.json before its prompts are asked; a
rerun reuses it (nothing asked twice, the fine-tune cells are found done in the store). The whole
record, every round's selection, goes to <out stem>.rounds.json and into the .collect.json.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from src.io import write_json_atomic
from src.teacher.select import SelectionError, check_budget, load_or_select

log = logging.getLogger(__name__)


def round_budgets(budget: int, rounds: int) -> list[int]:
    """How many prompts each round adds: cumulative ceil(budget * r / rounds), so the slices differ
    by at most one and sum to the budget."""
    if rounds < 1:
        raise SelectionError(f"--rounds must be at least 1 (got {rounds})")
    if rounds > budget:
        raise SelectionError(f"--rounds {rounds} is more than --budget {budget}: every round must choose a prompt")
    totals = [math.ceil(budget * r / rounds) for r in range(1, rounds + 1)]
    return [b - a for a, b in zip([0, *totals], totals, strict=False)]


def round_path(out: Path, r: int) -> Path:
    out = Path(out)
    return out.with_name(out.name.rsplit(".", 1)[0] + f".round{r}.selection.json")


def rounds_path(out: Path) -> Path:
    out = Path(out)
    return out.with_name(out.name.rsplit(".", 1)[0] + ".rounds.json")


def job_dir(out: Path, r: int) -> Path:
    """Where a round's fine-tune cell leaves its status.json and results.json (the cell itself lives in
    the store, as every cell)."""
    out = Path(out)
    return out.with_name(out.name.rsplit(".", 1)[0] + ".rounds") / f"round{r}"


def finetune_overrides(student: str, out: Path, r: int, extra: list[str], cache_dir: str | None = None) -> list[str]:
    """The cell that fine-tunes the student on the answers of rounds 1..r. The file's content is in the
    source name, so in run_id: other answers are another cell, never a stale one."""
    digest = hashlib.sha256(Path(out).read_bytes()).hexdigest()[:8]
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", Path(out).name.rsplit(".", 1)[0])  # a plain name in run_id and folders
    cache = [f"cache_dir='{cache_dir}'"] if cache_dir else []  # where collect found the student (--cache-dir)
    # the answers as collected: the sharegpt source's cleaning is for web dumps (HTML replies, a mixed-
    # language crawl) and would rewrite a reply holding a tag or drop prompts the selector chose
    as_collected = ["data.source.clean.html_to_markdown=false", "data.source.clean.english_only=false",
                    "data.source.strict=true"]  # written by collect: a bad record is a bug, not noise
    # then the user's overrides; what makes it this round's cell (all the answers, the checkpoint kept,
    # nothing evaluated) comes last and wins
    return [*cache, *as_collected, *extra, f"model={student}", "data_source=sharegpt",
            f"data.source.name={stem}_round{r}_{digest}",
            f"data.source.path='{Path(out).resolve()}'", "data.amount=all", "benchmark=[]",
            "train.save_checkpoint=true", f"output_dir='{job_dir(out, r).resolve()}'"]


def finetune(student: str, out: Path, r: int, extra: list[str], cache_dir: str | None = None) -> Path:
    """Run (or find done) the round's fine-tune cell; its checkpoint directory."""
    from src.cell import Cell
    from src.main import compose_cell, run_cell
    from src.plugins import load_config

    overrides = finetune_overrides(student, out, r, extra, cache_dir)
    raw = compose_cell(overrides)
    # nothing is evaluated: an experiment's own body (experiment=smoke's benchmark.nq.limit) brings its
    # benchmarks back in past the benchmark=[] override, so they are dropped from the composed config too
    raw["benchmark"] = {}
    cell = Cell.of(load_config(raw))
    log.info("round %d: fine-tuning %s on the answers so far (cell %s)", r, student, cell.run_id)
    run_cell(raw, job_dir(out, r), overrides)
    return cell.checkpoint


@dataclass
class RoundsSettings:
    selector: str
    budget: int
    rounds: int
    seed: int
    student: str  # a conf/model name: each round fine-tunes it
    round_train: list[str]  # Hydra overrides of the fine-tune cells
    max_new_tokens: int = 32
    batch_size: int = 8
    cache_dir: str | None = None  # the fine-tune cells' cache_dir (collect's --cache-dir)


def collect_in_rounds(pairs: list[tuple[str, str]], settings: RoundsSettings, out: Path,
                      open_student: Callable[[str], object], ask: Callable[[list[str], dict], object],
                      train: Callable[[int], Path] | None = None) -> dict:
    """Run every round; returns the whole selection record. `ask(ids, record)` collects the answers to
    the prompts chosen so far (the record goes into <out>.collect.json); `open_student(name)` loads a
    conf/model name or a checkpoint directory; `train(r)` fine-tunes on rounds 1..r and returns the
    checkpoint (default: a cell through src.main)."""
    if settings.selector == "random":
        raise SelectionError("--rounds needs --select uncertainty or diversity: random does not read the student")
    check_budget(settings.budget, len(pairs))
    slices = round_budgets(settings.budget, settings.rounds)
    train = train or (lambda r: finetune(settings.student, out, r, settings.round_train, settings.cache_dir))
    text = dict(pairs)
    chosen: list[str] = []
    rounds: list[dict] = []
    student = settings.student
    for r, size in enumerate(slices, start=1):
        taken = set(chosen)
        rest = [p for p in pairs if p[0] not in taken]
        prior = [(i, text[i]) for i in chosen]
        selection, reused = load_or_select(
            rest, settings.selector, size, settings.seed, student, round_path(out, r), lambda s=student: open_student(s),
            prior=prior, max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size)
        log.info("round %d of %d: %s %d of the %d prompts left (student %s)", r, len(slices),
                 "reusing the choice of" if reused else "chose", size, len(rest), student)
        chosen += selection.chosen
        rounds.append({"round": r, "student": student, **selection.to_dict()})
        record = whole_record(settings, len(pairs), chosen, rounds)
        write_json_atomic(rounds_path(out), record)  # before the teacher is asked: what was chosen, and why
        ask(chosen, record)
        if r < len(slices):
            check_answers(out, r)
            student = str(train(r))
    return record


def check_answers(out: Path, r: int) -> None:
    """A fine-tune on no answers would stop deep inside training: say so here, naming the files."""
    text = Path(out).read_text(encoding="utf-8").strip()
    if text in ("", "[]"):  # collect writes a JSON list, or JSONL (one line per conversation)
        stats = Path(out).with_name(Path(out).name.rsplit(".", 1)[0] + ".collect.json")
        raise SelectionError(f"round {r}: {out} holds no answer to fine-tune the student on (every reply was "
                             f"dropped: see the counts in {stats}; --keep-truncated keeps replies cut off by "
                             "--max-tokens)")


def whole_record(settings: RoundsSettings, pool_size: int, chosen: list[str], rounds: list[dict]) -> dict:
    return {"selector": settings.selector, "budget": settings.budget, "seed": settings.seed,
            "student": settings.student, "pool_size": pool_size, "rounds": len(rounds),
            "rounds_planned": settings.rounds, "round_train": list(settings.round_train), "chosen": list(chosen),
            "per_round": rounds}
