"""Request and response bodies. Static bounds live here; bounds that come from settings (max
candidates, max k) and from the artifact (which context fields exist) are checked in the routes
with the same 422 shape, so every refusal names its field."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

__all__ = [
    "Context",
    "RecommendRequest",
    "RecommendResponse",
    "ScoredItem",
    "ScoreRow",
    "ScoreRequest",
    "ScoreResponse",
    "Event",
    "EventsRequest",
    "EventsResponse",
    "ReloadRequest",
    "ReloadResponse",
]

Id = Annotated[str, Field(min_length=1, max_length=256)]
ContextValue = StrictStr | StrictInt | StrictFloat | StrictBool | None


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


class Context(BaseModel):
    """Where and when the impression happens. `timestamp` (unix seconds, default: now) drives the
    hour / weekday / age features and the statistics' windows; every other field must be one of the
    model's context columns (e.g. `device`), unknown ones are refused so typos do not go unseen."""

    model_config = ConfigDict(extra="allow")

    __pydantic_extra__: dict[str, ContextValue]  # extra fields must be JSON scalars

    timestamp: int | None = Field(None, ge=0, le=32_503_680_000, description="unix seconds; default now")

    def values(self) -> dict[str, ContextValue]:
        return dict(self.model_extra or {})


class RecommendRequest(_Body):
    user_id: Id
    context: Context = Field(default_factory=Context)
    candidates: list[Id] | None = Field(None, min_length=1, description="item ids to rank; default: popular items")
    k: int = Field(10, ge=1)


class ScoredItem(BaseModel):
    item_id: str
    score: float


class RecommendResponse(BaseModel):
    items: list[ScoredItem]
    model_version: str
    took_ms: float


class ScoreRow(_Body):
    user_id: Id
    item_id: Id
    context: Context = Field(default_factory=Context)


class ScoreRequest(_Body):
    rows: list[ScoreRow] = Field(..., min_length=1)
    explain: bool = Field(False, description="also return the raw feature values each row was scored with")


class ScoreResponse(BaseModel):
    scores: list[float]
    model_version: str
    took_ms: float
    features: dict[str, list[str | float | int | None]] | None = None


class Event(_Body):
    user_id: Id
    item_id: Id
    label: Annotated[int, Field(strict=True, ge=0, le=1, description="1 = click / watch, 0 = shown only")]
    context: Context = Field(default_factory=Context)


class EventsRequest(_Body):
    events: list[Event] = Field(..., min_length=1)


class EventsResponse(BaseModel):
    events: int
    counters_updated: int
    model_version: str


class ReloadRequest(_Body):
    model_dir: str | None = Field(None, description="artifact folder; default: the configured RECSYS_MODEL_DIR")


class ReloadResponse(BaseModel):
    model_version: str
    feature_version: str
    previous_version: str
    took_ms: float
