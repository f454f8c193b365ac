"""Training data in memory vs streamed from parquet: samples/s and peak RSS, one process.

  compare   1 M and 10 M synthetic impressions (`recsys generate` + `build-features`, the shipped
            synthetic spec), one epoch in memory and one streamed, each in its own process (peak RSS
            is per process), alternating, --repeats times. Streaming runs under a smaller memory
            budget (--stream-budget-mb) so that its shuffle window is smaller than both data sets:
            its RSS must then be the same at 1 M and at 10 M.
  big       100 M encoded rows with the synthetic layout (widths and table sizes of a built 1 M
            features folder), written straight to a folder of parquet part files in 1 M-row chunks
            (no build-features over 100 M impressions), then one streamed epoch: samples/s and
            peak RSS (the bar: ≤ 4 GB).

Data lives under --workdir (default /work/bench-data/training) and is reused between runs; delete
it when done. Prints a table on stderr and ONE JSON line on stdout. Run it alone:

    flock /tmp/bench.lock python benchmarks/stream_bench.py compare
    flock /tmp/bench.lock python benchmarks/stream_bench.py big --rows 100000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_WORKDIR = Path("/work/bench-data/training")


# ------------------------------------------------------------------------------------------ data
def synthetic_features(work: Path, impressions: int) -> Path:
    """`recsys generate` + `build-features` with the shipped synthetic spec (reused when present)."""
    from pipelines.build_features import build_features
    from pipelines.generate import SyntheticConfig, write
    from recsys.spec import load_spec

    features = work / f"synthetic-{impressions}" / "features"
    if not (features / "manifest.json").is_file():
        raw = work / f"synthetic-{impressions}" / "raw"
        write(SyntheticConfig(impressions=impressions), raw)
        build_features(load_spec(REPO / "pipelines" / "specs" / "synthetic.yaml"), raw, features,
                       log=lambda _: None, progress=False)
        shutil.rmtree(raw)
    return features


def encoded_features(work: Path, template: Path, rows: int, chunk: int = 1_000_000) -> Path:
    """`rows` encoded rows with the layout of `template` (a built features folder): each id column
    draws Zipf-like ids inside its field's range of the tables, dense columns are normal, labels
    Bernoulli(0.3). Written as part files of 5 chunks, a row group per chunk; valid: one chunk."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.train import load_features

    out = work / f"encoded-{rows}"
    if (out / "manifest.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    _, pipeline, _ = load_features(template)
    layout = pipeline.layout
    deep, wide = pipeline.table_offsets()
    sample = pq.read_table(template / "train.parquet").slice(0, 100_000)
    ranges = {}  # column → (low, high) of its ids, from the template's own encoded rows
    for name in sample.column_names:
        if name.split(".")[0] in ("sparse", "wide"):
            col = sample[name].to_numpy()
            ranges[name] = (int(col.min()), int(col.max()) + 1)
    rng = np.random.default_rng(0)

    def table(n: int) -> pa.Table:
        cols: dict[str, Any] = {}
        for name, (lo, hi) in ranges.items():
            u = rng.random(n)
            cols[name] = (lo + ((hi - lo) * u ** 3).astype(np.int64)).astype(np.int32)  # skewed to low ids
        for j in range(len(layout.dense_fields)):
            cols[f"dense.{j}"] = rng.standard_normal(n, dtype=np.float32)
        cols["label"] = (rng.random(n) < 0.3).astype(np.int8)
        return pa.table(cols)

    parts = out / "train.parquet"
    parts.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    for part, start in enumerate(range(0, rows, 5 * chunk)):
        with pq.ParquetWriter(parts / f"part-{part:05d}.parquet", table(1).schema, compression="lz4") as w:
            for s in range(start, min(start + 5 * chunk, rows), chunk):
                w.write_table(table(min(chunk, rows - s)))
        print(f"  {time.strftime('%H:%M:%S')} wrote {min(start + 5 * chunk, rows):,} of {rows:,} rows",
              file=sys.stderr, flush=True)
    pq.write_table(table(chunk), out / "valid.parquet", compression="lz4")
    for f in ("spec.yaml", "transforms.json"):
        shutil.copy(template / f, out / f)
    manifest = json.loads((template / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "rows": {"train": rows, "valid": chunk}}))
    print(f"wrote {rows:,} encoded rows in {time.perf_counter() - t0:.0f}s ({len(deep)} deep and {len(wide)} "
          f"wide regions)", file=sys.stderr)
    return out


# ------------------------------------------------------------------------------------------ worker
def worker(features: Path, mode: str, budget_mb: int, threads: int, epochs: int, seconds: float,
           log_every: float) -> dict[str, Any]:
    """One training run in this process: one epoch of recsys.training.train, no validation; or,
    with `seconds` or `log_every`, the same steps over the epoch (its start until `seconds` have
    passed, when given), logging progress every `log_every` seconds."""
    import torch

    from pipelines.train import load_features
    from recsys.model import WideDeep, WideDeepConfig
    from recsys.training import ParquetSource, RunSettings, epoch_data, train, uses_sparse_grad

    torch.set_num_threads(threads)
    spec, pipeline, _ = load_features(features)
    cfg = spec.training.model_copy(update={"epochs": epochs, "patience": epochs})
    t0 = time.perf_counter()
    data, how = epoch_data(ParquetSource(features, "train", spec.label),
                           RunSettings(data=mode, memory_budget_mb=budget_mb), cfg.batch_size, cfg.seed)
    load = time.perf_counter() - t0
    torch.manual_seed(0)
    model = WideDeep(WideDeepConfig.from_layout(pipeline.layout, spec.model, sparse_grad=uses_sparse_grad(cfg)))
    if seconds or log_every:
        return {"mode": mode, "rows": data.plan.rows, "how": how, "load_s": round(load, 2),
                **timed_steps(model, data, cfg, seconds, log_every), "peak_rss_mb": _peak_rss_mb()}
    result = train(model, data, None, cfg, progress=False)
    return {"mode": mode, "rows": data.plan.rows, "how": how, "load_s": round(load, 2),
            "epoch_s": round(result.seconds, 2), "samples_per_s": round(result.samples_per_second),
            "wall_samples_per_s": round(data.plan.rows * epochs / (time.perf_counter() - t0)),
            "peak_rss_mb": _peak_rss_mb()}


def timed_steps(model: Any, data: Any, cfg: Any, seconds: float, log_every: float) -> dict[str, Any]:
    """The train loop's step (as recsys.training.train takes it) over the first `seconds` of an epoch
    (0: the whole epoch), with a progress line on stderr every `log_every` seconds (0: none)."""
    import torch

    from recsys.training import build_optimizers

    optimizers, loss_fn = build_optimizers(model, cfg), torch.nn.BCEWithLogitsLoss()
    rows, t0 = 0, time.perf_counter()
    logged = t0
    for batch, _ in data.epoch(1):
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss_fn(model(batch), batch.label).backward()
        for opt in optimizers:
            opt.step()
        rows += len(batch)
        now = time.perf_counter()
        if log_every and now - logged >= log_every:
            logged = now
            print(f"  {time.strftime('%H:%M:%S')} {rows:,} of {data.plan.rows:,} rows in {now - t0:,.0f}s: "
                  f"{rows / (now - t0):,.0f} samples/s, peak RSS so far {_peak_rss_mb():,} MB", file=sys.stderr,
                  flush=True)
        if seconds and now - t0 > seconds:
            break
    spent = time.perf_counter() - t0
    return {"epoch_s": round(spent, 2), "samples_per_s": round(rows / spent), "rows_trained": rows}


def _peak_rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def run_worker(features: Path, mode: str, budget_mb: int, threads: int, epochs: int = 1,
               seconds: float = 0, log_every: float = 0) -> dict[str, Any]:
    """The worker in its own process; its stderr (progress, warnings) passes through to ours."""
    cmd = [sys.executable, __file__, "worker", str(features), "--mode", mode, "--budget-mb", str(budget_mb),
           "--threads", str(threads), "--epochs", str(epochs), "--seconds", str(seconds), "--log-every",
           str(log_every)]
    # OMP_WAIT_POLICY=PASSIVE: on a shared host, spinning OpenMP workers take the cores from the
    # thread they wait for (measured: 80 vs 660 ms a step at 2 threads, load ~11 on 2 cores).
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=env)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  {mode:<7}{result['rows']:>12,} rows  {result['samples_per_s']:>9,} samples/s  "
          f"{result['peak_rss_mb']:>7,} MB peak RSS  ({result['how'].split(';')[0]})", file=sys.stderr)
    return result


# ------------------------------------------------------------------------------------------ report
def machine() -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    except OSError:
        pass
    import torch

    return {"cpu": cpu, "cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "load_avg_1m": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def compare(args: argparse.Namespace) -> dict[str, Any]:
    results = []
    for impressions in args.impressions:
        features = synthetic_features(args.workdir, impressions)
        runs: dict[str, list[dict[str, Any]]] = {"memory": [], "stream": []}
        seconds = args.seconds if impressions > args.full_epoch_max else 0
        for _ in range(args.repeats):  # alternate, so a busy spell on the shared host hits both
            runs["memory"].append(run_worker(features, "memory", args.memory_budget_mb, args.threads, seconds=seconds))
            runs["stream"].append(run_worker(features, "stream", args.stream_budget_mb, args.threads, seconds=seconds))
        best = {m: max(r, key=lambda x: x["samples_per_s"]) for m, r in runs.items()}
        results.append({"impressions": impressions, "train_rows": best["memory"]["rows"], "timed_seconds": seconds,
                        "memory": best["memory"], "stream": best["stream"],
                        "stream_over_memory": round(best["stream"]["samples_per_s"] / best["memory"]["samples_per_s"],
                                                    3),
                        "all_runs": {m: [x["samples_per_s"] for x in r] for m, r in runs.items()}})
    print(f"\n{'train rows':>12}{'memory samples/s':>18}{'stream samples/s':>18}{'stream ÷ memory':>17}"
          f"{'memory RSS MB':>15}{'stream RSS MB':>15}", file=sys.stderr)
    for r in results:
        print(f"{r['train_rows']:>12,}{r['memory']['samples_per_s']:>18,}{r['stream']['samples_per_s']:>18,}"
              f"{r['stream_over_memory']:>17.2f}{r['memory']['peak_rss_mb']:>15,}{r['stream']['peak_rss_mb']:>15,}",
              file=sys.stderr)
    return {"benchmark": "stream-vs-memory", "threads": args.threads, "repeats": args.repeats,
            "stream_budget_mb": args.stream_budget_mb, "memory_budget_mb": args.memory_budget_mb, "results": results}


def big(args: argparse.Namespace) -> dict[str, Any]:
    template = synthetic_features(args.workdir, 1_000_000)
    features = encoded_features(args.workdir, template, args.rows)
    result = run_worker(features, "stream", args.stream_budget_mb, args.threads, seconds=args.seconds,
                        log_every=args.log_every)
    rows = result.get("rows_trained", result["rows"])
    print(f"\n{rows:,} rows streamed in {result['epoch_s']:,.0f}s: {result['samples_per_s']:,} samples/s, "
          f"peak RSS {result['peak_rss_mb']:,} MB (budget {args.stream_budget_mb:,} MiB)", file=sys.stderr)
    return {"benchmark": "stream-100m", "threads": args.threads, "result": result,
            "disk_gb": round(sum(f.stat().st_size for f in features.rglob("*.parquet")) / 1e9, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare")
    c.add_argument("--impressions", type=lambda s: [int(x) for x in s.split(",")], default=[1_000_000, 10_000_000])
    c.add_argument("--repeats", type=int, default=2)
    c.add_argument("--memory-budget-mb", type=int, default=8192)
    c.add_argument("--full-epoch-max", type=int, default=1_000_000,
                   help="larger data sets train only --seconds of their epoch (0 = whole epochs)")
    b = sub.add_parser("big")
    b.add_argument("--rows", type=int, default=100_000_000)
    b.add_argument("--log-every", type=float, default=60, help="a progress line every this many seconds")
    for q in (c, b):
        q.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
        q.add_argument("--threads", type=int, default=2)
        q.add_argument("--stream-budget-mb", type=int, default=512)
        q.add_argument("--seconds", type=float, default=0, help="train only this long (0: the whole epoch)")
    w = sub.add_parser("worker")
    w.add_argument("features", type=Path)
    w.add_argument("--mode", choices=["memory", "stream"], required=True)
    w.add_argument("--budget-mb", type=int, required=True)
    w.add_argument("--threads", type=int, required=True)
    w.add_argument("--epochs", type=int, default=1)
    w.add_argument("--seconds", type=float, default=0)
    w.add_argument("--log-every", type=float, default=0)
    args = p.parse_args(argv)
    if args.command == "worker":
        print(json.dumps(worker(args.features, args.mode, args.budget_mb, args.threads, args.epochs, args.seconds,
                                args.log_every)))
        return 0
    t0 = time.perf_counter()
    out = compare(args) if args.command == "compare" else big(args)
    print(json.dumps({**out, "machine": machine(), "seconds": round(time.perf_counter() - t0)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
