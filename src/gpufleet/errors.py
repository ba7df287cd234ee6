"""Domain errors raised below the API; mapped to problem+json in one place (api/errors.py)."""

from __future__ import annotations


class GpufleetError(Exception):
    """Base of every domain error; ``str(err)`` is the human message.

    A subclass states its HTTP status and problem title in its class line:
    ``class NotFound(GpufleetError, status=404, title="Not Found")``; what it leaves out it inherits.
    """

    status = 500
    title = "Internal Server Error"

    def __init_subclass__(cls, *, status: int | None = None, title: str | None = None, **kw: object) -> None:
        super().__init_subclass__(**kw)
        if status is not None:
            cls.status = status
        if title is not None:
            cls.title = title

    def __init__(self, message: str, **extra: object) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class NotFound(GpufleetError, status=404, title="Not Found"): ...


class Conflict(GpufleetError, status=409, title="Conflict"): ...


class InvalidTransition(Conflict, title="Invalid State Transition"): ...


class StaleAttempt(Conflict, title="Stale Attempt"): ...


class Forbidden(GpufleetError, status=403, title="Forbidden"): ...


class Unauthorized(GpufleetError, status=401, title="Unauthorized"): ...


class InvalidInput(GpufleetError, status=422, title="Unprocessable Content"):
    @classmethod
    def at(cls, field: str, message: str) -> InvalidInput:
        """Bad input in ``field``: the message reads "field: message", and the problem names the field."""
        return cls(f"{field}: {message}", field=field)


class BudgetExceeded(GpufleetError, status=402, title="Budget Exceeded"):
    """A hard budget has no room for this work; the extras name the budget and the amounts."""


class RateLimited(GpufleetError, status=429, title="Too Many Requests"):
    def __init__(self, message: str, *, retry_after: int, **extra: object) -> None:
        super().__init__(message, **extra)
        self.retry_after = retry_after


class ConfigurationError(GpufleetError):
    """The installation is misconfigured; the message says what to change."""


class DatabaseUnavailable(GpufleetError, status=503, title="Service Unavailable"): ...


class PayloadTooLarge(GpufleetError, status=413, title="Content Too Large"): ...
