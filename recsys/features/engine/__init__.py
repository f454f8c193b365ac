"""Feature engines: the same spec semantics on different compute backends.

An engine turns raw tables into the encoded splits (`recsys.features.splits`), `transforms.json`,
`spec.yaml` and `manifest.json` of one output folder. `arrow` (pandas / pyarrow in this process) is
the embedded default, `spark` runs the same semantics on Apache Spark (an optional extra); every
engine must produce the same folder for the same inputs (tests/spark proves it for these two).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Protocol

from recsys.errors import RecsysError
from recsys.spec import FeatureSpec

__all__ = ["FeatureEngine", "ENGINES", "get_engine"]


class FeatureEngine(Protocol):
    def __call__(self, spec: FeatureSpec, raw_dir: str | Path, out_dir: str | Path,
                 log: Callable[[str], None] = print, progress: bool = True) -> dict[str, Any]:
        """Build the features of `spec` from `raw_dir` into `out_dir`; returns the manifest."""
        ...


ENGINES = ("arrow", "spark")


def get_engine(name: str, **options: Any) -> FeatureEngine:
    """The engine called `name`, with its own options bound (spark: `settings=SparkSettings(...)`)."""
    if name == "arrow" and not options:
        from recsys.features.engine.arrow import build_features

        return build_features
    if name == "spark":
        from recsys.features.engine.spark import build_features as spark_build

        return functools.partial(spark_build, **options)
    if name == "arrow":
        raise RecsysError(f"the arrow engine takes no options (got {sorted(options)})")
    raise RecsysError(f"unknown feature engine '{name}' (choose one of {', '.join(ENGINES)})")
