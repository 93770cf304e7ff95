"""src.serve (FastAPI + uvicorn on 127.0.0.1) with the tiny model, and the real client against it."""

from __future__ import annotations

import json

import httpx
import pytest
import torch
from teacher_servers import AppServer

from src.collect import CollectSettings, Prompt, collect
from src.models import load_handle, model_config_by_name
from src.serve import build_app
from src.teachers import HttpTeacher, LocalTeacher, Sampling
from tests.conftest import CACHE

TOKEN = "test-token-123"


@pytest.fixture(scope="module")
def tiny_handle():
    return load_handle(model_config_by_name("tiny"), CACHE, torch.device("cpu"), trained=False)


@pytest.fixture(scope="module")
def server(tiny_handle):
    with AppServer(build_app(tiny_handle, "tiny", api_key=TOKEN)) as running:
        yield running


def auth() -> dict:
    return {"Authorization": f"Bearer {TOKEN}"}


def test_models_and_auth(server):
    with httpx.Client(timeout=30) as client:
        assert client.get(server.url + "/models").status_code == 401
        assert client.get(server.url + "/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        listed = client.get(server.url + "/models", headers=auth()).json()
    assert [m["id"] for m in listed["data"]] == ["tiny"] and listed["object"] == "list"


def test_chat_completion_shape_and_errors(server):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}
    with httpx.Client(timeout=60) as client:
        reply = client.post(server.url + "/chat/completions", json=body, headers=auth()).json()
        again = client.post(server.url + "/chat/completions", json=body, headers=auth()).json()
        bad = client.post(server.url + "/chat/completions", json={"messages": [{"role": "x"}]}, headers=auth())
        stream = client.post(server.url + "/chat/completions", json={**body, "stream": True}, headers=auth())
    choice = reply["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "length"  # 5 tokens, untrained
    assert choice["message"]["content"] == again["choices"][0]["message"]["content"]  # greedy at temperature 0
    assert reply["usage"]["total_tokens"] == reply["usage"]["prompt_tokens"] + reply["usage"]["completion_tokens"]
    assert bad.status_code == 400 and "messages" in bad.json()["error"]["message"]
    events = [line[len("data: "):] for line in stream.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["content"] == choice["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_collect_end_to_end_against_the_served_model(server, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_TEACHER_KEY", TOKEN)
    teacher = HttpTeacher(server.url, "tiny", api_key_env="TEST_TEACHER_KEY", timeout=60, max_retries=1,
                          backoff=0.01, concurrency=2)
    prompts = [Prompt(f"p{i}", f"Tell me about topic {i}.") for i in range(5)] + [Prompt("dup", "tell me about TOPIC 0.")]
    out = tmp_path / "served.json"
    kept = collect(prompts, teacher, out, CollectSettings(sampling=Sampling(max_tokens=6), keep_truncated=True,
                                                          cost_per_1k_completion=10.0))
    assert (kept.prompts_read, kept.duplicates_dropped, kept.asked, kept.written, kept.retries) == (6, 1, 5, 5, 0)
    assert kept.completion_tokens > 0 and kept.cost == pytest.approx(kept.completion_tokens / 1000 * 10.0)
    records = json.loads(out.read_text())
    assert [r["id"] for r in records] == ["p0", "p1", "p2", "p3", "p4"]
    assert all(r["conversations"][1]["value"] for r in records)
    # The untrained tiny model never ends its turn in 6 tokens: without --keep-truncated all are dropped.
    dropped = collect(prompts, teacher, tmp_path / "strict.json", CollectSettings(sampling=Sampling(max_tokens=6)))
    assert (dropped.asked, dropped.truncated, dropped.written) == (5, 5, 0)


def test_local_teacher_matches_the_server(server, tmp_path):
    """The same model in-process (batched) answers what the server answers one at a time."""
    prompts = [Prompt("a", "Tell me about topic 1."), Prompt("b", "Tell me about topic 2.")]
    settings = CollectSettings(sampling=Sampling(max_tokens=6), keep_truncated=True)
    local = collect(prompts, LocalTeacher("tiny", CACHE, batch_size=2, device="cpu"), tmp_path / "l.json", settings)
    with httpx.Client(timeout=60) as client:
        served = [client.post(server.url + "/chat/completions", headers=auth(), json={
            "model": "tiny", "messages": [{"role": "user", "content": p.prompt}], "max_tokens": 6}).json()
            for p in prompts]
    assert local.written == 2
    records = json.loads((tmp_path / "l.json").read_text())
    assert [r["conversations"][1]["value"] for r in records] == [
        s["choices"][0]["message"]["content"] for s in served]


@pytest.mark.slow
def test_smollm2_teacher_served_follows_its_style(tmp_path):
    """The demo teacher behind the server: the style system prompt and demonstration come through."""
    from src.demo_data import DEMO_ANSWER, DEMO_QUESTION, TEACHER_SYSTEM

    handle = load_handle(model_config_by_name("smollm2_135m"), CACHE, torch.device("cpu"), trained=False)
    with AppServer(build_app(handle, "smollm2_135m")) as running:
        teacher = HttpTeacher(running.url, "smollm2_135m", api_key_env=None, timeout=300, concurrency=1)
        settings = CollectSettings(sampling=Sampling(max_tokens=160), system=TEACHER_SYSTEM,
                                   demonstration=((DEMO_QUESTION, DEMO_ANSWER),))
        stats = collect([Prompt("a", "How can I sleep better?"), Prompt("b", "How do I learn to cook?")],
                        teacher, tmp_path / "s.json", settings)
    replies = [r["conversations"][1]["value"] for r in json.loads((tmp_path / "s.json").read_text())]
    assert stats.written == 2 and all("1." in r for r in replies)
