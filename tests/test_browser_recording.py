"""An admin plays a recording in the admin page, in headless Chromium, and the playback is audited."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from server.app import Running
from server.appkeys import RECORDINGS
from storage.db import Database
from tests.browser import csp_violations, new_context
from tests.conftest import make_admin, make_tenant
from tests.test_browser import browser, playwright  # noqa: F401 - fixtures
from tests.test_recording import finished_recording, recorded_call

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]


async def test_an_admin_plays_a_recording_in_the_browser(
    server: Running,
    database: Database,
    browser: Browser,  # noqa: F811
) -> None:
    (tenant,) = await make_tenant(database, recording=True)
    call_id = await recorded_call(server, tenant, talk_seconds=3.0)
    record = await finished_recording(server.runner.app[RECORDINGS], tenant, call_id)
    email, password = await make_admin(database, tenant.organisation_id)

    context = await new_context(browser)
    page = await context.new_page()
    await page.goto(f"{server.url}/admin/")
    await page.fill("#email", email)
    await page.fill("#password", password)
    await page.click("#login-form button[type=submit]")
    play = page.get_by_role("button", name="Play the call of")
    await expect(play).to_have_count(1, timeout=5000)
    await expect(page.locator("#rows tr td").nth(1)).to_have_text("0:03")
    await play.click()
    # The audio element really plays the rendering: its clock advances past a second.
    await page.wait_for_function(
        "() => { const a = document.getElementById('player'); return !a.paused && a.currentTime > 1; }",
        timeout=10000,
    )
    duration = await page.evaluate("() => document.getElementById('player').duration")
    assert 2.5 < duration < 4.0, duration
    # Seeking back and forth plays from there (the rendering is served by byte ranges).
    for target in (0.2, 2.0):
        await page.evaluate(f"() => {{ document.getElementById('player').currentTime = {target}; }}")
        await page.wait_for_function(
            f"() => {{ const a = document.getElementById('player');"
            f" return !a.seeking && a.currentTime > {target} + 0.3 && a.currentTime < {target} + 1.5; }}",
            timeout=10000,
        )
    assert await csp_violations(page) == []
    await context.close()

    entries = await database.audit.for_object(tenant.organisation_id, record.id)
    assert entries and {e.action for e in entries} == {"recording.play"}
    assert all(e.user_agent and "Chrome" in e.user_agent for e in entries)
