"""An admin works through calls, statistics, the audit log and integrations in the admin page, in headless Chromium.

Through the real server, real aiortc peers and Postgres: the calls are real (one recorded), the page is
driven as an admin would, and each test asserts what the page shows against the API, the files and
the rows stored. Run inside a loopback-only network namespace (see test_browser).
"""

from __future__ import annotations

import asyncio
import csv
import io
import math
import re
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page, expect

from server.app import Running
from server.appkeys import RECORDINGS
from storage.db import Database
from tests.browser import csp_violations, new_context
from tests.conftest import VISITOR_ORIGIN, Tenant, make_admin, make_tenant
from tests.peers import Visitor
from tests.test_browser import browser, page_errors, playwright  # noqa: F401 - fixtures
from tests.test_browser_admin import log_in, thrown
from tests.test_recording import finished_recording, recorded_call

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

WAIT_MS = 5000
DASH = "\N{EN DASH}"  # what the page shows for a figure it does not have


async def missed_call(server: Running, tenant: Tenant) -> str:
    """A call nobody could take (no agent is online): outcome ``missed``."""
    visitor = Visitor(server.url, tenant.button_key, VISITOR_ORIGIN)
    try:
        await visitor.connect()
        call_id = await visitor.call()
        await visitor.expect("call_state", call_id=call_id, state="ended")
        return call_id
    finally:
        await visitor.close()


async def ended_calls(database: Database, tenant: Tenant, count: int) -> None:
    """Waits until the organisation's ``count`` calls are stored as ended (rows are written in order,
    shortly after the peers see the end)."""
    for _ in range(100):
        ended = await database.pool.fetchval(
            "SELECT count(*) FROM calls WHERE organisation_id = $1 AND state = 'ended'", tenant.organisation_id
        )
        if ended == count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{count} ended calls were not stored")


async def test_an_admin_filters_calls_then_plays_downloads_and_deletes_a_recording(
    server: Running,
    database: Database,
    browser: Browser,  # noqa: F811
) -> None:
    first, second = await make_tenant(database, agents=2, recording=True)
    org = first.organisation_id
    call_id = await recorded_call(server, first, talk_seconds=3.0)
    record = await finished_recording(server.runner.app[RECORDINGS], first, call_id)
    # Two calls the filters must leave out: the other agent's, and one nobody answered.
    other_id = await recorded_call(server, second, talk_seconds=0.5)
    missed_id = await missed_call(server, first)
    await ended_calls(database, first, 3)
    email, password = await make_admin(database, org)

    context = await new_context(browser)
    page = await context.new_page()
    errors = page_errors(page)
    await log_in(page, server, email, password)

    await page.get_by_role("link", name="Calls").click()
    rows = page.locator("#calls-rows tr")
    await expect(rows).to_have_count(3, timeout=WAIT_MS)
    filters = page.get_by_role("search", name="Filter calls")
    await filters.get_by_label("Outcome").select_option(label="Missed")
    await filters.get_by_role("button", name="Show calls").click()
    await expect(rows).to_have_count(1, timeout=WAIT_MS)
    await expect(rows).to_have_attribute("data-call", missed_id)

    await filters.get_by_label("Agent").select_option(label="Agent 0")
    await filters.get_by_label("Outcome").select_option(label="Answered")
    await filters.get_by_role("button", name="Show calls").click()
    await expect(rows).to_have_count(1, timeout=WAIT_MS)
    await expect(rows).to_have_attribute("data-call", call_id)
    assert other_id != call_id
    cells = rows.locator("td")
    await expect(cells.nth(1)).to_have_text("Inbound")
    await expect(cells.nth(3)).to_have_text("Support")
    await expect(cells.nth(4)).to_have_text("Agent 0")
    await expect(cells.nth(5)).to_have_text("Answered")
    await expect(cells.nth(7)).to_have_text("0:03")
    await expect(cells.nth(9)).to_have_text("Yes")
    await expect(page.locator("#calls-more")).to_be_hidden()

    # The call's page, by keyboard: its timeline, the page it came from, and its recording.
    await rows.get_by_role("link", name="Open the call of").focus()
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(f"{server.url}/admin/#calls/{call_id}")
    await expect(page.get_by_role("heading", name="Call of")).to_be_focused()
    await expect(page.locator("#call-timeline .event")).to_have_text(
        [
            "The visitor called",
            "Waiting for an agent",
            re.compile(r"^Rang Agent 0: answered after 0:0\d$"),
            "Answered by Agent 0",
            "Ended: the visitor hung up",
        ],
        timeout=WAIT_MS,
    )
    await expect(page.locator("#call-facts")).to_contain_text("https://shop.example.test/cart")
    # Opening the page fetched no audio: the audit log holds only what the admin did.
    assert await database.audit.for_object(org, record.id) == []

    await page.get_by_role("button", name="Play the recording of").click()
    await page.wait_for_function(
        "() => { const a = document.querySelector('#call-recordings audio'); return !a.paused && a.currentTime > 1; }",
        timeout=10000,
    )
    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Download the recording of").click()
    download = await download_info.value
    assert download.suggested_filename == f"recording-{record.id}.ogg"
    saved = await asyncio.to_thread(Path(await download.path()).read_bytes)
    assert saved[:4] == b"OggS"

    await page.get_by_role("button", name="Delete the recording of").click()
    await page.get_by_role("button", name="Confirm deleting the recording of").click()
    await expect(page.locator("#call-status")).to_have_text(re.compile(r"^Deleted the recording of "), timeout=WAIT_MS)
    item = page.locator("#call-recordings li")
    await expect(item.locator("dd").nth(1)).to_have_text("Deleted")
    await expect(item.locator("audio")).to_have_count(0)
    await expect(item.get_by_role("link", name="Download")).to_have_count(0)

    # The audit log shows each step, by the admin, newest first.
    await page.get_by_role("link", name="Audit log").click()
    entries = page.locator("#audit-rows tr")
    await expect(entries.first).to_have_attribute("data-action", "recording.delete", timeout=WAIT_MS)
    actions = [await row.get_attribute("data-action") for row in await entries.all()]
    assert {"session.login", "recording.play", "recording.download", "recording.delete"} <= set(actions), actions
    assert actions.index("recording.delete") < actions.index("recording.download") < actions.index("session.login")
    for action in ("session.login", "recording.play", "recording.download", "recording.delete"):
        row = page.locator(f'#audit-rows tr[data-action="{action}"]').first
        await expect(row.locator("td").nth(1)).to_have_text("Admin")
        await expect(row.locator("td").nth(2)).to_contain_text(action)
    await (
        page.get_by_role("search", name="Filter the audit log")
        .get_by_label("Actions")
        .select_option(label="Recordings")
    )
    await page.get_by_role("button", name="Show entries").click()
    await expect(entries.first).to_have_attribute("data-action", "recording.delete", timeout=WAIT_MS)
    await expect(page.locator('#audit-rows tr[data-action^="session."]')).to_have_count(0)

    assert await csp_violations(page) == []
    assert thrown(errors) == []
    await context.close()

    # The recording is gone for good: no file, no key; the call keeps its row.
    assert not server.runner.app[RECORDINGS].path(org, record.id).exists()
    assert await database.pool.fetchval("SELECT state FROM recordings WHERE id = $1", record.id) == "deleted"
    assert not await database.keystore_pool.fetchval(
        "SELECT count(*) FROM data_keys WHERE recording_id = $1", record.id
    )
    call = await database.calls.get(org, uuid.UUID(call_id))
    assert call is not None and call.outcome == "answered"
    logged = [e.action for e in await database.audit.for_object(org, record.id)]
    assert {"recording.play", "recording.download", "recording.delete"} == set(logged), logged


def percent(rate: float | None) -> str:
    """As the page writes it (JavaScript's Math.round: halves up)."""
    return DASH if rate is None else f"{math.floor(rate * 1000 + 0.5) / 10:g}%"


def minutes(ms: float | None) -> str:
    if ms is None:
        return DASH
    seconds = math.floor(ms / 1000 + 0.5)
    return f"{seconds // 60}:{seconds % 60:02d}"


def figures(row: dict[str, Any]) -> list[str]:
    counts = [str(row[name]) for name in ("attempted", "answered", "missed", "abandoned", "no_answer")]
    times = [minutes(row[name]) for name in ("wait_avg_ms", "wait_p90_ms", "talk_avg_ms", "talk_p90_ms")]
    return [*counts, percent(row["answer_rate"]), *times]


async def table_figures(page: Page, selector: str) -> list[list[str]]:
    return [(await row.locator("td, th").all_inner_texts())[1:] for row in await page.locator(selector).all()]


async def test_statistics_match_the_api_and_api_tokens_are_created_and_revoked(
    server: Running,
    database: Database,
    browser: Browser,  # noqa: F811
) -> None:
    (tenant,) = await make_tenant(database)
    await recorded_call(server, tenant, talk_seconds=1.0)
    await missed_call(server, tenant)
    await ended_calls(database, tenant, 2)
    email, password = await make_admin(database, tenant.organisation_id)

    context = await new_context(browser)
    page = await context.new_page()
    errors = page_errors(page)
    await log_in(page, server, email, password)

    # Statistics of the last 30 days, by day: the table has the API's figures for the same query.
    await page.get_by_role("link", name="Statistics").click()
    await expect(page.locator("#stats-total tr")).to_have_count(1, timeout=WAIT_MS)
    csv_link = page.get_by_role("link", name="Download CSV")
    href = await csv_link.get_attribute("href")
    assert href is not None and href.startswith("/api/v1/stats.csv?")
    response = await page.request.get(server.url + href.replace("/api/v1/stats.csv", "/api/v1/stats", 1))
    assert response.ok
    stats = await response.json()
    assert stats["group"] == "day" and stats["total"]["attempted"] == 2 and len(stats["rows"]) == 1
    assert await table_figures(page, "#stats-rows tr") == [figures(row) for row in stats["rows"]]
    assert await table_figures(page, "#stats-total tr") == [figures(stats["total"])]
    await expect(page.locator("#stats-total td").nth(5)).to_have_text("50%")
    # Two charts (calls and answer rate); one answered and one missed bar.
    await expect(page.locator("#stats-charts svg[role=img]")).to_have_count(2)
    await expect(page.locator("#stats-charts rect.series-answered")).to_have_count(1)
    await expect(page.locator("#stats-charts rect.series-missed")).to_have_count(1)

    async with page.expect_download() as download_info:
        await csv_link.click()
    download = await download_info.value
    assert download.suggested_filename == "callbutton-stats-by-day.csv"
    text = await asyncio.to_thread(Path(await download.path()).read_text)
    lines = list(csv.reader(io.StringIO(text)))
    assert lines[0][:3] == ["day", "attempted", "answered"]
    assert lines[-1][:7] == ["total", "2", "1", "1", "0", "0", "0.5"]

    # By agent: only the agent who was rung (for the answered call) is listed.
    await page.get_by_label("Group by").select_option(label="Agent")
    await page.get_by_role("button", name="Show statistics").click()
    await expect(page.locator("#stats-key-head")).to_have_text("Agent", timeout=WAIT_MS)
    await expect(page.locator("#stats-rows tr")).to_have_count(1)
    await expect(page.locator("#stats-rows td").first).to_have_text("Agent 0")
    href = await csv_link.get_attribute("href")
    assert href is not None and "group=agent" in href

    # An API token: its secret shown once, working until it is revoked.
    await page.get_by_role("link", name="Integrations").click()
    await page.get_by_label("Name of a new token").fill("CRM sync")
    await page.get_by_role("button", name="Create token").click()
    await expect(page.locator("#integrations-status")).to_have_text("Created the API token CRM sync.", timeout=WAIT_MS)
    secret_field = page.get_by_label("Secret of the API token CRM sync")
    await expect(secret_field).to_be_focused()
    await expect(secret_field).not_to_be_editable()
    await expect(page.locator("#token-secret")).to_contain_text("it won't be shown again")
    secret = await secret_field.input_value()
    assert secret.startswith("cbt_")
    assert await bearer_status(server, secret) == 200
    await expect(page.locator("#tokens-rows tr")).to_contain_text("Active")

    await page.get_by_role("button", name="Done: hide the secret").click()
    await expect(page.locator("#token-secret")).to_be_hidden()
    await page.get_by_role("button", name="Revoke API token CRM sync").click()
    await page.get_by_role("button", name="Confirm revoking API token CRM sync").click()
    await expect(page.locator("#integrations-status")).to_have_text("Revoked the API token CRM sync.", timeout=WAIT_MS)
    await expect(page.locator("#tokens-rows tr")).to_contain_text("Revoked")
    assert await bearer_status(server, secret) == 401

    # A webhook: created for two events, its signing secret shown, then disabled; nothing sent yet.
    await page.get_by_role("button", name="New webhook").click()
    form = page.locator("#webhook-form")
    await form.get_by_label("URL").fill("https://crm.example.test/hooks/calls")
    await form.get_by_label("call.ended").check()
    await form.get_by_label("recording.ready").check()
    await form.get_by_label("Description").fill("CRM")
    await form.get_by_role("button", name="Create webhook").click()
    await expect(page.locator("#integrations-status")).to_have_text(
        "Created the webhook https://crm.example.test/hooks/calls.", timeout=WAIT_MS
    )
    (endpoint,) = await database.webhooks.all(tenant.organisation_id)
    assert (endpoint.url, tuple(endpoint.events), endpoint.enabled) == (
        "https://crm.example.test/hooks/calls",
        ("call.ended", "recording.ready"),
        True,
    )
    item = page.locator("#webhooks-list li")
    await expect(item.get_by_label("Signing secret", exact=True)).to_have_value(endpoint.secret)
    await item.get_by_role("button", name="Edit the webhook").click()
    await form.get_by_label("Enabled").uncheck()
    await form.get_by_role("button", name="Save webhook").click()
    await expect(item).to_contain_text("Disabled", timeout=WAIT_MS)
    (endpoint,) = await database.webhooks.all(tenant.organisation_id)
    assert not endpoint.enabled
    await item.get_by_role("button", name="Deliveries to").click()
    await expect(item.locator(".deliveries")).to_contain_text("Nothing sent yet.", timeout=WAIT_MS)

    assert await csp_violations(page) == []
    assert thrown(errors) == []
    await context.close()


async def bearer_status(server: Running, secret: str) -> int:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/api/v1/calls", headers={"Authorization": f"Bearer {secret}"}) as response:
            return response.status
