"""The quantile boundaries the Spark engine interpolates from exact order statistics are numpy's
own (bit for bit), on ties, tiny inputs and every bucket count the spec allows."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.features.engine.spark_fit import linear_quantiles


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 101, 1000, 12_345])
@pytest.mark.parametrize("buckets", [2, 3, 8, 10, 64, 1000])
def test_linear_quantiles_equal_numpy_quantile_bit_for_bit(n: int, buckets: int):
    rng = np.random.default_rng(n * 1000 + buckets)
    for x in (rng.normal(size=n), np.round(rng.exponential(size=n), 1), np.log1p(rng.integers(0, 5, n))):
        got = linear_quantiles(n, buckets, np.sort(x).__getitem__)
        want = np.quantile(x, np.linspace(0, 1, buckets + 1)[1:-1])
        assert np.array_equal(got, want)
