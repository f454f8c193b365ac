"""The latency gate in one command: model → Redis → service → Locust → verdict.

    python -m loadtest.gate                                 # builds a small model, 30 s of load
    python -m loadtest.gate --model M --raw R --redis-url redis://127.0.0.1:6379/0
    python -m loadtest.gate --run-time 60s -- --tail-share 0.2   # after `--`: locustfile options

Without --model/--raw it builds a small synthetic model (generate → build-features → train,
one epoch; the synthetic spec's full architecture, so a forward pass costs what the demo's does)
under --out. Without --redis-url it starts a private redis-server on a free port. It materializes
under the key prefix `loadtest`, starts `recsys serve` on a free port of 127.0.0.1, waits for
/readyz, runs Locust headless for --run-time (stats reset after the ramp-up), stops everything it
started (also on failure, Ctrl-C or SIGTERM) and prints p50/p95/p99, req/s and failures: a table,
then one JSON line. Exit code: 0 within budget, 1 budget missed (the reasons are printed above the
table), 2 set-up failed (one line naming the step and its log).

The default load is open loop, Poisson arrivals: --users × --rate-per-user requests/s offered
(20/s), about a fifth of what one worker's CPU allows on this machine (loadtest/README.md), so a
miss means the request path got slower, not that the gate asked for too much. Load generator and
service share the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from loadtest.stack import REPO, Stack, Summary, build_model, exit_codes, run_locust, sigterm_unwinds

__all__ = ["main"]


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="python -m loadtest.gate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="artifact to serve (with --raw); default: build a small one")
    p.add_argument("--raw", type=Path, help="raw tables the model was trained on (materialized, and the workload)")
    p.add_argument("--redis-url", help="use this Redis instead of starting one (keys under the prefix 'loadtest')")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (workers × threads ≤ cores)")
    p.add_argument("--users", type=int, default=4, help="simulated Locust users")
    p.add_argument("--rate-per-user", type=float, default=5.0, help="requests/s per user; 0 = back to back")
    p.add_argument("--run-time", default="30s", help="Locust --run-time, ramp-up included (e.g. 45s, 2m)")
    p.add_argument("--p99-ms", type=float, default=50.0)
    p.add_argument("--p95-ms", type=float, default=25.0)
    p.add_argument("--out", type=Path, default=REPO / "runs" / "loadtest", help="built data/model and logs")
    p.add_argument("--report", type=Path, default=REPO / "loadtest" / "reports" / "gate",
                   help="Locust CSV/HTML report prefix")
    p.add_argument("--impressions", type=int, default=20_000, help="size of the built model's synthetic data")
    p.add_argument("--attempts", type=int, default=1,
                   help="run the load again (same service) when the budget is missed, up to this many times: "
                        "on a shared machine a neighbour's burst can miss it once, a regression misses every time")
    args, extra = p.parse_known_args(argv)
    if (args.model is None) != (args.raw is None):
        p.error("--model and --raw go together (the workload and the store come from the raw tables)")
    if args.workers * args.threads > (os.cpu_count() or 1):
        print(f"gate: warning: {args.workers} workers × {args.threads} threads > {os.cpu_count()} cores "
              "(torch processes then slow each other down, DESIGN §6)", flush=True)
    return args, [a for a in extra if a != "--"]


def render(summary: Summary, args: argparse.Namespace) -> str:
    head = "| p50 ms | p95 ms | p99 ms | req/s | requests | failures | budget p95/p99 ms | workers × threads |"
    sep = "|---:|---:|---:|---:|---:|---:|---:|---:|"
    s = summary
    row = (f"| {s.p50_ms:g} | {s.p95_ms:g} | {s.p99_ms:g} | {s.rps:.1f} | {s.requests} | {s.failures} | "
           f"{args.p95_ms:g}/{args.p99_ms:g} | {args.workers} × {args.threads} |")
    return "\n".join([head, sep, row])


@exit_codes("gate")
def main(argv: list[str] | None = None) -> int:
    args, extra = parse(argv)
    load_before = os.getloadavg()[0]
    with sigterm_unwinds(), Stack(args.out / "logs") as stack:
        model, raw = (args.model, args.raw) if args.model else build_model(
            args.out / "build", users=1000, items=2000, impressions=args.impressions, epochs=1)
        redis_url = args.redis_url or stack.redis()
        stack.materialize(model, raw, redis_url)
        url = stack.service(model, redis_url, args.workers, args.threads)
        print(f"gate: {args.users} users × {args.rate_per_user:g} req/s for {args.run_time} against {url}",
              flush=True)
        for attempt in range(1, args.attempts + 1):
            rc, summary = run_locust(url, model, raw, args.users, args.run_time, args.report, [
                "--rate-per-user", str(args.rate_per_user), "--p99-ms", str(args.p99_ms),
                "--p95-ms", str(args.p95_ms), *extra])
            if rc == 0 or attempt == args.attempts:
                break
            print(f"gate: attempt {attempt} of {args.attempts} missed the budget (load average "
                  f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores); running the load again", flush=True)
    if summary is None:
        print(f"gate: FAILED: Locust exited {rc} without stats (see the output above and {args.out / 'logs'})")
        return rc or 1
    print(render(summary, args))
    print(json.dumps({"gate": "pass" if rc == 0 else "fail", **summary.as_dict(), "p95_budget_ms": args.p95_ms,
                      "p99_budget_ms": args.p99_ms, "workers": args.workers, "threads": args.threads,
                      "users": args.users, "rate_per_user": args.rate_per_user, "run_time": args.run_time,
                      "attempts": attempt,
                      "load_avg_1m_before": round(load_before, 2), "load_avg_1m_after": round(os.getloadavg()[0], 2),
                      "report": f"{args.report}.html"}))
    return rc


if __name__ == "__main__":
    sys.exit(main())
