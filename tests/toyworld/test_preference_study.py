"""The toy world DPO study's finding, computed from made-up numbers both ways (src/toyworld/preference.py)."""

from src.toyworld.preference import finding, paired, write_report


def rows(qa_gain, style_gain, seeds=(0, 1, 2)):
    out = []
    for s in seeds:
        out.append({"seed": s, "stage": "base", "amount": 0, "qa": 0.1, "mentions": 0.1, "cloze": 1.0, "style": 0.0,
                    "pairs": 0, "reward_accuracy_final": None})
        out.append({"seed": s, "stage": "sft", "amount": 12000, "qa": 0.0, "mentions": 0.0, "cloze": 0.8,
                    "style": 0.9, "pairs": 0, "reward_accuracy_final": None})
        out.append({"seed": s, "stage": "dpo", "amount": 12000, "qa": qa_gain[s], "mentions": qa_gain[s],
                    "cloze": 0.8, "style": 0.9 + style_gain, "pairs": 200, "reward_accuracy_final": 0.9})
    return out


def test_the_finding_follows_the_numbers(tmp_path):
    assert finding(paired(rows([0.10, 0.20, 0.06], 0.0))).startswith("DPO moves chat QA:")
    # a mean gain above the threshold but one seed without a gain: not shown
    assert finding(paired(rows([0.30, 0.20, 0.0], 0.0))).startswith("DPO moves neither chat QA nor style")
    assert finding(paired(rows([0.0, 0.0, 0.0], 0.1))).startswith("DPO moves only style")
    assert finding(paired(rows([0.1, 0.1, 0.1], -0.1))).startswith("DPO moves both")
    c = paired(rows([0.10, 0.20, 0.06], 0.0))[0]
    assert c["qa"]["deltas"] == [0.10, 0.20, 0.06] and abs(c["qa"]["delta"] - 0.12) < 1e-9
    assert c["qa"]["ci95"][0] < 0.12 < c["qa"]["ci95"][1]
    text = write_report(rows([0.10, 0.20, 0.06], 0.0), tmp_path)
    assert "| 12,000 | chat QA (exact match) | 0.000 | 0.120 | +0.120 |" in text
    assert (tmp_path / "preference.csv").exists() and (tmp_path / "preference.json").exists()
