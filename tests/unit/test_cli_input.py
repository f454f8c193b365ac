"""Bad input to the CLI is exit 2 and one line naming the file or the field and the fix, never a
traceback: empty or corrupt tables, text in a numeric column, out-of-range options and overrides.
Progress bars stay out of logs (stderr that is not a terminal)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from .helpers import assert_refused, copy_raw, run_main

TABLE_FILES = {
    "0-byte csv": ("impressions.csv", b""),
    "0-byte parquet": ("impressions.parquet", b""),
    "random bytes as parquet": ("impressions.parquet", np.random.default_rng(0).bytes(4096)),
    "a truncated csv.gz": ("impressions.csv.gz", gzip.compress(b"user_id,item_id\nu1,v1\n" * 50)[:40]),
    "an empty part file": ("impressions/part-00001.parquet", b""),
}


@pytest.mark.parametrize("case", TABLE_FILES, ids=list(TABLE_FILES))
def test_an_empty_or_corrupt_table_file_is_named_in_one_line(
        case: str, tiny_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("users", "items"):
        (raw / f"{name}.parquet").write_bytes((tiny_raw / f"{name}.parquet").read_bytes())
    name, data = TABLE_FILES[case]
    (raw / name).parent.mkdir(exist_ok=True)
    if name.startswith("impressions/"):  # a folder of parts, one of them empty
        (raw / "impressions" / "part-00000.parquet").write_bytes((tiny_raw / "impressions.parquet").read_bytes())
    (raw / name).write_bytes(data)
    code, err = run_main(["build-features", "--spec", "synthetic", "--raw", raw, "--out", tmp_path / "out", "--quiet"],
                         monkeypatch, capsys)
    assert_refused(code, err, str(raw / name))
    assert not (tmp_path / "out").exists()


def test_text_in_a_numeric_column_names_the_feature_the_table_and_examples(
        tiny_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    items = pd.read_parquet(tiny_raw / "items.parquet")
    duration = items["duration_s"].astype(object)
    duration.iloc[[3, 5]] = ["long", "12s"]
    duration.iloc[7] = None  # missing is fine: the feature's fill value
    raw = copy_raw(tiny_raw, tmp_path / "raw")
    items.assign(duration_s=duration.astype(str).where(duration.notna(), "")).to_csv(raw / "items.csv", index=False)
    (raw / "items.parquet").unlink()
    code, err = run_main(["build-features", "--spec", "synthetic", "--raw", raw, "--out", tmp_path / "out", "--quiet"],
                         monkeypatch, capsys)
    assert_refused(code, err, "feature 'duration_s'", "table 'items'", "'long'", "'12s'")


def test_numbers_as_text_and_missing_values_pass(tiny_raw: Path, tmp_path: Path) -> None:
    from pipelines.build_features import build_features
    from pipelines.cli import resolve_spec
    from recsys.spec import load_spec

    items = pd.read_parquet(tiny_raw / "items.parquet")
    text = items["duration_s"].astype(str).astype(object)
    text.iloc[2] = None
    raw = copy_raw(tiny_raw, tmp_path / "raw", items=items.assign(duration_s=text))
    build_features(load_spec(resolve_spec("synthetic")), raw, tmp_path / "out", log=lambda _: None, progress=False)
    assert (tmp_path / "out" / "train.parquet").is_file()


TRAIN_OVERRIDES = {
    "--batch-size 0": (["--batch-size", 0], "--batch-size"),
    "--epochs 0": (["--epochs", 0], "--epochs"),
    "--seed -1": (["--seed", -1], "--seed"),
    "--lr inf": (["--lr", "inf"], "--lr"),
    "--lr nan": (["--lr", "nan"], "--lr"),
    "--threads 0": (["--threads", 0], "--threads"),
    "--data-shards 0": (["--data-shards", 0], "--data-shards"),
    "--epochs abc": (["--epochs", "abc"], "--epochs"),
}


@pytest.mark.parametrize("case", TRAIN_OVERRIDES, ids=list(TRAIN_OVERRIDES))
def test_a_bad_training_override_is_refused_before_training(
        case: str, tiny_features: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    args, needle = TRAIN_OVERRIDES[case]
    code, err = run_main(["train", "--features", tiny_features, "--out", tmp_path / "model", *args, "--quiet"],
                         monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("args", [["generate", "--users", 0], ["generate", "--impressions", 0],
                                  ["generate", "--days", 0], ["generate", "--seed", -1],
                                  ["serve", "--model", "m", "--raw", "r", "--port", 70000],
                                  ["serve", "--model", "m", "--raw", "r", "--workers", 0],
                                  ["materialize", "--model", "m", "--raw", "r", "--ttl", 0]],
                         ids=lambda a: " ".join(map(str, a[:1] + a[-2:])))
def test_an_option_out_of_range_is_one_line(
        args: list[object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = run_main([*args[:1], "--out", tmp_path / "out", *args[1:]] if args[0] == "generate" else args,
                         monkeypatch, capsys)
    assert_refused(code, err, str(args[-2]))
    assert list(tmp_path.iterdir()) == []


def test_no_progress_bar_when_stderr_is_not_a_terminal(
        tiny_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_main(["build-features", "--spec", "synthetic", "--raw", tiny_raw, "--out", tmp_path / "f"],
                         monkeypatch, capsys)  # no --quiet: captured stderr is not a terminal
    assert code == 0 and "\r" not in err and "encode" not in err, err
