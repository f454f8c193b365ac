"""The training data order: every row once per epoch, seeded, the same batches for any number of
processes, in memory or streamed, from one parquet file or a folder of part files, and resumable
at any step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.errors import DataError
from recsys.features.splits import split_files
from recsys.training import ParquetSource, RunSettings, epoch_data
from recsys.training.data import EpochData, RowSource, plan_shards

N = 5_003  # not a multiple of anything below: uneven shards and a short last batch


def write_split(path: Path, n: int = N, row_group: int = 700, parts: int = 1) -> None:
    """An encoded split whose first sparse column is the row's number (to follow rows around)."""
    ids = np.arange(n)
    table = pa.table({"sparse.0": ids, "sparse.1": ids % 7, "dense.0": ids.astype(np.float32) / n,
                      "wide.0": ids % 11, "label": (ids % 3 == 0).astype(np.int8), "user_id": ids % 50})
    if parts == 1:
        pq.write_table(table, path, row_group_size=row_group)
        return
    path.mkdir()
    cuts = np.linspace(0, n, parts + 1).astype(int)
    for i in range(parts):
        pq.write_table(table.slice(cuts[i], cuts[i + 1] - cuts[i]), path / f"part-{i:05d}.parquet",
                       row_group_size=row_group)
    (path / "_SUCCESS").write_text("")


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("features")
    write_split(d / "train.parquet")
    return d


def source(d: Path) -> ParquetSource:
    return ParquetSource(d, "train", "label")


def epoch_rows(data: EpochData, epoch: int, start: int = 0) -> list[np.ndarray]:
    """Row numbers of each batch of one process's epoch."""
    return [b.sparse[:, 0].numpy().copy() for b, _ in data.epoch(epoch, start)]


def global_batches(src: RowSource, world: int, epoch: int, **settings: object) -> list[set[int]]:
    """The rows of each global batch, put together from `world` processes."""
    per_rank = [epoch_rows(epoch_data(src, RunSettings(**settings), 64, 3, r, world)[0], epoch)  # type: ignore[arg-type]
                for r in range(world)]
    assert len({len(b) for b in per_rank}) == 1, "every process takes the same number of steps"
    return [set(np.concatenate(parts).tolist()) for parts in zip(*per_rank, strict=True)]


def test_every_row_is_trained_once_per_epoch_in_a_new_seeded_order(split_dir: Path):
    data, _ = epoch_data(source(split_dir), RunSettings(), 64, seed=3)
    one, two = np.concatenate(epoch_rows(data, 1)), np.concatenate(epoch_rows(data, 2))
    assert sorted(one.tolist()) == list(range(N)) == sorted(two.tolist())
    assert not np.array_equal(one, two)
    again, _ = epoch_data(source(split_dir), RunSettings(), 64, seed=3)
    assert np.array_equal(np.concatenate(epoch_rows(again, 1)), one)


def test_global_batches_are_the_same_for_one_two_and_four_processes(split_dir: Path):
    for mode in ("memory", "stream"):
        one = global_batches(source(split_dir), 1, 1, data=mode, shuffle_window_rows=1000)
        assert one == global_batches(source(split_dir), 2, 1, data=mode, shuffle_window_rows=1000)
        assert one == global_batches(source(split_dir), 4, 1, data=mode, shuffle_window_rows=1000)
        assert sum(len(b) for b in one) == N and max(len(b) for b in one) == 64


def test_each_process_reads_only_its_own_shards(split_dir: Path):
    ranks = [epoch_data(source(split_dir), RunSettings(), 64, 3, r, 2)[0] for r in range(2)]
    rows = [set(np.concatenate(epoch_rows(d, 1)).tolist()) for d in ranks]
    assert not rows[0] & rows[1] and len(rows[0] | rows[1]) == N


def test_streaming_with_a_window_over_the_whole_epoch_gives_the_in_memory_batches(split_dir: Path):
    memory, how = epoch_data(source(split_dir), RunSettings(data="memory"), 64, 3)
    stream, how_s = epoch_data(source(split_dir), RunSettings(data="stream", shuffle_window_rows=10 * N), 64, 3)
    assert how.startswith("in memory") and how_s.startswith("streamed")
    for a, b in zip(epoch_rows(memory, 2), epoch_rows(stream, 2), strict=True):
        assert np.array_equal(a, b)


def test_a_small_streaming_window_still_visits_every_row_once(split_dir: Path):
    data, how = epoch_data(source(split_dir), RunSettings(data="stream", shuffle_window_rows=256), 64, 3)
    assert "windows of 256 rows" in how
    assert sorted(np.concatenate(epoch_rows(data, 1)).tolist()) == list(range(N))


def test_the_budget_decides_memory_or_streaming_and_says_why(split_dir: Path):
    small = RunSettings(memory_budget_mb=64)
    assert epoch_data(source(split_dir), small, 64, 3)[1].startswith("in memory (5,003 rows")
    row_bytes = 8 * 3 + 4 + 4  # three id columns, one dense, the label
    big = split_dir.parent / "big"
    big.mkdir(exist_ok=True)
    write_split(big / "train.parquet", n=64 * 2**20 // (2 * row_bytes) + 1, row_group=250_000)
    data, how = epoch_data(source(big), small, 1024, 3)
    assert how.startswith("streamed from 5 row groups") and "> budget 64 MiB" in how
    assert data.window_steps * 1024 <= 64 * 2**20 // (4 * row_bytes)  # the window follows the budget


@pytest.mark.parametrize("mode", ["memory", "stream"])
def test_resuming_at_a_step_continues_with_the_same_batches(split_dir: Path, mode: str):
    data, _ = epoch_data(source(split_dir), RunSettings(data=mode, shuffle_window_rows=640), 64, 3)
    full = epoch_rows(data, 2)
    for start in (1, 10, 11, len(full) - 1):
        tail = epoch_rows(data, 2, start)
        assert len(tail) == len(full) - start
        assert all(np.array_equal(a, b) for a, b in zip(tail, full[start:], strict=True))


def test_a_folder_of_part_files_is_read_like_one_file(split_dir: Path, tmp_path: Path):
    write_split(tmp_path / "train.parquet", parts=3)
    assert [p.name for p in split_files(tmp_path, "train")] == [f"part-{i:05d}.parquet" for i in range(3)]
    folder = source(tmp_path)
    assert sum(folder.piece_rows) == N and len(folder.piece_rows) > len(source(split_dir).piece_rows)
    data, _ = epoch_data(folder, RunSettings(), 64, 3)
    assert sorted(np.concatenate(epoch_rows(data, 1)).tolist()) == list(range(N))


def test_global_batch_sizes_are_even_and_counted_over_all_shards():
    plan = plan_shards([N], shards=8, batch_size=64, seed=0)
    sizes = plan.global_rows(np.arange(plan.steps))
    assert sizes.sum() == N and plan.steps == 79 and set(sizes.tolist()) <= {62, 63, 64, 65}


def test_shards_that_do_not_divide_among_processes_are_refused(split_dir: Path):
    with pytest.raises(DataError, match="data_shards 8 is not a multiple of the 3 processes"):
        epoch_data(source(split_dir), RunSettings(), 64, 3, 0, 3)
    with pytest.raises(DataError, match="batch_size 4 with data_shards 8"):
        epoch_data(source(split_dir), RunSettings(), 4, 3)


def test_every_process_has_a_part_of_every_batch_whatever_the_batch_size(split_dir: Path):
    for batch in (63, 64, 100):
        parts = [[len(b) for b in epoch_rows(epoch_data(source(split_dir), RunSettings(), batch, 3, r, 8)[0], 1)]
                 for r in range(8)]
        assert len({len(p) for p in parts}) == 1 and min(min(p) for p in parts) > 0
        sizes = np.sum(parts, axis=0)
        assert sizes.sum() == N and len(sizes) == -(-N // batch) and sizes.max() - sizes.min() <= 3
