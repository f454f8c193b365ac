"""Retrieval at catalog scale: index build time and peak RSS at N items (default 10 M), ANN query
latency with one thread at the tuned nprobe, and its Recall@100 against exact search.

    1. a small synthetic world (users, 3000 items, impressions) → build-features → train (1 epoch)
       → train-retrieval: the towers and the sample user vectors the index tunes nprobe on
    2. `recsys generate --items-only --items N`: the catalog alone (no impressions)
    3. in a fresh process: embed every item (the item tower through the fitted transforms), build
       the index (`build_index`: IVF-Flat above 50k items) and write the artifact (`update_artifact`);
       wall time per stage and the process's peak RSS
    4. in that process: `--queries` user vectors (the valid users', repeated with noise when fewer),
       one at a time with faiss on ONE thread: p50 / p99 of `index.search(k=100)`, and Recall@100
       against exact search (faiss.knn over the same vectors); popularity weight 0 (see `measure`)

Prints a table on stderr and ONE JSON line on stdout. Data under --workdir (kept: a rerun reuses
steps 1-2). Run it alone (`flock /tmp/bench.lock python benchmarks/retrieval_bench.py`): timings on
a shared 2-core machine drift with other jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def run(*args: object) -> None:
    subprocess.run([sys.executable, "-m", "pipelines.cli", *map(str, args)], check=True, cwd=REPO, stdout=sys.stderr,
                   env={**os.environ, "PYTHONPATH": str(REPO)})


def prepare(work: Path, items: int) -> tuple[Path, Path]:
    small, model = work / "small", work / "model"
    if not (model / "retrieval" / "towers.safetensors").is_file():
        run("generate", "--out", small / "raw", "--users", 2000, "--items", 3000, "--impressions", 100_000)
        run("build-features", "--spec", "synthetic", "--raw", small / "raw", "--out", small / "features", "--quiet")
        run("train", "--features", small / "features", "--out", model, "--epochs", 1, "--quiet")
        run("train-retrieval", "--features", small / "features", "--model", model, "--quiet")
    catalog = work / f"catalog-{items}"
    if not (catalog / "items.parquet").is_file():
        run("generate", "--items-only", "--items", items, "--out", catalog)
    return model, catalog


def measure(model: Path, catalog: Path, queries: int) -> dict[str, Any]:
    """Step 3 and 4, in this (fresh) process."""
    import faiss
    import numpy as np

    from pipelines.retrieval import QUERY_SAMPLE, embed_items
    from recsys.artifact import load_artifact, update_artifact
    from recsys.retrieval.index import ann_recall, build_index, exact_top_k, write_index
    from recsys.retrieval.retriever import INDEX, ITEMS, write_ids

    artifact = load_artifact(model)
    meta = artifact.metadata["retrieval"]
    t0 = time.perf_counter()
    ids, vectors = embed_items(artifact, catalog, progress=False)
    t1 = time.perf_counter()
    sample = np.load(artifact.path / QUERY_SAMPLE, allow_pickle=False)
    rng = np.random.default_rng(0)
    base = sample[rng.integers(0, len(sample), queries)]
    noisy = base + rng.normal(0, 0.05, base.shape).astype(np.float32) * (len(sample) < queries)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    # Popularity weight 0: the towers' geometry alone, the index's hard case (with the weight, a
    # popular head that every query shares makes the top-100 easy to find).
    q = np.hstack([noisy, np.zeros((queries, 1), np.float32)]).astype(np.float32)
    built = build_index(vectors, q[: min(200, queries)], log=lambda m: print(m, file=sys.stderr))
    t2 = time.perf_counter()

    def write(folder: Path) -> None:
        write_index(built.index, folder / INDEX)
        write_ids(folder / ITEMS, ids)

    update_artifact(model, {"retrieval": {**meta, "index": built.description}}, write, drop=(INDEX, ITEMS))
    t3 = time.perf_counter()
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    exact = exact_top_k(vectors, q, 100)
    faiss.omp_set_num_threads(1)
    recall = ann_recall(built.index, exact, q, 100)
    lat = []
    for row in q:
        s = time.perf_counter()
        built.index.search(row[None, :], 100)
        lat.append((time.perf_counter() - s) * 1e3)
    return {"items": len(ids), "index": built.description["kind"], "nlist": built.description.get("nlist"),
            "nprobe": built.description.get("nprobe"), "embed_s": round(t1 - t0, 1),
            "index_build_s": round(t2 - t1, 1), "write_s": round(t3 - t2, 1), "total_s": round(t3 - t0, 1),
            "peak_rss_gb": round(peak_gb, 2), "queries": queries, "ann_recall@100": round(recall, 4),
            "query_p50_ms": round(float(np.percentile(lat, 50)), 3),
            "query_p99_ms": round(float(np.percentile(lat, 99)), 3),
            "index_bytes": (model / INDEX).stat().st_size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=10_000_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/retrieval-bench"))
    ap.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # step 3-4 in a child process
    args = ap.parse_args()
    model, catalog = args.workdir / "model", args.workdir / f"catalog-{args.items}"
    if args.measure:
        print(json.dumps(measure(model, catalog, args.queries)))
        return
    prepare(args.workdir, args.items)
    out = subprocess.run([sys.executable, __file__, "--measure", "--items", str(args.items), "--queries",
                          str(args.queries), "--workdir", str(args.workdir)], check=True, cwd=REPO,
                         stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    result = json.loads(out.stdout.strip().splitlines()[-1])
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    result |= {"cpu": cpu, "cores": os.cpu_count(), "loadavg_1m": os.getloadavg()[0],
               "date": time.strftime("%Y-%m-%d", time.gmtime())}
    rows = [("items", f"{result['items']:,}"), ("index", f"{result['index']} nlist {result['nlist']} nprobe "
                                                         f"{result['nprobe']}"),
            ("embed", f"{result['embed_s']} s"), ("index build", f"{result['index_build_s']} s"),
            ("write artifact", f"{result['write_s']} s"), ("peak RSS", f"{result['peak_rss_gb']} GB"),
            ("ANN Recall@100 vs exact", f"{result['ann_recall@100']}"),
            ("query p50 / p99 (1 thread)", f"{result['query_p50_ms']} / {result['query_p99_ms']} ms")]
    print("\n".join(f"{k:<28}{v}" for k, v in rows), file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
