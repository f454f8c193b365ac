"""demo: every offline step on synthetic data in one command, then (optionally) serve the model."""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["run_demo", "DEMO_USERS", "DEMO_ITEMS", "DEMO_IMPRESSIONS"]

SPEC = Path(__file__).parent / "specs" / "synthetic.yaml"
# The demo's community: 100 heavy users (400k impressions over 28 days ≈ 140 videos a user a day, a
# short-video app's typical watch volume) and 500 videos. The planted taste is per user (4 latent dims ×
# 24 categories), so what bounds any model is events per user: with 5,000 users (80 each) even an
# estimator that knows the planted model's form reaches only 0.945 × the Bayes-optimal AUC, with 100
# users 0.996. `recsys generate` keeps its own (larger) defaults.
DEMO_USERS = 100
DEMO_ITEMS = 500
DEMO_IMPRESSIONS = 400_000


def run_demo(out: str | Path, users: int = DEMO_USERS, items: int = DEMO_ITEMS, impressions: int = DEMO_IMPRESSIONS,
             serve: bool = True, host: str = "127.0.0.1", port: int = 8000) -> dict[str, Path]:
    # Imported here: the CLI imports this module for the defaults above at start-up.
    import pandas as pd

    from pipelines.build_features import build_features
    from pipelines.evaluate import run_evaluate
    from pipelines.generate import SyntheticConfig, write
    from pipelines.retrieval import run_index, run_train_retrieval
    from pipelines.serving import serve_model, try_it
    from pipelines.train import run_train
    from recsys.spec import load_spec

    out = Path(out)
    paths = {"raw": out / "raw", "features": out / "features", "model": out / "model", "report": out / "report"}
    t0 = time.perf_counter()

    def step(name: str) -> None:
        print(f"\n== {name}  (t={time.perf_counter() - t0:.0f}s)")

    step("generate synthetic data")
    written = write(SyntheticConfig(users=users, items=items, impressions=impressions), paths["raw"])
    step("build features")
    build_features(load_spec(SPEC), paths["raw"], paths["features"])
    step("train")
    run_train(paths["features"], paths["model"])
    step("train retrieval (two-tower) and index the catalog")
    run_train_retrieval(paths["features"], paths["model"], paths["raw"])
    run_index(paths["model"], paths["raw"])
    step("evaluate")
    run_evaluate(paths["model"], paths["features"], paths["report"], raw_dir=paths["raw"])
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f}s")
    for name, p in paths.items():
        print(f"  {name:<9} {p}")
    user = str(pd.read_parquet(written["users"], columns=["user_id"])["user_id"].iloc[0])
    if serve:  # prints a curl for `user` once the service answers
        serve_model(paths["model"], raw_dir=paths["raw"], host=host, port=port, example_user=user)
    else:
        print(f"\nserve it:  recsys serve --model {paths['model']} --raw {paths['raw']} --port {port}\n"
              f"then try: {try_it(host, port, user)}")
    return paths
