"""Pages and static files, and the headers that protect them.

Served from ``web/``: the embeddable widget (``/widget.js``), the agent console (``/agent/``) and, in
demo mode, a demo page that embeds the widget (``/demo``). Every response gets ``nosniff`` and a
referrer policy; pages get a Content-Security-Policy that allows only our own origin.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from server import links
from server.appkeys import DEMO_PAGE, SETTINGS
from server.errors import ApiError

WEB_ROOT = Path(__file__).resolve().parent.parent / "web"

_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def page_csp(origin: str) -> str:
    parts = urlsplit(origin)
    ws_scheme = "wss" if parts.scheme == "https" else "ws"
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "media-src 'self' blob:",
            f"connect-src 'self' {ws_scheme}://{parts.netloc}",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


@web.middleware
async def security_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    response = await handler(request)
    if isinstance(response, web.WebSocketResponse):
        return response
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if response.content_type == "text/html":
        response.headers.setdefault("Content-Security-Policy", page_csp(request.app[SETTINGS].origin))
        response.headers.setdefault("X-Frame-Options", "DENY")
    return response


@web.middleware
async def csrf_guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Refuse state-changing requests a browser sends from another site (ASVS 3.5).

    Browsers send ``Origin`` on every cross-origin request and on same-origin POSTs, and
    ``Sec-Fetch-Site`` on every request; the session cookie is also ``SameSite=Strict``. A request
    with neither header does not come from a browser, so it carries no ambient credentials to abuse.
    """
    # The widget's own routes are used cross-origin by design and never with a cookie; their
    # handlers check the button's allowed origins instead.
    if (
        request.method in _UNSAFE_METHODS
        and request.path.startswith("/api/")
        and not request.path.startswith("/api/v1/widget/")
    ):
        origin = request.headers.get("Origin")
        fetch_site = request.headers.get("Sec-Fetch-Site")
        if origin is not None and origin not in request.app[SETTINGS].origins:
            raise ApiError(403, "cross_origin", "cross-origin requests may not change anything")
        if origin is None and fetch_site not in (None, "same-origin", "none"):
            raise ApiError(403, "cross_origin", "cross-site requests may not change anything")
    return await handler(request)


async def _file(path: Path, content_type: str, extra: dict[str, str] | None = None) -> web.FileResponse:
    headers = {"Content-Type": content_type, "Cache-Control": "no-cache"}
    headers.update(extra or {})
    return web.FileResponse(path, headers=headers)


async def widget_js(request: web.Request) -> web.StreamResponse:
    # Loaded by other sites' pages: allow cross-origin embedding of this one resource.
    return await _file(
        WEB_ROOT / "widget" / "widget.js",
        "text/javascript",
        {"Cross-Origin-Resource-Policy": "cross-origin"},
    )


async def agent_page(request: web.Request) -> web.StreamResponse:
    return await _file(WEB_ROOT / "agent" / "index.html", "text/html")


def render_demo_page(button_key: str) -> str:
    """The demo page embedding the widget for ``button_key`` (read once, at start)."""
    template = (WEB_ROOT / "demo" / "index.html").read_text(encoding="utf-8")
    return template.replace("{{BUTTON_KEY}}", html.escape(button_key))


async def admin_page(request: web.Request) -> web.StreamResponse:
    return await _file(WEB_ROOT / "admin" / "index.html", "text/html")


async def call_link_page(request: web.Request) -> web.Response:
    """``/call/{token}``: the page a customer opens from an agent's call link; the widget in it
    calls that agent (whether the link still works is the widget's first question)."""
    token = request.match_info["token"]
    if not links.TOKEN.match(token):
        raise web.HTTPNotFound()
    template = (WEB_ROOT / "call" / "index.html").read_text(encoding="utf-8")
    return web.Response(
        text=template.replace("{{LINK_TOKEN}}", html.escape(token)),
        content_type="text/html",
        # The token is a capability: keep it out of caches and out of any Referer.
        headers={"Cache-Control": "no-store"},
    )


async def demo_page(request: web.Request) -> web.Response:
    page = request.app.get(DEMO_PAGE)
    if page is None:
        raise web.HTTPNotFound()
    return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-store"})


async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/agent/")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", root)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/widget.js", widget_js)
    app.router.add_get("/agent/", agent_page)
    app.router.add_static("/agent/static/", WEB_ROOT / "agent", show_index=False, follow_symlinks=False)
    app.router.add_get("/admin/", admin_page)
    app.router.add_static("/admin/static/", WEB_ROOT / "admin", show_index=False, follow_symlinks=False)
    app.router.add_get("/demo", demo_page)
    app.router.add_get("/call/{token}", call_link_page)
    app.router.add_static("/call/static/", WEB_ROOT / "call", show_index=False, follow_symlinks=False)
