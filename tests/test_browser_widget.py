"""The visitor's whole experience in the widget, in headless Chromium on a host page with a strict CSP:
the queue and its position, the rating after a call, the pre-call form and its validation, the closed
message and the callback form (in French), the maximum wait, and a call link's page.

Agents here are real aiortc peers speaking the protocol (tests/peers.py), so that each test drives
one browser; the agent console has its own browser tests."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import uuid

import pytest
from playwright.async_api import Browser, Page, expect

from server.app import Running
from server.appkeys import SWITCHBOARD
from server.config import Settings
from storage.db import Database
from tests.browser import HostSite, Org, csp_violations, make_org, new_context
from tests.peers import Agent, Visitor
from tests.test_browser import (  # noqa: F401 - fixtures
    MEDIA_WAIT_MS,
    WAIT_MS,
    browser,
    call_button,
    host_site,
    open_visitor,
    playwright,
    widget_status,
)
from tests.test_call import wait_for_row
from tests.test_routing import call_api

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, call_rate_per_address=600.0)


def widget(page: Page, selector: str):  # type: ignore[no-untyped-def]
    return page.locator(f"callbutton-widget {selector}")


async def peer_agent(server: Running, org: Org) -> Agent:
    agent = Agent(server.url, org.agent_email, org.agent_password)
    await agent.connect()
    await agent.go_available()
    return agent


async def test_a_queued_visitor_sees_its_place_is_connected_and_rates_the_call(
    server: Running,
    database: Database,
    browser: Browser,  # noqa: F811
    host_site: HostSite,  # noqa: F811
) -> None:
    org = await make_org(database, host_site.origin)
    agent = await peer_agent(server, org)
    first = Visitor(server.url, org.button_key, host_site.origin)
    context = await new_context(browser)
    try:
        # The only agent is busy with someone else.
        await first.connect()
        first_id = await first.call()
        await agent.send({"type": "accept", "call_id": first_id})
        await first.expect("call_state", state="answered")

        page = await open_visitor(context, host_site, org)
        await call_button(page, org).click()
        await expect(widget_status(page)).to_have_text("You are next in line. Please hold on.", timeout=MEDIA_WAIT_MS)

        await agent.send({"type": "hangup", "call_id": first_id})
        ring = await agent.wait_for(lambda m: m["type"] == "ring" and m["call_id"] != first_id, 5, "the second ring")
        await expect(widget_status(page)).to_have_text("Ringing… Waiting for someone to answer.", timeout=WAIT_MS)
        await agent.send({"type": "accept", "call_id": ring["call_id"]})
        await expect(widget_status(page)).to_have_text("In call", timeout=MEDIA_WAIT_MS)
        await expect(widget(page, ".timer")).to_have_text("00:01", timeout=WAIT_MS)
        await agent.send({"type": "hangup", "call_id": ring["call_id"]})

        # After the conversation: a rating, keyboard and screen-reader usable.
        await expect(widget_status(page)).to_have_text("The agent ended the call.", timeout=WAIT_MS)
        rating = page.get_by_role("group", name="How was your call?")
        await expect(rating).to_be_visible()
        await page.get_by_role("button", name="Send rating").click()
        await expect(widget(page, ".rating .form-error")).to_have_text("Choose from 1 to 5 stars.")
        await rating.get_by_role("radio", name="4 stars").check()
        await page.get_by_label("Comment (optional)").fill("Quick and kind")
        await page.get_by_role("button", name="Send rating").click()
        await expect(widget(page, ".done")).to_have_text("Thank you for your feedback.", timeout=WAIT_MS)
        row = await wait_for_row(database, org_tenant(org), ring["call_id"], "ended")
        for _ in range(50):
            row = await database.calls.get(org.organisation_id, uuid.UUID(ring["call_id"]))
            if row is not None and row.rating is not None:
                break
            await asyncio.sleep(0.1)
        assert row is not None and (row.rating, row.rating_comment) == (4, "Quick and kind")
        assert await csp_violations(page) == []
    finally:
        await context.close()
        await first.close()
        await agent.close()


def org_tenant(org: Org):  # type: ignore[no-untyped-def]
    """What ``wait_for_row`` reads of a tenant: the organisation."""

    @dataclasses.dataclass
    class _Tenant:
        organisation_id: uuid.UUID

    return _Tenant(org.organisation_id)


async def test_the_pre_call_form_checks_its_fields_and_shows_the_recording_notice(
    server: Running,
    database: Database,
    browser: Browser,  # noqa: F811
    host_site: HostSite,  # noqa: F811
) -> None:
    notice = "We record calls to train our staff."
    org = await make_org(
        database,
        host_site.origin,
        recording_notice=notice,
        form_fields={"name": "optional", "email": "required", "phone": "off"},
    )
    agent = await peer_agent(server, org)
    context = await new_context(browser)
    try:
        page = await open_visitor(context, host_site, org)
        await call_button(page, org).click()
        form = widget(page, ".precall")
        email = form.get_by_label("Email")
        await expect(form.get_by_label("Your name")).to_be_focused(timeout=WAIT_MS)
        await expect(widget(page, ".recording")).to_have_text(notice)  # before anything is sent
        await expect(form.get_by_label("Phone")).to_have_count(0)  # off for this button

        await page.get_by_role("button", name="Call now").click()
        await expect(form.locator(".field-error:not([hidden])")).to_have_text("Email is required.")
        await expect(email).to_have_attribute("aria-invalid", "true")
        await expect(email).to_be_focused()
        await email.fill("ada at example")
        await page.keyboard.press("Enter")
        await expect(form.locator(".field-error:not([hidden])")).to_have_text("Enter a valid email address.")
        await asyncio.sleep(0.3)
        assert not agent.messages("ring"), "an invalid form places no call"

        await form.get_by_label("Your name").fill("Ada Lovelace")
        await email.fill("ada@example.test")
        await page.get_by_role("button", name="Call now").click()
        ring = await agent.expect("ring", timeout=10)
        assert (ring["visitor"]["name"], ring["visitor"]["email"]) == ("Ada Lovelace", "ada@example.test")
        await expect(widget(page, ".recording")).to_have_text(notice)
        await page.get_by_role("button", name="Hang up").click()
        await expect(widget_status(page)).to_have_text("Call ended.", timeout=WAIT_MS)
        assert await csp_violations(page) == []
    finally:
        await context.close()
        await agent.close()


async def test_a_closed_button_shows_its_message_and_takes_a_callback_request_in_french(
    server: Running,
    database: Database,
    browser: Browser,  # noqa: F811
    host_site: HostSite,  # noqa: F811
) -> None:
    message = "Nous sommes fermés le dimanche."
    org = await make_org(
        database,
        host_site.origin,
        language="fr",
        opening_hours={"mon": [["09:00", "18:00"]]},
        time_zone="Europe/Paris",
        closed_message=message,
        colour="#7a1fa2",
        position="bottom-left",
    )
    # A Sunday afternoon, by the clock the server routes with.
    server.runner.app[SWITCHBOARD].clock = lambda: datetime.datetime(2026, 11, 29, 15, 0, tzinfo=datetime.UTC)
    agent = await peer_agent(server, org)
    context = await new_context(browser)
    try:
        page = await context.new_page()
        await page.goto(host_site.url(org.button_key))
        fab = page.get_by_role("button", name=f"Appeler {org.button_name} (fermé pour le moment)")
        await expect(fab).to_be_visible(timeout=WAIT_MS)
        colour = await widget(page, ".fab").evaluate("b => getComputedStyle(b).backgroundColor")
        assert colour == "rgb(107, 117, 128)"  # greyed out while closed
        assert await widget(page, ".cb").evaluate("c => c.classList.contains('left')")
        await fab.click()
        await expect(widget_status(page)).to_have_text(message)
        form = widget(page, ".callback")
        await expect(form.get_by_label("Votre nom")).to_be_focused()
        await form.get_by_label("Votre nom").fill("Grace")
        await page.get_by_role("button", name="Demander à être rappelé").click()
        await expect(widget(page, ".callback .form-error")).to_have_text(
            "Laissez un numéro de téléphone ou une adresse e-mail."
        )
        await form.get_by_label("Téléphone").fill("+33 1 23 45 67 89")
        await form.get_by_label("À quel sujet ? (facultatif)").fill("Une théière fêlée")
        await page.get_by_role("button", name="Demander à être rappelé").click()
        await expect(widget(page, ".done")).to_have_text("Merci. Nous vous rappellerons.", timeout=WAIT_MS)

        (request,) = await database.callbacks.all(org.organisation_id)
        assert (request.name, request.phone, request.note, request.reason) == (
            "Grace",
            "+33 1 23 45 67 89",
            "Une théière fêlée",
            "closed",
        )
        notice = await agent.expect("callback")
        assert notice["callback"]["id"] == str(request.id)
        assert not agent.messages("ring")
        assert await csp_violations(page) == []
    finally:
        await context.close()
        await agent.close()


async def test_past_the_maximum_wait_the_widget_offers_the_callback_form(
    server: Running,
    database: Database,
    browser: Browser,  # noqa: F811
    host_site: HostSite,  # noqa: F811
) -> None:
    org = await make_org(database, host_site.origin, ring_timeout_s=1, max_queue_wait_s=2)
    agent = await peer_agent(server, org)  # rung, never answers
    context = await new_context(browser)
    try:
        page = await open_visitor(context, host_site, org)
        await call_button(page, org).click()
        ring = await agent.expect("ring", timeout=10)
        await expect(widget_status(page)).to_have_text("Sorry, nobody could answer in time.", timeout=WAIT_MS)
        form = widget(page, ".callback")
        await expect(form.get_by_label("Your name")).to_be_focused()
        await form.get_by_label("Email").fill("grace@example.test")
        await page.get_by_role("button", name="Request a callback").click()
        await expect(widget(page, ".done")).to_have_text("Thank you. We will call you back.", timeout=WAIT_MS)
        (request,) = await database.callbacks.all(org.organisation_id)
        assert (request.email, request.reason, request.call_id) == (
            "grace@example.test",
            "max_wait",
            uuid.UUID(ring["call_id"]),
        )
        await expect(page.get_by_role("button", name="Call again")).to_be_visible()
    finally:
        await context.close()
        await agent.close()


async def test_a_call_link_page_calls_its_agent_once(
    server: Running,
    database: Database,
    browser: Browser,  # noqa: F811
    host_site: HostSite,  # noqa: F811
) -> None:
    org = await make_org(database, host_site.origin, recording_notice="Calls are recorded.")
    agent = await peer_agent(server, org)
    context = await new_context(browser)
    try:
        status, created = await call_api(
            "POST", f"{server.url}/api/v1/call-links", cookie=agent.cookie, origin=server.url, json={}
        )
        assert status == 201
        url = created["link"]["url"]
        page = await context.new_page()
        await page.goto(url)
        call = page.get_by_role("button", name=f"Call {org.agent_name}", exact=True)
        await expect(call).to_be_visible(timeout=WAIT_MS)
        await call.click()
        ring = await agent.expect("ring", direction="outbound", timeout=10)
        assert ring["visitor"]["page_url"] is None
        await expect(widget(page, ".recording")).to_have_text("Calls are recorded.")
        await agent.send({"type": "accept", "call_id": ring["call_id"]})
        await expect(widget_status(page)).to_have_text("In call", timeout=MEDIA_WAIT_MS)
        await page.get_by_role("button", name="Hang up").click()
        await expect(widget_status(page)).to_have_text("Call ended.", timeout=WAIT_MS)
        assert await csp_violations(page) == []

        # Used: opening it again says so, and offers no call.
        await page.goto(url)
        await expect(widget_status(page)).to_have_text(
            "This call link was used already or has expired. Ask for a new one.", timeout=WAIT_MS
        )
        await expect(call).to_be_hidden()
        row = await wait_for_row(database, org_tenant(org), ring["call_id"], "ended")
        assert row.direction == "outbound"
    finally:
        await context.close()
        await agent.close()
