"""`python -m src.data prepare`: prepare and cache the data a grid's cells will ask for, and say what
it cost (tokens, rows, fill, seconds and CPU seconds, peak memory). The cells then hit the cache: the same key as
training computes (src/training/recipe.py prepare_for), from the same model, recipe and budgets.

    python -m src.data prepare --source sharegpt_mix --model llama7b --amounts 300K,20M,150M \\
        --milestones 300K,20M,150M --mode milestone --train paper --workers 8
"""

from __future__ import annotations

import argparse
import resource
import time

from omegaconf import OmegaConf

from src import PROJECT_ROOT
from src.config import ConfigError, DataConfig, TrainConfig, build_dataclass, format_amount, parse_amount
from src.data.budget import BudgetError
from src.data.prepare import prepare
from src.data.sources import DataError, source_config_by_name
from src.data.template import chat_format
from src.models.load import load_tokenizer, model_is_encoder_decoder
from src.models.sources import model_config_by_name
from src.store import default_cache_dir


def budgets(amounts: list[int | None], milestones: list[int], mode: str) -> list[tuple[int | None, list[int]]]:
    """(amount, boundaries) of each training run the grid's cells ask for (src/training/milestones.py plan)."""
    trained = [a for a in amounts if a != 0]
    if mode == "milestone":
        return [(milestones[-1], milestones[:-1])] if trained else []
    return [(a, [m for m in milestones if a is None or m < a]) for a in trained]


def peak_rss_mb() -> tuple[float, float]:
    """(this process, its largest finished child) peak resident memory, MB (Linux reports KB)."""
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


def cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (the prepare's workers)."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m src.data prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="a conf/data_source name")
    parser.add_argument("--path", default=None, help="override the source's path")
    parser.add_argument("--model", required=True, help="a conf/model name (its tokenizer, template and context)")
    parser.add_argument("--amounts", default="all", help="the grid's data.amount values, comma-separated")
    parser.add_argument("--milestones", default="", help="train.milestones, comma-separated")
    parser.add_argument("--mode", default="separate", choices=["separate", "milestone"], help="train.mode")
    parser.add_argument("--train", default="default", help="a conf/train recipe (its block_length)")
    parser.add_argument("--block-length", type=int, default=None, help="override the recipe's block_length")
    parser.add_argument("--workers", type=int, default=1, help="tokenizing processes (same bytes for any number)")
    parser.add_argument("--seed", type=int, default=0, help="data.shuffle_seed")
    parser.add_argument("--cache-dir", default=default_cache_dir())
    args = parser.parse_args(argv)
    try:
        source = source_config_by_name(args.source)
        if args.path:
            source.path = args.path
        source.validate()
        amounts = [parse_amount(a.strip(), "--amounts") for a in args.amounts.split(",") if a.strip()]
        milestones = sorted({parse_amount(m.strip(), "--milestones") for m in args.milestones.split(",") if m.strip()})
        if args.mode == "milestone" and not milestones:
            raise ConfigError("--mode milestone needs --milestones (the grid's amounts)")
        recipe_path = PROJECT_ROOT / "conf" / "train" / f"{args.train}.yaml"
        if not recipe_path.exists():
            raise ConfigError(f"--train: no recipe {recipe_path}")
        recipe = build_dataclass(TrainConfig, OmegaConf.to_container(OmegaConf.load(recipe_path), resolve=True),
                                 "train")
        model = model_config_by_name(args.model)
        tokenizer = load_tokenizer(model, args.cache_dir)
        encoder_decoder = model_is_encoder_decoder(model, args.cache_dir)
    except (ConfigError, DataError, OSError) as err:
        raise SystemExit(f"error: {err}") from None
    fmt = chat_format(tokenizer, model.chat_template)
    block = min(args.block_length or recipe.block_length, model.context_length)
    for amount, boundaries in budgets(amounts, milestones, args.mode):
        clock, cpu = time.perf_counter(), cpu_seconds()
        try:
            data = prepare(DataConfig(source=source, amount=amount, shuffle_seed=args.seed), tokenizer, fmt, block,
                           model.context_length, args.cache_dir, boundaries, workers=args.workers,
                           encoder_decoder=encoder_decoder)
        except (DataError, BudgetError) as err:
            raise SystemExit(f"error: {err}") from None
        seconds, cpu = time.perf_counter() - clock, cpu_seconds() - cpu
        own, child = peak_rss_mb()
        print(f"{source.name} {format_amount(amount)} for {model.name} (rows of {block}"
              f"{', boundaries ' + ','.join(format_amount(b) for b in boundaries) if boundaries else ''}): "
              f"{data.total_tokens:,} tokens, {data.loss_tokens:,} loss-bearing, {len(data.rows):,} rows, "
              f"{'unpacked' if data.turns else f'fill {data.packing_efficiency:.3f}'}, {seconds:.2f} s (cpu {cpu:.1f} s), cache {data.cache}, "
              f"peak memory {own:.0f} MB (workers {child:.0f} MB)", flush=True)
        if data.turns:  # the encoder-decoder layout: one row per reply, not packed (src/data/packing.py TurnRows)
            print(f"  encoder-decoder rows, one per reply: {data.turns['encoder_tokens']:,} encoder and "
                  f"{data.turns['decoder_tokens']:,} decoder tokens; {data.turns['dropped_loss_tokens']:,} reply tokens "
                  f"without history to encode, {data.turns['truncated_tokens']:,} truncated", flush=True)
