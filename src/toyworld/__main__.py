"""python -m src.toyworld write [--seed N]   the world's data and benchmark files (under cache_dir)
python -m src.toyworld findings <sweep>      the three findings of a finished grid, printed and saved"""

from __future__ import annotations

import argparse
from pathlib import Path

from src.store import default_cache_dir
from src.toyworld.files import write_files
from src.toyworld.findings import write_findings
from src.toyworld.world import WorldSpec


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
    args = parser.parse_args()
    if args.command == "write":
        print(f"toy world files: {write_files(WorldSpec(seed=args.seed), args.cache_dir, force=args.force)}")
    else:
        print(write_findings(args.root))


if __name__ == "__main__":
    main()
