"""Feature pipeline at scale: wall time and peak RSS of each step, each in its own process.

  generate        `recsys generate --impressions N` (the numpy click model), written as parquet
  build-features  load + join → point-in-time statistics → fit on train → encode + write, with the
                  time of each stage (the issue's aim at 10 M: ≤ 60 s and ≤ 2 GB)
  transform       FeaturePipeline.transform on --small-rows plain-array rows (what the service does
                  per request, through the same code): median and p99 milliseconds a call

Prints a table on stderr and ONE JSON line on stdout. Timings taken while other jobs share the CPU
are not trustworthy: check `load_avg_1m` in the JSON and rerun.

    python benchmarks/features_bench.py                        # 10 M impressions, synthetic spec
    python benchmarks/features_bench.py --rows 1000000 --workdir /tmp/fb   # keep the data
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SPEC = REPO / "pipelines" / "specs" / "synthetic.yaml"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------ steps (child process)
def step_generate(rows: int, raw: Path) -> dict[str, object]:
    from pipelines.generate import SyntheticConfig, write

    t0 = time.perf_counter()
    write(SyntheticConfig(impressions=rows), raw)
    return {"seconds": time.perf_counter() - t0}


def step_build(raw: Path, out: Path) -> dict[str, object]:
    from pipelines.build_features import build_features
    from recsys.spec import load_spec

    marks: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    build_features(load_spec(SPEC), raw, out, log=lambda msg: marks.append((msg.split()[0], time.perf_counter())),
                   progress=False)
    stages, last = {}, t0
    for name, t in marks:  # the log lines: read, point-in-time, fitted, wrote
        stages[{"read": "read+join", "point-in-time": "statistics", "fitted": "fit", "wrote": "encode+write"}.get(
            name, name)] = round(t - last, 2)
        last = t
    return {"seconds": time.perf_counter() - t0, "stages": stages}


def step_transform(small_rows: int, calls: int) -> dict[str, object]:
    """Fit on a small synthetic log, then time transform() on plain numpy rows, as the service calls it."""
    from pipelines.generate import SyntheticConfig, write
    from recsys.features import FeaturePipeline
    from recsys.features.engine.arrow import add_statistics, split_indices
    from recsys.features.raw import load_raw
    from recsys.spec import load_spec

    spec = load_spec(SPEC)
    with tempfile.TemporaryDirectory() as tmp:
        write(SyntheticConfig(users=400, items=300, impressions=20_000, days=10, seed=7), tmp)
        raw = load_raw(spec, tmp)
    add_statistics(spec, raw)
    train = raw.columns(split_indices(spec, raw)["train"])
    pipeline = FeaturePipeline(spec).fit(train, train[spec.label])
    rows = raw.columns(slice(len(raw.frame) - small_rows, None))
    request = {name: np.asarray(rows[name]) for name in pipeline.required_columns()}  # plain arrays, as online
    for _ in range(20):
        pipeline.transform(request)
    ms = []
    for _ in range(calls):
        t0 = time.perf_counter()
        pipeline.transform(request)
        ms.append((time.perf_counter() - t0) * 1e3)
    return {"rows": small_rows, "median_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99))}


def child(args: argparse.Namespace) -> int:
    if args.step == "generate":
        out = step_generate(args.rows, args.raw)
    elif args.step == "build-features":
        out = step_build(args.raw, args.out)
    else:
        out = step_transform(args.small_rows, args.calls)
    print(json.dumps({**out, "peak_rss_mb": round(peak_rss_mb())}))
    return 0


# ------------------------------------------------------------------------------ parent
def run_step(step: str, *extra: str) -> dict[str, object]:
    proc = subprocess.run([sys.executable, __file__, "--step", step, *extra], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{step} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=10_000_000, help="synthetic impressions")
    p.add_argument("--workdir", type=Path, default=None, help="keep raw + features here (raw reused if present)")
    p.add_argument("--small-rows", type=int, default=500, help="rows per transform call")
    p.add_argument("--calls", type=int, default=300, help="transform calls timed")
    p.add_argument("--step", choices=["generate", "build-features", "transform"], help=argparse.SUPPRESS)
    p.add_argument("--raw", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.step:
        return child(args)

    with tempfile.TemporaryDirectory(prefix="features-bench-") as tmp:
        work = args.workdir or Path(tmp)
        raw, out = work / "raw", work / "features"
        results: dict[str, dict[str, object]] = {}
        if (raw / "impressions.parquet").is_file() and args.workdir:
            results["generate"] = {"note": f"reused {raw}"}
        else:
            results["generate"] = run_step("generate", "--rows", str(args.rows), "--raw", str(raw))
        results["build-features"] = run_step("build-features", "--raw", str(raw), "--out", str(out))
        results["transform"] = run_step("transform", "--small-rows", str(args.small_rows), "--calls", str(args.calls))

    rounded = {k: {kk: (round(v, 3) if isinstance(v, float) else v) for kk, v in r.items()} for k, r in results.items()}
    report = {"benchmark": "features", "rows": args.rows, "load_avg_1m": os.getloadavg()[0], "cpus": os.cpu_count(),
              **rounded}
    lines = [f"{'step':<16}{'seconds':>9}{'peak RSS MB':>13}  detail"]
    for name, r in results.items():
        detail = r.get("stages") or r.get("note") or ""
        if name == "transform":
            detail = f"{r['rows']} rows: median {r['median_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms a call"
        seconds = f"{r['seconds']:.1f}" if "seconds" in r else "-"
        lines.append(f"{name:<16}{seconds:>9}{r.get('peak_rss_mb', '-'):>13}  {detail}")
    print(f"{args.rows:,} impressions, load avg {report['load_avg_1m']:.2f}\n" + "\n".join(lines), file=sys.stderr)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
