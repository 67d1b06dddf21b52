"""One error family for the service, mapped to gRPC status codes in one place.

Domain code raises a :class:`LiveRecError` subclass saying what went wrong; the
server interceptor (:mod:`service.interceptors`) calls :func:`status_of` once per
failed call. Anything else becomes ``INTERNAL`` with a generic message and a log
line carrying the traceback, which never reaches the caller.
"""

from __future__ import annotations

import logging

import grpc

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error; details are in the server log"


class LiveRecError(Exception):
    """Base of the errors the service means to report to a caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(LiveRecError):
    """A request field is missing or malformed; the message starts with the field name."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFound(LiveRecError):
    code = grpc.StatusCode.NOT_FOUND


class Overloaded(LiveRecError):
    """Past the concurrency limit: refused at once rather than queued."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(LiveRecError):
    """Starting, shutting down, or a dependency is down with no fallback."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(LiveRecError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unimplemented(LiveRecError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Upstream(LiveRecError):
    """A call forwarded to the aggregator failed there: its code and message pass through."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def status_of(exc: BaseException, method: str) -> tuple[grpc.StatusCode, str]:
    """The status code and message a caller gets for ``exc`` raised by ``method``."""
    if isinstance(exc, LiveRecError):
        return exc.code, exc.message
    log.error("unexpected error in %s", method, exc_info=exc)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE
