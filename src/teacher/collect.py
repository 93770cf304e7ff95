"""Build imitation data: ask a teacher every prompt of a prompt set and write ShareGPT JSON.

    python -m src.collect --prompts data/demo/prompts.jsonl --out data/x/imitation.json \\
        --base-url https://api.openai.com/v1 --model gpt-3.5-turbo --api-key-env OPENAI_API_KEY
    python -m src.collect --prompts data/demo/prompts.jsonl --out /tmp/x.json --local smollm2_135m

Prompts: a JSONL file of {"id", "prompt"} (the Koala test-set shape), a ShareGPT file (the first user
turn of each conversation is asked again), or --source NAME (conf/data_source/NAME.yaml). Answers are
appended, one JSON line each, to <out>.partial.jsonl as they arrive, so a killed run resumes where it
stopped; at the end <out> is written atomically (JSON list, or JSONL when <out> ends in .jsonl) in
prompt order, and <out stem>.collect.json records settings, counts, tokens and cost.

With --select random|uncertainty|diversity --budget N (and --student MODEL for the last two), only N
prompts of the pool are asked, chosen before any is paid for (src/teacher/select.py); the choice, its
scores and its seed go to <out stem>.selection.json and into the .collect.json. With --rounds R, the
budget is chosen in R rounds, the student fine-tuned on the answers between them (src/teacher/rounds.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from src import PROJECT_ROOT, resolve_path
from src.data.formats.records import JSON_ERRORS, json_problem
from src.io import write_json_atomic, write_text_atomic
from src.progress import progress
from src.store import default_cache_dir
from src.teacher.clients import (
    ChatRequest,
    HttpTeacher,
    LocalTeacher,
    MalformedReply,
    Sampling,
    Teacher,
    load_local_handle,
)
from src.teacher.select import SELECTORS, SelectionError, load_or_select, selection_path

log = logging.getLogger(__name__)


class CollectError(ValueError):
    """Bad prompt input or settings; the message names the file and line."""


@dataclass(frozen=True)
class Prompt:
    id: str
    prompt: str


@dataclass
class CollectSettings:
    sampling: Sampling = field(default_factory=Sampling)
    system: str | None = None  # sent to the teacher, never written into the data
    demonstration: tuple[tuple[str, str], ...] = ()  # (user, assistant) exchanges sent before each prompt
    keep_truncated: bool = False  # replies cut off by max_tokens are dropped (and counted) unless set
    cost_per_1k_prompt: float = 0.0  # currency units per 1,000 prompt tokens (the teacher's price list)
    cost_per_1k_completion: float = 0.0


@dataclass
class CollectStats:
    prompts_read: int = 0
    duplicates_dropped: int = 0  # same prompt text (case and spacing ignored) or same id as an earlier one
    resumed: int = 0  # answers already in the partial file from an earlier run
    torn_lines_dropped: int = 0  # a last line half-written when an earlier run was killed
    asked: int = 0
    kept: int = 0  # new answers appended this run
    malformed: int = 0  # 200 replies that were not a usable chat completion
    failed: int = 0  # retries spent or a non-retryable error
    truncated: int = 0  # cut off by max_tokens, dropped
    retries: int = 0
    written: int = 0  # conversations in the final output
    prompt_tokens: int = 0  # this run, every reply paid for (kept or dropped)
    completion_tokens: int = 0
    cost: float = 0.0
    seconds: float = 0.0
    first_errors: dict[str, str] = field(default_factory=dict)  # first message per kind, for the log


def normalize_prompt(text: str) -> str:
    return " ".join(text.lower().split())


def _prompt_of(record: object, origin: str) -> Prompt:
    if isinstance(record, dict) and isinstance(record.get("prompt"), str):
        return Prompt(str(record.get("id", origin)), record["prompt"])
    if isinstance(record, dict) and isinstance(record.get("conversations"), list):
        for turn in record["conversations"]:
            if isinstance(turn, dict) and str(turn.get("from", "")).lower() in ("human", "user"):
                if isinstance(turn.get("value"), str):
                    return Prompt(str(record.get("id", origin)), turn["value"])
        raise CollectError(f"{origin}: ShareGPT record has no user turn")
    raise CollectError(f"{origin}: need {{'id', 'prompt'}} or a ShareGPT record with 'conversations'")


def load_prompts(path: Path) -> list[Prompt]:
    """{"id","prompt"} JSONL, or ShareGPT JSON/JSONL (first user turn of each conversation)."""
    path = Path(path)
    if not path.exists():
        raise CollectError(f"{path}: prompt file does not exist")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise CollectError(f"{path}:{line}: invalid UTF-8 ({err.reason})") from err
    if text.lstrip().startswith("["):
        try:
            records = [(f"{path}[{i}]", r) for i, r in enumerate(json.loads(text))]
        except JSON_ERRORS as err:
            where = f"{path}:{err.lineno}" if isinstance(err, json.JSONDecodeError) else str(path)
            raise CollectError(f"{where}: invalid JSON: {json_problem(err)}") from err
    else:
        records = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    records.append((f"{path}:{lineno}", json.loads(line)))
                except JSON_ERRORS as err:
                    raise CollectError(f"{path}:{lineno}: invalid JSON: {json_problem(err)}") from err
    prompts = [_prompt_of(record, origin) for origin, record in records]
    empty = next((p for p in prompts if not p.prompt.strip()), None)
    if empty:
        raise CollectError(f"{path}: prompt {empty.id!r} is empty")
    return prompts


def source_path(name: str) -> Path:
    from omegaconf import OmegaConf

    conf = PROJECT_ROOT / "conf" / "data_source" / f"{name}.yaml"
    if not conf.exists():
        raise CollectError(f"--source: no data source config {conf}")
    return resolve_path(str(OmegaConf.load(conf).path))


def dedup(prompts: list[Prompt]) -> tuple[list[Prompt], int]:
    seen_text, seen_id, unique = set(), set(), []
    for p in prompts:
        key = normalize_prompt(p.prompt)
        if key in seen_text or p.id in seen_id:
            continue
        seen_text.add(key)
        seen_id.add(p.id)
        unique.append(p)
    return unique, len(prompts) - len(unique)


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial.jsonl")


def stats_path(out: Path) -> Path:
    return out.with_name(out.name.rsplit(".", 1)[0] + ".collect.json")


def read_partial(path: Path) -> tuple[dict[str, dict], int]:
    """Records already collected, by id, and how many torn lines were cut off the end of the file.

    Only a kill mid-write leaves a line without its newline, and only at the end: the file is cut back
    to its last complete line so the next append starts clean."""
    if not path.exists():
        return {}, 0
    raw = path.read_bytes()
    end = raw.rfind(b"\n") + 1
    torn = 1 if end < len(raw) else 0
    if torn:
        with open(path, "r+b") as handle:
            handle.truncate(end)
    done: dict[str, dict] = {}
    for lineno, line in enumerate(raw[:end].splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except JSON_ERRORS as err:
            raise CollectError(f"{path}:{lineno}: corrupt partial output ({json_problem(err)}); "
                               "move it away to start over") from err
        if not isinstance(record, dict) or "id" not in record or "conversations" not in record:
            raise CollectError(f"{path}:{lineno}: not a collected record; move the file away to start over")
        done[str(record["id"])] = record
    return done, torn


def build_messages(prompt: str, settings: CollectSettings) -> tuple[dict, ...]:
    messages = [{"role": "system", "content": settings.system}] if settings.system else []
    for user, assistant in settings.demonstration:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return tuple(messages + [{"role": "user", "content": prompt}])


def sharegpt_record(prompt_id: str, prompt: str, reply: str) -> dict:
    return {"id": prompt_id, "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": reply}]}


def collect(prompts: list[Prompt], teacher: Teacher, out: Path, settings: CollectSettings,
            selection: dict | None = None) -> CollectStats:
    """Ask the teacher every prompt not yet answered in the partial file, then write `out`. A
    `selection` (src/teacher/select.py: which prompts of a pool were chosen and why) is recorded in
    <out>.collect.json."""
    out = Path(out)
    start = time.perf_counter()
    stats = CollectStats(prompts_read=len(prompts))
    prompts, stats.duplicates_dropped = dedup(prompts)
    partial = partial_path(out)
    partial.parent.mkdir(parents=True, exist_ok=True)
    done, stats.torn_lines_dropped = read_partial(partial)
    wanted = {p.id for p in prompts}
    stats.resumed = sum(1 for key in done if key in wanted)
    pending = [p for p in prompts if p.id not in done]
    by_id = {p.id: p for p in pending}
    requests = (ChatRequest(p.id, build_messages(p.prompt, settings)) for p in pending)
    sampling = settings.sampling
    retries_before = getattr(teacher, "retries", 0)
    with open(partial, "a", encoding="utf-8") as sink, progress(None, "teacher", total=len(pending)) as bar:
        for request, result in teacher.stream(requests, sampling):
            stats.asked += 1
            bar.update(1)
            if isinstance(result, Exception):
                kind = "malformed" if isinstance(result, MalformedReply) else "failed"
                setattr(stats, kind, getattr(stats, kind) + 1)
                stats.first_errors.setdefault(kind, f"{request.id}: {result}")
                continue
            stats.prompt_tokens += result.prompt_tokens
            stats.completion_tokens += result.completion_tokens
            if result.finish_reason == "length" and not settings.keep_truncated:
                stats.truncated += 1
                continue
            record = sharegpt_record(request.id, by_id[request.id].prompt, result.text.strip())
            record["usage"] = {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                               "finish_reason": result.finish_reason, "attempts": result.attempts}
            # One write per line, flushed: a kill leaves whole lines plus at most one torn tail.
            sink.write(json.dumps(record, ensure_ascii=False) + "\n")
            sink.flush()
            done[request.id] = record
            stats.kept += 1
    stats.retries = getattr(teacher, "retries", 0) - retries_before
    stats.cost = round(stats.prompt_tokens / 1000 * settings.cost_per_1k_prompt
                       + stats.completion_tokens / 1000 * settings.cost_per_1k_completion, 6)
    final = [{"id": p.id, "conversations": done[p.id]["conversations"]} for p in prompts if p.id in done]
    stats.written = len(final)
    if out.suffix == ".jsonl":
        write_text_atomic(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in final))
    else:
        write_json_atomic(out, final)
    stats.seconds = round(time.perf_counter() - start, 2)
    record = {"teacher": teacher.name, "output": str(out), "settings": asdict(settings), "stats": asdict(stats)}
    if selection is not None:
        record["selection"] = selection
    write_json_atomic(stats_path(out), record)
    return stats


def add_teacher_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("teacher (one of --base-url or --local)")
    group.add_argument("--base-url", help="OpenAI-compatible API root, e.g. http://127.0.0.1:8000/v1")
    group.add_argument("--model", help="model name sent to the endpoint")
    group.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key")
    group.add_argument("--local", help="a conf/model name or a checkpoint directory, run in this process")
    group.add_argument("--cache-dir", default=default_cache_dir())
    group.add_argument("--batch-size", type=int, default=8, help="local teacher: prompts per generate call")
    group.add_argument("--concurrency", type=int, default=4, help="HTTP: requests in flight")
    group.add_argument("--rps", type=float, default=0.0, help="HTTP: at most this many requests a second (0 = no limit)")
    group.add_argument("--timeout", type=float, default=60.0, help="HTTP: seconds per request")
    group.add_argument("--retries", type=int, default=5, help="HTTP: retries on 429, 5xx and timeouts")
    group.add_argument("--backoff", type=float, default=1.0, help="HTTP: first retry delay in seconds; doubles")
    group.add_argument("--max-tokens", type=int, default=512)
    group.add_argument("--temperature", type=float, default=0.0)
    group.add_argument("--seed", type=int, default=0, help="sampling seed (at --temperature > 0; an HTTP teacher is sent it as `seed`)")


def add_select_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("choosing which prompts to ask (src/teacher/select.py)")
    group.add_argument("--select", choices=SELECTORS, help="ask only --budget prompts of the pool, chosen so")
    group.add_argument("--budget", type=int, help="--select: how many prompts to pay the teacher for")
    group.add_argument("--student", help="--select uncertainty|diversity: the conf/model name or checkpoint "
                                         "directory whose uncertainty or hidden states score the pool")
    group.add_argument("--select-seed", type=int, default=0, help="--select: seed of random and the first k-center pick")
    group.add_argument("--student-max-tokens", type=int, default=32,
                       help="--select uncertainty: tokens of the student's own reply that are scored")
    group.add_argument("--rounds", type=int, default=1,
                       help="--select uncertainty|diversity: choose the budget in this many rounds, fine-tuning "
                            "--student on the answers so far between them")
    group.add_argument("--round-train", action="append", default=[], metavar="OVERRIDE",
                       help="--rounds: a Hydra override of the fine-tune cells (e.g. experiment=NAME); repeatable")


def choose_prompts(prompts: list[Prompt], args: argparse.Namespace, out: Path) -> tuple[list[Prompt], dict | None]:
    """The prompts to ask: all of them, or the --budget chosen by --select (saved beside the output,
    so a resumed run asks the same ones)."""
    if not args.select:
        if args.budget or args.student or args.rounds != 1 or args.round_train:
            raise CollectError("--budget, --student, --rounds and --round-train only apply with "
                               "--select random|uncertainty|diversity")
        return prompts, None
    if args.rounds != 1:
        raise CollectError("--rounds is run by collect_rounds (a bug: choose_prompts chooses in one round)")
    check_select(args)
    unique, _ = dedup(prompts)
    try:
        selection, reused = load_or_select(
            [(p.id, p.prompt) for p in unique], args.select, args.budget, args.select_seed, args.student,
            selection_path(out), lambda: open_student(args.student, args), max_new_tokens=args.student_max_tokens,
            batch_size=args.batch_size)
    except SelectionError as err:
        raise CollectError(str(err)) from err
    log.info("%s %d of %d prompts by %s%s", "reusing the choice of" if reused else "chose", len(selection.chosen),
             len(unique), args.select, f" (student {args.student})" if selection.student else "")
    by_id = {p.id: p for p in unique}
    return [by_id[i] for i in selection.chosen], selection.to_dict()


def check_select(args: argparse.Namespace) -> None:
    """What --select needs, in one round or several."""
    if args.budget is None:
        raise CollectError("--select needs --budget N (how many prompts to ask)")
    if args.select != "random" and not args.student:
        raise CollectError(f"--select {args.select} needs --student MODEL (a conf/model name or a checkpoint dir)")


def open_student(name: str, args: argparse.Namespace):
    """The student (a conf/model name or a checkpoint directory) on the best device here."""
    from src.models.load import pick_device

    return load_local_handle(name, args.cache_dir, pick_device("auto"))


def check_rounds(args: argparse.Namespace) -> None:
    """What --rounds needs, said before the pool is scored or anything asked."""
    if args.select is None or args.select == "random":
        raise CollectError("--rounds needs --select uncertainty or diversity (random does not read the student)")
    check_select(args)
    if Path(args.student).expanduser().is_dir():
        raise CollectError(f"--rounds fine-tunes --student between rounds: give a conf/model name, not the "
                           f"directory {args.student}")
    if not (PROJECT_ROOT / "conf" / "model" / f"{args.student}.yaml").exists():
        raise CollectError(f"--student {args.student}: no conf/model/{args.student}.yaml (--rounds fine-tunes a "
                           "model the grid knows by name)")


def collect_rounds(prompts: list[Prompt], teacher: Teacher, args: argparse.Namespace,
                   settings: CollectSettings) -> CollectStats:
    """--rounds R: choose, ask, fine-tune, R times (src/teacher/rounds.py); the last round's stats."""
    from src.teacher.rounds import RoundsSettings, collect_in_rounds

    unique, _ = dedup(prompts)
    by_id = {p.id: p for p in unique}
    out = Path(args.out)
    last: list[CollectStats] = []

    def ask(ids: list[str], record: dict) -> None:
        last[:] = [collect([by_id[i] for i in ids], teacher, out, settings, selection=record)]

    plan = RoundsSettings(selector=args.select, budget=args.budget, rounds=args.rounds, seed=args.select_seed,
                          student=args.student, round_train=list(args.round_train),
                          max_new_tokens=args.student_max_tokens, batch_size=args.batch_size,
                          cache_dir=args.cache_dir)
    try:
        collect_in_rounds([(p.id, p.prompt) for p in unique], plan, out, lambda name: open_student(name, args), ask)
    except SelectionError as err:
        raise CollectError(str(err)) from err
    return last[0]


def teacher_from_args(args: argparse.Namespace) -> Teacher:
    if bool(args.base_url) == bool(args.local):
        raise CollectError("give exactly one teacher: --base-url URL --model NAME, or --local MODEL")
    if args.local:
        return LocalTeacher(args.local, args.cache_dir, batch_size=args.batch_size)
    if not args.model:
        raise CollectError("--base-url needs --model")
    if args.api_key_env and not os.environ.get(args.api_key_env):
        log.warning("%s is not set: requests go without an Authorization header", args.api_key_env)
    return HttpTeacher(args.base_url, args.model, api_key_env=args.api_key_env, timeout=args.timeout,
                       max_retries=args.retries, backoff=args.backoff, concurrency=args.concurrency,
                       requests_per_second=args.rps)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--prompts", help='JSONL {"id","prompt"} or a ShareGPT file')
    where.add_argument("--source", help="a conf/data_source name: its conversations' first user turns")
    parser.add_argument("--out", required=True, help="ShareGPT output (.json, or .jsonl)")
    parser.add_argument("--limit", type=int, help="only the first N prompts")
    parser.add_argument("--system", help="system prompt sent to the teacher (not written into the data)")
    parser.add_argument("--keep-truncated", action="store_true", help="keep replies cut off by --max-tokens")
    parser.add_argument("--cost-per-1k-prompt", type=float, default=0.0)
    parser.add_argument("--cost-per-1k-completion", type=float, default=0.0)
    add_select_args(parser)
    add_teacher_args(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the progress bar
    try:
        prompts = load_prompts(resolve_path(args.prompts) if args.prompts else source_path(args.source))
        prompts = prompts[:args.limit] if args.limit else prompts
        teacher = teacher_from_args(args)
        settings = CollectSettings(
            sampling=Sampling(max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed),
            system=args.system, keep_truncated=args.keep_truncated,
            cost_per_1k_prompt=args.cost_per_1k_prompt, cost_per_1k_completion=args.cost_per_1k_completion)
        if args.rounds != 1:
            check_rounds(args)
            stats = collect_rounds(prompts, teacher, args, settings)
        else:
            prompts, selection = choose_prompts(prompts, args, Path(args.out))
            stats = collect(prompts, teacher, Path(args.out), settings, selection=selection)
    except CollectError as err:
        parser.exit(2, f"error: {err}\n")
    print(json.dumps(asdict(stats), indent=2))


if __name__ == "__main__":
    main()
