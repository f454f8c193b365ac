"""How a training run uses the machine: memory for the data, the shuffle, checkpoints.

These are properties of the run and the machine, not of the model, so they live beside the spec's
`training:` section (which decides the model and is stored in the artifact) instead of inside it.
The data order depends only on the spec's seed and batch size and on `data_shards`, never on the
memory budget or the number of processes, so a run can be resumed on another machine or with
another `--nproc` and see the same rows in the same batches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["RunSettings", "DataMode"]

DataMode = Literal["auto", "memory", "stream"]


class RunSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Memory the train split may take per process, in MiB. `auto` holds the split in memory (one
    # read, ~10% faster epochs) when twice its tensors fit (the data + the epoch's shuffled copy),
    # and streams it otherwise; the streaming window is sized from this budget too, so peak memory
    # follows the budget, not the data. The model and the optimizer state come on top.
    memory_budget_mb: int = Field(2048, ge=64)
    data: DataMode = "auto"
    # Rows per process that are shuffled together when streaming (default: from the budget). Each
    # epoch also visits the files' row groups in a new seeded order, so a small window still mixes
    # rows from the whole split over the epochs; a window ≥ the split is a full shuffle.
    shuffle_window_rows: int | None = Field(None, ge=1)
    # The unit of the data order: the split is cut into this many shards (fixed by the seed), every
    # global batch takes its share from each, and each process trains on its own shards. Any number
    # of processes that divides it sees the same batches: 1 process and 2 give the same model.
    data_shards: int = Field(8, ge=1, le=4096)
    # Where checkpoints go (default: `<out>.checkpoints` beside the artifact); removed after the
    # artifact is written unless `keep_checkpoints`.
    checkpoint_dir: Path | None = None
    # Also checkpoint every this many steps inside an epoch (0: at epoch ends only).
    checkpoint_every_steps: int = Field(0, ge=0)
    keep_checkpoints: bool = False
