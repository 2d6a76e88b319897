"""One error model for HTTP: JSON bodies ``{"error": code, "message": text}``.

Handlers raise :class:`ApiError` for client mistakes; the middleware turns it, aiohttp's own HTTP
exceptions, and any unexpected exception into that shape. Unexpected exceptions are logged and
answered with a generic message, never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from storage.outbox import transient

log = structlog.get_logger(__name__)

REQUEST_FAILED = "http.request_failed"


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def json_error(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"error": code, "message": message}),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


_GENERIC = {
    400: ("bad_request", "the request is malformed"),
    401: ("not_authenticated", "log in first"),
    403: ("forbidden", "not allowed"),
    404: ("not_found", "no such resource"),
    405: ("method_not_allowed", "method not allowed"),
    413: ("too_large", "the request body is too large"),
}


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return json_error(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code, message = _GENERIC.get(exc.status, ("error", exc.reason))
        return json_error(exc.status, code, message)
    except Exception as exc:
        if transient(exc):
            # The database is away (docs/operations.md, "Database outage"): calls in progress go
            # on; what needs the database is refused, to be tried again shortly.
            log.warning(REQUEST_FAILED, path=request.path, method=request.method, error=repr(exc))
            return json_error(503, "unavailable", "the service is briefly unavailable; try again in a moment")
        log.exception(REQUEST_FAILED, path=request.path, method=request.method)
        return json_error(500, "internal", "the server failed to handle this request")
