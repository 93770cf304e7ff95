"""Inspect a data source as training will see it: counts at every cleaning step, one rendered
example with its loss mask made visible, and the tokens each budget takes; or prepare and cache
exactly what a grid's cells will ask for (on a CPU node, before the GPU job).

    python -m src.data --source demo --model smollm2_135m --amounts 5K,20K
    python -m src.data --source sharegpt --path /data/sharegpt.json --model gpt2
    python -m src.data prepare --source demo --model smollm2_135m --amounts 5K,20K --workers 2
"""

from __future__ import annotations

import argparse
import json
import sys

from src.config import ConfigError, format_amount, parse_amount
from src.data.budget import BudgetError, shuffled, take_budget
from src.data.sources import DataError, load_source, source_config_by_name
from src.data.template import IGNORE, chat_format, render
from src.models.load import load_tokenizer
from src.models.sources import model_config_by_name
from src.store import default_cache_dir

OPEN, CLOSE = "[[", "]]"  # around the tokens that carry a label


def show_mask(rendered, tokenizer) -> str:
    """The rendered text with loss-bearing spans wrapped in [[ ]]."""
    parts, current, in_loss = [], [], False
    for token, label in zip(rendered.input_ids, rendered.labels, strict=True):
        if (label != IGNORE) != in_loss and current:
            text = tokenizer.decode(current)
            parts.append(f"{OPEN}{text}{CLOSE}" if in_loss else text)
            current = []
        in_loss = label != IGNORE
        current.append(token)
    if current:
        text = tokenizer.decode(current)
        parts.append(f"{OPEN}{text}{CLOSE}" if in_loss else text)
    return "".join(parts)


def main() -> None:
    if sys.argv[1:2] == ["prepare"]:
        from src.data.prepare_cli import main as prepare_main

        prepare_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="demo", help="a conf/data_source name")
    parser.add_argument("--path", default=None, help="override the source's path")
    parser.add_argument("--model", default="smollm2_135m", help="a conf/model name (its tokenizer and template)")
    parser.add_argument("--amounts", default="5K,20K", help="comma-separated token budgets")
    parser.add_argument("--seed", type=int, default=0, help="the shuffle seed (data.shuffle_seed)")
    parser.add_argument("--cache-dir", default=default_cache_dir())
    args = parser.parse_args()
    try:
        source = source_config_by_name(args.source)
        if args.path:
            source.path = args.path
        amounts = [parse_amount(a.strip(), "--amounts") for a in args.amounts.split(",") if a.strip()]
        model = model_config_by_name(args.model)
        conversations, report = load_source(source)
    except (ConfigError, DataError) as err:
        raise SystemExit(f"error: {err}") from None
    print(f"source {source.name} ({source.format}): {source.path or 'mixture'}")
    print(json.dumps(report.as_dict(), indent=2))

    tokenizer = load_tokenizer(model, args.cache_dir)
    fmt = chat_format(tokenizer, model.chat_template)
    order = shuffled(conversations, args.seed)
    examples = [render(c.messages, tokenizer, fmt) for c in order]
    print(f"\ntemplate: {fmt.name} (model {model.name}); first example in shuffled order, {order[0].id}, "
          f"loss-bearing tokens inside {OPEN} {CLOSE}:\n")
    print(show_mask(examples[0], tokenizer))
    total = sum(len(e.input_ids) for e in examples)
    print(f"\nall: {len(examples)} examples, {total} tokens, {sum(e.loss_tokens for e in examples)} loss-bearing")
    for amount in amounts:
        try:
            taken = take_budget(examples, amount, source=f"data source '{source.name}'")
        except BudgetError as err:
            print(f"{format_amount(amount)}: {err}")
            continue
        print(f"{format_amount(amount)}: {len(taken)} examples (the last cut to fit), "
              f"{sum(len(e.input_ids) for e in taken)} tokens, {sum(e.loss_tokens for e in taken)} loss-bearing "
              "(before packing, which unlabels the first token of a piece that starts a row)")


if __name__ == "__main__":
    main()
