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
from recsys.metrics import all_metrics, calibration_table, roc_curve
from recsys.spec import OptimizerConfig

__all__ = ["run_evaluate", "offline_scores", "BASELINE_OPTIMIZER"]

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
        for name, s in scored.items():
            m = all_metrics(users, y, s)
            if name == "popularity":  # counts, not probabilities: only ranking metrics mean something
                m = {k: v for k, v in m.items() if k in ("auc", "ndcg@10", "recall@10", "rows")}
            prefix = f"{split}." if name == "model" else f"{split}.{name}."
            metrics.update({f"{prefix}{k}": v for k, v in m.items()})
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
    out = Path(out_dir)
    write_json_atomic(out / "metrics.json", metrics)
    _write_report(out, artifact.version, metrics, curves)
    log(_summary(metrics))
    log(f"metrics → {out / 'metrics.json'}; report → {out / 'report.html'}")
    return metrics


def _summary(metrics: dict[str, Any]) -> str:
    rows = [("Wide&Deep", "test."), ("wide-only LR", "test.wide_only."), ("popularity", "test.popularity.")]
    if "test.bayes_optimal.auc" in metrics:
        rows.append(("Bayes-optimal", "test.bayes_optimal."))
    lines = [f"{'test split':<14}{'AUC':>8}{'logloss':>9}{'NDCG@10':>9}{'Recall@10':>10}"]
    for name, p in rows:
        def f(k: str, p: str = p) -> str:
            v = metrics.get(p + k)
            return f"{v:.4f}" if isinstance(v, float) else "-"
        lines.append(f"{name:<14}{f('auc'):>8}{f('logloss'):>9}{f('ndcg@10'):>9}{f('recall@10'):>10}")
    return "\n".join(lines)


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _write_report(out: Path, version: str, metrics: dict[str, Any], curves: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = {}
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for name, s in curves["scores"].items():
        fpr, tpr = roc_curve(curves["label"], s)
        ax.plot(fpr, tpr, label=f"{name} ({metrics.get('test.auc' if name == 'model' else f'test.{name}.auc', 0):.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, test split")
    ax.legend(fontsize=8)
    images["roc"] = _png(fig)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    table = metrics["test.calibration"]
    ax.plot([r["mean_predicted"] for r in table], [r["observed_rate"] for r in table], "o-", label="Wide&Deep")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="mean predicted", ylabel="observed positive rate", title="Calibration, test split")
    images["calibration"] = _png(fig)
    hist = metrics["history"]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ep = [h["epoch"] for h in hist]
    ax.plot(ep, [h["train_logloss"] for h in hist], "o-", label="train logloss")
    if hist and "valid_logloss" in hist[0]:
        ax.plot(ep, [h["valid_logloss"] for h in hist], "o-", label="valid logloss")
        ax2 = ax.twinx()
        ax2.plot(ep, [h["valid_auc"] for h in hist], "s--", color="tab:green", label="valid AUC")
        ax2.set_ylabel("valid AUC")
    ax.set(xlabel="epoch", ylabel="logloss", title="Training curves")
    ax.legend(fontsize=8, loc="upper center")
    images["training"] = _png(fig)
    plt.close("all")
    for name, data in images.items():
        (out / f"{name}.png").write_bytes(base64.b64decode(data))
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>" for k, v in metrics.items() if isinstance(v, float)
    )
    calib = "".join(
        f"<tr><td>{r['bin_low']:.1f}–{r['bin_high']:.1f}</td><td>{r['count']}</td><td>{r['mean_predicted']:.4f}</td>"
        f"<td>{r['observed_rate']:.4f}</td></tr>" for r in metrics["test.calibration"]
    )
    imgs = "".join(f'<img alt="{n}" src="data:image/png;base64,{d}">' for n, d in images.items())
    page = (
        f"<!doctype html><meta charset=utf-8><title>recsys evaluation {version}</title>"
        "<style>body{font:14px sans-serif;margin:2em}table{border-collapse:collapse}td{border:1px solid #ccc;"
        "padding:2px 8px}img{margin:4px;max-width:32%}</style>"
        f"<h1>Evaluation of model {html.escape(version)}</h1>"
        f"<pre>{html.escape(_summary(metrics))}</pre>{imgs}"
        "<h2>Calibration (test)</h2><table><tr><th>bin</th><th>rows</th><th>mean predicted</th>"
        f"<th>observed</th></tr>{calib}</table>"
        f"<h2>All metrics</h2><table>{rows}</table>"
    )
    tmp = out / ".report.html.tmp"
    tmp.write_text(page)
    tmp.replace(out / "report.html")
