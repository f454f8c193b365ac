"""The training loop: early stopping counts non-improving epochs exactly, checkpoints hold
everything a run needs (no pickle), and a resumed run ends where an uninterrupted one does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from recsys.features import Batch, FeaturePipeline
from recsys.model import WideDeep, WideDeepConfig
from recsys.spec import FeatureSpec, TrainingConfig
from recsys.training import CheckpointStore, RunSettings, TensorSource, epoch_data, train
from recsys.training import loop as loop_module
from recsys.training.checkpoint import flatten_optimizers, restore_optimizers

from .helpers import mini_columns

Fitted = tuple[FeaturePipeline, dict[str, np.ndarray], np.ndarray]


def run(fitted: Fitted, spec: FeatureSpec, cfg: TrainingConfig, **kwargs: object) -> tuple[WideDeep, list[float]]:
    pipeline, cols, label = fitted
    torch.manual_seed(0)
    model = WideDeep(WideDeepConfig.from_layout(pipeline.layout, spec.model))
    batch = Batch.from_encoded(pipeline.transform(cols), label)
    valid_cols, valid_label = mini_columns(120, seed=5)
    valid = TensorSource(Batch.from_encoded(pipeline.transform(valid_cols), valid_label))
    data, _ = epoch_data(TensorSource(batch), RunSettings(), cfg.batch_size, cfg.seed)
    result = train(model, data, valid, cfg, progress=False, **kwargs)  # type: ignore[arg-type]
    return model, [h["valid_auc"] for h in result.history]


@pytest.mark.parametrize("patience, epochs_run", [(0, 3), (1, 3), (2, 4), (3, 5)])
def test_patience_stops_after_that_many_epochs_without_a_better_valid_auc(
        mini_fitted: Fitted, mini_spec: FeatureSpec, monkeypatch: pytest.MonkeyPatch, patience: int, epochs_run: int):
    scripted = iter([0.60, 0.70, 0.69, 0.68, 0.67, 0.66, 0.65, 0.64])  # best at epoch 2, then only worse
    monkeypatch.setattr(loop_module, "auc", lambda y, p: next(scripted))
    cfg = mini_spec.training.model_copy(update={"epochs": 8, "patience": patience})
    _, history = run(mini_fitted, mini_spec, cfg)
    assert len(history) == epochs_run  # patience 2 used to run a third non-improving epoch


def test_the_best_epochs_weights_are_restored(mini_fitted: Fitted, mini_spec: FeatureSpec, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch):
    cfg = mini_spec.training.model_copy(update={"epochs": 1, "patience": 5})
    one, _ = run(mini_fitted, mini_spec, cfg)
    for store in (None, CheckpointStore(tmp_path / "ckpt")):  # best weights in memory, or on disk
        with monkeypatch.context() as m:
            scripted = iter([0.9, 0.1, 0.1, 0.1])  # epoch 1 is the best of 4
            m.setattr(loop_module, "auc", lambda y, p, s=scripted: next(s))
            model, _ = run(mini_fitted, mini_spec, cfg.model_copy(update={"epochs": 4}), store=store)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), one.state_dict().values(),
                                                      strict=True))
    rising = iter([0.1, 0.2, 0.3, 0.4])
    monkeypatch.setattr(loop_module, "auc", lambda y, p: next(rising))
    last, _ = run(mini_fitted, mini_spec, cfg.model_copy(update={"epochs": 4}))
    assert not torch.equal(last.mlp[0].weight, one.mlp[0].weight)


@pytest.mark.parametrize("make", [
    lambda p: torch.optim.Adam(p, lr=0.01, fused=True),
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    lambda p: torch.optim.Adagrad(p, lr=0.1),
])
def test_optimizer_state_survives_flattening_to_tensors_and_json(make):
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
    b = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
    b.load_state_dict(a.state_dict())
    opt_a, opt_b = make(a.parameters()), make(b.parameters())
    x = torch.randn(16, 4)
    for _ in range(3):
        opt_a.zero_grad()
        a(x).pow(2).mean().backward()
        opt_a.step()
    b.load_state_dict(a.state_dict())
    tensors, meta = flatten_optimizers([opt_a])
    # the round trip a checkpoint makes: safetensors bytes (no pickle) and JSON
    restore_optimizers([opt_b], load_safetensors(save_safetensors(tensors)), json.loads(json.dumps(meta)))
    for model, opt in ((a, opt_a), (b, opt_b)):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_a_run_resumed_from_a_mid_epoch_checkpoint_ends_like_an_uninterrupted_one(
        mini_fitted: Fitted, mini_spec: FeatureSpec, tmp_path: Path):
    torch.set_num_threads(1)
    cfg = mini_spec.training.model_copy(update={"epochs": 4, "patience": 4})
    straight, auc_straight = run(mini_fitted, mini_spec, cfg)

    class Interrupted(Exception):
        pass

    def stop_at_epoch_3(row: dict[str, float]) -> None:
        if row["epoch"] == 3:
            raise Interrupted  # after epoch 3's steps (and their mid-epoch checkpoints), before its end

    store = CheckpointStore(tmp_path / "ckpt", {"run": 1})
    with pytest.raises(Interrupted):
        run(mini_fitted, mini_spec, cfg, store=store, on_epoch=stop_at_epoch_3, checkpoint_every_steps=2)
    assert store.describe() == "step 2 of epoch 3"
    assert sorted(p.name for p in store.root.iterdir()) == [".recsys-output", "LATEST", "best.safetensors",
                                                            "e0003-s000002"]
    files = {p.name for p in (store.root / "e0003-s000002").iterdir()}
    assert files == {"model.safetensors", "trainer.safetensors", "trainer.json"}  # no pickle
    resumed, auc_resumed = run(mini_fitted, mini_spec, cfg, store=store, resume=True)
    assert auc_resumed == auc_straight
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(),
                                                  strict=True))

