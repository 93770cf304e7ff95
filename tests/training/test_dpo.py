"""The preference stage (src/training/dpo.py): the DPO loss on a hand-computed case, reply-only masks,
packed log-probabilities equal to unpacked ones, the log-ratio margin rising on the tiny random-init
model, the pairs file's shape, and the config's one-line errors."""

import json
import math

import pytest
import torch

from src.cell import run_id, sft_stage
from src.config import ConfigError, TrainConfig
from src.data.conversation import Message
from src.data.formats.records import DataError
from src.data.template import IGNORE, chat_format
from src.models.load import load_model
from src.models.sources import model_config_by_name
from src.training.dpo import dpo_loss, pack_whole, reference_logps, render_reply, sequence_logps, train_dpo
from src.training.preference_pairs import iter_file_pairs
from tests.conftest import CACHE, run_config

TINY = ["model=tiny", "output_dir=/tmp/x"]


def test_dpo_loss_matches_a_hand_computation():
    # pair 1: chosen log-ratio -1.0 - (-1.5) = 0.5, rejected -3.0 - (-2.5) = -0.5 -> margin 1.0
    # pair 2: chosen -2.0 - (-2.0) = 0.0, rejected -1.0 - (-1.5) = 0.5 -> margin -0.5
    # beta 0.5: loss = mean(-log sigmoid(0.5), -log sigmoid(-0.25)) = mean(log(1 + e^-0.5), log(1 + e^0.25))
    loss, stats = dpo_loss(torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.0]),
                           torch.tensor([-1.5, -2.0]), torch.tensor([-2.5, -1.5]), beta=0.5)
    by_hand = (math.log(1 + math.exp(-0.5)) + math.log(1 + math.exp(0.25))) / 2
    assert by_hand == pytest.approx(0.6500082, abs=1e-7)
    assert loss.item() == pytest.approx(by_hand, abs=1e-6)
    assert stats["log_ratio_margin"] == pytest.approx(0.25)  # mean(1.0, -0.5)
    assert stats["reward_chosen"] == pytest.approx(0.125)  # 0.5 * mean(0.5, 0.0)
    assert stats["reward_rejected"] == pytest.approx(0.0)  # 0.5 * mean(-0.5, 0.5)
    assert stats["reward_margin"] == pytest.approx(0.125)
    assert stats["reward_accuracy"] == 0.5
    # the policy equal to the reference: log 2, whatever beta
    equal, _ = dpo_loss(torch.tensor([-4.0]), torch.tensor([-7.0]), torch.tensor([-4.0]), torch.tensor([-7.0]), 3.0)
    assert equal.item() == pytest.approx(math.log(2), abs=1e-6)


def test_only_the_final_reply_carries_labels(tokenizer):
    fmt = chat_format(tokenizer, "auto")
    prompt = (Message("user", "Name a colour."), Message("assistant", "Blue."), Message("user", "Another one?"))
    seq = render_reply(prompt, "Green, like grass.", tokenizer, fmt, max_length=512)
    labelled = [t for t, label in zip(seq.input_ids, seq.labels, strict=True) if label != IGNORE]
    assert tokenizer.decode(labelled) == "Green, like grass.<|im_end|>"  # the reply and its end-of-turn only
    assert "Blue." in tokenizer.decode(seq.input_ids)  # the earlier assistant turn is context, unlabelled
    assert labelled == seq.input_ids[-len(labelled):]  # the reply ends the sequence; no glue is labelled
    # too long: the prompt loses its start first, the reply keeps every token
    short = render_reply(prompt, "Green, like grass.", tokenizer, fmt, max_length=len(labelled) + 3)
    assert len(short.input_ids) == len(labelled) + 3
    assert [t for t, label in zip(short.input_ids, short.labels, strict=True) if label != IGNORE] == labelled


def tiny(tokenizer, seed=0):
    return load_model(model_config_by_name("tiny"), tokenizer, CACHE, torch.device("cpu"), seed=seed)


def test_packed_log_probs_are_the_reply_tokens_of_each_sequence_alone(tokenizer):
    fmt = chat_format(tokenizer, "auto")
    model = tiny(tokenizer).eval()
    seqs = [render_reply((Message("user", q),), a, tokenizer, fmt, 512)
            for q, a in [("What is two plus two?", "Four."), ("Say hello.", "Hello there, friend!"),
                         ("Pick a number.", "Seven")]]
    assert len(pack_whole(seqs, 4096)) == 1  # all three in one row, kept apart by the block-diagonal mask
    with torch.no_grad():
        packed = sequence_logps(model, seqs, tokenizer.pad_token_id, torch.device("cpu"), 4096)
        by_hand = []
        for s in seqs:  # one sequence alone, every position's log-softmax, summed where a reply token is next
            logits = model(input_ids=torch.tensor([s.input_ids])).logits[0, :-1].float()
            logps = torch.log_softmax(logits, -1)
            by_hand.append(sum(logps[t, s.input_ids[t + 1]].item() for t in range(len(s.input_ids) - 1)
                               if s.labels[t + 1] != IGNORE))
    assert packed.tolist() == pytest.approx(by_hand, abs=1e-4)
    # a different prompt token changes the log-probability (context counts), a different label set too
    assert packed[0].item() != pytest.approx(packed[1].item(), abs=1e-3)


def pairs_for(tokenizer, n=8):
    fmt = chat_format(tokenizer, "auto")
    out = []
    for i in range(n):
        prompt = (Message("user", f"Question number {i}: what colour is the sky?"),)
        out.append((render_reply(prompt, "The sky is blue.", tokenizer, fmt, 512),
                    render_reply(prompt, f"Potato {i} banana.", tokenizer, fmt, 512)))
    return out


def test_the_chosen_minus_rejected_log_ratio_rises_over_a_few_steps(tokenizer):
    model = tiny(tokenizer)
    encoded = pairs_for(tokenizer)
    cpu = torch.device("cpu")
    before = reference_logps(model, encoded, tokenizer.pad_token_id, cpu, 1024)
    train = TrainConfig(max_grad_norm=1.0)
    train.dpo.lr, train.dpo.pairs_per_step, train.dpo.epochs, train.dpo.beta = 1e-3, 4, 3, 0.1
    stats = train_dpo(model, encoded, train, tokenizer.pad_token_id, cpu, 1024)
    assert stats.steps == 6 and stats.pairs == 8
    assert stats.first["log_ratio_margin"] == pytest.approx(0.0, abs=1e-4)  # policy = reference at step 1
    assert stats.first["loss"] == pytest.approx(math.log(2), abs=1e-4)
    margins = [h["log_ratio_margin"] for h in stats.history]
    assert margins[-1] > margins[0] + 1.0 and stats.final["loss"] < math.log(2)
    after = reference_logps(model, encoded, tokenizer.pad_token_id, cpu, 1024)
    ratio = (after[:, 0] - before[:, 0]) - (after[:, 1] - before[:, 1])
    assert (ratio > 0).all(), ratio  # every pair's chosen-minus-rejected log-ratio went up
    assert stats.reply_tokens_seen < stats.tokens_seen  # prompts were processed but not counted


def test_pairs_file_shapes(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."},
            {"prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi?"}],
             "chosen": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello!"}],
             "rejected": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "No."}]}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    pairs = list(iter_file_pairs(path))
    assert [(p.prompt[-1].content, p.chosen, p.rejected) for p in pairs] == [("Hi?", "Hello!", "Go away."),
                                                                            ("Hi?", "Hello!", "No.")]
    assert pairs[1].prompt[0] == Message("system", "Be kind.")
    path.write_text(json.dumps({"prompt": "Hi?", "chosen": "Hello!"}) + "\n")
    with pytest.raises(DataError, match=r"pairs.jsonl:1: a pair needs the keys prompt, chosen and rejected"):
        list(iter_file_pairs(path))


def test_config_errors_are_one_line_before_any_model_loads(tmp_path, monkeypatch):
    good = tmp_path / "pairs.jsonl"
    good.write_text(json.dumps({"prompt": "Hi?", "chosen": "Hello!", "rejected": "No."}) + "\n")
    with pytest.raises(ConfigError, match=r"preference.source: 'bogus' is not one of"):
        run_config([*TINY, "preference.source=bogus"])
    with pytest.raises(ConfigError, match=r"preference.path: .*missing.jsonl does not exist"):
        run_config([*TINY, "preference=file", f"preference.path={tmp_path / 'missing.jsonl'}"])
    with pytest.raises(ConfigError, match="preference=file needs preference.path"):
        run_config([*TINY, "preference=file"])
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ConfigError, match="holds no pairs: a preference source with no pairs"):
        run_config([*TINY, "preference=file", f"preference.path={tmp_path / 'empty.jsonl'}"])
    with pytest.raises(ConfigError, match="a preference source with no pairs"):
        run_config([*TINY, "preference=teacher_vs_student", "preference.max_pairs=0"])
    with pytest.raises(ConfigError, match="data.amount=0: the preference stage starts from"):
        run_config([*TINY, "preference=teacher_vs_student", "data.amount=0"])
    with pytest.raises(ConfigError, match=r"train.dpo.beta \(0.0\) and train.dpo.lr"):
        run_config([*TINY, "preference=file", f"preference.path={good}", "train.dpo.beta=0"])
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"preference=judge: the OpenAI-compatible judge needs a key"):
        run_config([*TINY, "preference=judge"])
    with pytest.raises(ConfigError, match="preference.judge.judge: 'gpt' is not openai"):
        run_config([*TINY, "preference=judge", "preference.judge.judge=gpt"])
    assert run_config([*TINY, "preference=judge", "preference.judge.judge=self"]).preference.source == "judge"


def test_run_id_with_and_without_a_preference_stage(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "Hi?", "chosen": "Hello!", "rejected": "No."}) + "\n")
    plain = run_config(TINY)
    # preference=none: the DPO knobs are not part of the id, so no cell made before the stage changes id
    assert run_id(run_config([*TINY, "preference=none", "train.dpo.beta=0.5"])) == run_id(plain)
    dpo = run_config([*TINY, "preference=file", f"preference.path={pairs}"])
    dpo_id = run_id(dpo)
    moved = tmp_path / "moved.jsonl"
    moved.write_bytes(pairs.read_bytes())
    assert run_id(run_config([*TINY, "preference=file", f"preference.path={moved}"])) == dpo_id  # by content
    assert run_id(dpo) != run_id(plain) and run_id(sft_stage(dpo)) == run_id(plain)
    assert run_id(run_config([*TINY, "preference=file", f"preference.path={pairs}", "train.dpo.beta=0.5"])) \
        != run_id(dpo)
    pairs.write_text(json.dumps({"prompt": "Hi?", "chosen": "Hello there!", "rejected": "No."}) + "\n")
    assert run_id(run_config([*TINY, "preference=file", f"preference.path={pairs}"])) != dpo_id  # edited
    assert dpo.cell_name().endswith("+dpo:file")


def test_an_interrupted_stage_resumes_to_the_same_weights(tokenizer, tmp_path):
    cpu = torch.device("cpu")
    encoded = pairs_for(tokenizer, 6)
    train = TrainConfig()
    train.dpo.lr, train.dpo.pairs_per_step, train.dpo.checkpoint_every = 1e-3, 2, 1
    whole = tiny(tokenizer)
    train_dpo(whole, encoded, train, tokenizer.pad_token_id, cpu, 1024)

    def stop_at_two(record):
        if record["step"] == 2:
            raise KeyboardInterrupt  # killed after step 2, before its state: the state of step 1 is on disk

    with pytest.raises(KeyboardInterrupt):
        train_dpo(tiny(tokenizer), encoded, train, tokenizer.pad_token_id, cpu, 1024, on_step=stop_at_two,
                  state_dir=tmp_path / "state")
    resumed = tiny(tokenizer)  # a new process: the SFT model again, then the saved state
    stats = train_dpo(resumed, encoded, train, tokenizer.pad_token_id, cpu, 1024, state_dir=tmp_path / "state")
    assert stats.resumed_from_step == 1 and stats.steps == 3
    assert not (tmp_path / "state").exists()  # spent
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def smoke_cell(tmp_path, nq: int, save_checkpoint: bool) -> list[str]:
    """Overrides of a smoke-experiment cell (SmolLM2 replaced by the smoke model, 600 tokens) in tmp_path."""
    return ["experiment=smoke", "tracker.mode=disabled", f"benchmark.nq.limit={nq}", "benchmark.humaneval.limit=1",
            "data.amount=600", f"store_dir={tmp_path / 'cells'}", "output_dir=unused",
            f"train.save_checkpoint={str(save_checkpoint).lower()}"]


def with_pairs_file(tmp_path, n: int) -> list[str]:
    """A preference stage from a file of `n` pairs written in tmp_path, two pairs a step."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Tell me about item {i}.", "chosen": f"Item {i} is a fine thing.",
                                         "rejected": "I do not know."}) + "\n" for i in range(n)))
    return ["preference=file", f"preference.path={pairs}", "train.dpo.pairs_per_step=2"]


def test_a_tiny_cell_with_a_preference_file_end_to_end(tmp_path, caplog):
    """SFT on the demo data, then DPO on a pairs file: results.json records both stages; the SFT
    checkpoint stays, so a rerun of the preference stage trains only DPO; the template travels."""
    import logging

    from transformers import AutoTokenizer

    from src.cell import Cell
    from src.main import run_cell
    from src.plugins import load_config
    from tests.conftest import compose_config

    raw = compose_config(smoke_cell(tmp_path, nq=2, save_checkpoint=True) + with_pairs_file(tmp_path, 5))
    cell = Cell.of(load_config(raw))
    sft = Cell.of(sft_stage(cell.cfg))
    with caplog.at_level(logging.INFO):
        results = run_cell(raw, tmp_path / "job").to_dict()
    p = results["preference"]
    assert p["source"] == "file" and p["sft_run_id"] == sft.run_id != cell.run_id == results["run_id"]
    assert p["pairs"] == p["pair_report"]["pairs"] == 5 and p["steps"] == 3
    assert p["pair_report"]["dropped_identical"] == 0
    assert p["tokens_seen"] > p["reply_tokens_seen"] > 0 and len(p["history"]) == 3
    assert results["axes"]["preference"] == "file" and results["axes"]["data_source"] == "demo+dpo:file"
    assert results["tokens"]["total"] == results["data"]["total_tokens"] > 0  # the SFT stage's imitation tokens
    assert results["train"]["steps"] > 0  # the SFT stage's run
    assert p["template"]["name"] == results["data"]["template"] == "tokenizer"
    # the SFT checkpoint is kept (the preference stage starts from it); both save the same chat template
    assert (sft.checkpoint / "config.json").exists() and sft.training() is not None
    assert AutoTokenizer.from_pretrained(cell.checkpoint).chat_template == \
        AutoTokenizer.from_pretrained(sft.checkpoint).chat_template
    assert len(cell.pairs_path.read_text().splitlines()) == 6  # a header and the five pairs

    # the preference stage lost (results and its checkpoint gone): a rerun trains DPO only
    cell.results_path.unlink()
    cell.remove_checkpoint()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        again = run_cell(raw, tmp_path / "job").to_dict()
    assert "training was done earlier" in caplog.text and "dpo: 5 pairs" in caplog.text
    assert "preference pairs from" in caplog.text  # the same pairs, read back
    assert again["preference"]["final"]["loss"] == pytest.approx(p["final"]["loss"], abs=1e-6)
    assert again["train"] == results["train"]
    # and a third run finds the whole cell done
    caplog.clear()
    with caplog.at_level(logging.INFO):
        run_cell(raw, tmp_path / "job")
    assert "dpo:" not in caplog.text


def test_replies_the_same_to_the_model_make_no_pair():
    from src.training.preference_pairs import same_reply

    def lowercasing_words(texts, add_special_tokens=False):  # the toy world's word-level tokenizer, in short
        return {"input_ids": [t.lower().replace("!", " !").split() for t in texts]}

    assert same_reply("Thank you, friend!", "thank you, friend !", lowercasing_words)  # decoded, not the same text
    assert not same_reply("Its pet is a cat!", "its pet is a dog !", lowercasing_words)
    assert same_reply(" Hello. ", "Hello.", None) and not same_reply("Hello.", "hello.", None)


def test_judge_pairs_follow_the_verdicts_of_both_orders(tokenizer, monkeypatch):
    """preference=judge: two sampled replies per prompt, judged in both orders; a consistent win makes
    the first reply chosen, a consistent loss the second, anything else no pair."""
    import src.benchmarks.judge as judge_module
    from src.training.preference_pairs import judge_pairs

    cfg = run_config([*TINY, "preference=judge", "preference.judge.judge=self", "+preference.judge.cache_dir=null",
                      "data.amount=2K", "preference.max_pairs=3"])

    class Handle:
        def generate(self, prompts, max_new_tokens, seed=None, **kwargs):
            return [f"reply {seed} to prompt {i}" for i in range(len(prompts))]

    verdicts = ["[[A]]", "[[B]]", "[[B]]", "[[A]]", "[[A]]", "[[A]]"]  # win, loss, disagreement (a tie)
    monkeypatch.setattr(judge_module, "make_judge", lambda settings, handle: type("J", (), {"identity": "fake"})())
    monkeypatch.setattr(judge_module, "judge_all", lambda judge, cache, asks: (verdicts[:len(asks)], len(asks)))
    pairs, report = judge_pairs(cfg, Handle(), tokenizer, chat_format(tokenizer, "auto"))
    assert report["verdicts"] == {"win": 1, "loss": 1, "tie": 1, "unparsable": 0, "identical": 0}
    assert [(p.chosen, p.rejected) for p in pairs] == [("reply 0 to prompt 0", "reply 1 to prompt 0"),
                                                       ("reply 1 to prompt 1", "reply 0 to prompt 1")]


def test_the_imitation_only_cell_keeps_the_sft_checkpoint_a_preference_stage_starts_from(tmp_path, caplog):
    """Under train.save_checkpoint=false the imitation-only cell of the same settings is the preference
    cell's SFT stage: evaluating it after the preference cell ran must leave that checkpoint, so a rerun
    of the preference stage trains only DPO (it used to be removed, and the SFT stage trained again)."""
    import logging

    from src.cell import Cell
    from src.main import run_cell
    from src.plugins import load_config
    from tests.conftest import compose_config

    common = smoke_cell(tmp_path, nq=1, save_checkpoint=False)
    with_dpo = common + with_pairs_file(tmp_path, 4)
    cell = Cell.of(load_config(compose_config(with_dpo)))
    sft = Cell.of(sft_stage(cell.cfg))
    assert Cell.of(load_config(compose_config(common))).run_id == sft.run_id  # one cell, two roles
    run_cell(compose_config(with_dpo), tmp_path / "job")
    assert sft.training() is not None and sft.later_stages() == [cell.run_id]
    assert not (cell.checkpoint / "config.json").exists()  # the preference stage's own model is not kept

    caplog.clear()
    with caplog.at_level(logging.INFO):
        run_cell(compose_config(common), tmp_path / "job")  # the imitation-only cell: trained earlier, evaluated
    assert "training was done earlier" in caplog.text and "kept" in caplog.text
    assert sft.training() is not None  # still there for the preference stage

    cell.results_path.unlink()  # the preference cell again: the SFT stage is found, only DPO trains
    caplog.clear()
    with caplog.at_level(logging.INFO):
        run_cell(compose_config(with_dpo), tmp_path / "job")
    assert "training was done earlier" in caplog.text and "dpo: 4 pairs" in caplog.text
    assert sft.later_stages() == [cell.run_id]  # named once, however often it ran


def _name_later_stage(cell, ready, delay):
    """What a preference stage does before looking up its SFT stage (src/training/dpo.py)."""
    import time

    from src.io import file_lock
    from src.training.recipe import training_lock

    with file_lock(training_lock(cell)):
        ready.set()
        time.sleep(delay)  # the imitation-only cell looks now, and must wait for the lock
        cell.keep_checkpoint_for("the-preference-cell")


def test_a_preference_stage_naming_the_checkpoint_under_the_lock_is_never_raced_by_its_removal(tmp_path):
    """release_checkpoint (the imitation-only cell, evaluated under save_checkpoint=false) looks at the
    named later stages under the training lock a preference stage holds to name itself: while one is
    naming itself, the removal waits and then keeps the checkpoint, rather than removing it in between."""
    import multiprocessing

    from src.cell import Cell
    from src.plugins import load_config
    from src.training.recipe import release_checkpoint
    from tests.conftest import compose_config

    cell = Cell.of(load_config(compose_config(smoke_cell(tmp_path, nq=1, save_checkpoint=False))))
    cell.checkpoint.mkdir(parents=True)
    (cell.checkpoint / "config.json").write_text("{}")
    cell.training_path.write_text("{}")
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    namer = context.Process(target=_name_later_stage, args=(cell, ready, 0.5))
    namer.start()
    assert ready.wait(30)
    release_checkpoint(cell)
    namer.join(30)
    assert namer.exitcode == 0
    assert cell.later_stages() == ["the-preference-cell"]
    assert (cell.checkpoint / "config.json").exists() and cell.training_path.exists()

    cell.later_stages_path.unlink()  # no later stage named: the checkpoint goes
    release_checkpoint(cell)
    assert not cell.checkpoint.exists() and not cell.training_path.exists()


def test_a_launch_names_the_sft_checkpoints_its_preference_cells_start_from(tmp_path):
    """Before any cell runs, each preference cell under save_checkpoint=false names its SFT stage's
    checkpoint (src/grid.py name_later_stages); not one that keeps checkpoints anyway, nor one
    without a preference stage, nor one preflight keeps from running. In milestone mode the SFT
    cell's folder does not exist yet (the lock is the largest amount's): it is made."""
    from src.cell import Cell
    from src.grid import name_later_stages
    from src.plugins import load_config
    from tests.conftest import compose_config

    dpo = with_pairs_file(tmp_path, 2)
    milestone = ["train.mode=milestone", "train.milestones=[300,600]", "data.amount=300"]
    cells = {
        "dpo": smoke_cell(tmp_path, nq=1, save_checkpoint=False) + dpo,
        "dpo, milestone": smoke_cell(tmp_path, nq=1, save_checkpoint=False) + dpo + milestone,
        "dpo, kept anyway": smoke_cell(tmp_path, nq=1, save_checkpoint=True) + dpo,
        "imitation only": smoke_cell(tmp_path, nq=1, save_checkpoint=False),
        "dpo, blocked": smoke_cell(tmp_path, nq=1, save_checkpoint=False) + dpo + ["data.amount=900"],
    }
    raws = {label: compose_config(overrides) for label, overrides in cells.items()}
    launch = [(label, raw) for label, raw in raws.items()] + [("not composed", "ConfigError: no such group")]
    assert name_later_stages(launch, blocked=["dpo, blocked"]) == 2

    def named() -> list[str]:  # every run_id named in the store, as often as it is named
        return sorted(line for path in (tmp_path / "cells").glob("*/checkpoint.later_stages")
                      for line in path.read_text().splitlines())

    expected = sorted(Cell.of(load_config(raws[label])).run_id for label in ("dpo", "dpo, milestone"))
    assert named() == expected
    for label in ("dpo", "dpo, milestone"):
        cfg = load_config(raws[label])
        assert Cell.of(sft_stage(cfg)).later_stages() == [Cell.of(cfg).run_id], label
    assert name_later_stages(launch, blocked=["dpo, blocked"]) == 2  # again: each still named once
    assert named() == expected


def test_a_grid_that_runs_the_imitation_only_cell_first_trains_the_sft_stage_once(tmp_path):
    """`-m preference=none,file` under save_checkpoint=false: the imitation-only cell runs first and,
    told at launch that the preference cell starts from its checkpoint, writes and keeps it; the
    preference cell then finds its SFT stage trained (before, the imitation-only cell evaluated its
    model from memory, wrote nothing, and the SFT stage trained again)."""
    import os
    import subprocess
    import sys

    from src import PROJECT_ROOT

    pairs = with_pairs_file(tmp_path, 4)[1].split("=", 1)[1]
    sweep = tmp_path / "sweep"
    overrides = [*smoke_cell(tmp_path, nq=1, save_checkpoint=False), "benchmark=[]", "preference=none,file",
                 f"++preference.path={pairs}", "train.dpo.pairs_per_step=2", f"hydra.sweep.dir={sweep}"]
    overrides.remove("output_dir=unused")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled",
           "IMITATION_GAP_CACHE": str(CACHE)}
    proc = subprocess.run([sys.executable, "-m", "src.main", "-m", *overrides], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = {p.parent.name: p.read_text() for p in sweep.glob("*/main.log")}
    (imitation,) = [text for name, text in logs.items() if name.startswith("0_")]
    (preference,) = [text for name, text in logs.items() if name.startswith("1_")]
    assert "kept" in imitation and "starts from it" in imitation
    assert "training was done earlier" in preference and "dpo: 4 pairs" in preference
