"""Parallel prepare: the same bytes for any number of workers and any chunking, budgets still nested
prefixes, `python -m src.data prepare`, and a prepare killed with SIGKILL mid-way (while its workers
clean the source into the scratch file, and while they render)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from src import PROJECT_ROOT
from src.config import DataConfig
from src.data.prepare import prepare
from src.data.sources import source_config_by_name
from src.data.template import TokenizerTemplate
from src.store import cache_root
from tests.conftest import CACHE

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
DEMO = source_config_by_name("demo")


def _cache(folder: Path) -> str:
    """A fresh cache whose converted models are the shared ones (converting SmolLM2 takes a minute)."""
    folder.mkdir(parents=True, exist_ok=True)
    models = cache_root(CACHE) / "models"
    if models.exists() and not (folder / "models").exists():
        (folder / "models").symlink_to(models)
    return str(folder)


def _entry_bytes(cache: Path) -> dict[str, bytes]:
    (entry,) = [p for p in (cache / "prepared").iterdir() if not p.name.startswith(".")]
    return {p.name: p.read_bytes() for p in sorted(entry.iterdir())}


def test_one_or_two_workers_and_any_chunk_write_the_same_bytes(tokenizer, tmp_path):
    fmt = TokenizerTemplate(tokenizer)
    cfg = DataConfig(source=DEMO, amount=20_000)
    runs = {}
    for workers, chunk in ((1, 64), (2, 1), (2, 7), (3, 64)):
        cache = tmp_path / f"w{workers}c{chunk}"
        prepare(cfg, tokenizer, fmt, 256, 2048, str(cache), boundaries=[5_000], workers=workers, chunk=chunk)
        runs[workers, chunk] = _entry_bytes(cache)
    first = runs[1, 64]
    assert set(first) == {"input_ids.npy", "loss_mask.npy", "position_ids.npy", "row_offsets.npy", "summary.json"}
    assert all(files == first for files in runs.values())
    small = prepare(DataConfig(source=DEMO, amount=5_000), tokenizer, fmt, 256, 2048, None, workers=2)
    big = prepare(cfg, tokenizer, fmt, 256, 2048, None, boundaries=[5_000], workers=2)
    assert big.rows[:len(small.rows)] == small.rows  # the 5K budget is the 20K run's prefix


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("setting", [None, "true"])
def test_the_tokenizers_own_threads_are_off_while_preparing(tokenizer, tmp_path, monkeypatch, workers, setting):
    """Rendering runs with TOKENIZERS_PARALLELISM=false (the workers and the one process alike), even
    when the user set it to true (forked workers then deadlocked once the parent had used the
    threads), and the environment is as it was afterwards."""
    import src.data.prepare as prepare_module

    if setting is None:
        monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    else:
        monkeypatch.setenv("TOKENIZERS_PARALLELISM", setting)
    seen = tmp_path / "seen"
    render = prepare_module.render_conversation

    def recording(conv):  # runs in the worker processes too (forked): they append to one file
        with open(seen, "a") as handle:
            handle.write(f"{os.environ.get('TOKENIZERS_PARALLELISM')}\n")
        return render(conv)

    monkeypatch.setattr(prepare_module, "render_conversation", recording)
    tokenizer(["the parent uses the threads", "before the workers fork"])  # what made a worker deadlock

    def hung(*_):
        raise TimeoutError("the prepare hung: its workers deadlocked")

    signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)  # a deadlock fails the test instead of hanging the suite
    try:
        prepare(DataConfig(source=DEMO, amount=2_000), tokenizer, TokenizerTemplate(tokenizer), 256, 2048,
                _cache(tmp_path / "cache"), workers=workers)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
    values = seen.read_text().splitlines()
    assert len(values) > 10 and set(values) == {"false"}
    assert os.environ.get("TOKENIZERS_PARALLELISM") == setting


def test_prepare_command_prints_what_it_cost_and_a_rerun_hits(tmp_path):
    command = [sys.executable, "-m", "src.data", "prepare", "--source", "demo", "--model", "tiny",
               "--amounts", "0,5K,10K", "--milestones", "5K,10K", "--mode", "milestone", "--workers", "2",
               "--cache-dir", _cache(tmp_path)]
    first = subprocess.run(command, cwd=PROJECT_ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    (line,) = first.stdout.splitlines()  # milestone mode: one run of 10K with a boundary at 5K
    assert line.startswith("demo 10K for tiny (rows of 512, boundaries 5K): 10,000 tokens") and "cache miss" in line
    assert " rows, fill 0." in line and "peak memory" in line
    again = subprocess.run(command, cwd=PROJECT_ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert "cache hit" in again.stdout


def test_bad_source_is_one_line_naming_the_file_and_line(tmp_path):
    bad = tmp_path / "cut.json"
    bad.write_text('[{"id": "a", "conversations": [{"from": "human", "value": "hi"},\n {"from": "gpt", "val')
    proc = subprocess.run([sys.executable, "-m", "src.data", "prepare", "--source", "sharegpt", "--path", str(bad),
                           "--model", "tiny", "--amounts", "100", "--cache-dir", _cache(tmp_path / "c")],
                          cwd=PROJECT_ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {bad}:2: invalid JSON")
    prepared = tmp_path / "c" / "prepared"
    # nothing half-written: the locks, perhaps the source's remembered hash, no entry, no temporary folder
    assert not prepared.exists() or {p.name for p in prepared.iterdir()} <= {".locks", ".hashes"}


@pytest.mark.parametrize("stage", ["prepare:cleaning", "prepare:rendering"])
def test_kill_9_during_a_parallel_prepare_then_rerun_gives_one_complete_entry(stage, tmp_path):
    def command(workers, cache):
        return [sys.executable, "-m", "src.data", "prepare", "--source", "demo", "--model", "tiny",
                "--amounts", "20K", "--workers", str(workers), "--cache-dir", _cache(tmp_path / cache)]

    proc = subprocess.Popen(command(2, "cache"), cwd=PROJECT_ROOT, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**ENV, "IMITATION_GAP_PAUSE_AT": stage})
    for line in proc.stderr:
        if f"paused at stage {stage}" in line:
            break
    else:
        raise AssertionError(f"the prepare never reached {stage}")
    os.killpg(proc.pid, signal.SIGKILL)  # the command and its worker processes, as a killed job
    proc.wait(timeout=60)
    prepared = tmp_path / "cache" / "prepared"
    assert not [p for p in prepared.iterdir() if not p.name.startswith(".")] if prepared.exists() else True
    rerun = subprocess.run(command(2, "cache"), cwd=PROJECT_ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and "cache miss" in rerun.stdout, rerun.stderr[-2000:]
    reference = subprocess.run(command(1, "ref"), cwd=PROJECT_ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr[-2000:]
    assert _entry_bytes(tmp_path / "cache") == _entry_bytes(tmp_path / "ref")
