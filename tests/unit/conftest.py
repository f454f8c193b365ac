"""Fixtures for the unit tests (the helpers they build on live in helpers.py)."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.features import FeaturePipeline
from recsys.spec import FeatureSpec, parse_spec

from .helpers import mini_columns, mini_spec_dict


@pytest.fixture
def mini_spec() -> FeatureSpec:
    return parse_spec(mini_spec_dict())


@pytest.fixture
def mini_fitted(mini_spec: FeatureSpec) -> tuple[FeaturePipeline, dict[str, np.ndarray], np.ndarray]:
    cols, label = mini_columns()
    return FeaturePipeline(mini_spec).fit(cols, label), cols, label
