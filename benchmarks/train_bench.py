"""Training throughput, side by side in one process run (same threads, same data, same dims):

  floor      the bare train step: a textbook Wide&Deep of the same dims (nn.Embedding lookups, ReLU
             MLP) doing forward + backward + optimizer step on ONE pre-built batch, over and over
  mlp only   the MLP alone (same input width) on one batch: what the matrix products cost, the
             ceiling for any loop around this architecture on this machine
  recsys     recsys.training.train for whole epochs over the encoded train split (per-epoch shuffle,
             slicing, loss bookkeeping included; validation excluded)
  peers      DeepCTR-Torch WDL and pytorch-widedeep WideDeep on the same encoded ids, when importable
             (they are never project dependencies; see benchmarks/README.md for their venv)

Data: MovieLens 100K imported from --movielens (skipped if absent) and --synthetic-rows impressions of
`recsys generate`, each through `build-features` with its shipped spec. The model dims are fixed by
flags (default emb 16, MLP 256-128-64, batch 1024), not by the spec, so spec tuning cannot move them.

Each runner is timed --repeats times, interleaved (others may share the CPU); the best run is the
figure, the median is reported beside it. Prints a table on stderr and ONE JSON line on stdout.

    python benchmarks/train_bench.py
    python benchmarks/train_bench.py --optimizers adagrad --synthetic-rows 0     # MovieLens only
    /tmp/peers/bin/python benchmarks/train_bench.py                               # with the peers
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from peers import PEERS, PeerData  # noqa: E402

from pipelines.build_features import build_features  # noqa: E402
from pipelines.generate import SyntheticConfig  # noqa: E402
from pipelines.generate import write as write_synthetic  # noqa: E402
from pipelines.movielens import import_movielens  # noqa: E402
from pipelines.train import load_features  # noqa: E402
from recsys.features import Batch  # noqa: E402
from recsys.features.splits import read_split  # noqa: E402
from recsys.model import WideDeep, WideDeepConfig  # noqa: E402
from recsys.spec import ModelConfig, OptimizerConfig, load_spec  # noqa: E402
from recsys.training import train, uses_sparse_grad  # noqa: E402

DEFAULT_MOVIELENS = REPO.parent / "shared" / "data" / "movielens-100k"
SPECS = REPO / "pipelines" / "specs"
# Learning rates only matter for the loss column; throughput does not depend on them.
OPTIMIZERS = {
    "adagrad": OptimizerConfig(name="adagrad", lr=0.02),
    "sgd": OptimizerConfig(name="sgd", lr=0.05, momentum=0.9),
    "adam": OptimizerConfig(name="adam", lr=0.001),
}


@dataclass
class Dataset:
    name: str
    features: Path
    train: Batch
    config: WideDeepConfig


@dataclass
class Cell:
    dataset: str
    runner: str
    optimizer: str
    rows: int
    runs: list[float] = field(default_factory=list)  # samples/s of each repeat
    note: str = ""

    @property
    def best(self) -> float:
        return max(self.runs) if self.runs else float("nan")


# ------------------------------------------------------------------------------------------ data
def prepare(args: argparse.Namespace, work: Path) -> list[Dataset]:
    """Encoded train splits, built once per --workdir (reused when the folder already holds them)."""
    out: list[Dataset] = []
    sources: list[tuple[str, str, Callable[[Path], object]]] = []
    if args.movielens and Path(args.movielens).is_dir():
        sources.append(("movielens-100k", "movielens-100k", lambda raw: import_movielens(args.movielens, raw)))
    elif args.movielens:
        print(f"note: MovieLens not found at {args.movielens}; skipped", file=sys.stderr)
    if args.synthetic_rows:
        sources.append((f"synthetic-{args.synthetic_rows}", "synthetic", lambda raw: write_synthetic(
            SyntheticConfig(impressions=args.synthetic_rows), raw)))
    for name, spec_name, make_raw in sources:
        features = work / name / "features"
        if not (features / "manifest.json").is_file():
            raw = work / name / "raw"
            make_raw(raw)
            build_features(load_spec(SPECS / f"{spec_name}.yaml"), raw, features, log=lambda _: None, progress=False)
        spec, pipeline, _ = load_features(features)
        enc, meta = read_split(features, "train")
        model = ModelConfig(embedding_dim=args.embedding_dim, hidden=args.hidden)
        out.append(Dataset(name, features, Batch.from_encoded(enc, meta[spec.label].to_numpy()),
                           WideDeepConfig.from_layout(pipeline.layout, model)))
    return out


# ------------------------------------------------------------------------------------------ floor
class TextbookWideDeep(nn.Module):
    """The same dims written the textbook way: nn.Embedding lookups, wide weights summed, multi-hot
    segments mean-pooled, ReLU MLP."""

    def __init__(self, c: WideDeepConfig) -> None:
        super().__init__()
        self.c = c
        self.wide = nn.Embedding(c.wide_rows, 1, padding_idx=0)
        self.embedding = nn.Embedding(c.embedding_rows, c.embedding_dim, padding_idx=0)
        width, layers = (c.n_sparse + len(c.multi_lens)) * c.embedding_dim + c.n_dense, []
        for h in c.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.mlp = nn.Sequential(*layers, nn.Linear(width, 1))

    def forward(self, b: Batch) -> torch.Tensor:
        parts = [self.embedding(b.sparse).flatten(1)]
        start = 0
        for length in self.c.multi_lens:
            parts.append(self.embedding(b.multi[:, start:start + length]).mean(1))
            start += length
        parts.append(b.dense)
        return self.wide(b.wide).sum((1, 2)) + self.mlp(torch.cat(parts, 1)).squeeze(-1)


def run_mlp_only(ds: Dataset, opt: OptimizerConfig, batch_size: int, steps: int) -> float:
    torch.manual_seed(0)
    mlp = TextbookWideDeep(ds.config).mlp
    optimizer = optimizer_for(list(mlp.parameters()), opt)
    x = torch.randn(batch_size, mlp[0].in_features)
    label = ds.train.label[:batch_size]  # type: ignore[index]
    loss_fn = nn.BCEWithLogitsLoss()
    return _timed_steps(lambda: loss_fn(mlp(x).squeeze(-1), label), optimizer, steps, batch_size)


def _timed_steps(loss: Callable[[], torch.Tensor], optimizer: torch.optim.Optimizer, steps: int,
                 batch_size: int) -> float:
    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss().backward()
        optimizer.step()

    for _ in range(10):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - t0)


def optimizer_for(params: list[nn.Parameter], opt: OptimizerConfig) -> torch.optim.Optimizer:
    if opt.name == "sgd":
        return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum)
    if opt.name == "adagrad":
        return torch.optim.Adagrad(params, lr=opt.lr)
    return torch.optim.Adam(params, lr=opt.lr)


def run_floor(ds: Dataset, opt: OptimizerConfig, batch_size: int, steps: int) -> float:
    torch.manual_seed(0)
    model = TextbookWideDeep(ds.config)
    optimizer = optimizer_for(list(model.parameters()), opt)
    batch = ds.train.slice(slice(0, batch_size))
    loss_fn = nn.BCEWithLogitsLoss()
    return _timed_steps(lambda: loss_fn(model(batch), batch.label), optimizer, steps, batch_size)


# ------------------------------------------------------------------------------------------ recsys
def run_recsys(ds: Dataset, opt: OptimizerConfig, batch_size: int, epochs: int) -> float:
    spec = load_spec(ds.features / "spec.yaml")
    cfg = spec.training.model_copy(update={"optimizer": opt, "wide_optimizer": None, "deep_optimizer": None,
                                           "epochs": epochs, "batch_size": batch_size, "patience": epochs})
    torch.manual_seed(0)
    model = WideDeep(replace(ds.config, sparse_grad=uses_sparse_grad(cfg)))
    return train(model, ds.train, None, cfg, progress=False).samples_per_second


# ------------------------------------------------------------------------------------------ report
def table(cells: list[Cell]) -> str:
    floors = {(c.dataset, c.optimizer): c.best for c in cells if c.runner == "floor"}
    head = f"{'dataset':<22}{'optimizer':<10}{'runner':<24}{'rows':>9}{'samples/s':>12}{'median':>10}{'÷floor':>8}"
    lines = [f"{head}  note"]
    for c in cells:
        floor = floors.get((c.dataset, c.optimizer))
        ratio = f"{c.best / floor:.2f}" if c.runs and floor else ""
        best = f"{c.best:,.0f}" if c.runs else "-"
        med = f"{statistics.median(c.runs):,.0f}" if c.runs else "-"
        row = f"{c.dataset:<22}{c.optimizer:<10}{c.runner:<24}{c.rows:>9,}{best:>12}{med:>10}{ratio:>8}"
        lines.append(f"{row}  {c.note}")
    return "\n".join(lines)


def as_json(args: argparse.Namespace, cells: list[Cell], seconds: float) -> dict[str, object]:
    floors = {(c.dataset, c.optimizer): c.best for c in cells if c.runner == "floor"}
    return {
        "benchmark": "train",
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(), "load_avg_1m": os.getloadavg()[0],
                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "")},
        "config": {"embedding_dim": args.embedding_dim, "hidden": args.hidden, "batch_size": args.batch_size,
                   "epochs": args.epochs, "repeats": args.repeats},
        "results": [{
            "dataset": c.dataset, "runner": c.runner, "optimizer": c.optimizer, "rows": c.rows,
            "samples_per_s": round(c.best) if c.runs else None,
            "median_samples_per_s": round(statistics.median(c.runs)) if c.runs else None,
            "ratio_to_floor": round(c.best / floors[(c.dataset, c.optimizer)], 3)
            if c.runs and floors.get((c.dataset, c.optimizer)) else None,
            "note": c.note,
        } for c in cells],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--movielens", default=str(DEFAULT_MOVIELENS), help="MovieLens 100K folder ('' to skip)")
    p.add_argument("--synthetic-rows", type=int, default=1_000_000, help="synthetic impressions (0 to skip)")
    p.add_argument("--workdir", type=Path, default=None, help="keep raw data + features here (reused)")
    p.add_argument("--optimizers", default="adagrad,sgd,adam", help="comma list of adagrad, sgd, adam")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--embedding-dim", type=int, default=16)
    p.add_argument("--hidden", type=lambda s: [int(x) for x in s.split("-")], default=[256, 128, 64])
    p.add_argument("--epochs", type=int, default=1, help="epochs per recsys / peer run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--peers", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--peer-rows", type=int, default=200_000, help="peers train on this many rows (they are slow)")
    p.add_argument("--steps", type=int, default=200, help="steps per floor / mlp-only run")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        datasets = prepare(args, args.workdir or Path(tmp))
        cells: list[Cell] = []
        for ds in datasets:
            n = len(ds.train)
            steps = min(args.steps, max(50, n // args.batch_size))
            for name in args.optimizers.split(","):
                opt = OPTIMIZERS[name]
                mlp = Cell(ds.name, "mlp only", name, args.batch_size, note=f"{steps} steps, one batch")
                floor = Cell(ds.name, "floor", name, args.batch_size, note=f"{steps} steps, one batch")
                ours = Cell(ds.name, "recsys", name, n, note=f"{args.epochs} epoch(s), shuffled")
                for _ in range(args.repeats):
                    mlp.runs.append(run_mlp_only(ds, opt, args.batch_size, steps))
                    floor.runs.append(run_floor(ds, opt, args.batch_size, steps))
                    ours.runs.append(run_recsys(ds, opt, args.batch_size, args.epochs))
                cells += [mlp, floor, ours]
                if args.peers:
                    data = PeerData.from_batch(ds.train.slice(slice(0, args.peer_rows)), ds.config)
                    for peer in PEERS:
                        cell = Cell(ds.name, peer.name, name, len(data), note=peer.unavailable() or "")
                        for _ in range(0 if cell.note else args.repeats):
                            with contextlib.redirect_stdout(sys.stderr):  # they print progress
                                cell.runs.append(peer.run(data, opt, args.batch_size, args.epochs))
                        cells.append(cell)
                print(table([c for c in cells if c.dataset == ds.name and c.optimizer == name]), file=sys.stderr)
    print("\n" + table(cells), file=sys.stderr)
    print(json.dumps(as_json(args, cells, time.perf_counter() - t0)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
