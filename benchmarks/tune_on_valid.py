"""Choose a spec's training and model settings on the VALID split alone.

Reads the train and valid splits of one `build-features` output (never the test split: this script
does not open it), trains one model per candidate in this process and prints each candidate's best
valid AUC and epoch: a table on stderr, one JSON line per candidate on stdout. Candidates are JSON
objects with the spec sections they change, e.g.

    python benchmarks/tune_on_valid.py --features F \\
        '{"training": {"wide_optimizer": {"name": "sgd", "lr": 0.003}}}' \\
        '{"model": {"dropout": 0.3}, "training": {"optimizer": {"lr": 0.05}}}'

Keys of a section are merged into the spec's own (one level deep for optimizers: `{"lr": 0.05}`
keeps the name). The test AUC of the chosen spec is then printed once, by `recsys train` +
`recsys evaluate` on the shipped spec; hyperparameters are never compared on it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.train import fit_model, load_features  # noqa: E402
from recsys.features import Batch  # noqa: E402
from recsys.features.splits import read_split  # noqa: E402
from recsys.spec import ModelConfig, TrainingConfig  # noqa: E402


def _merge(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in change.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", type=Path, required=True, help="a build-features output folder")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("candidates", nargs="*", default=["{}"], help="JSON: spec sections to change ({} = as is)")
    args = ap.parse_args()
    spec, pipeline, _ = load_features(args.features)
    train_enc, train_meta = read_split(args.features, "train")
    valid_enc, valid_meta = read_split(args.features, "valid")
    train_b = Batch.from_encoded(train_enc, train_meta[spec.label].to_numpy())
    valid_b = Batch.from_encoded(valid_enc, valid_meta[spec.label].to_numpy())
    print(f"{'valid AUC':>9} {'epoch':>5} {'s':>5}  candidate  (load {os.getloadavg()[0]:.1f})", file=sys.stderr)
    for text in args.candidates:
        change = json.loads(text)
        training = TrainingConfig.model_validate(_merge(spec.training.model_dump(), {
            **change.get("training", {}), "threads": args.threads}))
        model = ModelConfig.model_validate(_merge(spec.model.model_dump(), change.get("model", {})))
        t0 = time.perf_counter()
        _, result = fit_model(pipeline, spec.model_copy(update={"model": model, "training": training}), training,
                              train_b, valid_b, progress=False)
        row = {"features": str(args.features), "change": change, "valid_auc": round(result.best_valid_auc, 4),
               "best_epoch": result.best_epoch, "seconds": round(time.perf_counter() - t0, 1),
               "load": round(os.getloadavg()[0], 1)}
        print(f"{row['valid_auc']:>9.4f} {row['best_epoch']:>5} {row['seconds']:>5.0f}  {text}", file=sys.stderr)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
