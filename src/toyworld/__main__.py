"""python -m src.toyworld write [--seed N]   the world's data and benchmark files (under cache_dir)
python -m src.toyworld findings <sweep>      the three findings of a finished grid, printed and saved
python -m src.toyworld architectures <sweep> bases of one size side by side (model=toy_l,toy_t5), findings 1-2 each
python -m src.toyworld selection [--seeds 0,1,2] [--queries 50,150,450] [--rounds R]
                                             which prompts to pay the teacher for: each selector vs random
python -m src.toyworld mix [--seeds 0,1,2] [--amounts 12K,36K] [--shares 0,0.25,0.5]
                                             pre-training text mixed into local imitation: is the knowledge kept?
python -m src.toyworld preference [--seeds 0,1,2] [--amounts 12K,36K]
                                             DPO (teacher vs student) after broad imitation: QA or only style?"""

from __future__ import annotations

import argparse
from pathlib import Path

from src.store import default_cache_dir
from src.teacher.select import SELECTORS
from src.toyworld.files import write_files
from src.toyworld.findings import write_findings
from src.toyworld.mixing import run_study as run_mix_study
from src.toyworld.selection import run_study
from src.toyworld.world import WorldSpec


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m src.toyworld", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    write = sub.add_parser("write", help="write the world's imitation data and benchmark files")
    write.add_argument("--seed", type=int, default=0)
    write.add_argument("--cache-dir", default=default_cache_dir())
    write.add_argument("--force", action="store_true", help="rewrite even when the manifest matches")
    found = sub.add_parser("findings", help="state the three findings of a finished grid")
    found.add_argument("root", type=Path)
    arch = sub.add_parser("architectures", help="compare the bases of a finished grid (model=toy_l,toy_t5)")
    arch.add_argument("root", type=Path)
    chosen = sub.add_parser("selection", help="local imitation of toy_l on teacher queries chosen by each selector")
    chosen.add_argument("--seeds", default="0,1,2", help="world seeds (replicates)")
    chosen.add_argument("--queries", default="50,150,450", help="teacher answers bought (conversations)")
    chosen.add_argument("--selectors", default=",".join(SELECTORS))
    chosen.add_argument("--rounds", type=int, default=1,
                        help="also choose each budget in this many rounds (uncertainty, diversity), toy_l "
                             "fine-tuned on the answers between them")
    chosen.add_argument("--out", type=Path, default=Path("multirun/toyworld_selection"))
    chosen.add_argument("--cache-dir", default=default_cache_dir())
    mixed = sub.add_parser("mix", help="local imitation of toy_l with its pretraining corpus mixed in at each share")
    mixed.add_argument("--seeds", default="0,1,2", help="world seeds (replicates)")
    mixed.add_argument("--amounts", default="12K,36K", help="imitation tokens (data.amount)")
    mixed.add_argument("--shares", default="0,0.25,0.5", help="data.pretrain_mix.share values (0 is always run)")
    mixed.add_argument("--out", type=Path, default=Path("multirun/toyworld_mix"))
    mixed.add_argument("--cache-dir", default=default_cache_dir())
    prefer = sub.add_parser("preference", help="toy_l x toy_broad with and without a DPO stage after it")
    prefer.add_argument("--seeds", default="0,1,2", help="world seeds (replicates)")
    prefer.add_argument("--amounts", default="12K,36K", help="imitation budgets")
    prefer.add_argument("--out", type=Path, default=Path("multirun/toyworld_preference"))
    prefer.add_argument("--cache-dir", default=default_cache_dir())
    args = parser.parse_args()
    if args.command == "mix":
        print(run_mix_study(_ints(args.seeds), args.amounts.split(","), [float(v) for v in args.shares.split(",")],
                            args.out, args.cache_dir))
    elif args.command == "preference":
        from src.toyworld.preference import run_study as preference_study

        print(preference_study(_ints(args.seeds), args.amounts.split(","), args.out, args.cache_dir))
    elif args.command == "selection":
        print(run_study(_ints(args.seeds), _ints(args.queries), args.selectors.split(","), args.out, args.cache_dir,
                        rounds=args.rounds))
    elif args.command == "architectures":
        from src.toyworld.architectures import write_comparison

        print(write_comparison(args.root))
    elif args.command == "write":
        print(f"toy world files: {write_files(WorldSpec(seed=args.seed), args.cache_dir, force=args.force)}")
    else:
        print(write_findings(args.root))


if __name__ == "__main__":
    main()
