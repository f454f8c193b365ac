"""demo: every offline step on synthetic data in one command, then (optionally) serve the model."""

from __future__ import annotations

import time
from pathlib import Path

from pipelines.build_features import build_features
from pipelines.evaluate import run_evaluate
from pipelines.generate import SyntheticConfig, write
from pipelines.train import run_train
from recsys.spec import load_spec

__all__ = ["run_demo"]

SPEC = Path(__file__).parent / "specs" / "synthetic.yaml"


def run_demo(out: str | Path, impressions: int = 400_000, serve: bool = True, host: str = "127.0.0.1",
             port: int = 8000) -> dict[str, Path]:
    out = Path(out)
    paths = {"raw": out / "raw", "features": out / "features", "model": out / "model", "report": out / "report"}
    t0 = time.perf_counter()

    def step(name: str) -> None:
        print(f"\n== {name}  (t={time.perf_counter() - t0:.0f}s)")

    step("generate synthetic data")
    write(SyntheticConfig(impressions=impressions), paths["raw"])
    step("build features")
    build_features(load_spec(SPEC), paths["raw"], paths["features"])
    step("train")
    run_train(paths["features"], paths["model"])
    step("evaluate")
    run_evaluate(paths["model"], paths["features"], paths["report"])
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f}s")
    for name, p in paths.items():
        print(f"  {name:<9} {p}")
    if serve:
        from pipelines.serving import serve_model

        serve_model(paths["model"], raw_dir=paths["raw"], host=host, port=port)
    return paths
