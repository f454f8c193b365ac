"""train: encoded splits → Wide&Deep → versioned artifact (metrics and history in its metadata).

Every rank of a data-parallel run executes `run_train` (`recsys train --nproc N` starts them under
torch's elastic agent, `torchrun … -m pipelines.cli train …` on many machines); rank 0 alone writes
checkpoints and the artifact. One process is the same code with a world of one.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml
from pydantic import BaseModel, ValidationError

from recsys.artifact import load_artifact, save_artifact
from recsys.errors import DataError, SpecError
from recsys.features import Batch, FeaturePipeline
from recsys.features.splits import split_files
from recsys.io import check_output
from recsys.metrics import all_metrics
from recsys.model import WideDeep, WideDeepConfig
from recsys.spec import FeatureSpec, TrainingConfig, parse_spec
from recsys.training import (
    CheckpointStore,
    Dist,
    ParquetSource,
    RunSettings,
    TensorSource,
    TrainResult,
    epoch_data,
    launched_by_torchrun,
    score_split,
    seed_everything,
    train,
    uses_sparse_grad,
    warm_start,
)
from recsys.training.checkpoint import CHECKPOINTS
from recsys.training.distributed import WorkerFailed, launch, restarts

__all__ = ["load_features", "resolve_training", "run_settings", "fit_model", "popular_items", "run_train",
           "train_command", "checkpoint_store", "check_outputs", "POPULAR_ITEMS"]

POPULAR_ITEMS = 2000  # candidate set the service ranks when a request brings none
# CLI flag of each override, for error messages.
_FLAGS = {"epochs": "--epochs", "batch_size": "--batch-size", "seed": "--seed", "threads": "--threads",
          "optimizer.name": "--optimizer", "optimizer.lr": "--lr", "memory_budget_mb": "--memory-budget-mb",
          "data": "--data", "shuffle_window_rows": "--shuffle-window", "data_shards": "--data-shards",
          "checkpoint_every_steps": "--checkpoint-every"}


def load_features(features_dir: str | Path) -> tuple[FeatureSpec, FeaturePipeline, dict[str, Any]]:
    d = Path(features_dir)
    for f in ("spec.yaml", "transforms.json", "manifest.json"):
        if not (d / f).is_file():
            raise DataError(f"{d / f} not found (fix: run `recsys build-features --out {d}` first)")
    spec = parse_spec(yaml.safe_load((d / "spec.yaml").read_text()))
    pipeline = FeaturePipeline.from_dict(spec, json.loads((d / "transforms.json").read_text()))
    return spec, pipeline, json.loads((d / "manifest.json").read_text())


def _validated(model: type[BaseModel], data: dict[str, Any]) -> Any:
    """`model(**data)` with an error naming the CLI flag (pydantic's model_copy skips validation)."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise SpecError(f"{_FLAGS.get(loc, loc)} {first.get('input')!r}: {first['msg'].removeprefix('Value error, ')}"
                        ) from None


def resolve_training(base: TrainingConfig, overrides: dict[str, Any]) -> TrainingConfig:
    """The spec's training section with the command line's overrides (None: not given), validated as
    strictly as the spec. `optimizer` (a name) and `lr` change the spec's `optimizer`; a part the
    spec trains apart (e.g. `wide_optimizer`) keeps its own."""
    data = base.model_dump()
    given = {k: v for k, v in overrides.items() if v is not None}
    if "optimizer" in given:
        data["optimizer"]["name"] = given.pop("optimizer")
    if "lr" in given:
        data["optimizer"]["lr"] = given.pop("lr")
    return _validated(TrainingConfig, {**data, **given})  # type: ignore[no-any-return]


def run_settings(**given: Any) -> RunSettings:
    """RunSettings from command-line values (None: the default)."""
    return _validated(RunSettings, {k: v for k, v in given.items() if v is not None})  # type: ignore[no-any-return]


def checkpoint_store(out_dir: str | Path, settings: RunSettings,
                     fingerprint: dict[str, Any] | None = None) -> CheckpointStore:
    out = Path(out_dir)
    return CheckpointStore(settings.checkpoint_dir or out.with_name(f"{out.name}.checkpoints"), fingerprint)


def _model(pipeline: FeaturePipeline, spec: FeatureSpec, cfg: TrainingConfig, dist: Dist,
           **config_overrides: object) -> WideDeep:
    """The model from the fitted layout (dims never retyped), seeded. Sparse table gradients only
    where the optimizer allows them and the backend carries them (gloo; nccl has no sparse all-reduce)."""
    seed_everything(cfg.seed)
    sparse = uses_sparse_grad(cfg) and dist.backend == "gloo"
    return WideDeep(WideDeepConfig.from_layout(pipeline.layout, spec.model, sparse_grad=sparse, **config_overrides))


def fit_model(pipeline: FeaturePipeline, spec: FeatureSpec, cfg: TrainingConfig, train_b: Batch, valid_b: Batch | None,
              progress: bool = True, on_epoch: Callable[[dict[str, float]], None] | None = None,
              **config_overrides: object) -> tuple[WideDeep, TrainResult]:
    """Train on splits already in memory, in this process (tests, the evaluation baseline)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model = _model(pipeline, spec, cfg, Dist(), **config_overrides)
    data, _ = epoch_data(TensorSource(train_b), RunSettings(), cfg.batch_size, cfg.seed)
    valid = TensorSource(valid_b) if valid_b is not None and valid_b.label is not None and len(valid_b) else None
    return model, train(model, data, valid, cfg, progress=progress, on_epoch=on_epoch)


def _item_counts(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    return frame.groupby(spec.item_key, sort=False, observed=True)[spec.label].agg(["sum", "count"])


def _top(counts: pd.DataFrame, n: int) -> list[str]:
    counts.index = counts.index.astype(str)
    top: list[str] = counts.sort_values(["sum", "count"], ascending=False).index[:n].tolist()
    return top


def popular_items(meta: pd.DataFrame, spec: FeatureSpec, n: int = POPULAR_ITEMS) -> list[str]:
    """Items by positives (then impressions) in a split's plain columns."""
    return _top(_item_counts(meta, spec), n)


def _popular_in_split(features_dir: str | Path, spec: FeatureSpec, n: int = POPULAR_ITEMS) -> list[str]:
    """`popular_items` of the train split, read a record batch at a time (it may not fit in memory)."""
    parts = [_item_counts(rb.to_pandas(), spec) for path in split_files(features_dir, "train")
             for rb in pq.ParquetFile(path).iter_batches(batch_size=1 << 20, columns=[spec.item_key, spec.label])]
    return _top(pd.concat(parts).groupby(level=0, observed=True).sum(), n)


def _user_codes(features_dir: str | Path, split: str, user_key: str) -> np.ndarray:
    """Integer codes of the split's user column (all the ranking metrics need), without one
    Python string per row."""
    table = pa.concat_tables([pq.read_table(p, columns=[user_key]) for p in split_files(features_dir, split)],
                             promote_options="default")
    if not pa.types.is_dictionary(table.schema.field(user_key).type):
        table = pa.table({user_key: table.column(user_key).dictionary_encode()})
    chunks = table.unify_dictionaries().column(user_key).chunks
    return np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in chunks]) if chunks else np.zeros(0, int)


def _optimizers(cfg: TrainingConfig) -> str:
    """'sgd lr=0.1' or, with parts trained apart, 'deep sgd lr=0.1, wide sgd lr=0.003'."""
    parts = {"deep": cfg.deep_optimizer, "wide": cfg.wide_optimizer}
    if not any(parts.values()):
        return f"{cfg.optimizer.name} lr={cfg.optimizer.lr}"
    return ", ".join(f"{part} {(o or cfg.optimizer).name} lr={(o or cfg.optimizer).lr}" for part, o in parts.items())


def _fingerprint(cfg: TrainingConfig, settings: RunSettings, manifest: dict[str, Any]) -> dict[str, Any]:
    """What a resumed run must share with the interrupted one (epochs and patience may change)."""
    return {"training": cfg.model_dump(mode="json", exclude={"epochs", "patience", "threads"}),
            "data_shards": settings.data_shards, "features": manifest.get("data_fingerprint"),
            "feature_version": manifest.get("feature_version")}


def check_outputs(features_dir: str | Path, out_dir: str | Path, settings: RunSettings,
                  init_from: str | Path | None = None) -> None:
    """Refuse, before any training, an artifact or checkpoint folder whose writing would replace an
    input, the working directory or files this project did not write (`recsys.io.check_output`)."""
    inputs = {"--features": features_dir, "--init-from": init_from}
    check_output(out_dir, "artifact", inputs)
    check_output(checkpoint_store(out_dir, settings).root, CHECKPOINTS, {**inputs, "--out": out_dir},
                 flag="--checkpoint-dir")


def _check_checkpoints(store: CheckpointStore, resume: bool) -> int | None:
    """Refuse to resume from a checkpoint of another run, or to start over one of an unfinished run.
    Returns the shuffle window the checkpoint was made with (None: a fresh run)."""
    if resume:
        state = store.state()
        if state.fingerprint != store.fingerprint:
            raise DataError(f"the checkpoint in {store.root} is of another run (other training settings, data shards "
                            f"or features); resume with the same ones, or remove the folder to start over")
        return state.window_steps
    if store.latest() is not None:
        raise DataError(f"{store.root} holds a checkpoint of an unfinished run ({store.describe()}): pass --resume "
                        f"to continue it, or remove the folder to start over")
    return None


def run_train(features_dir: str | Path, out_dir: str | Path, overrides: dict[str, Any] | None = None,
              log: Callable[[str], None] = print, progress: bool = True, settings: RunSettings | None = None,
              resume: bool = False, init_from: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Train and write the artifact (rank 0). `resume`: continue from the newest checkpoint;
    `init_from`: start from an artifact's weights (warm start). Returns (artifact path, metadata;
    empty on ranks other than 0)."""
    dist = Dist.from_env()
    try:
        done = _run(features_dir, out_dir, overrides or {}, log if dist.is_main else (lambda _: None), progress,
                    settings or RunSettings(), resume or restarts() > 0, init_from, dist)
        # Leave together (not on errors: the elastic agent stops the others): a rank that tore the
        # group down while rank 0 was still writing the artifact was seen to abort on its way out.
        dist.barrier()
        return done
    finally:
        dist.close()


def _run(features_dir: str | Path, out_dir: str | Path, overrides: dict[str, Any], log: Callable[[str], None],
         progress: bool, settings: RunSettings, resume: bool, init_from: str | Path | None,
         dist: Dist) -> tuple[Path, dict[str, Any]]:
    spec, pipeline, manifest = load_features(features_dir)
    cfg = resolve_training(spec.training, overrides)
    spec = spec.model_copy(update={"training": cfg})
    if cfg.threads or dist.active:
        torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // dist.local_world))
    check_outputs(features_dir, out_dir, settings, init_from)
    store = checkpoint_store(out_dir, settings, _fingerprint(cfg, settings, manifest))
    window_steps = _check_checkpoints(store, resume)
    if resume:
        log(f"resuming from {store.describe()} in {store.root}")
    train_src = ParquetSource(features_dir, "train", spec.label)
    valid_src = ParquetSource(features_dir, "valid", spec.label)
    data, how = epoch_data(train_src, settings, cfg.batch_size, cfg.seed, dist.rank, dist.world, window_steps)
    log(f"training on {data.plan.rows:,} rows, validating on {sum(valid_src.piece_rows):,} ({_optimizers(cfg)}, "
        f"batch {cfg.batch_size}, ≤{cfg.epochs} epochs"
        + (f", {dist.world} processes × {torch.get_num_threads()} threads, {dist.backend})" if dist.active else ")"))
    log(f"data: {how}")
    model = _model(pipeline, spec, cfg, dist).to(dist.device)
    if init_from is not None and not resume:
        old = load_artifact(init_from)
        log(f"warm start from {init_from}: {warm_start(model, pipeline, old.model, old.pipeline)}")
    if dist.active:
        torch.manual_seed(cfg.seed + dist.rank)  # every rank its own dropout draws

    def report(row: dict[str, float]) -> None:
        log(f"  epoch {int(row['epoch'])}: train logloss {row['train_logloss']:.4f}  valid auc "
            f"{row.get('valid_auc', float('nan')):.4f}  {row['samples_per_second']:,.0f} samples/s")

    result = train(model, data, valid_src, cfg, progress, report, dist=dist, store=store, resume=resume,
                   checkpoint_every_steps=settings.checkpoint_every_steps)
    if not dist.is_main:
        return Path(out_dir), {}
    scored = score_split(model, valid_src)
    assert scored is not None  # rank 0 of a world of one
    valid_metrics = all_metrics(_user_codes(features_dir, "valid", spec.user_key), scored[1], scored[0])
    meta = {
        "name": spec.name,
        "training": {**cfg.model_dump(mode="json"), "best_epoch": result.best_epoch,
                     "seconds": round(result.seconds, 2), "samples_per_second": round(result.samples_per_second),
                     "processes": dist.world, "data": how, "init_from": str(init_from) if init_from else None},
        "history": result.history,
        "metrics": {f"valid.{k}": v for k, v in valid_metrics.items()},
        "data_fingerprint": manifest["data_fingerprint"],
        "rows": manifest["rows"],
        "popular_items": _popular_in_split(features_dir, spec),
    }
    pipeline.spec = spec  # the artifact carries the spec with the training settings actually used
    path = save_artifact(out_dir, pipeline, model, meta)
    if not settings.keep_checkpoints:
        store.remove()
    log(f"best epoch {result.best_epoch}: valid auc {valid_metrics['auc']:.4f}; artifact → {path}")
    return path, meta


def train_command(features_dir: Path, out_dir: Path, overrides: dict[str, Any], settings: dict[str, Any], *,
                  nproc: int = 1, max_restarts: int = 0, resume: bool = False, init_from: Path | None = None,
                  progress: bool = True) -> None:
    """`recsys train`: validate everything first (one line, exit 2), then train here, or start
    `nproc` copies of this very command under torch's elastic agent (each one a rank)."""
    spec, _, manifest = load_features(features_dir)
    run = run_settings(**settings)
    resume = resume or restarts() > 0  # a rank restarted by the elastic agent continues the job
    check_outputs(features_dir, out_dir, run, init_from)
    store = checkpoint_store(out_dir, run, _fingerprint(resolve_training(spec.training, overrides), run, manifest))
    _check_checkpoints(store, resume)
    if init_from is not None and not (Path(init_from) / "metadata.json").is_file():
        raise DataError(f"--init-from {init_from}: no artifact there (metadata.json missing)")
    if nproc > 1 and not launched_by_torchrun():
        if run.data_shards % nproc:
            raise DataError(f"data_shards {run.data_shards} is not a multiple of the {nproc} processes (fix: "
                            f"--data-shards {nproc * -(-run.data_shards // nproc)}, or another --nproc)")
        try:
            launch(nproc, [sys.executable, "-m", "pipelines.cli", *sys.argv[1:]], max_restarts)
        except WorkerFailed as err:
            raise WorkerFailed(f"{err}. Newest checkpoint: {store.describe()} in {store.root}; rerun with --resume "
                               f"to continue from it") from None
        return
    run_train(features_dir, out_dir, overrides, progress=progress, settings=run, resume=resume, init_from=init_from)
    if launched_by_torchrun():
        _leave_group_process()


def _leave_group_process() -> NoReturn:
    """A rank whose work is done (every rank past the final barrier, the group destroyed, rank 0's
    artifact written and its files closed) exits at once, skipping interpreter finalization: there,
    gloo and torch state torn down out of order aborted a finished rank now and then (SIGABRT,
    "terminate called without an active exception"; pytorch/pytorch#179291 describes one such
    path), which the elastic agent rightly reports as a failed job."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
