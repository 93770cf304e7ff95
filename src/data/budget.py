"""Token budgets as nested prefixes of one seeded shuffle.

"Tokens" are tokens of the formatted conversations under the base model's tokenizer. The budget is
exact: examples are taken in shuffled order and the last one is cut at the budget, so a run on
budget B sees exactly the first B tokens of a run on any larger budget.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

from src.data.template import Rendered

T = TypeVar("T")


class BudgetError(ValueError):
    pass


def shuffled(items: Sequence[T], seed: int) -> list[T]:
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    return [items[i] for i in order]


def take_budget(examples: Iterable[Rendered], amount: int | None, source: str = "source") -> list[Rendered]:
    """Take rendered examples in order until `amount` tokens; cut the last one to fit exactly.

    `examples` may be a lazy generator: nothing past the budget is rendered."""
    return list(iter_budget(examples, amount, source))


def iter_budget(examples: Iterable[Rendered], amount: int | None, source: str = "source") -> Iterator[Rendered]:
    """take_budget one example at a time (prepare packs each as it comes); the BudgetError of a
    source that holds less than `amount` comes after its last example."""
    total = taken = 0
    for example in examples:
        if amount is not None and total >= amount:
            break
        if amount is not None and total + len(example.input_ids) > amount:
            keep = amount - total
            example = Rendered(example.input_ids[:keep], example.labels[:keep])
        taken += 1
        total += len(example.input_ids)
        yield example
    if amount is not None and total < amount:
        raise BudgetError(
            f"data.amount={amount} tokens is more than {source} holds ({total} tokens in {taken} "
            f"examples); lower the amount or use data.amount=all"
        )
