"""Run every benchmark under bench/ and print one table of ratios against same-run baselines."""

from __future__ import annotations

import json
import platform
import time
from importlib import metadata

from bench import (
    dpo_speed,
    eval_speed,
    first_result,
    packing,
    prepare,
    prepare_scale,
    serve_speed,
    train_speed,
)
from src import PROJECT_ROOT
from src.io import write_json_atomic

BENCHES = [packing.run, prepare.run, prepare_scale.run, eval_speed.run, serve_speed.run, train_speed.run,
           dpo_speed.run, first_result.run]


def main() -> None:
    rows = []
    for bench in BENCHES:
        start = time.perf_counter()
        rows += bench()
        print(f"{bench.__module__}: {time.perf_counter() - start:.1f} s")
    width = max(len(r["name"]) for r in rows)
    print(f"\n{'benchmark'.ljust(width)}  {'ours':>10}  {'baseline':>10}  {'ratio':>7}  target  met")
    for r in rows:
        target = r.get("target", "")
        if not target:
            met = ""
        elif target.startswith("<="):  # a cost ratio: lower is better
            met = "yes" if r["ratio"] <= float(target.strip("<= x")) else "NO"
        else:
            met = "yes" if r["ratio"] >= float(target.strip(">= x")) else "NO"
        r["met"] = met
        print(f"{r['name'].ljust(width)}  {r['ours']:>10.4g}  {r['baseline']:>10.4g}  {r['ratio']:>6.2f}x  "
              f"{target:6}  {met}")
    write_json_atomic(PROJECT_ROOT / "bench" / "results.json", {
        "date": time.strftime("%Y-%m-%d"), "machine": platform.platform(), "processor": platform.processor(),
        "versions": {p: metadata.version(p) for p in ("torch", "transformers")}, "rows": rows,
    })
    print(json.dumps({"wrote": "bench/results.json"}))


if __name__ == "__main__":
    main()
