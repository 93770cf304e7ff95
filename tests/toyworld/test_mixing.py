"""The pre-training mix study's finding, computed from the numbers both ways (src/toyworld/mixing.py)."""

from pathlib import Path

from src.toyworld.mixing import CLOZE_KEPT, QA_LOSS_MAX, findings, overrides, read_rows, table, write_report


def rows(cloze_mixed: float, qa_mixed: float, seeds=(0, 1, 2)) -> list[dict]:
    out = []
    for seed in seeds:
        out.append({"seed": seed, "amount": 0, "share": 0.0, "imitation_tokens": 0, "pretrain_tokens": 0,
                    "qa": 0.1, "cloze": 1.0, "run_id": f"b{seed}"})
        for amount in (12000, 36000):
            out.append({"seed": seed, "amount": amount, "share": 0.0, "imitation_tokens": amount,
                        "pretrain_tokens": 0, "qa": 0.6, "cloze": 0.5, "run_id": f"p{seed}{amount}"})
            out.append({"seed": seed, "amount": amount, "share": 0.25, "imitation_tokens": amount,
                        "pretrain_tokens": amount // 3, "qa": qa_mixed, "cloze": cloze_mixed,
                        "run_id": f"m{seed}{amount}"})
    return out


def test_the_finding_holds_only_when_both_cloze_and_qa_are_kept():
    plain, mixed = findings(rows(cloze_mixed=0.95, qa_mixed=0.6))
    assert plain.holds and "loses" in plain.text and "0.50 at 12K" in plain.text
    assert mixed.name == "share_0.25_keeps_knowledge_and_qa" and mixed.holds
    assert "Cloze above share 0's in 6 of 6 (seed, amount) pairs." in mixed.text
    assert not findings(rows(cloze_mixed=CLOZE_KEPT - 0.01, qa_mixed=0.6))[1].holds  # the bar is >= 0.9
    assert findings(rows(cloze_mixed=CLOZE_KEPT, qa_mixed=0.6))[1].holds
    qa_lost = findings(rows(cloze_mixed=0.95, qa_mixed=0.6 - QA_LOSS_MAX - 0.01))[1]
    assert not qa_lost.holds and "keeps the knowledge but not local QA's gain" in qa_lost.text
    assert not findings(rows(cloze_mixed=0.5, qa_mixed=0.6))[1].holds


def test_a_missing_seed_leaves_the_cell_out_and_the_report_round_trips(tmp_path):
    data = rows(0.95, 0.6)
    data = [r for r in data if not (r["seed"] == 2 and r["share"] == 0.25 and r["amount"] == 36000)]
    mixed = findings(data)[1]
    assert not mixed.holds and "36K: not run" in mixed.text  # never judged on the seeds that happen to be there
    text = write_report(rows(0.95, 0.6), tmp_path)
    assert read_rows(tmp_path) == rows(0.95, 0.6)
    assert "| 12K | 0.25 | 12,000 + 4,000 | 0.60 +- 0.00 | 0.95 +- 0.00 |" in text
    assert (tmp_path / "findings.txt").read_text().startswith("Pre-training text in the mix")
    assert table(rows(0.95, 0.6)).count("\n") == 6  # header, rule, base, four cells


def test_cells_are_the_toy_world_recipe_with_the_mix():
    tmp = Path("/j")
    args = overrides(1, "/c", tmp, 36000, 0.25)
    assert "data.pretrain_mix.source=toy_corpus" in args and "data.pretrain_mix.share=0.25" in args
    assert "experiment=toyworld" in args and "model=toy_l" in args and f"output_dir='{tmp}'" in args
