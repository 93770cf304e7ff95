"""Pairwise judge: both orders, disagreement = tie, unparsable verdicts counted, judgments cached, and a
fake OpenAI-compatible endpoint on 127.0.0.1."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from src.benchmarks import run_benchmark
from src.benchmarks.judge import combine, parse_verdict

ITEMS = [
    {"id": "p0", "prompt": "Q0", "reference": "short"},
    {"id": "p1", "prompt": "Q1", "reference": "a much longer reference reply"},
    {"id": "p2", "prompt": "Q2", "reference": "same len"},
    {"id": "p3", "prompt": "Q3", "reference": "anything"},
]
OUTPUTS = {"Q0": "a long model reply here", "Q1": "tiny", "Q2": "also two", "Q3": ""}


class ScriptedModel:
    trained = True

    def chat_prompt(self, text):
        return f"<user>{text}</user>"

    def generate(self, prompts, max_new_tokens, **_):
        return [OUTPUTS[re.search(r"<user>(.*)</user>", p).group(1)] for p in prompts]


def answers(prompt):
    a = re.search(r"Assistant A's Answer\]\n(.*)\n\[The End of Assistant A", prompt, re.DOTALL).group(1)
    b = re.search(r"Assistant B's Answer\]\n(.*)\n\[The End of Assistant B", prompt, re.DOTALL).group(1)
    return a, b


def longer_judge(prompt):
    """Prefers the longer answer in words; a tie at equal length: order-consistent."""
    a, b = answers(prompt)
    if len(a.split()) == len(b.split()):
        return "Equal. [[C]]"
    return "[[A]]" if len(a.split()) > len(b.split()) else "Reasoning... [[B]]"


@pytest.fixture()
def endpoint():
    seen = {"requests": 0, "auth": set(), "policy": longer_judge}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            seen["requests"] += 1
            seen["auth"].add(self.headers["Authorization"])
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            reply = {"choices": [{"message": {"content": seen["policy"](body["messages"][0]["content"])}}]}
            self.send_response(200)
            self.end_headers()
            self.wfile.write(json.dumps(reply).encode())

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1", seen
    server.shutdown()


def settings(tmp_path, url):
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in ITEMS))
    return {"path": str(path), "base_url": url, "model": "fake-judge", "key_env": "TEST_JUDGE_KEY",
            "cache_dir": str(tmp_path / "judgments"), "max_retries": 0}


def test_verdicts_and_combination():
    assert parse_verdict("blah [[A]] then finally [[B]]") == "B"
    assert parse_verdict("no verdict here") is None
    assert combine("A", "B") == "win" and combine("B", "A") == "loss"
    assert combine("A", "A") == "tie"  # position bias: the two orders disagree
    assert combine("C", "C") == "tie" and combine("A", None) == "unparsable"


def test_both_orders_win_tie_loss_and_cache(tmp_path, endpoint, monkeypatch):
    url, seen = endpoint
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-test")
    result = run_benchmark("judge", settings(tmp_path, url), ScriptedModel())
    # p0 model longer -> win; p1 model shorter -> loss; p2 equal length -> tie; p3 empty reply -> unparsable
    assert [p["outcome"] for p in result.predictions] == ["win", "loss", "tie", "unparsable"]
    assert result.metrics["win_rate"] == pytest.approx(1 / 3) and result.metrics["loss_rate"] == pytest.approx(1 / 3)
    assert result.metrics["adjusted_win_rate"] == pytest.approx(0.5)
    assert result.metrics["unparsable"] == pytest.approx(0.25)
    assert result.metrics["longer_preferred"] == 1.0  # this judge is pure length bias, and it shows
    assert [p["model_words"] for p in result.predictions] == [5, 1, 2, 0]
    assert seen["requests"] == 6 and seen["auth"] == {"Bearer sk-test"}
    again = run_benchmark("judge", settings(tmp_path, url), ScriptedModel())
    assert seen["requests"] == 6 and again.settings["judged_anew"] == 0  # every judgment came from the cache
    assert [p["outcome"] for p in again.predictions] == ["win", "loss", "tie", "unparsable"]


def test_position_biased_judge_gives_ties(tmp_path, endpoint, monkeypatch):
    url, seen = endpoint
    seen["policy"] = lambda prompt: "[[A]]"
    monkeypatch.setenv("TEST_JUDGE_KEY", "k")
    result = run_benchmark("judge", settings(tmp_path, url), ScriptedModel())
    assert [p["outcome"] for p in result.predictions] == ["tie", "tie", "tie", "unparsable"]
    assert result.metrics["adjusted_win_rate"] == 0.5


def test_reply_without_verdict_is_unparsable(tmp_path, endpoint, monkeypatch):
    url, seen = endpoint
    seen["policy"] = lambda prompt: "Both answers are fine."
    monkeypatch.setenv("TEST_JUDGE_KEY", "k")
    result = run_benchmark("judge", settings(tmp_path, url), ScriptedModel())
    assert result.metrics["unparsable"] == 1.0 and result.metrics["win_rate"] == 0.0
