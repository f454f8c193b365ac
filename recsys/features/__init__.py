"""Feature code shared by the offline pipeline and the service."""

from recsys.features.batch import Batch, Encoded
from recsys.features.pipeline import FeaturePipeline, Layout, count_column, pos_column

__all__ = ["Batch", "Encoded", "FeaturePipeline", "Layout", "count_column", "pos_column"]
