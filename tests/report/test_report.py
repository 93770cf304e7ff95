"""The report: tables and the gap-closed arithmetic on hand-made grids, and the page in a browser."""

import csv
import json
import shutil
import subprocess

import pytest

from src.io import write_json_atomic
from src.report.tables import gap_closed, load_results, report
from src.results import SCHEMA_VERSION, Axes, Results, Tokens


def record(model, params, amount, metrics, source="mix", sweep="t"):
    """A complete results record; only what the report reads is chosen by the test."""
    return Results(
        run_id=f"{model}-{source}-{amount}", cell=f"{model}/{source}/{amount}", sweep=sweep, experiment="test",
        axes=Axes(model=model, data_source=source, amount=amount, amount_label=str(amount), seed=0),
        tokens=Tokens(total=amount, loss_bearing=amount // 2), model_parameters=int(params), eval_backend="hf",
        mode="separate_run" if amount else "base_model", trained_by=None, metrics=metrics, benchmarks={},
        data=None, train=None, timings_s={"train_s": 1.0} if amount else {}, device="cpu", versions={}, config=None)


def cell(root, model, params, amount, metrics):
    record(model, params, amount, metrics).write(root / f"{model}_{amount}" / "results.json")


@pytest.fixture
def grid(tmp_path):
    # two base models x {0, 1000, 4000}; hand-picked numbers
    cell(tmp_path, "small", 1e6, 0, {"nq/em": 0.20, "style/style_score": 0.1})
    cell(tmp_path, "small", 1e6, 1000, {"nq/em": 0.15, "style/style_score": 0.6})
    cell(tmp_path, "small", 1e6, 4000, {"nq/em": 0.10, "style/style_score": 0.9})
    cell(tmp_path, "large", 1e7, 0, {"nq/em": 0.25, "style/style_score": 0.2})
    cell(tmp_path, "large", 1e7, 4000, {"nq/em": 0.28, "style/style_score": 0.8})
    (tmp_path / "teacher.yaml").write_text("name: T\nmetrics:\n  nq/em: 0.30\n  style/style_score: 0.9\n")
    return tmp_path


def test_gap_closed_by_hand(grid):
    rows = load_results(grid)
    header, body = gap_closed(rows, {"name": "T", "metrics": {"nq/em": 0.30, "style/style_score": 0.9}})
    assert header == ["model", "source", "amount", "seed", "nq/em", "style/style_score"]
    # these cells carry no per-item outcomes (as files written before they were recorded): intervals unknown
    assert body == [
        ["small", "mix", "1000", "0", "-0.50 [?]", "+0.62 [?]"],  # (0.15-0.20)/(0.30-0.20); (0.6-0.1)/(0.9-0.1)
        ["small", "mix", "4000", "0", "-1.00 [?]", "+1.00 [?]"],
        ["large", "mix", "4000", "0", "+0.60 [?]", "+0.86 [?]"],  # (0.28-0.25)/0.05; (0.8-0.2)/0.7
    ]


def test_report_writes_tables_figures_and_page(grid):
    text = report(grid, teacher_path=grid / "teacher.yaml")
    assert "gap closed vs teacher 'T'" in text
    with open(grid / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["model"], r["amount"], r["nq/em"]) for r in rows] == [
        ("small", "0", "0.200"), ("small", "1000", "0.150"), ("small", "4000", "0.100"),
        ("large", "0", "0.250"), ("large", "4000", "0.280")]
    for name in ("scaling.png", "model_size.png", "style_vs_substance.png"):
        assert (grid / name).stat().st_size > 10_000
    page = (grid / "index.html").read_text()
    assert page.count("<img ") == 3 and "Gap closed vs T" in page and "-0.50" in page
    assert "0.200±?" in text and "unknown" in (grid / "gap_closed.csv").read_text()  # old files: unknown, no crash
    assert (grid / "findings.md").exists()


def test_unreadable_results_are_reported_not_fatal(grid, capsys):
    (grid / "broken").mkdir()
    (grid / "broken" / "results.json").write_text("{half")
    assert len(load_results(grid)) == 5
    assert "skipping unreadable" in capsys.readouterr().err


def test_load_results_reads_every_schema_version_and_skips_foreign_json(tmp_path, capsys):
    old = record("small", 1e6, 0, {"nq/em": 0.2}).to_dict()
    del old["schema_version"]  # written before the field existed: version 1, the same fields
    write_json_atomic(tmp_path / "old" / "results.json", old)
    record("small", 1e6, 1000, {"nq/em": 0.3}).write(tmp_path / "new" / "results.json")
    assert "schema_version" in json.loads((tmp_path / "new" / "results.json").read_text())
    write_json_atomic(tmp_path / "foreign" / "results.json", {"accuracy": 0.9, "note": "some other tool's file"})
    write_json_atomic(tmp_path / "list" / "results.json", [1, 2, 3])

    rows = load_results(tmp_path)
    assert all(isinstance(r, Results) for r in rows)
    assert [(r.axes.amount, r.schema_version, r.metrics["nq/em"]) for r in rows] == [(0, 1, 0.2),
                                                                                      (1000, SCHEMA_VERSION, 0.3)]
    err = capsys.readouterr().err
    assert "not a results record" in err
    assert str(tmp_path / "foreign" / "results.json") in err and str(tmp_path / "list" / "results.json") in err


@pytest.mark.slow
def test_page_renders_the_plots_in_chromium(grid, tmp_path_factory):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian's chromium package is not installed (apt-get install chromium)")
    from PIL import Image

    report(grid, teacher_path=grid / "teacher.yaml")
    shot = tmp_path_factory.mktemp("shot") / "page.png"
    profile = tmp_path_factory.mktemp("profile")
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={profile}", "--window-size=1400,3000", f"--screenshot={shot}",
                    (grid / "index.html").as_uri()], check=True, capture_output=True, timeout=120)
    image = Image.open(shot).convert("RGB")
    # matplotlib's first two line colours (C0 blue, C1 orange) appear only inside the plots
    colours = image.getcolors(maxcolors=1 << 24)
    counts = {rgb: n for n, rgb in colours}

    def near(target):
        return sum(n for rgb, n in counts.items() if all(abs(a - b) < 20 for a, b in zip(rgb, target, strict=True)))

    assert near((31, 119, 180)) > 500 and near((255, 127, 14)) > 500


def test_dashboard_lays_out_every_metric(grid):
    from src.report.dashboard import build_workspace

    workspace = build_workspace(load_results(grid), entity="e", project="p")
    titles = [[panel.title for panel in section.panels] for section in workspace.sections]
    assert titles[0] == ["nq/em vs imitation tokens"]
    assert titles[1] == ["style/style_score vs imitation tokens"]
    assert titles[2] == ["train/loss", "train/lr", "train/grad_norm"]
    assert "Group" in str(workspace.runset_settings.filters) and "'t'" in str(workspace.runset_settings.filters)


def test_a_cell_in_two_merged_grids_keeps_every_benchmark_either_scored(tmp_path, capsys):
    # grid b re-scored the shared base cell with one more benchmark; its copy sorts after a's
    record("small", 1e6, 0, {"nq/em": 0.20}).write(tmp_path / "a" / "base" / "results.json")
    record("small", 1e6, 0, {"nq/em": 0.20, "mmlu/acc": 0.31}).write(tmp_path / "b" / "base" / "results.json")
    record("small", 1e6, 0, {"nq/em": 0.25}).write(tmp_path / "c" / "base" / "results.json")
    (row,) = load_results([tmp_path / "a", tmp_path / "b"])
    assert row.metrics == {"nq/em": 0.20, "mmlu/acc": 0.31}
    (row,) = load_results([tmp_path / "b", tmp_path / "c"])
    assert row.metrics == {"nq/em": 0.20, "mmlu/acc": 0.31}  # the fuller copy's nq wins, said aloud
    assert "differ on nq" in capsys.readouterr().err
