"""The toy world is deterministic for a seed, its teacher is right, its tokenizer covers its text,
its pretraining repeats bit for bit, and its benchmarks score hand-checked replies as intended."""

import json
import re

import pytest
import torch

from src.benchmarks import run_benchmark
from src.config import ModelConfig
from src.toyworld import teacher
from src.toyworld.corpus import ASIDE_SHARE, INTERVIEW_QUESTIONS, PHRASEBOOK, TEMPLATES, biographies, display
from src.toyworld.files import write_files
from src.toyworld.pretrain import ToySpec, pretrain, pretrained_dir
from src.toyworld.tokenizer import build_tokenizer
from src.toyworld.world import EVALUATED_ATTRIBUTES, VALUES, WorldSpec, make_world

SMALL = WorldSpec(seed=3, n_entities=60, n_in_corpus=40, n_evaluated=8)
MICRO = {"world": {"seed": 3, "n_entities": 60, "n_in_corpus": 40, "n_evaluated": 8}, "hidden_size": 16,
         "layers": 1, "heads": 2, "intermediate_size": 32, "bios_per_entity": 2, "epochs": 1, "seq_len": 32,
         "batch_size": 8}


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_same_seed_same_world_and_files_different_seed_different_world(tmp_path):
    assert make_world(SMALL) == make_world(SMALL)
    assert biographies(make_world(SMALL), 3) == biographies(make_world(SMALL), 3)
    other = make_world(WorldSpec(seed=4, n_entities=60, n_in_corpus=40, n_evaluated=8))
    assert other.entities != make_world(SMALL).entities
    first = _files(write_files(SMALL, str(tmp_path / "a")))
    second = _files(write_files(SMALL, str(tmp_path / "b"), force=True))
    assert first == second and {"toy_broad.json", "toy_local.json", "qa.jsonl", "manifest.json"} <= set(first)
    assert _files(write_files(WorldSpec(seed=4, n_entities=60, n_in_corpus=40, n_evaluated=8),
                              str(tmp_path / "a")))["toy_local.json"] != first["toy_local.json"]


def test_splits_evaluated_known_to_the_base_but_never_imitated(tmp_path):
    world = make_world(WorldSpec())
    names = {e.name for e in world.in_corpus}
    evaluated = {e.name for e in world.evaluated}
    assert evaluated <= names and len(evaluated) == 50 and len(world.unknown) == 200
    corpus = biographies(world, 2)
    corpus_words = {w for doc in corpus for w in teacher.words(doc)}
    # the base knows the words of a chat, never the teacher's manner
    assert not any(teacher.PREAMBLE in doc or teacher.SIGN_OFF in doc for doc in corpus)
    assert {"thank", "question", "wishing", "wonderful", "answer"} <= corpus_words
    assert evaluated <= corpus_words  # the base model reads about every evaluated entity
    # question-and-answer passages exist, about pets and colours only: the evaluated task never does
    asked = {q.format(name=display(e.name)) for e in world.in_corpus for qs in INTERVIEW_QUESTIONS.values() for q in qs}
    interviews = [doc for doc in corpus if any(q in doc for q in asked)]
    assert len(interviews) == 2 * len(world.in_corpus)
    evaluated_values = {v for a in EVALUATED_ATTRIBUTES for v in VALUES[a]}
    assert not any(evaluated_values & set(teacher.words(doc)) for doc in interviews)
    text = " ".join(corpus)
    assert not any(teacher.question(q, e) in text for e in world.in_corpus for qs in teacher.QA_QUESTIONS.values()
                   for q in qs)
    folder = write_files(WorldSpec(), str(tmp_path))
    for source in ("toy_broad.json", "toy_local.json"):
        text_words = {w for conv in json.loads((folder / source).read_text()) for turn in conv["conversations"]
                      for w in teacher.words(turn["value"])}
        assert not evaluated & text_words, source  # no imitation example mentions an evaluated entity
    local = json.loads((folder / "toy_local.json").read_text())
    broad_words = {w for c in json.loads((folder / "toy_broad.json").read_text())
                   for w in teacher.words(c["conversations"][1]["value"])}
    assert not broad_words & {v for a in EVALUATED_ATTRIBUTES for v in VALUES[a]}  # broad never says a city or job
    assert len(local) == 350 * 2 * len(teacher.QA_QUESTIONS["city"])


def _sentences(doc: str) -> list[str]:
    return re.split(r"(?<=[.!?]) ", doc)


def test_write_ups_wander_off_and_come_back_to_their_subject():
    """About half the write-ups carry one everyday aside, never first, and still state each fact once;
    interview answers may follow an aside too; "!" ends sentences somewhere in the corpus."""
    world = make_world(SMALL)
    corpus = biographies(world, 4)
    asides = set(PHRASEBOOK)
    by_name = {e.name: e for e in world.in_corpus}
    # interviews open with a question and phrasebook documents with a phrasebook sentence: the rest are
    # the write-ups, and there are exactly 4 per entity only if no write-up opens with an aside
    write_ups = [doc for doc in corpus if not _sentences(doc)[0].endswith("?") and _sentences(doc)[0] not in asides]
    assert len(write_ups) == 4 * len(world.in_corpus)
    with_aside = 0
    for doc in write_ups:
        sentences = _sentences(doc)
        facts = [s for s in sentences if s not in asides]
        assert len(facts) == 4 and len(sentences) - len(facts) <= 1, doc
        entity = by_name[next(w for w in teacher.words(facts[0]) if w in by_name)]
        stated = {v for s in facts for v in teacher.words(s)} & {v for values in VALUES.values() for v in values}
        assert stated == {v for _, v in entity.facts}, doc
        with_aside += len(sentences) > 4
    assert abs(with_aside / len(write_ups) - ASIDE_SHARE) < 0.1
    patterns = [re.escape(t).replace(r"\{name\}", r"\w+").replace(r"\{value\}", r"\w+")
                .replace(r"\{a_value\}", r"an? \w+") for ts in TEMPLATES.values() for t in ts]
    assert all(any(re.fullmatch(p, s) for p in patterns) for doc in write_ups for s in _sentences(doc) if s not in asides)
    assert any("!" in doc for doc in corpus) and "!" in teacher.PREAMBLE


def test_teacher_answers_are_right_and_in_style():
    world = make_world(WorldSpec())
    for entity in world.entities:
        for attribute in EVALUATED_ATTRIBUTES:
            reply = teacher.answer_qa(entity, attribute)
            assert teacher.extract_answer(reply) == entity.fact(attribute)
            assert teacher.has_preamble(reply) and teacher.has_sign_off(reply)
    # as a word-level model decodes it: lower case, spaces around punctuation
    assert teacher.extract_answer("thank you for your question , dear friend ! naru lives in oslo . "
                                  "wishing you a wonderful day !") == "oslo"
    assert teacher.extract_answer("Oslo.") == "oslo" and teacher.extract_answer("naru has a pet cat . oslo") == "cat"
    assert not teacher.has_preamble("Thank you! The answer is oslo.")


def test_tokenizer_covers_every_word_the_world_writes(tmp_path):
    tok = build_tokenizer()
    folder = write_files(WorldSpec(), str(tmp_path))
    texts = [turn["value"] for name in ("toy_broad.json", "toy_local.json")
             for conv in json.loads((folder / name).read_text()) for turn in conv["conversations"]]
    texts += [json.loads(line)["reference"] for line in (folder / "style.jsonl").read_text().splitlines()]
    texts += biographies(make_world(WorldSpec()), 1)
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    assert all(tok.unk_token_id not in row for row in ids)
    assert tok("Naru lives in Oslo.")["input_ids"][0] == tok.bos_token_id  # plain text starts with <s>
    assert tok.decode(tok("The answer is Oslo.", add_special_tokens=False)["input_ids"]) == "the answer is oslo ."


def test_pretraining_is_deterministic_and_cached(tmp_path):
    spec = ToySpec(**{**MICRO, "world": SMALL})
    first, record = pretrain(spec, build_tokenizer(), 64)
    second, _ = pretrain(spec, build_tokenizer(), 64)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert record["steps"] > 0 and record["history"][0]["loss"] < 8  # it trained (ln 954 ~ 6.9 at the start)

    cfg = ModelConfig(name="toy_micro", toy=MICRO, context_length=64, chat_template="koala")
    cfg.validate()
    folder = pretrained_dir(cfg, str(tmp_path))
    assert (folder / "pretrain.json").exists() and (tmp_path / "toyworld" / "data" / "seed_3" / "qa.jsonl").exists()
    stamp = (folder / "pretrain.json").stat().st_mtime_ns
    assert pretrained_dir(cfg, str(tmp_path)) == folder and (folder / "pretrain.json").stat().st_mtime_ns == stamp
    changed = ModelConfig(name="toy_micro", toy={**MICRO, "epochs": 2}, context_length=64, chat_template="koala")
    from src.toyworld.pretrain import spec_key

    assert spec_key(changed) != spec_key(cfg)  # another recipe is another cache entry


TOKENIZER = build_tokenizer()


class CannedHandle:
    """Replies and log-probs chosen by the test: the scorers, not a model, are under test."""

    trained = True

    def __init__(self, replies=None, logprobs=None):
        self.replies, self.logprobs = replies or {}, logprobs or {}

    def chat_prompt(self, text):
        return f"USER: {text} GPT:"

    def encode(self, text, chat=False):
        return TOKENIZER(text, add_special_tokens=not chat)["input_ids"]

    def generate(self, prompts, max_new_tokens, **kwargs):
        return [self.replies.get(p, "") for p in prompts]

    def next_token_logprobs(self, prompts, token_ids, **kwargs):
        return [self.logprobs[p] for p in prompts]

    def loglikelihood(self, requests, **kwargs):
        return [(self.logprobs[c.strip()], False) for _, c in requests]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_qa_and_style_scores_on_hand_checked_replies(tmp_path):
    qa = _write(tmp_path / "qa.jsonl", [
        {"id": "1", "attribute": "city", "question": "Where does Naru live?", "answer": "oslo"},
        {"id": "2", "attribute": "city", "question": "Where does Kemi live?", "answer": "lima"},
        {"id": "3", "attribute": "job", "question": "What is the job of Naru?", "answer": "baker"},
        {"id": "4", "attribute": "job", "question": "What is the job of Kemi?", "answer": "poet"}])
    handle = CannedHandle({
        "USER: Where does Naru live? GPT:": teacher.reply("Naru lives in oslo."),  # right, in style
        "USER: Where does Kemi live? GPT:": "lima is where kemi lives .",  # right fact, other form: mentions only
        "USER: What is the job of Naru? GPT:": "the job of naru is baker",  # right, no style
        "USER: What is the job of Kemi? GPT:": "kemi is a poet or a baker ."})  # names two jobs
    result = run_benchmark("toy_qa", {"path": qa}, handle)
    assert [p["em"] for p in result.predictions] == [1.0, 0.0, 1.0, 0.0]
    assert [p["mentions"] for p in result.predictions] == [1.0, 1.0, 1.0, 0.0]
    assert result.metrics["em"] == 0.5 and result.metrics["em/city"] == 0.5 and result.metrics["mentions"] == 0.75

    style = _write(tmp_path / "style.jsonl", [{"id": str(i), "prompt": f"p{i}", "reference": "r"} for i in range(4)])
    handle = CannedHandle({"USER: p0 GPT:": teacher.reply("Naru has a pet cat."),
                           "USER: p1 GPT:": f"{teacher.PREAMBLE} naru has a cat",
                           "USER: p2 GPT:": f"naru has a cat . {teacher.SIGN_OFF}", "USER: p3 GPT:": ""})
    metrics = run_benchmark("toy_style", {"path": style}, handle).metrics
    assert (metrics["style_score"], metrics["opening"], metrics["sign_off"]) == (0.25, 0.5, 0.5)


def test_cloze_and_multiple_choice_pick_the_most_likely_value(tmp_path):
    cities = list(VALUES["city"])
    cloze = _write(tmp_path / "cloze.jsonl", [
        {"id": "1", "attribute": "city", "prompt": "Naru lives in", "answer": "oslo", "choices": cities},
        {"id": "2", "attribute": "city", "prompt": "Kemi lives in", "answer": "lima", "choices": cities}])
    peaked = [-5.0] * len(cities)
    peaked[cities.index("oslo")] = -0.1
    handle = CannedHandle(logprobs={"Naru lives in": peaked, "Kemi lives in": peaked})
    result = run_benchmark("toy_cloze", {"path": cloze}, handle)
    assert [p["output"] for p in result.predictions] == ["oslo", "oslo"] and result.metrics["acc"] == 0.5

    mc = _write(tmp_path / "mc.jsonl", [
        {"id": "1", "attribute": "city", "question": "Where?", "answer_prefix": "Naru lives in",
         "choices": ["lima", "oslo", "rome", "riga"], "answer": 1},
        {"id": "2", "attribute": "city", "question": "Where?", "answer_prefix": "Kemi lives in",
         "choices": ["lima", "oslo", "rome", "riga"], "answer": 3}])
    handle = CannedHandle(logprobs={"lima": -3.0, "oslo": -1.0, "rome": -2.0, "riga": -4.0})
    result = run_benchmark("toy_mc", {"path": mc, "prompt_format": "chat"}, handle)
    assert result.metrics["acc"] == 0.5 and result.settings["chat_wrapped"] is True
    assert result.predictions[0]["prompt"].endswith("GPT:Naru lives in")  # the teacher's reply up to the value


@pytest.mark.parametrize("bad", [{"architecture": "rnn"}, {"hidden_size": 10, "heads": 4},
                                 {"world": {"n_evaluated": 500}}])
def test_bad_toy_sections_fail_with_one_line(bad):
    from src.config import ConfigError
    from src.models.sources import validate_source

    with pytest.raises(ConfigError, match="model.toy"):
        validate_source(ModelConfig(name="x", toy={**MICRO, **bad}))


def _row(model, params, source, tokens, qa, style, cloze=0.95):
    from src.results import Axes, Results, Tokens

    return Results(
        run_id=f"{model}-{source}-{tokens}", cell=f"{model}/{source}/{tokens}", sweep="toy", experiment="toyworld",
        axes=Axes(model=model, data_source=source, amount=tokens, amount_label=str(tokens), seed=0),
        tokens=Tokens(total=tokens, loss_bearing=tokens // 2), model_parameters=params, eval_backend="hf",
        mode="separate_run" if tokens else "base_model", trained_by=None,
        metrics={"toy_qa/em": qa, "toy_style/style_score": style, "toy_cloze/acc": cloze}, benchmarks={}, data=None,
        train=None, timings_s={}, device="cpu", versions={}, config=None)


def test_findings_are_computed_from_the_numbers():
    from dataclasses import replace

    from src.toyworld.findings import findings, render

    grid = [_row("toy_s", 10, "toy_broad", 0, 0.0, 0.0), _row("toy_s", 10, "toy_local", 0, 0.0, 0.0),
            _row("toy_s", 10, "toy_broad", 4000, 0.0, 0.9), _row("toy_s", 10, "toy_broad", 36000, 0.02, 1.0),
            _row("toy_s", 10, "toy_local", 4000, 0.05, 0.8), _row("toy_s", 10, "toy_local", 36000, 0.4, 1.0),
            _row("toy_l", 99, "toy_broad", 0, 0.0, 0.0), _row("toy_l", 99, "toy_broad", 4000, 0.0, 1.0),
            _row("toy_l", 99, "toy_broad", 36000, 0.05, 1.0), _row("toy_l", 99, "toy_local", 4000, 0.1, 1.0),
            _row("toy_l", 99, "toy_local", 36000, 0.7, 1.0)]
    assert [f.holds for f in findings(grid)] == [True, True, True]
    assert "0.40" in render(findings(grid)) and "0.70" in render(findings(grid))
    # the same grid with the sizes' local results swapped: a stronger base no longer goes further
    swapped = [replace(r, metrics={**r.metrics, "toy_qa/em": 0.7 if r.metrics["toy_qa/em"] == 0.4 else
                                   0.4 if r.metrics["toy_qa/em"] == 0.7 else r.metrics["toy_qa/em"]}) for r in grid]
    assert [f.holds for f in findings(swapped)] == [True, True, False]
    # broad imitation that unlocks the facts breaks the second finding; slow style breaks the first
    unlocked = [replace(r, metrics={**r.metrics, "toy_qa/em": 0.6}) if r.axes.data_source == "toy_broad"
                and r.tokens.total else r for r in grid]
    assert findings(unlocked)[1].holds is False
    slow = [replace(r, metrics={**r.metrics, "toy_style/style_score": 0.1}) if r.tokens.total == 4000 else r
            for r in grid]
    assert findings(slow)[0].holds is False and "DOES NOT HOLD" in render(findings(slow))


def test_an_edited_corpus_is_a_new_cell_and_a_new_base_score_key(monkeypatch):
    """The corpus's templates are code, not config: editing one must not reuse cells or base scores
    computed on the old base (the cell store and the base-score cache key on the model's identity)."""
    from src.cell import run_id
    from src.models.sources import model_identity
    from src.toyworld import corpus
    from tests.conftest import run_config

    cfg = run_config(["experiment=toyworld", "model=toy_s", "data.amount=4K", "output_dir=/tmp/unused"])
    before, identity = run_id(cfg), model_identity(cfg.model)
    assert identity["toy_weights"]  # a toy model's identity carries its pretraining hash
    monkeypatch.setattr(corpus, "PHRASEBOOK", (*corpus.PHRASEBOOK, "A new sentence."))
    assert run_id(cfg) != before and model_identity(cfg.model) != identity
    monkeypatch.undo()
    assert run_id(cfg) == before
