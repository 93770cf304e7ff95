"""Does a preference stage after broad imitation move chat QA, or only style? Measured in the toy world.

    python -m src.toyworld preference [--seeds 0,1,2] [--amounts 12K,36K] [--out multirun/toyworld_preference]

Per world seed and budget: `toy_l` fine-tuned on `toy_broad` (the SFT cell, exactly the toy world
grid's cell) and the same cell with `preference=teacher_vs_student` after it: pairs from the prompts of
that cell's own imitation data, the oracle teacher's reply chosen over the SFT student's own sampled
reply, DPO from the SFT checkpoint (src/training/dpo.py; its settings in DPO_OVERRIDES, fixed before
any result was seen). Both are scored on chat QA (the evaluated people's cities and jobs), cloze
knowledge and style. Each DPO cell is compared with its own SFT cell, paired by seed: preference.csv,
preference.json and preference_findings.md in the output folder. The finding is computed from the
numbers with the thresholds below; it says so when they do not show an effect.
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

from src.config import parse_amount
from src.io import write_json_atomic, write_text_atomic
from src.store import default_cache_dir
from src.toyworld.selection import compose, seed_interval

QA, MENTIONS, CLOZE, STYLE = "toy_qa/em", "toy_qa/mentions", "toy_cloze/acc", "toy_style/style_score"
QA_MOVED = 0.05  # DPO moves chat QA: the mean paired gain over seeds is at least this, and positive in every seed
STYLE_MOVED = 0.05  # DPO moves style: the mean paired change of the style score is at least this in size
# The DPO stage of the study, chosen before any result: the learning rate 10x below the toy world's SFT
# rate (2e-3, as DPO recipes run ~10x below SFT), two epochs over up to 256 pairs of 8, replies of up to
# 40 tokens (the teacher's longest reply is 30 words), sampled at temperature 1 (the default).
DPO_OVERRIDES = ["preference=teacher_vs_student", "train.dpo.lr=2e-4", "train.dpo.epochs=2",
                 "train.dpo.pairs_per_step=8", "train.dpo.beta=0.1", "preference.max_pairs=256",
                 "preference.max_new_tokens=40", "preference.batch_size=32"]


def overrides(seed: int, amount: int, cache_dir: str, job_dir: Path) -> list[str]:
    return ["experiment=toyworld", "model=toy_l", "data_source=toy_broad", f"seed={seed}", f"data.amount={amount}",
            f"cache_dir='{cache_dir}'", f"output_dir='{job_dir}'", "benchmark=[toy_qa,toy_cloze,toy_style]"]


def run_cells(seed: int, amounts: list[int], cache_dir: str, out: Path) -> list[dict]:
    from src.main import run_cell

    rows = []
    # the DPO cell first: it trains the SFT stage and keeps its checkpoint, which the SFT cell then only
    # evaluates (the other order trains SFT twice: the SFT cell, with the toy world's
    # train.save_checkpoint=false, removes its checkpoint once scored)
    cells = [("base", 0)] + [(stage, a) for a in amounts for stage in ("dpo", "sft")]
    for stage, amount in cells:
        job_dir = out / f"seed_{seed}" / f"{stage}_{amount}"
        cell = overrides(seed, amount, cache_dir, job_dir) + (DPO_OVERRIDES if stage == "dpo" else [])
        results = run_cell(compose(cell), job_dir, cell)
        pref = results.preference or {}
        rows.append({"seed": seed, "stage": stage, "amount": amount, "qa": results.metrics[QA],
                     "mentions": results.metrics[MENTIONS], "cloze": results.metrics[CLOZE],
                     "style": results.metrics[STYLE], "pairs": pref.get("pairs", 0), "dpo_steps": pref.get("steps", 0),
                     "reward_accuracy_first": pref.get("first", {}).get("reward_accuracy"),
                     "reward_accuracy_final": pref.get("final", {}).get("reward_accuracy"),
                     "log_ratio_margin_final": pref.get("final", {}).get("log_ratio_margin"),
                     "dropped_identical": pref.get("pair_report", {}).get("dropped_identical"),
                     "run_id": results.run_id})
        print(f"seed {seed} {stage:>4} {amount:>6}: QA {rows[-1]['qa']:.3f} cloze {rows[-1]['cloze']:.3f} "
              f"style {rows[-1]['style']:.3f}" + (f" pairs {rows[-1]['pairs']}" if stage == "dpo" else ""), flush=True)
    return rows


def paired(rows: list[dict]) -> list[dict]:
    """Per budget: DPO minus its SFT cell, per seed, for every metric."""
    by = {(r["seed"], r["stage"], r["amount"]): r for r in rows}
    out = []
    for amount in sorted({r["amount"] for r in rows if r["stage"] == "dpo"}):
        seeds = [s for s in sorted({r["seed"] for r in rows}) if (s, "dpo", amount) in by and (s, "sft", amount) in by]
        if not seeds:
            continue
        entry = {"amount": amount, "seeds": seeds}
        for metric in ("qa", "mentions", "cloze", "style"):
            deltas = [by[(s, "dpo", amount)][metric] - by[(s, "sft", amount)][metric] for s in seeds]
            entry[metric] = {"sft": statistics.fmean(by[(s, "sft", amount)][metric] for s in seeds),
                             "dpo": statistics.fmean(by[(s, "dpo", amount)][metric] for s in seeds),
                             "deltas": deltas, "delta": statistics.fmean(deltas), "ci95": seed_interval(deltas)}
        entry["reward_accuracy_final"] = [by[(s, "dpo", amount)]["reward_accuracy_final"] for s in seeds]
        entry["pairs"] = [by[(s, "dpo", amount)]["pairs"] for s in seeds]
        out.append(entry)
    return out


def finding(comparisons: list[dict]) -> str:
    if not comparisons:
        return "no DPO cell finished: nothing to compare."
    parts, qa_any, style_any = [], False, False
    for c in comparisons:
        qa_moves = c["qa"]["delta"] >= QA_MOVED and all(d > 0 for d in c["qa"]["deltas"])
        style_moves = abs(c["style"]["delta"]) >= STYLE_MOVED
        qa_any |= qa_moves
        style_any |= style_moves
        parts.append(f"at {c['amount']:,} tokens chat QA {c['qa']['sft']:.3f} -> {c['qa']['dpo']:.3f} "
                     f"({c['qa']['delta']:+.3f}, per seed {', '.join(f'{d:+.2f}' for d in c['qa']['deltas'])}: "
                     f"{'moves' if qa_moves else 'does not move'}), style {c['style']['sft']:.2f} -> "
                     f"{c['style']['dpo']:.2f} ({'moves' if style_moves else 'does not move'}), cloze "
                     f"{c['cloze']['sft']:.2f} -> {c['cloze']['dpo']:.2f}; DPO's own pairs at the end: reward "
                     f"accuracy {', '.join(f'{a:.2f}' for a in c['reward_accuracy_final'] if a is not None)}")
    seeds = len(comparisons[0]["seeds"])
    if qa_any and style_any:
        verdict = "DPO moves both chat QA and style"
    elif qa_any:
        verdict = "DPO moves chat QA"
    elif style_any:
        verdict = "DPO moves only style"
    else:
        verdict = "DPO moves neither chat QA nor style"
    caveat = " (one seed: no interval)" if seeds < 2 else ""
    return (f"{verdict}{caveat}: " + "; ".join(parts) + f". Thresholds: QA moves if the mean paired gain is >= "
            f"{QA_MOVED} and positive in every seed; style moves if its mean change is >= {STYLE_MOVED} in size.")


def write_report(rows: list[dict], out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "preference.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    comparisons = paired(rows)
    seeds = sorted({r["seed"] for r in rows})
    base = [r for r in rows if r["stage"] == "base"]
    lines = [f"# A preference stage after broad imitation (toy world, toy_l x toy_broad, seeds "
             f"{', '.join(map(str, seeds))})", "",
             f"Base (no imitation): chat QA {statistics.fmean(r['qa'] for r in base):.3f}, cloze "
             f"{statistics.fmean(r['cloze'] for r in base):.3f}, style {statistics.fmean(r['style'] for r in base):.3f} "
             "(means over seeds). DPO: " + " ".join(DPO_OVERRIDES) + ".", "",
             "| tokens | metric | SFT (mean) | SFT + DPO (mean) | delta, paired by seed | per seed | 95% interval |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for c in comparisons:
        for metric, label in (("qa", "chat QA (exact match)"), ("mentions", "chat QA (mentions)"),
                              ("cloze", "cloze knowledge"), ("style", "style score")):
            m = c[metric]
            ci = f"[{m['ci95'][0]:+.3f}, {m['ci95'][1]:+.3f}]" if m["ci95"] else "-"
            lines.append(f"| {c['amount']:,} | {label} | {m['sft']:.3f} | {m['dpo']:.3f} | {m['delta']:+.3f} | "
                         f"{', '.join(f'{d:+.2f}' for d in m['deltas'])} | {ci} |")
        lines.append(f"| {c['amount']:,} | DPO pairs / reward accuracy at the end | | "
                     f"{', '.join(map(str, c['pairs']))} / "
                     f"{', '.join(f'{a:.2f}' for a in c['reward_accuracy_final'] if a is not None)} | | | |")
    text_finding = finding(comparisons)
    lines += ["", f"Finding: {text_finding}"]
    text = "\n".join(lines) + "\n"
    write_text_atomic(out / "preference_findings.md", text)
    write_json_atomic(out / "preference.json", {"rows": rows, "comparisons": comparisons, "finding": text_finding,
                                                 "dpo_overrides": DPO_OVERRIDES})
    return text


def run_study(seeds: list[int], amounts: list[str], out: Path, cache_dir: str | None = None) -> str:
    cache_dir = cache_dir or default_cache_dir()
    tokens = [parse_amount(a, "--amounts") for a in amounts]
    rows: list[dict] = []
    text = ""
    for seed in seeds:  # the report is rewritten after every seed: an interrupted study still says something
        rows += run_cells(seed, tokens, cache_dir, out)
        text = write_report(rows, out)
    return text
