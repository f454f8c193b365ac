"""Checkpoints: what a run needs to continue exactly where it stopped, as safetensors + JSON.

    <dir>/LATEST                    {"name": "e0003-s000000"}: the newest complete checkpoint
    <dir>/e0003-s000000/            position: epoch 3 done (or sNNNNNN steps into epoch 4)
        model.safetensors           the weights
        trainer.safetensors         optimizer state tensors, each rank's RNG state
        trainer.json                position, shuffle window, history, best so far, stale epochs,
                                    optimizer hyperparameters and scalar state, run fingerprint
    <dir>/best.safetensors          the weights of the best epoch so far (restored at the end)

No pickle (torch.save is pickle): optimizer state dicts are flattened into named tensors and JSON.
A checkpoint is written under a temporary name and renamed, then LATEST is replaced atomically, so
a run killed at any instant leaves the previous checkpoint loadable.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import safetensors.torch
import torch
from torch import nn

from recsys.artifact import write_json_atomic
from recsys.errors import DataError
from recsys.io import claim_folder, remove_output

__all__ = ["TrainState", "CheckpointStore", "flatten_optimizers", "restore_optimizers"]

FORMAT = 1
CHECKPOINTS = "checkpoints"  # the output kind of a checkpoint folder (recsys.io)


@dataclass
class TrainState:
    """Where a run is and what it has seen: saved with every checkpoint."""

    epoch: int = 1  # the epoch to run next (or the one in progress when step > 0)
    step: int = 0  # steps of `epoch` already done
    window_steps: int = 0  # the shuffle window the data order was made with (pinned on resume)
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = float("-inf")
    stale: int = 0  # epochs since the best one
    loss_sum: float = 0.0  # this epoch's train loss so far (summed over rows, all ranks)
    rows: int = 0  # this epoch's rows so far
    seconds: float = 0.0  # this epoch's training time so far
    train_seconds: float = 0.0  # all finished epochs' training time
    fingerprint: dict[str, Any] = field(default_factory=dict)


def flatten_optimizers(optimizers: Sequence[torch.optim.Optimizer]) -> tuple[dict[str, torch.Tensor], list[Any]]:
    """Optimizer state dicts → named tensors + JSON (param groups and non-tensor state)."""
    tensors: dict[str, torch.Tensor] = {}
    meta: list[Any] = []
    for i, opt in enumerate(optimizers):
        sd = opt.state_dict()
        scalars: dict[str, Any] = {}
        for p, state in sd["state"].items():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    if value.is_sparse:
                        raise ValueError(f"optimizer {i}: sparse state '{key}' cannot be checkpointed")
                    tensors[f"optimizer.{i}.{p}.{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars[f"{p}.{key}"] = value
        meta.append({"param_groups": sd["param_groups"], "scalars": scalars})
    return tensors, meta


def restore_optimizers(optimizers: Sequence[torch.optim.Optimizer], tensors: dict[str, torch.Tensor],
                       meta: list[Any]) -> None:
    if len(meta) != len(optimizers):
        raise DataError(f"the checkpoint has {len(meta)} optimizers, this run {len(optimizers)}: it was made with "
                        f"other optimizer settings")
    for i, (opt, m) in enumerate(zip(optimizers, meta, strict=True)):
        state: dict[int, dict[str, Any]] = {}
        for name, value in tensors.items():
            parts = name.split(".")
            if parts[0] == "optimizer" and int(parts[1]) == i:
                state.setdefault(int(parts[2]), {})[".".join(parts[3:])] = value
        for name, value in m["scalars"].items():
            p, key = name.split(".", 1)
            state.setdefault(int(p), {})[key] = value
        opt.load_state_dict({"state": state, "param_groups": m["param_groups"]})


def _save_weights(model: nn.Module, path: Path) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    safetensors.torch.save_file(state, str(path))


class CheckpointStore:
    """One run's checkpoint folder. Only rank 0 writes. `fingerprint`: what a run that resumes
    from these checkpoints must share with the one that wrote them (stored with every checkpoint)."""

    def __init__(self, root: str | Path, fingerprint: dict[str, Any] | None = None) -> None:
        self.root = Path(root)
        self.fingerprint = fingerprint or {}

    def latest(self) -> Path | None:
        pointer = self.root / "LATEST"
        if not pointer.is_file():
            return None
        path = self.root / json.loads(pointer.read_text())["name"]
        return path if (path / "trainer.json").is_file() else None

    def state(self) -> TrainState:
        """The newest checkpoint's position and history (its tensors are read by `load`)."""
        latest = self.latest()
        if latest is None:
            raise DataError(f"no checkpoint to resume in {self.root} (fix: run without --resume)")
        doc = json.loads((latest / "trainer.json").read_text())
        if doc.get("format") != FORMAT:
            raise DataError(f"checkpoint {latest} has format {doc.get('format')}, this code reads {FORMAT}")
        return TrainState(**doc["state"])

    def describe(self) -> str:
        """'epoch 3 done' / 'step 120 of epoch 4' for the newest checkpoint."""
        if self.latest() is None:
            return "no checkpoint"
        s = self.state()
        return f"epoch {s.epoch - 1} done" if s.step == 0 else f"step {s.step} of epoch {s.epoch}"

    def save(self, model: nn.Module, optimizers: Sequence[torch.optim.Optimizer], state: TrainState,
             rng: torch.Tensor) -> Path:
        """`rng`: [ranks, n] uint8, each rank's torch RNG state."""
        name = f"e{state.epoch - 1 if state.step == 0 else state.epoch:04d}-s{state.step:06d}"
        self.claim()
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=self.root))
        try:
            _save_weights(model, tmp / "model.safetensors")
            tensors, meta = flatten_optimizers(optimizers)
            safetensors.torch.save_file({**tensors, "rng": rng.contiguous()}, str(tmp / "trainer.safetensors"))
            doc = {"format": FORMAT, "state": {**asdict(state), "fingerprint": self.fingerprint}, "optimizers": meta}
            (tmp / "trainer.json").write_text(json.dumps(doc, indent=1))
            final = self.root / name
            if final.exists():  # written by an earlier attempt of this run that died before LATEST moved
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        write_json_atomic(self.root / "LATEST", {"name": name})
        for old in self.root.iterdir():  # keep the newest only
            if old.is_dir() and old.name != name and not old.name.startswith("."):
                shutil.rmtree(old, ignore_errors=True)
        return final

    def load(self, model: nn.Module, optimizers: Sequence[torch.optim.Optimizer]) -> tuple[TrainState, torch.Tensor]:
        state = self.state()
        latest = self.latest()
        assert latest is not None
        doc = json.loads((latest / "trainer.json").read_text())
        model.load_state_dict(safetensors.torch.load_file(str(latest / "model.safetensors")))
        tensors = safetensors.torch.load_file(str(latest / "trainer.safetensors"))
        restore_optimizers(optimizers, tensors, doc["optimizers"])
        return state, tensors["rng"]

    def save_best(self, model: nn.Module) -> None:
        self.claim()
        fd, tmp = tempfile.mkstemp(prefix=".best.", dir=self.root)
        os.close(fd)
        _save_weights(model, Path(tmp))
        os.replace(tmp, self.root / "best.safetensors")

    def load_best(self, model: nn.Module) -> None:
        model.load_state_dict(safetensors.torch.load_file(str(self.root / "best.safetensors")))

    def claim(self) -> None:
        """Create the folder (marked as this project's), or refuse one that holds other files: the
        store deletes older checkpoints in it, and the whole folder at the end of a run."""
        claim_folder(self.root, CHECKPOINTS, flag="--checkpoint-dir")

    def remove(self) -> None:
        remove_output(self.root, CHECKPOINTS)
