"""The fitted column transforms: their ids, their edge cases and their JSON state."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pytest

from recsys.errors import NotFittedError
from recsys.features.transforms import (
    MultiHotVocabulary,
    NumericTransform,
    Vocabulary,
    as_float,
    as_str,
    day_of_week,
    hash_cross,
    hash_strings,
    hour_of_day,
)


def json_round_trip(state: dict) -> dict:
    """What transforms.json does to a state: through text and back."""
    return json.loads(json.dumps(state))


# ------------------------------------------------------------------ raw value normalization
def test_as_str_maps_missing_values_to_empty_and_integral_floats_to_ints():
    values = np.array([1.0, 2, None, np.nan, "x", b"y"], dtype=object)
    assert as_str(values).tolist() == ["1", "2", "", "", "x", "y"]


def test_as_float_turns_unparsable_strings_into_nan():
    out = as_float(np.array(["1.5", "abc", None, "3"], dtype=object))
    assert out[0] == 1.5 and out[3] == 3.0
    assert np.isnan(out[1]) and np.isnan(out[2])


# ------------------------------------------------------------------ Vocabulary
def test_vocabulary_ids_follow_descending_train_frequency_then_value():
    vocab = Vocabulary().fit(np.array(["b", "a", "c", "c", "a", "c"], dtype=object))
    assert vocab.values == ["c", "a", "b"]
    assert vocab.encode(np.array(["c", "a", "b"], dtype=object)).tolist() == [1, 2, 3]
    assert vocab.size == 4  # the shared unseen id 0 included


def test_vocabulary_unseen_and_missing_values_get_id_zero_without_raising():
    vocab = Vocabulary().fit(np.array(["a", "b"], dtype=object))
    ids = vocab.encode(np.array(["never-seen", None, np.nan, "", "a"], dtype=object))
    assert ids.tolist() == [0, 0, 0, 0, 1]


def test_vocabulary_never_assigns_an_id_to_missing_values():
    vocab = Vocabulary().fit(np.array([None, None, None, "a"], dtype=object))
    assert vocab.values == ["a"]


def test_vocabulary_min_count_sends_rare_values_to_the_unseen_id():
    vocab = Vocabulary(min_count=2).fit(np.array(["a", "a", "b", "b", "b", "rare"], dtype=object))
    assert vocab.values == ["b", "a"]
    assert vocab.encode(np.array(["rare"], dtype=object)).tolist() == [0]


def test_vocabulary_max_size_keeps_only_the_most_frequent_values():
    vocab = Vocabulary(max_size=2).fit(np.array(list("aaabbc"), dtype=object))
    assert vocab.values == ["a", "b"]


def test_vocabulary_encodes_an_integer_id_read_as_float_like_the_integer():
    vocab = Vocabulary().fit(np.array([1, 2, 2]))
    assert vocab.encode(np.array([2.0, 1.0])).tolist() == vocab.encode(np.array(["2", "1"], dtype=object)).tolist()


def test_vocabulary_request_lookup_equals_the_canonical_path_for_any_value_type():
    """encode's per-value dict path (plain object arrays, the request path) must give exactly the ids
    of the canonical path (factorize → as_str → index), including non-str values that miss."""
    vocab = Vocabulary().fit(np.array(["1", "2", "x", "x", "y"], dtype=object))
    for probe, ids in (
        (np.array([1, 2.0, "x", np.str_("y"), None, np.nan, "", "z", b"x", 3.5], dtype=object),
         [2, 3, 1, 4, 0, 0, 0, 0, 1, 0]),
        (np.array(["x", 1, 2.0, None], dtype=object), [1, 2, 3, 0]),  # str first, then other types
    ):
        assert vocab.encode(probe).tolist() == vocab.encode_distinct(as_str(probe)).tolist() == ids


def test_vocabulary_encodes_a_constant_column_like_its_single_value():
    vocab = Vocabulary().fit(np.array(["a", "b", "b"], dtype=object))
    for value, expected in (("a", 2), ("b", 1), ("unseen", 0), (None, 0), (1.0, 0)):
        column = np.array([value] * 4, dtype=object)
        assert vocab.encode(column).tolist() == [expected] * 4
    assert vocab.encode(np.array(["a", "b", "a"], dtype=object)).tolist() == [2, 1, 2]  # same ends, not constant


def test_as_str_canonicalizes_every_value_not_just_the_first():
    assert as_str(np.array(["x", 1, 2.0, None], dtype=object)).tolist() == ["x", "1", "2", ""]


def test_vocabulary_json_round_trip_gives_identical_ids():
    values = np.array(list("abracadabra") + [None], dtype=object)
    vocab = Vocabulary(min_count=2, max_size=3).fit(values)
    loaded = Vocabulary.from_dict(json_round_trip(vocab.to_dict()))
    probe = np.array(list("abcdrz") + [None], dtype=object)
    assert loaded.encode(probe).tolist() == vocab.encode(probe).tolist()
    assert (loaded.min_count, loaded.max_size, loaded.size) == (2, 3, vocab.size)


def test_vocabulary_used_before_fit_raises_not_fitted():
    with pytest.raises(NotFittedError):
        Vocabulary().encode(np.array(["a"], dtype=object))


# ------------------------------------------------------------------ MultiHotVocabulary
@pytest.fixture
def genres() -> MultiHotVocabulary:
    return MultiHotVocabulary("|", max_len=3).fit(np.array(["A|B", "B|C|D", "A"], dtype=object))


def test_multi_hot_pads_with_zeros_at_the_end(genres: MultiHotVocabulary):
    assert genres.encode(np.array(["A", "B|C"], dtype=object)).tolist() == [[1, 0, 0], [2, 3, 0]]


def test_multi_hot_truncates_to_max_len(genres: MultiHotVocabulary):
    assert genres.encode(np.array(["A|B|C|D"], dtype=object)).tolist() == [[1, 2, 3]]


def test_multi_hot_drops_unseen_tokens_and_compacts_the_rest_to_the_left(genres: MultiHotVocabulary):
    out = genres.encode(np.array(["zz|A|B", "A|yy|B", "zz", "", None], dtype=object))
    assert out.tolist() == [[1, 2, 0], [1, 2, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]]


def test_multi_hot_min_count_applies_to_tokens():
    m = MultiHotVocabulary("|", max_len=4, min_count=2).fit(np.array(["A|B", "B|C", "A"], dtype=object))
    assert m.vocab.values == ["A", "B"]
    assert m.encode(np.array(["C|B"], dtype=object)).tolist() == [[2, 0, 0, 0]]


def test_multi_hot_uses_the_declared_separator():
    m = MultiHotVocabulary(",", max_len=2).fit(np.array(["x,y", "y"], dtype=object))
    assert m.encode(np.array(["y,x", "x|y"], dtype=object)).tolist() == [[1, 2], [0, 0]]


def test_multi_hot_json_round_trip_gives_identical_ids(genres: MultiHotVocabulary):
    loaded = MultiHotVocabulary.from_dict(json_round_trip(genres.to_dict()))
    probe = np.array(["A|B|C|D", "D|zz|A", "", None], dtype=object)
    np.testing.assert_array_equal(loaded.encode(probe), genres.encode(probe))
    assert loaded.separator == "|" and loaded.max_len == 3


# ------------------------------------------------------------------ hashing
def test_hash_strings_is_pinned_across_processes_and_library_versions():
    """A changed hash would silently remap every hashed id of a trained model: pin the values."""
    assert hash_strings(np.array(["a", "b", "user_1"], dtype=object), 1000).tolist() == [478, 512, 395]


def test_hash_strings_stays_in_1_to_buckets_minus_1_and_maps_missing_to_zero():
    values = np.array([f"v{i}" for i in range(5000)] + ["", None], dtype=object)
    ids = hash_strings(values, 7)
    assert ids[:-2].min() >= 1 and ids[:-2].max() <= 6
    assert ids[-2:].tolist() == [0, 0]
    assert len(np.unique(ids[:-2])) == 6  # well spread: every bucket used


def test_hash_strings_gives_the_same_id_to_the_same_value_in_any_batch():
    alone = hash_strings(np.array(["item-42"], dtype=object), 100)
    in_batch = hash_strings(np.array(["x", "item-42", "y"], dtype=object), 100)
    assert alone[0] == in_batch[1]


def test_hash_cross_is_pinned_and_in_range():
    ids = hash_cross([np.array([1, 2, 3]), np.array([4, 5, 6])], 1000)
    assert ids.tolist() == [137, 907, 798]
    many = hash_cross([np.arange(10_000), np.arange(10_000) % 7], 10)
    assert many.min() >= 1 and many.max() <= 9


def test_hash_cross_depends_on_the_order_of_its_components():
    a, b = np.arange(1, 200), np.arange(200, 399)
    assert (hash_cross([a, b], 10**6) != hash_cross([b, a], 10**6)).mean() > 0.99


# ------------------------------------------------------------------ NumericTransform
def test_numeric_standardizes_with_the_train_mean_and_std():
    t = NumericTransform(log=False, standardize=True, buckets=0, fill=None).fit(np.array([1.0, 2.0, 3.0, 4.0]))
    out = t.dense(np.array([2.5, 10.0]))
    np.testing.assert_allclose(out, [(2.5 - 2.5) / np.std([1, 2, 3, 4]), (10 - 2.5) / np.std([1, 2, 3, 4])], rtol=1e-6)
    assert out.dtype == np.float32


def test_numeric_log_is_log1p_of_the_clipped_value():
    t = NumericTransform(log=True, standardize=False, buckets=0, fill=None).fit(np.array([0.0, 9.0]))
    np.testing.assert_allclose(t.dense(np.array([-5.0, 0.0, np.e - 1])), [0.0, 0.0, 1.0], rtol=1e-6)


def test_numeric_fills_missing_values_with_the_train_mean():
    t = NumericTransform(log=False, standardize=False, buckets=0, fill=None).fit(np.array([1.0, np.nan, 3.0]))
    assert t.fill == 2.0
    np.testing.assert_allclose(t.dense(np.array([np.nan, np.inf], dtype=np.float64)), [2.0, 2.0])
    assert t.dense(np.array(["not a number"], dtype=object)).tolist() == [2.0]


def test_numeric_declared_fill_wins_over_the_mean():
    t = NumericTransform(log=False, standardize=False, buckets=0, fill=-1.0).fit(np.array([1.0, np.nan, 3.0]))
    assert t.dense(np.array([np.nan])).tolist() == [-1.0]


def test_numeric_constant_column_standardizes_to_zero_not_nan():
    t = NumericTransform(log=False, standardize=True, buckets=0, fill=None).fit(np.full(10, 5.0))
    assert t.dense(np.array([5.0])).tolist() == [0.0]


def test_numeric_quantile_buckets_are_monotone_and_cover_every_value():
    x = np.arange(1000, dtype=np.float64)
    t = NumericTransform(log=False, standardize=True, buckets=4, fill=None).fit(x)
    assert len(t.boundaries) == 3 and t.bucket_count == 5
    ids = t.bucket_ids(np.array([-1e9, 0, 300, 600, 999, 1e9]))
    assert ids.tolist() == [1, 1, 2, 3, 4, 4]
    counts = np.bincount(t.bucket_ids(x), minlength=5)
    assert counts[0] == 0 and all(240 <= c <= 260 for c in counts[1:])


def test_numeric_buckets_collapse_duplicate_quantiles():
    t = NumericTransform(log=False, standardize=False, buckets=10, fill=None).fit(np.r_[np.zeros(95), np.ones(5)])
    assert t.boundaries == sorted(set(t.boundaries))
    assert t.bucket_ids(np.array([0.0, 1.0])).max() < t.bucket_count


def test_numeric_json_round_trip_gives_identical_values_and_buckets():
    rng = np.random.default_rng(0)
    t = NumericTransform(log=True, standardize=True, buckets=8, fill=None).fit(rng.lognormal(size=500))
    loaded = NumericTransform.from_dict(json_round_trip(t.to_dict()))
    probe = np.r_[rng.lognormal(size=50), np.nan, -3.0]
    np.testing.assert_array_equal(loaded.dense(probe), t.dense(probe))
    np.testing.assert_array_equal(loaded.bucket_ids(probe), t.bucket_ids(probe))


def test_numeric_used_before_fit_raises_not_fitted():
    with pytest.raises(NotFittedError):
        NumericTransform(log=False, standardize=True, buckets=0, fill=None).dense(np.array([1.0]))


# ------------------------------------------------------------------ time parts
def test_hour_and_weekday_match_the_utc_calendar():
    rng = np.random.default_rng(1)
    ts = rng.integers(0, 2_000_000_000, 500)
    dates = [datetime.fromtimestamp(int(t), tz=timezone.utc) for t in ts]
    assert hour_of_day(ts).tolist() == [d.hour + 1 for d in dates]
    assert day_of_week(ts).tolist() == [d.isoweekday() for d in dates]  # Monday=1 .. Sunday=7


def test_time_parts_of_known_instants():
    thursday_midnight = 1_767_225_600  # 2026-01-01T00:00:00Z
    sunday_2359 = thursday_midnight + 3 * 86_400 + 23 * 3600 + 59 * 60
    assert hour_of_day(np.array([thursday_midnight, sunday_2359])).tolist() == [1, 24]
    assert day_of_week(np.array([thursday_midnight, sunday_2359])).tolist() == [4, 7]


def test_time_parts_accept_float_and_string_timestamps():
    assert hour_of_day(np.array(["7200"], dtype=object)).tolist() == [3]
    assert day_of_week(np.array([0.0])).tolist() == [4]  # 1970-01-01 was a Thursday
