"""build-features on Spark (local[N]) vs the embedded arrow engine, side by side in one run: wall
time and peak RSS of every process of each run (driver, JVM, Python workers), sampled from the
process tree. Not a timed test: prints a table on stderr and ONE JSON line on stdout.

Data: synthetic impressions written straight to a folder of parquet parts, one chunk at a time, so
100 M rows never sit in memory: users and items come from `pipelines.generate` (its Zipf
popularity, activity and click model), impressions are drawn chunk by chunk from the same user
activity and item popularity, with a logistic label (the generator's planted model without the
per-user fatigue term, which needs the whole history).

The embedded engine runs under an RSS watchdog (--arrow-cap-gb): past the cap it is killed and the
result says so, so it cannot take the machine down.

    flock /tmp/bench.lock python benchmarks/spark_bench.py --rows 10000000 --workdir /work/bench-data/spark
    flock /tmp/bench.lock python benchmarks/spark_bench.py --rows 100000000 --driver-memory 6g \\
        --arrow-cap-gb 10 --workdir /work/bench-data/spark
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SPEC = REPO / "pipelines" / "specs" / "synthetic.yaml"


def generate_chunked(out: Path, rows: int, chunk_rows: int, users: int, items: int, days: int, seed: int = 0) -> None:
    """users.parquet, items.parquet and impressions/part-*.parquet (time-ordered chunks)."""
    from pipelines.generate import DAY, START, SyntheticConfig, _zipf_weights, generate
    from recsys.io import write_table

    tables = generate(SyntheticConfig(users=users, items=items, impressions=1_000, days=days, seed=seed))
    write_table(tables["users"], out / "users.parquet")
    write_table(tables["items"], out / "items.parquet")
    rng = np.random.default_rng(seed + 1)
    activity = rng.lognormal(0, 0.8, users)
    popularity = _zipf_weights(items, 1.05, rng)
    quality = rng.normal(0, 0.5, items)
    user_bias = rng.normal(0, 0.4, users)
    user_ids = tables["users"]["user_id"].to_numpy()
    item_ids = tables["items"]["item_id"].to_numpy()
    (out / "impressions").mkdir(parents=True)
    chunks = -(-rows // chunk_rows)
    for c in range(chunks):
        n = min(chunk_rows, rows - c * chunk_rows)
        lo, hi = START + c * days * DAY // chunks, START + (c + 1) * days * DAY // chunks
        u = rng.choice(users, size=n, p=activity / activity.sum())
        i = rng.choice(items, size=n, p=popularity)
        ts = np.sort(rng.integers(lo, hi, n))
        hour = (ts // 3600) % 24
        logit = -0.9 + quality[i] + user_bias[u] + 0.25 * ((hour >= 18) & (hour <= 23))
        prob = 1.0 / (1.0 + np.exp(-logit))
        pd.DataFrame({
            "user_id": pd.Categorical.from_codes(u, categories=pd.Index(user_ids, dtype=object)),
            "item_id": pd.Categorical.from_codes(i, categories=pd.Index(item_ids, dtype=object)),
            "timestamp": ts,
            "device": pd.Categorical.from_codes(rng.integers(0, 3, n), categories=["ios", "android", "web"]),
            "label": (rng.random(n) < prob).astype(np.int8),
            "true_prob": prob,
        }).to_parquet(out / "impressions" / f"part-{c:05d}.parquet", index=False)


def _kind(p: psutil.Process) -> str:
    try:
        cmd = " ".join(p.cmdline())
    except psutil.Error:
        return "other"
    if "java" in p.name() or "org.apache.spark" in cmd:
        return "jvm"
    if "pyspark.daemon" in cmd or "pyspark/daemon" in cmd or "pyspark.worker" in cmd:
        return "python workers"
    return "driver" if "pipelines.cli" in cmd else "other"


def run_watched(cmd: list[str], cap_gb: float | None, env: dict[str, str]) -> dict[str, object]:
    """Run `cmd`, sampling the RSS of its process tree every 0.2 s: peak of the whole tree and peak
    of each kind of process. Killed (and reported) when the tree passes `cap_gb`."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    peak_total, peaks, killed = 0.0, {}, False
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            break
        by_kind: dict[str, float] = {}
        for p in tree:
            try:
                by_kind[_kind(p)] = by_kind.get(_kind(p), 0.0) + p.memory_info().rss / 2**30
            except psutil.Error:
                pass
        peak_total = max(peak_total, sum(by_kind.values()))
        for k, v in by_kind.items():
            peaks[k] = max(peaks.get(k, 0.0), v)
        if cap_gb is not None and peak_total > cap_gb:
            for p in reversed(tree):
                try:
                    p.kill()
                except psutil.Error:
                    pass
            killed = True
            break
        time.sleep(0.2)
    _, err = proc.communicate()
    ok = proc.returncode == 0 and not killed
    return {"seconds": round(time.perf_counter() - t0, 1), "ok": ok, "killed_at_cap": killed,
            "peak_rss_gb": round(peak_total, 2), "peak_rss_gb_by_process": {k: round(v, 2) for k, v in peaks.items()},
            "error": None if ok else (f"killed above {cap_gb} GB" if killed else err.strip().splitlines()[-1:])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--chunk-rows", type=int, default=5_000_000)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--days", type=int, default=28)
    ap.add_argument("--workdir", type=Path, default=Path("/work/bench-data/spark"))
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--driver-memory", default="6g")
    ap.add_argument("--arrow-cap-gb", type=float, default=10.0, help="kill the embedded engine above this RSS")
    ap.add_argument("--engines", default="arrow,spark")
    ap.add_argument("--keep", action="store_true", help="keep the generated data and outputs")
    args = ap.parse_args()

    raw = args.workdir / f"raw-{args.rows}"
    t0 = time.perf_counter()
    if not raw.exists():
        generate_chunked(raw, args.rows, args.chunk_rows, args.users, args.items, args.days)
    gen_s = time.perf_counter() - t0
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    local = args.master.startswith("local[") and args.master[6:-1].isdigit()
    cores = int(args.master[6:-1]) if local else os.cpu_count()
    results: dict[str, dict[str, object]] = {}
    try:
        for engine in args.engines.split(","):
            out = args.workdir / f"out-{engine}"
            shutil.rmtree(out, ignore_errors=True)
            cmd = [sys.executable, "-m", "pipelines.cli", "build-features", "--spec", str(SPEC), "--raw", str(raw),
                   "--out", str(out), "--quiet", "--engine", engine]
            if engine == "spark":
                cmd += ["--master", args.master, "--conf", f"spark.driver.memory={args.driver_memory}",
                        "--conf", f"spark.local.dir={args.workdir / 'spark-local'}"]
            results[engine] = run_watched(cmd, args.arrow_cap_gb if engine == "arrow" else None, env)
            r = results[engine]
            if r["ok"]:
                r["rows_per_s_per_core"] = round(args.rows / float(r["seconds"]) / (cores or 1))  # type: ignore[arg-type]
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    load = os.getloadavg()[0]
    print(f"{'engine':<8}{'ok':>5}{'seconds':>10}{'peak GB':>10}{'rows/s/core':>14}  peak GB by process",
          file=sys.stderr)
    for engine, r in results.items():
        print(f"{engine:<8}{str(r['ok']):>5}{r['seconds']:>10}{r['peak_rss_gb']:>10}"
              f"{r.get('rows_per_s_per_core', '-'):>14}  {r['peak_rss_gb_by_process']}  {r['error'] or ''}",
              file=sys.stderr)
    print(json.dumps({"bench": "spark_engine", "rows": args.rows, "master": args.master,
                      "driver_memory": args.driver_memory, "generate_seconds": round(gen_s, 1),
                      "load_avg_1m": round(load, 2), "cpu": _cpu(), "results": results}))


def _cpu() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


if __name__ == "__main__":
    main()
