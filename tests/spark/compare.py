"""Equality of two build-features output folders: transforms.json, and the encoded splits row by
row (rows matched by their sorted order of keys, time and encoding: row order aside); and of the
two engines' refusals of the same bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recsys.errors import DataError
from recsys.features.splits import BLOCKS, SPLITS, read_split
from recsys.spec import FeatureSpec

__all__ = ["assert_same_transforms", "assert_same_splits", "same_refusal"]

TOL = 1e-6


def _close(a: Any, b: Any, where: str) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            _close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{where}: lengths {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert np.isclose(a, b, rtol=TOL, atol=TOL), f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_transforms(a: Path, b: Path) -> None:
    """Vocabularies (values AND their order, i.e. the ids), boundaries, layout: exact; floats to 1e-6."""
    _close(json.loads((a / "transforms.json").read_text()), json.loads((b / "transforms.json").read_text()),
           "transforms")


def _frame(folder: Path, split: str) -> pd.DataFrame:
    enc, meta = read_split(folder, split)
    cols = {c: meta[c].astype(str).to_numpy() if meta[c].dtype == object or isinstance(meta[c].dtype, pd.StringDtype)
            else meta[c].to_numpy() for c in meta.columns}
    for name in BLOCKS:
        block = getattr(enc, name)
        cols.update({f"{name}.{j}": block[:, j] for j in range(block.shape[1])})
    frame = pd.DataFrame(cols)
    order = [c for c in frame.columns if not c.startswith("dense.")]
    return frame.sort_values(order, kind="stable", ignore_index=True)


def assert_same_splits(a: Path, b: Path) -> None:
    """Every split: the same rows with the same ids (exact) and dense values (to 1e-6)."""
    for split in SPLITS:
        x, y = _frame(a, split), _frame(b, split)
        assert list(x.columns) == list(y.columns), f"{split}: columns differ"
        assert len(x) == len(y), f"{split}: {len(x)} != {len(y)} rows"
        for c in x.columns:
            u, v = x[c].to_numpy(), y[c].to_numpy()
            if c.startswith("dense.") or u.dtype.kind == "f":
                ok = np.isclose(u.astype(np.float64), v.astype(np.float64), rtol=TOL, atol=TOL, equal_nan=True)
                assert ok.all(), f"{split}.{c}: {int((~ok).sum())} rows differ, e.g. {u[~ok][:3]} vs {v[~ok][:3]}"
            else:
                same = u == v
                assert bool(np.all(same)), f"{split}.{c}: {int((~same).sum())} differ: {u[~same][:3]} vs {v[~same][:3]}"


def same_refusal(spec: FeatureSpec, raw: Path, out: Path) -> str:
    """Build `raw` with both engines (outputs under `out`), each refusing it with a DataError and
    writing nothing; the two messages are equal: that message."""
    from pipelines.build_features import build_features
    from recsys.features.engine.spark import SparkSettings

    messages = []
    for engine in ("arrow", "spark"):
        with pytest.raises(DataError) as err:
            build_features(spec, raw, out / engine, engine=engine, log=lambda _: None, progress=False,
                           **({"settings": SparkSettings()} if engine == "spark" else {}))
        messages.append(str(err.value))
        assert not (out / engine).exists()
    assert messages[0] == messages[1]
    return messages[0]
