"""Training data: a seeded stream of global batches, held in memory or streamed from parquet.

The order is a pure function of (seed, epoch, batch size, `data_shards`, shuffle window), never of
the number of processes or of where the rows live:

  1. the split's pieces (parquet row groups, or one in-memory batch) are put in a fixed seeded
     order and their rows cut into `data_shards` contiguous shards of near-equal size;
  2. every epoch each shard visits its segments in a new seeded order, and shuffles its rows
     within windows of `window_steps` batches (a window covering the shard is a full shuffle);
  3. an epoch has ceil(rows / batch size) global batches, and every shard spreads its rows evenly
     over them: global batch k takes rows [k·L/T, (k+1)·L/T) of each shard's epoch order.

Process r of W trains on shards r, r + W, …: its part of every global batch, so it reads only its
own files and row groups, and W processes that divide `data_shards` see the very batches that one
process sees (their gradients, summed, are the one-process gradient). MosaicML's StreamingDataset
does the same with its "canonical nodes". In memory the rows of a process's shards are read once
and each epoch is one gather; streamed, each window is read while the previous one trains, so
memory is bounded by the window, not the data.
"""

from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from recsys.errors import DataError
from recsys.features.batch import Batch
from recsys.features.splits import BLOCKS, decode_blocks, split_files
from recsys.training.settings import RunSettings

__all__ = [
    "Segment",
    "RowSource",
    "ParquetSource",
    "TensorSource",
    "ShardPlan",
    "plan_shards",
    "contiguous_segments",
    "rank_segments",
    "read_rows",
    "iter_rows",
    "EpochData",
    "epoch_data",
]

CHUNK_ROWS = 65_536  # rows decoded per parquet read: bounds a reader's memory whatever the row group
READ_BUFFER = 65_536  # bytes a parquet reader buffers per column


@dataclass(frozen=True)
class Segment:
    """Rows [start, stop) of one piece."""

    piece: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


class RowSource(Protocol):
    """Rows of a split in pieces; `read` yields them in order, in chunks of ≤ CHUNK_ROWS rows."""

    piece_rows: Sequence[int]
    widths: tuple[int, int, int, int]  # sparse, multi, dense, wide columns

    def read(self, segment: Segment) -> Iterator[Batch]: ...


def row_bytes(widths: Sequence[int]) -> int:
    """Bytes a row takes as training tensors (int64 ids, float32 dense and label)."""
    sparse, multi, dense, wide = widths
    return 8 * (sparse + multi + wide) + 4 * dense + 4


class TensorSource:
    """A split already in memory (tests, the evaluation baseline): one piece."""

    def __init__(self, batch: Batch) -> None:
        if batch.label is None:
            raise ValueError("training data needs labels")
        self.batch = batch
        self.piece_rows: Sequence[int] = (len(batch),)
        self.widths = (batch.sparse.shape[1], batch.multi.shape[1], batch.dense.shape[1], batch.wide.shape[1])

    def read(self, segment: Segment) -> Iterator[Batch]:
        for start in range(segment.start, segment.stop, CHUNK_ROWS):
            yield self.batch.slice(slice(start, min(start + CHUNK_ROWS, segment.stop)))


class ParquetSource:
    """An encoded split on disk (one file or a folder of part files): its row groups are the pieces.
    Only the block and label columns are read."""

    def __init__(self, features_dir: str | Path, split: str, label: str) -> None:
        self.files = split_files(features_dir, split)
        self.label = label
        self._pieces: list[tuple[int, int]] = []
        rows: list[int] = []
        first: list[str] | None = None
        for i, path in enumerate(self.files):
            try:
                meta = pq.ParquetFile(path).metadata
            except (OSError, pa.ArrowException) as err:
                raise DataError(f"{path} is not a readable parquet file ({err}); rebuild the features") from None
            names = list(meta.schema.names)
            if first is None:
                first = names
            elif names != first:
                raise DataError(f"{path} has other columns than {self.files[0]} (fix: rebuild the features "
                                f"into an empty folder)")
            for rg in range(meta.num_row_groups):
                self._pieces.append((i, rg))
                rows.append(meta.row_group(rg).num_rows)
        names = first or []
        if label not in names:
            raise DataError(f"{self.files[0]} has no label column '{label}' (fix: rebuild the features)")
        self.columns = [c for c in names if c.split(".")[0] in BLOCKS] + [label]
        self.piece_rows: Sequence[int] = tuple(rows)
        width = {b: sum(c.startswith(f"{b}.") for c in names) for b in BLOCKS}
        self.widths = (width["sparse"], width["multi"], width["dense"], width["wide"])

    def read(self, segment: Segment) -> Iterator[Batch]:
        file, row_group = self._pieces[segment.piece]
        seen = 0
        # Threads off: the decoding thread runs beside the training step on the same cores. Buffered
        # reads, no pre-buffering: a reader holds 64 KiB a column instead of its row group's whole
        # column chunks (measured with pyarrow 26, 8 readers on 1 M-row groups: 323 MB against 754).
        for record in pq.ParquetFile(self.files[file], buffer_size=READ_BUFFER, pre_buffer=False).iter_batches(
                batch_size=CHUNK_ROWS, row_groups=[row_group], columns=self.columns, use_threads=False):
            lo, hi = max(segment.start - seen, 0), min(segment.stop - seen, record.num_rows)
            seen += record.num_rows
            if hi > lo:
                table = pa.Table.from_batches([record.slice(lo, hi - lo)])
                yield Batch.from_encoded(decode_blocks(table), table[self.label].to_numpy())
            if seen >= segment.stop:
                return


def _empty(widths: Sequence[int], n: int) -> Batch:
    sparse, multi, dense, wide = widths
    i64 = torch.int64
    return Batch(torch.empty(n, sparse, dtype=i64), torch.empty(n, multi, dtype=i64),
                 torch.empty(n, dense), torch.empty(n, wide, dtype=i64), torch.empty(n))


def _copy_into(out: Batch, at: int, chunk: Batch) -> None:
    n = len(chunk)
    for name in ("sparse", "multi", "dense", "wide", "label"):
        getattr(out, name)[at:at + n] = getattr(chunk, name)


def iter_rows(source: RowSource, segments: Sequence[Segment]) -> Iterator[Batch]:
    for segment in segments:
        yield from source.read(segment)


def read_rows(source: RowSource, segments: Sequence[Segment]) -> Batch:
    """The rows of `segments` in one batch (allocated once)."""
    out = _empty(source.widths, sum(s.rows for s in segments))
    at = 0
    for chunk in iter_rows(source, segments):
        _copy_into(out, at, chunk)
        at += len(chunk)
    return out


def contiguous_segments(piece_rows: Sequence[int], start: int, stop: int) -> list[Segment]:
    """Rows [start, stop) of the pieces laid end to end in their given order."""
    out: list[Segment] = []
    offset = 0
    for piece, rows in enumerate(piece_rows):
        lo, hi = max(start, offset), min(stop, offset + rows)
        if hi > lo:
            out.append(Segment(piece, lo - offset, hi - offset))
        offset += rows
    return out


def _cuts(total: int, parts: int) -> list[int]:
    """Boundaries that cut `total` into `parts` near-equal parts."""
    return [total * i // parts for i in range(parts + 1)]


def rank_segments(piece_rows: Sequence[int], rank: int, world: int) -> list[Segment]:
    """A rank's contiguous share of a split in its stored order (validation: the scores gathered in
    rank order are the split's rows in order)."""
    cuts = _cuts(sum(piece_rows), world)
    return contiguous_segments(piece_rows, cuts[rank], cuts[rank + 1])


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([*key])


@dataclass(frozen=True)
class ShardPlan:
    """Which rows each shard holds, and how many global batches an epoch has. Every shard gives
    rows to every batch (its L rows spread evenly over the T batches), so every process has a part
    of every batch and all take the same steps."""

    segments: tuple[tuple[Segment, ...], ...]  # per shard, in its fixed order
    lengths: tuple[int, ...]
    steps: int  # global batches per epoch

    @property
    def rows(self) -> int:
        return sum(self.lengths)

    def _before(self, shards: np.ndarray, steps: np.ndarray) -> np.ndarray:
        lengths = np.asarray(self.lengths)[shards]
        stagger = shards * self.steps // len(self.lengths)  # shards round at different steps
        rows: np.ndarray = (lengths * steps + stagger) // self.steps
        return rows

    def before(self, shard: int, step: int) -> int:
        """Rows of the shard's epoch order that batches before `step` take (the shard's rows spread
        evenly over the epoch's batches, so batch sizes stay within a row or two of the batch size)."""
        return int(self._before(np.array(shard), np.array(step)))

    def global_rows(self, steps: np.ndarray) -> np.ndarray:
        """Rows of global batch k, for each k in `steps`."""
        shards, k = np.arange(len(self.lengths))[None, :], np.asarray(steps)[:, None]
        rows: np.ndarray = (self._before(shards, k + 1) - self._before(shards, k)).sum(1)
        return rows


def plan_shards(piece_rows: Sequence[int], shards: int, batch_size: int, seed: int) -> ShardPlan:
    order = _rng(seed, 0x5A4D).permutation(len(piece_rows))
    rows = [piece_rows[i] for i in order]
    total = sum(rows)
    cuts = _cuts(total, shards)
    segments = tuple(
        tuple(Segment(int(order[s.piece]), s.start, s.stop) for s in contiguous_segments(rows, cuts[i], cuts[i + 1]))
        for i in range(shards))
    lengths = tuple(cuts[i + 1] - cuts[i] for i in range(shards))
    steps = math.ceil(total / batch_size)
    if min(lengths) < steps:
        raise DataError(f"batch_size {batch_size} with data_shards {shards}: {total:,} rows make shards too small to "
                        f"give each of the {steps:,} batches a row (fix: a batch size ≥ {shards}, or fewer data "
                        f"shards)")
    return ShardPlan(segments, lengths, steps)


class _ShardReader:
    """Reads one shard's rows of an epoch in order, window by window (streaming)."""

    def __init__(self, source: RowSource, segments: Sequence[Segment], skip: int) -> None:
        self._source = source
        self._segments = list(segments)
        while skip and self._segments:  # resuming: whole segments are skipped unread
            head = self._segments[0]
            if head.rows <= skip:
                skip -= head.rows
                self._segments.pop(0)
            else:
                self._segments[0] = Segment(head.piece, head.start + skip, head.stop)
                skip = 0
        self._chunks = iter_rows(source, self._segments)
        self._left: Batch | None = None

    def take(self, n: int, out: Batch, at: int) -> None:
        """The next `n` rows, written to `out` from row `at` on."""
        end = at + n
        while at < end:
            chunk = self._left if self._left is not None else next(self._chunks)
            use = min(len(chunk), end - at)
            _copy_into(out, at, chunk.slice(slice(0, use)))
            self._left = chunk.slice(slice(use, None)) if use < len(chunk) else None
            at += use


class EpochData:
    """One process's part of the training split: `epoch(e)` yields (local batch, global batch rows).

    `cache`: hold the process's rows in memory (read once) instead of streaming them; the batches
    are the same either way when `window_steps` covers the epoch."""

    def __init__(self, source: RowSource, plan: ShardPlan, rank: int, world: int, seed: int,
                 window_steps: int, cache: bool) -> None:
        if len(plan.lengths) % world:
            raise DataError(f"data_shards {len(plan.lengths)} is not a multiple of the {world} processes "
                            f"(fix: --data-shards {world * math.ceil(len(plan.lengths) / world)})")
        self.source, self.plan, self.seed = source, plan, seed
        self.shards = list(range(rank, len(plan.lengths), world))
        self.window_steps = plan.steps if cache else max(1, min(window_steps, plan.steps))
        self.rows = sum(plan.lengths[s] for s in self.shards)
        self._cache: Batch | None = None
        self._cache_at: dict[int, list[int]] = {}  # shard → cache offset of each of its segments
        if cache:
            owned = [seg for s in self.shards for seg in plan.segments[s]]
            self._cache = read_rows(source, owned)
            at = 0
            for s in self.shards:
                self._cache_at[s] = []
                for seg in plan.segments[s]:
                    self._cache_at[s].append(at)
                    at += seg.rows

    def _epoch_segments(self, epoch: int, shard: int) -> np.ndarray:
        return _rng(self.seed, epoch, shard).permutation(len(self.plan.segments[shard]))

    def _steps(self, window: int) -> tuple[int, int]:
        m = self.window_steps
        return window * m, min((window + 1) * m, self.plan.steps)

    def _counts(self, window: int) -> list[int]:
        """Rows each owned shard gives to the window's steps."""
        k0, k1 = self._steps(window)
        return [self.plan.before(s, k1) - self.plan.before(s, k0) for s in self.shards]

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[tuple[Batch, int]]:
        """(local batch, rows of the global batch) for each step of `epoch` from `start_step` on."""
        first, last = start_step // self.window_steps, math.ceil(self.plan.steps / self.window_steps)
        readers = None
        if self._cache is None:  # each owned shard's segments in this epoch's order, past the skipped windows
            skip = self._steps(first)[0]
            readers = [_ShardReader(self.source, [self.plan.segments[s][i] for i in self._epoch_segments(epoch, s)],
                                    skip=self.plan.before(s, skip))
                       for s in self.shards]
        with ThreadPoolExecutor(max_workers=1) as pool:
            ahead: Future[Batch] | None = None
            for w in range(first, last):
                k0, k1 = self._steps(w)
                counts = self._counts(w)
                if readers is None:  # in memory: rows of the cache
                    rows = self._cache
                    positions = [self._cached_positions(epoch, s, self.plan.before(s, k0), c)
                                 for s, c in zip(self.shards, counts, strict=True)]
                else:  # streamed: this window's rows (read while the previous window trained), read the next
                    rows = ahead.result() if ahead is not None else self._read_window(readers, counts)
                    ahead = pool.submit(self._read_window, readers, self._counts(w + 1)) if w + 1 < last else None
                    positions = np.split(np.arange(sum(counts)), np.cumsum(counts)[:-1])
                assert rows is not None
                index, per_step = self._interleave(epoch, w, positions)
                window = rows.slice(torch.from_numpy(index))
                del rows  # a streamed window's unshuffled rows are no longer needed
                ends = np.r_[0, np.cumsum(per_step)]
                sizes = self.plan.global_rows(np.arange(k0, k1))
                for k in range(max(start_step - k0, 0), k1 - k0):
                    yield window.slice(slice(int(ends[k]), int(ends[k + 1]))), int(sizes[k])

    def _read_window(self, readers: list[_ShardReader], counts: list[int]) -> Batch:
        """The next `counts[i]` rows of each owned shard, side by side in one batch."""
        out = _empty(self.source.widths, sum(counts))
        at = 0
        for reader, n in zip(readers, counts, strict=True):
            reader.take(n, out, at)
            at += n
        return out

    def _cached_positions(self, epoch: int, shard: int, start: int, count: int) -> np.ndarray:
        """Cache rows of the shard's epoch-ordered rows [start, start + count)."""
        segs, at = self.plan.segments[shard], self._cache_at[shard]
        order = self._epoch_segments(epoch, shard)
        rows = np.concatenate([np.arange(at[i], at[i] + segs[i].rows) for i in order]) if len(order) else \
            np.zeros(0, np.int64)
        return rows[start:start + count]

    def _interleave(self, epoch: int, window: int, positions: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Shuffle each shard's window rows (seeded per shard and window), then lay them out in
        batch order: batch k = its share of each owned shard. → (row index, rows per batch)."""
        k0, k1 = self._steps(window)
        grids = []
        for s, pos in zip(self.shards, positions, strict=True):
            per_step = np.diff(self.plan._before(np.array(s), np.arange(k0, k1 + 1)))
            grid = np.full((k1 - k0, int(per_step.max())), -1, dtype=np.int64)
            grid[np.arange(grid.shape[1])[None, :] < per_step[:, None]] = pos[
                _rng(self.seed, epoch, s, window, 1).permutation(len(pos))]  # row-major: batch by batch
            grids.append(grid)
        grid = np.concatenate(grids, axis=1)
        present = grid >= 0
        return grid[present], present.sum(1)


def epoch_data(source: RowSource, settings: RunSettings, batch_size: int, seed: int, rank: int = 0, world: int = 1,
               window_steps: int | None = None) -> tuple[EpochData, str]:
    """The one place that decides between memory and streaming; returns the data and a line
    saying which and why. `window_steps`: the shuffle window a checkpoint was made with."""
    if not sum(source.piece_rows):
        raise DataError("the train split is empty (fix: rebuild the features with more impressions)")
    plan = plan_shards(source.piece_rows, settings.data_shards, batch_size, seed)
    per_row = row_bytes(source.widths)
    mine = sum(plan.lengths[s] for s in range(rank, len(plan.lengths), world))
    budget = settings.memory_budget_mb * 2**20
    need = 2 * mine * per_row  # the rows + the epoch's shuffled copy
    in_memory = isinstance(source, TensorSource) or settings.data == "memory" or (
        settings.data == "auto" and need <= budget)
    if window_steps is None:
        window = settings.shuffle_window_rows or budget // (4 * per_row)  # read, shuffled, read ahead, spare
        window_steps = plan.steps if in_memory else max(1, window // batch_size)
    data = EpochData(source, plan, rank, world, seed, window_steps, cache=in_memory)
    mb = need / 2**20
    if in_memory:
        why = "in memory" + (f" ({mine:,} rows × {per_row} B × 2 = {mb:,.0f} MiB ≤ budget "
                             f"{settings.memory_budget_mb:,} MiB)" if settings.data == "auto" else "")
    else:
        why = (f"streamed from {len(source.piece_rows):,} row groups ({mine:,} rows × {per_row} B × 2 = {mb:,.0f} "
               f"MiB > budget {settings.memory_budget_mb:,} MiB), shuffled in windows of "
               f"{data.window_steps * batch_size:,} rows" if settings.data == "auto" else
               f"streamed, shuffled in windows of {data.window_steps * batch_size:,} rows")
    per = " per process" if world > 1 else ""
    return data, f"{why}{per}; {plan.steps:,} batches an epoch over {len(plan.lengths)} data shards"
