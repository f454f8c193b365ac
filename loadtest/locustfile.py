"""Locust load test for the ranking service, with the latency budget as a pass/fail gate.

    locust -f loadtest/locustfile.py --headless --host http://127.0.0.1:8000 \
        --model runs/demo/model --raw runs/demo/raw -u 20 -r 20 -t 30s --reset-stats \
        --csv loadtest/reports/run --html loadtest/reports/run.html

Run it as its own process: Locust monkey-patches the standard library with gevent, so it never
shares a process with torch (DESIGN §6). `python -m loadtest.gate` starts Redis and the service
around it; `python -m loadtest.capacity` steps the user count.

The workload is drawn from the data the service was materialized from, so the store is hit the
way production hits it:
- users: the `user_key` column of the impressions table (active users ask more often), with a
  share of unseen ids (`--cold-users`), which the service serves as cold starts;
- candidates: item ids of the items table, weighted by impression count (retrieval returns popular
  items more often), with a share of unseen ids (`--cold-items`); `--candidates` per request
  (default 200), and for a `--tail-share` of the requests log-uniform up to `--max-candidates`;
- context: the spec's context columns copied from a random impression (device, ...); the
  timestamp is left out, so the service uses "now" as it would in production;
- a `--score-share` of the requests are POST /v1/score with `--score-rows` (user, item) rows.
- a `--no-candidates-share` of the recommendation requests bring no candidates: the service
  retrieves its own (ANN over the catalog ∪ popular, seen items out) and ranks them; their own row
  in the statistics, "/v1/recommendations (no candidates)", and up to k items each.
The artifact's spec.yaml names the columns, so any spec works, not only the synthetic one.

Request bodies are serialized once at start-up (a pool of `--pool` bodies) and picked at random:
the load generator shares the CPU with the service, and JSON encoding of 1,000 ids per request
would otherwise be measured as part of the server's capacity.

At exit the `quitting` listener sets the exit code to 1 and prints why when the p99 is over
`--p99-ms` (50), the p95 over `--p95-ms` (25), the failure ratio over `--max-fail-ratio` (0), or
no request was made. Locust keeps response times under 100 ms as whole milliseconds, so the
percentiles it reports (and this gate checks) are whole milliseconds too.
"""

from __future__ import annotations

import math
import os
import random
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from locust import FastHttpUser, events, task
from locust.env import Environment

from recsys.errors import RecsysError
from recsys.io import read_table
from recsys.spec import FeatureSpec, load_spec

RECOMMEND = "/v1/recommendations"
SCORE = "/v1/score"
RECOMMEND_ALL = "/v1/recommendations (no candidates)"  # the same route; its own row in the statistics
HEADERS = {"Content-Type": "application/json"}
CONTEXT_SAMPLE = 20_000  # impressions whose context columns requests copy: plenty of variety, cheap to hold


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    g = parser.add_argument_group("recsys workload and budget")
    g.add_argument("--model", default=os.environ.get("RECSYS_MODEL_DIR", "runs/demo/model"),
                   help="artifact folder: its spec.yaml names the columns (env RECSYS_MODEL_DIR)")
    g.add_argument("--raw", default=os.environ.get("RECSYS_RAW_DIR", "runs/demo/raw"),
                   help="raw tables the store was materialized from (env RECSYS_RAW_DIR)")
    g.add_argument("--candidates", type=int, default=200, help="candidates per recommendation request")
    g.add_argument("--max-candidates", type=int, default=1000, help="largest candidate list of the tail")
    g.add_argument("--tail-share", type=float, default=0.05,
                   help="share of requests with a log-uniform count in (candidates, max-candidates]")
    g.add_argument("--cold-users", type=float, default=0.1, help="share of requests from unseen users")
    g.add_argument("--cold-items", type=float, default=0.02, help="share of candidates that are unseen items")
    g.add_argument("--k", type=int, default=10, help="items asked for per recommendation request")
    g.add_argument("--score-share", type=float, default=0.1, help="share of requests that go to /v1/score")
    g.add_argument("--no-candidates-share", type=float, default=0.2,
                   help="share of recommendation requests without candidates (retrieval → rank, or popular → rank)")
    g.add_argument("--score-rows", type=int, default=20, help="(user, item) rows per /v1/score request")
    g.add_argument("--rate-per-user", type=float, default=0.0,
                   help="requests/s per simulated user, Poisson arrivals (open loop); 0 = back to back")
    g.add_argument("--pool", type=int, default=2000, help="distinct request bodies serialized at start-up")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--p99-ms", type=float, default=50.0, help="fail the run when the p99 is over this")
    g.add_argument("--p95-ms", type=float, default=25.0, help="fail the run when the p95 is over this")
    g.add_argument("--max-fail-ratio", type=float, default=0.0, help="fail the run above this failure ratio")
    g.add_argument("--summary-json", default=None,
                   help="also write the final numbers and the verdict here (read by loadtest.gate / .capacity)")


@dataclass(frozen=True)
class Body:
    path: str
    data: bytes
    expect: int  # items (recommendations) or scores (score) the reply must hold
    at_most: bool = False  # without candidates: seen items are filtered, so up to `expect`


class Workload:
    """Ids and contexts drawn from the raw tables, and the pool of serialized request bodies."""

    def __init__(self, spec: FeatureSpec, raw: Path, opts: Any) -> None:
        self.opts = opts
        self.rng = np.random.default_rng(opts.seed)
        context_cols = spec.source_columns("impressions")
        imp = read_table(raw, spec.tables["impressions"], [spec.user_key, spec.item_key, *context_cols])
        items = read_table(raw, spec.tables["items"], [spec.item_key])[spec.item_key].astype(str)
        popularity = imp[spec.item_key].astype(str).value_counts().reindex(items, fill_value=0).to_numpy()
        self.items = items.to_numpy(dtype=object)
        self.item_p = (popularity + 1.0) / (popularity + 1.0).sum()  # +1: never-shown items are still candidates
        sample = imp.sample(n=min(CONTEXT_SAMPLE, len(imp)), random_state=opts.seed)
        self.users = sample[spec.user_key].astype(str).to_numpy(dtype=object)
        self.contexts = [{c: _json_value(v) for c, v in row.items() if _json_value(v) is not None}
                         for row in sample[context_cols].to_dict("records")]

    def _user(self) -> str:
        if self.rng.random() < self.opts.cold_users:
            return f"loadtest-cold-{self.rng.integers(1 << 40)}"
        return str(self.users[self.rng.integers(len(self.users))])

    def _candidates(self, n: int) -> list[str]:
        known = min(n, len(self.items))
        ids = self.rng.choice(self.items, size=known, replace=False, p=self.item_p).tolist()
        cold = self.rng.random(known) < self.opts.cold_items
        for i in np.flatnonzero(cold):
            ids[i] = f"loadtest-new-{self.rng.integers(1 << 40)}"
        return ids

    def _count(self) -> int:
        o = self.opts
        if o.max_candidates > o.candidates and self.rng.random() < o.tail_share:
            return int(math.exp(self.rng.uniform(math.log(o.candidates + 1), math.log(o.max_candidates + 1))))
        return o.candidates

    def _context(self) -> dict[str, Any]:
        return dict(self.contexts[self.rng.integers(len(self.contexts))])

    def body(self) -> Body:
        if self.rng.random() < self.opts.score_share:
            user, ctx = self._user(), self._context()
            rows = [{"user_id": user, "item_id": i, "context": ctx} for i in self._candidates(self.opts.score_rows)]
            return Body(SCORE, orjson.dumps({"rows": rows}), len(rows))
        if self.rng.random() < self.opts.no_candidates_share:
            payload = {"user_id": self._user(), "context": self._context(), "k": self.opts.k}
            return Body(RECOMMEND_ALL, orjson.dumps(payload), self.opts.k, at_most=True)
        candidates = self._candidates(self._count())
        payload = {"user_id": self._user(), "context": self._context(), "candidates": candidates, "k": self.opts.k}
        return Body(RECOMMEND, orjson.dumps(payload), min(self.opts.k, len(set(candidates))))

    def pool(self) -> list[Body]:
        return [self.body() for _ in range(self.opts.pool)]


def _json_value(v: Any) -> Any:
    """numpy scalars → Python; missing values (None / NaN) are left out of the context."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v.item() if isinstance(v, np.generic) else v


def _check(opts: Any) -> None:
    for name in ("tail_share", "cold_users", "cold_items", "score_share", "no_candidates_share"):
        if not 0.0 <= getattr(opts, name) <= 1.0:
            raise ValueError(f"--{name.replace('_', '-')} is a share: give a value in [0, 1], "
                             f"got {getattr(opts, name)}")
    for name in ("candidates", "max_candidates", "k", "score_rows", "pool"):
        if getattr(opts, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(opts, name)}")


BODIES: list[Body] = []


@events.init.add_listener
def _build_pool(environment: Environment, **_: Any) -> None:
    opts = environment.parsed_options
    if opts is None:  # imported by a tool, not run by locust
        return
    try:
        _check(opts)
        spec = load_spec(Path(opts.model) / "spec.yaml")
        BODIES[:] = Workload(spec, Path(opts.raw), opts).pool()
    except (RecsysError, ValueError) as err:
        print(f"loadtest: error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    print(f"loadtest: {len(BODIES)} request bodies from {opts.raw} "
          f"({sum(b.path == SCORE for b in BODIES)} to {SCORE})", flush=True)


class RecsysUser(FastHttpUser):
    """One client of the ranking API: Poisson arrivals at --rate-per-user, or back to back."""

    host = "http://127.0.0.1:8000"
    _next_at: float  # this user's next scheduled send (time.monotonic)

    def wait_time(self) -> float:
        """Open-loop Poisson arrivals: exponential gaps between *scheduled* send times. Locust starts
        users in batches, so a fixed pacing (constant_throughput) keeps them in lockstep and sends
        bursts that queue behind each other (measured at 20 req/s: p50 32 ms, p99 69 ms; with
        these arrivals 14 and 36 ms). The schedule does not wait for slow replies: a user that fell
        behind sends at once until it has caught up, so a slow server still gets the offered rate."""
        rate = self.environment.parsed_options.rate_per_user
        if rate <= 0:
            return 0.0
        now = time.monotonic()
        self._next_at = getattr(self, "_next_at", now) + random.expovariate(rate)
        return max(0.0, self._next_at - now)

    @task
    def post(self) -> None:
        body = random.choice(BODIES)
        path = RECOMMEND if body.path == RECOMMEND_ALL else body.path
        with self.client.post(path, data=body.data, headers=HEADERS, name=body.path,
                              catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {(resp.text or '')[:200]}")
                return
            reply = orjson.loads(resp.content)
            got = len(reply["scores"] if body.path == SCORE else reply["items"])
            if got > body.expect if body.at_most else got != body.expect:
                resp.failure(f"{body.path}: {got} results, expected {body.expect}")


_CPU_AT_RESET: list[float] = []


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@events.spawning_complete.add_listener
def _mark_reset(**_: Any) -> None:
    """--reset-stats clears the numbers here; the load generator's CPU is counted from here too."""
    _CPU_AT_RESET[:] = [_cpu_s()]


@events.quitting.add_listener
def _slo(environment: Environment, **_: Any) -> None:
    """The gate: a non-zero exit code, with the reasons, when the run missed its budget."""
    opts, total = environment.parsed_options, environment.stats.total
    if opts is None:
        return
    p50, p95, p99 = (total.get_response_time_percentile(q) for q in (0.5, 0.95, 0.99))
    print(f"loadtest: {total.num_requests} requests, {total.num_failures} failures, {total.total_rps:.1f} req/s, "
          f"p50 {p50} ms, p95 {p95} ms, p99 {p99} ms (budget p95 {opts.p95_ms:g} ms, p99 {opts.p99_ms:g} ms)",
          flush=True)
    reasons = []
    if total.num_requests == 0:
        reasons.append("no request was made (is the service up? is --host right?)")
    else:
        if p99 > opts.p99_ms:
            reasons.append(f"p99 {p99} ms > budget {opts.p99_ms:g} ms")
        if p95 > opts.p95_ms:
            reasons.append(f"p95 {p95} ms > budget {opts.p95_ms:g} ms")
        if total.fail_ratio > opts.max_fail_ratio:
            reasons.append(f"failure ratio {total.fail_ratio:.4f} > {opts.max_fail_ratio:g} "
                           f"({total.num_failures} of {total.num_requests}; see the failures CSV)")
    for r in reasons:
        print(f"loadtest: SLO FAILED: {r}", flush=True)
    if reasons:
        environment.process_exit_code = 1
    else:
        print("loadtest: SLO passed", flush=True)
    if opts.summary_json:
        # The CSV files lag up to a second behind the end of the run; these are the numbers judged above.
        summary = {"requests": total.num_requests, "failures": total.num_failures, "rps": round(total.total_rps, 1),
                   "p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "max_ms": round(total.max_response_time, 1),
                   "generator_cpu_ms": round((_cpu_s() - (_CPU_AT_RESET or [0.0])[0]) * 1e3
                                             / max(total.num_requests, 1), 3),
                   "passed": not reasons, "reasons": reasons}
        Path(opts.summary_json).write_bytes(orjson.dumps(summary))
