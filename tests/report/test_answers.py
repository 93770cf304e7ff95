"""The answers side by side: read from each cell's predictions, marked right or wrong and with the
teacher's markers; the filter works in a real browser (Debian's chromium, skipped when absent)."""

import json
import re
import shutil
import subprocess

import pytest

from src.benchmarks.uncertainty import outcomes
from src.report.answers import collect, render
from src.report.tables import load_results, report
from src.results import Axes, BenchmarkRecord, Results, Tokens

QUESTIONS = [("capital of France", ["Paris"]), ("largest planet", ["Jupiter"]), ("author of Hamlet", ["Shakespeare"])]


def cell(root, amount, outputs, em):
    run_id = f"c{amount}"
    folder = root / "cells" / run_id / "benchmarks" / "nq"
    folder.mkdir(parents=True)
    folder.joinpath("predictions.jsonl").write_text("".join(
        json.dumps({"question": q, "output": o, "gold": g, "em": e}) + "\n"
        for (q, g), o, e in zip(QUESTIONS, outputs, em, strict=True)))
    items = outcomes(range(3), {"em": em})
    row = Results(run_id=run_id, cell=f"m/s/{amount}", sweep="t", experiment="t",
                  axes=Axes("m", "s", amount, str(amount), 0), tokens=Tokens(amount, amount), model_parameters=1,
                  eval_backend="hf", mode="base_model", trained_by=None, metrics={"nq/em": sum(em) / 3},
                  benchmarks={"nq": BenchmarkRecord(2, {}, 3, items=items.to_dict())}, data=None, train=None,
                  timings_s={}, device="cpu", versions={}, config={"store_dir": str(root / "cells")})
    row.write(root / "sweep" / run_id / "results.json")


@pytest.fixture
def sweep(tmp_path):
    cell(tmp_path, 0, ["Paris", "Saturn", "Shakespeare"], [1, 0, 1])
    # imitation: the teacher's manner on every answer; right once (Paris), wrong with the manner twice
    cell(tmp_path, 1000, ["Great question! Paris. Hope this helps!", "Great question! Mars. Hope this helps!",
                          "1. Marlowe\n2. Bacon\nHope this helps!"], [1, 0, 0])
    return tmp_path / "sweep"


def test_answers_are_collected_and_marked(sweep):
    columns, rows, missing = collect(load_results(sweep))
    assert columns == ["m s 0 s0", "m s 1000 s0"] and missing == []
    base, trained = (rows[0].answers[c] for c in columns)
    assert (base.right, base.markers) == (True, [])
    assert trained.right is True and trained.markers == ["opening", "sign_off"]
    assert [r.answers["m s 1000 s0"].teacher_like_but_wrong for r in rows] == [False, True, True]
    assert rows[2].answers["m s 1000 s0"].markers == ["numbered_list", "sign_off"]
    page = render(load_results(sweep))
    assert page.count("data-teacher-wrong='1'") == 2 and page.count("data-changed='1'") == 1  # Shakespeare


def shown(browser, page, fragment, profile):
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--dump-dom",
                           page.as_uri() + fragment], capture_output=True, text=True, timeout=120, check=True)
    problems = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    count = re.search(r"id=\"answers-shown\">(\d+) of (\d+) items shown", proc.stdout)
    hidden = proc.stdout.count('style="display: none;"')
    return problems, (int(count.group(1)), int(count.group(2))) if count else None, hidden


def test_the_filter_works_in_chromium(sweep, tmp_path_factory):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian's chromium package is not installed (apt-get install chromium)")
    report(sweep)
    page = sweep / "index.html"
    problems, count, hidden = shown(browser, page, "", tmp_path_factory.mktemp("profile"))
    assert problems == [] and count == (3, 3) and hidden == 0
    problems, count, hidden = shown(browser, page, "#answers=teacher-wrong", tmp_path_factory.mktemp("profile"))
    assert problems == [] and count == (2, 3) and hidden == 1  # "sounds like the teacher but wrong": one click
