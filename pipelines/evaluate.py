"""evaluate: the artifact on the valid and test splits beside two baselines, metrics.json + report.

Baselines on the same rows: item popularity (train positives per item) and a wide-only logistic
model (the same wide features, no deep part, trained here). On synthetic data the planted
`true_prob` gives the Bayes-optimal AUC: the ceiling any model can reach.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from pipelines.train import fit_model, load_features
from recsys.artifact import load_artifact, write_json_atomic
from recsys.errors import ArtifactError
from recsys.features import Batch
from recsys.features.splits import read_split
from recsys.inference import Predictor
from recsys.io import check_output, output_folder
from recsys.metrics import all_metrics, calibration_table, roc_curve
from recsys.spec import OptimizerConfig

__all__ = ["run_evaluate", "offline_scores", "segment_metrics", "training_figure", "roc_figure", "BASELINE_OPTIMIZER"]

BASELINE_OPTIMIZER = OptimizerConfig(name="adagrad", lr=0.05)


def offline_scores(predictor: Predictor, features_dir: str | Path, split: str) -> tuple[np.ndarray, pd.DataFrame]:
    """The offline scoring path: encoded split → the artifact's model (what the skew test compares)."""
    enc, meta = read_split(features_dir, split)
    return predictor.score_encoded(enc), meta


def _popularity(train_meta: pd.DataFrame, meta: pd.DataFrame, item_key: str, label: str) -> np.ndarray:
    pos = train_meta.groupby(item_key)[label].sum()
    return pos.reindex(meta[item_key]).fillna(0.0).to_numpy(dtype=np.float64)


def run_evaluate(model_dir: str | Path, features_dir: str | Path, out_dir: str | Path,
                 log: Callable[[str], None] = print, progress: bool = True,
                 raw_dir: str | Path | None = None) -> dict[str, Any]:
    inputs = {"--model": model_dir, "--features": features_dir}
    if raw_dir is not None:
        inputs["--raw"] = raw_dir
    check_output(out_dir, "evaluation", inputs)  # before any work
    artifact = load_artifact(model_dir)
    spec, pipeline, manifest = load_features(features_dir)
    if manifest["feature_version"] != artifact.feature_version:
        raise ArtifactError(f"artifact feature_version {artifact.feature_version} does not match the features in "
                            f"{features_dir} ({manifest['feature_version']}); evaluate on the features it was "
                            f"trained on")
    predictor = Predictor.from_artifact(artifact)
    train_enc, train_meta = read_split(features_dir, "train")
    y_key, u_key, i_key = spec.label, spec.user_key, spec.item_key

    log("training the wide-only logistic baseline on the train split")
    valid_enc, valid_meta = read_split(features_dir, "valid")
    # The baseline gets its own well-tried optimizer (a logistic model is not hurt by a large step),
    # so a small learning rate chosen for the deep model cannot make it look worse than it is.
    wide_cfg = artifact.pipeline.spec.training.model_copy(
        update={"optimizer": BASELINE_OPTIMIZER, "deep_optimizer": None, "wide_optimizer": None})
    wide_model, _ = fit_model(pipeline, spec, wide_cfg, Batch.from_encoded(train_enc, train_meta[y_key].to_numpy()),
                              Batch.from_encoded(valid_enc, valid_meta[y_key].to_numpy()), progress=progress,
                              use_deep=False)

    wide = Predictor(pipeline, wide_model, "wide-only")
    train_users = pd.Index(train_meta[u_key].unique())
    metrics: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    for split in ("valid", "test"):
        enc, meta = read_split(features_dir, split)
        prob = predictor.score_encoded(enc)
        y, users = meta[y_key].to_numpy(), meta[u_key].to_numpy()
        scored = {
            "model": prob,
            "popularity": _popularity(train_meta, meta, i_key, y_key),
            "wide_only": wide.score_encoded(enc),
        }
        if "true_prob" in meta:
            scored["bayes_optimal"] = meta["true_prob"].to_numpy(dtype=np.float64)
        warm = meta[u_key].isin(train_users).to_numpy()
        metrics.update(segment_metrics(split, users, y, scored, warm))
        if "bayes_optimal" in scored:
            metrics[f"{split}.auc_over_bayes"] = metrics[f"{split}.auc"] / metrics[f"{split}.bayes_optimal.auc"]
        if split == "test":
            curves = {"label": y, "scores": scored}
            metrics["test.calibration"] = calibration_table(y, prob)
    if raw_dir is not None:
        from pipelines.retrieval import retrieval_metrics

        metrics.update(retrieval_metrics(model_dir, features_dir, raw_dir, log=log, progress=progress))
    metrics["model_version"] = artifact.version
    metrics["history"] = artifact.metadata.get("history", [])
    metrics["best_epoch"] = artifact.metadata.get("training", {}).get("best_epoch")
    with output_folder(out_dir, "evaluation", inputs) as tmp:
        write_json_atomic(tmp / "metrics.json", metrics)
        _write_report(tmp, artifact.version, metrics, curves)
    out = Path(out_dir)
    log(_summary(metrics))
    log(f"metrics → {out / 'metrics.json'}; report → {out / 'report.html'}")
    return metrics


# Baselines report only what their scores mean: popularity is a count, not a probability.
_BASELINE_KEYS = {"popularity": ("auc", "ndcg@10", "recall@10"),
                  "wide_only": ("auc", "logloss", "ndcg@10", "recall@10", "ece"),
                  "bayes_optimal": ("auc", "logloss", "ndcg@10", "recall@10", "ece")}
SEGMENTS = {"": "all users", "cold.": "cold users (not in the train split)", "warm.": "warm users (in the train split)"}


def segment_metrics(split: str, users: np.ndarray, label: np.ndarray, scored: dict[str, np.ndarray],
                    warm: np.ndarray) -> dict[str, Any]:
    """Every scorer's metrics on all, cold and warm users of one split: `{split}.[{scorer}.][cold.|warm.]{metric}`
    (the model's without a scorer part). Counts (rows, users, the users the ranking metrics leave
    out) are the model's only: they are the same for every scorer."""
    out: dict[str, Any] = {}
    for segment, mask in (("", np.ones(len(label), bool)), ("cold.", ~warm), ("warm.", warm)):
        if not mask.any():
            out[f"{split}.{segment}rows"] = 0
            continue
        for name, s in scored.items():
            m = all_metrics(users[mask], label[mask], s[mask])
            if name != "model":
                m = {k: v for k, v in m.items() if k in _BASELINE_KEYS[name]}
            prefix = f"{split}." if name == "model" else f"{split}.{name}."
            out.update({f"{prefix}{segment}{k}": v for k, v in m.items()})
    return out


def _summary(metrics: dict[str, Any]) -> str:
    scorers = [("Wide&Deep", "test."), ("wide-only LR", "test.wide_only."), ("popularity", "test.popularity.")]
    if "test.bayes_optimal.auc" in metrics:
        scorers.append(("Bayes-optimal", "test.bayes_optimal."))

    def f(key: str) -> str:
        v = metrics.get(key)
        return f"{v:.4f}" if isinstance(v, float) else "-"

    lines = [f"{'test split':<14}{'AUC':>8}{'logloss':>9}{'NDCG@10':>9}{'Recall@10':>10}{'cold AUC':>10}"
             f"{'warm AUC':>10}"]
    for name, p in scorers:
        lines.append(f"{name:<14}{f(p + 'auc'):>8}{f(p + 'logloss'):>9}{f(p + 'ndcg@10'):>9}{f(p + 'recall@10'):>10}"
                     f"{f(p + 'cold.auc'):>10}{f(p + 'warm.auc'):>10}")
    for segment, what in SEGMENTS.items():
        t = f"test.{segment}"
        rows = metrics.get(f"{t}rows", 0)
        if not rows:
            lines.append(f"{what}: no rows")
            continue
        lines.append(
            f"{what}: {rows:,} rows, {metrics[t + 'users']:,} users | NDCG@10 over {metrics[t + 'ndcg@10_users']:,} "
            f"(left out: {metrics[t + 'users_no_positive']:,} without a positive, {metrics[t + 'users_no_negative']:,} "
            f"without a negative) | Recall@10 over {metrics[t + 'recall@10_users']:,} (left out: "
            f"{metrics[t + 'users_at_most_10_rows']:,} with <= 10 rows)")
    return "\n".join(lines)


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


_FONT: Any = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
              "xtick.labelsize": 10, "ytick.labelsize": 10}  # Any: matplotlib types the keys as Literals


def training_figure(history: list[dict[str, float]], best_epoch: int | None) -> Any:
    """Train and valid logloss (left axis) and valid AUC (right axis) per epoch, the chosen epoch
    marked; the legend sits below the axes, so it never hides a point."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    with plt.rc_context(_FONT):
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        epochs = [int(h["epoch"]) for h in history]
        handles = ax.plot(epochs, [h["train_logloss"] for h in history], "o-", label="train logloss")
        if history and "valid_logloss" in history[0]:
            handles += ax.plot(epochs, [h["valid_logloss"] for h in history], "o-", label="valid logloss")
            ax2 = ax.twinx()
            handles += ax2.plot(epochs, [h["valid_auc"] for h in history], "s--", color="tab:green", label="valid AUC")
            ax2.set_ylabel("valid AUC")
        if best_epoch:
            handles.append(ax.axvline(best_epoch, color="0.4", linestyle=":", linewidth=1.5,
                                      label=f"chosen: epoch {best_epoch}"))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="epoch", ylabel="logloss", title="Training curves")
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    return fig


def roc_figure(label: np.ndarray, scores: dict[str, np.ndarray], aucs: dict[str, float]) -> Any:
    import matplotlib.pyplot as plt

    with plt.rc_context(_FONT):
        fig, ax = plt.subplots(figsize=(5, 5))
        for name, s in scores.items():
            fpr, tpr = roc_curve(label, s)
            ax.plot(fpr, tpr, label=f"{name} ({aucs.get(name, float('nan')):.3f})")
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, test split")
        ax.legend(loc="lower right")  # a ROC curve's best point is the top left corner
    return fig


def calibration_figure(table: list[dict[str, float]]) -> Any:
    import matplotlib.pyplot as plt

    with plt.rc_context(_FONT):
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot([r["mean_predicted"] for r in table], [r["observed_rate"] for r in table], "o-", label="Wide&Deep")
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set(xlabel="mean predicted", ylabel="observed positive rate", title="Calibration, test split")
    return fig


def _write_report(out: Path, version: str, metrics: dict[str, Any], curves: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    aucs = {n: metrics.get("test.auc" if n == "model" else f"test.{n}.auc", float("nan")) for n in curves["scores"]}
    images = {"roc": _png(roc_figure(curves["label"], curves["scores"], aucs)),
              "calibration": _png(calibration_figure(metrics["test.calibration"])),
              "training": _png(training_figure(metrics["history"], metrics.get("best_epoch")))}
    plt.close("all")
    for name, data in images.items():
        (out / f"{name}.png").write_bytes(base64.b64decode(data))
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{_number(v)}</td></tr>" for k, v in metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool))
    calib = "".join(
        f"<tr><td>{r['bin_low']:.1f}–{r['bin_high']:.1f}</td><td>{r['count']:,}</td><td>{r['mean_predicted']:.4f}</td>"
        f"<td>{r['observed_rate']:.4f}</td></tr>" for r in metrics["test.calibration"]
    )
    imgs = "".join(f'<img alt="{n}" src="data:image/png;base64,{d}">' for n, d in images.items())
    page = (
        f"<!doctype html><meta charset=utf-8><title>recsys evaluation {version}</title>"
        "<style>body{font:15px sans-serif;margin:2em;max-width:75em}table{border-collapse:collapse}"
        "td{border:1px solid #ccc;padding:2px 8px}td+td{text-align:right}img{margin:4px;max-width:48%}"
        "pre{font-size:14px;white-space:pre-wrap}</style>"
        f"<h1>Evaluation of model {html.escape(version)}</h1>"
        f"<pre>{html.escape(_summary(metrics))}</pre>{imgs}"
        "<h2>Calibration (test)</h2><table><tr><th>bin</th><th>rows</th><th>mean predicted</th>"
        f"<th>observed</th></tr>{calib}</table>"
        f"<h2>All metrics</h2><table>{rows}</table>"
    )
    (out / "report.html").write_text(page)


def _number(v: int | float) -> str:
    """Counts as integers (10,000), everything else to four decimals."""
    return f"{v:,}" if isinstance(v, int) else f"{v:.4f}"
