"""Human rating: blinded, shuffled A/B pairs as CSV for crowd raters, and the ratings read back.

Export takes any predictions.jsonl whose rows have prompt, output (the model) and gold (the reference,
e.g. the judge benchmark's) and writes pairs.csv (pair_id, prompt, response_a, response_b, rating) in
shuffled order with the model's side drawn at random per pair; which side is the model is written only
to a separate key file, so raters never see it. Import reads the filled `rating` column (A, B or tie)
with the key and returns win / tie / loss for the model; any other or empty rating is unparsable
(counted, never scored).

    python -m src.benchmarks.human_rating export runs/<cell>/benchmarks/judge/predictions.jsonl out/
    python -m src.benchmarks.human_rating import out/pairs.csv out/key.json
"""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

from src.io import atomic_path, write_text_atomic

FIELDS = ["pair_id", "prompt", "response_a", "response_b", "rating"]


def export_pairs(predictions_path: Path, out_dir: Path, seed: int = 0) -> tuple[Path, Path]:
    with open(predictions_path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    rng = random.Random(seed)
    rng.shuffle(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = {}
    with atomic_path(out_dir / "pairs.csv") as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        for n, row in enumerate(rows):
            pair_id = f"pair_{n:05d}"
            model_side = rng.choice("AB")
            a, b = (row["output"], row["gold"]) if model_side == "A" else (row["gold"], row["output"])
            writer.writerow({"pair_id": pair_id, "prompt": row["prompt"], "response_a": a, "response_b": b,
                             "rating": ""})
            key[pair_id] = {"model_side": model_side, "id": row.get("id", n)}
    write_text_atomic(out_dir / "key.json", json.dumps(key, indent=1))
    return out_dir / "pairs.csv", out_dir / "key.json"


def import_ratings(pairs_csv: Path, key_path: Path) -> dict[str, float]:
    key = json.loads(Path(key_path).read_text())
    counts = {"win": 0, "tie": 0, "loss": 0, "unparsable": 0}
    with open(pairs_csv, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            rating = (row.get("rating") or "").strip().lower()
            if row["pair_id"] not in key:
                raise ValueError(f"{pairs_csv}: pair {row['pair_id']} is not in the key {key_path}")
            if rating == "tie":
                counts["tie"] += 1
            elif rating in {"a", "b"}:
                counts["win" if rating.upper() == key[row["pair_id"]]["model_side"] else "loss"] += 1
            else:
                counts["unparsable"] += 1
    rated = max(1, counts["win"] + counts["tie"] + counts["loss"])
    total = max(1, sum(counts.values()))
    return {"human_win_rate": counts["win"] / rated, "human_tie_rate": counts["tie"] / rated,
            "human_loss_rate": counts["loss"] / rated,
            "human_adjusted_win_rate": (counts["win"] + 0.5 * counts["tie"]) / rated,
            "human_unparsable": counts["unparsable"] / total, "human_rated": float(rated if sum(counts.values()) else 0)}


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[0] == "export":
        print(*export_pairs(Path(argv[1]), Path(argv[2])))
    elif len(argv) == 3 and argv[0] == "import":
        print(json.dumps(import_ratings(Path(argv[1]), Path(argv[2])), indent=1))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
