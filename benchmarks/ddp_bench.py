"""Data-parallel training on one machine: what DistributedDataParallel (gloo) costs and buys.

  nproc   one epoch of `recsys.training.train` on the 1 M synthetic features (in memory):
          1 process × T threads vs N processes × T/N threads, and N processes whose DDP gradient
          all-reduce is replaced by a no-op communication hook: (DDP − no-op) / DDP is the share of
          the step that the all-reduce takes.
  same-model  `recsys train` with 1 and with N processes (same spec, seed, global batch) on the
          MovieLens 100K time split and the synthetic demo data: test AUC side by side (the bar:
          within 0.002).
  grads   how an embedding table's gradient travels: a table of R rows × 16 read by 1024 rows × 15
          Zipf-skewed ids a step, Adagrad, in 2 gloo processes: dense gradients (DDP all-reduces
          all R × 16 floats every step) vs sparse ones (DDP all-gathers the touched rows), each
          also with the no-op hook, and in one process without DDP. Where the two cross is where a
          table should switch to sparse gradients under DDP.

Run it alone (prints a table on stderr and ONE JSON line on stdout):

    flock /tmp/bench.lock python benchmarks/ddp_bench.py nproc
    flock /tmp/bench.lock python benchmarks/ddp_bench.py grads
    python benchmarks/ddp_bench.py same-model          # accuracy, not speed: no lock needed
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from stream_bench import DEFAULT_WORKDIR, machine, synthetic_features  # noqa: E402
from torch import nn  # noqa: E402

from recsys.training import Dist  # noqa: E402


def _no_allreduce(state, bucket):  # type: ignore[no-untyped-def]  (DDP checks the real annotation objects)
    """A DDP communication hook that returns the local gradients untouched: the step without its
    all-reduce."""
    fut = torch.futures.Future()  # type: ignore[var-annotated]
    fut.set_result(bucket.buffer())
    return fut


_no_allreduce.__annotations__ = {"bucket": dist.GradBucket, "return": torch.futures.Future[torch.Tensor]}


@dataclasses.dataclass(frozen=True)
class NoAllReduce(Dist):
    def wrap(self, model: nn.Module) -> nn.Module:
        ddp = super().wrap(model)
        ddp.register_comm_hook(None, _no_allreduce)  # type: ignore[operator]
        return ddp


def _dist(no_allreduce: bool) -> Dist:
    d = Dist.from_env()
    return NoAllReduce(**{f.name: getattr(d, f.name) for f in dataclasses.fields(d)}) if no_allreduce else d


# ------------------------------------------------------------------------------------------ workers
def _setup(features: Path, threads: int, d: Dist) -> tuple[Any, Any, Any]:
    """(the rank's in-memory epoch data, the model, the training config) of the features."""
    from pipelines.train import load_features
    from recsys.model import WideDeep, WideDeepConfig
    from recsys.training import ParquetSource, RunSettings, epoch_data, uses_sparse_grad

    torch.set_num_threads(threads)
    spec, pipeline, _ = load_features(features)
    cfg = spec.training.model_copy(update={"epochs": 1, "patience": 1})
    data, _ = epoch_data(ParquetSource(features, "train", spec.label), RunSettings(data="memory"), cfg.batch_size,
                         cfg.seed, d.rank, d.world)
    torch.manual_seed(0)
    model = WideDeep(WideDeepConfig.from_layout(pipeline.layout, spec.model, sparse_grad=uses_sparse_grad(cfg)))
    return data, model, cfg


def nproc_worker(features: Path, threads: int, no_allreduce: bool) -> dict[str, Any] | None:
    from recsys.training import train

    d = _dist(no_allreduce)
    data, model, cfg = _setup(features, threads, d)
    result = train(model, data, None, cfg, progress=False, dist=d)
    d.close()
    return {"samples_per_s": round(result.samples_per_second), "rows": data.plan.rows} if d.is_main else None


def share_worker(features: Path, threads: int, block: int) -> dict[str, Any] | None:
    """One epoch's steps in blocks of `block`, alternately with DDP's gradient all-reduce and under
    DDP's no_sync (the same forward, backward and optimizer step, gradients left local), each block
    timed from a barrier to a barrier: the all-reduce's share of the step, A/B in the same processes
    at the same moments (separate runs on a shared host drift by more than the share)."""
    from recsys.training import build_optimizers

    d = Dist.from_env()
    data, model, cfg = _setup(features, threads, d)
    net = d.wrap(model)
    optimizers, loss_fn = build_optimizers(model, cfg), nn.BCEWithLogitsLoss()
    times: dict[bool, list[float]] = {True: [], False: []}
    batches = iter(data.epoch(1))
    for i in itertools.count():
        sync = i % 2 == 0
        d.barrier()
        t0, n = time.perf_counter(), 0
        with contextlib.nullcontext() if sync else net.no_sync():  # type: ignore[operator]
            for batch, _ in itertools.islice(batches, block):
                for opt in optimizers:
                    opt.zero_grad(set_to_none=True)
                loss_fn(net(batch), batch.label).backward()
                for opt in optimizers:
                    opt.step()
                n += 1
        d.barrier()
        if n < block:
            break
        if i >= 2:  # the first pair warms up
            times[sync].append((time.perf_counter() - t0) / n * 1000)
    d.close()
    if not d.is_main:
        return None
    with_ms, without_ms = float(np.median(times[True])), float(np.median(times[False]))
    return {"step_ms_allreduce": round(with_ms, 2), "step_ms_no_sync": round(without_ms, 2),
            "allreduce_share": round(1 - without_ms / with_ms, 3), "blocks": len(times[True]),
            "block_steps": block}


def grads_worker(rows: int, sparse: bool, no_allreduce: bool, steps: int) -> dict[str, Any] | None:
    torch.set_num_threads(1)
    d = _dist(no_allreduce)
    torch.manual_seed(0)
    table = nn.Embedding(rows, 16, sparse=sparse)
    model = d.wrap(_Lookup(table))
    opt = torch.optim.Adagrad(model.parameters(), lr=0.05, fused=not sparse)
    gen = torch.Generator().manual_seed(d.rank)
    batches = [((rows * torch.rand(1024, 15, generator=gen) ** 3).long(), torch.rand(1024, generator=gen).round())
               for _ in range(8)]

    def step(i: int) -> None:
        ids, y = batches[i % len(batches)]
        opt.zero_grad(set_to_none=True)
        nn.functional.binary_cross_entropy_with_logits(model(ids), y).backward()
        opt.step()

    for i in range(5):
        step(i)
    if d.active:
        dist.barrier()
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    ms = (time.perf_counter() - t0) / steps * 1000
    d.close()
    return {"step_ms": round(ms, 2)} if d.is_main else None


class _Lookup(nn.Module):
    """ids [n, 15] → the sum of their rows → one logit: the table is all there is to train."""

    def __init__(self, table: nn.Embedding) -> None:
        super().__init__()
        self.table = table
        self.out = nn.Linear(16, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.out(self.table(ids).sum(1)).squeeze(-1)
        return out


def launch(nproc: int, args: list[str]) -> dict[str, Any]:
    """This script's worker in `nproc` processes (torchrun) or in one plain process."""
    prefix = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                   f"--nproc-per-node={nproc}"]
    out = subprocess.run([*prefix, __file__, *args], check=True, capture_output=True, text=True,
                         env={"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "PYTHONPATH": str(REPO),
                              "OMP_NUM_THREADS": "1"})
    return dict(json.loads(next(x for x in out.stdout.splitlines() if x.startswith("{"))))


# ------------------------------------------------------------------------------------------ drivers
def nproc(args: argparse.Namespace) -> dict[str, Any]:
    features = synthetic_features(args.workdir, args.impressions)
    per = max(1, args.threads // args.nproc)
    cells: dict[str, list[int]] = {"1 process": [], f"{args.nproc} processes": [], f"{args.nproc} no all-reduce": []}
    for _ in range(args.repeats):  # interleaved
        cells["1 process"].append(launch(1, ["nproc-worker", str(features), "--threads", str(args.threads)])[
            "samples_per_s"])
        cells[f"{args.nproc} processes"].append(launch(args.nproc, ["nproc-worker", str(features), "--threads",
                                                                    str(per)])["samples_per_s"])
        cells[f"{args.nproc} no all-reduce"].append(launch(args.nproc, ["nproc-worker", str(features), "--threads",
                                                                        str(per), "--no-allreduce"])["samples_per_s"])
    best = {k: max(v) for k, v in cells.items()}
    ddp, free = best[f"{args.nproc} processes"], best[f"{args.nproc} no all-reduce"]
    share = 1 - ddp / free  # time per sample with / without the all-reduce
    inrun = launch(args.nproc, ["share-worker", str(features), "--threads", str(per), "--block", str(args.block)])
    print(f"\n{'runner':<24}{'threads each':>13}{'samples/s':>12}  runs", file=sys.stderr)
    for k, v in cells.items():
        print(f"{k:<24}{(args.threads if k == '1 process' else per):>13}{best[k]:>12,}  {v}", file=sys.stderr)
    print(f"all-reduce share of the {args.nproc}-process step: {share:.1%} (best runs); in one run, blocks of "
          f"{args.block} steps with and without it alternating: {inrun['allreduce_share']:.1%} "
          f"({inrun['step_ms_allreduce']} vs {inrun['step_ms_no_sync']} ms a step, medians of {inrun['blocks']} "
          f"blocks each)", file=sys.stderr)
    return {"benchmark": "ddp-nproc", "impressions": args.impressions, "nproc": args.nproc, "threads": args.threads,
            "samples_per_s": best, "runs": cells, "allreduce_share": round(share, 3), "in_run": inrun}


def grads(args: argparse.Namespace) -> dict[str, Any]:
    rows_out = []
    for rows in args.rows:
        runs: dict[str, list[float]] = {}
        for _ in range(args.repeats):  # interleaved; a cell's best run is the one the other jobs disturbed least
            for sparse in (False, True):
                kind = "sparse" if sparse else "dense"
                base = ["grads-worker", "--rows", str(rows), "--steps", str(args.steps)] + (["--sparse"] * sparse)
                for name, n, extra in (("1proc", 1, []), ("ddp", 2, []), ("ddp_noop", 2, ["--no-allreduce"])):
                    runs.setdefault(f"{kind}_{name}_ms", []).append(launch(n, [*base, *extra])["step_ms"])
        cell: dict[str, Any] = {"rows": rows, "elements": rows * 16, **{k: min(v) for k, v in runs.items()},
                                "runs": runs}
        rows_out.append(cell)
        print(f"{rows:>11,} rows: dense {cell['dense_ddp_ms']:>8.1f} ms (no all-reduce {cell['dense_ddp_noop_ms']:.1f},"
              f" 1 proc {cell['dense_1proc_ms']:.1f})  sparse {cell['sparse_ddp_ms']:>7.1f} ms (no all-reduce "
              f"{cell['sparse_ddp_noop_ms']:.1f}, 1 proc {cell['sparse_1proc_ms']:.1f})", file=sys.stderr)
    return {"benchmark": "ddp-embedding-grads", "dim": 16, "ids_per_step": 1024 * 15, "optimizer": "adagrad",
            "steps": args.steps, "repeats": args.repeats, "results": rows_out}


def same_model_data(work: Path, movielens: Path) -> dict[str, Path]:
    """Built features of the MovieLens 100K time split and of the demo's synthetic data (reused)."""
    from pipelines.build_features import build_features
    from pipelines.demo import DEMO_IMPRESSIONS, DEMO_ITEMS, DEMO_USERS
    from pipelines.generate import SyntheticConfig, write
    from pipelines.movielens import import_movielens
    from recsys.spec import load_spec

    out = {}
    for name, spec, make in (
            ("movielens-100k", "movielens-100k", lambda raw: import_movielens(movielens, raw)),
            ("demo", "synthetic", lambda raw: write(SyntheticConfig(users=DEMO_USERS, items=DEMO_ITEMS,
                                                                    impressions=DEMO_IMPRESSIONS), raw))):
        features = work / f"same-model-{name}" / "features"
        if not (features / "manifest.json").is_file():
            raw = work / f"same-model-{name}" / "raw"
            make(raw)
            build_features(load_spec(REPO / "pipelines" / "specs" / f"{spec}.yaml"), raw, features,
                           log=lambda _: None, progress=False)
        out[name] = features
    return out


def same_model(args: argparse.Namespace) -> dict[str, Any]:
    from recsys.artifact import load_artifact
    from recsys.features.splits import read_split
    from recsys.inference import Predictor
    from recsys.metrics import auc

    results = []
    for name, features in same_model_data(args.workdir, args.movielens).items():
        enc, meta = read_split(features, "test")
        cell: dict[str, Any] = {"data": name}
        for n in (1, args.nproc):
            model = args.workdir / f"same-model-{name}" / f"model-{n}"
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "pipelines.cli", "train", "--features", str(features), "--out",
                            str(model), "--nproc", str(n), "--threads", "1", "--quiet"], check=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True)
            artifact = load_artifact(model)
            cell[f"test_auc_{n}"] = round(auc(meta[artifact.pipeline.spec.label].to_numpy(),
                                              Predictor.from_artifact(artifact).score_encoded(enc)), 5)
            cell[f"valid_auc_{n}"] = round(artifact.metadata["metrics"]["valid.auc"], 5)
            cell[f"best_epoch_{n}"] = artifact.metadata["training"]["best_epoch"]
            cell[f"seconds_{n}"] = round(time.perf_counter() - t0)
        cell["difference"] = round(abs(cell["test_auc_1"] - cell[f"test_auc_{args.nproc}"]), 5)
        results.append(cell)
        print(f"{name:<16} test AUC 1 process {cell['test_auc_1']:.4f}, {args.nproc} processes "
              f"{cell[f'test_auc_{args.nproc}']:.4f} (difference {cell['difference']:.5f}; best epochs "
              f"{cell['best_epoch_1']} / {cell[f'best_epoch_{args.nproc}']})", file=sys.stderr)
    return {"benchmark": "ddp-same-model", "nproc": args.nproc, "results": results}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    n = sub.add_parser("nproc")
    n.add_argument("--impressions", type=int, default=1_000_000)
    n.add_argument("--nproc", type=int, default=2)
    n.add_argument("--threads", type=int, default=2, help="threads in all: 1×T vs N×T/N")
    n.add_argument("--repeats", type=int, default=2)
    n.add_argument("--block", type=int, default=20, help="steps a block in the in-run all-reduce A/B")
    n.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    m = sub.add_parser("same-model")
    m.add_argument("--nproc", type=int, default=2)
    m.add_argument("--movielens", type=Path, default=REPO.parent / "shared" / "data" / "movielens-100k")
    m.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    g = sub.add_parser("grads")
    g.add_argument("--rows", type=lambda s: [int(x) for x in s.split(",")],
                   default=[10_000, 100_000, 1_000_000, 4_000_000])
    g.add_argument("--steps", type=int, default=30)
    g.add_argument("--repeats", type=int, default=3)
    nw = sub.add_parser("nproc-worker")
    nw.add_argument("features", type=Path)
    nw.add_argument("--threads", type=int, required=True)
    nw.add_argument("--no-allreduce", action="store_true")
    sw = sub.add_parser("share-worker")
    sw.add_argument("features", type=Path)
    sw.add_argument("--threads", type=int, required=True)
    sw.add_argument("--block", type=int, required=True)
    gw = sub.add_parser("grads-worker")
    gw.add_argument("--rows", type=int, required=True)
    gw.add_argument("--steps", type=int, required=True)
    gw.add_argument("--sparse", action="store_true")
    gw.add_argument("--no-allreduce", action="store_true")
    args = p.parse_args(argv)
    if args.command in ("nproc-worker", "share-worker", "grads-worker"):
        out = nproc_worker(args.features, args.threads, args.no_allreduce) if args.command == "nproc-worker" else \
            share_worker(args.features, args.threads, args.block) if args.command == "share-worker" else \
            grads_worker(args.rows, args.sparse, args.no_allreduce, args.steps)
        if out is not None:
            print(json.dumps(out))
        return 0
    t0 = time.perf_counter()
    result = {"nproc": nproc, "grads": grads, "same-model": same_model}[args.command](args)
    print(json.dumps({**result, "machine": machine(), "seconds": round(time.perf_counter() - t0)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
