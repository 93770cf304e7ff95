"""Faults: nothing lost, nothing half-written, every failure a clear error.

- kill -9 while a file is written: the file holds the old or the new content, never a mix;
- kill -9 inside prepare (mid-array, between the arrays and their record, mid-record, with the entry
  complete but not yet in place): the rerun prepares the same rows, removes the torn temporary
  folder, and the cache holds exactly one complete entry;
- a full disk (a real 64 KiB tmpfs where mount works, ENOSPC injected otherwise), a read-only
  directory, a file where a directory should be: an OutputError naming the path, old content intact;
- teacher and judge endpoints down, slow or answering garbage: retried, then counted (teacher) or
  scored unparsable (judge), or a clean stop that keeps every judgment made so far;
- W&B unreachable: the run falls back to offline, with a warning, within a bounded time.

The slow tests kill a whole `python -m src.main` cell at named stages of prepare, train and eval (the
cell pauses there: src/stages.py) and check the rerun's metrics, results and W&B runs against an
uninterrupted run.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from src import PROJECT_ROOT, io
from src.io import OutputError, ensure_dir, write_json_atomic, write_text_atomic
from src.stages import PAUSE_AT
from tests.conftest import CACHE, run_config
from tests.helpers.teacher_servers import FaultServer

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline",
       "WANDB_SILENT": "true", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(PROJECT_ROOT)}


def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- kill -9 during writes ------------------------------------------------------------------------

WRITER = """
import sys
from src.io import write_json_atomic
n = 0
while True:
    write_json_atomic(sys.argv[1], {"n": n, "payload": "x" * 2_000_000})
    n += 1
"""


def test_kill_during_atomic_writes_leaves_a_whole_file(tmp_path):
    target = tmp_path / "results.json"
    write_json_atomic(target, {"n": -1, "payload": "x" * 2_000_000})
    rng = random.Random(0)
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], cwd=PROJECT_ROOT, env=ENV)
        time.sleep(rng.uniform(0.2, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        record = json.loads(target.read_text())  # never a torn file
        assert len(record["payload"]) == 2_000_000
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["results.json"]


PREPARE_KILLED = """
import os, signal, sys
from src.data import prepare as P
from src.models.load import load_tokenizer
from src.data.template import chat_format
from tests.conftest import CACHE, run_config

cfg = run_config(["experiment=smoke", "output_dir=/tmp/unused", "data.amount=3K"])
tokenizer = load_tokenizer(cfg.model, CACHE)
fmt = chat_format(tokenizer, cfg.model.chat_template)

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def torn_close(writer):  # the arrays written, one of them torn in half, then killed
    real_close(writer)
    file = writer.folder / "input_ids.npy"
    with open(file, "r+b") as handle:
        handle.truncate(os.path.getsize(file) // 2)
    die()

def torn_record(path, data):  # the record's temporary file written, then killed before the rename
    with io.atomic_path(path) as tmp:
        tmp.write_text('{"examples": 1')
        die()

from src import io, store
from src.data import prepared
real_close = prepared.RowWriter.close
for point in POINTS:  # one child per kill point; the tokenizer is loaded once, before the forks
    child = os.fork()
    if child == 0:
        if point == "mid_arrays":
            prepared.RowWriter.close = torn_close
        elif point == "before_record":
            P.write_json_atomic = lambda path, data: die()
        elif point == "mid_record":
            P.write_json_atomic = torn_record
        elif point == "before_commit":  # the entry complete in its temporary folder, not yet renamed
            store.reached = lambda stage: die() if stage == "store:prepared:written" else None
        P.prepare(cfg.data, tokenizer, fmt, 256, cfg.model.context_length, os.path.join(sys.argv[1], point))
        os._exit(0)
    _, status = os.waitpid(child, 0)
    print(point, os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, flush=True)
"""
POINTS = ["mid_arrays", "before_record", "mid_record", "before_commit"]


def entries(cache: Path) -> list[str]:
    """Entries of a store that look complete (temporary folders and the locks start with '.')."""
    return [p.name for p in cache.iterdir() if not p.name.startswith(".")] if cache.exists() else []


def test_kill_inside_prepare_then_rerun(tmp_path, tokenizer):
    from src.data.prepare import prepare
    from src.data.template import chat_format

    cfg = run_config(["experiment=smoke", "output_dir=/tmp/unused", "data.amount=3K"])
    fmt = chat_format(tokenizer, cfg.model.chat_template)
    script = PREPARE_KILLED.replace("POINTS", repr(POINTS))
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=PROJECT_ROOT,
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.stdout.split() == [word for point in POINTS for word in (point, "True")], proc.stderr[-2000:]

    reference = prepare(cfg.data, tokenizer, fmt, 256, cfg.model.context_length, cache_dir=None)
    for point in POINTS:
        cache = tmp_path / point / "prepared"
        assert entries(cache) == [] and list(cache.glob(".*.tmp")), point  # a torn temporary folder, no entry
        rerun = prepare(cfg.data, tokenizer, fmt, 256, cfg.model.context_length, str(tmp_path / point))
        again = prepare(cfg.data, tokenizer, fmt, 256, cfg.model.context_length, str(tmp_path / point))
        assert (rerun.cache, again.cache) == ("miss", "hit"), point
        assert rerun.rows == reference.rows == again.rows and rerun.total_tokens == reference.total_tokens
        (entry,) = entries(cache)
        assert sorted(p.name for p in (cache / entry).iterdir()) == [
            "input_ids.npy", "loss_mask.npy", "position_ids.npy", "row_offsets.npy", "summary.json"], point
        assert not list(cache.glob(".*.tmp")), point  # the killed writer's temporary folder is gone


# --- full disk, unwritable outputs ----------------------------------------------------------------


def mount(*args: str) -> bool:
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def test_full_disk_is_an_error_naming_the_path_and_keeps_the_old_file(tmp_path, monkeypatch):
    small = tmp_path / "small"
    small.mkdir()
    target = small / "results.json"
    if mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)):
        try:
            write_json_atomic(target, {"old": True})
            with pytest.raises(OutputError, match=re.escape(f"cannot write {target}: no space left on the device")):
                write_text_atomic(target, "x" * 200_000)
            assert json.loads(target.read_text()) == {"old": True}
            assert os.listdir(small) == ["results.json"]  # the temporary file is gone
        finally:
            subprocess.run(["umount", str(small)], check=True)

    # the same, with ENOSPC injected where a file system may report it (flush to disk)
    write_json_atomic(target, {"old": True})

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(io.os, "fsync", full)
    with pytest.raises(OutputError, match=re.escape(f"cannot write {target}: no space left on the device")) as caught:
        write_json_atomic(target, {"new": True})
    assert caught.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"old": True}
    assert os.listdir(small) == ["results.json"]


def test_unwritable_output_directories_are_errors_naming_the_path(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(OutputError, match=re.escape(f"cannot write {blocker}/cells: {blocker} is not a directory")):
        ensure_dir(blocker / "cells")
    with pytest.raises(OutputError, match=re.escape(f"cannot write {blocker}/x/results.json: {blocker} is not a d")):
        write_json_atomic(blocker / "x" / "results.json", {})

    source, readonly = tmp_path / "src", tmp_path / "ro"
    source.mkdir()
    readonly.mkdir()
    if not mount("--bind", str(source), str(readonly)):
        pytest.skip("a read-only bind mount needs root (the not-a-directory case ran)")
    try:
        assert mount("-o", "remount,bind,ro", str(readonly))
        with pytest.raises(OutputError, match=re.escape(f"cannot write {readonly}/cells: not writable (Read-only file")):
            ensure_dir(readonly / "cells")
        with pytest.raises(OutputError, match=re.escape(f"cannot write {readonly}/results.json: not writable")):
            write_json_atomic(readonly / "results.json", {})
    finally:
        subprocess.run(["umount", str(readonly)], check=True)


def test_a_cell_with_an_unusable_store_stops_with_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    proc = subprocess.run([sys.executable, "-m", "src.main", "experiment=smoke", f"store_dir={blocker}/cells",
                           f"hydra.run.dir={tmp_path}/job"], cwd=PROJECT_ROOT, env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"error: cannot write {blocker}/cells: {blocker} is not a directory"


# --- teacher endpoint down, slow, answering garbage -----------------------------------------------


class GarbageServer:
    """Accepts connections and answers bytes that are not HTTP at all."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"\x00\xff garbage \r\n\r\n")

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.sock.close()


def teacher(url: str, **kwargs):
    from src.teacher.clients import HttpTeacher

    return HttpTeacher(url, "t", **{"api_key_env": None, "timeout": 0.5, "max_retries": 2, "backoff": 0.01,
                                    "max_backoff": 0.02, "concurrency": 2, **kwargs})


PROMPTS = ["first prompt", "second prompt", "third prompt"]


@pytest.mark.parametrize("outage", ["down", "slow", "garbage"])
def test_teacher_outage_counts_failures_and_a_rerun_asks_only_those(outage, tmp_path):
    from src.teacher.collect import CollectSettings, Prompt, collect, partial_path

    prompts = [Prompt(f"p{i}", text) for i, text in enumerate(PROMPTS)]
    out = tmp_path / "imitation.json"
    start = time.monotonic()
    if outage == "down":
        stats = collect(prompts, teacher(f"http://127.0.0.1:{closed_port()}/v1"), out, CollectSettings())
    elif outage == "slow":
        with FaultServer(delay=5) as server:  # every reply after 5 s; the client gives up after 0.5 s
            stats = collect(prompts, teacher(server.url), out, CollectSettings())
    else:
        with GarbageServer() as server:
            stats = collect(prompts, teacher(server.url), out, CollectSettings())
    assert time.monotonic() - start < 10  # 3 prompts x 3 attempts x at most 0.5 s, two at a time
    assert (stats.asked, stats.failed, stats.kept, stats.written) == (3, 3, 0, 0)
    assert stats.retries == 3 * 2
    assert json.loads(out.read_text()) == []
    assert partial_path(out).read_text() == ""

    with FaultServer() as server:  # the endpoint is back
        stats = collect(prompts, teacher(server.url), out, CollectSettings())
        assert sorted(server.prompts) == sorted(PROMPTS)
    assert (stats.asked, stats.kept, stats.written) == (3, 3, 3)


# --- judge endpoint down, slow, answering garbage -------------------------------------------------


class Handle:
    """The evaluated model, stubbed: it replies 'my answer' to everything."""

    device = None

    def chat_prompt(self, text):
        return text

    def generate(self, prompts, max_new_tokens, **_):
        return ["my answer"] * len(prompts)


def judge_items(tmp_path, prompts):
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps({"id": f"i{n}", "prompt": p, "reference": "the reference"}) + "\n"
                            for n, p in enumerate(prompts)))
    return path


def run_judge(tmp_path, url, items, **kwargs):
    from src.benchmarks.judge import JudgeSettings, OpenAIJudge, run

    settings = JudgeSettings(path=str(items), cache_dir=str(tmp_path / "judgments"))
    judge = OpenAIJudge(url, "judge", "key", 64, **{"max_retries": 1, "backoff_s": 0.01, "timeout_s": 0.5, **kwargs})
    return run(Handle(), settings, judge=judge)


def test_judge_down_midway_stops_cleanly_keeping_its_judgments(tmp_path):
    from src.benchmarks.judge import JudgeUnavailable

    items = judge_items(tmp_path, ["fine one", "down for a while [500x2]", "fine two"])
    with FaultServer(responder=lambda prompt: "[[A]]") as server:
        with pytest.raises(JudgeUnavailable, match=re.escape(f"judge endpoint {server.url}/chat/completions: HTTP 500 after 2")):
            run_judge(tmp_path, server.url, items)
        assert len(list((tmp_path / "judgments").rglob("*.json"))) == 2  # item 0, both orders
        result = run_judge(tmp_path, server.url, items, max_retries=2)  # item 1's third tries are answered
    assert result.settings["judged_anew"] == 4  # items 1 and 2, both orders: item 0 came from the cache
    assert [p["outcome"] for p in result.predictions] == ["tie", "tie", "tie"]  # [[A]] in both orders

    with pytest.raises(JudgeUnavailable, match="unreachable"):
        run_judge(tmp_path / "fresh", f"http://127.0.0.1:{closed_port()}/v1", items)


def test_judge_slow_or_garbage_is_retried_then_unparsable_and_not_cached(tmp_path):
    items = judge_items(tmp_path, ["slow once [timeoutx1]", "garbage [malformed]"])
    with FaultServer(responder=lambda prompt: "[[B]]") as server:
        result = run_judge(tmp_path, server.url, items)
    outcomes = [p["outcome"] for p in result.predictions]
    assert outcomes == ["tie", "unparsable"]  # [[B]] both orders = tie; garbage twice = no verdict
    assert result.settings["judge_unusable_replies"] == 2  # both orders of the garbage item
    assert result.metrics["unparsable"] == 0.5
    assert len(list((tmp_path / "judgments").rglob("*.json"))) == 2  # garbage is never cached


# --- W&B unreachable --------------------------------------------------------------------------------


def test_wandb_unreachable_falls_back_to_offline_in_bounded_time(tmp_path, monkeypatch, caplog):
    import wandb

    from src.tracking import Tracker

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "local-" + "0" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "3")
    from src.cell import run_id

    cfg = run_config(["experiment=smoke", "output_dir=/tmp/unused", "tracker.mode=online"])
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="src.tracking"):
        tracker = Tracker(cfg, run_id(cfg), tmp_path, {"k": 1})
    assert time.monotonic() - start < 20
    assert tracker.mode == "offline"
    assert "W&B online run could not start" in caplog.text and "logging offline instead" in caplog.text
    tracker.log({"train/loss": 1.0}, step=1)
    tracker.finish(summary={"nq/em": 0.5})
    runs = sorted(p.name for p in (tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and runs[0].endswith(f"-{run_id(cfg)}")
    assert wandb.run is None


# --- preemption of a whole cell (slow) ----------------------------------------------------------------


class CellProcess:
    """`python -m src.main` on one smoke cell in its own store and cache, killable at a named stage."""

    def __init__(self, root: Path, amount: str, *overrides: str, env: dict | None = None):
        self.root, self.env = root, {**ENV, **(env or {})}
        cache = root / "cache"
        cache.mkdir(parents=True, exist_ok=True)
        if not (cache / "models").exists():  # the converted tokenizer is shared; every other cache is fresh
            (cache / "models").symlink_to(Path(os.path.expanduser(CACHE)) / "models")
        self.args = [sys.executable, "-m", "src.main", "experiment=smoke", f"data.amount={amount}",
                     "tracker.mode=offline", f"store_dir={root}/cells", f"cache_dir={cache}",
                     f"hydra.run.dir={root}/job", *overrides]

    def run(self, kill_at: str | None = None) -> list[str]:
        """Run to the end, or until the cell pauses at the stage `kill_at` (src/stages.py), then kill -9
        its whole process group there: the kill lands at the same point on a fast or a slow machine.
        Returns the output lines seen."""
        env = {**self.env, PAUSE_AT: kill_at} if kill_at else self.env
        proc = subprocess.Popen(self.args, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)  # Hydra logs to stdout
        lines: list[str] = []
        for line in proc.stdout:
            lines.append(line)
            if kill_at and line.rstrip("\n").endswith(f"paused at stage {kill_at}"):
                os.killpg(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=600)
        if kill_at:
            assert proc.returncode == -signal.SIGKILL, f"the cell never reached stage {kill_at}:\n" + "".join(lines[-30:])
        else:
            assert proc.returncode == 0, "".join(lines[-30:])
        return lines

    def work(self) -> Path:
        (work,) = (self.root / "cells").iterdir()
        return work


@pytest.mark.slow
@pytest.mark.parametrize(("amount", "kills", "overrides"), [
    ("0", ["eval:nq:scored", "eval:humaneval:start"], ()),  # nq computed, not written; then nq written
    ("2K", ["prepare:loaded", "store:prepared:written", "eval:humaneval:scored", "results:ready"], ()),
    ("2K", ["train:checkpoint-saved", "eval:nq:start"], ("train.save_checkpoint=true",)),  # train.json not yet
])
def test_cell_killed_in_prepare_and_eval_reruns_to_the_same_results(amount, kills, overrides, tmp_path):
    reference = CellProcess(tmp_path / "reference", amount, *overrides)
    reference.run()
    expected = json.loads((reference.work() / "results.json").read_text())

    cell = CellProcess(tmp_path / "preempted", amount, *overrides)
    for stage in kills:
        cell.run(kill_at=stage)
        assert not (cell.work() / "results.json").exists()  # the kill landed before the cell finished
        assert_whole_json_files(tmp_path / "preempted")
    cell.run()

    work = cell.work()
    results = json.loads((work / "results.json").read_text())
    assert results["metrics"] == expected["metrics"]
    assert results["tokens"] == expected["tokens"]
    assert {k: v["n"] for k, v in results["benchmarks"].items()} == {"nq": 8, "humaneval": 4}
    for name, n in (("nq", 8), ("humaneval", 4)):  # no duplicated predictions
        assert len((work / "benchmarks" / name / "predictions.jsonl").read_text().splitlines()) == n
    assert [p.name for p in (tmp_path / "preempted" / "cells").iterdir()] == [results["run_id"]]
    assert json.loads((tmp_path / "preempted" / "job" / "status.json").read_text())["state"] == "done"
    # W&B: every attempt logged under the one run id (offline folders sync into the same run)
    runs = sorted(p.name for p in (work / "wandb").glob("offline-run-*"))
    assert len(runs) == len(kills) + 1 and {name.rsplit("-", 1)[1] for name in runs} == {results["run_id"]}
    assert_whole_json_files(tmp_path / "preempted")


@pytest.mark.slow
def test_cell_killed_in_training_resumes_to_the_same_results(tmp_path):
    """kill -9 right after a resumable training state is saved (one row a step, a state every 3 steps):
    the rerun resumes from it and ends with the metrics and loss of an uninterrupted run."""
    overrides = ("train.checkpoint_every=3", "train.rows_per_step=1", "train.block_length=128")
    reference = CellProcess(tmp_path / "reference", "4K", *overrides)
    reference.run()
    expected = json.loads((reference.work() / "results.json").read_text())

    cell = CellProcess(tmp_path / "preempted", "4K", *overrides)
    cell.run(kill_at="train:state-saved")
    assert list(cell.work().glob("train_state/step-*")) and not (cell.work() / "results.json").exists()
    assert_whole_json_files(tmp_path / "preempted")
    cell.run()

    results = json.loads((cell.work() / "results.json").read_text())
    assert results["train"]["resumed_from_step"] >= 3
    assert results["train"]["final_loss"] == pytest.approx(expected["train"]["final_loss"], rel=1e-5)
    assert results["metrics"] == expected["metrics"] and results["tokens"] == expected["tokens"]
    assert not (cell.work() / "train_state").exists()  # spent states are removed when the run completes


def assert_whole_json_files(root: Path) -> None:
    """Nothing half-written in the store, the job folder or the caches (temporary names start with
    '.'; W&B's own files are its business)."""
    for path in root.rglob("*.json"):
        if not path.name.startswith(".") and "wandb" not in path.parts:
            json.loads(path.read_text())


@pytest.mark.slow
def test_cell_completes_offline_when_wandb_is_unreachable(tmp_path):
    env = {"WANDB_MODE": "", "WANDB_API_KEY": "local-" + "0" * 40, "WANDB_INIT_TIMEOUT": "3",
           "WANDB_BASE_URL": f"http://127.0.0.1:{closed_port()}"}
    cell = CellProcess(tmp_path, "0", "tracker.mode=online", env=env)
    cell.env.pop("WANDB_MODE")
    start = time.monotonic()
    lines = cell.run()
    assert time.monotonic() - start < 180
    assert any("W&B online run could not start" in line for line in lines)
    results = json.loads((cell.work() / "results.json").read_text())
    assert set(results["metrics"]) >= {"nq/em", "humaneval/pass@1"}
    runs = [p.name for p in (cell.work() / "wandb").glob("offline-run-*")]
    assert len(runs) == 1 and runs[0].endswith(results["run_id"])


class SwitchableJudge:
    """An OpenAI-shaped judge on 127.0.0.1 that answers 503 until `up` is set, then '[[A]]'."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.up, self.requests = False, 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802 (http.server's naming)
                self.rfile.read(int(self.headers["content-length"]))
                outer.requests += 1
                body = json.dumps({"choices": [{"message": {"role": "assistant", "content": "[[A]]"}}]}).encode()
                self.send_response(200 if outer.up else 503)
                self.send_header("content-length", str(len(body) if outer.up else 0))
                self.end_headers()
                if outer.up:
                    self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.slow
def test_judge_down_fails_the_cell_cleanly_and_the_rerun_keeps_the_rest(tmp_path, monkeypatch):
    from src.benchmarks.judge import JudgeUnavailable
    from src.cell import Cell
    from src.main import run_cell
    from tests.conftest import compose_config

    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    judge = SwitchableJudge()
    overrides = ["experiment=smoke", "data.amount=0", "tracker.mode=disabled", "force=false",
                 "benchmark=[nq,judge]", "benchmark.nq.limit=2", "benchmark.judge.limit=2",
                 "benchmark.judge.max_new_tokens=8", "benchmark.judge.max_retries=0",
                 f"benchmark.judge.base_url={judge.url}", f"benchmark.judge.cache_dir={tmp_path}/judgments",
                 f"store_dir={tmp_path}/cells", f"cache_dir={tmp_path}/cache", "output_dir=/tmp/unused"]
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "models").symlink_to(Path(os.path.expanduser(CACHE)) / "models")
    raw = compose_config(overrides)
    work, job = Cell.of(run_config(overrides)).dir, tmp_path / "job"
    try:
        with pytest.raises(JudgeUnavailable, match=re.escape(f"judge endpoint {judge.url}/chat/completions: HTTP 503")):
            run_cell(raw, job)
        status = json.loads((job / "status.json").read_text())
        assert status["state"] == "failed" and status["error"].startswith("JudgeUnavailable: judge endpoint")
        nq_metrics = (work / "benchmarks" / "nq" / "metrics.json").read_text()  # scored before the judge failed
        assert not (work / "results.json").exists() and not (work / "benchmarks" / "judge").exists()

        judge.up = True
        results = run_cell(raw, job).to_dict()
    finally:
        judge.close()
    assert (work / "benchmarks" / "nq" / "metrics.json").read_text() == nq_metrics  # reused, not redone
    assert results["metrics"]["judge/tie_rate"] == 1.0 and results["benchmarks"]["judge"]["n"] == 2
    assert json.loads((job / "status.json").read_text())["state"] == "done"
    assert judge.requests == 1 + 4  # the failed first request, then both orders of both items
