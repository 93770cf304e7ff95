"""Token budgets: exact, and nested prefixes of one shuffle."""

import pytest

from src.config import DataSourceConfig
from src.data.budget import BudgetError, shuffled, take_budget
from src.data.sources import load_source
from src.data.template import TokenizerTemplate, render
from tests.conftest import FIXTURES


@pytest.fixture(scope="module")
def conversations():
    convs, _ = load_source(DataSourceConfig(name="fx", path=str(FIXTURES / "sharegpt_small.json")))
    return shuffled(convs, seed=0)


def budget(conversations, tokenizer, amount):
    fmt = TokenizerTemplate(tokenizer)
    return take_budget((render(c.messages, tokenizer, fmt) for c in conversations), amount)


@pytest.mark.parametrize("amount", [1, 97, 500, 909])
def test_budget_is_exact(conversations, tokenizer, amount):
    assert sum(len(e.input_ids) for e in budget(conversations, tokenizer, amount)) == amount


def test_budgets_nest(conversations, tokenizer):
    small, large = budget(conversations, tokenizer, 400), budget(conversations, tokenizer, 850)
    stream = lambda examples: [t for e in examples for t in e.input_ids]  # noqa: E731
    labels = lambda examples: [t for e in examples for t in e.labels]  # noqa: E731
    assert stream(large)[:400] == stream(small)
    assert labels(large)[:400] == labels(small)
    # whole examples of the small budget are whole examples of the large one
    assert [e.input_ids for e in small[:-1]] == [e.input_ids for e in large[: len(small) - 1]]


def test_all_takes_everything_and_too_much_is_an_error(conversations, tokenizer):
    everything = sum(len(e.input_ids) for e in budget(conversations, tokenizer, None))
    assert len(budget(conversations, tokenizer, None)) == len(conversations) == 12
    with pytest.raises(BudgetError, match=f"data.amount={everything + 1} tokens is more than .* \\({everything} tokens"):
        budget(conversations, tokenizer, everything + 1)


def test_shuffle_is_seeded():
    items = list(range(50))
    assert shuffled(items, 3) == shuffled(items, 3)
    assert shuffled(items, 3) != shuffled(items, 4)
    assert sorted(shuffled(items, 3)) == items
