"""The server's batcher: what shares a batch, what waits alone, the bounded queue (429 with
Retry-After) and clients that go away; first on the batcher itself, then over HTTP with the tiny model."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch

from src.models.hf import load_handle
from src.models.sources import model_config_by_name
from src.teacher.clients import ChatResult, HttpTeacher, Sampling
from src.teacher.collect import CollectSettings, Prompt, collect
from src.teacher.serve import build_app
from src.teacher.serve_batcher import Batcher, ServerBusy
from tests.conftest import CACHE
from tests.helpers.teacher_servers import AppServer


class Recorder:
    """A generate that records the batches it is given and holds each until released."""

    def __init__(self):
        self.batches: list[list[str]] = []
        self.release = threading.Event()
        self.started = threading.Event()

    def __call__(self, rows, sampling):
        self.batches.append([row[0]["content"] for row in rows])
        self.started.set()
        assert self.release.wait(30)
        return [ChatResult(f"re: {row[0]['content']}", 1, 1, "stop") for row in rows]


def conv(text: str) -> list[list[dict]]:
    return [[{"role": "user", "content": text}]]


GREEDY = Sampling(max_tokens=4)


def test_waiting_requests_share_a_batch_by_sampling_and_seeded_samples_go_alone():
    gen = Recorder()
    batcher = Batcher(gen, max_batch=3, max_queue=10, window_s=0.0)
    try:
        busy = batcher.submit(conv("first"), GREEDY)  # generating while the others queue up
        assert gen.started.wait(10)
        futures = [batcher.submit(conv(f"g{i}"), GREEDY) for i in range(4)]
        futures.append(batcher.submit(conv("long"), Sampling(max_tokens=9)))
        futures.append(batcher.submit(conv("seeded") * 2, Sampling(max_tokens=4, temperature=1.0, seed=3), alone=True))
        futures.append(batcher.submit(conv("g4"), GREEDY))
        gen.release.set()
        results = [f.result(30) for f in [busy, *futures]]
    finally:
        gen.release.set()
        batcher.close()
    assert gen.batches == [["first"], ["g0", "g1", "g2"], ["g3", "g4"], ["long"], ["seeded", "seeded"]]
    assert [[r.text for r in rs] for rs in results[:2]] == [["re: first"], ["re: g0"]]
    assert [r.text for r in results[6]] == ["re: seeded", "re: seeded"]  # both rows come back to their request
    assert (batcher.stats.batches, batcher.stats.rows, batcher.stats.largest_batch) == (5, 9, 3)


def test_a_full_queue_is_busy_and_a_gone_client_frees_its_place():
    gen = Recorder()
    batcher = Batcher(gen, max_batch=1, max_queue=1, window_s=0.0)  # places: the next batch (1) and 1 more
    try:
        batcher.submit(conv("running"), GREEDY)
        assert gen.started.wait(10)
        first, second = batcher.submit(conv("a"), GREEDY), batcher.submit(conv("b"), GREEDY)
        with pytest.raises(ServerBusy) as busy:
            batcher.submit(conv("c"), GREEDY)
        assert busy.value.retry_after == 1.0  # no batch has ended yet: a guess of 1 s (and the least)
        assert first.cancel()  # its client went away while it waited
        third = batcher.submit(conv("d"), GREEDY)  # the freed place is taken
        gen.release.set()
        assert [r.text for r in second.result(30)] + [r.text for r in third.result(30)] == ["re: b", "re: d"]
    finally:
        gen.release.set()
        batcher.close()
    assert gen.batches == [["running"], ["b"], ["d"]] and batcher.stats.dropped_before_start == 1


def test_a_failing_generate_fails_its_batch_and_the_batcher_goes_on():
    calls = []

    def generate(rows, sampling):
        calls.append(len(rows))
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return [ChatResult("ok", 1, 1, "stop") for _ in rows]

    batcher = Batcher(generate, max_batch=2, max_queue=4, window_s=0.0)
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            batcher.submit(conv("x"), GREEDY).result(30)
        assert batcher.submit(conv("y"), GREEDY).result(30)[0].text == "ok"
    finally:
        batcher.close()


@pytest.fixture(scope="module")
def tiny_handle():
    return load_handle(model_config_by_name("tiny"), CACHE, torch.device("cpu"), trained=False)


# The same token count: no padding, so the untrained model's greedy argmax cannot move in a batch.
SAME_LENGTH = [f"Tell me about topic {i}." for i in range(1, 9)]


def ask(url: str, text: str, **extra) -> dict:
    body = {"model": "tiny", "messages": [{"role": "user", "content": text}], "max_tokens": 8, **extra}
    return httpx.post(url + "/chat/completions", json=body, timeout=120).json()


def test_concurrent_requests_are_batched_and_answer_as_one_at_a_time(tiny_handle):
    with AppServer(build_app(tiny_handle, "tiny", max_batch=1)) as single:
        alone = [ask(single.url, p)["choices"][0]["message"]["content"] for p in SAME_LENGTH]
    app = build_app(tiny_handle, "tiny", max_batch=8, window_s=0.5)
    with AppServer(app) as batched, ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda p: ask(batched.url, p)["choices"][0]["message"]["content"], SAME_LENGTH))
        # a seeded sample repeats whatever shares the server with it
        seeded = dict(temperature=1.0, seed=11)
        quiet = ask(batched.url, "Hi", **seeded)["choices"]
        noisy = list(pool.map(lambda p: ask(batched.url, p, **(seeded if p == "Hi" else {})),
                              ["Hi", *SAME_LENGTH[:5]]))[0]["choices"]
    assert together == alone
    assert app.state.batcher.stats.largest_batch > 1  # they did share batches
    assert noisy == quiet


def test_beyond_the_queue_429_with_retry_after_and_collect_retries_to_success(tiny_handle, tmp_path):
    app = build_app(tiny_handle, "tiny", max_batch=1, max_queue=1, window_s=0.0)
    with AppServer(app) as server:  # one generating, two waiting: of six at once, some are refused
        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(lambda i: httpx.post(server.url + "/chat/completions", timeout=120, json={
                "model": "tiny", "messages": [{"role": "user", "content": f"q{i}"}], "max_tokens": 16}),
                range(6)))
        refused = [r for r in statuses if r.status_code == 429]
        assert refused and all(r.status_code in (200, 429) for r in statuses)
        assert all(int(r.headers["retry-after"]) >= 1 and r.json()["error"]["type"] == "rate_limit_error"
                   for r in refused)
        teacher = HttpTeacher(server.url, "tiny", api_key_env=None, timeout=120, max_retries=30, backoff=0.05,
                              max_backoff=1.0, concurrency=4)
        prompts = [Prompt(f"p{i}", f"Tell me about topic {i}.") for i in range(8)]
        stats = collect(prompts, teacher, tmp_path / "o.json",
                        CollectSettings(sampling=Sampling(max_tokens=6), keep_truncated=True))
    assert stats.written == 8 and stats.failed == 0 and stats.retries > 0
    assert [r["id"] for r in json.loads((tmp_path / "o.json").read_text())] == [p.id for p in prompts]


def test_a_client_that_goes_away_frees_its_place(tiny_handle):
    """Over HTTP: a request queued behind a running one whose client times out is never generated."""
    gen = Recorder()
    app = build_app(tiny_handle, "tiny", max_batch=1, max_queue=4, window_s=0.0, generate=gen)
    batcher = app.state.batcher
    body = {"model": "tiny", "messages": [{"role": "user", "content": "running"}]}
    with AppServer(app) as server, ThreadPoolExecutor(2) as pool:
        running = pool.submit(httpx.post, server.url + "/chat/completions", json=body, timeout=60)
        assert gen.started.wait(30)
        with pytest.raises(httpx.ReadTimeout):  # queued behind the running one, then gone
            httpx.post(server.url + "/chat/completions", timeout=0.5,
                       json={**body, "messages": [{"role": "user", "content": "gone"}]})
        deadline = time.monotonic() + 10
        while batcher.queued() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert batcher.queued() == 0 and batcher.stats.dropped_before_start == 1
        gen.release.set()
        assert running.result(60).json()["choices"][0]["message"]["content"] == "re: running"
        assert ask(server.url, "after")["choices"][0]["message"]["content"] == "re: after"  # the server goes on
    assert gen.batches == [["running"], ["after"]]  # the gone request was never generated
