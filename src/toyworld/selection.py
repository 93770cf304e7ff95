"""Which prompts to pay the teacher for, measured in the toy world, where the oracle teacher is free.

    python -m src.toyworld selection [--seeds 0,1,2] [--queries 50,150,450] [--out multirun/toyworld_selection]

Per world seed: the pool is the local imitation set's prompts (the evaluated task's questions about
corpus entities the benchmarks never ask about); `toy_l`'s base model is the student that scores them;
each selector (src/teacher/select.py) chooses the largest budget once (budgets are nested prefixes); the
oracle's answers to the first N chosen become a ShareGPT file; one cell per (selector, N) fine-tunes
`toy_l` on all of it with the toy world's recipe and scores toy QA (and cloze, to see what the facts
lose). Then, at equal queries, every selector against random, paired by seed: selection.csv,
selection.png and selection_findings.md in the output folder.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from src.io import write_json_atomic, write_text_atomic
from src.report.stats import t975  # the one t table: the uncertainty issue's
from src.store import default_cache_dir
from src.teacher.select import load_or_select
from src.toyworld.files import data_dir, local_conversations
from src.toyworld.world import WorldSpec, make_world

QA, CLOZE = "toy_qa/em", "toy_cloze/acc"
TEACHER_QA = 1.0  # the oracle answers every question right (conf/teacher/toyworld.yaml)


def compose(overrides: list[str]) -> dict:
    """The composed config of one cell, as src.main would see it from the command line."""
    from src.main import compose_cell

    return compose_cell(overrides)


def base_overrides(seed: int, cache_dir: str, job_dir: Path) -> list[str]:
    return ["experiment=toyworld", "model=toy_l", "data_source=toy_local", f"seed={seed}",
            f"cache_dir='{cache_dir}'", f"output_dir='{job_dir}'", "benchmark=[toy_qa,toy_cloze]"]


def load_base_student(seed: int, cache_dir: str):
    """toy_l's base model of this world, as the selectors' student."""
    from src.models.hf import load_handle
    from src.models.load import pick_device
    from src.plugins import load_config

    cfg = load_config(compose(base_overrides(seed, cache_dir, Path("."))))
    return load_handle(cfg.model, cfg.cache_dir, pick_device("cpu"), trained=False, seed=seed)


def write_rows(path: Path, rows: list[dict]) -> None:
    """A ShareGPT file of these conversations, rewritten only when its content would change."""
    if not path.exists() or json.loads(path.read_text(encoding="utf-8")) != rows:
        write_text_atomic(path, json.dumps(rows, indent=1, sort_keys=True) + "\n")


def selected_file(cache_dir: str, seed: int, selector: str, queries: int) -> Path:
    return data_dir(cache_dir, seed) / "selected" / f"{selector}_{queries}.json"


def write_selected_sources(seed: int, selectors: list[str], queries: list[int], cache_dir: str) -> dict:
    """For each selector, the ShareGPT files of the first N chosen prompts with the oracle's answers."""
    pool = local_conversations(make_world(WorldSpec(seed=seed)))
    pairs = [(r["id"], r["conversations"][0]["value"]) for r in pool]
    by_id = {r["id"]: r for r in pool}
    handle = None

    def student():
        nonlocal handle
        if handle is None:
            handle = load_base_student(seed, cache_dir)
        return handle

    chosen = {}
    for selector in selectors:
        folder = data_dir(cache_dir, seed) / "selected"
        selection, _ = load_or_select(pairs, selector, max(queries), seed, "toy_l", folder / f"{selector}.selection.json",
                                      student, max_new_tokens=16, batch_size=32)
        chosen[selector] = selection.chosen
        for n in queries:
            write_rows(selected_file(cache_dir, seed, selector, n), [by_id[i] for i in selection.chosen[:n]])
    return chosen


def rounds_label(selector: str, rounds: int) -> str:
    return f"{selector}_r{rounds}"


def write_round_sources(seed: int, selectors: list[str], queries: list[int], rounds: int, cache_dir: str,
                        out: Path) -> list[str]:
    """For each selector that reads the student and each N: N prompts chosen in `rounds` rounds
    (src/teacher/rounds.py), `toy_l` fine-tuned on the oracle's answers so far between them (a cell that
    keeps its checkpoint, under <out>/seed_S/<label>_<N>_round<r>). The final file is the selected file of
    the label `<selector>_r<rounds>`, which run_cells trains and scores as any selector's. Returns the labels."""
    from src.cell import Cell
    from src.main import run_cell
    from src.models.load import pick_device
    from src.plugins import load_config
    from src.teacher.clients import load_local_handle
    from src.teacher.rounds import RoundsSettings, collect_in_rounds

    pool = local_conversations(make_world(WorldSpec(seed=seed)))
    pairs = [(r["id"], r["conversations"][0]["value"]) for r in pool]
    by_id = {r["id"]: r for r in pool}
    handles: dict[str, object] = {}

    def open_student(name: str):
        # the base scores round 1 of every (selector, N): loaded once (a toy model is under a million
        # parameters, so keeping every round's student too costs nothing)
        if name not in handles:  # the base, or a round's checkpoint directory
            handles[name] = (load_base_student(seed, cache_dir) if name == "toy_l"
                             else load_local_handle(name, cache_dir, pick_device("cpu")))
        return handles[name]

    def ask(ids: list[str], answers: Path) -> None:
        write_rows(answers, [by_id[i] for i in ids])

    labels = []
    for selector in [s for s in selectors if s != "random"]:  # random does not read the student
        label = rounds_label(selector, rounds)
        labels.append(label)
        for n in queries:
            answers = data_dir(cache_dir, seed) / "selected" / f"{label}_{n}" / "answers.json"

            def train(r: int, answers: Path = answers, label: str = label, n: int = n) -> Path:
                job_dir = out / f"seed_{seed}" / f"{label}_{n}_round{r}"
                overrides = [*base_overrides(seed, cache_dir, job_dir), "data.amount=all", "train.save_checkpoint=true",
                             *selected_source(answers, f"{label}_round{r}", n)]
                raw = compose(overrides)
                results = run_cell(raw, job_dir, overrides)
                print(f"seed {seed} {label} {n} queries, round {r}: QA {results.metrics[QA]:.3f}")
                return Cell.of(load_config(raw)).checkpoint

            plan = RoundsSettings(selector=selector, budget=n, rounds=rounds, seed=seed, student="toy_l", round_train=[],
                                  max_new_tokens=16, batch_size=32)
            record = collect_in_rounds(pairs, plan, answers, open_student, lambda ids, _, a=answers: ask(ids, a), train)
            write_rows(selected_file(cache_dir, seed, label, n), [by_id[i] for i in record["chosen"]])
    return labels


def selected_source(path: Path, selector: str, n: int) -> list[str]:
    """The data-source overrides of a selection cell. The file's content is in the name, so in run_id:
    another choice of prompts (a new selection version, another student) is another cell, never the
    stale one trained on the file's old content."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    return [f"data.source.name=toy_select_{selector}_{n}_{digest}", f"data.source.path='{path}'"]


def run_cells(seed: int, selectors: list[str], queries: list[int], cache_dir: str, out: Path) -> list[dict]:
    from src.main import run_cell

    rows = []
    cells = [("base", 0)] + [(s, n) for s in selectors for n in queries]
    for selector, n in cells:
        job_dir = out / f"seed_{seed}" / f"{selector}_{n}"
        overrides = base_overrides(seed, cache_dir, job_dir)
        if selector == "base":
            overrides += ["data.amount=0"]
        else:
            overrides += ["data.amount=all", *selected_source(selected_file(cache_dir, seed, selector, n), selector, n)]
        results = run_cell(compose(overrides), job_dir, overrides)
        rows.append({"seed": seed, "selector": selector, "queries": n, "tokens": results.tokens.total,
                     "qa": results.metrics[QA], "cloze": results.metrics[CLOZE], "run_id": results.run_id})
        print(f"seed {seed} {selector:>11} {n:>4} queries: QA {rows[-1]['qa']:.3f} cloze {rows[-1]['cloze']:.3f}")
    return rows


@dataclass
class Comparison:
    selector: str
    queries: int
    mean: float  # the selector's QA, mean over seeds
    sd: float
    random_mean: float
    delta: float  # mean over seeds of (selector - random), paired by seed
    ci95: tuple[float, float] | None  # t interval over the seeds' paired deltas (None with one seed)
    verdict: str


def seed_interval(deltas: list[float]) -> tuple[float, float] | None:
    """The t interval over the seeds' paired deltas (None with one seed)."""
    if len(deltas) < 2:
        return None
    half = t975(len(deltas) - 1) * statistics.stdev(deltas) / math.sqrt(len(deltas))
    mean = statistics.fmean(deltas)
    return (mean - half, mean + half)


def compare(rows: list[dict]) -> list[Comparison]:
    """Each selector against random at equal queries, paired by world seed."""
    qa = {(r["seed"], r["selector"], r["queries"]): r["qa"] for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    out = []
    for selector, n in sorted({(r["selector"], r["queries"]) for r in rows if r["selector"] not in ("base", "random")}):
        paired = [s for s in seeds if (s, selector, n) in qa and (s, "random", n) in qa]
        if not paired:
            continue
        mine = [qa[(s, selector, n)] for s in paired]
        theirs = [qa[(s, "random", n)] for s in paired]
        deltas = [a - b for a, b in zip(mine, theirs, strict=True)]
        ci = seed_interval(deltas)
        if ci is None:
            verdict = "cannot tell (one seed)"
        elif ci[0] > 0:
            verdict = "beats random"
        elif ci[1] < 0:
            verdict = "worse than random"
        else:
            verdict = "no difference shown"
        out.append(Comparison(selector, n, statistics.fmean(mine), statistics.stdev(mine) if len(mine) > 1 else 0.0,
                              statistics.fmean(theirs), statistics.fmean(deltas), ci, verdict))
    return out


def gap_closed(qa: float, base: float) -> float:
    return (qa - base) / (TEACHER_QA - base) if TEACHER_QA != base else float("nan")


def write_report(rows: list[dict], out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    base = {r["seed"]: r["qa"] for r in rows if r["selector"] == "base"}
    with open(out / "selection.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*rows[0], "gap_closed"])
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "gap_closed": round(gap_closed(r["qa"], base[r["seed"]]), 4)})
    comparisons = compare(rows)
    seeds = sorted(base)
    lines = [f"# Which prompts to pay the teacher for (toy world, toy_l, seeds {', '.join(map(str, seeds))})", "",
             f"Base QA {statistics.fmean(base.values()):.3f} (mean over seeds); the oracle teacher {TEACHER_QA:.1f}.",
             "QA is exact match on the world's 100 evaluated questions; a delta is the selector's QA minus random's",
             "at the same number of teacher queries, paired by seed, with a t interval over the seeds.", "",
             "| selector | queries | QA mean +- sd | gap closed | random QA | delta vs random | 95% interval | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    base_mean = statistics.fmean(base.values())
    random_rows = {}
    for r in rows:
        if r["selector"] == "random":
            random_rows.setdefault(r["queries"], []).append(r["qa"])
    for n, values in sorted(random_rows.items()):
        mean = statistics.fmean(values)
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        lines.append(f"| random | {n} | {mean:.3f} +- {sd:.3f} | {gap_closed(mean, base_mean):.2f} | | | | baseline |")
    for c in comparisons:
        ci = f"[{c.ci95[0]:+.3f}, {c.ci95[1]:+.3f}]" if c.ci95 else "-"
        lines.append(f"| {c.selector} | {c.queries} | {c.mean:.3f} +- {c.sd:.3f} | {gap_closed(c.mean, base_mean):.2f} "
                     f"| {c.random_mean:.3f} | {c.delta:+.3f} | {ci} | {c.verdict} |")
    wins = [c for c in comparisons if c.verdict == "beats random"]
    if wins:
        finding = "; ".join(f"{c.selector} beats random at {c.queries} queries by {c.delta:+.3f} QA" for c in wins)
    elif len(seeds) < 2:
        finding = "cannot tell with one seed (run --seeds 0,1,2: the interval is over seeds)."
    else:
        finding = "no selector beats random at equal queries with these seeds."
    if len(comparisons) > 1:  # each interval is at 95%, none corrected for the others
        finding += (f" ({len(comparisons)} comparisons with random, each at 95% with no correction for the others: "
                    f"about {0.05 * len(comparisons):.1f} verdicts either way are expected from chance alone.)")
    lines += ["", f"Finding: {finding}"]
    text = "\n".join(lines) + "\n"
    write_text_atomic(out / "selection_findings.md", text)
    write_json_atomic(out / "selection.json", {"rows": rows, "comparisons": [c.__dict__ for c in comparisons]})
    plot(rows, out / "selection.png")
    return text


def curve_names(rows: list[dict]) -> list[str]:
    """One curve per selector in the rows (a rounds label such as uncertainty_r3 too), in first-seen order;
    the base is a line, not a curve."""
    return [s for s in dict.fromkeys(r["selector"] for r in rows) if s != "base"]


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for selector in curve_names(rows):
        by_n: dict[int, list[float]] = {}
        for r in rows:
            if r["selector"] == selector:
                by_n.setdefault(r["queries"], []).append(r["qa"])
        ns = sorted(by_n)
        means = [statistics.fmean(by_n[n]) for n in ns]
        sds = [statistics.stdev(by_n[n]) if len(by_n[n]) > 1 else 0.0 for n in ns]
        ax.errorbar(ns, means, yerr=sds, marker="o", capsize=3, label=selector)
    base = [r["qa"] for r in rows if r["selector"] == "base"]
    ax.axhline(statistics.fmean(base), color="grey", linestyle=":", label="base (no imitation)")
    ax.axhline(TEACHER_QA, color="black", linestyle="--", label="teacher")
    ax.set_xscale("log")
    ax.set_xlabel("teacher queries (conversations bought)")
    ax.set_ylabel("toy QA exact match (mean +- sd over seeds)")
    ax.set_title("toy_l, local imitation: which prompts to ask")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_study(seeds: list[int], queries: list[int], selectors: list[str], out: Path,
              cache_dir: str | None = None, rounds: int = 1) -> str:
    """`rounds` > 1 adds `<selector>_r<rounds>` beside each selector that reads the student: the same
    budget chosen in rounds, the student fine-tuned between them."""
    cache_dir = cache_dir or default_cache_dir()
    rows: list[dict] = []
    for seed in seeds:  # the report is rewritten after every seed: an interrupted study still says something
        write_selected_sources(seed, selectors, queries, cache_dir)
        labels = write_round_sources(seed, selectors, queries, rounds, cache_dir, out) if rounds > 1 else []
        rows += run_cells(seed, [*selectors, *labels], queries, cache_dir, out)
        text = write_report(rows, out)
    return text
