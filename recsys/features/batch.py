"""The only contract between feature code and the model: encoded arrays → tensors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported where tensors are made: feature building never pays for torch (~1 s, ~250 MB)
    import torch

__all__ = ["Encoded", "Batch"]


@dataclass
class Encoded:
    """Numpy output of `FeaturePipeline.transform`, ready for parquet or for one forward pass.

    sparse: [n, S] int64 ids into the deep embedding table (0 = padding row, never trained)
    multi:  [n, L] int64 ids into the same table for every multi-hot field side by side (0 pads)
    dense:  [n, D] float32 normalized numbers
    wide:   [n, W] int64 ids into the wide (linear) table, crosses and multi-hot tokens included
    """

    sparse: np.ndarray
    multi: np.ndarray
    dense: np.ndarray
    wide: np.ndarray

    def __len__(self) -> int:
        return len(self.dense)

    def take(self, index: np.ndarray) -> "Encoded":
        return Encoded(self.sparse[index], self.multi[index], self.dense[index], self.wide[index])


@dataclass
class Batch:
    sparse: torch.Tensor
    multi: torch.Tensor
    dense: torch.Tensor
    wide: torch.Tensor
    label: torch.Tensor | None = field(default=None)

    @classmethod
    def from_encoded(cls, enc: Encoded, label: np.ndarray | None = None) -> "Batch":
        import torch

        return cls(
            sparse=torch.from_numpy(np.ascontiguousarray(enc.sparse, dtype=np.int64)),
            multi=torch.from_numpy(np.ascontiguousarray(enc.multi, dtype=np.int64)),
            dense=torch.from_numpy(np.ascontiguousarray(enc.dense, dtype=np.float32)),
            wide=torch.from_numpy(np.ascontiguousarray(enc.wide, dtype=np.int64)),
            label=None if label is None else torch.from_numpy(np.ascontiguousarray(label, dtype=np.float32)),
        )

    def __len__(self) -> int:
        return self.dense.shape[0]

    def slice(self, index: torch.Tensor | slice) -> "Batch":
        return Batch(
            self.sparse[index], self.multi[index], self.dense[index], self.wide[index],
            None if self.label is None else self.label[index],
        )
