"""Capacity report: the highest throughput whose p99 stays within budget, per worker layout.

    python -m loadtest.capacity                          # 1×1 and 2×1 (workers × torch threads)
    python -m loadtest.capacity --configs 1x1 1x2 2x1 --step-time 20s
    python -m loadtest.capacity --model M --raw R --no-readme

For each layout it starts `recsys serve` (Redis and the model as in `loadtest.gate`) and steps the
offered load up by --growth (×1.5) from --start-rps: Locust users sending at --rate-per-user each
(Poisson arrivals, open loop: a slow server does not slow the offer). Every request is POST /v1/recommendations
with exactly --candidates (200) candidates. A step passes when its p99 ≤ --p99-ms and no request
failed; stepping stops at the first miss, then --bisect (2) steps between the last pass and the
miss narrow it down. The capacity is the highest *achieved* req/s of a passing step. Geometric
steps find 40 req/s and 400 req/s in about as many steps.

The load generator (one Locust process) runs on the same machine as the service and takes a
share of its cores: the numbers are a floor for a service that has the machine to itself.

Writes loadtest/reports/capacity.json (every step), loadtest/capacity.png (p50/p99 against
req/s) and the markdown table, printed and written between the capacity markers of
loadtest/README.md. With --no-readme (experiments) the README is left alone and the plot goes to
--reports instead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

from loadtest.stack import (
    REPO,
    SetupError,
    Stack,
    Summary,
    build_model,
    exit_codes,
    prioritize,
    run_locust,
    sigterm_unwinds,
)

__all__ = ["main"]

README = REPO / "loadtest" / "README.md"
PLOT = REPO / "loadtest" / "capacity.png"
BEGIN, END = "<!-- capacity:begin -->", "<!-- capacity:end -->"


@dataclass(frozen=True)
class Layout:
    workers: int
    threads: int

    @classmethod
    def parse(cls, text: str) -> "Layout":
        try:
            w, t = (int(x) for x in text.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"layout '{text}' is not WORKERSxTHREADS, e.g. 2x1") from None
        return cls(w, t)

    def __str__(self) -> str:
        return f"{self.workers}×{self.threads}"


@dataclass(frozen=True)
class Step:
    offered_rps: float
    users: int
    summary: Summary
    load: float  # 1-minute load average at the end of the step (this test's own processes included)
    service_cpu_ms: float  # service CPU per request (all workers)

    def passed(self, p99_ms: float) -> bool:
        return self.summary.p99_ms <= p99_ms and self.summary.failures == 0


@dataclass(frozen=True)
class Meta:
    """What a table needs besides the steps: the budget, the workload and the conditions."""

    p99_ms: float
    candidates: int
    max_rps: float
    nice: int
    cores: int
    load_before: str
    load_after: str
    date: str
    command: str


def save(path: Path, results: dict[Layout, list[Step]], meta: Meta) -> None:
    steps = {str(k): [{"offered_rps": s.offered_rps, "users": s.users, "load": s.load,
                       "service_cpu_ms": s.service_cpu_ms, **s.summary.as_dict()} for s in v]
             for k, v in results.items()}
    text = json.dumps({"meta": asdict(meta), "results": steps}, indent=1)
    _atomic(path, lambda tmp: tmp.write_text(text))


def load(path: Path) -> tuple[dict[Layout, list[Step]], Meta]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SetupError(f"--render {path}: cannot read a capacity.json ({err}; fix: pass the file a capacity "
                         f"run wrote, e.g. loadtest/reports/capacity.json)") from None
    results = {Layout.parse(k.replace("×", "x")): [
        Step(s["offered_rps"], s["users"], Summary(**{f.name: s[f.name] for f in fields(Summary)}), s["load"],
             s["service_cpu_ms"]) for s in v] for k, v in data["results"].items()}
    return results, Meta(**data["meta"])


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.capacity", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="artifact to serve (with --raw); default: build a small one")
    p.add_argument("--raw", type=Path, help="raw tables the model was trained on")
    p.add_argument("--redis-url", help="use this Redis instead of starting one")
    p.add_argument("--configs", nargs="+", type=Layout.parse, default=[Layout(1, 1), Layout(2, 1)],
                   help="uvicorn workers × torch threads per worker, e.g. 1x1 2x1")
    p.add_argument("--start-rps", type=float, default=20.0, help="offered load of the first step")
    p.add_argument("--growth", type=float, default=1.5, help="each step offers this many times the previous one")
    p.add_argument("--max-rps", type=float, default=1000.0)
    p.add_argument("--bisect", type=int, default=2, help="steps between the last pass and the first miss")
    p.add_argument("--rate-per-user", type=float, default=5.0, help="requests/s each Locust user offers")
    p.add_argument("--step-time", default="15s", help="Locust --run-time per step (a 1 s ramp-up included)")
    p.add_argument("--candidates", type=int, default=200)
    p.add_argument("--p99-ms", type=float, default=50.0)
    p.add_argument("--out", type=Path, default=REPO / "runs" / "loadtest")
    p.add_argument("--reports", type=Path, default=REPO / "loadtest" / "reports")
    p.add_argument("--impressions", type=int, default=20_000, help="size of the built model's synthetic data")
    p.add_argument("--no-readme", action="store_true",
                   help="leave loadtest/README.md and loadtest/capacity.png alone: the plot goes to --reports")
    p.add_argument("--render", type=Path, metavar="CAPACITY_JSON",
                   help="measure nothing: redo the table, plot and README block from a saved capacity.json")
    p.add_argument("--quiet-load", type=float, default=None,
                   help="before each layout, wait until the 1-minute load average is at most this "
                        "(others share the machine); gives up after --quiet-wait seconds and measures anyway")
    p.add_argument("--quiet-wait", type=float, default=600.0)
    p.add_argument("--nice", type=int, default=0,
                   help="run Redis, the service and Locust at this niceness, their sessions too (e.g. -10, needs "
                        "root): on a machine others keep busy, measures what the stack can do, not what is left")
    args = p.parse_args(argv)
    if (args.model is None) != (args.raw is None):
        p.error("--model and --raw go together")
    args.reports.mkdir(parents=True, exist_ok=True)
    return args


def measure(stack: Stack, args: argparse.Namespace, model: Path, raw: Path, redis_url: str,
            layout: Layout) -> list[Step]:
    """Grow the offered load for one layout until the budget is missed, then bisect."""
    if args.quiet_load is not None:
        wait_quiet(args.quiet_load, args.quiet_wait)
    url = stack.service(model, redis_url, layout.workers, layout.threads)
    workload = ["--candidates", str(args.candidates), "--tail-share", "0", "--score-share", "0",
                "--rate-per-user", str(args.rate_per_user), "--p99-ms", str(args.p99_ms), "--p95-ms", str(args.p99_ms)]

    def step(rps: float) -> Step:
        users = max(1, round(rps / args.rate_per_user))
        report = args.reports / f"capacity_{layout.workers}x{layout.threads}_{int(rps)}"
        service_cpu = stack.cpu_seconds("service")
        with (args.reports / "capacity_locust.log").open("a") as log:
            _, summary = run_locust(url, model, raw, users, args.step_time, report, workload, log=log)
        if summary is None:
            raise SetupError(f"Locust made no request at {rps:g} req/s (log: {args.reports / 'capacity_locust.log'})")
        # The service's CPU over the whole step (the 1 s ramp-up too) per request counted after the
        # reset: a few % high, alike for every step.
        cpu_ms = (stack.cpu_seconds("service") - service_cpu) * 1e3 / max(summary.requests, 1)
        s = Step(users * args.rate_per_user, users, summary, os.getloadavg()[0], cpu_ms)
        print(f"  {layout} offered {s.offered_rps:6.0f} req/s → achieved {summary.rps:6.1f}, p50 {summary.p50_ms:g} "
              f"p95 {summary.p95_ms:g} p99 {summary.p99_ms:g} ms, {summary.failures} failures  "
              f"{'ok' if s.passed(args.p99_ms) else 'MISS'}  (load {s.load:.2f}; CPU ms/request: service "
              f"{s.service_cpu_ms:.2f}, locust {summary.generator_cpu_ms:.2f})", flush=True)
        return s

    steps: list[Step] = []
    rps = args.start_rps
    while rps <= args.max_rps:
        steps.append(step(rps))
        if not steps[-1].passed(args.p99_ms):
            break
        rps *= args.growth
    lo = max((s.offered_rps for s in steps if s.passed(args.p99_ms)), default=0.0)
    hi = None if steps[-1].passed(args.p99_ms) else steps[-1].offered_rps
    for _ in range(args.bisect):
        if hi is None or round((hi - lo) / args.rate_per_user) < 2:  # no whole number of users in between
            break
        s = step((lo + hi) / 2)
        steps.append(s)
        lo, hi = (s.offered_rps, hi) if s.passed(args.p99_ms) else (lo, s.offered_rps)
    stack.stop("service")
    return sorted(steps, key=lambda s: s.offered_rps)


def wait_quiet(threshold: float, max_wait_s: float) -> None:
    """Measure when the neighbours are idle, if they get idle: a busy machine halves the numbers."""
    deadline = time.monotonic() + max_wait_s
    while (load := os.getloadavg()[0]) > threshold and time.monotonic() < deadline:
        print(f"  waiting for a quiet machine: load average {load:.2f} > {threshold:g}", flush=True)
        time.sleep(15)
    if load > threshold:
        print(f"  still busy after {max_wait_s:.0f}s (load average {load:.2f}): measuring anyway", flush=True)


def ceiling(layout: Layout, service_cpu_ms: float, generator_cpu_ms: float, cores: int) -> float:
    """req/s at which the CPU would be 100% busy: each worker uses at most one core (asyncio runs
    the handler's CPU work on one thread; torch threads add little at this batch size), and the
    service and Locust together at most all cores. A p99 budget is met well below it."""
    return min(1e3 * layout.workers / service_cpu_ms, 1e3 * cores / (service_cpu_ms + generator_cpu_ms))


def best(steps: list[Step], p99_ms: float) -> Step | None:
    passing = [s for s in steps if s.passed(p99_ms)]
    return max(passing, key=lambda s: s.summary.rps, default=None)


def table(results: dict[Layout, list[Step]], meta: Meta) -> str:
    lines = [f"Max throughput with p99 ≤ {meta.p99_ms:g} ms, POST /v1/recommendations with {meta.candidates} "
             f"candidates, k=10, 10% cold users, Redis on loopback; {meta.cores} cores shared with the Locust "
             f"load generator; load average {meta.load_before} before, {meta.load_after} after"
             + (f"; Redis, service and Locust at nice {meta.nice} over the neighbours' processes" if meta.nice else "")
             + f"; {meta.date}.",
             "",
             "| workers × torch threads | max req/s at p99 ≤ budget | p50 ms | p95 ms | p99 ms "
             "| first miss (offered → achieved req/s, p99 ms) | CPU ms/req service + Locust | CPU ceiling req/s |",
             "|---|---:|---:|---:|---:|---|---:|---:|"]
    for layout, steps in results.items():
        b = best(steps, meta.p99_ms)
        miss = next((s for s in steps if not s.passed(meta.p99_ms)), None)
        miss_txt = (f"{miss.offered_rps:.0f} → {miss.summary.rps:.0f}, p99 {miss.summary.p99_ms:g}"
                    + (f", {miss.summary.failures} failures" if miss.summary.failures else "")) if miss else \
            f"none up to {meta.max_rps:g} offered"
        svc = statistics.median(s.service_cpu_ms for s in steps)
        gen = statistics.median(s.summary.generator_cpu_ms for s in steps)
        cpu = f"{svc:.1f} + {gen:.1f} | {ceiling(layout, svc, gen, meta.cores):.0f}"
        if b is None:
            lines.append(f"| {layout} | – (missed at the first step) | | | | {miss_txt} | {cpu} |")
        else:
            s = b.summary
            lines.append(f"| {layout} | **{s.rps:.0f}** | {s.p50_ms:g} | {s.p95_ms:g} | {s.p99_ms:g} | {miss_txt} "
                         f"| {cpu} |")
    lines += ["", "CPU ms/req: CPU time per request of the service (all workers, from /proc; the step's ramp-up "
              "included) and of Locust, medians over the steps; they change less with the neighbours' load than "
              "latency does, so the CPU ceiling (all cores busy) bounds what this machine could serve quiet.",
              "", "<details><summary>every step</summary>", "",
              "| layout | offered req/s | users | achieved req/s | p50 ms | p95 ms | p99 ms | failures | load avg "
              "| CPU ms/req service | CPU ms/req Locust |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for layout, steps in results.items():
        for st in sorted(steps, key=lambda x: x.offered_rps):
            s = st.summary
            lines.append(f"| {layout} | {st.offered_rps:.0f} | {st.users} | {s.rps:.1f} | {s.p50_ms:g} | "
                         f"{s.p95_ms:g} | {s.p99_ms:g} | {s.failures} | {st.load:.2f} | {st.service_cpu_ms:.2f} | "
                         f"{s.generator_cpu_ms:.2f} |")
    lines += ["", "</details>", "", f"Reproduce: `{meta.command}`"]
    return "\n".join(lines)


def plot(results: dict[Layout, list[Step]], p99_ms: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for i, (layout, steps) in enumerate(results.items()):
        color = plt.get_cmap("tab10")(i % 10)
        steps = sorted(steps, key=lambda s: s.summary.rps)
        rps = [s.summary.rps for s in steps]
        ax.plot(rps, [s.summary.p99_ms for s in steps], "o-", color=color, label=f"{layout} p99")
        ax.plot(rps, [s.summary.p50_ms for s in steps], "s--", color=color, alpha=0.6, label=f"{layout} p50")
    ax.axhline(p99_ms, color="grey", lw=1, ls=":", label=f"budget {p99_ms:g} ms")
    ax.set_xlabel("achieved requests/s")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.set_title("POST /v1/recommendations: latency against throughput (workers × threads)")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    _atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Write to a temp file beside `path`, then rename: a crash never leaves half a README or PNG."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_readme(block: str) -> None:
    text = README.read_text()
    if BEGIN not in text or END not in text:
        raise SetupError(f"{README} has no {BEGIN} … {END} markers to put the table between")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    new = f"{head}{BEGIN}\n{block}\n{END}{tail}"
    _atomic(README, lambda tmp: tmp.write_text(new))


def run(args: argparse.Namespace, command: str) -> tuple[dict[Layout, list[Step]], Meta]:
    load_before = os.getloadavg()
    results: dict[Layout, list[Step]] = {}
    with sigterm_unwinds(), Stack(args.out / "logs", args.nice) as stack:
        model, raw = (args.model, args.raw) if args.model else build_model(
            args.out / "build", users=1000, items=2000, impressions=args.impressions, epochs=1)
        if args.nice:
            prioritize(os.getpid(), args.nice)  # Locust inherits it; Stack sets it for Redis and the service
        redis_url = args.redis_url or stack.redis()
        stack.materialize(model, raw, redis_url)
        for layout in args.configs:
            results[layout] = measure(stack, args, model, raw, redis_url, layout)
    loads = lambda xs: " / ".join(f"{x:.2f}" for x in xs)  # noqa: E731
    meta = Meta(p99_ms=args.p99_ms, candidates=args.candidates, max_rps=args.max_rps, nice=args.nice,
                cores=os.cpu_count() or 1, load_before=loads(load_before), load_after=loads(os.getloadavg()),
                date=time.strftime("%Y-%m-%d %H:%M %Z"), command=command)
    save(args.reports / "capacity.json", results, meta)
    return results, meta


@exit_codes("capacity")
def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    command = "python -m loadtest.capacity " + " ".join(argv if argv is not None else sys.argv[1:])
    results, meta = load(args.render) if args.render else run(args, command.strip())
    # An experiment (--no-readme) must not replace the committed plot that the README's table shows.
    plot_path = args.reports / PLOT.name if args.no_readme else PLOT
    block = table(results, meta) + f"\n\n![p50 and p99 against req/s]({PLOT.name})"
    print(block)
    plot(results, meta.p99_ms, plot_path)
    if not args.no_readme:
        write_readme(block)
    summary = {str(k): (b.summary.rps if (b := best(v, meta.p99_ms)) else None) for k, v in results.items()}
    print(json.dumps({"capacity_rps_at_p99": summary, "p99_budget_ms": meta.p99_ms, "load_before": meta.load_before,
                      "plot": str(plot_path)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
