"""Does pre-training text in the mix keep what local imitation erases? Measured in the toy world.

    python -m src.toyworld mix [--seeds 0,1,2] [--amounts 12K,36K] [--shares 0,0.25,0.5] [--out multirun/toyworld_mix]

Per world seed: `toy_l`'s base, then one cell per (amount, share) fine-tuning `toy_l` on `toy_local`
with the toy world's recipe and data.pretrain_mix = {source: toy_corpus, share} (the base's own
pretraining corpus, src/toyworld/corpus.py); share 0 is plain local imitation (the same run_id as the
toy world grid's cell). Each cell scores toy QA (the local task) and toy cloze (what the model
knows). The finding, computed from the numbers with the thresholds below (means over seeds): a share
keeps the knowledge when cloze stays >= CLOZE_KEPT at every amount, and keeps local QA's gain when its
QA is at most QA_LOSS_MAX below share 0's at the same amount and still above the base. Written to
mix.csv, mix_table.md, findings.txt and findings.json in the output folder.
"""

from __future__ import annotations

import csv
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from src.config import format_amount, parse_amount
from src.io import write_json_atomic, write_text_atomic
from src.store import default_cache_dir
from src.toyworld.findings import Finding

QA, CLOZE = "toy_qa/em", "toy_cloze/acc"
CLOZE_KEPT = 0.9  # the bar: cloze knowledge kept at >= 0.9 (the base knows 1.00)
QA_LOSS_MAX = 0.05  # the mix may cost local QA at most this much against share 0 at the same amount
FIELDS = ("seed", "amount", "share", "imitation_tokens", "pretrain_tokens", "qa", "cloze", "run_id")


def overrides(seed: int, cache_dir: str, job_dir: Path, amount: int, share: float) -> list[str]:
    return ["experiment=toyworld", "model=toy_l", "data_source=toy_local", f"seed={seed}",
            f"cache_dir='{cache_dir}'", f"output_dir='{job_dir}'", "benchmark=[toy_qa,toy_cloze]",
            f"data.amount={amount}", "data.pretrain_mix.source=toy_corpus", f"data.pretrain_mix.share={share}"]


def run_cells(seed: int, amounts: list[int], shares: list[float], cache_dir: str, out: Path) -> list[dict]:
    from src.main import run_cell
    from src.toyworld.selection import compose

    rows = []
    for amount, share in [(0, 0.0)] + [(a, s) for a in amounts for s in shares]:
        job_dir = out / f"seed_{seed}" / f"{format_amount(amount)}_share{share:g}"
        args = overrides(seed, cache_dir, job_dir, amount, share)
        results = run_cell(compose(args), job_dir, args)
        rows.append({"seed": seed, "amount": amount, "share": share, "imitation_tokens": results.tokens.total,
                     "pretrain_tokens": results.tokens.pretrain, "qa": results.metrics[QA],
                     "cloze": results.metrics[CLOZE], "run_id": results.run_id})
        print(f"seed {seed} {format_amount(amount):>4} share {share:<4g}: QA {rows[-1]['qa']:.3f} "
              f"cloze {rows[-1]['cloze']:.3f} ({rows[-1]['imitation_tokens']} + {rows[-1]['pretrain_tokens']} tokens)",
              flush=True)
    return rows


@dataclass
class Cellwise:
    amount: int
    share: float
    qa: list[float]  # by seed, in seed order
    cloze: list[float]

    @property
    def qa_mean(self) -> float:
        return statistics.fmean(self.qa)

    @property
    def cloze_mean(self) -> float:
        return statistics.fmean(self.cloze)


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def collect(rows: list[dict]) -> tuple[dict[str, list[float]], list[Cellwise], list[int]]:
    """The base's QA and cloze per seed, and every (amount, share) over the seeds all of them ran."""
    seeds = sorted({r["seed"] for r in rows})
    by = {(r["seed"], r["amount"], r["share"]): r for r in rows}
    base = {"qa": [by[(s, 0, 0.0)]["qa"] for s in seeds if (s, 0, 0.0) in by],
            "cloze": [by[(s, 0, 0.0)]["cloze"] for s in seeds if (s, 0, 0.0) in by]}
    cells = []
    for amount, share in sorted({(r["amount"], r["share"]) for r in rows if r["amount"]}):
        if all((s, amount, share) in by for s in seeds):
            cells.append(Cellwise(amount, share, [by[(s, amount, share)]["qa"] for s in seeds],
                                  [by[(s, amount, share)]["cloze"] for s in seeds]))
    return base, cells, seeds


def findings(rows: list[dict]) -> list[Finding]:
    """Per share > 0: does it keep cloze >= CLOZE_KEPT at every amount, and local QA's gain? And the
    problem itself: does plain local imitation (share 0) lose the knowledge?"""
    base, cells, seeds = collect(rows)
    base_qa = statistics.fmean(base["qa"]) if base["qa"] else 0.0
    plain = {c.amount: c for c in cells if c.share == 0}
    amounts = sorted(plain)
    found = []
    if not plain:
        return [Finding("mix_keeps_knowledge", False, "No share-0 cells: nothing to compare the mix against.")]
    lost = [a for a in amounts if plain[a].cloze_mean < CLOZE_KEPT]
    found.append(Finding(
        "plain_local_imitation_loses_knowledge", bool(lost),
        "Plain local imitation (share 0) " + ("loses" if lost else "keeps") + " the cloze knowledge: cloze "
        + ", ".join(f"{plain[a].cloze_mean:.2f} at {format_amount(a)}" for a in amounts)
        + f" (base {statistics.fmean(base['cloze']) if base['cloze'] else 0.0:.2f}; bar {CLOZE_KEPT}; "
        f"means over seeds {','.join(map(str, seeds))})."))
    for share in sorted({c.share for c in cells if c.share > 0}):
        mixed = {c.amount: c for c in cells if c.share == share}
        parts, keeps_cloze, keeps_qa = [], True, True
        above = [m > p for a in amounts if a in mixed for m, p in zip(mixed[a].cloze, plain[a].cloze, strict=True)]
        for a in amounts:
            if a not in mixed:
                keeps_cloze = keeps_qa = False
                parts.append(f"{format_amount(a)}: not run")
                continue
            m, p = mixed[a], plain[a]
            keeps_cloze &= m.cloze_mean >= CLOZE_KEPT
            keeps_qa &= m.qa_mean >= p.qa_mean - QA_LOSS_MAX and m.qa_mean > base_qa
            parts.append(f"{format_amount(a)}: cloze {m.cloze_mean:.2f} (share 0: {p.cloze_mean:.2f}), "
                         f"QA {m.qa_mean:.2f} (share 0: {p.qa_mean:.2f}, base {base_qa:.2f})")
        holds = keeps_cloze and keeps_qa
        verdict = ("keeps both the knowledge and local QA's gain" if holds else
                   "keeps the knowledge but not local QA's gain" if keeps_cloze else
                   "keeps local QA's gain but not the knowledge" if keeps_qa else "keeps neither")
        found.append(Finding(
            f"share_{share:g}_keeps_knowledge_and_qa", holds,
            f"Pre-training text at share {share:g} {verdict}: " + "; ".join(parts)
            + f" (needs cloze >= {CLOZE_KEPT} at every amount and QA within {QA_LOSS_MAX} of share 0 and "
            f"above the base; means over seeds). Cloze above share 0's in {sum(above)} of {len(above)} "
            "(seed, amount) pairs."))
    return found


def render(found: list[Finding]) -> str:
    lines = ["Pre-training text in the mix, toy_l x toy_local (computed from this study's results):"]
    for i, f in enumerate(found, start=1):
        lines.append(f"{i}. [{'holds' if f.holds else 'DOES NOT HOLD'}] {f.text}")
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    """The README's table: mean +- sd over the seeds, and each seed's numbers."""
    base, cells, seeds = collect(rows)
    by = {(r["seed"], r["amount"], r["share"]): r for r in rows}
    header = ("| amount | share | tokens (imitation + pre-training) | QA mean +- sd | cloze mean +- sd | "
              f"QA by seed ({', '.join(map(str, seeds))}) | cloze by seed |")
    lines = [header, "| --- | --- | --- | --- | --- | --- | --- |"]
    if base["qa"]:
        lines.append(f"| base | - | 0 | {statistics.fmean(base['qa']):.2f} +- {_sd(base['qa']):.2f} | "
                     f"{statistics.fmean(base['cloze']):.2f} +- {_sd(base['cloze']):.2f} | "
                     f"{', '.join(f'{v:.2f}' for v in base['qa'])} | {', '.join(f'{v:.2f}' for v in base['cloze'])} |")
    for c in cells:
        first = by[(seeds[0], c.amount, c.share)]
        lines.append(f"| {format_amount(c.amount)} | {c.share:g} | {first['imitation_tokens']:,} + "
                     f"{first['pretrain_tokens']:,} | {c.qa_mean:.2f} +- {_sd(c.qa):.2f} | "
                     f"{c.cloze_mean:.2f} +- {_sd(c.cloze):.2f} | {', '.join(f'{v:.2f}' for v in c.qa)} | "
                     f"{', '.join(f'{v:.2f}' for v in c.cloze)} |")
    return "\n".join(lines)


def write_report(rows: list[dict], out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "mix.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    found = findings(rows)
    text = render(found)
    write_text_atomic(out / "mix_table.md", table(rows) + "\n")
    write_text_atomic(out / "findings.txt", text + "\n")
    write_json_atomic(out / "findings.json", [asdict(f) for f in found])
    return table(rows) + "\n\n" + text


def read_rows(out: Path) -> list[dict]:
    with open(out / "mix.csv", encoding="utf-8") as handle:
        return [{"seed": int(r["seed"]), "amount": int(r["amount"]), "share": float(r["share"]),
                 "imitation_tokens": int(r["imitation_tokens"]), "pretrain_tokens": int(r["pretrain_tokens"]),
                 "qa": float(r["qa"]), "cloze": float(r["cloze"]), "run_id": r["run_id"]}
                for r in csv.DictReader(handle)]


def run_study(seeds: list[int], amounts: list[str | int], shares: list[float], out: Path,
              cache_dir: str | None = None) -> str:
    """Every seed in turn; the report is rewritten after each, so an interrupted study still says what ran."""
    cache_dir = cache_dir or default_cache_dir()
    tokens = [parse_amount(a, "--amounts") for a in amounts]
    shares = sorted({0.0, *map(float, shares)})
    rows: list[dict] = []
    text = ""
    for seed in seeds:
        rows += run_cells(seed, tokens, shares, cache_dir, out)
        text = write_report(rows, out)
    return text
