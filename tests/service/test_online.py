"""The library half of serving: which fields a request reads and how raw values are typed."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from recsys.errors import SpecError
from recsys.features.statistics import counter_field
from recsys.online import OnlinePlan, Rows, assemble, plan_read
from recsys.online.columns import counter_fields, typed
from recsys.spec import parse_spec
from recsys.store.keys import KeySpace
from tests.conftest import REPO


def _spec(**extra_features: dict) -> object:
    data = yaml.safe_load((REPO / "pipelines" / "specs" / "synthetic.yaml").read_text())
    data["features"].update(extra_features)
    return parse_spec(data)


def test_plan_reads_attributes_from_the_right_tables_and_types_them() -> None:
    plan = OnlinePlan.from_spec(_spec())
    assert plan.user_columns == ("country", "language", "age_bucket", "gender")
    assert set(plan.item_columns) == {"creator_id", "category", "duration_s", "upload_time"}
    assert plan.context_columns == ("device",)
    assert plan.kind("category") == "text" and plan.kind("duration_s") == "number"
    assert plan.kind("upload_time") == "number" and plan.kind("user_id") == "text"


def test_item_keyed_statistic_with_a_user_attribute_is_refused_with_the_fix() -> None:
    spec = _spec(item_country={"type": "statistic", "key": ["item_id", "country"]})
    with pytest.raises(SpecError, match="item_country.*context columns"):
        OnlinePlan.from_spec(spec)


def test_counter_fields_format_like_counter_field() -> None:
    subs = ["", "cat1", "cat1", ""]
    assert counter_fields("s", subs, "c") == [counter_field("s", x, "c") for x in subs]
    buckets = [5, 5, 6, 7]
    assert counter_fields("s", subs, "p", buckets) == [counter_field("s", x, "p", b)
                                                       for x, b in zip(subs, buckets, strict=True)]


def test_typed_values_equal_the_offline_values() -> None:
    stored = np.array(["0.1", None, "53", "1e-7"], dtype=object)
    out = typed("number", stored)
    assert out.dtype == np.float64 and np.isnan(out[1])
    assert out[[0, 2, 3]].tolist() == [0.1, 53.0, 1e-7]
    assert typed("text", np.array(["a", None, 3], dtype=object)).tolist() == ["a", "", "3"]
    assert typed("number", np.array(["oops", "2"], dtype=object))[1] == 2.0  # pandas fallback, no crash


def test_windowed_statistics_sum_their_buckets_and_cold_rows_read_zero() -> None:
    spec = _spec(user_day={"type": "statistic", "key": ["user_id"], "window": "2d", "window_buckets": 2},
                 item_dev={"type": "statistic", "key": ["item_id", "device"], "window": "2d", "window_buckets": 2})
    plan = OnlinePlan.from_spec(spec)
    keys = KeySpace("t", "x")
    day = 86_400
    ts = 100 * day + 5
    rows = Rows.for_user("u", np.array(["i1", "i2"], dtype=object), ts, {"device": "ios"})
    read = plan_read(plan, keys, rows)
    # buckets 98, 99, 100 are inside the window of an impression in bucket 100; 97 is not
    user = {counter_field("user_day", "", "c", b): "1" for b in (97, 98, 99, 100)}
    fields = {f: None for f in read.fields}
    for b, n in ((97, "9"), (98, "2"), (100, "3")):
        fields[counter_field("item_dev", "ios", "c", b)] = n
    item_row = [fields[f] for f in read.fields]
    cols = assemble(plan, rows, read, ([user], item_row + [None] * len(read.fields)))
    assert cols["user_day__count"].tolist() == [3.0, 3.0]
    assert cols["item_dev__count"].tolist() == [5.0, 0.0]
    assert cols["category"].tolist() == ["", ""] and np.isnan(cols["duration_s"]).all()


def test_counters_that_are_not_integers_parse_as_numbers_like_before() -> None:
    """Counters parse on an integer fast path; a value something else wrote (a float, text) takes
    the float path of every other number: text reads as a missing counter, i.e. 0."""
    plan = OnlinePlan.from_spec(_spec())
    rows = Rows.for_user("u", np.array(["i1", "i2", "i3"], dtype=object), 100, {"device": "ios"})
    read = plan_read(plan, KeySpace("t", "x"), rows)
    count = read.fields.index(counter_field("item_history", "", "c"))

    def item_counts(values: list[str | None]) -> list[float]:
        flat: list[str | None] = []
        for v in values:
            row: list[str | None] = [None] * len(read.fields)
            row[count] = v
            flat += row
        return assemble(plan, rows, read, ([{}], flat))["item_history__count"].tolist()

    assert item_counts(["3", None, "12"]) == [3.0, 0.0, 12.0]
    assert item_counts(["3", None, "2.5"]) == [3.0, 0.0, 2.5]
    assert item_counts(["3", "lots", "1e3"]) == [3.0, 0.0, 1000.0]


def test_event_counters_are_summed_per_field_in_order_of_first_appearance() -> None:
    """Two events of one user on one item: each counter field once, with the summed amount; a
    positives field that sums to 0 is no command at all."""
    from recsys.online import counter_updates

    plan = OnlinePlan.from_spec(_spec())
    keys = KeySpace("t", "x")
    rows = Rows.from_records(["u", "u"], ["i", "i"], [100, 100], [{"device": "ios"}] * 2, plan.context_columns)
    read = plan_read(plan, keys, rows, counters=False)
    cols = assemble(plan, rows, read, ([{"country": "c1"}], [None] * (2 * len(read.fields))))
    cols["category"] = np.array(["cat1", "cat1"], dtype=object)
    k, f, a = counter_updates(plan, keys, cols, np.ones(2), np.array([0, 0]))
    assert len(set(zip(k, f, strict=True))) == len(k) and set(a) == {2}  # counts only: positives are 0
    assert f[0] == counter_field("user_history", "", "c") and k[0] == keys.user("u")
    k, f, a = counter_updates(plan, keys, cols, np.ones(2), np.array([1, 0]))
    assert dict(zip(f, a, strict=True))[counter_field("item_history", "", "p")] == 1
    k, f, a = counter_updates(plan, keys, cols, np.zeros(2), np.array([1, 0]))  # a late label: positives only
    assert set(a) == {1} and f and all(name.endswith(":p") for name in f)
