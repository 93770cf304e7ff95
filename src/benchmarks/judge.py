"""Pairwise judge: the model's reply vs a reference reply (the teacher's) to the same prompt.

Data: JSONL {"id", "prompt", "reference"} (for instance the Koala test prompts with ChatGPT replies).
The judge sees both orders (model as A, then as B): MT-bench's remedy for position bias; a pair whose
two verdicts disagree counts as a tie. A judge reply without a verdict ([[A]], [[B]] or [[C]]) makes the
item unparsable (so does an empty model reply, which is not sent): counted in metrics, never scored. Lengths are logged beside every verdict because
judges prefer longer answers. Judgments are cached on disk by judge + prompt + both answers + order.

Judges: an OpenAI-compatible endpoint (base URL, model, key from the environment), a local model
config by name, or `self` (the evaluated model judging itself: demos and tests only).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from src import resolve_path
from src.benchmarks.base import BenchmarkResult
from src.benchmarks.uncertainty import ItemOutcomes, outcomes, value
from src.config import ConfigError
from src.data.formats.records import JSON_ERRORS, DataError, json_problem
from src.store import Store, cache_root, default_cache_dir

VERSION = 1
TEMPLATE = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI "
    "assistants to the user question displayed below. Choose the assistant that follows the user's "
    "instructions and answers the user's question better. Do not let the order or the length of the "
    "responses influence you. After a short explanation, output your final verdict by strictly following "
    'this format: "[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.'
    "\n\n[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n{a}\n[The End of Assistant A's "
    "Answer]\n\n[The Start of Assistant B's Answer]\n{b}\n[The End of Assistant B's Answer]"
)


@dataclass
class JudgeSettings:
    version: int = VERSION
    path: str = "data/judge/koala_sample.jsonl"
    limit: int | None = None
    max_new_tokens: int = 256         # the evaluated model's replies
    batch_size: int = 8
    judge: str = "openai"             # openai | local | self
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4"              # openai: the judge model name; local: a conf/model name
    key_env: str = "OPENAI_API_KEY"
    judge_max_tokens: int = 512
    max_retries: int = 5
    timeout_s: float = 120.0          # per judge request; a slower reply is retried like a 5xx
    cache_dir: str | None = field(default_factory=lambda: f"{default_cache_dir()}/judge")  # null: no judgment cache
    models_cache_dir: str = field(default_factory=default_cache_dir)  # judge=local: where its weights are converted

    def validate(self) -> None:
        if self.judge not in {"openai", "local", "self"}:
            raise ConfigError(f"benchmark.judge.judge: {self.judge!r} is not openai, local or self")


def parse_verdict(reply: str) -> str | None:
    """'A', 'B', 'C' (tie) from the last [[X]] in the reply; None when there is none."""
    found = re.findall(r"\[\[([ABC])\]\]", reply)
    return found[-1] if found else None


def combine(model_first: str | None, model_second: str | None) -> str:
    """win / loss / tie for the model from the two orders; unparsable if either verdict is missing."""
    if model_first is None or model_second is None:
        return "unparsable"
    first = {"A": "win", "B": "loss", "C": "tie"}[model_first]      # model was A
    second = {"A": "loss", "B": "win", "C": "tie"}[model_second]    # model was B
    return first if first == second else "tie"


class JudgeUnavailable(RuntimeError):
    """The judge endpoint failed for good (down, or a non-retryable status); judgments made so far
    are cached, so a rerun asks only the rest."""


class OpenAIJudge:
    """/chat/completions of an OpenAI-compatible server, temperature 0; 429, 5xx, timeouts, dropped
    connections and replies that are not a chat completion are retried with exponential backoff."""

    def __init__(self, base_url: str, model: str, key: str, max_tokens: int, max_retries: int,
                 backoff_s: float = 1.0, timeout_s: float = 120.0):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.key, self.max_tokens = model, key, max_tokens
        self.max_retries, self.backoff_s, self.timeout_s = max_retries, backoff_s, timeout_s
        self.identity = f"openai:{base_url}:{model}"
        self.unusable = 0  # replies still not a chat completion after every retry (scored unparsable)

    def complete_one(self, prompt: str) -> str | None:
        """The judge's reply; None when the endpoint kept answering with something unusable."""
        body = json.dumps({"model": self.model, "temperature": 0, "max_tokens": self.max_tokens,
                           "messages": [{"role": "user", "content": prompt}]}).encode()
        request = urllib.request.Request(self.url, data=body, headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {self.key}"})
        problem = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    raw = response.read()
            except urllib.error.HTTPError as err:
                if err.code != 429 and err.code < 500:
                    raise JudgeUnavailable(f"judge endpoint {self.url}: HTTP {err.code}") from err
                problem = f"HTTP {err.code}"
                continue
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as err:
                problem = f"unreachable ({getattr(err, 'reason', err)})"
                continue
            content = _chat_content(raw)
            if content is not None:
                return content
            problem = f"not a chat completion: {raw[:80]!r}"
        if problem.startswith("not a chat completion"):
            self.unusable += 1
            return None
        raise JudgeUnavailable(f"judge endpoint {self.url}: {problem} after {self.max_retries + 1} tries")

    def complete(self, prompts: list[str]) -> list[str | None]:
        return [self.complete_one(p) for p in prompts]


def _chat_content(raw: bytes) -> str | None:
    try:
        content = json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


class HandleJudge:
    """A local model as judge: greedy chat replies."""

    def __init__(self, handle, max_tokens: int, identity: str):
        self.handle, self.max_tokens, self.identity = handle, max_tokens, identity

    def complete(self, prompts: list[str]) -> list[str]:
        chat = [self.handle.chat_prompt(p) for p in prompts]
        return self.handle.generate(chat, self.max_tokens, chat=True, desc="judge")


def make_judge(settings: JudgeSettings, handle):
    if settings.judge == "self":
        return HandleJudge(handle, settings.judge_max_tokens, "self")
    if settings.judge == "local":
        import torch

        from src.models.hf import load_handle
        from src.models.sources import model_config_by_name

        cfg = model_config_by_name(settings.model)
        judge_handle = load_handle(cfg, settings.models_cache_dir,
                                   handle.device if handle else torch.device("cpu"), trained=True)
        return HandleJudge(judge_handle, settings.judge_max_tokens, f"local:{settings.model}")
    key = os.environ.get(settings.key_env)
    if not key:
        raise ConfigError(f"benchmark.judge: the OpenAI-compatible judge needs a key in ${settings.key_env}")
    return OpenAIJudge(settings.base_url, settings.model, key, settings.judge_max_tokens, settings.max_retries,
                       timeout_s=settings.timeout_s)


class JudgmentCache:
    """Judge replies in the store (src/store.py) under `directory`, keyed by judge + prompt (the prompt
    holds both answers in their order); no directory: nothing cached."""

    def __init__(self, directory: str | None, identity: str):
        self.store = Store(cache_root(directory)) if directory else None
        self.identity = identity

    def _key(self, prompt: str) -> str:
        return hashlib.sha256(f"{self.identity}\n{prompt}".encode()).hexdigest()

    def get(self, prompt: str) -> str | None:
        value = self.store.read_json(self._key(prompt)) if self.store else None
        return value["reply"] if value else None

    def put(self, prompt: str, reply: str) -> None:
        if self.store:
            self.store.write_json(self._key(prompt), {"judge": self.identity, "reply": reply})


def judge_all(judge, cache: JudgmentCache, prompts: list[str]) -> tuple[list[str], int]:
    """Replies for every judge prompt (cached ones read back); also how many were asked anew.

    Each reply is cached as it arrives, so a judge that goes down midway loses nothing already
    judged; an unusable reply (None) is not cached, so the next run asks again."""
    replies: list[str | None] = [cache.get(p) for p in prompts]
    missing = [i for i, r in enumerate(replies) if r is None]
    if hasattr(judge, "complete_one"):  # an endpoint: asked one at a time, lazily
        answers = (judge.complete_one(prompts[i]) for i in missing)
    else:  # a local model judges the whole batch at once
        answers = iter(judge.complete([prompts[i] for i in missing]))
    for i, reply in zip(missing, answers, strict=False):
        if reply is not None:
            cache.put(prompts[i], reply)
        replies[i] = reply
    return [r or "" for r in replies], len(missing)


def load_items(path: str) -> list[dict]:
    """JSONL {"id", "prompt", "reference"}; anything else is a DataError naming file and line."""
    full = resolve_path(path)
    try:
        lines = full.read_bytes().splitlines()
    except OSError as err:
        raise DataError(f"{full}: cannot read judge items: {err.strerror or err}") from err
    items = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise DataError(f"{full}:{lineno}: invalid UTF-8 ({err.reason})") from err
        except JSON_ERRORS as err:
            raise DataError(f"{full}:{lineno}: invalid JSON: {json_problem(err)}") from err
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("id", "prompt", "reference")):
            raise DataError(f"{full}:{lineno}: judge items need string 'id', 'prompt' and 'reference'")
        items.append(item)
    return items


def item_outcomes(predictions: list[dict]) -> ItemOutcomes:
    """Per item: win / tie / loss (None when unparsable: not in the rates' denominator), the adjusted
    win (1, 0.5, 0), unparsable, both lengths, and whether the longer reply won a decisive pair."""
    def rate(outcome: str) -> list:
        return [None if p["outcome"] == "unparsable" else p["outcome"] == outcome for p in predictions]

    adjusted = {"win": 1.0, "tie": 0.5, "loss": 0.0}
    decisive = [p["outcome"] in {"win", "loss"} and p["model_words"] != p["reference_words"] for p in predictions]
    return outcomes([p["id"] for p in predictions], {
        "win_rate": rate("win"), "tie_rate": rate("tie"), "loss_rate": rate("loss"),
        "adjusted_win_rate": [adjusted.get(p["outcome"]) for p in predictions],
        "unparsable": [p["outcome"] == "unparsable" for p in predictions],
        "mean_model_words": [p["model_words"] for p in predictions],
        "mean_reference_words": [p["reference_words"] for p in predictions],
        "longer_preferred": [((p["outcome"] == "win") == (p["model_words"] > p["reference_words"])) if d else None
                             for p, d in zip(predictions, decisive, strict=True)]},
        derived={"lc_win_rate": {"stat": "length_controlled",
                                 "of": ["adjusted_win_rate", "mean_model_words", "mean_reference_words"]}})


def run(handle, settings: JudgeSettings, judge=None) -> BenchmarkResult:
    start = time.perf_counter()
    items = load_items(settings.path)[: settings.limit]
    outputs = handle.generate([handle.chat_prompt(i["prompt"]) for i in items], settings.max_new_tokens,
                              batch_size=settings.batch_size, chat=True, desc="judge replies")
    judge = judge or make_judge(settings, handle)
    cache = JudgmentCache(settings.cache_dir, judge.identity)
    judged_items = [n for n, output in enumerate(outputs) if output.strip()]  # an empty reply is not judged
    prompts = []
    for n in judged_items:
        prompts.append(TEMPLATE.format(question=items[n]["prompt"], a=outputs[n], b=items[n]["reference"]))
        prompts.append(TEMPLATE.format(question=items[n]["prompt"], a=items[n]["reference"], b=outputs[n]))
    flat, asked = judge_all(judge, cache, prompts)
    replies: dict[int, list[str]] = {n: flat[2 * j: 2 * j + 2] for j, n in enumerate(judged_items)}
    predictions, counts = [], {"win": 0, "tie": 0, "loss": 0, "unparsable": 0}
    for n, (item, output) in enumerate(zip(items, outputs, strict=True)):
        pair = replies.get(n, [])
        first, second = (parse_verdict(pair[0]), parse_verdict(pair[1])) if pair else (None, None)
        outcome = combine(first, second)  # no verdict (or no reply to judge): unparsable, never a loss
        counts[outcome] += 1
        predictions.append({"id": item["id"], "prompt": item["prompt"], "output": output, "gold": item["reference"],
                            "verdict_model_first": first, "verdict_model_second": second, "outcome": outcome,
                            "model_words": len(output.split()), "reference_words": len(item["reference"].split()),
                            "judge_replies": pair})
    judged = max(1, counts["win"] + counts["tie"] + counts["loss"])
    decisive = [p for p in predictions if p["outcome"] in {"win", "loss"} and p["model_words"] != p["reference_words"]]
    longer_won = sum((p["outcome"] == "win") == (p["model_words"] > p["reference_words"]) for p in decisive)
    metrics = {"win_rate": counts["win"] / judged, "tie_rate": counts["tie"] / judged,
               "loss_rate": counts["loss"] / judged,
               "adjusted_win_rate": (counts["win"] + 0.5 * counts["tie"]) / judged,
               "unparsable": counts["unparsable"] / max(1, len(items)),
               "mean_model_words": sum(p["model_words"] for p in predictions) / max(1, len(items)),
               "mean_reference_words": sum(p["reference_words"] for p in predictions) / max(1, len(items)),
               "longer_preferred": longer_won / len(decisive) if decisive else 0.0}
    items = item_outcomes(predictions)
    # AlpacaEval 2's length control: the (adjusted) win rate a reply as long as the reference would get
    lc_win_rate = value(items, "lc_win_rate")
    metrics["lc_win_rate"] = lc_win_rate if lc_win_rate is not None else 0.0  # nothing judged: as the rates
    return BenchmarkResult("judge", VERSION, metrics, predictions, lower_is_better=["loss_rate", "unparsable"],
                           settings={"chat_wrapped": True, "judge_identity": judge.identity, "both_orders": True,
                                     "disagreement": "tie", "judged_anew": asked, "template": TEMPLATE,
                                     "judge_unusable_replies": getattr(judge, "unusable", 0)},
                           seconds=time.perf_counter() - start, items=items)
