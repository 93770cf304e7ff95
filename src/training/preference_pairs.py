"""Where a cell's preference pairs come from (`preference.source`, conf/preference/*.yaml).

    teacher_vs_student  prompts of the cell's own imitation data, in its budget order: the teacher's reply
                        there is chosen, the SFT student's own reply to the same prompt rejected (SPIN's
                        self-play pairs, Chen et al. 2024); a pair whose replies are the same text is dropped
    judge               two sampled replies of the SFT student to those prompts, compared by the judge
                        benchmark's judge in both orders (src/benchmarks/judge.py); the winner is chosen,
                        ties and unparsable verdicts are dropped
    file                a JSONL of {"prompt", "chosen", "rejected"} (UltraFeedback / HH shape): prompt a
                        string or a message list; chosen / rejected a reply string or a message list whose
                        last message is the assistant's reply

`validate` runs with the config check (src/plugins.py), before any model loads: a missing or empty
file, or a source with no pairs to take, is one line. Every pair is a `Pair`; the cell writes them to
pairs.jsonl once (src/training/dpo.py), so a rerun or a resumed stage trains on the same pairs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from src import resolve_path
from src.config import ConfigError, RunConfig, build_dataclass
from src.data.budget import shuffled
from src.data.conversation import Message
from src.data.formats.records import JSON_ERRORS, DataError, json_problem
from src.data.template import ChatFormat, TemplateError, render


@dataclass(frozen=True)
class Pair:
    id: str
    prompt: tuple[Message, ...]  # the conversation before the reply, ending with a user turn
    chosen: str
    rejected: str

    def to_dict(self) -> dict:
        return {"id": self.id, "prompt": [{"role": m.role, "content": m.content} for m in self.prompt],
                "chosen": self.chosen, "rejected": self.rejected}

    @classmethod
    def from_dict(cls, raw: dict) -> Pair:
        return cls(raw["id"], tuple(Message(m["role"], m["content"]) for m in raw["prompt"]), raw["chosen"],
                   raw["rejected"])


# --------------------------------------------------------------------------------------------------
# file


def _messages(value, origin: str, key: str) -> tuple[Message, ...]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{origin}: '{key}' must be a string or a non-empty list of messages")
    out = []
    for m in value:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or \
                m.get("role") not in ("system", "user", "assistant"):
            raise DataError(f"{origin}: '{key}' holds a message without role (system|user|assistant) and content")
        out.append(Message(m["role"], m["content"]))
    return tuple(out)


def _reply(value, origin: str, key: str) -> str:
    """A reply string, or the last message (the assistant's) of a message list."""
    if isinstance(value, str):
        return value
    messages = _messages(value, origin, key)
    if messages[-1].role != "assistant":
        raise DataError(f"{origin}: the last message of '{key}' is not the assistant's reply")
    return messages[-1].content


def iter_file_pairs(path: Path) -> Iterator[Pair]:
    """Each line's pair, in file order; a bad line is a DataError naming file and line."""
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            origin = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except JSON_ERRORS as err:
                raise DataError(f"{origin}: not JSON ({json_problem(err)})") from None
            if not isinstance(record, dict) or not {"prompt", "chosen", "rejected"} <= set(record):
                raise DataError(f"{origin}: a pair needs the keys prompt, chosen and rejected")
            prompt = record["prompt"]
            messages = (Message("user", prompt),) if isinstance(prompt, str) else _messages(prompt, origin, "prompt")
            if messages[-1].role != "user":
                raise DataError(f"{origin}: the prompt must end with a user turn")
            yield Pair(str(record.get("id", f"{path.name}:{lineno}")), messages,
                       _reply(record["chosen"], origin, "chosen"), _reply(record["rejected"], origin, "rejected"))


def file_pairs(cfg: RunConfig, tokenizer=None) -> tuple[list[Pair], dict]:
    path = resolve_path(cfg.preference.path)
    pairs, same = [], 0
    for pair in iter_file_pairs(path):
        if same_reply(pair.chosen, pair.rejected, tokenizer):
            same += 1
            continue
        pairs.append(pair)
        if cfg.preference.max_pairs is not None and len(pairs) == cfg.preference.max_pairs:
            break
    return pairs, {"source": "file", "path": str(path), "pairs": len(pairs), "dropped_identical": same}


# --------------------------------------------------------------------------------------------------
# prompts of the cell's imitation data


def imitation_prompts(cfg: RunConfig, tokenizer, fmt: ChatFormat, limit: int | None
                      ) -> list[tuple[str, tuple[Message, ...], str]]:
    """(id, the messages before the first assistant turn, that turn's reply) of the conversations the
    cell's SFT stage trained on, in the budget order (the one seeded shuffle every budget is a prefix of),
    counted with the formatted tokens data.amount counts; the first `limit` of them."""
    from src.data.sources import load_source

    conversations, _ = load_source(cfg.data.source)
    out, used = [], 0
    for conv in shuffled(conversations, cfg.data.shuffle_seed):
        try:
            tokens = len(render(conv.messages, tokenizer, fmt).input_ids)
        except TemplateError:
            continue
        if cfg.data.amount is not None and used + tokens > cfg.data.amount:
            break
        used += tokens
        first = next((i for i, m in enumerate(conv.messages) if m.role == "assistant"), None)
        if not first or conv.messages[first - 1].role != "user":
            continue
        out.append((conv.id, conv.messages[:first], conv.messages[first].content))
        if limit is not None and len(out) == limit:
            break
    return out


def same_reply(a: str, b: str, tokenizer) -> bool:
    """Whether two replies are the same to the model: the same tokens (decoded text can differ from the
    teacher's in spacing or case, e.g. under the toy world's word-level tokenizer, and still be its tokens)."""
    if a.strip() == b.strip():
        return True
    if tokenizer is None:
        return False
    ids = tokenizer([a.strip(), b.strip()], add_special_tokens=False)["input_ids"]
    return ids[0] == ids[1]


def _decoding(cfg: RunConfig, seed: int) -> dict:
    p = cfg.preference
    if p.decoding == "greedy":
        return {"temperature": 0.0}
    return {"temperature": p.temperature, "top_p": p.top_p, "seed": seed}


def student_replies(cfg: RunConfig, handle, fmt: ChatFormat, prompts: list[tuple[Message, ...]], seed: int
                    ) -> tuple[list[str], list[bool]]:
    finished: list[bool] = []
    replies = handle.generate([fmt.generation_prompt(p) for p in prompts], cfg.preference.max_new_tokens,
                              batch_size=cfg.preference.batch_size, chat=True, desc="student replies",
                              finished=finished, **_decoding(cfg, seed))
    return replies, finished


def teacher_vs_student_pairs(cfg: RunConfig, handle, tokenizer, fmt: ChatFormat) -> tuple[list[Pair], dict]:
    prompts = imitation_prompts(cfg, tokenizer, fmt, cfg.preference.max_pairs)
    replies, finished = student_replies(cfg, handle, fmt, [p for _, p, _ in prompts], cfg.seed)
    pairs, same = [], 0
    for (pid, messages, teacher), student in zip(prompts, replies, strict=True):
        if same_reply(teacher, student, tokenizer):
            same += 1  # the student already says what the teacher said: no preference to learn
            continue
        pairs.append(Pair(pid, messages, teacher, student))
    return pairs, {"source": "teacher_vs_student", "prompts": len(prompts), "pairs": len(pairs),
                   "dropped_identical": same, "student_unfinished": sum(not f for f in finished),
                   "decoding": _decoding(cfg, cfg.seed)}


def judge_settings(cfg: RunConfig):
    from src.benchmarks.judge import JudgeSettings

    settings = build_dataclass(JudgeSettings, dict(cfg.preference.judge), "preference.judge")
    try:
        settings.validate()
    except ConfigError as err:  # the benchmark names its own section; here the settings are preference.judge
        raise ConfigError(str(err).replace("benchmark.judge", "preference.judge")) from None
    return settings


def judge_pairs(cfg: RunConfig, handle, tokenizer, fmt: ChatFormat) -> tuple[list[Pair], dict]:
    from src.benchmarks.judge import TEMPLATE, JudgmentCache, combine, judge_all, make_judge, parse_verdict

    if cfg.preference.decoding != "sample":
        raise ConfigError("preference=judge needs preference.decoding=sample: greedy gives one reply twice")
    settings = judge_settings(cfg)
    prompts = imitation_prompts(cfg, tokenizer, fmt, cfg.preference.max_pairs)
    messages = [p for _, p, _ in prompts]
    first, _ = student_replies(cfg, handle, fmt, messages, 2 * cfg.seed)
    second, _ = student_replies(cfg, handle, fmt, messages, 2 * cfg.seed + 1)
    judge = make_judge(settings, handle)
    cache = JudgmentCache(settings.cache_dir, judge.identity)
    asks = []
    for m, a, b in zip(messages, first, second, strict=True):
        question = m[-1].content
        asks += [TEMPLATE.format(question=question, a=a, b=b), TEMPLATE.format(question=question, a=b, b=a)]
    verdicts, asked = judge_all(judge, cache, asks)
    pairs, counts = [], {"win": 0, "loss": 0, "tie": 0, "unparsable": 0, "identical": 0}
    for i, ((pid, m, _), a, b) in enumerate(zip(prompts, first, second, strict=True)):
        if same_reply(a, b, tokenizer):
            counts["identical"] += 1
            continue
        outcome = combine(parse_verdict(verdicts[2 * i] or ""), parse_verdict(verdicts[2 * i + 1] or ""))
        counts[outcome] += 1
        if outcome == "win":
            pairs.append(Pair(pid, m, a, b))
        elif outcome == "loss":
            pairs.append(Pair(pid, m, b, a))
    return pairs, {"source": "judge", "judge": judge.identity, "prompts": len(prompts), "pairs": len(pairs),
                   "verdicts": counts, "judge_requests": asked, "decoding": _decoding(cfg, cfg.seed)}


SOURCES = {"teacher_vs_student": teacher_vs_student_pairs, "judge": judge_pairs,
           "file": lambda cfg, handle, tokenizer, fmt: file_pairs(cfg, tokenizer)}


def build_pairs(cfg: RunConfig, handle, tokenizer, fmt: ChatFormat) -> tuple[list[Pair], dict]:
    """The cell's pairs and how they came about (counted drops); `handle` is the SFT model's."""
    pairs, report = SOURCES[cfg.preference.source](cfg, handle, tokenizer, fmt)
    if not pairs:
        raise DataError(f"preference={cfg.preference.source}: no preference pairs ({report}); "
                        "a preference source with no pairs has nothing to train on")
    return pairs, report


# --------------------------------------------------------------------------------------------------
# the config check


def validate(cfg: RunConfig) -> None:
    """One line, before any model loads, for a preference source that cannot give pairs."""
    p = cfg.preference
    if not p.active:
        return
    if cfg.data.amount == 0:
        raise ConfigError(f"preference={p.source} with data.amount=0: the preference stage starts from the "
                          "cell's imitation (SFT) model and the base cell has none; use an amount > 0")
    if p.source == "file":
        path = resolve_path(p.path)
        if not path.is_file():
            raise ConfigError(f"preference.path: {path} does not exist (preference=file reads its pairs there)")
        try:
            first = next(iter_file_pairs(path), None)
        except DataError as err:
            raise ConfigError(f"preference.path: {err}") from None
        if first is None:
            raise ConfigError(f"preference.path: {path} holds no pairs: a preference source with no pairs")
    if p.source == "judge":
        settings = judge_settings(cfg)
        if settings.judge == "openai" and not os.environ.get(settings.key_env):
            raise ConfigError(f"preference=judge: the OpenAI-compatible judge needs a key in ${settings.key_env} "
                              "(or preference.judge.judge=local|self)")
        if p.decoding != "sample":
            raise ConfigError("preference=judge needs preference.decoding=sample: greedy gives one reply twice")
