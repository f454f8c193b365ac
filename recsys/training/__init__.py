"""Training: the loop, the data stream (memory or parquet), data-parallel under torchrun,
checkpoints and warm start. `docs/training.md` is the user's guide."""

from recsys.training.checkpoint import CheckpointStore, TrainState
from recsys.training.data import EpochData, ParquetSource, RowSource, TensorSource, epoch_data
from recsys.training.distributed import Dist, launched_by_torchrun
from recsys.training.loop import (
    TrainResult,
    build_optimizers,
    predict,
    score_split,
    seed_everything,
    train,
    uses_sparse_grad,
)
from recsys.training.settings import RunSettings
from recsys.training.warm_start import WarmStart, warm_start

__all__ = [
    "CheckpointStore",
    "Dist",
    "EpochData",
    "ParquetSource",
    "RowSource",
    "RunSettings",
    "TensorSource",
    "TrainResult",
    "TrainState",
    "WarmStart",
    "build_optimizers",
    "epoch_data",
    "launched_by_torchrun",
    "predict",
    "score_split",
    "seed_everything",
    "train",
    "uses_sparse_grad",
    "warm_start",
]
