"""data.pretrain_mix: exact token counts per budget, nesting (milestones included), every token of a
document carrying loss with no attention across documents, the text format, config errors, run_ids."""

import json

import pytest

from src.cell import run_id
from src.config import ConfigError, DataConfig, DataSourceConfig, PretrainMixConfig
from src.data.formats.records import DataError
from src.data.packing import collate
from src.data.prepare import prepare
from src.data.pretrain_mix import Mix, TextPiece, load_texts, pretrain_tokens, rendered_texts
from src.data.sources import load_source
from src.data.template import IGNORE, Rendered, chat_format
from src.toyworld.tokenizer import build_tokenizer
from tests.conftest import run_config

# words of the toy world's vocabulary: one token each under its word-level tokenizer, so every count is
# known; the text documents use city names only, the conversations never do
CITIES = ["paris", "lyon", "oslo", "lima", "cairo", "dublin", "madrid", "vienna", "prague", "berlin"]
CHAT = ["thank", "you", "for", "the", "letter", "friend", "what", "is", "answer", "question"]


@pytest.fixture(scope="module")
def toy_tokenizer():
    return build_tokenizer()


def write_sources(folder, n_conversations=60, n_docs=80):
    conversations = [{"id": f"c{i}", "conversations": [
        {"from": "human", "value": " ".join(CHAT[(i + k) % 10] for k in range(3 + i % 4))},
        {"from": "gpt", "value": " ".join(CHAT[(i * 3 + k) % 10] for k in range(2 + i % 5))}]}
        for i in range(n_conversations)]
    (folder / "chat.json").write_text(json.dumps(conversations))
    docs = [{"text": " ".join(CITIES[(i + k) % 10] for k in range(4 + i % 9))} for i in range(n_docs)]
    (folder / "text.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    return folder / "chat.json", folder / "text.jsonl"


def data_config(chat, text, amount, share):
    mix = PretrainMixConfig(source="text", share=share,
                            resolved=DataSourceConfig(name="text", format="text", path=str(text), strict=True))
    return DataConfig(source=DataSourceConfig(name="chat", path=str(chat), strict=True), amount=amount,
                      pretrain_mix=mix)


def text_token(tokenizer, token: int) -> bool:
    return tokenizer.convert_ids_to_tokens(token) in CITIES


def test_pretrain_tokens_is_the_share_of_all_tokens_exactly():
    assert pretrain_tokens(12000, 0.25) == 4000  # 4000 / 16000 = 0.25
    assert pretrain_tokens(36000, 0.5) == 36000
    assert pretrain_tokens(12000, 0.1) == 1333  # floor(12000 / 9)
    assert pretrain_tokens(7000, 0.3) == 3000  # 0.3 as 3/10 exactly, not the float just below it (2999)
    assert pretrain_tokens(12000, 0.0) == 0


@pytest.mark.parametrize("amount,share", [(300, 0.25), (700, 0.25), (700, 0.5), (501, 0.1)])
def test_exact_token_counts_per_budget(tmp_path, toy_tokenizer, amount, share):
    chat, text = write_sources(tmp_path)
    fmt = chat_format(toy_tokenizer, "koala")
    data = prepare(data_config(chat, text, amount, share), toy_tokenizer, fmt, 64, 256)
    rows = list(data.rows)
    expected = pretrain_tokens(amount, share)
    assert data.total_tokens == amount  # data.amount counts imitation tokens only
    assert data.pretrain["tokens"] == expected and data.pretrain["source"] == "text"
    all_ids = [t for r in rows for t in r.input_ids]
    assert len(all_ids) == amount + expected
    # the text tokens in the rows are the first `expected` tokens of the documents in their seeded order
    docs, _ = load_texts(DataSourceConfig(name="text", format="text", path=str(text)))
    stream = [t for doc in rendered_texts(docs, toy_tokenizer, 0) for t in doc.input_ids]
    assert sum(text_token(toy_tokenizer, t) for t in all_ids) == sum(text_token(toy_tokenizer, t)
                                                                    for t in stream[:expected])
    assert sum(text_token(toy_tokenizer, t) for t in stream[:expected + 1]) > 0
    plain = prepare(data_config(chat, text, amount, 0.0), toy_tokenizer, fmt, 64, 256)
    assert plain.pretrain == {} and sum(len(r.input_ids) for r in plain.rows) == amount


def _segments(row):
    out: dict[int, list[int]] = {}
    for i, s in enumerate(row.segment_ids):
        out.setdefault(s, []).append(i)
    return list(out.values())


def test_the_mix_at_a_smaller_budget_is_a_prefix_of_a_larger_run_with_that_boundary(tmp_path, toy_tokenizer):
    chat, text = write_sources(tmp_path)
    fmt = chat_format(toy_tokenizer, "koala")
    small = prepare(data_config(chat, text, 333, 0.25), toy_tokenizer, fmt, 64, 256)
    large = prepare(data_config(chat, text, 900, 0.25), toy_tokenizer, fmt, 64, 256, boundaries=[333, 600])
    first, second = large.milestones
    assert list(large.rows)[: first["rows"]] == list(small.rows)  # row for row: milestone mode stays exact
    assert first["total_tokens"] == 333 and first["pretrain"]["tokens"] == pretrain_tokens(333, 0.25) == 111
    assert second["pretrain"]["tokens"] == pretrain_tokens(600, 0.25) == 200
    assert large.pretrain["tokens"] == 300
    for key in ("examples", "loss_tokens"):
        assert first[key] == small.summary()[key]
    assert first["pretrain"]["loss_tokens"] == small.pretrain["loss_tokens"]
    # a milestone target's summary carries its own mix counts (src/training/milestones.py)
    at_600 = prepare(data_config(chat, text, 600, 0.25), toy_tokenizer, fmt, 64, 256, boundaries=[333])
    assert list(large.rows)[: second["rows"]] == list(at_600.rows)
    assert second["loss_tokens"] == at_600.loss_tokens and second["examples"] == at_600.examples


def test_without_boundaries_both_streams_are_prefixes(tmp_path, toy_tokenizer):
    chat, text = write_sources(tmp_path)
    mix_cfg = data_config(chat, text, None, 0.25)

    def streams(amount):
        conversations = [Rendered(list(range(100 + i, 100 + i + n)), [IGNORE] + list(range(101 + i, 100 + i + n)))
                         for i, n in enumerate([7, 13, 5, 22, 9, 11, 30, 4] * 5)]
        from src.data.budget import iter_budget

        pieces = list(Mix.of(mix_cfg).interleave(iter_budget(conversations, amount), toy_tokenizer, 0, [], amount))
        imitation = [t for p in pieces if not isinstance(p, TextPiece) for t in p.input_ids]
        texts = [t for p in pieces if isinstance(p, TextPiece) for t in p.input_ids]
        return imitation, texts

    small, large = streams(120), streams(400)
    assert len(small[0]) == 120 and len(small[1]) == 40 and len(large[1]) == pretrain_tokens(400, 0.25)
    assert large[0][:120] == small[0] and large[1][:40] == small[1]


def test_text_carries_loss_on_every_token_and_attends_within_its_document(tmp_path, toy_tokenizer):
    chat, text = write_sources(tmp_path, n_docs=10)
    fmt = chat_format(toy_tokenizer, "koala")
    data = prepare(data_config(chat, text, 60, 0.5), toy_tokenizer, fmt, 32, 256)
    rows = list(data.rows)
    text_segments = 0
    loss = 0
    for row in rows:
        batch = collate([row], pad_id=toy_tokenizer.pad_token_id)
        mask = batch["attention_mask"][0, 0]
        for segment in _segments(row):
            words = [toy_tokenizer.convert_ids_to_tokens(row.input_ids[i]) for i in segment]
            if not any(w in CITIES for w in words):
                continue
            text_segments += 1
            assert all(w in CITIES or w in ("<s>", "</s>") for w in words)  # a piece is text only
            assert row.labels[segment[0]] == IGNORE  # nothing in the piece predicts its first token
            assert [row.labels[i] for i in segment[1:]] == [row.input_ids[i] for i in segment[1:]]
            assert [row.position_ids[i] for i in segment] == list(range(len(segment)))
            loss += len(segment) - 1
            others = [i for i in range(len(row.input_ids)) if i not in segment]
            assert not mask[segment][:, others].any()  # no attention to another document or example
            assert mask[segment][:, segment].equal(mask.new_ones(len(segment), len(segment)).tril())
    assert text_segments >= 2 and data.pretrain["tokens"] == 60
    assert data.pretrain["loss_tokens"] == loss  # recorded: every text token but each piece's first


def test_a_document_is_its_tokens_then_eos(tmp_path, toy_tokenizer):
    _, text = write_sources(tmp_path, n_docs=3)
    mix = Mix.of(data_config(tmp_path / "chat.json", text, None, 0.5))
    (piece,) = [p for p in mix.interleave([Rendered([5] * 10, [5] * 10)], toy_tokenizer, 0, [], None)
                if isinstance(p, TextPiece)][:1]
    words = toy_tokenizer.convert_ids_to_tokens(piece.input_ids)
    assert words[0] == "<s>" and words[-1] == "</s>" and piece.labels == piece.input_ids


def test_text_format_reads_jsonl_and_folders_and_counts_bad_records(tmp_path):
    folder = tmp_path / "docs"
    (folder / "b").mkdir(parents=True)
    (folder / "a.txt").write_text("first document")
    (folder / "b" / "c.txt").write_text("second\ndocument")
    (folder / "skip.md").write_text("not a txt file")
    docs, report = load_texts(DataSourceConfig(name="f", format="text", path=str(folder)))
    assert [t for _, t in docs] == ["first document", "second\ndocument"] and report.kept == 2
    lines = tmp_path / "t.jsonl"
    lines.write_text('{"text": "one"}\n{"text": ""}\n{"body": "x"}\n' + '{"text": "ok"}\n' * 17)
    docs, report = load_texts(DataSourceConfig(name="t", format="text", path=str(lines), max_bad_fraction=0.2))
    assert len(docs) == 18 and report.dropped == {"empty_text": 1, "malformed_record": 1}
    with pytest.raises(DataError, match=r"t.jsonl:2: empty text"):
        load_texts(DataSourceConfig(name="t", format="text", path=str(lines), strict=True))
    renamed = tmp_path / "r.jsonl"
    renamed.write_text('{"body": "x"}\n')
    assert load_texts(DataSourceConfig(name="r", format="text", path=str(renamed), fields={"text": "body"}))[0][0][1] == "x"
    with pytest.raises(DataError, match="holds plain text, not conversations"):
        load_source(DataSourceConfig(name="t", format="text", path=str(lines)))


def test_the_budget_error_names_the_text_source(tmp_path, toy_tokenizer):
    chat, text = write_sources(tmp_path, n_docs=2)
    fmt = chat_format(toy_tokenizer, "koala")
    with pytest.raises(ValueError, match=r"data.pretrain_mix: 300 pre-training tokens \(share 0.5\) is more than "
                                         r"data source 'text' holds"):
        prepare(data_config(chat, text, 300, 0.5), toy_tokenizer, fmt, 64, 256)


SMOKE = ["experiment=smoke", "data.amount=500", "output_dir=/tmp/x"]


@pytest.mark.parametrize("overrides,message", [
    (["data.pretrain_mix.source=nope"], "data.pretrain_mix.source: unknown data source 'nope' (known: "),
    (["data.pretrain_mix.source=demo_text", "data.pretrain_mix.share=1.0"],
     "data.pretrain_mix.share: 1.0 must be within [0, 1)"),
    (["data.pretrain_mix.source=demo_text", "data.pretrain_mix.share=-0.1"],
     "data.pretrain_mix.share: -0.1 must be within [0, 1)"),
    (["data.pretrain_mix.share=0.1"], "data.pretrain_mix.share=0.1 needs data.pretrain_mix.source"),
    (["data.pretrain_mix.share=abc"], "data.pretrain_mix.share: expected a number"),
    (["+data.pretrain_mix.sahre=0.1"], "unknown config key 'data.pretrain_mix.sahre' (did you mean"),
])
def test_config_errors_are_one_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        run_config([*SMOKE, *overrides])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_source_that_is_not_text_is_refused():
    with pytest.raises(ConfigError, match="data source 'demo' has format 'sharegpt'; pre-training text needs format text"):
        run_config([*SMOKE, "data.pretrain_mix.source=demo", "data.pretrain_mix.share=0.1"])


def test_run_ids_without_a_mix_are_unchanged_and_a_mix_is_its_own():
    # computed before data.pretrain_mix (and train.attention/loss/compile) existed: these cells keep their
    # folders and finished results
    assert run_id(run_config(SMOKE)) == "bdeecd933c23"
    assert run_id(run_config(["experiment=demo", "data.amount=20K", "output_dir=/tmp/x"])) == "57e8872841df"
    off = run_config([*SMOKE, "data.pretrain_mix.source=demo_text"])  # a source at share 0 mixes nothing in
    assert run_id(off) == "bdeecd933c23" and off.cell_name() == "tiny/demo/500"
    ids = {run_id(run_config([*SMOKE, "data.pretrain_mix.source=demo_text", f"data.pretrain_mix.share={s}"]))
           for s in (0.1, 0.25)}
    assert len(ids) == 2 and "bdeecd933c23" not in ids
    mixed = run_config([*SMOKE, "data.pretrain_mix.source=demo_text", "data.pretrain_mix.share=0.25"])
    assert mixed.cell_name() == "tiny/demo+demo_text@0.25/500"
    assert mixed.data.pretrain_mix.resolved.path == "data/demo_text/demo_text.jsonl"


def test_the_toy_corpus_source_resolves_with_the_runs_seed_and_cache():
    cfg = run_config(["experiment=toyworld", "model=toy_l", "seed=2", "cache_dir=/tmp/c", "output_dir=/tmp/x",
                      "data.pretrain_mix.share=0.25"])
    assert cfg.data.pretrain_mix.source == "toy_corpus"
    assert cfg.data.pretrain_mix.resolved.path == "/tmp/c/toyworld/data/seed_2/toy_corpus.jsonl"


def test_plan_counts_the_pre_training_tokens_too(tmp_path):
    from src.plan import cell_cost

    args = [*SMOKE, "data.pretrain_mix.source=demo_text", f"store_dir={tmp_path}"]
    assert cell_cost(run_config(args)).tokens == 500
    assert cell_cost(run_config([*args, "data.pretrain_mix.share=0.5"])).tokens == 1000


def test_milestone_checkpoints_with_the_mix_equal_separate_runs(tmp_path, tokenizer):
    """Milestone mode stays exact with the mix: the run over 600 imitation tokens saves at 300 the
    model a plain run on 300 (and its 100 text tokens) gives."""
    import torch

    from src.models.load import load_checkpoint
    from tests.training.test_milestones import cell, flat, trained

    mix = ["data.pretrain_mix.source=demo_text", "data.pretrain_mix.share=0.25"]
    milestone = cell(tmp_path, 300, "train.mode=milestone", "train.milestones=[300,600]", *mix)
    first = trained(milestone, tokenizer)
    assert first.record.data["total_tokens"] == 300 and first.record.data["pretrain"]["tokens"] == 100
    record = json.loads((milestone.at_amount(600).dir / "train.json").read_text())
    assert record["data"]["total_tokens"] == 600 and record["data"]["pretrain"]["tokens"] == 200
    assert record["train"]["tokens_seen"] == 800  # imitation and text: what the model saw
    alone = trained(cell(tmp_path / "plain", 300, *mix), tokenizer, keep_model=True)
    at_300 = load_checkpoint(milestone.checkpoint, "float32", torch.device("cpu"))
    assert torch.allclose(flat(alone.weights.module), flat(at_300), atol=1e-6)
    without = trained(cell(tmp_path / "off", 300), tokenizer, keep_model=True)
    assert not torch.allclose(flat(without.weights.module), flat(at_300), atol=1e-4)  # the text did train
