"""The agent console around its calls, in headless Chromium, through the real server and Postgres.

Synthetic visitors (real aiortc peers speaking the visitor protocol) call the console; the tests
assert what the agent sees (the caller's details, a wrap-up countdown, callback requests arriving
live, call links, the agent's own history, presence surviving a reload and several tabs) and what
the console stores (notes, a request marked done). Run inside a loopback-only network namespace:

    unshare -n sh -c 'ip link set lo up && .venv/bin/python -m pytest tests/test_browser_agent.py'
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from server.app import Running, start
from server.config import Settings
from storage.db import Database
from tests.browser import csp_violations, new_context
from tests.conftest import VISITOR_ORIGIN, Tenant, make_tenant
from tests.peers import Visitor
from tests.test_browser import MEDIA_WAIT_MS, WAIT_MS, browser, page_errors, playwright  # noqa: F401 - fixtures

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]

AGENT_NAME = "Agent 0"  # make_tenant's first agent
FORM = {"name": "optional", "email": "optional", "phone": "optional"}
ADA = {"name": "Ada Lovelace", "email": "ada@example.test"}
PAGE_URL = "https://shop.example.test/teapots/earl-grey"


async def open_console(context: BrowserContext, server: Running, tenant: Tenant) -> Page:
    """The agent console, logged in through its form and available."""
    page = await context.new_page()
    await page.goto(f"{server.url}/agent/")
    await page.get_by_label("Email").fill(tenant.agent_email)
    await page.get_by_label("Password").fill(tenant.agent_password)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator("#agent-name")).to_have_text(AGENT_NAME, timeout=WAIT_MS)
    await expect(page.locator("#presence")).to_have_text("Away", timeout=WAIT_MS)
    await page.get_by_role("button", name="Go available").click()
    await expect(page.locator("#presence")).to_have_text("Available", timeout=MEDIA_WAIT_MS)
    return page


async def calling(server: Running, tenant: Tenant, visitor: dict[str, str] | None = None) -> tuple[Visitor, str]:
    """A synthetic visitor whose call is queued on ``tenant``'s button (the caller closes it)."""
    peer = Visitor(server.url, tenant.button_key, VISITOR_ORIGIN)
    try:
        await peer.connect()
        call_id = await peer.call(page_url=PAGE_URL, visitor=visitor)
    except BaseException:
        await peer.close()
        raise
    return peer, call_id


async def post_callback(server: Running, tenant: Tenant, request: dict[str, Any]) -> str:
    """A visitor's callback request, posted as the widget does from the customer's page."""
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{server.url}/api/v1/widget/{tenant.button_key}/callbacks",
            json=request,
            headers={"Origin": VISITOR_ORIGIN},
        ) as response:
            assert response.status == 201, await response.text()
            callback_id: str = (await response.json())["callback"]["id"]
            return callback_id


async def test_a_repeat_caller_is_recognised_and_the_notes_are_kept(
    server: Running,
    database: Database,
    browser: Browser,  # noqa: F811
) -> None:
    (tenant,) = await make_tenant(database, form_fields=FORM)
    context = await new_context(browser)
    try:
        agent = await open_console(context, server, tenant)
        errors = page_errors(agent)
        ring = agent.locator("#rings .ring")

        # Ada's first call rings as her first, and she gives up before an answer.
        first, _ = await calling(server, tenant, ADA)
        try:
            await expect(ring).to_have_count(1, timeout=WAIT_MS)
            await expect(ring.locator(".ring-visitor [data-field=history]")).to_have_text("First call")
            await first.send({"type": "hangup"})
            await first.expect("call_state", state="ended")
        finally:
            await first.close()
        await expect(ring).to_have_count(0, timeout=WAIT_MS)

        # Her second call shows who she is, where she is, and that she called before.
        second, call_id = await calling(server, tenant, ADA)
        try:
            await expect(ring).to_have_count(1, timeout=WAIT_MS)
            details = ring.locator(".ring-visitor")
            await expect(details.locator("[data-field=name]")).to_have_text("Ada Lovelace")
            await expect(details.locator("[data-field=email]")).to_have_text("ada@example.test")
            await expect(details.locator("[data-field=history]")).to_have_text("1 earlier call")
            await expect(ring.locator(".ring-url")).to_have_text(PAGE_URL)
            await expect(ring.locator(".ring-button")).to_have_text("Support")
            await expect(ring.locator(".ring-kind")).to_have_text("Incoming call")
            # Announced with her history, which follows the ring (call_details).
            await expect(agent.locator("#status")).to_contain_text(
                "Incoming call: Ada Lovelace, Support. 1 earlier call."
            )

            await ring.get_by_role("button", name="Accept").click()
            await expect(agent.get_by_role("heading", name="In call")).to_be_visible(timeout=WAIT_MS)
            await second.expect("call_state", state="answered")

            # The caller stays in view during the call, with the notes.
            caller = agent.locator("#call-details")
            await expect(caller.get_by_role("heading", name="Caller")).to_be_visible()
            await expect(caller.locator("[data-field=name]")).to_have_text("Ada Lovelace")
            await expect(caller.locator("[data-field=history]")).to_have_text("1 earlier call")
            await expect(caller.locator("[data-field=page]")).to_have_text(PAGE_URL)
            notes = "Wants a refund for the chipped teapot.\nCall back on Monday."
            await agent.get_by_label("Notes").fill(notes)
            await agent.get_by_role("button", name="Save notes").click()
            await expect(caller.get_by_role("status")).to_have_text("Saved", timeout=WAIT_MS)
            row = await database.calls.get(tenant.organisation_id, uuid.UUID(call_id))
            assert row is not None and row.notes == notes

            await second.send({"type": "hangup"})
            await second.expect("call_state", state="ended")
        finally:
            await second.close()
        await expect(agent.locator("#notice")).to_have_text("Call ended (the caller hung up).", timeout=WAIT_MS)

        # After the call the notes can still be changed, until the next call.
        await expect(caller.get_by_role("heading", name="Last call")).to_be_visible()
        notes += "\nRefund sent."
        await agent.get_by_label("Notes").fill(notes)
        await expect(caller.get_by_role("status")).to_have_text("")
        await agent.get_by_role("button", name="Save notes").click()
        await expect(caller.get_by_role("status")).to_have_text("Saved", timeout=WAIT_MS)
        row = await database.calls.get(tenant.organisation_id, uuid.UUID(call_id))
        assert row is not None and row.notes == notes

        # The call is in the agent's own history, with its notes (only answered calls are the agent's).
        history = agent.locator("#history-table tbody")
        await expect(history).to_have_count(1, timeout=WAIT_MS)
        entry = agent.locator(f'#history-table tbody[data-call-id="{call_id}"]')
        await expect(entry.locator(".history-caller")).to_have_text("Ada Lovelace · ada@example.test")
        await expect(entry.locator(".history-direction")).to_have_text("Inbound")
        await expect(entry.locator(".history-outcome")).to_have_text("Answered", timeout=WAIT_MS)
        await expect(entry.locator(".history-talk")).to_have_text(re.compile(r"^00:\d\d$"))
        await expect(entry.locator(".history-notes")).to_have_text(notes)

        assert await csp_violations(agent) == []
        assert errors == []
    finally:
        await context.close()


async def test_wrap_up_counts_down_then_the_agent_is_available(
    server: Running,
    database: Database,
    browser: Browser,  # noqa: F811
) -> None:
    (tenant,) = await make_tenant(database, wrap_up_s=3)
    context = await new_context(browser)
    try:
        agent = await open_console(context, server, tenant)
        presence = agent.locator("#presence")
        visitor, _ = await calling(server, tenant)
        try:
            await agent.locator("#rings .ring").get_by_role("button", name="Accept").click()
            await expect(presence).to_have_text("In a call", timeout=WAIT_MS)
            await agent.get_by_role("button", name="Hang up").click()
            await visitor.expect("call_state", state="ended", reason="agent_hangup")
        finally:
            await visitor.close()

        # The countdown starts at the button's wrap-up time and goes down every second.
        await expect(presence).to_have_text(re.compile(r"^Wrap-up: [23] s$"), timeout=WAIT_MS)
        await expect(agent.locator("#status")).to_contain_text("Wrap-up: you will be rung again in")
        await expect(presence).to_have_text("Wrap-up: 1 s", timeout=WAIT_MS)
        await expect(presence).to_have_text("Available", timeout=WAIT_MS)
        await expect(agent.locator("#status")).to_have_text("Available: waiting for calls.")

        # Available again means rung again.
        visitor, _ = await calling(server, tenant)
        try:
            await expect(agent.locator("#rings .ring")).to_have_count(1, timeout=WAIT_MS)
        finally:
            await visitor.close()
        assert await csp_violations(agent) == []
    finally:
        await context.close()


async def test_callback_requests_arrive_live_get_a_call_link_and_are_done(
    server: Running,
    database: Database,
    browser: Browser,  # noqa: F811
) -> None:
    (tenant,) = await make_tenant(database)
    context = await new_context(browser)
    # Granting some permissions denies the others: the microphone is granted again with them.
    await context.grant_permissions(["microphone", "clipboard-read", "clipboard-write"], origin=server.url)
    try:
        agent = await open_console(context, server, tenant)
        errors = page_errors(agent)
        await expect(agent.locator("#callbacks-empty")).to_have_text("No open requests.")

        # A visitor who waited too long leaves a request: it appears without a reload.
        callback_id = await post_callback(
            server,
            tenant,
            {"name": "Grace Hopper", "phone": "+44 20 7946 0000", "note": "About my order", "reason": "max_wait"},
        )
        request = agent.locator("#callback-list .callback")
        await expect(request).to_have_count(1, timeout=WAIT_MS)
        await expect(request).to_have_attribute("data-callback-id", callback_id)
        await expect(request.locator(".callback-name")).to_have_text("Grace Hopper")
        await expect(request.locator("[data-field=phone]")).to_have_text("+44 20 7946 0000")
        await expect(request.locator("[data-field=note]")).to_have_text("About my order")
        await expect(request.locator(".callback-reason")).to_have_text("Waited too long")
        await expect(agent.locator("#callbacks-empty")).to_be_hidden()

        # A call link to call Grace back, made from her request.
        await request.get_by_role("button", name="Create call link").click()
        link_url = agent.get_by_label("Call link", exact=True)
        await expect(link_url).to_have_value(re.compile(rf"^{re.escape(server.url)}/call/cl_[A-Za-z0-9_-]{{32}}$"))
        await expect(link_url).to_be_focused()
        await expect(agent.locator("#link-for")).to_contain_text("Grace Hopper")
        await expect(agent.locator("#link-expiry")).to_contain_text("in 60 min")
        url = await link_url.input_value()
        (link,) = await database.call_links.of_agent(tenant.organisation_id, tenant.agent_id)
        assert link.callback_id == uuid.UUID(callback_id)
        await agent.get_by_role("button", name="Copy").click()
        await expect(agent.locator("#link-status")).to_have_text("Copied.")
        assert await agent.evaluate("() => navigator.clipboard.readText()") == url

        # Grace calls through it: the console says it is a call back.
        customer = Visitor.through_link(server.url, url.rsplit("/", 1)[1])
        try:
            await customer.connect()
            await customer.call()
            ring = agent.locator("#rings .ring")
            await expect(ring).to_have_count(1, timeout=WAIT_MS)
            await expect(ring.locator(".ring-kind")).to_have_text("Call back (outbound)")
            await customer.send({"type": "hangup"})
            await expect(ring).to_have_count(0, timeout=WAIT_MS)
        finally:
            await customer.close()

        # Done: gone from the list, and so in the database.
        await request.get_by_role("button", name="Mark done").click()
        await expect(request).to_have_count(0, timeout=WAIT_MS)
        await expect(agent.locator("#callbacks-empty")).to_be_visible()
        await expect(agent.locator("#callbacks-status")).to_have_text("Marked done: Grace Hopper.")
        stored = await database.callbacks.get(tenant.organisation_id, uuid.UUID(callback_id))
        assert stored is not None and stored.state == "done" and stored.done_by == tenant.agent_id

        # A call link from scratch.
        await agent.get_by_role("button", name="Create call link", exact=True).click()
        await expect(agent.locator("#link-for")).to_have_text("New call link:")
        await expect(link_url).not_to_have_value(url)
        await expect(link_url).to_have_value(re.compile(rf"^{re.escape(server.url)}/call/cl_"))
        assert len(await database.call_links.of_agent(tenant.organisation_id, tenant.agent_id)) == 2

        assert await csp_violations(agent) == []
        assert errors == []
    finally:
        await context.close()


async def test_a_reload_keeps_the_agent_available_and_tabs_share_the_calls(
    server: Running,
    database: Database,
    browser: Browser,  # noqa: F811
) -> None:
    (tenant,) = await make_tenant(database)
    context = await new_context(browser)
    try:
        first = await open_console(context, server, tenant)

        # A reload comes back available, on a new leg, without a click.
        await first.reload()
        await expect(first.locator("#agent-name")).to_have_text(AGENT_NAME, timeout=WAIT_MS)
        await expect(first.locator("#presence")).to_have_text("Available", timeout=MEDIA_WAIT_MS)
        await expect(first.get_by_role("button", name="Go available")).to_be_disabled()

        # A second tab of the same agent goes available by itself too; both are rung.
        second = await context.new_page()
        await second.goto(f"{server.url}/agent/")
        await expect(second.locator("#presence")).to_have_text("Available", timeout=MEDIA_WAIT_MS)
        await expect(second.get_by_role("button", name="Go available")).to_be_disabled(timeout=MEDIA_WAIT_MS)
        visitor, call_id = await calling(server, tenant, ADA)
        try:
            for page in (first, second):
                await expect(page.locator("#rings .ring")).to_have_count(1, timeout=WAIT_MS)

            # The second tab answers; the first shows the call is elsewhere.
            await second.locator("#rings .ring").get_by_role("button", name="Accept").click()
            await visitor.expect("call_state", state="answered")
            await expect(second.get_by_role("heading", name="In call")).to_be_visible(timeout=WAIT_MS)
            await expect(first.locator("#rings .ring")).to_have_count(0, timeout=WAIT_MS)
            await expect(first.locator("#call")).to_be_hidden()
            await expect(first.locator("#other-tab")).to_be_visible()
            await expect(first.locator("#presence")).to_have_text("In a call")

            # A tab opened during the call is told so at once.
            third = await context.new_page()
            await third.goto(f"{server.url}/agent/")
            await expect(third.locator("#other-tab")).to_have_text(
                "A call is in progress in another tab or window.", timeout=WAIT_MS
            )
            await expect(third.locator("#call")).to_be_hidden()

            await visitor.send({"type": "hangup"})
            await visitor.expect("call_state", state="ended")
        finally:
            await visitor.close()
        await expect(second.locator("#notice")).to_have_text("Call ended (the caller hung up).", timeout=WAIT_MS)
        for page in (first, third):
            await expect(page.locator("#other-tab")).to_be_hidden(timeout=WAIT_MS)
        for page in (first, second, third):
            await expect(page.locator("#presence")).to_have_text("Available", timeout=WAIT_MS)
            entry = page.locator(f'#history-table tbody[data-call-id="{call_id}"]')
            await expect(entry).to_have_count(1, timeout=WAIT_MS)
            assert await csp_violations(page) == []
    finally:
        await context.close()


async def test_the_console_reconnects_by_itself_when_its_server_goes_and_goes_available_again(
    settings: Settings,
    database: Database,
    browser: Browser,  # noqa: F811
) -> None:
    """A server stopping (1001), or the node carrying the console dying (1012, docs/scaling.md):
    the console reconnects on its own, to whichever server answers, and is available again."""
    (tenant,) = await make_tenant(database)
    first = await start(settings, database)
    port = first.settings.port
    context = await new_context(browser)
    second = None
    try:
        page = await open_console(context, first, tenant)
        await first.stop()  # closes the console's socket with 1001
        await expect(page.locator("#disconnected-text")).to_contain_text("Reconnecting", timeout=WAIT_MS)
        second = await start(dataclasses.replace(settings, port=port), database)
        await expect(page.locator("#presence")).to_have_text("Available", timeout=MEDIA_WAIT_MS * 2)
        # The new server has the agent available: a call rings the console.
        peer, _ = await calling(second, tenant)
        try:
            await expect(page.get_by_role("button", name="Accept")).to_be_visible(timeout=WAIT_MS)
        finally:
            await peer.close()
    finally:
        await context.close()
        if second is not None:
            await second.stop()
