"""Point-in-time impression statistics, offline and online, with one definition.

For an impression at time t and a key (e.g. the user, the item, or user×category) the statistic is
the number of earlier events with that key and how many of them were positive, counting only events
with timestamp strictly before t. Events sharing a timestamp never see each other: that rule is what
the online path reproduces by scoring a request before its events are posted.

Online, the counters live in the record of the key's first entity (user or item) under the field
names built by `counter_field`, so one read of a user and its candidates returns every counter.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.features.transforms import as_str

__all__ = ["key_codes", "point_in_time_counts", "totals_before", "counter_field", "sub_key"]


def key_codes(columns: list[np.ndarray]) -> np.ndarray:
    """One int64 code per distinct combination of the key columns (dense, via factorize)."""
    code = np.zeros(len(columns[0]), dtype=np.int64)
    for col in columns:
        c, uniques = pd.factorize(as_str(col))
        code = code * (len(uniques) + 1) + c
        code, _ = pd.factorize(code)  # re-densify so that multi-column codes cannot overflow
        code = code.astype(np.int64)
    return code


def point_in_time_counts(codes: np.ndarray, ts: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(count, positives) of events with the same code and a strictly earlier timestamp. O(n log n)."""
    n = len(codes)
    if n == 0:
        return np.zeros(0, np.float64), np.zeros(0, np.float64)
    ts = np.asarray(ts, dtype=np.int64)
    order = np.lexsort((ts, codes))
    c, t = codes[order], ts[order]
    y = np.asarray(label, dtype=np.float64)[order]
    idx = np.arange(n)
    new_key = np.r_[True, c[1:] != c[:-1]]
    key_start = np.maximum.accumulate(np.where(new_key, idx, 0))
    cum_pos = np.cumsum(y) - y  # positives strictly before each sorted row (all keys)
    count = (idx - key_start).astype(np.float64)
    pos = cum_pos - cum_pos[key_start]
    # Ties: every row of a (key, timestamp) run takes the value of the run's first row.
    new_run = new_key | np.r_[True, t[1:] != t[:-1]]
    run_start = np.maximum.accumulate(np.where(new_run, idx, 0))
    count, pos = count[run_start], pos[run_start]
    out_c, out_p = np.empty(n), np.empty(n)
    out_c[order], out_p[order] = count, pos
    return out_c, out_p


def totals_before(columns: list[np.ndarray], ts: np.ndarray, label: np.ndarray, as_of: int | None) -> pd.DataFrame:
    """Counters as of `as_of` (events strictly before it; all events when None), per key combination.
    Returns columns key0..keyK (str), count, positives: what `materialize` writes online."""
    ts = np.asarray(ts, dtype=np.int64)
    keep = np.ones(len(ts), dtype=bool) if as_of is None else ts < as_of
    frame = pd.DataFrame({f"key{i}": as_str(col)[keep] for i, col in enumerate(columns)})
    frame["count"] = 1.0
    frame["positives"] = np.asarray(label, dtype=np.float64)[keep]
    return frame.groupby(list(frame.columns[: len(columns)]), sort=False, as_index=False).sum()


def sub_key(parts: list[np.ndarray]) -> np.ndarray:
    """The part of a statistic's key after its entity, joined: '' for a single-column key."""
    if not parts:
        return np.array([], dtype=object)
    out = as_str(parts[0])
    for p in parts[1:]:
        out = out + "\x1f" + as_str(p)
    return out


def counter_field(statistic: str, sub: str, kind: str) -> str:
    """Field name of a counter inside its entity record: 'stat:c', or 'stat:<sub>:c' for user×category."""
    return f"{statistic}:{kind}" if sub == "" else f"{statistic}:{sub}:{kind}"
