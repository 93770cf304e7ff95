"""NQ-synthetic: grow a few seed QA pairs into many by asking a teacher for similar but distinct ones.

The study took 10 seed pairs from the NQ validation set and prompted ChatGPT with 5 random seeds at a
time until 6,000 pairs existed. Here: the same loop over any NQ-open seed file and any teacher.

    python -m src.nq_synthetic --seeds data/nq_synthetic/seeds.jsonl --n 6000 --out-dir data/x \\
        --base-url https://api.openai.com/v1 --model gpt-3.5-turbo --temperature 1.0
    python -m src.nq_synthetic --seeds data/nq_synthetic/seeds.jsonl --n 40 --out-dir /tmp/nq --local smollm2_135m

Writes <out-dir>/nq_synthetic.jsonl (NQ-open: {"question", "answer": [str]}, lower-case, no question
mark, loadable as an NQ benchmark or seed file), <out-dir>/nq_synthetic.json (ShareGPT: question ->
answer, loadable as a data source) and <out-dir>/build.json (prompt template, temperature, teacher,
counts per reason).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from src import resolve_path
from src.data.formats.nq import read_nq
from src.data.formats.records import DataError
from src.io import write_json_atomic, write_text_atomic
from src.progress import progress
from src.teacher.clients import ChatRequest, MalformedReply, Sampling, Teacher
from src.teacher.collect import CollectError, add_teacher_args, teacher_from_args

log = logging.getLogger(__name__)

PROMPT_TEMPLATE = (
    "Here are some trivia questions, each with a short answer:\n\n{examples}\n\n"
    "Write {k} new trivia questions like these, about different facts, each with a short answer. "
    "Use exactly the same format: a line starting with Q: and the next line starting with A:."
)
SHOTS = 5  # seed pairs shown per request, as in the study
PAIR_RE = re.compile(r"^\W*(?:\d+[.)]\s*)?(?:q|question)\s*\d*\s*[:.)]\s*(?P<q>.+?)\s*\n+\W*(?:a|answer)\s*\d*\s*[:.)]\s*(?P<a>.+?)\s*$",
                     re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class QA:
    question: str
    answers: tuple[str, ...]


@dataclass
class BuildStats:
    requests: int = 0
    failed: int = 0  # retries spent / transport errors
    malformed: int = 0  # replies that were not a usable chat completion
    replies_without_pairs: int = 0
    pairs_parsed: int = 0
    invalid: dict[str, int] = field(default_factory=dict)  # reason -> count
    duplicate_of_seed: int = 0
    in_excluded: int = 0  # questions of an evaluation set (--exclude): imitation data must not leak them
    duplicate: int = 0
    kept: int = 0
    seconds: float = 0.0


def normalize_question(text: str) -> str:
    """NQ-open style: lower case, single spaces, no trailing question mark."""
    return " ".join(text.lower().split()).rstrip(" ?")


def dedup_key(question: str) -> str:
    """Questions equal up to case, spacing and punctuation ('moby-dick' / "moby dick") are one."""
    return " ".join(re.sub(r"[^a-z0-9]+", " ", question.lower()).split())


def load_seeds(path: Path, minimum: int = SHOTS) -> list[QA]:
    """NQ-open pairs (read by src/data/formats/nq.py), questions normalized; CollectError naming the
    file (and line) when one is bad or fewer than `minimum` are there."""
    try:
        records = read_nq(path)
    except DataError as err:
        raise CollectError(str(err)) from err
    seeds = [QA(normalize_question(r.question), r.answers) for r in records]
    if len(seeds) < minimum:
        raise CollectError(f"{path}: {len(seeds)} seed pairs; at least {minimum} are needed")
    return seeds


def build_prompt(shots: list[QA], k: int) -> str:
    examples = "\n\n".join(f"Q: {qa.question}?\nA: {qa.answers[0]}" for qa in shots)
    return PROMPT_TEMPLATE.format(examples=examples, k=k)


def parse_pairs(text: str) -> list[tuple[str, str]]:
    return [(m["q"], m["a"]) for m in PAIR_RE.finditer(text)]


def invalid_reason(question: str, answer: str) -> str | None:
    """Why a parsed pair is not an NQ-style closed-book question with a short answer, or None."""
    q_words, a_words = question.split(), answer.split()
    if not 3 <= len(q_words) <= 30:
        return "question_length"
    if not 1 <= len(a_words) <= 6:
        return "answer_length"
    if not re.search(r"[a-z]", question) or not re.search(r"\w", answer):
        return "no_text"
    if re.search(rf"\b{re.escape(answer.lower().strip(' .'))}\b", question):
        return "answer_in_question"
    return None


def distinct_shots(rng: random.Random, seeds: list[QA], count: int) -> list[list[QA]]:
    """`count` random draws of SHOTS seeds for one round, no two in the same order while orders are
    left: the requests of a round share one sampling seed, so two equal prompts in it would get the
    same reply, and every pair of the second would be a duplicate."""
    orders = math.perm(len(seeds), SHOTS)
    drawn: list[list[QA]] = []
    used: set[tuple[str, ...]] = set()
    for _ in range(count):
        shots = rng.sample(seeds, SHOTS)
        while len(used) < orders and tuple(qa.question for qa in shots) in used:
            shots = rng.sample(seeds, SHOTS)
        used.add(tuple(qa.question for qa in shots))
        drawn.append(shots)
    return drawn


def build(seeds: list[QA], teacher: Teacher, n: int, sampling: Sampling, per_request: int = 5,
          max_requests: int = 1000, round_size: int = 8, seed: int = 0,
          exclude: frozenset[str] = frozenset()) -> tuple[list[QA], BuildStats]:
    """Ask in rounds of `round_size` requests (5 random seeds each) until n pairs or max_requests."""
    rng = random.Random(seed)
    stats = BuildStats()
    start = time.perf_counter()
    seed_questions = {dedup_key(qa.question) for qa in seeds}
    exclude = frozenset(dedup_key(q) for q in exclude)
    seen = set(seed_questions)
    kept: list[QA] = []
    bar = progress(None, "nq-synthetic", total=n)
    round_index = 0
    while len(kept) < n and stats.requests < max_requests:
        count = min(round_size, max_requests - stats.requests)
        requests = [ChatRequest(f"r{stats.requests + i}", ({"role": "user", "content": build_prompt(shots, per_request)},))
                    for i, shots in enumerate(distinct_shots(rng, seeds, count))]
        stats.requests += count
        round_sampling = Sampling(sampling.max_tokens, sampling.temperature, sampling.stop, sampling.seed + round_index)
        round_index += 1
        for _request, result in teacher.stream(requests, round_sampling):
            if isinstance(result, Exception):
                if isinstance(result, MalformedReply):
                    stats.malformed += 1
                else:
                    stats.failed += 1
                continue
            pairs = parse_pairs(result.text)
            stats.replies_without_pairs += not pairs
            for raw_q, raw_a in pairs:
                stats.pairs_parsed += 1
                question, answer = normalize_question(raw_q), raw_a.strip().rstrip(".")
                reason = invalid_reason(question, answer)
                if reason:
                    stats.invalid[reason] = stats.invalid.get(reason, 0) + 1
                elif dedup_key(question) in seed_questions:
                    stats.duplicate_of_seed += 1
                elif dedup_key(question) in exclude:
                    stats.in_excluded += 1
                elif dedup_key(question) in seen:
                    stats.duplicate += 1
                elif len(kept) < n:
                    seen.add(dedup_key(question))
                    kept.append(QA(question, (answer,)))
                    bar.update(1)
    bar.close()
    stats.kept = len(kept)
    stats.seconds = round(time.perf_counter() - start, 1)
    return kept, stats


def write_outputs(out_dir: Path, pairs: list[QA], meta: dict) -> None:
    out_dir = Path(out_dir)
    write_text_atomic(out_dir / "nq_synthetic.jsonl", "".join(
        json.dumps({"question": qa.question, "answer": list(qa.answers)}, ensure_ascii=False) + "\n" for qa in pairs))
    write_json_atomic(out_dir / "nq_synthetic.json", [
        {"id": f"nq_synthetic_{i}", "conversations": [{"from": "human", "value": qa.question + "?"},
                                                       {"from": "gpt", "value": qa.answers[0]}]}
        for i, qa in enumerate(pairs)])
    write_json_atomic(out_dir / "build.json", meta)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", required=True, help="NQ-open JSONL seed pairs (the study: 10)")
    parser.add_argument("--n", type=int, required=True, help="pairs to build (the study: 6,000)")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--per-request", type=int, default=5, help="new pairs asked for in each request")
    parser.add_argument("--max-requests", type=int, default=1000, help="give up after this many requests")
    parser.add_argument("--round-size", type=int, default=8, help="requests sent per round")
    parser.add_argument("--exclude", action="append", default=[],
                        help="NQ-open JSONL whose questions must not appear (an evaluation set); repeatable")
    parser.add_argument("--sample-seed", type=int, default=0, help="which seed pairs each request shows")
    add_teacher_args(parser)
    parser.set_defaults(temperature=1.0, max_tokens=200)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        seeds = load_seeds(resolve_path(args.seeds))
        exclude = frozenset(qa.question for path in args.exclude for qa in load_seeds(resolve_path(path), minimum=0))
        teacher = teacher_from_args(args)
    except CollectError as err:
        parser.exit(2, f"error: {err}\n")
    sampling = Sampling(max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed)
    pairs, stats = build(seeds, teacher, args.n, sampling, per_request=args.per_request,
                         max_requests=args.max_requests, round_size=args.round_size, seed=args.sample_seed,
                         exclude=exclude)
    meta = {"teacher": teacher.name, "seeds": args.seeds, "seed_pairs": len(seeds), "shots_per_request": SHOTS,
            "prompt_template": PROMPT_TEMPLATE, "per_request": args.per_request, "temperature": args.temperature,
            "max_tokens": args.max_tokens, "sample_seed": args.sample_seed, "sampling_seed": args.seed,
            "excluded_sets": args.exclude, "target": args.n, "stats": asdict(stats)}
    write_outputs(Path(args.out_dir), pairs, meta)
    print(json.dumps(asdict(stats), indent=2))
    if len(pairs) < args.n:
        log.warning("only %d of %d pairs after %d requests", len(pairs), args.n, stats.requests)


if __name__ == "__main__":
    main()
