"""The capacity report's rendering: the table picks the best passing step, and an experiment
(--no-readme) leaves the committed README and plot alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest import capacity
from loadtest.stack import Summary


def _step(rps: float, p99: float, failures: int = 0) -> capacity.Step:
    summary = Summary(requests=int(rps * 15), failures=failures, rps=rps, p50_ms=4, p95_ms=p99 / 2, p99_ms=p99,
                      max_ms=p99 * 2, generator_cpu_ms=0.3)
    return capacity.Step(offered_rps=rps, users=max(1, round(rps / 5)), summary=summary, load=1.0, service_cpu_ms=2.2)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    results = {
        capacity.Layout(1, 1): [_step(100, 20), _step(150, 45), _step(230, 70)],
        # a failed request disqualifies a step whatever its latency
        capacity.Layout(2, 1): [_step(150, 20), _step(230, 30, failures=1), _step(340, 60)],
    }
    meta = capacity.Meta(p99_ms=50, candidates=200, max_rps=1000, nice=0, cores=2, load_before="0.1 / 0.1 / 0.1",
                         load_after="1.0 / 0.5 / 0.2", date="2026-11-28 10:00 UTC",
                         command="python -m loadtest.capacity")
    path = tmp_path / "capacity.json"
    capacity.save(path, results, meta)
    return path


def test_render_no_readme_writes_the_plot_beside_the_reports(saved: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    committed = {p: p.read_bytes() for p in (capacity.README, capacity.PLOT) if p.exists()}
    reports = tmp_path / "reports"
    assert capacity.main(["--render", str(saved), "--no-readme", "--reports", str(reports)]) == 0
    out = capsys.readouterr().out
    assert "| 1×1 | **150** |" in out and "| 2×1 | **150** |" in out
    assert '"plot": "' + str(reports / "capacity.png") in out
    assert (reports / "capacity.png").read_bytes().startswith(b"\x89PNG")
    assert {p: p.read_bytes() for p in committed} == committed


def test_render_unreadable_file_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "capacity.json"
    bad.write_text("{not json")
    assert capacity.main(["--render", str(bad), "--no-readme", "--reports", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("capacity: error: --render") and "fix:" in err[0]
