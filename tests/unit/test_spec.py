"""The YAML feature spec: the shipped specs parse, and every mistake names the feature and the fix."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from recsys.errors import SpecError
from recsys.spec import StatisticFeature, load_spec, parse_duration, parse_spec

from .helpers import mini_spec_dict

SPECS = Path(__file__).resolve().parents[2] / "pipelines" / "specs"


def spec_error(data: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    message = str(info.value)
    assert "\n" not in message  # one line: it is what the CLI prints
    return message


def edited(**features: Any) -> dict[str, Any]:
    data = copy.deepcopy(mini_spec_dict())
    data["features"].update(features)
    return data


@pytest.mark.parametrize("name", sorted(p.stem for p in SPECS.glob("*.yaml")))
def test_shipped_specs_parse(name: str):
    spec = load_spec(SPECS / f"{name}.yaml")
    assert spec.features and spec.statistics


def test_spec_survives_its_own_yaml_dump():
    spec = load_spec(SPECS / "synthetic.yaml")
    import yaml

    assert parse_spec(yaml.safe_load(spec.to_yaml())) == spec


def test_bad_feature_type_names_the_feature_and_the_allowed_types():
    msg = spec_error(edited(device={"group": "context", "type": "categoricl"}))
    assert "feature 'device'" in msg
    assert "categorical, hashed, numeric, multi_hot, time, statistic" in msg


def test_extra_key_names_the_feature_the_field_and_the_fix():
    msg = spec_error(edited(device={"group": "context", "type": "categorical", "min_cout": 3}))
    assert "feature 'device'" in msg and "min_cout" in msg
    assert "remove it or check its spelling" in msg


def test_bad_value_names_the_feature_and_the_field():
    msg = spec_error(edited(device={"group": "context", "type": "categorical", "min_count": 0}))
    assert "feature 'device'" in msg and "min_count" in msg


def test_bad_group_names_the_feature():
    msg = spec_error(edited(device={"group": "ctx", "type": "categorical"}))
    assert "feature 'device'" in msg and "group" in msg


def test_cross_of_an_unknown_feature_names_it_and_says_to_declare_it():
    data = mini_spec_dict()
    data["crosses"] = [{"features": ["user_id", "colour"]}]
    msg = spec_error(data)
    assert "'colour'" in msg and "declare it" in msg


def test_cross_of_a_multi_hot_feature_is_refused_with_what_can_be_crossed():
    data = mini_spec_dict()
    data["crosses"] = [{"features": ["user_id", "genres"]}]
    msg = spec_error(data)
    assert "'genres'" in msg and "buckets" in msg


def test_statistic_key_that_is_not_declared_names_the_statistic_and_the_column():
    msg = spec_error(edited(user_mood_history={"type": "statistic", "key": ["user_id", "mood"]}))
    assert "feature 'user_mood_history'" in msg and "'mood'" in msg and "declare it" in msg


def test_statistic_key_must_start_with_an_entity_key():
    msg = spec_error(edited(country_history={"type": "statistic", "key": ["country"]}))
    assert "feature 'country_history'" in msg and "user_id" in msg


def test_statistic_over_a_declared_column_is_accepted():
    spec = parse_spec(edited(user_country={"type": "statistic", "key": ["user_id", "country"]}))
    assert isinstance(spec.features["user_country"], StatisticFeature)


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("1h", 3600), ("7d", 604_800),
                                              ("2w", 1_209_600), ("45", 45), (120, 120)])
def test_durations_accept_the_documented_units(text: object, seconds: int):
    assert parse_duration(text) == seconds  # type: ignore[arg-type]


def test_statistic_window_that_buckets_do_not_divide_names_the_feature_and_a_fix():
    msg = spec_error(edited(user_1h={"type": "statistic", "key": ["user_id"], "window": "1h", "window_buckets": 7}))
    assert "feature 'user_1h'" in msg and "window_buckets" in msg


def test_statistic_window_that_is_not_a_duration_names_the_feature():
    msg = spec_error(edited(user_w={"type": "statistic", "key": ["user_id"], "window": "soon"}))
    assert "feature 'user_w'" in msg and "90s, 30m, 1h" in msg


def test_statistic_window_is_resolved_to_seconds_and_buckets():
    spec = parse_spec(edited(user_1d={"type": "statistic", "key": ["user_id"], "window": "1d"}))
    feat = spec.features["user_1d"]
    assert (feat.window_s, feat.bucket_s) == (86_400, 3600)


def test_age_feature_without_its_timestamp_column_says_what_to_add():
    msg = spec_error(edited(item_age={"type": "time", "part": "age"}))
    assert "feature 'item_age'" in msg and "column" in msg


def test_unknown_top_level_key_is_refused():
    msg = spec_error({**mini_spec_dict(), "featurs": {}})
    assert "featurs" in msg


def test_a_spec_that_is_not_a_mapping_is_refused():
    with pytest.raises(SpecError, match="mapping"):
        parse_spec(["features"])  # type: ignore[arg-type]


def test_missing_spec_file_names_the_path_and_the_flag(tmp_path: Path):
    with pytest.raises(SpecError, match="--spec"):
        load_spec(tmp_path / "nope.yaml")


def test_invalid_yaml_is_a_spec_error(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("features: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path)


def test_source_columns_route_each_group_to_its_table():
    spec = parse_spec(mini_spec_dict())
    assert spec.source_columns("users") == ["country"]
    assert spec.source_columns("items") == ["genres", "duration", "upload_time"]
    assert spec.source_columns("impressions") == ["device"]
