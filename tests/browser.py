"""Driving the real pages in headless Chromium: launch options, a host site, probes.

The host site plays a customer's website: a page on a different origin (another port of 127.0.0.1)
that embeds the widget under a strict Content-Security-Policy allowing only the widget's script and
the call server's origin, so a test passing there proves the widget needs nothing else.
"""

from __future__ import annotations

import html
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, Page, Playwright

from server import auth
from storage.db import Database
from tests.conftest import AGENT_PASSWORD

CHROMIUM = Path("/usr/bin/chromium")

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-loopback-in-peer-connection",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]
# Grants every microphone request without a prompt; "=deny" refuses them (getUserMedia rejects with
# NotAllowedError, as when a user blocks the microphone).
GRANT_MICROPHONE = "--use-fake-ui-for-media-stream"
DENY_MICROPHONE = "--use-fake-ui-for-media-stream=deny"

# Keeps every RTCPeerConnection a page creates, so tests can read its getStats(), and every CSP
# violation, so tests can assert there were none.
PROBES = """
(() => {
  const Native = window.RTCPeerConnection;
  const pcs = [];
  Object.defineProperty(window, "__pcs", { value: pcs });
  window.RTCPeerConnection = class extends Native {
    constructor(...args) { super(...args); pcs.push(this); }
  };
  const violations = [];
  Object.defineProperty(window, "__cspViolations", { value: violations });
  document.addEventListener("securitypolicyviolation", (e) => {
    violations.push(`${e.violatedDirective} ${e.blockedURI}`);
  });
})();
"""

AUDIO_STATS = """
async () => {
  let packets = 0, energy = 0, connections = 0;
  for (const pc of window.__pcs) {
    if (pc.connectionState === "closed") continue;
    connections += 1;
    const stats = await pc.getStats();
    stats.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "audio") {
        packets += s.packetsReceived || 0;
        energy += s.totalAudioEnergy || 0;
      }
    });
  }
  return { packets, energy, connections };
}
"""


def require_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the browser tests need Chromium (apt-get install chromium)")


async def launch(playwright: Playwright, *, microphone: bool = True) -> Browser:
    require_chromium()
    return await playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        headless=True,
        args=[*ARGS, GRANT_MICROPHONE if microphone else DENY_MICROPHONE],
    )


async def new_context(browser: Browser) -> BrowserContext:
    context = await browser.new_context()
    await context.add_init_script(PROBES)
    return context


@dataclass(frozen=True)
class Org:
    """An organisation with one agent and one button usable from ``origin``."""

    organisation_id: uuid.UUID
    agent_email: str
    agent_password: str
    agent_name: str
    button_key: str
    button_name: str


async def make_org(
    database: Database,
    origin: str,
    *,
    ring_timeout_s: int | None = None,
    recording_notice: str | None = None,
    **button_settings: Any,
) -> Org:
    """With ``recording_notice``, the button records its calls and tells visitors so."""
    organisation = await database.accounts.create_organisation(f"Browser org {uuid.uuid4().hex[:6]}")
    button = await database.buttons.create(
        organisation.id,
        name="Teapot support",
        allowed_origins=[origin],
        ring_timeout_s=ring_timeout_s,
        recording_enabled=recording_notice is not None,
        recording_notice=recording_notice,
        **button_settings,
    )
    email = f"agent-{uuid.uuid4().hex[:8]}@example.test"
    await database.accounts.create_user(
        organisation.id,
        email=email,
        display_name="Ada Agent",
        role="agent",
        password_hash=await auth.hash_password(AGENT_PASSWORD),
    )
    return Org(
        organisation_id=organisation.id,
        agent_email=email,
        agent_password=AGENT_PASSWORD,
        agent_name="Ada Agent",
        button_key=button.public_key,
        button_name=button.name,
    )


def host_csp(server_url: str) -> str:
    """The strictest policy a customer's page can have and still embed the widget."""
    ws_url = server_url.replace("http", "ws", 1)
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {server_url}",
            f"connect-src {server_url} {ws_url}",
            "media-src blob:",
        ]
    )


class HostSite:
    """A customer's website on its own origin; ``/shop/{key}`` embeds the widget for ``key``."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self._runner: web.AppRunner | None = None
        self.origin = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/shop/{key}", self._page)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server: Any = site._server
        port = server.sockets[0].getsockname()[1]
        self.origin = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, key: str) -> str:
        return f"{self.origin}/shop/{key}"

    async def _page(self, request: web.Request) -> web.Response:
        key = html.escape(request.match_info["key"])
        src = html.escape(f"{self.server_url}/widget.js")
        body = (
            "<!doctype html><html lang=en><head><meta charset=utf-8><title>Teapot shop</title>"
            f'<script src="{src}" data-button="{key}" async></script></head>'
            "<body><h1>Teapot shop</h1><p>Questions? Call us.</p></body></html>"
        )
        return web.Response(
            text=body,
            content_type="text/html",
            headers={"Content-Security-Policy": host_csp(self.server_url)},
        )


async def audio_stats(page: Page) -> dict[str, float]:
    stats: dict[str, float] = await page.evaluate(AUDIO_STATS)
    return stats


async def csp_violations(page: Page) -> list[str]:
    violations: list[str] = await page.evaluate("() => [...window.__cspViolations]")
    return violations
