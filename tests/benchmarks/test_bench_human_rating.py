"""Human rating export is blinded and shuffled; ratings read back map to the right side."""

import csv
import json

import pytest

from src.benchmarks.human_rating import export_pairs, import_ratings


def test_export_blinded_and_import(tmp_path):
    rows = [{"id": f"p{i}", "prompt": f"Q{i}", "output": f"model {i}", "gold": f"teacher {i}"} for i in range(20)]
    preds = tmp_path / "predictions.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs, key_path = export_pairs(preds, tmp_path / "out", seed=1)
    with open(pairs, newline="") as handle:
        table = list(csv.DictReader(handle))
    key = json.loads(key_path.read_text())
    assert list(table[0]) == ["pair_id", "prompt", "response_a", "response_b", "rating"]  # no side column
    assert [r["prompt"] for r in table] != [r["prompt"] for r in rows]  # shuffled
    sides = [key[r["pair_id"]]["model_side"] for r in table]
    assert {"A", "B"} == set(sides)  # the model is not always on one side
    for r, side in zip(table, sides, strict=True):
        assert r["response_a" if side == "A" else "response_b"].startswith("model")

    # a rater who always picks the model, except: 4 ties, 3 picks of the teacher, 2 blanks, 1 nonsense
    for n, r in enumerate(table):
        side = key[r["pair_id"]]["model_side"]
        other = "B" if side == "A" else "A"
        r["rating"] = side if n >= 10 else (["tie"] * 4 + [other] * 3 + ["", "", "maybe"])[n]
    with open(pairs, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    metrics = import_ratings(pairs, key_path)
    assert metrics["human_rated"] == 17
    assert metrics["human_win_rate"] == pytest.approx(10 / 17) and metrics["human_loss_rate"] == pytest.approx(3 / 17)
    assert metrics["human_adjusted_win_rate"] == pytest.approx((10 + 2) / 17)
    assert metrics["human_unparsable"] == pytest.approx(3 / 20)
