"""Predictor: raw columns → probabilities, the one scoring path used by `evaluate` and the service."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from recsys.artifact import Artifact
from recsys.features.batch import Batch, Encoded
from recsys.features.pipeline import FeaturePipeline
from recsys.model import WideDeep

__all__ = ["Predictor", "top_k"]


class Predictor:
    def __init__(self, pipeline: FeaturePipeline, model: WideDeep, version: str = "unversioned") -> None:
        self.pipeline = pipeline
        self.model = model.eval()
        self.version = version

    @classmethod
    def from_artifact(cls, artifact: Artifact) -> "Predictor":
        return cls(artifact.pipeline, artifact.model, artifact.version)

    @torch.inference_mode()
    def score_encoded(self, encoded: Encoded) -> np.ndarray:
        logits = self.model(Batch.from_encoded(encoded))
        return torch.sigmoid(logits).numpy().astype(np.float64)

    def score(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """Probabilities for raw rows (one per row), via the artifact's fitted transforms."""
        return self.score_encoded(self.pipeline.transform(columns))

    def warm_up(self, rows: int = 512) -> None:
        """One forward at serving size so the first request does not pay for lazy allocations."""
        layout = self.pipeline.layout
        enc = Encoded(
            sparse=np.zeros((rows, len(layout.sparse_fields)), np.int64),
            multi=np.zeros((rows, sum(n for _, n in layout.multi_fields)), np.int64),
            dense=np.zeros((rows, len(layout.dense_fields)), np.float32),
            wide=np.zeros((rows, len(layout.wide_fields)), np.int64),
        )
        self.score_encoded(enc)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best scores, best first (argpartition, then sort only the k)."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]
