"""`recsys` command line: every step reads and writes folders, so steps can run on different machines.
Bad input exits with code 2 and one line that says what to fix."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from pipelines.demo import DEMO_IMPRESSIONS, DEMO_ITEMS, DEMO_USERS
from recsys.errors import RecsysError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Wide&Deep recommendation: synthetic data, features, training, evaluation, serving.")

SPECS_DIR = Path(__file__).parent / "specs"


def resolve_spec(spec: str) -> Path:
    """A spec path, or the name of a built-in spec (synthetic, movielens-100k)."""
    path = Path(spec)
    if path.is_file():
        return path
    builtin = SPECS_DIR / f"{spec}.yaml"
    if builtin.is_file():
        return builtin
    names = ", ".join(p.stem for p in sorted(SPECS_DIR.glob("*.yaml")))
    raise RecsysError(f"spec '{spec}' is neither a file nor a built-in spec ({names})")


def _err(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)


def _progress(quiet: bool) -> bool:
    """Progress bars only on a terminal: in a log file or a pipe they are thousands of lines."""
    return not quiet and sys.stderr.isatty()


Port = Annotated[int, typer.Option(min=1, max=65535)]


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="folder for impressions/users/items parquet")] = Path("data/synthetic"),
    users: Annotated[int, typer.Option(min=1)] = 5_000,
    items: Annotated[int, typer.Option(min=1)] = 3_000,
    impressions: Annotated[int, typer.Option(min=1)] = 400_000,
    days: Annotated[int, typer.Option(min=1)] = 28,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1)] = 0,
    items_only: Annotated[bool, typer.Option(help="write only the items table (e.g. a 10 M-item catalog to index)")]
    = False,
) -> None:
    """Synthetic short-video feed data with a planted click model (true_prob kept per impression)."""
    from pipelines.generate import SyntheticConfig, write

    t0 = time.perf_counter()
    cfg = SyntheticConfig(users=users, items=items, impressions=impressions, days=days, seed=seed,
                          items_only=items_only)
    for name, path in write(cfg, out).items():
        typer.echo(f"{name:<12} → {path}")
    what = f"{items:,} items" if items_only else f"{impressions:,} impressions"
    typer.echo(f"generated {what} in {time.perf_counter() - t0:.1f}s")


@app.command("import-movielens")
def import_movielens(
    path: Annotated[Path, typer.Argument(help="the ml-100k folder, e.g. ../shared/data/movielens-100k")],
    out: Annotated[Path, typer.Option(help="folder for the raw tables")] = Path("data/movielens-100k"),
) -> None:
    """Convert MovieLens 100K to the raw-table contract (label = rating >= 4)."""
    from pipelines.movielens import import_movielens as run

    for name, p in run(path, out).items():
        typer.echo(f"{name:<12} → {p}")


@app.command("build-features")
def build_features(
    spec: Annotated[str, typer.Option(
        help="spec YAML path or built-in name (synthetic, movielens-100k, movielens-100k-random)")],
    raw: Annotated[Path, typer.Option(help="folder with impressions, users, items tables")],
    out: Annotated[Path, typer.Option(help="folder for encoded splits + transforms.json")],
    split: Annotated[Optional[str], typer.Option(help="override the spec's split: time | random")] = None,
    engine: Annotated[str, typer.Option(help="arrow (in this process) | spark (pip install '.[spark]', Java 17+)")]
    = "arrow",
    master: Annotated[Optional[str], typer.Option(
        help="spark: local[N], spark://host:7077, yarn, k8s://… (default: spark-submit's, SPARK_MASTER, local[*])")]
    = None,
    conf: Annotated[Optional[list[str]], typer.Option(help="spark: a Spark setting key=value (repeatable)")] = None,
    spark_config: Annotated[Optional[Path], typer.Option(help="spark: a spark-defaults.conf style file")] = None,
    quiet: bool = False,
) -> None:
    """Point-in-time statistics, split, fit transforms on train, write encoded splits."""
    from pipelines.build_features import build_features as run
    from recsys.spec import load_spec

    s = load_spec(resolve_spec(spec))
    if split:
        if split not in ("time", "random"):
            raise RecsysError(f"--split must be 'time' or 'random', got '{split}'")
        s = s.model_copy(update={"split": s.split.model_copy(update={"method": split})})
    run(s, raw, out, progress=_progress(quiet), engine=engine, **_engine_options(engine, master, conf, spark_config))


def _engine_options(engine: str, master: str | None, conf: list[str] | None, config: Path | None) -> dict[str, Any]:
    if engine != "spark":
        if master or conf or config:
            raise RecsysError("--master, --conf and --spark-config need --engine spark")
        return {}
    from recsys.features.engine.spark import SparkSettings, parse_conf

    return {"settings": SparkSettings(master=master, conf=parse_conf(conf or []), config_file=config)}


@app.command()
def train(
    features: Annotated[Path, typer.Option(help="output folder of build-features")],
    out: Annotated[Path, typer.Option(help="artifact folder to write")],
    epochs: Optional[int] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="global batch (all processes together)")] = None,
    optimizer: Annotated[Optional[str], typer.Option(
        help="sgd | adagrad | adam: replaces the spec's `optimizer` (a part the spec trains apart, e.g. its "
             "wide_optimizer, keeps its own); pass --lr with it")] = None,
    lr: Annotated[Optional[float], typer.Option(help="learning rate of the spec's `optimizer`")] = None,
    seed: Optional[int] = None,
    threads: Annotated[Optional[int], typer.Option(help="torch threads per process")] = None,
    nproc: Annotated[int, typer.Option(min=1, help="data-parallel processes on this machine (DDP, gloo); for many "
                                                   "machines see docs/training.md")] = 1,
    max_restarts: Annotated[int, typer.Option(
        min=0, help="with --nproc: restart all processes up to this often when one dies (they resume from the "
                    "newest checkpoint)")] = 0,
    resume: Annotated[bool, typer.Option(help="continue an interrupted run from its newest checkpoint")] = False,
    init_from: Annotated[Optional[Path], typer.Option(
        help="warm start from this artifact's weights (known ids keep their rows, new ids start fresh)")] = None,
    data: Annotated[Optional[str], typer.Option(help="auto | memory | stream (auto: memory when the split fits "
                                                     "the budget)")] = None,
    memory_budget_mb: Annotated[Optional[int], typer.Option(help="memory for the train split per process")] = None,
    shuffle_window: Annotated[Optional[int], typer.Option(help="rows shuffled together when streaming")] = None,
    data_shards: Annotated[Optional[int], typer.Option(help="shards of the data order (a multiple of the "
                                                            "processes; default 8)")] = None,
    checkpoint_dir: Annotated[Optional[Path], typer.Option(help="default: OUT.checkpoints")] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option(help="also checkpoint every N steps")] = None,
    keep_checkpoints: bool = False,
    quiet: bool = False,
) -> None:
    """Train Wide&Deep (settings from the spec's training section, overridable here)."""
    from pipelines.train import train_command
    from recsys.training.distributed import WorkerFailed

    try:
        train_command(features, out, {"epochs": epochs, "batch_size": batch_size, "seed": seed, "threads": threads,
                                      "optimizer": optimizer, "lr": lr},
                      {"data": data, "memory_budget_mb": memory_budget_mb, "shuffle_window_rows": shuffle_window,
                       "data_shards": data_shards, "checkpoint_dir": checkpoint_dir,
                       "checkpoint_every_steps": checkpoint_every, "keep_checkpoints": keep_checkpoints},
                      nproc=nproc, max_restarts=max_restarts, resume=resume, init_from=init_from,
                      progress=_progress(quiet))
    except WorkerFailed as err:  # not bad input: exit 1 (SystemExit, which click passes through)
        _err(f"training failed: {err}")
        sys.exit(1)


@app.command("train-retrieval")
def train_retrieval(
    features: Annotated[Path, typer.Option(help="output folder of build-features (the artifact's features)")],
    model: Annotated[Path, typer.Option(help="artifact folder of `recsys train`: the towers are added to it")],
    raw: Annotated[Optional[Path], typer.Option(
        help="raw tables: validate against the whole items table (default: the items in the splits)")] = None,
    quiet: bool = False,
) -> None:
    """Two-tower retrieval model (the spec's `retrieval:` section) on the train split's positives."""
    from pipelines.retrieval import run_train_retrieval

    run_train_retrieval(features, model, raw, progress=_progress(quiet))


@app.command()
def index(
    model: Annotated[Path, typer.Option(help="artifact folder with retrieval towers (`recsys train-retrieval`)")],
    raw: Annotated[Path, typer.Option(help="raw tables: every item of the items table is indexed")],
    kind: Annotated[str, typer.Option(help="auto (exact below 50k items, IVF-Flat above) | flat | ivf_flat")]
    = "auto",
    quiet: bool = False,
) -> None:
    """Embed every catalog item and build the ANN index (faiss) inside the artifact."""
    from pipelines.retrieval import run_index

    if kind not in ("auto", "flat", "ivf_flat"):
        raise RecsysError(f"--kind must be auto, flat or ivf_flat, got '{kind}'")
    run_index(model, raw, kind, progress=_progress(quiet))  # type: ignore[arg-type]


@app.command()
def evaluate(
    model: Annotated[Path, typer.Option(help="artifact folder")],
    features: Annotated[Path, typer.Option(help="output folder of build-features")],
    out: Annotated[Path, typer.Option(help="folder for metrics.json and report.html")],
    raw: Annotated[Optional[Path], typer.Option(
        help="raw tables: also evaluate the artifact's retrieval part (Recall@100/@500, retrieve + rank)")] = None,
    quiet: bool = False,
) -> None:
    """AUC, logloss, NDCG@10, Recall@10, calibration vs popularity and wide-only baselines."""
    from pipelines.evaluate import run_evaluate

    run_evaluate(model, features, out, progress=_progress(quiet), raw_dir=raw)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="every step's output goes under here")] = Path("runs/demo"),
    serve: Annotated[bool, typer.Option("--serve/--no-serve", help="serve the model at the end")] = True,
    users: Annotated[int, typer.Option(min=1, help="synthetic users (few, heavy: see pipelines/demo.py)")] = DEMO_USERS,
    items: Annotated[int, typer.Option(min=1, help="synthetic videos")] = DEMO_ITEMS,
    impressions: Annotated[int, typer.Option(min=1, help="synthetic impressions")] = DEMO_IMPRESSIONS,
    host: str = "127.0.0.1",
    port: Port = 8000,
) -> None:
    """generate → build-features → train → evaluate on synthetic data, then serve the model."""
    from pipelines.demo import run_demo

    run_demo(out, users=users, items=items, impressions=impressions, serve=serve, host=host, port=port)


@app.command()
def materialize(
    model: Annotated[Path, typer.Option(help="artifact folder (decides the spec and the key version)")],
    raw: Annotated[Path, typer.Option(help="folder with impressions, users, items tables")],
    redis_url: Annotated[Optional[str], typer.Option(
        envvar="REDIS_URL", help="redis://host:port/db, or a cluster: redis+cluster://host:port,host:port")] = None,
    prefix: Annotated[str, typer.Option(help="key prefix: {prefix}:v{feature_version}:{u|i:id}")] = "rec",
    as_of: Annotated[Optional[int], typer.Option(
        min=0, help="statistics from events strictly before this unix time")] = None,
    ttl: Annotated[Optional[int], typer.Option(min=1, help="expire records after this many seconds")] = None,
    counters: Annotated[str, typer.Option(
        help="keep: merge into a live store (attributes replaced, counters that events added kept); "
             "replace: reset every counter to the log's totals")] = "keep",
    quiet: bool = False,
) -> None:
    """Load user and item rows + impression statistics into Redis under versioned keys (re-runs merge)."""
    from pipelines.materialize import run_materialize

    if not redis_url:
        raise RecsysError("materialize writes to Redis: pass --redis-url URL or set REDIS_URL "
                          "(the embedded store is filled by `recsys serve --raw DIR` itself)")
    if counters not in ("keep", "replace"):
        raise RecsysError(f"--counters must be keep or replace, got {counters!r}")
    run_materialize(model, raw, redis_url, prefix=prefix, as_of=as_of, ttl_s=ttl, progress=_progress(quiet),
                    keep_counters=counters == "keep")


@app.command()
def serve(
    model: Annotated[Path, typer.Option(help="artifact folder")],
    raw: Annotated[Optional[Path], typer.Option(help="raw tables that fill the embedded store (no Redis)")] = None,
    redis_url: Annotated[Optional[str], typer.Option(envvar="REDIS_URL", help="serve features from Redis")] = None,
    host: str = "127.0.0.1",
    port: Port = 8000,
    workers: Annotated[int, typer.Option(min=1)] = 1,
    threads: Annotated[Optional[int], typer.Option(min=1, help="torch threads per worker (default 1)")] = None,
    prefix: Annotated[Optional[str], typer.Option(help="key prefix used by materialize")] = None,
    access_log: bool = False,
) -> None:
    """Serve the model over HTTP (POST /v1/recommendations, /v1/score, /v1/events; /metrics; /docs)."""
    from pipelines.serving import serve_model

    serve_model(model, raw_dir=raw, host=host, port=port, redis_url=redis_url, workers=workers, threads=threads,
                prefix=prefix, access_log=access_log)


def main() -> None:
    """Entry point: library errors become one line on stderr and exit code 2."""
    try:
        app(standalone_mode=False)
    except RecsysError as err:
        _err(str(err))
        sys.exit(2)
    except (typer.Exit, SystemExit) as e:
        sys.exit(getattr(e, "exit_code", getattr(e, "code", 0)))
    except typer.Abort:
        sys.exit(130)
    except typer.BadParameter as err:  # a value out of range or of the wrong type: one line
        if type(err).__name__ == "MissingParameter":  # a required option left out: click's usage text
            err.show()
        else:
            command = err.ctx.command_path if err.ctx else "recsys"
            _err(f"{err.format_message()} (fix: see `{command} --help`)")
        sys.exit(2)
    except typer.TyperException as err:  # usage errors (typer bundles its own click: not click.ClickException)
        show = getattr(err, "show", None)
        if show:
            show()
        else:
            _err(str(err))
        sys.exit(getattr(err, "exit_code", 2) or 2)


if __name__ == "__main__":
    main()
