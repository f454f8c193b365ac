"""Request and response bodies: strict, bounded, and published as they are enforced.

Strict: a JSON value is never coerced into another type (`k: "10"`, `k: true`, `candidates: [0]`,
`timestamp: true` and `explain: "yes"` are 422s, as the schema says). Bounded: every string has a
maximum length and every list a maximum size, so the work a request can cause is bounded before
it is parsed further. The limits that come from settings (candidates, rows, events, k) are put into
the models by `bounded_requests` when the app is created, so the OpenAPI schema states the limits
that this process enforces. The context fields that the loaded model reads are published by
`service.openapi` (they change on reload) and checked by `service.validation`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    WithJsonSchema,
    create_model,
    model_validator,
)

from recsys.features.times import parse_times
from recsys.online import Degraded

__all__ = [
    "MAX_TEXT",
    "MAX_CONTEXT_FIELDS",
    "Degraded",
    "Context",
    "ContextValue",
    "RecommendRequest",
    "RecommendResponse",
    "ScoredItem",
    "ScoreRow",
    "ScoreRequest",
    "ScoreResponse",
    "Event",
    "EventsRequest",
    "Label",
    "LabelsRequest",
    "EventsResponse",
    "ReloadRequest",
    "ReloadResponse",
    "Readiness",
    "ErrorBody",
    "Requests",
    "bounded_requests",
]

MAX_TEXT = 256  # characters of any id or context string
MAX_CONTEXT_FIELDS = 64  # names in one context object (the schema lists the model's few)
MAX_PATH = 1024  # characters of a reload path
MAX_TIMESTAMP = 32_503_680_000  # year 3000 in unix seconds


def _unicode(value: str) -> str:
    """A lone surrogate (JSON '\\ud800') is a Python str but not text: no UTF-8 encoding exists for
    it, so a store key or a file path built from it fails deep inside. Refused here instead."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (a lone surrogate such as \\ud800 is not)") from None
    return value


def _integral(value: Any) -> Any:
    """JSON has one number type: 9.0 is an integer for JSON Schema, so it is accepted as 9; 9.5,
    "9" and true stay refused by the strict integer that follows."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _time_value(value: Any) -> Any:
    """A JSON number of unix seconds (fractions floored) or an ISO-8601 string → unix seconds by the
    offline loader's parser (`recsys.features.times`): the same instant gives the same features
    whichever way it is written. Anything else is left to the strict integer, which refuses it."""
    if isinstance(value, float) and math.isfinite(value):
        return math.floor(value)
    if not isinstance(value, str):
        return value
    seconds, bad = parse_times(np.array([value[:64]], dtype=object))
    if bad[0] or np.isnan(seconds[0]) or value.strip().lstrip("+-").replace(".", "", 1).isdigit():
        raise ValueError("must be unix seconds (a JSON number) or an ISO-8601 time such as 2026-01-01T12:00:00Z")
    return int(seconds[0])


# ISO times from 1971 to 2998 (any offset keeps them between 1970 and the year 3000)
_YEARS = r"^(197[1-9]|19[89][0-9]|2[0-8][0-9][0-9]|29[0-8][0-9])-"
Int = Annotated[int, BeforeValidator(_integral)]
# constraints before the validator, or pydantic publishes them as "ge"/"le" instead of minimum/maximum
Timestamp = Annotated[int, Field(ge=0, le=MAX_TIMESTAMP), BeforeValidator(_time_value), WithJsonSchema({"anyOf": [
    {"type": "number", "minimum": 0, "maximum": MAX_TIMESTAMP},
    {"type": "string", "format": "date-time", "maxLength": 64, "pattern": _YEARS}]})]
# constraints inside the type, so that they are published inside a nullable field's anyOf too
LabelValue = Annotated[int, Field(ge=0, le=1), BeforeValidator(_integral)]
Text = Annotated[StrictStr, Field(min_length=1, max_length=MAX_TEXT), AfterValidator(_unicode)]
ContextText = Annotated[StrictStr, Field(max_length=MAX_TEXT), AfterValidator(_unicode)]
ContextValue = ContextText | StrictInt | StrictFloat | StrictBool | None


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Context(BaseModel):
    """Where and when the impression happens. `timestamp` (unix seconds or ISO-8601, default: now) drives the
    hour / weekday / age features and the statistics' windows; the other fields are the loaded
    model's context columns (listed, with their types, in the published schema). Unknown fields
    are refused, so typos do not silently become missing values."""

    model_config = ConfigDict(extra="allow", strict=True)

    __pydantic_extra__: dict[str, ContextValue]  # extra fields must be bounded JSON scalars

    timestamp: Timestamp | None = Field(
        None, description="unix seconds (fractions floored) or ISO-8601 such as 2026-01-01T12:00:00Z (no offset "
                          "= UTC); default now")

    @model_validator(mode="before")
    @classmethod
    def _few_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            if len(data) > MAX_CONTEXT_FIELDS:
                raise ValueError(f"at most {MAX_CONTEXT_FIELDS} fields, got {len(data)}")
            long = next((k for k in data if not isinstance(k, str) or len(k) > MAX_TEXT), None)
            if long is not None:
                raise ValueError(f"field names are at most {MAX_TEXT} characters")
        return data

    def values(self) -> dict[str, ContextValue]:
        return dict(self.model_extra or {})


class RecommendRequest(_Body):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"user_id": "u1", "k": 5},
        {"user_id": "u1", "context": {"timestamp": 1767225769}, "candidates": ["v1", "v2", "v3"], "k": 2}]})

    user_id: Text
    context: Context = Field(default_factory=Context)
    candidates: list[Text] | None = Field(
        None, min_length=1, description="item ids to rank (a repeated id counts once, at its first position); "
                                        "default: the popular items")
    k: Int = Field(10, ge=1, description="how many items to return")
    exclude_seen: bool = Field(True, description="without candidates: leave out the items the user engaged with")


class ScoredItem(BaseModel):
    item_id: str
    score: float = Field(description="click probability")
    source: Literal["ann", "popular", "given"] = Field(
        "given", description="where the candidate came from: the retrieval index, the popular items, the request")


class RecommendResponse(BaseModel):
    items: list[ScoredItem] = Field(description="best first")
    model_version: str
    took_ms: float
    degraded: Degraded | None = Field(
        description="null when served from the store's features; else why cold features were used (docs/service.md)")


class ScoreRow(_Body):
    user_id: Text
    item_id: Text
    context: Context = Field(default_factory=Context)


class ScoreRequest(_Body):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"rows": [{"user_id": "u1", "item_id": "v1"}, {"user_id": "u2", "item_id": "v1",
                                                      "context": {"timestamp": 1767225769}}]}]})

    rows: list[ScoreRow] = Field(..., min_length=1)
    explain: StrictBool = Field(False, description="also return the raw feature values each row was scored with; "
                                                   "they include stored user data, so this needs the admin token")


class ScoreResponse(BaseModel):
    scores: list[float]
    model_version: str
    took_ms: float
    degraded: Degraded | None = Field(description="as in /v1/recommendations")
    features: dict[str, list[str | float | int | None]] | None = Field(
        None, description="with `explain: true` only: raw column → one value per row")


EventId = Annotated[StrictStr, Field(min_length=1, max_length=MAX_TEXT, pattern=r"^[\x21-\x7e]+$")]


class Event(_Body):
    event_id: EventId = Field(description="unique id of this impression (printable ASCII, no spaces): a second "
                                          "event with the same id within RECSYS_EVENTS_RETENTION_S is a "
                                          "duplicate; a late label names it as `impression_id`")
    user_id: Text
    item_id: Text
    label: LabelValue | None = Field(None, description="1 = click / watch, 0 = shown only; "
                                                       "omitted = posted later by POST /v1/labels")
    context: Context = Field(default_factory=Context)


class EventsRequest(_Body):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"events": [{"event_id": "imp-1", "user_id": "u1", "item_id": "v1", "label": 1,
                     "context": {"timestamp": 1767225769}},
                    {"event_id": "imp-2", "user_id": "u1", "item_id": "v2", "context": {"timestamp": 1767225769}}]}]})

    events: list[Event] = Field(..., min_length=1)


class Label(_Body):
    impression_id: EventId = Field(description="the `event_id` of the impression, posted without a label")
    label: LabelValue = Field(description="1 = click / watch, 0 = shown only")
    timestamp: Timestamp | None = Field(None, description="when the label became known (unix seconds; "
                                                          "default now): the service counts it from its arrival")


class LabelsRequest(_Body):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"labels": [{"impression_id": "imp-2", "label": 1, "timestamp": 1767226369}]}]})

    labels: list[Label] = Field(..., min_length=1)


class EventsResponse(BaseModel):
    events: int = Field(description="events (labels) in the request")
    applied: int = Field(description="counted now")
    duplicates: int = Field(description="already applied within RECSYS_EVENTS_RETENTION_S: unchanged")
    unknown: int = Field(description="events: an item neither the served model nor the store knows; labels: no "
                                     "impression waiting for a label under that id. Not counted")
    counters_updated: int
    model_version: str


# No NUL (no filesystem takes it); anything else the filesystem refuses (a part over 255 bytes) is a 409.
PathText = Annotated[StrictStr, Field(min_length=1, max_length=MAX_PATH, pattern=r"^[^\x00]+$"),
                     AfterValidator(_unicode)]


class ReloadRequest(_Body):
    model_dir: PathText | None = Field(
        None, description="artifact folder below RECSYS_MODELS_ROOT (absolute, or relative to it); "
                          "default: the configured RECSYS_MODEL_DIR")


class ReloadResponse(BaseModel):
    model_version: str
    feature_version: str
    previous_version: str
    took_ms: float


class DefaultCandidates(BaseModel):
    items: int
    source: Literal["artifact", "store"] = Field(alias="from")


class Readiness(BaseModel):
    status: Literal["ready", "degraded"]
    degraded: Degraded | None
    model_version: str
    feature_version: str
    store: Literal["redis", "embedded", "other"]
    default_candidates: DefaultCandidates
    details: dict[str, Any] | None = Field(None, description="with the admin token only: store address, "
                                                             "error, model folder, materialize marker")


class FieldError(BaseModel):
    field: str
    message: str


class ErrorDetail(BaseModel):
    code: str
    message: str
    fields: list[FieldError] | None = None


class ErrorBody(BaseModel):
    """Every refusal: `{"error": {"code", "message", "fields"?}}` (service/errors.py)."""

    error: ErrorDetail


@dataclass(frozen=True)
class Requests:
    """One app's request models, with the limits of its settings in their schema."""

    recommend: type[RecommendRequest]
    score: type[ScoreRequest]
    events: type[EventsRequest]
    labels: type[LabelsRequest]


def bounded_requests(max_candidates: int, max_k: int, max_events: int) -> Requests:
    """The request models with this app's limits: enforced by validation (422 naming the field)
    and published in the OpenAPI schema by the same `Field`."""
    fix = "fix: send fewer, or raise {}"
    return Requests(
        recommend=create_model(
            "RecommendRequest", __base__=RecommendRequest,
            candidates=(list[Text] | None, Field(
                None, min_length=1, max_length=max_candidates,
                description=f"item ids to rank, at most {max_candidates} ({fix.format('RECSYS_MAX_CANDIDATES')}); "
                            "a repeated id counts once, at its first position; default: the popular items")),
            k=(Int, Field(10, ge=1, le=max_k, description=f"how many items to return, at most {max_k}"))),
        score=create_model(
            "ScoreRequest", __base__=ScoreRequest,
            rows=(list[ScoreRow], Field(..., min_length=1, max_length=max_candidates,
                                        description=f"at most {max_candidates} rows (RECSYS_MAX_CANDIDATES)"))),
        events=create_model(
            "EventsRequest", __base__=EventsRequest,
            events=(list[Event], Field(..., min_length=1, max_length=max_events,
                                       description=f"at most {max_events} events (RECSYS_MAX_EVENTS)"))),
        labels=create_model(
            "LabelsRequest", __base__=LabelsRequest,
            labels=(list[Label], Field(..., min_length=1, max_length=max_events,
                                       description=f"at most {max_events} labels (RECSYS_MAX_EVENTS)"))),
    )
