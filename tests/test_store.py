"""The one content-keyed store behind every cache: keys, complete-or-absent entries, one writer per key."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from src.store import Store, cache_root, default_cache_dir, digest


def test_keys_depend_on_content_not_on_key_order():
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1})
    assert digest({"a": 1}) != digest({"a": 2})
    assert len(digest({"a": 1})) == 20 and len(digest({"a": 1}, length=12)) == 12
    assert Store.key({"a": 1}, label="smollm2") == f"smollm2-{digest({'a': 1})}"


def test_an_entry_is_made_once_and_then_found(tmp_path):
    store, calls = Store(tmp_path / "things"), []

    def write(folder: Path) -> None:
        calls.append(folder)
        (folder / "data.txt").write_text("made")

    path, hit = store.get_or_make("k1", write)
    assert (hit, path, (path / "data.txt").read_text()) == (False, tmp_path / "things" / "k1", "made")
    again, hit = store.get_or_make("k1", write)
    assert (hit, again, len(calls)) == (True, path, 1)
    assert calls[0] != path  # written under a temporary name, then renamed into place
    assert store.get("k2") is None


def test_a_failed_writer_leaves_no_entry(tmp_path):
    store = Store(tmp_path)

    def broken(folder: Path) -> None:
        (folder / "half.txt").write_text("half")
        raise RuntimeError("killed midway")

    with pytest.raises(RuntimeError):
        store.get_or_make("k", broken)
    assert store.get("k") is None and not list(tmp_path.glob(".k.*.tmp"))


def test_a_killed_writers_temporary_folder_is_removed_by_the_next_writer(tmp_path):
    store = Store(tmp_path)
    torn = tmp_path / ".k.abc123.tmp"  # what atomic_dir leaves when its process is killed
    torn.mkdir()
    (torn / "half.txt").write_text("half")
    store.get_or_make("k", lambda folder: (folder / "whole.txt").write_text("whole"))
    assert not torn.exists() and (tmp_path / "k" / "whole.txt").read_text() == "whole"


def test_json_entries(tmp_path):
    store = Store(tmp_path)
    assert store.read_json("j") is None
    store.write_json("j", {"reply": "[[A]]"})
    store.write_json("j", {"reply": "something else"})  # same key, same content by contract: the first stays
    assert store.read_json("j") == {"reply": "[[A]]"}


def _slow_writer(root: str, out: str) -> None:
    def write(folder: Path) -> None:
        with open(out, "a") as log:
            log.write("computed\n")
        time.sleep(1.0)
        (folder / "value.txt").write_text("v")

    Store(root).get_or_make("shared", write)


def test_two_processes_asking_for_one_key_compute_it_once(tmp_path):
    log = tmp_path / "log.txt"
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_slow_writer, args=(str(tmp_path / "store"), str(log))) for _ in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0, 0]
    assert log.read_text() == "computed\n"  # the second waited on the key's lock, then found the entry
    assert (tmp_path / "store" / "shared" / "value.txt").read_text() == "v"


def test_the_cache_root(monkeypatch):
    monkeypatch.delenv("IMITATION_GAP_CACHE", raising=False)
    assert default_cache_dir() == "~/.cache/imitation-gap"
    assert cache_root(None) == Path("~/.cache/imitation-gap").expanduser()
    monkeypatch.setenv("IMITATION_GAP_CACHE", "/data/cache")
    assert cache_root(None) == Path("/data/cache") and cache_root("~/mine") == Path("~/mine").expanduser()
