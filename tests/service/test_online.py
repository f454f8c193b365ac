"""The library half of serving: which records a request reads and how raw values are typed."""

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
    assert plan.kind("upload_time") == "time" and plan.kind("user_id") == "text"


def test_item_statistics_keyed_by_a_user_attribute_are_served_from_the_item_record() -> None:
    """An item's counters per value of a user attribute (item x gender) live in the item's record,
    which is read whole with the user's: the user's value picks the counter after the one read."""
    plan = OnlinePlan.from_spec(_spec(item_gender={"type": "statistic", "key": ["item_id", "gender"]}))
    keys = KeySpace("t", "x")
    rows = Rows.for_user("u", np.array(["i1", "i2"], dtype=object), 100, {"device": "ios"})
    read = plan_read(plan, keys, rows)
    assert read.keys == [keys.user("u"), keys.item("i1"), keys.item("i2")]
    item = {"a": {}, "c": {counter_field("item_gender", "f", "c"): 7, counter_field("item_gender", "m", "c"): 2,
                           counter_field("item_gender", "f", "p"): 3}}
    for gender, count, pos in (("f", 7.0, 3.0), ("m", 2.0, 0.0), ("x", 0.0, 0.0)):
        cols = assemble(plan, rows, read, [{"a": {"gender": gender}, "c": {}}, item, None])
        assert cols["item_gender__count"].tolist() == [count, 0.0] and cols["item_gender__pos"].tolist() == [pos, 0.0]


def test_user_by_item_statistics_are_refused_when_the_spec_loads() -> None:
    with pytest.raises(SpecError, match="user_item.*grows without bound"):
        _spec(user_item={"type": "statistic", "key": ["user_id", "item_id"]})


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
    user = {"a": {}, "c": {counter_field("user_day", "", "c", b): 1 for b in (97, 98, 99, 100)}}
    item = {"a": {}, "c": {counter_field("item_dev", "ios", "c", b): n for b, n in ((97, 9), (98, 2), (100, 3))}}
    cols = assemble(plan, rows, read, [user, item, None])
    assert cols["user_day__count"].tolist() == [3.0, 3.0]
    assert cols["item_dev__count"].tolist() == [5.0, 0.0]
    assert cols["category"].tolist() == ["", ""] and np.isnan(cols["duration_s"]).all()


def test_event_counters_are_summed_per_field_in_order_of_first_appearance() -> None:
    """Two events of one user on one item: each counter field once, with the summed amount; a
    positives field that sums to 0 is no command at all."""
    from recsys.online import counter_updates

    plan = OnlinePlan.from_spec(_spec())
    keys = KeySpace("t", "x")
    rows = Rows.from_records(["u", "u"], ["i", "i"], [100, 100], [{"device": "ios"}] * 2, plan.context_columns)
    read = plan_read(plan, keys, rows, counters=False)
    cols = assemble(plan, rows, read, [{"a": {"country": "c1"}, "c": {}}, None, None])
    cols["category"] = np.array(["cat1", "cat1"], dtype=object)
    up = counter_updates(plan, keys, cols, np.ones(2), np.array([0, 0]))
    assert up.keys == [keys.user("u"), keys.item("i")]  # in order of first appearance
    assert all(set(a.values()) == {2} for a in up.amounts)  # counts only: positives are 0
    assert next(iter(up.amounts[0])) == counter_field("user_history", "", "c")
    up = counter_updates(plan, keys, cols, np.ones(2), np.array([1, 0]))
    assert up.amounts[1][counter_field("item_history", "", "p")] == 1
    up = counter_updates(plan, keys, cols, np.zeros(2), np.array([1, 0]))  # a late label: positives only
    assert all(set(a.values()) == {1} and all(f.split("@")[0].endswith(":p") for f in a) for a in up.amounts)


def test_events_drop_the_buckets_that_left_the_window_of_the_earliest_event() -> None:
    from recsys.online import counter_updates

    plan = OnlinePlan.from_spec(_spec(user_day={"type": "statistic", "key": ["user_id"], "window": "2d",
                                                "window_buckets": 2}))
    day = 86_400
    rows = Rows.from_records(["u", "u"], ["i", "j"], [100 * day + 5, 101 * day], [{}] * 2, plan.context_columns)
    read = plan_read(plan, KeySpace("t", "x"), rows, counters=False)
    cols = assemble(plan, rows, read, [None, None, None])
    up = counter_updates(plan, KeySpace("t", "x"), cols, np.ones(2), np.array([1, 0]))
    assert up.expired_before["user_day:"] == 98


def test_taking_rows_deduplicates_their_users_again() -> None:
    """Events are applied in chunks (`Rows.take`): each chunk's users are its own, in first-seen order."""
    rows = Rows.from_records(["a", "b", "a", "c"], ["i1", "i2", "i3", "i4"], [1, 2, 3, 4], [{"device": "x"}] * 4,
                             ["device"])
    part = rows.take(slice(1, 3))
    assert part.user_ids.tolist() == ["b", "a"] and part.row_user.tolist() == [0, 1]
    assert part.item_ids.tolist() == ["i2", "i3"] and part.timestamp.tolist() == [2, 3]
    picked = rows.take(np.array([3, 0]))
    assert picked.user_ids[picked.row_user].tolist() == ["c", "a"] and picked.context["device"].tolist() == ["x", "x"]
