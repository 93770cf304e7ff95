"""What src.serve accepts and refuses, as OpenAI does, over real HTTP with the tiny model behind it:
400s naming the field, content parts, n, stop, seed, the context limit, and a fuzz test of bodies."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from src.models.hf import load_handle
from src.models.sources import model_config_by_name
from src.teacher.serve import build_app
from tests.conftest import CACHE
from tests.helpers.teacher_servers import AppServer

HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def server():
    handle = load_handle(model_config_by_name("tiny"), CACHE, torch.device("cpu"), trained=False)
    # replies of at most 4 tokens keep the fuzz test fast; the cap is the server's own setting
    with AppServer(build_app(handle, "tiny", max_tokens_cap=4, max_batch=4)) as running:
        yield running


def post(server, body, timeout: float = 60) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.url + "/chat/completions", content=raw, timeout=timeout,
                      headers={"content-type": "application/json"})


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "tiny", "messages": HI, "max_tokens": -5}, "max_tokens"),
    ({"model": "tiny", "messages": HI, "max_tokens": 0}, "max_tokens"),
    ({"model": "tiny", "messages": HI, "max_tokens": "5"}, "max_tokens"),
    ({"model": "tiny", "messages": HI, "max_tokens": 2.5}, "max_tokens"),
    ({"model": "tiny", "messages": HI, "temperature": -1}, "temperature"),
    ({"model": "tiny", "messages": HI, "temperature": 2.5}, "temperature"),
    ({"model": "tiny", "messages": HI, "temperature": True}, "temperature"),
    ({"model": "tiny", "messages": HI, "top_p": 1.5}, "top_p"),
    ({"model": "tiny", "messages": HI, "n": 0}, "n"),
    ({"model": "tiny", "messages": HI, "n": 17}, "n"),
    ({"model": "tiny", "messages": HI, "seed": "7"}, "seed"),
    ({"model": "tiny", "messages": HI, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"model": "tiny", "messages": HI, "stop": ""}, "stop"),
    ({"model": "tiny", "messages": HI, "stream": "yes"}, "stream"),
    ({"model": "tiny", "messages": HI, "logprobs": True}, "logprobs"),
    ({"model": "tiny", "messages": HI, "frequency_penalty": 0.5}, "frequency_penalty"),
    ({"model": "tiny", "messages": HI, "tools": [{"type": "function"}]}, "tools"),
    ({"model": "tiny", "messages": HI, "stream_options": {"include_usage": True}}, "stream_options"),
    ({"model": "tiny", "messages": HI, "wat": 1}, "wat"),
    ({"model": "tiny", "messages": [{"role": "robot", "content": "Hi"}]}, "messages[0].role"),
    ({"model": "tiny", "messages": [{"role": "tool", "content": "Hi"}]}, "messages[0].role"),
    ({"model": "tiny", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"model": "tiny", "messages": [{"role": "user"}]}, "messages[0].content"),
    ({"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     "messages[0].content[0].type"),
    ({"model": "tiny", "messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0].text"),
    ({"model": "tiny", "messages": []}, "messages"),
    ({"messages": HI}, "model"),
])
def test_bad_requests_are_400_naming_the_field(server, body, param):
    response = post(server, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert param.split("[")[0].split(".")[-1] in error["message"]


@pytest.mark.parametrize("raw", [b"{", b"[1, 2]", b"null", b'{"model": "tiny", "temperature": NaN}', b"\xff\xfe"])
def test_bodies_that_are_not_a_json_object_are_400(server, raw):
    response = post(server, raw)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"


def test_a_prompt_over_the_context_is_400_and_max_tokens_is_capped(server):
    long = [{"role": "user", "content": "word " * 2100}]  # the tiny model's context is 2048 tokens
    refused = post(server, {"model": "tiny", "messages": long})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "context_length_exceeded"
    assert "2048" in refused.json()["error"]["message"]
    capped = post(server, {"model": "tiny", "messages": HI, "max_tokens": 10 ** 9}).json()
    assert capped["usage"]["completion_tokens"] <= 4 and capped["choices"][0]["finish_reason"] == "length"


def test_text_parts_read_as_the_same_text(server):
    parts = [{"role": "user", "content": [{"type": "text", "text": "Tell me"}, {"type": "text", "text": "more."}]}]
    plain = [{"role": "user", "content": "Tell me\nmore."}]
    first, second = (post(server, {"model": "tiny", "messages": m}).json() for m in (parts, plain))
    assert first["choices"][0]["message"] == second["choices"][0]["message"]
    assert first["usage"] == second["usage"]


def test_n_choices_seed_and_stop(server):
    body = {"model": "tiny", "messages": HI, "temperature": 1.0, "seed": 7, "n": 3}
    sampled = post(server, body).json()
    assert [c["index"] for c in sampled["choices"]] == [0, 1, 2]
    assert post(server, body).json()["choices"] == sampled["choices"]  # the seed repeats all three
    texts = [c["message"]["content"] for c in sampled["choices"]]
    assert len(set(texts)) > 1  # three draws, not one copied
    greedy = post(server, {"model": "tiny", "messages": HI, "n": 2}).json()["choices"]
    assert len(greedy) == 2 and greedy[0]["message"] == greedy[1]["message"]
    full = greedy[0]["message"]["content"]
    stop = full[len(full) // 2:][:2]
    stopped = post(server, {"model": "tiny", "messages": HI, "stop": stop}).json()["choices"][0]
    assert stopped["finish_reason"] == "stop" and full.startswith(stopped["message"]["content"])
    assert stop not in stopped["message"]["content"]


def test_the_openai_client_sees_openai_errors_and_replies(server):
    client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="tiny", messages=HI, max_tokens=-5)
    assert refused.value.param == "max_tokens" and refused.value.status_code == 400
    reply = client.chat.completions.create(model="tiny", messages=[
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]}], max_completion_tokens=3)
    assert reply.choices[0].message.content and reply.usage.completion_tokens <= 3
    chunks = list(client.chat.completions.create(model="tiny", messages=HI, stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == post(
        server, {"model": "tiny", "messages": HI}).json()["choices"][0]["message"]["content"]
    assert chunks[-1].usage.total_tokens > 0 and chunks[-1].choices == []


# Valid bodies, and valid bodies with some fields (or the whole body) of the wrong kind or range.
junk = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 20, 10 ** 20), st.floats(allow_nan=False),
                 st.text(max_size=8), st.lists(st.integers(), max_size=3),
                 st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
text_part = st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=20)})
valid_message = st.fixed_dictionaries({
    "role": st.sampled_from(["system", "user", "assistant", "developer"]),
    "content": st.one_of(st.text(max_size=40), st.lists(text_part, min_size=1, max_size=3))})
valid = {
    "max_tokens": st.integers(1, 10 ** 12), "temperature": st.floats(0, 2), "top_p": st.floats(0, 1),
    "n": st.integers(1, 3), "stop": st.one_of(st.text(min_size=1, max_size=3),
                                              st.lists(st.text(min_size=1, max_size=3), max_size=4)),
    "seed": st.integers(-2 ** 63, 2 ** 63 - 1), "stream": st.booleans(), "user": st.text(max_size=5),
}
valid_bodies = st.fixed_dictionaries({"model": st.just("tiny"),
                                      "messages": st.lists(valid_message, min_size=1, max_size=3)}, optional=valid)
wrong = {
    "model": junk, "messages": st.one_of(junk, st.lists(st.one_of(junk, st.fixed_dictionaries({
        "role": st.sampled_from(["tool", "function", "x", ""]), "content": st.text(max_size=5)}), st.fixed_dictionaries({
        "role": st.just("user"), "content": st.lists(st.one_of(junk, st.fixed_dictionaries({
            "type": st.sampled_from(["image_url", "input_audio", "x"]), "text": st.text(max_size=5)})),
            min_size=1, max_size=2)})), max_size=3)),
    "max_tokens": st.one_of(st.integers(-3, 0), junk), "temperature": st.one_of(st.floats(-1, 3), junk),
    "top_p": st.one_of(st.floats(-0.5, 1.5), junk), "n": st.one_of(st.integers(-1, 20), junk),
    "stop": st.one_of(st.just(""), st.lists(st.text(max_size=3), min_size=5, max_size=6), junk),
    "seed": st.one_of(st.integers(2 ** 63, 2 ** 65), junk), "stream": junk,
    "stream_options": st.one_of(st.fixed_dictionaries({"include_usage": st.booleans()}), junk),
    "logprobs": st.one_of(st.booleans(), junk), "unknown_field": junk,
}
bodies = st.one_of(valid_bodies, st.builds(lambda body, bad: {**body, **bad}, valid_bodies,
                                           st.fixed_dictionaries({}, optional=wrong)), junk)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(body=bodies)
def test_fuzzed_bodies_are_answered_never_500_never_hung(server, body):
    response = post(server, body, timeout=30)  # a hung request raises httpx.ReadTimeout here
    event(f"HTTP {response.status_code}")
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"]
        return
    n = body.get("n") or 1
    assert isinstance(body, dict)
    if body.get("stream"):
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        indices = {c["index"] for e in events[:-1] for c in json.loads(e)["choices"]}
        assert indices == set(range(n))
    else:
        reply = response.json()
        assert [c["index"] for c in reply["choices"]] == list(range(n))
        assert reply["usage"]["completion_tokens"] <= 4 * n
