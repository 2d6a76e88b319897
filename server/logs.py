"""structlog configuration and the event names the server logs.

Event names are constants so that a grep for one finds every place that emits it (``media`` and
``storage`` keep their own, e.g. ``media.leg.LEG_STATE``, as they cannot import ``server``). Never log SDP bodies,
ICE credentials, tokens, passwords, keys or visitors' personal data.
"""

from __future__ import annotations

import logging
import sys

import structlog

SERVER_STARTED = "server.started"
SERVER_STOPPED = "server.stopped"
SOCKET_OPENED = "socket.opened"
SOCKET_CLOSED = "socket.closed"
SOCKET_REJECTED = "socket.rejected"
MESSAGE_REJECTED = "socket.message_rejected"
CALL_STATE = "call.state"
AGENT_PRESENCE = "agent.presence"
AGENT_RUNG = "agent.rung"
LOGIN = "auth.login"
LOGIN_FAILED = "auth.login_failed"
LOGOUT = "auth.logout"
TASK_FAILED = "task.failed"
SERVER_DRAINING = "server.draining"
SESSION_CHECK_FAILED = "auth.session_check_failed"
WEBHOOK_DELIVERED = "webhook.delivered"
WEBHOOK_FAILED = "webhook.failed"
WEBHOOK_CLAIM_FAILED = "webhook.outbox_failed"
GC_AUDIT = "gc.audit"


def configure(level: str = "info", fmt: str = "console") -> None:
    """Route stdlib logging and structlog through one renderer."""
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        # Plain tracebacks: rich's (with every frame's locals) take tens of milliseconds of the event
        # loop each, which a failure repeated every second (a database outage) turns into a stall.
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            # A line below the level is dropped before anything is done with it: the ring path logs
            # at debug (every agent rung, every presence flip), thousands of lines a busy minute.
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if fmt == "json" else _identity,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiortc and aioice log every packet at debug and a few internals at info.
    for noisy in ("aiortc", "aioice", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def _identity(
    logger: structlog.typing.WrappedLogger, name: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    return event
