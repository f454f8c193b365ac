"""Request checks that depend on the loaded artifact (which context fields exist, and their types),
raised as field-named 422s. `service.openapi` publishes the same rules from the same table."""

from __future__ import annotations

import time
from operator import methodcaller
from typing import Protocol, Sequence

import numpy as np

from recsys.features.times import parse_times
from recsys.online import Ranker, Rows
from recsys.online.plan import ColumnKind
from service.errors import invalid
from service.schemas import Context, ContextValue

__all__ = ["CONTEXT_TYPES", "context_values", "request_rows"]

# JSON types a context column accepts, by how the model reads it (OnlinePlan.kinds): a category
# takes text, integer ids or booleans (compared as their canonical strings), a number takes numbers;
# a column read both ways takes any scalar. null = missing, as in the training data.
CONTEXT_TYPES: dict[ColumnKind, tuple[str, ...]] = {
    "text": ("string", "integer", "boolean", "null"),
    "number": ("number", "null"),
    "time": ("number", "string", "null"),  # unix seconds or ISO-8601 (recsys.features.times)
    "raw": ("string", "number", "boolean", "null"),
}


_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,), "null": (type(None),)}
_ACCEPTED = {kind: frozenset(t for name in names for t in _PYTHON_TYPES[name]) for kind, names in CONTEXT_TYPES.items()}


def context_values(ranker: Ranker, contexts: Sequence[Context], field: str) -> list[dict[str, ContextValue]]:
    """The context fields of each row, refusing names the model does not read (typos would otherwise
    silently turn into missing values and cold-start encodings) and values of the wrong type.
    `field` locates row i's context in the body, e.g. "context" or "rows.{}.context". The checks
    run per distinct field name over C-level maps; Python walks the rows only to name a bad one."""
    plan = ranker.plan
    values = [c.values() for c in contexts]
    for name in sorted(set().union(*values)):
        accepted = _ACCEPTED[plan.kind(name)] if name in plan.context_columns else frozenset()
        column = list(map(methodcaller("get", name), values))
        if set(map(type, column)) <= accepted:
            if name in plan.context_columns and plan.kind(name) == "time":
                _check_times(column, name, field)
            continue
        row = next(i for i, v in enumerate(values) if name in v and type(v[name]) not in accepted)
        message = (f"must be one of {', '.join(CONTEXT_TYPES[plan.kind(name)])} for this model" if accepted else
                   f"unknown context field; this model reads {['timestamp', *plan.context_columns]}")
        raise invalid(f"{field.format(row)}.{name}", message)
    return values


def _check_times(column: list[ContextValue], name: str, field: str) -> None:
    """A context time column parses as the offline loader parses it, or the row is a 422."""
    _, bad = parse_times(np.array(column, dtype=object))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise invalid(f"{field.format(row)}.{name}",
                      f"{column[row]!r} is not a time (fix: unix seconds or ISO-8601 such as 2026-01-01T12:00:00Z)")


class _RowLike(Protocol):
    user_id: str
    item_id: str
    context: Context


def request_rows(ranker: Ranker, records: Sequence[_RowLike], field: str) -> Rows:
    """(user, item, context) records of a /v1/score or /v1/events body as the ranker's Rows; a
    missing context timestamp means now. `field` names the list in the body, for error messages."""
    contexts = context_values(ranker, [r.context for r in records], f"{field}.{{}}.context")
    now = int(time.time())
    return Rows.from_records(
        [r.user_id for r in records], [r.item_id for r in records],
        [now if r.context.timestamp is None else r.context.timestamp for r in records],
        contexts, ranker.plan.context_columns)
