"""The widget and the agent console in headless Chromium, through the real server and Postgres.

A visitor page on another origin (with a strict CSP) calls through the widget, an agent answers in
the agent console; the tests assert what each of them sees and that audio reaches both browsers.
Run inside a loopback-only network namespace:

    unshare -n sh -c 'ip link set lo up && .venv/bin/python -m pytest tests/test_browser.py'
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Locator,
    Page,
    Playwright,
    async_playwright,
    expect,
)

from server.app import Running
from storage.calls import CallRecord
from storage.db import Database
from tests.browser import HostSite, Org, audio_stats, csp_violations, launch, make_org, new_context

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]

WAIT_MS = 5000  # one user-visible change
MEDIA_WAIT_MS = 10000  # microphone, ICE gathering and the server's answer


@pytest.fixture
async def playwright() -> AsyncIterator[Playwright]:
    async with async_playwright() as p:
        yield p


@pytest.fixture
async def browser(playwright: Playwright) -> AsyncIterator[Browser]:
    browser = await launch(playwright)
    yield browser
    await browser.close()


@pytest.fixture
async def host_site(server: Running) -> AsyncIterator[HostSite]:
    site = HostSite(server.url)
    await site.start()
    yield site
    await site.stop()


@pytest.fixture
async def org(database: Database, host_site: HostSite) -> Org:
    return await make_org(database, host_site.origin)


def page_errors(page: Page) -> list[str]:
    """Uncaught exceptions and console errors of ``page``, collected from now on."""
    errors: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"console: {message.text}")

    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", console)
    return errors


async def open_agent(context: BrowserContext, server: Running, org: Org) -> Page:
    """The agent console, logged in through its form and available."""
    page = await context.new_page()
    await page.goto(f"{server.url}/agent/")
    await page.get_by_label("Email").fill(org.agent_email)
    await page.get_by_label("Password").fill(org.agent_password)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator("#agent-name")).to_have_text(org.agent_name, timeout=WAIT_MS)
    await expect(page.locator("#presence")).to_have_text("Away", timeout=WAIT_MS)
    await page.get_by_role("button", name="Go available").click()
    await expect(page.locator("#presence")).to_have_text("Available", timeout=MEDIA_WAIT_MS)
    return page


async def open_visitor(context: BrowserContext, host_site: HostSite, org: Org) -> Page:
    page = await context.new_page()
    await page.goto(host_site.url(org.button_key))
    await expect(call_button(page, org)).to_be_visible(timeout=WAIT_MS)
    return page


def call_button(page: Page, org: Org) -> Locator:
    return page.get_by_role("button", name=f"Call {org.button_name}", exact=True)


def widget_status(page: Page) -> Locator:
    # Playwright's CSS engine pierces the widget's open shadow root.
    return page.locator("callbutton-widget .status")


async def assert_audio_arrives(page: Page, who: str) -> None:
    """Inbound audio packets keep arriving on ``page``'s peer connection, and carry sound."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    first = await audio_stats(page)
    while True:
        await asyncio.sleep(0.5)
        now = await audio_stats(page)
        if now["packets"] - first["packets"] >= 50 and now["energy"] > 0:
            break
        if loop.time() > deadline:
            raise AssertionError(f"the {who} receives no audio: {first} then {now}")
    # Still flowing two seconds later (20 ms Opus frames: about 100 packets).
    await asyncio.sleep(2)
    later = await audio_stats(page)
    assert later["packets"] - now["packets"] >= 50, f"{who}: audio stopped: {now} then {later}"
    assert later["energy"] > now["energy"], f"{who}: audio went silent: {now} then {later}"


async def agent_microphone(page: Page) -> list[bool]:
    """Whether the agent's microphone track is sent live (it is disabled outside calls)."""
    enabled: list[bool] = await page.evaluate(
        "() => window.__pcs.filter((pc) => pc.connectionState !== 'closed')"
        ".flatMap((pc) => pc.getSenders()).map((sender) => sender.track.enabled)"
    )
    return enabled


async def received_energy(page: Page, seconds: float) -> float:
    """How much audio energy ``page`` received over ``seconds``."""
    before = await audio_stats(page)
    await asyncio.sleep(seconds)
    return (await audio_stats(page))["energy"] - before["energy"]


async def wait_for_row(database: Database, org: Org, call_id: str, within: float = 5.0) -> CallRecord:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        row = await database.calls.get(org.organisation_id, uuid.UUID(call_id))
        if row is not None and row.state == "ended":
            return row
        if loop.time() > deadline:
            raise AssertionError(f"call {call_id} did not end: {row}")
        await asyncio.sleep(0.05)


async def test_browser_call_end_to_end(
    server: Running, database: Database, browser: Browser, host_site: HostSite, org: Org
) -> None:
    agent_context = await new_context(browser)
    visitor_context = await new_context(browser)
    try:
        agent = await open_agent(agent_context, server, org)
        agent_errors = page_errors(agent)
        visitor = await open_visitor(visitor_context, host_site, org)
        visitor_errors = page_errors(visitor)

        await call_button(visitor, org).click()
        await expect(widget_status(visitor)).to_contain_text("Ringing", timeout=MEDIA_WAIT_MS)

        ring = agent.locator("#rings .ring")
        await expect(ring).to_have_count(1, timeout=WAIT_MS)
        await expect(ring.locator(".ring-button")).to_have_text(org.button_name)
        await expect(ring.locator(".ring-url")).to_have_text(host_site.url(org.button_key))
        await expect(agent.locator("#presence")).to_have_text("Ringing")
        call_id = await ring.get_attribute("data-call-id")
        assert call_id is not None
        assert await agent_microphone(agent) == [False], "the agent's microphone is live before a call"

        await ring.get_by_role("button", name="Accept").click()
        await expect(agent.get_by_role("heading", name="In call")).to_be_visible(timeout=WAIT_MS)
        await expect(agent.locator("#presence")).to_have_text("In a call", timeout=WAIT_MS)
        await expect(widget_status(visitor)).to_have_text("In call", timeout=WAIT_MS)
        visitor_timer = visitor.locator("callbutton-widget .timer")
        await expect(visitor_timer).to_have_text(re.compile(r"^00:0\d$"))
        await expect(ring).to_have_count(0)

        await assert_audio_arrives(visitor, "visitor")
        await assert_audio_arrives(agent, "agent")
        await expect(agent.locator("#call-timer")).not_to_have_text("00:00")
        assert await agent_microphone(agent) == [True]

        # Muting silences the agent for the visitor (after the jitter buffer drains).
        mute = agent.get_by_role("button", name="Mute")
        await mute.click()
        await expect(mute).to_have_attribute("aria-pressed", "true")
        await asyncio.sleep(1)
        assert await received_energy(visitor, 1) < 1e-4, "the visitor still hears a muted agent"
        await mute.click()
        await expect(mute).to_have_attribute("aria-pressed", "false")

        await visitor.get_by_role("button", name="Hang up").click()
        await expect(widget_status(visitor)).to_have_text("Call ended.", timeout=WAIT_MS)
        await expect(agent.locator("#notice")).to_have_text("Call ended (the caller hung up).", timeout=WAIT_MS)
        await expect(agent.locator("#call")).to_be_hidden()
        await expect(agent.locator("#presence")).to_have_text("Available", timeout=WAIT_MS)
        assert await agent_microphone(agent) == [False]

        row = await wait_for_row(database, org, call_id)
        assert (row.end_reason, row.outcome) == ("visitor_hangup", "answered")
        assert row.page_url == host_site.url(org.button_key)

        # The widget worked under the host page's strict CSP, and neither page logged an error.
        assert await csp_violations(visitor) == []
        assert await csp_violations(agent) == []
        assert visitor_errors == [] and agent_errors == []

        # After the call the visitor can go back to the button.
        await visitor.get_by_role("button", name="Close").click()
        await expect(call_button(visitor, org)).to_be_focused()
    finally:
        await visitor_context.close()
        await agent_context.close()


async def test_browser_maximum_wait_says_nobody_answered(
    server: Running, database: Database, browser: Browser, host_site: HostSite
) -> None:
    notice = "Calls are recorded for training. Say so if you object."
    org = await make_org(database, host_site.origin, ring_timeout_s=1, max_queue_wait_s=2, recording_notice=notice)
    agent_context = await new_context(browser)
    visitor_context = await new_context(browser)
    try:
        agent = await open_agent(agent_context, server, org)
        visitor = await open_visitor(visitor_context, host_site, org)

        await call_button(visitor, org).click()
        # Before anyone answers, the visitor is told the call is recorded, in the button's words.
        await expect(visitor.locator("callbutton-widget .recording")).to_have_text(notice, timeout=MEDIA_WAIT_MS)
        await expect(agent.locator("#rings .ring")).to_have_count(1, timeout=MEDIA_WAIT_MS)
        await expect(widget_status(visitor)).to_have_text("Sorry, nobody could answer in time.", timeout=WAIT_MS)
        await expect(agent.locator("#rings .ring")).to_have_count(0, timeout=WAIT_MS)
        await expect(agent.locator("#notice")).to_contain_text("Missed call")
        await expect(agent.locator("#presence")).to_have_text("Available", timeout=WAIT_MS)
        await expect(visitor.get_by_role("button", name="Call again")).to_be_visible()
        # The widget offers the callback form; the request appears in the agent console at once.
        form = visitor.locator("callbutton-widget .callback")
        await form.get_by_label("Your name").fill("Grace Hopper")
        await form.get_by_label("Phone").fill("+1 202 555 0100")
        await form.get_by_role("button", name="Request a callback").click()
        await expect(visitor.locator("callbutton-widget .done")).to_have_text("Thank you. We will call you back.")
        request = agent.locator("#callback-list .callback")
        await expect(request).to_have_count(1, timeout=WAIT_MS)
        await expect(request.locator(".callback-name")).to_have_text("Grace Hopper")
        await expect(request.locator(".callback-reason")).to_have_text("Waited too long")
        await expect(request).to_contain_text("+1 202 555 0100")
    finally:
        await visitor_context.close()
        await agent_context.close()


async def test_browser_no_agent_and_mic_denied(
    playwright: Playwright, browser: Browser, host_site: HostSite, org: Org
) -> None:
    # Nobody is logged in: the server rejects the call and the widget says why.
    context = await new_context(browser)
    try:
        visitor = await open_visitor(context, host_site, org)
        await call_button(visitor, org).click()
        await expect(widget_status(visitor)).to_have_text(
            "No one is available to take your call right now.", timeout=MEDIA_WAIT_MS
        )
        # The announcement reaches screen readers too.
        await expect(visitor.locator("callbutton-widget [aria-live=polite]")).to_have_text(
            "No one is available to take your call right now."
        )
    finally:
        await context.close()

    # A visitor who blocks the microphone is told so, and no call is attempted.
    denying = await launch(playwright, microphone=False)
    try:
        context = await new_context(denying)
        visitor = await open_visitor(context, host_site, org)
        await call_button(visitor, org).click()
        await expect(widget_status(visitor)).to_have_text(
            "Microphone access was denied. Allow the microphone to call.", timeout=WAIT_MS
        )
        assert await visitor.evaluate("() => window.__pcs.length") == 0
        await expect(visitor.get_by_role("button", name="Call again")).to_be_visible()
    finally:
        await denying.close()
