"""One error hierarchy for the library, so the CLI and the service can map each kind to an exit code
or an HTTP status in a single place instead of catching strings."""

from __future__ import annotations

__all__ = [
    "RecsysError",
    "SpecError",
    "DataError",
    "NotFittedError",
    "ArtifactError",
    "StoreError",
    "OutputError",
]


class RecsysError(Exception):
    """Base class. `http_status` lets the service map any library error without a lookup table."""

    http_status: int = 500


class SpecError(RecsysError):
    """The feature spec is invalid or does not match the data: the user must edit the spec."""

    http_status = 422


class DataError(RecsysError):
    """Input rows or tables are malformed (missing column, wrong type, empty split)."""

    http_status = 422


class NotFittedError(RecsysError):
    """A transform was used before `fit` (or loaded from a state that lacks its fitted values)."""


class ArtifactError(RecsysError):
    """An artifact is missing, corrupt (hash mismatch) or incompatible with this code."""

    http_status = 409


class StoreError(RecsysError):
    """The online feature store failed (unreachable, timeout)."""

    http_status = 503


class OutputError(RecsysError):
    """An output folder cannot be written safely: it is an input, the working directory or one above
    it, or a folder of files this project did not write (which it never replaces or deletes)."""

    http_status = 409
