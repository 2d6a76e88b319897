"""An admin manages the organisation's users, teams and buttons in the admin page, in headless Chromium.

Through the real server and Postgres: each test drives the page as an admin would, then asserts what
the page shows and the rows stored. Run inside a loopback-only network namespace (see test_browser).
"""

from __future__ import annotations

import uuid

import aiohttp
import pytest
from playwright.async_api import Browser, Page, expect

from server.app import Running
from storage.buttons import DEFAULT_FORM, SETTINGS, Button
from storage.db import Database
from tests.browser import csp_violations, new_context
from tests.conftest import VISITOR_ORIGIN, make_admin, make_tenant
from tests.test_browser import browser, page_errors, playwright  # noqa: F401 - fixtures

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]

WAIT_MS = 5000
DASH = "\N{EN DASH}"  # between the two ends of opening hours, as the page writes them


async def log_in(page: Page, server: Running, email: str, password: str) -> None:
    await page.goto(f"{server.url}/admin/")
    await page.fill("#email", email)
    await page.fill("#password", password)
    await page.click("#login-form button[type=submit]")
    await expect(page.get_by_role("navigation", name="Sections")).to_be_visible(timeout=WAIT_MS)


async def login_status(server: Running, email: str, password: str) -> int:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{server.url}/api/v1/session", json={"email": email, "password": password}, headers={"Origin": server.url}
        ) as response:
            return response.status


def settings_of(button: Button) -> dict[str, object]:
    return {name: getattr(button, name) for name in SETTINGS}


def thrown(errors: list[str]) -> list[str]:
    """The page's own errors: not the browser's note of each refused request ("Failed to load resource")."""
    return [e for e in errors if not e.startswith("console: Failed to load resource")]


async def test_an_admin_sets_up_an_agent_a_team_and_a_button(
    server: Running,
    database: Database,
    browser: Browser,  # noqa: F811
) -> None:
    organisation = await database.accounts.create_organisation(f"Admin org {uuid.uuid4().hex[:6]}")
    org = organisation.id
    email, password = await make_admin(database, org)
    agent_email = f"ada-{uuid.uuid4().hex[:8]}@example.test"

    context = await new_context(browser)
    page = await context.new_page()
    errors = page_errors(page)
    await log_in(page, server, email, password)

    # An agent, with the team's own agent ID and a phone number.
    await page.get_by_role("link", name="Users").click()
    await page.get_by_role("button", name="New user").click()
    form = page.locator("#user-form")
    await form.get_by_label("Name", exact=True).fill("Ada Lovelace")
    await form.get_by_label("Email", exact=True).fill(agent_email)
    await form.get_by_label("Role").select_option("agent")
    await form.get_by_label("Agent ID").fill("A-17")
    await form.get_by_label("Phone").fill("+33 1 23 45 67 89")
    await form.get_by_label("Password", exact=True).fill("a long enough password")
    await form.get_by_role("button", name="Create user").click()
    await expect(page.locator("#users-status")).to_have_text("Created Ada Lovelace.", timeout=WAIT_MS)
    await expect(form).to_be_hidden()
    row = page.locator("#users-rows tr", has_text=agent_email)
    for text in ("Ada Lovelace", "Agent", "A-17", "+33 1 23 45 67 89", "Offline"):
        await expect(row).to_contain_text(text)
    agent = await database.accounts.user_by_email(agent_email)
    assert agent is not None and agent.organisation_id == org
    assert (agent.display_name, agent.role, agent.agent_code, agent.phone, agent.disabled) == (
        "Ada Lovelace",
        "agent",
        "A-17",
        "+33 1 23 45 67 89",
        False,
    )

    # A team with that agent in it.
    await page.get_by_role("link", name="Teams").click()
    await page.get_by_role("button", name="New team").click()
    form = page.locator("#team-form")
    await form.get_by_label("Team name").fill("Paris desk")
    await form.get_by_label("Ada Lovelace").check()
    await form.get_by_role("button", name="Create team").click()
    await expect(page.locator("#teams-status")).to_have_text("Created Paris desk.", timeout=WAIT_MS)
    await expect(page.locator("#teams-rows td")).to_have_text(["Paris desk", "Ada Lovelace", "EditDelete"])
    (team,) = await database.teams.all(org)
    assert (team.name, team.members) == ("Paris desk", (agent.id,))

    # A button ringing the team, the longest idle agent first, on Mondays 9 to 5 in Paris. It is first
    # refused for its allowed origin: the server's message shows by the form and nothing is stored.
    await page.get_by_role("link", name="Buttons").click()
    await page.get_by_role("button", name="New button").click()
    form = page.locator("#button-form")
    await form.get_by_label("Button name").fill("Sales line")
    await form.get_by_label("Websites allowed to embed it").fill("not a url")
    await form.get_by_label("Paris desk").check()
    await form.get_by_label("Strategy").select_option(label="Longest idle")
    await form.get_by_label("Always open").uncheck()
    await form.get_by_label("Monday", exact=True).check()
    await form.get_by_label("Monday hours 1: from").fill("09:00")
    await form.get_by_label("Monday hours 1: until").fill("17:00")
    await form.get_by_label("Time zone").fill("Europe/Paris")
    await form.get_by_label("Ask for the visitor's email").select_option(label="Required")
    await form.get_by_label("Language").select_option(label="Français")
    await form.get_by_role("button", name="Create button").click()
    await expect(form.get_by_role("alert")).to_have_text(
        "field 'allowed_origins': 'not a url' is not an origin such as https://www.example.com", timeout=WAIT_MS
    )
    await expect(form).to_be_visible()
    await expect(page.locator("#buttons-empty")).to_have_text("No buttons yet.")
    assert await database.buttons.all(org) == []

    await form.get_by_label("Websites allowed to embed it").fill("https://shop.example.com")
    await form.get_by_role("button", name="Create button").click()
    await expect(page.locator("#buttons-status")).to_have_text("Created Sales line.", timeout=WAIT_MS)
    await expect(form).to_be_hidden()
    # What the admin did not touch has the server's defaults (Button's, and the ring timeout's).
    (button,) = await database.buttons.all(org)
    assert settings_of(button) == {
        "name": "Sales line",
        "allowed_origins": ("https://shop.example.com",),
        "ring_timeout_s": None,
        "recording_enabled": False,
        "recording_notice": Button.recording_notice,
        "strategy": "longest_idle",
        "max_queue_wait_s": Button.max_queue_wait_s,
        "wrap_up_s": Button.wrap_up_s,
        "opening_hours": {"mon": [["09:00", "17:00"]]},
        "time_zone": "Europe/Paris",
        "closed_message": Button.closed_message,
        "form_fields": {**DEFAULT_FORM, "email": "required"},
        "language": "fr",
        "colour": Button.colour,
        "position": Button.position,
        "clips_per_call": Button.clips_per_call,
        "clip_max_mb": Button.clip_max_mb,
    }
    assert await database.buttons.targets(org, button.id) == ([], [team.id])
    item = page.locator("#buttons-list li", has_text="Sales line")
    for text in ("Paris desk", "Longest idle", f"Mon 09:00{DASH}17:00 (Europe/Paris)", "https://shop.example.com"):
        await expect(item).to_contain_text(text)
    await expect(item.get_by_label("Embed code", exact=True)).to_have_value(
        f'<script src="{server.url}/widget.js" data-button="{button.public_key}" async></script>'
    )
    await expect(item.get_by_label("Embed code", exact=True)).not_to_be_editable()

    # Disabling the agent.
    await page.get_by_role("link", name="Users").click()
    await page.get_by_role("button", name="Disable Ada Lovelace").click()
    await expect(page.locator("#users-status")).to_have_text(
        "Ada Lovelace is disabled and logged out.", timeout=WAIT_MS
    )
    await expect(row).to_contain_text("Disabled")
    await expect(row.get_by_role("button", name="Enable Ada Lovelace")).to_be_focused()
    agent = await database.accounts.user_by_email(agent_email)
    assert agent is not None and agent.disabled

    assert await csp_violations(page) == []
    assert thrown(errors) == []
    await context.close()


async def test_an_admin_edits_and_deletes(
    server: Running,
    database: Database,
    browser: Browser,  # noqa: F811
) -> None:
    (tenant,) = await make_tenant(database)
    org = tenant.organisation_id
    email, password = await make_admin(database, org)
    team = await database.teams.create(org, "Night shift")
    assert await database.teams.set_members(org, team.id, [tenant.agent_id])
    await database.teams.create(org, "Weekend")

    context = await new_context(browser)
    page = await context.new_page()
    errors = page_errors(page)
    await log_in(page, server, email, password)

    # A new name, phone and password for the agent; the old password stops working.
    await page.get_by_role("link", name="Users").click()
    await page.get_by_role("button", name="Edit Agent 0").click()
    # An admin can neither disable nor delete their own account.
    await expect(page.locator("#users-rows tr", has_text=email).get_by_role("button")).to_have_text(["Edit"])
    form = page.locator("#user-form")
    await expect(form.get_by_label("Email", exact=True)).to_have_value(tenant.agent_email)
    await form.get_by_label("Name", exact=True).fill("Agent Zero")
    await form.get_by_label("Phone").fill("+44 20 7946 0000")
    await form.get_by_label("New password").fill("a brand new passphrase")
    await form.get_by_role("button", name="Save user").click()
    await expect(page.locator("#users-status")).to_have_text("Saved Agent Zero.", timeout=WAIT_MS)
    agent = await database.accounts.user_by_email(tenant.agent_email)
    assert agent is not None and (agent.display_name, agent.phone) == ("Agent Zero", "+44 20 7946 0000")
    assert await login_status(server, tenant.agent_email, "a brand new passphrase") == 200
    assert await login_status(server, tenant.agent_email, tenant.agent_password) == 401

    # The team renamed and emptied; first refused for a name another team has, which changes nothing.
    await page.get_by_role("link", name="Teams").click()
    await page.get_by_role("button", name="Edit Night shift").click()
    form = page.locator("#team-form")
    await form.get_by_label("Team name").fill("Weekend")
    await form.get_by_label("Agent Zero").uncheck()
    await form.get_by_role("button", name="Save team").click()
    await expect(form.get_by_role("alert")).to_have_text("a team named 'Weekend' exists already", timeout=WAIT_MS)
    assert {t.name: t.members for t in await database.teams.all(org)} == {
        "Night shift": (tenant.agent_id,),
        "Weekend": (),
    }
    await form.get_by_label("Team name").fill("Day shift")
    await form.get_by_role("button", name="Save team").click()
    await expect(page.locator("#teams-rows td")).to_have_text(
        ["Day shift", "No members", "EditDelete", "Weekend", "No members", "EditDelete"], timeout=WAIT_MS
    )
    assert {t.name: t.members for t in await database.teams.all(org)} == {"Day shift": (), "Weekend": ()}

    # The button: ringing the agent in turn, on Tuesdays in two ranges, recorded, and restyled.
    await page.get_by_role("link", name="Buttons").click()
    await page.get_by_role("button", name="Edit Support").click()
    form = page.locator("#button-form")
    await expect(form.get_by_label("Websites allowed to embed it")).to_have_value(VISITOR_ORIGIN)
    await form.get_by_label("Agent Zero").check()
    await form.get_by_label("Strategy").select_option("round_robin")
    await form.get_by_label("Ring each agent for (seconds)").fill("15")
    await form.get_by_label("Always open").uncheck()
    await form.get_by_label("Tuesday", exact=True).check()
    await expect(form.get_by_label("Tuesday hours 1: from")).to_have_value("09:00")
    await form.get_by_role("button", name="Add hours on Tuesday").click()
    await expect(form.get_by_label("Tuesday hours 2: from")).to_be_focused()
    await page.keyboard.type("18:00")
    await form.get_by_label("Tuesday hours 2: until").fill("20:00")
    await form.get_by_label("Time zone").fill("America/New_York")
    await form.get_by_label("Record calls").check()
    await form.get_by_label("Notice the visitor accepts").fill("Calls are recorded for training.")
    await form.get_by_label("Colour").fill("#aa3300")
    await form.get_by_label("Position on the page").select_option(label="Bottom left")
    await form.get_by_role("button", name="Save button").click()
    await expect(page.locator("#buttons-status")).to_have_text("Saved Support.", timeout=WAIT_MS)
    (button,) = await database.buttons.all(org)
    assert settings_of(button) == {
        "name": "Support",
        "allowed_origins": (VISITOR_ORIGIN,),
        "ring_timeout_s": 15,
        "recording_enabled": True,
        "recording_notice": "Calls are recorded for training.",
        "strategy": "round_robin",
        "max_queue_wait_s": Button.max_queue_wait_s,
        "wrap_up_s": Button.wrap_up_s,
        "opening_hours": {"tue": [["09:00", "17:00"], ["18:00", "20:00"]]},
        "time_zone": "America/New_York",
        "closed_message": Button.closed_message,
        "form_fields": DEFAULT_FORM,
        "language": "en",
        "colour": "#aa3300",
        "position": "bottom-left",
        "clips_per_call": Button.clips_per_call,
        "clip_max_mb": Button.clip_max_mb,
    }
    assert await database.buttons.targets(org, button.id) == ([tenant.agent_id], [])
    await expect(page.locator("#buttons-list li")).to_contain_text(
        f"Tue 09:00{DASH}17:00, 18:00{DASH}20:00 (America/New_York)"
    )

    # Deleting asks first; Cancel (here by keyboard, Escape) keeps the button.
    delete = page.get_by_role("button", name="Delete Support")
    await delete.focus()
    await page.keyboard.press("Enter")
    confirm = page.get_by_role("button", name="Confirm deleting Support")
    await expect(confirm).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(delete).to_be_focused()
    assert len(await database.buttons.all(org)) == 1
    await page.keyboard.press("Enter")
    await page.keyboard.press("Enter")
    await expect(page.locator("#buttons-status")).to_have_text("Deleted Support.", timeout=WAIT_MS)
    await expect(page.locator("#buttons-empty")).to_be_visible()
    assert await database.buttons.all(org) == []

    await page.get_by_role("link", name="Teams").click()
    await page.get_by_role("button", name="Delete Day shift").click()
    await page.get_by_role("button", name="Confirm deleting Day shift").click()
    await expect(page.locator("#teams-status")).to_have_text("Deleted Day shift.", timeout=WAIT_MS)
    await expect(page.locator("#teams-rows tr")).to_have_count(1)
    assert [t.name for t in await database.teams.all(org)] == ["Weekend"]

    await page.get_by_role("link", name="Users").click()
    await page.get_by_role("button", name="Delete Agent Zero").click()
    await page.get_by_role("button", name="Confirm deleting Agent Zero").click()
    await expect(page.locator("#users-status")).to_have_text("Deleted Agent Zero.", timeout=WAIT_MS)
    await expect(page.locator("#users-rows tr")).to_have_count(1)
    assert await database.accounts.user_by_email(tenant.agent_email) is None

    assert await csp_violations(page) == []
    assert thrown(errors) == []
    await context.close()
