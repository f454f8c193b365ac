"""Peer libraries for the training benchmark, run on the same encoded ids with the same dims.

They are never project dependencies: install them in a separate venv that sees this project's torch
(benchmarks/README.md). An adapter whose library is missing says so and is skipped.

pytorch-widedeep imports torchvision, spaCy, gensim, OpenCV and transformers at import time, none of
which its Wide + TabMlp models use; their PyPI builds either pull a second torch or fail beside this
one (DESIGN §6). `_stand_ins` registers empty stand-in modules for exactly those names, in this
benchmark process only, so that the import succeeds. A stand-in raises if anything is called on it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import time
import types
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from recsys.features import Batch
from recsys.model import WideDeepConfig
from recsys.spec import OptimizerConfig

__all__ = ["PeerData", "Peer", "PEERS"]


@dataclass
class PeerData:
    sparse: np.ndarray
    multi: np.ndarray
    dense: np.ndarray
    wide: np.ndarray
    label: np.ndarray
    config: WideDeepConfig

    @classmethod
    def from_batch(cls, b: Batch, config: WideDeepConfig) -> "PeerData":
        assert b.label is not None
        return cls(b.sparse.numpy(), b.multi.numpy(), b.dense.numpy(), b.wide.numpy(), b.label.numpy(), config)

    def __len__(self) -> int:
        return len(self.label)


class Peer(Protocol):
    name: str

    def unavailable(self) -> str | None: ...

    def run(self, data: PeerData, opt: OptimizerConfig, batch_size: int, epochs: int) -> float: ...


def _torch_optimizer(params: object, opt: OptimizerConfig) -> torch.optim.Optimizer:
    if opt.name == "sgd":
        return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum)  # type: ignore[arg-type]
    if opt.name == "adagrad":
        return torch.optim.Adagrad(params, lr=opt.lr)  # type: ignore[arg-type]
    return torch.optim.Adam(params, lr=opt.lr)  # type: ignore[arg-type]


def _missing(module: str, pip_name: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return f"{pip_name} not importable (see benchmarks/README.md)"
    return None


class DeepCTRTorch:
    """DeepCTR-Torch WDL: one embedding table per field, its own DataLoader loop (`model.fit`)."""

    name = "deepctr-torch WDL"

    def unavailable(self) -> str | None:
        return _missing("deepctr_torch", "deepctr-torch")

    def run(self, data: PeerData, opt: OptimizerConfig, batch_size: int, epochs: int) -> float:
        from deepctr_torch.inputs import DenseFeat, SparseFeat, VarLenSparseFeat
        from deepctr_torch.models import WDL

        c = data.config
        x: dict[str, np.ndarray] = {}
        deep: list[object] = []
        for j in range(data.sparse.shape[1]):
            x[f"s{j}"] = data.sparse[:, j]
            deep.append(SparseFeat(f"s{j}", c.embedding_rows, embedding_dim=c.embedding_dim))
        start = 0
        for k, length in enumerate(c.multi_lens):
            x[f"m{k}"] = data.multi[:, start:start + length]
            deep.append(VarLenSparseFeat(SparseFeat(f"m{k}", c.embedding_rows, embedding_dim=c.embedding_dim),
                                         maxlen=length, combiner="mean"))
            start += length
        for j in range(data.dense.shape[1]):
            x[f"d{j}"] = data.dense[:, j]
            deep.append(DenseFeat(f"d{j}", 1))
        wide = []
        for j in range(data.wide.shape[1]):
            x[f"w{j}"] = data.wide[:, j]
            wide.append(SparseFeat(f"w{j}", c.wide_rows, embedding_dim=1))
        torch.manual_seed(0)
        model = WDL(wide, deep, dnn_hidden_units=tuple(c.hidden), l2_reg_linear=0, l2_reg_embedding=0,
                    dnn_dropout=0, task="binary", device="cpu")
        model.compile(_torch_optimizer(model.parameters(), opt), "binary_crossentropy")
        t0 = time.perf_counter()
        model.fit(x, data.label, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=True)
        return len(data) * epochs / (time.perf_counter() - t0)


class _StandIn(types.ModuleType):
    def __getattr__(self, name: str) -> "_StandIn":
        if name.startswith("__"):
            raise AttributeError(name)
        return _StandIn(f"{self.__name__}.{name}")

    def __call__(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError(f"{self.__name__} is a benchmark stand-in; pytorch-widedeep's Wide/TabMlp never call it")


class _StandIns(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Empty modules for the optional imports that are not installed (an installed one is used)."""

    NAMES = ("torchvision", "spacy", "gensim", "cv2", "transformers", "sentence_transformers", "fastparquet",
             "imutils", "sentencepiece")

    def __init__(self) -> None:
        self.missing = {n for n in self.NAMES if importlib.util.find_spec(n) is None}

    def find_spec(self, name: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if name.split(".")[0] in self.missing:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _StandIn(spec.name)
        module.__path__ = []  # type: ignore[attr-defined]
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


class PytorchWideDeep:
    """pytorch-widedeep Wide + TabMlp under its Trainer (DataLoader with num_workers=0). TabMlp has
    no multi-hot input: each multi-hot slot is its own categorical column."""

    name = "pytorch-widedeep"

    def unavailable(self) -> str | None:
        return _missing("pytorch_widedeep", "pytorch-widedeep")

    def run(self, data: PeerData, opt: OptimizerConfig, batch_size: int, epochs: int) -> float:
        if not any(isinstance(f, _StandIns) for f in sys.meta_path):
            sys.meta_path.insert(0, _StandIns())
        from pytorch_widedeep import Trainer
        from pytorch_widedeep.models import TabMlp, Wide, WideDeep

        c = data.config
        cat = np.concatenate([data.sparse, data.multi], axis=1)
        names = [f"c{j}" for j in range(cat.shape[1])] + [f"d{j}" for j in range(data.dense.shape[1])]
        x_tab = np.concatenate([cat.astype(np.float32), data.dense], axis=1)
        torch.manual_seed(0)
        tab = TabMlp(column_idx={n: i for i, n in enumerate(names)},
                     cat_embed_input=[(f"c{j}", c.embedding_rows, c.embedding_dim) for j in range(cat.shape[1])],
                     continuous_cols=[f"d{j}" for j in range(data.dense.shape[1])],
                     mlp_hidden_dims=list(c.hidden), mlp_dropout=0.0)
        model = WideDeep(wide=Wide(input_dim=c.wide_rows, pred_dim=1), deeptabular=tab)
        trainer = Trainer(model, objective="binary", optimizers=_torch_optimizer(model.parameters(), opt),
                          verbose=0, seed=0, num_workers=0)
        t0 = time.perf_counter()
        trainer.fit(X_wide=data.wide, X_tab=x_tab, target=data.label, n_epochs=epochs, batch_size=batch_size)
        return len(data) * epochs / (time.perf_counter() - t0)


PEERS: list[Peer] = [DeepCTRTorch(), PytorchWideDeep()]
