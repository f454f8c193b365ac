"""Helpers for the unit tests: a small spec that uses every feature type and raw columns for it,
built by hand so each test can plant exactly the values it needs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipelines.cli import main
from recsys.features import count_column, pos_column

DAY = 86_400
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z, a Thursday


def mini_spec_dict() -> dict[str, Any]:
    """Every feature type once, crosses over an id, a time part and a numeric bucket."""
    return {
        "name": "mini",
        "features": {
            "user_id": {"group": "user", "type": "categorical", "min_count": 2},
            "country": {"group": "user", "type": "hashed", "buckets": 16},
            "item_id": {"group": "content", "type": "categorical"},
            "genres": {"group": "content", "type": "multi_hot", "max_len": 3},
            "duration": {"group": "content", "type": "numeric", "log": True, "buckets": 4},
            "device": {"group": "context", "type": "categorical", "wide": False},
            "hour": {"group": "context", "type": "time", "part": "hour"},
            "weekday": {"group": "context", "type": "time", "part": "weekday"},
            "item_age": {"group": "context", "type": "time", "part": "age", "column": "upload_time", "buckets": 3},
            "user_history": {"type": "statistic", "key": ["user_id"], "smoothing": 2, "buckets": 3},
        },
        "crosses": [
            {"features": ["user_id", "hour"], "buckets": 50},
            {"features": ["duration", "country"], "buckets": 20},
        ],
        "model": {"embedding_dim": 4, "hidden": [8]},
        "training": {"optimizer": {"name": "adam", "lr": 0.01}, "epochs": 1, "batch_size": 64},
    }


def mini_columns(n: int = 200, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Raw columns for `mini_spec_dict` (statistic counters included) and a 0/1 label."""
    rng = np.random.default_rng(seed)
    genres = np.array(["Action|Comedy", "Drama", "Comedy|Drama|Horror|War", "", "Action"], dtype=object)
    cols = {
        "user_id": np.array([f"u{i}" for i in rng.integers(0, 30, n)], dtype=object),
        "country": np.array([f"c{i}" for i in rng.integers(0, 5, n)], dtype=object),
        "item_id": np.array([f"v{i}" for i in rng.integers(0, 20, n)], dtype=object),
        "genres": genres[rng.integers(0, len(genres), n)],
        "duration": rng.lognormal(3.0, 1.0, n),
        "device": rng.choice(np.array(["ios", "android", "web"], dtype=object), n),
        "timestamp": T0 + np.sort(rng.integers(0, 10 * DAY, n)),
        "upload_time": T0 - rng.integers(DAY, 30 * DAY, n),
        count_column("user_history"): rng.integers(0, 50, n).astype(np.float64),
    }
    cols[pos_column("user_history")] = np.floor(cols[count_column("user_history")] * rng.random(n))
    label = (rng.random(n) < 0.3).astype(np.int8)
    return cols, label


def copy_raw(src: Path, dst: Path, **frames: pd.DataFrame) -> Path:
    """A raw folder like `src`, with some tables replaced (e.g. impressions with a bad label)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("impressions", "users", "items"):
        frame = frames[name] if name in frames else pd.read_parquet(src / f"{name}.parquet")
        frame.to_parquet(dst / f"{name}.parquet", index=False)
    return dst


def run_main(args: list[object], monkeypatch: pytest.MonkeyPatch,
             capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`recsys ARGS` in this process (the console script's own `main`): (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["recsys", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    return code, capsys.readouterr().err


def assert_refused(code: int, err: str, *needles: str) -> None:
    """Exit 2, one line on stderr naming the fix and every needle, no traceback."""
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "fix" in lines[0] and all(n in lines[0] for n in needles), lines[0]
