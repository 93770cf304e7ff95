"""src.collect against real HTTP servers on 127.0.0.1: faults, retries, malformed replies, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from src import PROJECT_ROOT
from src.teacher.clients import HttpTeacher, Sampling
from src.teacher.collect import (
    CollectError,
    CollectSettings,
    Prompt,
    collect,
    load_prompts,
    partial_path,
    stats_path,
)
from tests.helpers.teacher_servers import FaultServer


def fast_teacher(url: str, model: str = "fault", **kwargs) -> HttpTeacher:
    settings = dict(api_key_env=None, timeout=1.0, max_retries=3, backoff=0.01, max_backoff=0.05, concurrency=3)
    return HttpTeacher(url, model, **{**settings, **kwargs})


FAULTY = [
    Prompt("n0", "normal zero"), Prompt("n1", "normal one"), Prompt("n2", "normal two"),
    Prompt("n0-again", "  Normal   ZERO "),  # the same prompt as n0 once case and spacing are ignored
    Prompt("f500", "recovers [500x2]"), Prompt("f429", "rate limited [429x1]"),
    Prompt("ftimeout", "slow once [timeoutx1]"), Prompt("fspent", "always down [500x9]"),
    Prompt("f400", "rejected [400]"), Prompt("m1", "garbage [malformed]"), Prompt("m2", "no choices [nochoices]"),
    Prompt("m3", "empty content [empty]"),
]


def test_faults_are_retried_or_counted_exactly(tmp_path):
    out = tmp_path / "imitation.json"
    settings = CollectSettings(sampling=Sampling(max_tokens=16), cost_per_1k_prompt=1.0, cost_per_1k_completion=2.0)
    with FaultServer() as server:
        stats = collect(FAULTY, fast_teacher(server.url), out, settings)
        requests = dict(server.requests)
    assert (stats.prompts_read, stats.duplicates_dropped, stats.asked) == (12, 1, 11)
    # kept: 3 normal + 500x2, 429x1 and timeoutx1 after their retries
    assert (stats.kept, stats.written, stats.malformed, stats.failed, stats.truncated) == (6, 6, 3, 2, 0)
    assert stats.retries == 2 + 1 + 1 + 3  # the spent one retried max_retries times
    assert requests == {
        "normal zero": 1, "normal one": 1, "normal two": 1, "recovers [500x2]": 3, "rate limited [429x1]": 2,
        "slow once [timeoutx1]": 2, "always down [500x9]": 4, "rejected [400]": 1, "garbage [malformed]": 1,
        "no choices [nochoices]": 1, "empty content [empty]": 1}
    assert (stats.prompt_tokens, stats.completion_tokens, stats.cost) == (60, 30, pytest.approx(0.12))
    records = json.loads(out.read_text())
    assert [r["id"] for r in records] == ["n0", "n1", "n2", "f500", "f429", "ftimeout"]  # prompt order
    assert records[3]["conversations"] == [{"from": "human", "value": "recovers [500x2]"},
                                           {"from": "gpt", "value": "echo: recovers [500x2]"}]
    written = json.loads(stats_path(out).read_text())
    assert written["stats"]["malformed"] == 3 and written["settings"]["cost_per_1k_prompt"] == 1.0

    # A rerun asks again only what is missing (the failures), and duplicates nothing.
    with FaultServer() as server:
        again = collect(FAULTY, fast_teacher(server.url), out, settings)
        assert sorted(server.requests) == ["always down [500x9]", "empty content [empty]", "garbage [malformed]",
                                           "no choices [nochoices]", "rejected [400]"]
    assert (again.resumed, again.asked, again.kept, again.written) == (6, 5, 0, 6)
    assert len(partial_path(out).read_text().splitlines()) == 6


@pytest.mark.parametrize(("sampling", "sent"), [
    (Sampling(max_tokens=8), {"temperature": 0.0}),  # greedy: no seed, no top_p
    (Sampling(max_tokens=8, temperature=0.7, seed=3), {"temperature": 0.7, "seed": 3}),
    (Sampling(max_tokens=8, temperature=0.7, seed=None, top_p=0.9), {"temperature": 0.7, "top_p": 0.9}),
])
def test_a_sampled_request_carries_its_seed_and_top_p(tmp_path, sampling, sent):
    with FaultServer() as server:
        collect(FAULTY[:2], fast_teacher(server.url), tmp_path / "out.json", CollectSettings(sampling=sampling))
        bodies = list(server.bodies)
    assert len(bodies) == 2
    for body in bodies:
        assert {k: v for k, v in body.items() if k not in ("model", "messages")} == {"max_tokens": 8, **sent}


def test_output_loads_as_a_sharegpt_data_source(tmp_path):
    from src.config import DataSourceConfig
    from src.data.sources import load_source

    out = tmp_path / "set.jsonl"
    with FaultServer() as server:
        collect([Prompt(f"p{i}", f"question {i}") for i in range(4)], fast_teacher(server.url), out, CollectSettings())
    conversations, report = load_source(DataSourceConfig(name="collected", path=str(out), strict=True))
    assert report.kept == 4 and conversations[2].messages[1].content == "echo: question 2"


def test_system_prompt_and_demonstration_reach_the_teacher_not_the_data(tmp_path):
    seen = []

    def responder(prompt):
        return "ok"

    out = tmp_path / "x.json"
    with FaultServer(responder=responder) as server:
        teacher = fast_teacher(server.url)
        settings = CollectSettings(system="Be brief.", demonstration=(("Hi?", "Hello!"),))
        original = teacher.complete

        def spy(client, request, sampling):
            seen.append(request.messages)
            return original(client, request, sampling)

        teacher.complete = spy
        collect([Prompt("a", "What?")], teacher, out, settings)
    assert [m["role"] for m in seen[0]] == ["system", "user", "assistant", "user"]
    assert json.loads(out.read_text())[0]["conversations"][0] == {"from": "human", "value": "What?"}


def test_prompt_files(tmp_path):
    koala = tmp_path / "koala.jsonl"
    koala.write_text('{"id": "k1", "prompt": "Hi"}\n\n{"id": "k2", "prompt": "Bye"}\n')
    assert load_prompts(koala) == [Prompt("k1", "Hi"), Prompt("k2", "Bye")]
    demo = load_prompts(PROJECT_ROOT / "data" / "demo" / "imitation.json")  # ShareGPT: first user turns
    assert demo[0] == Prompt("demo_0", "How can I sleep better?")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "k1", "prompt": "Hi"}\n{"id": 2, "text": "no prompt"}\n')
    with pytest.raises(CollectError, match=r"bad.jsonl:2: need"):
        load_prompts(bad)


def _partial_lines(path: Path) -> int:
    return len(path.read_bytes().split(b"\n")) - 1 if path.exists() else 0


def test_resume_after_kill(tmp_path):
    n = 40
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"question {i}"}) + "\n" for i in range(n)))
    out = tmp_path / "out.json"
    partial = partial_path(out)
    with FaultServer(delay=0.1) as server:
        cmd = [sys.executable, "-m", "src.collect", "--prompts", str(prompts), "--out", str(out),
               "--base-url", server.url, "--model", "fault", "--api-key-env", "", "--concurrency", "1",
               "--max-tokens", "16"]
        proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
        try:
            deadline = time.monotonic() + 120
            while _partial_lines(partial) < 5 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
        assert not out.exists()  # killed before the final write
        done_before = _partial_lines(partial)
        assert 5 <= done_before < n
        with open(partial, "ab") as handle:  # what a kill in the middle of a write leaves behind
            handle.write(b'{"id": "p39", "conversations": [{"fr')
        stats = collect(load_prompts(prompts), fast_teacher(server.url, concurrency=2), out, CollectSettings())
        asked_again = [p for p, count in server.requests.items() if count > 1]
    assert (stats.torn_lines_dropped, stats.resumed, stats.asked) == (1, done_before, n - done_before)
    assert stats.written == n and stats.kept == n - done_before
    ids = [r["id"] for r in json.loads(out.read_text())]
    assert ids == [f"p{i}" for i in range(n)]
    partial_ids = [json.loads(line)["id"] for line in partial.read_text().splitlines()]
    assert sorted(partial_ids) == sorted(ids)  # every prompt once: no duplicates, none lost
    assert len(asked_again) <= 1  # only a reply in flight at the kill can have been asked twice


def test_a_corrupt_partial_file_is_an_error_naming_its_line(tmp_path):
    out = tmp_path / "o.json"
    partial_path(out).write_text('{"id": "a", "conversations": []}\nnot json\n{"id": "b", "conversations": []}\n')
    with pytest.raises(CollectError, match=r"o.json.partial.jsonl:2: corrupt partial output"):
        collect([Prompt("a", "x")], fast_teacher("http://127.0.0.1:9/v1"), out, CollectSettings())


def test_collect_against_vllm_shaped_replies(tmp_path):
    """What `vllm serve` answers (extra fields, its own error object, stop_reason as a token id)
    is read as any OpenAI endpoint's: kept, truncated or failed, never a crash or a retry loop."""
    from tests.helpers.teacher_servers import VllmStandIn

    prompts = [Prompt("a", "first"), Prompt("b", "too long [long]"), Prompt("c", "cut off [cut]"), Prompt("d", "last")]
    out = tmp_path / "v.json"
    with VllmStandIn() as server:
        stats = collect(prompts, fast_teacher(server.url, model="Qwen/Qwen2.5-7B-Instruct"), out,
                        CollectSettings(sampling=Sampling(max_tokens=16)))
        bodies = server.bodies
    assert (stats.asked, stats.kept, stats.failed, stats.truncated, stats.retries) == (4, 2, 1, 1, 0)
    assert (stats.prompt_tokens, stats.completion_tokens) == (36, 3 + 16 + 3)  # the 400 costs nothing
    assert "maximum context length" in stats.first_errors.get("failed", "")
    assert [r["conversations"][1]["value"] for r in json.loads(out.read_text())] == ["vllm says: first",
                                                                                   "vllm says: last"]
    assert {b["model"] for b in bodies} == {"Qwen/Qwen2.5-7B-Instruct"} and len(bodies) == 4
