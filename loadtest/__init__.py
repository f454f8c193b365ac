"""Load test and latency gate (not part of the installed distribution; run from the repo root).

- `locustfile.py`: the Locust workload and the SLO check (run by `locust -f`, its own process);
- `gate.py`: `python -m loadtest.gate`, the one-command gate (.ci/run runs a short one);
- `capacity.py`: `python -m loadtest.capacity`, max req/s at p99 ≤ 50 ms per worker layout;
- `stack.py`: starts and stops Redis, the service and Locust for both scripts.
"""
