"""Request checks that depend on settings or on the loaded artifact, raised as field-named 422s."""

from __future__ import annotations

import time
from typing import Protocol, Sequence

from recsys.online import Ranker, Rows
from service.errors import invalid
from service.schemas import Context, ContextValue

__all__ = ["context_values", "check_size", "request_rows"]


def check_size(field: str, n: int, limit: int, env: str) -> None:
    if n > limit:
        raise invalid(field, f"at most {limit} allowed, got {n} (fix: send fewer, or raise {env})")


def context_values(ranker: Ranker, contexts: Sequence[Context], field: str) -> list[dict[str, ContextValue]]:
    """The context fields of each row, refusing names the model does not read (typos would otherwise
    silently turn into missing values and cold-start encodings). `field` locates row i's context in
    the body, e.g. "context" or "rows.{}.context"."""
    allowed = ranker.plan.context_columns
    values = [c.values() for c in contexts]
    unknown = set().union(*values) - set(allowed)
    if unknown:
        row = next(i for i, v in enumerate(values) if unknown & set(v))
        name = sorted(unknown & set(values[row]))[0]
        raise invalid(f"{field.format(row)}.{name}",
                      f"unknown context field; this model reads {['timestamp', *allowed]}")
    return values


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
