"""train: encoded splits → Wide&Deep → versioned artifact (metrics and history in its metadata)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
import yaml

from recsys.artifact import save_artifact
from recsys.errors import DataError
from recsys.features import Batch, FeaturePipeline
from recsys.features.splits import read_split
from recsys.metrics import all_metrics
from recsys.model import WideDeep, WideDeepConfig
from recsys.spec import FeatureSpec, TrainingConfig, parse_spec
from recsys.training import TrainResult, predict, seed_everything, train, uses_sparse_grad

__all__ = ["load_features", "fit_model", "run_train", "POPULAR_ITEMS"]

POPULAR_ITEMS = 2000  # candidate set the service ranks when a request brings none


def load_features(features_dir: str | Path) -> tuple[FeatureSpec, FeaturePipeline, dict[str, Any]]:
    d = Path(features_dir)
    for f in ("spec.yaml", "transforms.json", "manifest.json"):
        if not (d / f).is_file():
            raise DataError(f"{d / f} not found (fix: run `recsys build-features --out {d}` first)")
    spec = parse_spec(yaml.safe_load((d / "spec.yaml").read_text()))
    pipeline = FeaturePipeline.from_dict(spec, json.loads((d / "transforms.json").read_text()))
    return spec, pipeline, json.loads((d / "manifest.json").read_text())


def fit_model(pipeline: FeaturePipeline, spec: FeatureSpec, cfg: TrainingConfig, train_b: Batch, valid_b: Batch | None,
              progress: bool = True, on_epoch: Callable[[dict[str, float]], None] | None = None,
              **config_overrides: object) -> tuple[WideDeep, TrainResult]:
    """Build the model from the fitted layout (dims never retyped) and train it, seeded."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    config = WideDeepConfig.from_layout(pipeline.layout, spec.model, sparse_grad=uses_sparse_grad(cfg),
                                        **config_overrides)
    model = WideDeep(config)
    result = train(model, train_b, valid_b, cfg, progress=progress, on_epoch=on_epoch)
    return model, result


def popular_items(meta: pd.DataFrame, spec: FeatureSpec, n: int = POPULAR_ITEMS) -> list[str]:
    counts = meta.groupby(spec.item_key, sort=False)[spec.label].agg(["sum", "count"])
    return counts.sort_values(["sum", "count"], ascending=False).index[:n].astype(str).tolist()


def _optimizers(cfg: TrainingConfig) -> str:
    """'sgd lr=0.1' or, with parts trained apart, 'deep sgd lr=0.1, wide sgd lr=0.003'."""
    parts = {"deep": cfg.deep_optimizer, "wide": cfg.wide_optimizer}
    if not any(parts.values()):
        return f"{cfg.optimizer.name} lr={cfg.optimizer.lr}"
    return ", ".join(f"{part} {(o or cfg.optimizer).name} lr={(o or cfg.optimizer).lr}" for part, o in parts.items())


def run_train(features_dir: str | Path, out_dir: str | Path, overrides: dict[str, Any] | None = None,
              log: Callable[[str], None] = print, progress: bool = True) -> tuple[Path, dict[str, Any]]:
    spec, pipeline, manifest = load_features(features_dir)
    cfg = spec.training.model_copy(update={k: v for k, v in (overrides or {}).items() if v is not None})
    if overrides and overrides.get("optimizer") is not None:
        cfg = cfg.model_copy(update={"optimizer": overrides["optimizer"]})
    spec = spec.model_copy(update={"training": cfg})
    train_enc, train_meta = read_split(features_dir, "train")
    valid_enc, valid_meta = read_split(features_dir, "valid")
    train_b = Batch.from_encoded(train_enc, train_meta[spec.label].to_numpy())
    valid_b = Batch.from_encoded(valid_enc, valid_meta[spec.label].to_numpy())
    log(f"training on {len(train_b):,} rows, validating on {len(valid_b):,} "
        f"({_optimizers(cfg)}, batch {cfg.batch_size}, ≤{cfg.epochs} epochs)")

    def report(row: dict[str, float]) -> None:
        log(f"  epoch {int(row['epoch'])}: train logloss {row['train_logloss']:.4f}  valid auc "
            f"{row.get('valid_auc', float('nan')):.4f}  {row['samples_per_second']:,.0f} samples/s")

    t0 = time.perf_counter()
    model, result = fit_model(pipeline, spec, cfg, train_b, valid_b, progress, report)
    valid_metrics = all_metrics(valid_meta[spec.user_key].to_numpy(), valid_meta[spec.label].to_numpy(),
                                predict(model, valid_b))
    meta = {
        "name": spec.name,
        "training": {**cfg.model_dump(mode="json"), "best_epoch": result.best_epoch,
                     "seconds": round(time.perf_counter() - t0, 2),
                     "samples_per_second": round(result.samples_per_second)},
        "history": result.history,
        "metrics": {f"valid.{k}": v for k, v in valid_metrics.items()},
        "data_fingerprint": manifest["data_fingerprint"],
        "rows": manifest["rows"],
        "popular_items": popular_items(train_meta, spec),
    }
    # The artifact carries the spec with the training settings actually used.
    pipeline.spec = spec
    path = save_artifact(out_dir, pipeline, model, meta)
    log(f"best epoch {result.best_epoch}: valid auc {valid_metrics['auc']:.4f}; artifact → {path}")
    return path, meta
