"""build-features: raw tables + spec → point-in-time statistics, split, fitted transforms, encoded splits.

    out/
      train.parquet valid.parquet test.parquet   encoded blocks (sparse, multi, dense, wide) + label,
                                                 keys, timestamp, context and passthrough columns
      transforms.json  spec.yaml  manifest.json

The work is done by a feature engine (`recsys.features.engine`); this is the CLI's orchestration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from recsys.features.engine import get_engine
from recsys.io import check_output
from recsys.spec import FeatureSpec

__all__ = ["build_features"]


def build_features(spec: FeatureSpec, raw_dir: str | Path, out_dir: str | Path, log: Callable[[str], None] = print,
                   progress: bool = True, engine: str = "arrow", **engine_options: Any) -> dict[str, Any]:
    check_output(out_dir, "features", {"--raw": raw_dir})  # before any work: the engine checks again at the end
    return get_engine(engine, **engine_options)(spec, raw_dir, out_dir, log=log, progress=progress)
