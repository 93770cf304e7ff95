"""src.serve (FastAPI + uvicorn on 127.0.0.1) with the tiny model, and the real client against it."""

from __future__ import annotations

import json

import httpx
import pytest
import torch

from src.models.hf import load_handle
from src.models.sources import model_config_by_name
from src.teacher.clients import HttpTeacher, LocalTeacher, Sampling
from src.teacher.collect import CollectSettings, Prompt, collect
from src.teacher.serve import build_app
from tests.conftest import CACHE
from tests.helpers.teacher_servers import AppServer

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
        bad = client.post(server.url + "/chat/completions", json={"model": "tiny", "messages": [{"role": "x", "content": "Hi"}]}, headers=auth())
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


def test_a_seeded_sampled_collection_repeats_through_http(server, tmp_path, monkeypatch):
    """HttpTeacher sends the seed: the same seed asks for the same draws, another seed for others."""
    monkeypatch.setenv("TEST_TEACHER_KEY", TOKEN)
    teacher = HttpTeacher(server.url, "tiny", api_key_env="TEST_TEACHER_KEY", timeout=60, max_retries=1,
                          concurrency=2)
    prompts = [Prompt("a", "Tell me about topic 1."), Prompt("b", "Tell me about topic 2.")]

    def replies(seed: int, name: str) -> list[str]:
        settings = CollectSettings(sampling=Sampling(max_tokens=8, temperature=1.0, seed=seed), keep_truncated=True)
        collect(prompts, teacher, tmp_path / name, settings)
        return [r["conversations"][1]["value"] for r in json.loads((tmp_path / name).read_text())]

    first = replies(5, "first.json")
    assert len(first) == 2 and replies(5, "again.json") == first
    assert replies(6, "other.json") != first


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
    from src.teacher.demo_data import DEMO_ANSWER, DEMO_QUESTION, TEACHER_SYSTEM

    handle = load_handle(model_config_by_name("smollm2_135m"), CACHE, torch.device("cpu"), trained=False)
    with AppServer(build_app(handle, "smollm2_135m")) as running:
        teacher = HttpTeacher(running.url, "smollm2_135m", api_key_env=None, timeout=300, concurrency=1)
        settings = CollectSettings(sampling=Sampling(max_tokens=160), system=TEACHER_SYSTEM,
                                   demonstration=((DEMO_QUESTION, DEMO_ANSWER),))
        stats = collect([Prompt("a", "How can I sleep better?"), Prompt("b", "How do I learn to cook?")],
                        teacher, tmp_path / "s.json", settings)
    replies = [r["conversations"][1]["value"] for r in json.loads((tmp_path / "s.json").read_text())]
    assert stats.written == 2 and all("1." in r for r in replies)


def test_local_generate_samples_repeatably_and_fills_finish_reason(tiny_handle):
    """Both paths go through ModelHandle.generate: a seed repeats its samples, and a reply is "length"
    when max_tokens cut it off, "stop" (cut before the stop string) when a stop string ended it."""
    from src.teacher.clients import local_generate

    convs = [[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "Tell me about topic 2."}]]
    greedy = local_generate(tiny_handle, convs, Sampling(max_tokens=8))
    sampled = local_generate(tiny_handle, convs, Sampling(max_tokens=8, temperature=1.0, seed=7))
    assert local_generate(tiny_handle, convs, Sampling(max_tokens=8, temperature=1.0, seed=7)) == sampled
    assert local_generate(tiny_handle, convs, Sampling(max_tokens=8, temperature=1.0, seed=8)) != sampled
    assert [r.text for r in sampled] != [r.text for r in greedy]
    for results in (greedy, sampled):  # the untrained model never ends its turn in 8 tokens
        assert [r.finish_reason for r in results] == ["length", "length"]
        assert all(r.text and r.prompt_tokens > 0 and r.completion_tokens > 0 for r in results)
    for temperature in (0.0, 1.0):  # one prompt alone (padding in a batch moves an untrained model's argmax)
        full = local_generate(tiny_handle, convs[:1], Sampling(max_tokens=8, temperature=temperature, seed=7))[0]
        stop = full.text.split()[-1][-2:]  # late in the reply: the reply before it is not empty
        stopped = local_generate(tiny_handle, convs[:1], Sampling(max_tokens=8, temperature=temperature, seed=7,
                                                                  stop=(stop,)))[0]
        assert stopped.finish_reason == "stop" and stop not in stopped.text
        assert full.text.startswith(stopped.text) and len(stopped.text) < len(full.text)


def test_local_model_names_may_be_plug_in_sources(tmp_path):
    """load_local_handle registers the plug-ins (the toy world's model source) before it resolves a
    conf/model name; a fresh interpreter, as `python -m src.collect --local toy_...` starts one."""
    import subprocess
    import sys
    import textwrap

    from src import PROJECT_ROOT

    (tmp_path / "conf" / "model").mkdir(parents=True)
    toy = (PROJECT_ROOT / "conf" / "model" / "toy_s.yaml").read_text().replace("${seed}", "0")
    (tmp_path / "conf" / "model" / "toy_plugin.yaml").write_text(toy)
    script = textwrap.dedent(f"""
        import sys
        import src.models.hf, src.models.sources
        from src.teacher.clients import load_local_handle
        assert "src.plugins" not in sys.modules
        src.models.sources.PROJECT_ROOT = __import__("pathlib").Path({str(tmp_path)!r})
        src.models.hf.load_handle = lambda cfg, cache_dir, device, trained: cfg  # no pretraining here
        print(load_local_handle("toy_plugin", "unused", "cpu").toy is not None)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr[-2000:]
