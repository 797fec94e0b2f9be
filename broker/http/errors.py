"""The edge where errors become HTTP responses: one middleware, one code-to-status table.

Handlers raise :mod:`millstream.errors` classes (or let storage raise them); this middleware
renders every failure as ``{"error": {"code", "message"}}`` with the status below, including
aiohttp's own refusals (unknown route, wrong method, body too large), so a client never has to
parse HTML or guess. An unexpected exception is logged and answered 500 ``internal_error``.
A misdirected request (421 ``not_leader``, ``not_coordinator``) also names the broker to go
to: ``{"error": {"code", "message", "broker": {"id", "url"}}}``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from millstream import errors

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The most specific class wins: lookups walk each error's MRO.
STATUS: dict[type[errors.MillstreamError], int] = {
    errors.InvalidRequest: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.BodyTooLarge: 413,
    errors.RecordTooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.MethodNotAllowed: 405,
    errors.NotFound: 404,
    errors.TopicExists: 409,
    errors.GroupConflict: 409,
    errors.ManagedByOperator: 409,
    errors.StaleEpoch: 409,
    errors.MoveConflict: 409,
    errors.Misdirected: 421,
    errors.OffsetOutOfRange: 416,
    errors.StorageError: 503,
    errors.PartitionMoving: 503,
    errors.CoordinatorNotAvailable: 503,
    errors.BrokerUnavailable: 503,
    errors.RequestTimedOut: 504,
    errors.MillstreamError: 500,
}


def status_for(error: errors.MillstreamError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_response(error: errors.MillstreamError) -> web.Response:
    detail: dict[str, object] = {"code": error.code, "message": error.message}
    if isinstance(error, errors.Misdirected) and error.broker is not None:
        detail["broker"] = {"id": error.broker.id, "url": error.broker.url}
    response = web.json_response({"error": detail}, status=status_for(error))
    if isinstance(error, errors.Unauthorized):
        response.headers["WWW-Authenticate"] = 'Bearer realm="millstream-admin"'
    return response


def _from_http_exception(exc: web.HTTPException) -> errors.MillstreamError:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return errors.BodyTooLarge(exc.text or "request body is too large")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return errors.MethodNotAllowed(f"{exc.method} is not allowed here; use {allowed}")
    if isinstance(exc, web.HTTPNotFound):
        return errors.NotFound("no such route; see GET /v1/openapi.json")
    return errors.InvalidRequest(exc.reason)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except errors.MillstreamError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(_from_http_exception(exc))
        # A 405 must say what is allowed (RFC 9110, 15.5.6); aiohttp put it on the exception.
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return error_response(errors.MillstreamError("unexpected broker error; see broker log"))
