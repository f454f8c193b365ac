"""One code path, two input forms: build-features hands the transforms pandas Categoricals (10 M rows
as codes), the service hands them plain arrays. Both must fit and encode to the same ids."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.features import FeaturePipeline
from recsys.features.statistics import key_codes
from recsys.features.transforms import MultiHotVocabulary, Vocabulary, as_dictionary, as_float, as_str, hash_strings
from recsys.spec import FeatureSpec

from .helpers import mini_columns

MESSY = np.array(["b", "a", None, "c", "c", 1.0, 1, "1", "a|b", "", np.nan, b"y", 2.5], dtype=object)


def as_categoricals(cols: dict[str, np.ndarray]) -> dict[str, object]:
    return {k: pd.Categorical(v) if v.dtype == object else v for k, v in cols.items()}


@pytest.mark.parametrize("values", [
    MESSY,
    np.array(["x", "", None, "x"], dtype=object),
    np.array([3, 1, 3, 7]),
    np.array([1.0, np.nan, 2.5, 1.0]),
])
def test_as_dictionary_rebuilds_as_str_with_distinct_uniques_and_nonnegative_codes(values: np.ndarray):
    for form in (values, pd.Categorical(values)):
        codes, uniques = as_dictionary(form)
        assert (codes >= 0).all() and len(set(uniques.tolist())) == len(uniques)
        assert uniques[codes].tolist() == as_str(values).tolist()


def test_every_string_transform_gives_the_same_ids_for_a_categorical_and_a_plain_array():
    cat = pd.Categorical(MESSY.astype(str))
    plain = MESSY.astype(str).astype(object)
    assert Vocabulary().fit(cat).values == Vocabulary().fit(plain).values
    vocab = Vocabulary().fit(plain)
    assert vocab.encode(cat).tolist() == vocab.encode(plain).tolist()
    assert hash_strings(cat, 97).tolist() == hash_strings(plain, 97).tolist()
    multi = MultiHotVocabulary("|", 3).fit(plain)
    assert MultiHotVocabulary("|", 3).fit(cat).vocab.values == multi.vocab.values
    np.testing.assert_array_equal(multi.encode(cat), multi.encode(plain))
    np.testing.assert_array_equal(as_float(pd.Categorical(["1.5", None, "x"])), [1.5, np.nan, np.nan])


def test_missing_categories_encode_like_missing_values():
    vocab = Vocabulary().fit(np.array(["a", "b"], dtype=object))
    assert vocab.encode(pd.Categorical(["a", None, "zz"])).tolist() == [1, 0, 0]


def test_key_codes_group_a_categorical_like_its_strings():
    users = np.array(["u1", "u2", "u1", None, "u2"], dtype=object)
    plain, cat = key_codes([users]), key_codes([pd.Categorical(users)])
    assert (plain[:, None] == plain[None, :]).tolist() == (cat[:, None] == cat[None, :]).tolist()


def test_the_pipeline_fits_and_encodes_categorical_columns_like_plain_ones(mini_spec: FeatureSpec):
    cols, label = mini_columns(300)
    plain = FeaturePipeline(mini_spec).fit(cols, label)
    categorical = FeaturePipeline(mini_spec).fit(as_categoricals(cols), label)
    assert plain.to_dict() == categorical.to_dict()
    a, b = plain.transform(cols), plain.transform(as_categoricals(cols))
    for block in ("sparse", "multi", "dense", "wide"):
        np.testing.assert_array_equal(getattr(a, block), getattr(b, block), err_msg=block)
