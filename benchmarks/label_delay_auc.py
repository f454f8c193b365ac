"""Test AUC with labels known at once and with a label delay, the same settings otherwise
(docs/labels.md). Prints one JSON line per case on stdout.

    python benchmarks/label_delay_auc.py synthetic --impressions 100000 --epochs 3   # 10m vs none
    python benchmarks/label_delay_auc.py movielens-100k --delay 1h                    # none vs 1h

The synthetic pair trains the shipped spec (10-minute delay) and the same spec without it on
`recsys generate` data (100 users, 500 videos); a MovieLens spec trains as shipped (no delay: a
rating is known at once) and with `--delay`. Data and outputs go under --workdir, never the repo.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from pipelines.build_features import build_features
from pipelines.evaluate import run_evaluate
from pipelines.generate import SyntheticConfig, write
from pipelines.movielens import import_movielens
from pipelines.train import run_train
from recsys.spec import parse_spec

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec", choices=["synthetic", "movielens-100k", "movielens-100k-random"])
    ap.add_argument("--delay", default="10m", help="the delay tried on MovieLens (synthetic: the spec's)")
    ap.add_argument("--impressions", type=int, default=100_000)
    ap.add_argument("--epochs", type=int, default=None, help="cap (default: the spec's)")
    ap.add_argument("--movielens", type=Path, default=REPO.parent / "shared" / "data" / "movielens-100k")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/label-delay-auc"))
    args = ap.parse_args()
    data = yaml.safe_load((REPO / "pipelines" / "specs" / f"{args.spec}.yaml").read_text())
    raw = args.workdir / f"raw-{args.spec}"
    if args.spec == "synthetic":
        cases = {"10m": data, "none": {k: v for k, v in data.items() if k != "label_delay"}}
        if not raw.exists():
            write(SyntheticConfig(users=100, items=500, impressions=args.impressions), raw)
    else:
        cases = {"none": data, args.delay: {**data, "label_delay": args.delay}}
        if not raw.exists():
            import_movielens(args.movielens, raw)
    quiet = {"log": lambda _: None, "progress": False}
    for delay, spec in cases.items():
        out = args.workdir / f"{args.spec}-{delay}"
        build_features(parse_spec(spec), raw, out / "features", **quiet)
        run_train(out / "features", out / "model", {"epochs": args.epochs} if args.epochs else None, **quiet)
        m = run_evaluate(out / "model", out / "features", out / "report", **quiet)
        print(json.dumps({"spec": args.spec, "label_delay": delay, **{k: round(v, 4) for k, v in m.items()
                          if k.startswith("test.") and "auc" in k and isinstance(v, float)}}), flush=True)


if __name__ == "__main__":
    main()
