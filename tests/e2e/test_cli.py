"""The CLI end to end on small synthetic data: every step through the real `recsys` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .helpers import finish, run_cli, run_ok, start_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """generate → build-features → train → evaluate, once for the module."""
    root = tmp_path_factory.mktemp("cli")
    p = {name: root / name for name in ("raw", "features", "model", "report")}
    run_ok("generate", "--out", p["raw"], "--impressions", 20_000, "--users", 400, "--items", 300, "--days", 10,
           "--seed", 3)
    run_ok("build-features", "--spec", "synthetic", "--raw", p["raw"], "--out", p["features"], "--quiet")
    # 4 epochs: one leaves the model half-trained (test AUC 0.627 against 0.698), which says little
    run_ok("train", "--features", p["features"], "--out", p["model"], "--epochs", 4, "--quiet")
    run_ok("evaluate", "--model", p["model"], "--features", p["features"], "--out", p["report"], "--quiet")
    return p


def test_help_lists_every_offline_command():
    out = run_ok("--help").stdout
    for command in ("generate", "import-movielens", "build-features", "train", "evaluate", "demo"):
        assert command in out


def test_each_step_writes_its_documented_files(pipeline_run: dict[str, Path]):
    p = pipeline_run
    assert {"impressions.parquet", "users.parquet", "items.parquet"} <= {f.name for f in p["raw"].iterdir()}
    assert {"train.parquet", "valid.parquet", "test.parquet", "transforms.json", "manifest.json"} <= {
        f.name for f in p["features"].iterdir()}
    assert sorted(f.name for f in p["model"].iterdir()) == [
        ".recsys-output", "metadata.json", "model.safetensors", "spec.yaml", "transforms.json"]
    assert {"metrics.json", "report.html"} <= {f.name for f in p["report"].iterdir()}
    leftovers = [f.name for f in p["raw"].parent.iterdir() if f.name.startswith(".")]
    assert leftovers == []  # every write went through a temp name and a rename


def test_metrics_name_split_and_metric_and_are_sane(pipeline_run: dict[str, Path]):
    m = json.loads((pipeline_run["report"] / "metrics.json").read_text())
    for split in ("valid", "test"):
        for metric in ("auc", "logloss", "ndcg@10", "recall@10", "ece"):
            assert isinstance(m[f"{split}.{metric}"], float), f"{split}.{metric}"
    # Well above chance and popularity on data with a planted click model. (4 epochs on 16k rows whose
    # sessions carry a mood that the honest, 10-minute-delayed statistics cannot see: test AUC 0.698
    # measured, popularity 0.604, Bayes-optimal 0.778; docs/labels.md.)
    assert m["test.auc"] > 0.66
    assert m["test.auc"] > m["test.popularity.auc"] + 0.05
    assert m["test.auc"] <= m["test.bayes_optimal.auc"] + 0.01  # nothing beats the planted probabilities
    assert m["test.auc_over_bayes"] > 0.85  # 0.897 measured
    assert 0.0 < m["test.logloss"] < 0.69
    assert m["test.calibration"] and {"mean_predicted", "observed_rate"} <= set(m["test.calibration"][0])
    meta = json.loads((pipeline_run["model"] / "metadata.json").read_text())
    assert m["model_version"] == meta["model_version"]


def test_report_embeds_the_roc_calibration_and_training_plots(pipeline_run: dict[str, Path]):
    page = (pipeline_run["report"] / "report.html").read_text()
    for plot in ("roc", "calibration", "training"):
        assert f'alt="{plot}"' in page
    assert "data:image/png;base64," in page


BAD_INPUTS = {
    "missing spec file": (["build-features", "--spec", "/nonexistent/spec.yaml", "--raw", "{raw}"], "spec"),
    "bad --split": (["build-features", "--spec", "synthetic", "--raw", "{raw}", "--split", "weekly"], "--split"),
    "missing raw folder": (["build-features", "--spec", "synthetic", "--raw", "/nonexistent/raw"], "not found"),
    "missing features": (["train", "--features", "/nonexistent/features"], "build-features"),
    "missing model": (["evaluate", "--model", "/nonexistent/model", "--features", "{features}"], "recsys train"),
    "not a MovieLens folder": (["import-movielens", "{raw}"], "MovieLens"),
}


@pytest.fixture(scope="module")
def bad_input_runs(pipeline_run: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """Every bad-input case at once: each process spends most of its time importing, so running them
    side by side saves half a minute of the suite's wall time."""
    root = tmp_path_factory.mktemp("bad-input")
    started = {}
    for i, (case, (args, _)) in enumerate(BAD_INPUTS.items()):
        out = root / f"out{i}"
        filled = [a.format(raw=pipeline_run["raw"], features=pipeline_run["features"]) for a in args]
        started[case] = (start_cli(*filled, "--out", out), out)
    return {case: (finish(proc), out) for case, (proc, out) in started.items()}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case: str, bad_input_runs):
    result, out = bad_input_runs[case]
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert BAD_INPUTS[case][1] in lines[0] and "Traceback" not in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("args", [["train", "--features", "x", "--out", "y", "--epochz", "3"], ["train"]],
                         ids=["unknown option", "missing required option"])
def test_a_usage_error_exits_2_with_click_usage_text_not_a_traceback(args: list[str]):
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "Usage:" in result.stderr


def test_demo_runs_every_offline_step_without_serving(tmp_path: Path):
    out = tmp_path / "demo"
    result = run_ok("demo", "--no-serve", "--impressions", 20_000, "--out", out)
    for step in ("raw", "features", "model", "report"):
        assert str(out / step) in result.stdout
    assert "curl -s http://127.0.0.1:8000/v1/recommendations" in result.stdout  # what to try once served
    assert (out / "model" / "model.safetensors").is_file()
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert metrics["test.auc"] > 0.6
