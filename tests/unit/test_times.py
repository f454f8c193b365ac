"""One time parser (`recsys.features.times`): the same instant encodes identically whether it is
unix seconds, a naive datetime (UTC), a zoned datetime, or an ISO-8601 string with 'Z' or an offset —
in the parser, in raw loading (impression timestamps and `part: age` columns, csv and parquet), in
the encoded features, and in materialized store records. A column that is not a time is an error
naming the table, the column and a bad value."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.build_features import build_features
from recsys.errors import DataError
from recsys.features.raw import load_raw
from recsys.features.splits import SPLITS, read_split
from recsys.features.times import parse_times, to_seconds
from recsys.spec import FeatureSpec, load_spec
from tests.conftest import REPO
from tests.e2e.helpers import run_cli

from .helpers import copy_raw

T = 1_767_225_600  # 2026-01-01T00:00:00Z


def test_every_representation_of_an_instant_parses_to_the_same_unix_seconds():
    same = [T, float(T) + 0.75, str(T), f"{T}.5", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00.9Z",
            "2026-01-01T05:30:00+05:30", "2025-12-31T19:00:00-05:00", "2026-01-01 00:00:00", "2026-01-01",
            dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 1, 9, tzinfo=dt.timezone(dt.timedelta(hours=9))),
            pd.Timestamp("2026-01-01 01:00", tz="Europe/Berlin"), np.datetime64("2026-01-01T00:00:00.250")]
    seconds, bad = parse_times(np.array(same, dtype=object))
    assert seconds.tolist() == [T] * len(same) and not bad.any()
    for column in (pd.Series(pd.to_datetime([T], unit="s")).dt.tz_localize("UTC").dt.tz_convert("Asia/Tokyo"),
                   pd.Series(pd.to_datetime([T], unit="s")), np.array([T], dtype="datetime64[s]"),
                   pd.Categorical(["2026-01-01T00:00:00Z"]), np.array([T], dtype=np.int32 if T < 2**31 else np.int64)):
        assert parse_times(column)[0].tolist() == [T], type(column)


def test_missing_values_stay_missing_and_fractions_floor_also_before_1970():
    seconds, bad = parse_times(np.array([None, np.nan, "", "  ", pd.NaT, -0.5, "1969-12-31T23:59:59.5Z"], dtype=object))
    assert parse_times(np.array([True, False]))[1].all()  # a boolean column is no time
    assert np.isnan(seconds[:5]).all() and seconds[5:].tolist() == [-1, -1] and not bad.any()


def test_years_beyond_the_nanosecond_range_parse():
    seconds, bad = parse_times(np.array(["0350-05-21T14:30:23Z", "7613-01-05T00:00:00Z"], dtype=object))
    assert seconds.tolist() == [-51110126977, 178076275200] and not bad.any()  # as datetime.datetime counts


def test_a_value_that_is_not_a_time_is_an_error_naming_table_column_and_value():
    with pytest.raises(DataError, match=r"table 'items' column 'upload_time': 2 values are not times, e\.g\. "
                                        r"'01/02/2026'"):
        to_seconds(np.array(["2026-01-01", "yesterday", "01/02/2026", None], dtype=object), "items", "upload_time")


@pytest.fixture(scope="module")
def spec() -> FeatureSpec:
    return load_spec(REPO / "pipelines" / "specs" / "synthetic.yaml")


def _representations(tiny_raw: Path, root: Path) -> dict[str, Path]:
    """The tiny raw tables with the impression timestamp and the items' upload_time written five ways."""
    imp = pd.read_parquet(tiny_raw / "impressions.parquet")
    items = pd.read_parquet(tiny_raw / "items.parquet")
    utc = lambda s: pd.to_datetime(s, unit="s", utc=True)  # noqa: E731
    iso = lambda s, fmt: utc(s).dt.strftime(fmt)  # noqa: E731
    shifted = lambda s, tz: utc(s).dt.tz_convert(tz).map(lambda t: t.isoformat())  # noqa: E731
    variants = {
        "zoned parquet": (imp.assign(timestamp=utc(imp["timestamp"]).dt.tz_convert("America/New_York")),
                          items.assign(upload_time=utc(items["upload_time"]).dt.tz_convert("Asia/Tokyo")), "parquet"),
        "naive parquet": (imp.assign(timestamp=utc(imp["timestamp"]).dt.tz_localize(None)),
                          items.assign(upload_time=utc(items["upload_time"]).dt.tz_localize(None)), "parquet"),
        "iso offset csv": (imp.assign(timestamp=shifted(imp["timestamp"], "Asia/Kolkata")),
                           items.assign(upload_time=iso(items["upload_time"], "%Y-%m-%dT%H:%M:%SZ")), "csv"),
        "naive csv": (imp.assign(timestamp=iso(imp["timestamp"], "%Y-%m-%d %H:%M:%S")),
                      items.assign(upload_time=items["upload_time"] + 0.25), "csv"),
    }
    out = {"unix parquet": tiny_raw}
    for name, (i, it, fmt) in variants.items():
        folder = root / name.replace(" ", "-")
        if fmt == "parquet":
            out[name] = copy_raw(tiny_raw, folder, impressions=i, items=it)
        else:
            folder.mkdir()
            i.to_csv(folder / "impressions.csv", index=False)
            it.to_csv(folder / "items.csv", index=False)
            pd.read_parquet(tiny_raw / "users.parquet").to_csv(folder / "users.csv", index=False)
            out[name] = folder
    return out


def test_raw_loading_and_encoded_features_are_equal_across_time_representations(spec: FeatureSpec, tiny_raw: Path,
                                                                                tmp_path: Path):
    folders = _representations(tiny_raw, tmp_path / "raw")
    base = load_raw(spec, tiny_raw).frame
    assert base["upload_time"].std() > 0  # a real feature, not a constant
    for name, folder in folders.items():
        frame = load_raw(spec, folder).frame
        assert frame["timestamp"].tolist() == base["timestamp"].tolist(), name
        assert frame["upload_time"].tolist() == base["upload_time"].tolist(), name
    quiet = {"log": lambda _: None, "progress": False}
    built = {name: build_features(spec, folder, tmp_path / "out" / name.replace(" ", "-"), **quiet)
             for name, folder in folders.items()}
    assert len({m["feature_version"] for m in built.values()}) == 1
    first = tmp_path / "out" / "unix-parquet"
    for name in folders:
        for split in SPLITS:
            a, b = read_split(first, split), read_split(tmp_path / "out" / name.replace(" ", "-"), split)
            for block in ("sparse", "multi", "dense", "wide"):
                np.testing.assert_array_equal(getattr(a[0], block), getattr(b[0], block), err_msg=f"{name} {block}")


def test_materialized_age_columns_are_the_parsed_seconds(spec: FeatureSpec, tiny_raw: Path, tmp_path: Path):
    from recsys.store.materialize import collect_records

    zoned = _representations(tiny_raw, tmp_path)["zoned parquet"]
    records, _ = collect_records(spec, zoned)
    upload = [a["upload_time"] for a in map(json.loads, records["items"].attributes.to_pylist()) if "upload_time" in a]
    want = pd.read_parquet(tiny_raw / "items.parquet")["upload_time"]
    assert all(isinstance(u, int) for u in upload)  # JSON numbers: the service parses no strings
    assert sorted(upload) == sorted(want.tolist())


def test_a_bad_time_column_exits_2_with_one_line_naming_table_column_and_value(tiny_raw: Path, tmp_path: Path):
    items = pd.read_parquet(tiny_raw / "items.parquet")
    items["upload_time"] = items["upload_time"].astype(str)
    items.loc[3, "upload_time"] = "last tuesday"
    raw = copy_raw(tiny_raw, tmp_path / "raw", items=items)
    result = run_cli("build-features", "--spec", "synthetic", "--raw", str(raw), "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: table 'items' column 'upload_time': 1 values are not times, e.g. 'last tuesday' "
                     "(fix: unix seconds, ISO-8601 such as 2026-01-01T12:00:00Z, or a datetime column)"]
    assert not (tmp_path / "out").exists()
