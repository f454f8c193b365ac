"""`recsys evaluate`: every metric split into cold and warm users, counts as integers, and a
training-curve plot that can be read (normal text, the chosen epoch marked, the legend off the curves)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from pipelines.evaluate import run_evaluate, segment_metrics, training_figure
from recsys.metrics import auc

matplotlib.use("Agg")


def test_cold_and_warm_metrics_are_those_of_their_own_rows():
    users = np.array(["a", "a", "b", "b", "c", "c", "c", "d"], dtype=object)
    label = np.array([1, 0, 0, 1, 1, 0, 0, 1])
    model = np.array([0.9, 0.1, 0.2, 0.3, 0.4, 0.8, 0.1, 0.6])
    warm = np.isin(users, ["a", "b"])
    m = segment_metrics("test", users, label, {"model": model, "popularity": model[::-1].copy()}, warm)
    assert m["test.warm.auc"] == auc(label[warm], model[warm]) and m["test.cold.auc"] == auc(label[~warm], model[~warm])
    assert (m["test.rows"], m["test.warm.rows"], m["test.cold.rows"]) == (8, 4, 4)
    assert (m["test.users"], m["test.warm.users"], m["test.cold.users"]) == (4, 2, 2)
    assert "test.popularity.cold.auc" in m and "test.popularity.cold.logloss" not in m  # counts are no probabilities
    assert "test.popularity.rows" not in m  # counts are the model's alone: the same rows for every scorer


def test_a_split_without_cold_users_says_so_instead_of_failing():
    m = segment_metrics("valid", np.array(["a", "a"]), np.array([1, 0]), {"model": np.array([0.7, 0.2])},
                        np.array([True, True]))
    assert m["valid.cold.rows"] == 0 and m["valid.warm.auc"] == 1.0


def test_evaluate_reports_cold_and_warm_users_and_integer_counts(tiny_artifact: Path, tiny_features: Path,
                                                                 tmp_path: Path):
    m = run_evaluate(tiny_artifact, tiny_features, tmp_path / "report", log=lambda _: None, progress=False)
    for split in ("valid", "test"):
        assert m[f"{split}.cold.rows"] + m[f"{split}.warm.rows"] == m[f"{split}.rows"]
        assert m[f"{split}.ndcg@10_users"] + m[f"{split}.users_no_positive"] + m[f"{split}.users_no_negative"] \
            == m[f"{split}.users"]
    assert m["test.warm.rows"] > 0 and isinstance(m["test.warm.auc"], float)
    assert m["best_epoch"] == json.loads((tiny_artifact / "metadata.json").read_text())["training"]["best_epoch"]
    page = (tmp_path / "report" / "report.html").read_text()
    assert f"<td>test.rows</td><td>{m['test.rows']:,}</td>" in page
    assert not re.search(r"<td>[^<]*(rows|users)[^<]*</td><td>[\d,]+\.\d+</td>", page)  # no 10000.0000
    assert "cold users" in page and "left out" in page


def _history(best: int, epochs: int = 6) -> list[dict[str, float]]:
    auc_curve = [0.70 + 0.02 * min(e, best) - 0.01 * max(e - best, 0) for e in range(1, epochs + 1)]
    return [{"epoch": float(e), "train_logloss": 0.6 - 0.02 * e, "valid_logloss": 0.6 - 0.01 * min(e, best),
             "valid_auc": a} for e, a in zip(range(1, epochs + 1), auc_curve, strict=True)]


@pytest.mark.parametrize("best", [1, 3, 6])
def test_training_plot_marks_the_chosen_epoch_and_keeps_the_legend_off_the_curves(best: int):
    fig = training_figure(_history(best), best)
    fig.canvas.draw()
    ax = fig.axes[0]
    chosen = [line for line in ax.get_lines() if list(line.get_xdata()) == [best, best]]
    assert chosen and f"epoch {best}" in chosen[0].get_label()
    legend = ax.get_legend()
    assert legend is not None
    assert not legend.get_window_extent().overlaps(ax.get_window_extent())  # below the axes: hides no point
    assert {t.get_text() for t in legend.get_texts()} >= {"train logloss", "valid logloss", "valid AUC"}
    sizes = [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]
    assert min(sizes) >= 10
    ticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert all(t.lstrip("−-").isdigit() for t in ticks)  # whole epochs
