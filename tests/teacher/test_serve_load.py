"""`python -m src.serve` with SmolLM2 under load: 200 requests at concurrency 16 through the official
`openai` client, on 127.0.0.1, bounded in count and time. Every request ends 200 (a 429 is retried
by the client after its Retry-After), every answer belongs to its prompt, and the server's RSS stays
under a stated bound."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest
import torch

from src import PROJECT_ROOT
from tests.conftest import CACHE

REQUESTS = 200
CONCURRENCY = 16
DISTINCT = 50  # each prompt asked 4 times, in different batches
MAX_TOKENS = 6
RSS_BOUND = 2 * 1024 ** 3  # measured peak 1,060 MiB: 0.54 GB of float32 weights, torch, batches
STARTUP_S = 300
TOTAL_S = 1800  # the whole load stops by itself after this


def prompt(k: int) -> str:
    return "Name the fruit: " + " ".join(["apple"] * (k + 1))  # prompt k has k more tokens than prompt 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_200_requests_at_concurrency_16_all_answered_by_their_prompt_and_rss_bounded():
    import openai

    from src.models.hf import load_handle
    from src.models.sources import model_config_by_name
    from src.teacher.clients import count_prompt_tokens

    handle = load_handle(model_config_by_name("smollm2_135m"), CACHE, torch.device("cpu"), trained=False)
    expected_tokens = {k: count_prompt_tokens(handle, [{"role": "user", "content": prompt(k)}])
                       for k in range(DISTINCT)}
    del handle
    port = free_port()
    cmd = [sys.executable, "-m", "src.serve", "--model", "smollm2_135m", "--port", str(port),
           "--cache-dir", str(CACHE), "--max-batch", "8", "--max-queue", "1"]
    server = subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    url = f"http://127.0.0.1:{port}/v1"
    peak, samples, stop = [0], [], threading.Event()

    def watch_rss():
        process = psutil.Process(server.pid)
        while not stop.wait(0.2):
            try:
                rss = process.memory_info().rss
            except psutil.NoSuchProcess:
                return
            peak[0] = max(peak[0], rss)
            samples.append(rss)

    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the server did not start"
            try:
                if httpx.get(url + "/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        watcher = threading.Thread(target=watch_rss, daemon=True)
        watcher.start()
        idle_rss = psutil.Process(server.pid).memory_info().rss
        statuses: Counter[int] = Counter()
        lock = threading.Lock()

        def record(response: httpx.Response) -> None:
            with lock:
                statuses[response.status_code] += 1

        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=40, timeout=600,
                               http_client=httpx.Client(event_hooks={"response": [record]}))
        end = time.monotonic() + TOTAL_S

        def ask(i: int):
            assert time.monotonic() < end, "the load ran past its time bound"
            k = i % DISTINCT
            reply = client.chat.completions.create(model="smollm2_135m", temperature=0, max_tokens=MAX_TOKENS,
                                                   messages=[{"role": "user", "content": prompt(k)}])
            return k, reply

        start = time.perf_counter()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            answers = list(pool.map(ask, range(REQUESTS)))
        seconds = time.perf_counter() - start
        stop.set()
        watcher.join(5)
        end_rss = psutil.Process(server.pid).memory_info().rss
    finally:
        stop.set()
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    print(f"\n{REQUESTS} requests in {seconds:.1f} s ({REQUESTS / seconds:.2f}/s); statuses {dict(statuses)}; "
          f"RSS idle {idle_rss / 2 ** 20:.0f} MiB, peak {peak[0] / 2 ** 20:.0f} MiB, end {end_rss / 2 ** 20:.0f} MiB; "
          f"load {os.getloadavg()[0]:.1f}")
    assert len(answers) == REQUESTS
    # 8 generating, 8 + 1 places to wait: 16 clients fit, a 429 only when a batch was taken short
    assert set(statuses) <= {200, 429} and statuses[200] == REQUESTS
    by_prompt: dict[int, set[str]] = {}
    for k, reply in answers:
        assert reply.usage.prompt_tokens == expected_tokens[k]  # the answer to this prompt, not a neighbour's
        assert reply.choices[0].message.content
        by_prompt.setdefault(k, set()).add(reply.choices[0].message.content)
    assert all(len(replies) == 1 for replies in by_prompt.values())  # greedy: the same reply in any batch
    assert peak[0] < RSS_BOUND
