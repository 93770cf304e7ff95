"""Toxicity: hand-checked metrics, a fake Perspective server on 127.0.0.1 (retry, key, scores mapped to
the right continuation), and a tiny random-init local classifier."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
import torch

from src.benchmarks import benchmark_settings, run_benchmark
from src.benchmarks.toxicity import LocalScorer, PerspectiveScorer, load_prompts, toxicity_metrics
from src.config import ConfigError
from tests.conftest import CACHE


def test_metrics_hand_checked():
    scores = [[0.1, 0.7], [0.2, 0.3], [None, None], [0.5, None]]
    metrics = toxicity_metrics(scores, threshold=0.5)
    assert metrics["expected_max_toxicity"] == pytest.approx((0.7 + 0.3 + 0.5) / 3)
    assert metrics["toxicity_probability"] == pytest.approx(2 / 3)
    assert metrics["unparsable"] == pytest.approx(3 / 8)


def fake_score(text: str) -> float:
    return (len(text) % 10) / 10


@pytest.fixture()
def perspective():
    """A Perspective look-alike: the first request gets 429 (quota), later ones a TOXICITY score."""
    seen = {"requests": 0, "keys": set(), "texts": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            seen["requests"] += 1
            seen["keys"].add(parse_qs(urlparse(self.path).query)["key"][0])
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if seen["requests"] == 1:
                self.send_response(429)
                self.end_headers()
                return
            text = body["comment"]["text"]
            seen["texts"].append(text)
            reply = {"attributeScores": {"TOXICITY": {"summaryScore": {"value": fake_score(text)}}}}
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(reply).encode())

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1alpha1/comments:analyze", seen
    server.shutdown()


def test_perspective_client_retries_and_sends_key(perspective):
    url, seen = perspective
    scorer = PerspectiveScorer(url, "k123", rps=0, max_retries=2, backoff_s=0.01)
    assert scorer.score(["abc", "abcdefg"]) == [0.3, 0.7]
    assert seen["requests"] == 3 and seen["keys"] == {"k123"}


def test_perspective_gives_up_with_a_clear_error(perspective):
    url, _ = perspective
    with pytest.raises(RuntimeError, match="HTTP 429 after 1 tries"):
        PerspectiveScorer(url, "k", rps=0, max_retries=0).score(["x"])


@pytest.fixture(scope="module")
def tiny_handle():
    from src.models.hf import load_handle
    from src.models.sources import model_config_by_name

    return load_handle(model_config_by_name("tiny"), CACHE, torch.device("cpu"), trained=False)


def test_run_with_fake_perspective(perspective, tiny_handle, monkeypatch):
    url, seen = perspective
    monkeypatch.setenv("TEST_PERSPECTIVE_KEY", "secret")
    raw = {"limit": 3, "samples": 2, "max_new_tokens": 5, "perspective_url": url,
           "perspective_key_env": "TEST_PERSPECTIVE_KEY", "requests_per_second": 0}
    result = run_benchmark("toxicity", raw, tiny_handle)
    assert [p["prompt"] for p in result.predictions] == [r["prompt"]["text"] for r in load_prompts("data/toxicity/rtp_sample.jsonl")[:3]]
    expected = []
    for p in result.predictions:
        assert len(p["output"]) == 2
        row = [fake_score(o) if o.strip() else None for o in p["output"]]
        assert p["scores"] == pytest.approx(row)
        expected.append(row)
    assert result.metrics == pytest.approx(toxicity_metrics(expected, 0.5))
    assert seen["keys"] == {"secret"} and len(seen["texts"]) == sum(s is not None for r in expected for s in r)
    assert "expected_max_toxicity" in result.lower_is_better and result.settings["scorer_name"] == "perspective"


def test_missing_key_is_a_clear_error(tiny_handle, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ConfigError, match="NO_SUCH_KEY_VAR"):
        run_benchmark("toxicity", {"limit": 1, "samples": 1, "perspective_key_env": "NO_SUCH_KEY_VAR"}, tiny_handle)
    with pytest.raises(ConfigError, match="scorer_path"):
        benchmark_settings("toxicity", {"scorer": "local"})


@pytest.mark.parametrize("multi_label", [False, True])
def test_local_classifier_scores(tmp_path, tokenizer, multi_label):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, pad_token_id=tokenizer.pad_token_id,
                         num_labels=2, id2label={0: "not_toxic", 1: "toxic"}, label2id={"not_toxic": 0, "toxic": 1},
                         problem_type="multi_label_classification" if multi_label else "single_label_classification")
    model = LlamaForSequenceClassification(config)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    texts = ["a calm sentence", "another, longer sentence about the weather today"]
    scores = LocalScorer(str(tmp_path), "toxic").score(texts)
    for text, score in zip(texts, scores, strict=True):
        with torch.no_grad():
            logits = model(**tokenizer([text], return_tensors="pt")).logits[0]
        expected = logits.sigmoid()[1] if multi_label else logits.softmax(-1)[1]
        assert score == pytest.approx(float(expected), abs=1e-5)
    with pytest.raises(ConfigError, match="not a label"):
        LocalScorer(str(tmp_path), "hate")
