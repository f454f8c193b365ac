"""WideDeep: shapes, initialization, gradient flow into both parts, and seeded determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipelines.train import fit_model
from recsys.features import Batch, FeaturePipeline
from recsys.metrics import auc
from recsys.model import WideDeep, WideDeepConfig
from recsys.spec import FeatureSpec, OptimizerConfig, parse_spec
from recsys.training import predict

from .helpers import mini_columns, mini_spec_dict

Fitted = tuple[FeaturePipeline, dict[str, np.ndarray], np.ndarray]


def model_and_batch(fitted: Fitted, spec: FeatureSpec, **overrides: object) -> tuple[WideDeep, Batch]:
    pipeline, cols, label = fitted
    config = WideDeepConfig.from_layout(pipeline.layout, spec.model, **overrides)
    return WideDeep(config), Batch.from_encoded(pipeline.transform(cols), label)


def test_forward_gives_one_logit_per_row(mini_fitted: Fitted, mini_spec: FeatureSpec):
    model, batch = model_and_batch(mini_fitted, mini_spec)
    assert model(batch).shape == (len(batch),)
    assert model(batch.slice(slice(0, 1))).shape == (1,)


def test_config_is_derived_from_the_layout(mini_fitted: Fitted, mini_spec: FeatureSpec):
    pipeline, _, _ = mini_fitted
    config = WideDeepConfig.from_layout(pipeline.layout, mini_spec.model)
    layout = pipeline.layout
    assert config.embedding_rows == layout.embedding_rows and config.wide_rows == layout.wide_rows
    assert config.n_sparse == len(layout.sparse_fields) and config.n_dense == len(layout.dense_fields)
    assert config.multi_lens == (3,) and config.hidden == (8,) and config.embedding_dim == 4


def test_config_json_round_trip_rebuilds_the_same_config(mini_fitted: Fitted, mini_spec: FeatureSpec):
    pipeline, _, _ = mini_fitted
    config = WideDeepConfig.from_layout(pipeline.layout, mini_spec.model, use_deep=False)
    assert WideDeepConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_wide_part_starts_at_zero_and_embeddings_start_small(mini_fitted: Fitted, mini_spec: FeatureSpec):
    model, _ = model_and_batch(mini_fitted, mini_spec)
    assert torch.count_nonzero(model.wide.weight) == 0
    emb = model.embedding.weight
    assert torch.count_nonzero(emb[0]) == 0  # padding row
    assert 0.005 < emb[1:].std().item() < 0.02  # N(0, 0.01), DESIGN §6


def test_wide_only_model_starts_at_logit_zero(mini_fitted: Fitted, mini_spec: FeatureSpec):
    model, batch = model_and_batch(mini_fitted, mini_spec, use_deep=False)
    assert torch.count_nonzero(model(batch)) == 0


def test_gradient_reaches_the_wide_and_the_deep_parts(mini_fitted: Fitted, mini_spec: FeatureSpec):
    model, batch = model_and_batch(mini_fitted, mini_spec)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch), batch.label)
    loss.backward()
    assert model.wide.weight.grad.abs().sum() > 0  # even though the wide weights start at zero
    assert model.embedding.weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.mlp.parameters())
    assert model.bias.grad.abs().sum() > 0
    # Padding rows never learn.
    assert model.wide.weight.grad[0].abs().sum() == 0 and model.embedding.weight.grad[0].abs().sum() == 0


def test_multi_hot_padding_does_not_change_the_pooled_embedding(mini_fitted: Fitted, mini_spec: FeatureSpec):
    model, batch = model_and_batch(mini_fitted, mini_spec, use_wide=False)
    rows = torch.nonzero((batch.multi[:, 0] > 0) & (batch.multi[:, 1] == 0)).flatten()[:1]
    one = batch.slice(rows)
    duplicated = Batch(one.sparse, one.multi.clone(), one.dense, one.wide)
    duplicated.multi[0, 1] = duplicated.multi[0, 0]  # the same token twice: mean pooling keeps the mean
    with torch.no_grad():
        torch.testing.assert_close(model(one), model(duplicated))


@pytest.mark.parametrize("flags", [{"use_wide": False}, {"use_deep": False}])
def test_either_part_can_be_switched_off(mini_fitted: Fitted, mini_spec: FeatureSpec, flags: dict[str, bool]):
    model, batch = model_and_batch(mini_fitted, mini_spec, **flags)
    assert model(batch).shape == (len(batch),)
    assert hasattr(model, "wide") == model.config.use_wide and hasattr(model, "mlp") == model.config.use_deep


def test_a_model_with_neither_part_is_refused(mini_fitted: Fitted, mini_spec: FeatureSpec):
    with pytest.raises(ValueError, match="use_wide"):
        model_and_batch(mini_fitted, mini_spec, use_wide=False, use_deep=False)


def _train_once(optimizer: str, seed: int) -> tuple[dict[str, torch.Tensor], float]:
    data = mini_spec_dict()
    data["training"] = {"optimizer": {"name": optimizer, "lr": 0.05, "momentum": 0.0}, "epochs": 2,
                        "batch_size": 128, "seed": seed}
    spec = parse_spec(data)
    cols, label = mini_columns(1500, seed=1)
    train, valid = slice(0, 1200), slice(1200, None)
    pipeline = FeaturePipeline(spec).fit({k: v[train] for k, v in cols.items()}, label[train])
    batches = [Batch.from_encoded(pipeline.transform({k: v[s] for k, v in cols.items()}), label[s])
               for s in (train, valid)]
    model, result = fit_model(pipeline, spec, spec.training, *batches, progress=False)
    return model.state_dict(), auc(label[valid], predict(model, batches[1]))


@pytest.mark.parametrize("optimizer", ["adagrad", "sgd", "adam"])
def test_same_seed_gives_the_same_weights_and_metrics(optimizer: str):
    (w1, auc1), (w2, auc2) = _train_once(optimizer, seed=3), _train_once(optimizer, seed=3)
    assert w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=0, atol=1e-6, msg=k)
    assert abs(auc1 - auc2) <= 1e-6


def test_a_different_seed_gives_different_weights():
    (w1, _), (w2, _) = _train_once("adagrad", seed=3), _train_once("adagrad", seed=4)
    assert not torch.equal(w1["embedding.weight"], w2["embedding.weight"])


def test_per_part_optimizers_update_both_parts(mini_fitted: Fitted, mini_spec: FeatureSpec):
    pipeline, cols, label = mini_fitted
    cfg = mini_spec.training.model_copy(update={
        "wide_optimizer": OptimizerConfig(name="sgd", lr=0.1, momentum=0.0),
        "deep_optimizer": OptimizerConfig(name="adagrad", lr=0.05),
    })
    batch = Batch.from_encoded(pipeline.transform(cols), label)
    model, _ = fit_model(pipeline, mini_spec, cfg, batch, None, progress=False)
    assert torch.count_nonzero(model.wide.weight) > 0


def test_the_fm_term_equals_the_sum_of_pairwise_dot_products():
    import torch

    from recsys.model import _pairwise_dot_sum

    fields = torch.randn(3, 5, 4, dtype=torch.float64)
    explicit = sum((fields[:, i] * fields[:, j]).sum(1) for i in range(5) for j in range(i + 1, 5))
    assert torch.allclose(_pairwise_dot_sum(fields), explicit)


def test_inference_takes_the_shared_columns_product_once_with_the_same_scores(mini_fitted: Fitted,
                                                                             mini_spec: FeatureSpec):
    """A ranking batch (one user and context, many items): the first layer's product over the
    columns every row shares is taken once. Scores equal the plain MLP's to float32 rounding, also
    after the weights change in place, through `.data` too (nothing is cached)."""
    model, batch = model_and_batch(mini_fitted, mini_spec)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # trained-looking weights, not the zero / small init
            p.normal_(0.0, 0.3)
    ranking = batch.slice(torch.arange(300) % len(batch))  # over SHARED_COLUMNS_MIN_ROWS
    half = ranking.sparse.shape[1] // 2 + 1
    ranking.sparse[:, :half] = ranking.sparse[0, :half]
    ranking.dense[:, 0] = 0.5
    model.eval()
    calls: list[int] = []
    model.mlp[0].register_forward_hook(lambda *_: calls.append(1))
    for _ in range(2):
        plain = model(ranking)  # gradients on: the plain path
        assert calls and calls.pop()
        with torch.inference_mode():
            fast = model(ranking)
        assert not calls  # the first layer ran as the split product
        assert torch.allclose(fast, plain, atol=1e-5, rtol=1e-5)
        model.mlp[0].weight.data.mul_(-1.5)  # the second round must see these weights
    with torch.inference_mode():  # fewer rows than the threshold: the plain path
        model(ranking.slice(slice(0, 3)))
    assert calls
