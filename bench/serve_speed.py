"""The local server under concurrent load, on the embedded SmolLM2-135M: the batching server
(`--max-batch 8`) against the one-at-a-time server (`--max-batch 1`), both in this run, same model.

Two rows: requests/s at concurrency 8 through the official `openai` client (greedy; the replies of
both servers compared), and `python -m src.collect --concurrency 8` against each server (wall time;
the two output files compared byte for byte)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from src import PROJECT_ROOT
from src.models.hf import load_handle
from src.models.sources import model_config_by_name
from src.teacher.serve import ServerThread, build_app

REQUESTS = 16
MAX_TOKENS = 16
CONCURRENCY = 8
REPEATS = 3


def _prompts(n: int) -> list[dict]:
    lines = (PROJECT_ROOT / "data" / "demo" / "prompts.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines[:n]]


def _openai_run(url: str, prompts: list[dict]) -> tuple[float, list[str]]:
    import openai

    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=5, timeout=600)

    def ask(prompt: dict) -> str:
        reply = client.chat.completions.create(model="smollm2_135m", temperature=0, max_tokens=MAX_TOKENS,
                                               messages=[{"role": "user", "content": prompt["prompt"]}])
        return reply.choices[0].message.content

    start = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        replies = list(pool.map(ask, prompts))
    return time.perf_counter() - start, replies


def _collect_run(url: str, prompts_file: Path, out: Path) -> float:
    cmd = [sys.executable, "-m", "src.collect", "--prompts", str(prompts_file), "--out", str(out),
           "--base-url", url, "--model", "smollm2_135m", "--api-key-env", "", "--concurrency", str(CONCURRENCY),
           "--max-tokens", str(MAX_TOKENS), "--keep-truncated", "--timeout", "600"]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=PROJECT_ROOT, check=True, capture_output=True, timeout=3600,
                   env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    return time.perf_counter() - start


def run(requests: int = REQUESTS, repeats: int = REPEATS) -> list[dict]:
    handle = load_handle(model_config_by_name("smollm2_135m"), "~/.cache/imitation-gap", torch.device("cpu"),
                         trained=False)
    prompts = _prompts(requests)
    folder = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    prompts_file = folder / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps(p) + "\n" for p in prompts))
    apps = {"batched": build_app(handle, "smollm2_135m", max_batch=CONCURRENCY),
            "one": build_app(handle, "smollm2_135m", max_batch=1)}
    seconds: dict[str, list[float]] = {"batched": [], "one": []}
    replies, collected = {}, {}
    # Both servers up at once (one model, used by one of them at a time) and taken in turns, so a
    # change in the machine's load falls on both; the first request of each is a warm-up, untimed.
    with ServerThread(apps["batched"]) as batched, ServerThread(apps["one"]) as one:
        urls = {"batched": batched.url, "one": one.url}
        for label in urls:
            _openai_run(urls[label], prompts[:1])
        for _ in range(repeats):
            for label, url in urls.items():
                took, replies[label] = _openai_run(url, prompts)
                seconds[label].append(took)
        for label, url in urls.items():
            collected[label] = _collect_run(url, prompts_file, folder / f"{label}.json")
    ratios = sorted(one / ours for ours, one in zip(seconds["batched"], seconds["one"], strict=True))
    ratio = ratios[len(ratios) // 2]
    same = sum(a == b for a, b in zip(replies["batched"], replies["one"], strict=True))
    same_file = (folder / "batched.json").read_bytes() == (folder / "one.json").read_bytes()
    load = os.getloadavg()[0]
    largest = apps["batched"].state.batcher.stats.largest_batch
    return [
        {"name": f"server requests/s at concurrency {CONCURRENCY}, {requests} greedy x {MAX_TOKENS} tokens via the "
                 f"openai client, median of {repeats} (same replies {same}/{requests}; largest batch {largest}; "
                 f"load {load:.1f}) vs --max-batch 1",
         "ours": requests / sorted(seconds["batched"])[repeats // 2],
         "baseline": requests / sorted(seconds["one"])[repeats // 2],
         "ratio": ratio, "unit": "requests/s", "target": ">= 3x"},
        {"name": f"collect --concurrency {CONCURRENCY} against the server, {requests} prompts (same output file: "
                 f"{'yes' if same_file else 'NO'}) vs --max-batch 1",
         "ours": collected["batched"], "baseline": collected["one"], "ratio": collected["batched"] / collected["one"],
         "unit": "s", "target": "<= 1x"},
    ]


if __name__ == "__main__":
    for row in run(int(sys.argv[1]) if len(sys.argv) > 1 else REQUESTS):
        print(json.dumps(row))
