"""The relay's few error types. Each carries the HTTP status it maps to at the one edge that answers."""

from __future__ import annotations


class RelayError(Exception):
    """Base error: ``str(err)`` is safe to show to the person who caused it."""

    status = 500

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class BadRequest(RelayError):
    """Malformed input from a visitor or an SSH client."""

    status = 400


class Unauthorized(RelayError):
    """No valid credential."""

    status = 401


class Forbidden(RelayError):
    """A valid credential that is not allowed here, or a refused claim."""

    status = 403


class NotFound(RelayError):
    status = 404


class Conflict(RelayError):
    """A name, user or key that already exists."""

    status = 409


class TooManyRequests(RelayError):
    status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServiceUnavailable(RelayError):
    """A capacity limit was reached; the visitor may retry after ``retry_after`` seconds."""

    status = 503

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BadGateway(RelayError):
    """The tunnel is offline or its backend misbehaved."""

    status = 502


class StoreError(RelayError):
    """The data directory or its database cannot be used; the relay must not start."""
