"""An admin works through the Privacy section of the admin page, in headless Chromium: retention and the
purge, legal holds, a caller's rights (what is held, export, restriction, rectification, erasure), the
deletion receipts, the record of processing, and the organisation's termination.

Through the real server and Postgres: one call is real (answered, recorded, with the visitor's form
answers), the others are inserted as history; the page is driven as an admin would, and each step is
checked against the rows, files and downloads it leaves. Run inside a loopback-only network namespace
(see test_browser).
"""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import re
import uuid
import zipfile
from pathlib import Path

import pytest
from playwright.async_api import Browser, Download, Page, expect

from server.app import Running
from server.appkeys import RECORDINGS
from storage.db import Database
from storage.retention import CATEGORIES
from storage.subjects import PURPOSES
from tests.browser import csp_violations, new_context
from tests.conftest import Tenant, answered_call_for, make_admin, make_tenant
from tests.test_browser import browser, page_errors, playwright  # noqa: F401 - fixtures
from tests.test_browser_admin import log_in, thrown
from tests.test_browser_admin_calls import ended_calls
from tests.test_recording import finished_recording

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

WAIT_MS = 5000
DASH = "\N{EN DASH}"  # what the page shows for a figure it does not have
ANY = re.compile(".")  # a cell whose text (a local time) the test does not pin down
GRACE = {"name": "Grace Hopper", "email": "grace@example.test", "phone": "+1 555 0100"}
FORM = {"name": "optional", "email": "optional", "phone": "optional"}


async def call_with_form(server: Running, tenant: Tenant, answers: dict[str, str], talk_seconds: float) -> str:
    """A call answered at once, from a visitor who filled in the pre-call form with ``answers``."""
    visitor, agent, call_id = await answered_call_for(server.url, tenant, visitor=answers)
    try:
        await asyncio.sleep(talk_seconds)
        await visitor.send({"type": "hangup"})
        await agent.expect("call_state", call_id=call_id, state="ended")
        return call_id
    finally:
        await visitor.close()
        await agent.close()


async def past_call(database: Database, tenant: Tenant, days_ago: int, name: str, email: str) -> uuid.UUID:
    """An unanswered call of ``days_ago`` days ago, from a visitor who gave their name and email."""
    call_id = uuid.uuid4()
    at = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days_ago)
    await database.pool.execute(
        """
        INSERT INTO calls (id, organisation_id, button_id, state, end_reason, created_at, queued_at, ended_at,
                           visitor_name, visitor_email)
        VALUES ($1, $2, $3, 'ended', 'no_answer', $4, $4, $4::timestamptz + interval '30 seconds', $5, $6)
        """,
        call_id,
        tenant.organisation_id,
        tenant.button_id,
        at,
        name,
        email,
    )
    return call_id


async def saved(download: Download) -> bytes:
    return await asyncio.to_thread(Path(await download.path()).read_bytes)


async def confirm(page: Page, verb: str, doing: str, name: str) -> None:
    """Presses a button that asks first (dom.js deleteButton), then its confirmation."""
    await page.get_by_role("button", name=f"{verb} {name}", exact=True).click()
    await page.get_by_role("button", name=f"Confirm {doing} {name}", exact=True).click()


async def test_an_admin_sets_retention_holds_data_and_answers_a_callers_requests(
    server: Running,
    database: Database,
    browser: Browser,  # noqa: F811
) -> None:
    (tenant,) = await make_tenant(database, recording=True, form_fields=FORM)
    org = tenant.organisation_id
    organisation = await database.accounts.organisation(org)
    assert organisation is not None
    # Grace called today (answered, recorded), and 400 days ago (unanswered); she asked for a callback.
    # Alan called 400 days ago: past the calls' default retention of 365 days.
    call_id = uuid.UUID(await call_with_form(server, tenant, GRACE, talk_seconds=1.0))
    record = await finished_recording(server.runner.app[RECORDINGS], tenant, str(call_id))
    await ended_calls(database, tenant, 1)
    old_id = await past_call(database, tenant, 400, "Grace Hopper", "grace@example.test")
    alan_id = await past_call(database, tenant, 400, "Alan Turing", "alan@example.test")
    callback_id = await database.pool.fetchval(
        "INSERT INTO callback_requests (organisation_id, button_id, name, email, reason) "
        "VALUES ($1, $2, 'Grace Hopper', 'grace@example.test', 'no_agent') RETURNING id",
        org,
        tenant.button_id,
    )
    grace_calls = [call_id, old_id]
    row = await database.pool.fetchrow("SELECT visitor_email, visitor_phone FROM calls WHERE id = $1", call_id)
    assert (row["visitor_email"], row["visitor_phone"]) == ("grace@example.test", "+1 555 0100")
    email, password = await make_admin(database, org)

    context = await new_context(browser)
    page = await context.new_page()
    errors = page_errors(page)
    await log_in(page, server, email, password)
    await page.get_by_role("link", name="Privacy").click()
    await expect(page.get_by_role("heading", name="Privacy", exact=True)).to_be_visible()

    # Retention: a value out of range is refused with the server's words, then a policy is saved.
    retention = page.locator("#retention-form")
    await expect(retention.get_by_label("Calls: days kept")).to_have_value("365", timeout=WAIT_MS)
    await retention.get_by_label("Audit log: days kept").fill("10")
    await retention.get_by_role("button", name="Save retention").click()
    await expect(retention.get_by_role("alert")).to_have_text(
        "field 'audit' must be a whole number from 30 to 36500", timeout=WAIT_MS
    )
    assert await database.pool.fetchval("SELECT count(*) FROM retention_policies WHERE organisation_id = $1", org) == 0
    await retention.get_by_label("Audit log: days kept").fill("730")
    await retention.get_by_label("Recordings: days kept").fill("30")
    await retention.get_by_label("Keep callback requests until deleted by hand").check()
    await expect(retention.get_by_label("Callback requests: days kept")).to_be_disabled()
    await retention.get_by_role("button", name="Save retention").click()
    await expect(page.locator("#retention-status")).to_have_text(
        "Saved the retention. The next purge applies it to the data already stored.", timeout=WAIT_MS
    )
    await expect(retention.get_by_role("alert")).to_be_hidden()
    policy = await database.pool.fetchrow("SELECT * FROM retention_policies WHERE organisation_id = $1", org)
    assert policy is not None
    kept = {c: policy[f"{c}_days"] for c in CATEGORIES}
    assert kept == {"recordings": 30, "clips": 90, "calls": 365, "callbacks": None, "audit": 730, "webhook_log": 30}

    # A legal hold on Grace, by her email.
    holds = page.locator("#hold-form")
    await holds.get_by_label("One person, by email or phone").check()
    await holds.get_by_label("Email of the person").fill("grace@example.test")
    await holds.get_by_label("Reason").fill("Complaint 42")
    await holds.get_by_role("button", name="Place hold").click()
    await expect(page.locator("#holds-status")).to_have_text("Placed the hold “Complaint 42”.", timeout=WAIT_MS)
    hold_rows = page.locator("#holds-rows tr")
    await expect(hold_rows).to_have_count(1)
    await expect(hold_rows.locator("td").nth(0)).to_have_text("Person: grace@example.test")
    await expect(hold_rows.locator("td").nth(3)).to_have_text("Active")
    hold = await database.pool.fetchrow("SELECT * FROM legal_holds WHERE organisation_id = $1", org)
    assert (hold["scope"], hold["subject_email"], hold["reason"], hold["lifted_at"]) == (
        "subject",
        "grace@example.test",
        "Complaint 42",
        None,
    )
    await expect(hold_rows).to_have_attribute("data-hold", str(hold["id"]))

    # The purge, previewed: Alan's old call is due; Grace's is too, but kept by the hold.
    await page.get_by_role("button", name="Preview purge").click()
    await expect(page.locator("#retention-status")).to_have_text(
        "Previewed the purge: nothing was deleted.", timeout=WAIT_MS
    )
    await expect(page.locator("#purge-result-title")).to_have_text("What a purge would delete now")
    await expect(page.locator('#purge-result tr[data-category="calls"] td')).to_have_text(["365 days", "1", "1"])
    await expect(page.locator('#purge-result tr[data-category="recordings"] td')).to_have_text(["30 days", "0", "0"])
    await expect(page.locator('#purge-result tr[data-category="callbacks"] td')).to_have_text(
        ["Until deleted by hand", "0", DASH]
    )
    assert await database.pool.fetchval("SELECT count(*) FROM calls WHERE organisation_id = $1", org) == 3

    # Then run: Alan's call goes, with a receipt that says Grace's was kept.
    await confirm(page, "Purge now", "purging", "everything past its retention")
    await expect(page.locator("#retention-status")).to_have_text("Purged: Calls: 1.", timeout=WAIT_MS)
    await expect(page.locator("#purge-result-title")).to_have_text("What the purge deleted")
    await expect(page.locator("#purge-result-title")).to_be_focused()
    await expect(page.locator('#purge-result tr[data-category="calls"] td')).to_have_text(["365 days", "1", "1"])
    assert await database.pool.fetchval("SELECT count(*) FROM calls WHERE id = $1", alan_id) == 0
    assert await database.pool.fetchval("SELECT count(*) FROM calls WHERE id = ANY($1::uuid[])", grace_calls) == 2
    purge_receipt = page.locator('#receipts-rows tr[data-kind="purge"]')
    await expect(purge_receipt).to_have_count(1, timeout=WAIT_MS)
    await expect(purge_receipt.locator("td")).to_have_text([ANY, "Purge", "Admin", "Calls: 1", "Calls: 1", "Download"])
    async with page.expect_download() as download_info:
        await purge_receipt.get_by_role("link", name="Download the receipt of the purge of").click()
    download = await download_info.value
    receipt_id = await purge_receipt.get_attribute("data-receipt")
    assert download.suggested_filename == f"deletion-receipt-{receipt_id}.json"
    document = json.loads(await saved(download))
    assert (document["kind"], document["organisation"], document["deleted"]["calls"]) == ("purge", str(org), 1)
    assert document["kept_under_legal_hold"] == {"calls": 1}

    # Grace's data: two calls (one recorded), a callback request, and the hold.
    finder = page.get_by_role("search", name="Find a person's data")
    await finder.get_by_label("Email").fill("grace@example.test")
    await finder.get_by_role("button", name="Look up").click()
    title = page.locator("#subject-title")
    await expect(title).to_have_text("What is held about grace@example.test", timeout=WAIT_MS)
    await expect(title).to_be_focused()
    subject_facts = page.locator("#subject-facts dd")
    await expect(subject_facts).to_have_text(
        ["2", "1", "1", "Not restricted", "Yes: nothing of it can be erased until the hold is lifted"]
    )
    subject_calls = page.locator("#subject-calls tbody tr")
    await expect(subject_calls).to_have_count(2)
    await expect(subject_calls.nth(0)).to_have_attribute("data-call", str(old_id))
    await expect(subject_calls.nth(0).locator("td")).to_have_text(
        [ANY, "No answer", "Grace Hopper", "grace@example.test", DASH, "No"]
    )
    await expect(subject_calls.nth(1).locator("td").nth(4)).to_have_text("+1 555 0100")
    await expect(subject_calls.nth(1).locator("td").nth(5)).to_have_text("Yes")

    # Erasing is refused while the hold lasts: the server's own words.
    await confirm(page, "Erase", "erasing", "the data of grace@example.test")
    await expect(page.locator("#subject-error")).to_have_text(
        "a legal hold covers this person's data: lift it before erasing", timeout=WAIT_MS
    )
    await expect(page.get_by_role("button", name="Erase the data of grace@example.test")).to_be_focused()
    assert await database.pool.fetchval("SELECT count(*) FROM calls WHERE visitor_email = 'grace@example.test'") == 2

    # The hold is lifted.
    await confirm(page, "Lift", "lifting", "the hold “Complaint 42”")
    await expect(page.locator("#holds-status")).to_have_text("Lifted the hold “Complaint 42”.", timeout=WAIT_MS)
    await expect(hold_rows.locator("td").nth(3)).to_contain_text("Lifted")
    await expect(hold_rows.get_by_role("button")).to_have_count(0)
    assert await database.pool.fetchval("SELECT lifted_at FROM legal_holds WHERE id = $1", hold["id"]) is not None
    await finder.get_by_role("button", name="Look up").click()
    await expect(subject_facts.nth(4)).to_have_text("No", timeout=WAIT_MS)

    # Export: a zip with data.json (her calls, form answers, callback request) and her recording, decrypted.
    async with page.expect_download() as download_info:
        await page.get_by_role("button", name="Export the data of grace@example.test").click()
    download = await download_info.value
    assert download.suggested_filename.startswith("data-subject-export-")
    assert download.suggested_filename.endswith(".zip")
    await expect(page.locator("#subject-status")).to_have_text(
        f"Exported the data of grace@example.test as {download.suggested_filename}.", timeout=WAIT_MS
    )
    with zipfile.ZipFile(io.BytesIO(await saved(download))) as archive:
        assert sorted(archive.namelist()) == ["data.json", f"recordings/{record.id}.ogg"]
        data = json.loads(archive.read("data.json"))
        audio = archive.read(f"recordings/{record.id}.ogg")
    assert data["subject"] == {"email": "grace@example.test", "phone": None}
    assert [c["id"] for c in data["calls"]] == [str(old_id), str(call_id)]
    assert data["calls"][1]["form"] == {"name": "Grace Hopper", "email": "grace@example.test", "phone": "+1 555 0100"}
    assert [b["id"] for b in data["callback_requests"]] == [str(callback_id)]
    assert audio[:4] == b"OggS"

    # Restriction: kept, but flagged out of processing.
    await page.get_by_role("button", name="Restrict the processing of the data of grace@example.test").click()
    await expect(page.locator("#subject-status")).to_have_text(
        "Restricted the processing of the data of grace@example.test (calls 2, callback requests 1): "
        "it is kept, but left out.",
        timeout=WAIT_MS,
    )
    await expect(subject_facts.nth(3)).to_contain_text("Restricted")
    await expect(
        page.get_by_role("button", name="Lift the restriction on the data of grace@example.test")
    ).to_be_focused()
    assert await database.pool.fetch("SELECT restricted FROM calls WHERE id = ANY($1::uuid[])", grace_calls) == [
        (True,),
        (True,),
    ]
    assert await database.pool.fetchval("SELECT restricted FROM callback_requests WHERE id = $1", callback_id)

    # Rectification: her name, corrected on every call and the callback request.
    await page.get_by_role("button", name="Rectify the data of grace@example.test").click()
    rectify = page.locator("#rectify-form")
    await expect(rectify.get_by_label("Corrected name")).to_be_focused()
    await rectify.get_by_label("Corrected name").fill("Grace B. Hopper")
    await rectify.get_by_role("button", name="Save corrections").click()
    await expect(page.locator("#subject-status")).to_have_text(
        "Corrected the data of grace@example.test: calls 2, callback requests 1.", timeout=WAIT_MS
    )
    await expect(rectify).to_be_hidden()
    await expect(subject_calls.locator("td:nth-child(3)")).to_have_text(["Grace B. Hopper", "Grace B. Hopper"])
    names = await database.pool.fetch("SELECT visitor_name FROM calls WHERE id = ANY($1::uuid[])", grace_calls)
    assert [r["visitor_name"] for r in names] == ["Grace B. Hopper", "Grace B. Hopper"]

    # Erasure: recording destroyed, callback request deleted, calls anonymised; a receipt to keep.
    await confirm(page, "Erase", "erasing", "the data of grace@example.test")
    done = page.locator("#subject-receipt")
    await expect(done.get_by_role("heading")).to_have_text("Erased the data of grace@example.test", timeout=WAIT_MS)
    await expect(done).to_contain_text(
        "Recordings: 1, Calls anonymised: 2, Callback requests: 1, Restrictions: 1, Lifted holds on record: 1."
    )
    await expect(page.locator("#subject-status")).to_have_text("Erased the data of grace@example.test.")
    await expect(page.locator("#subject-result")).to_be_hidden()
    receipt_link = done.get_by_role(
        "link", name="Download the receipt of the erasure of the data of grace@example.test"
    )
    await expect(receipt_link).to_be_focused()
    rows = await database.pool.fetch(
        "SELECT visitor_name, visitor_email, visitor_phone, restricted, erased_at FROM calls "
        "WHERE id = ANY($1::uuid[])",
        grace_calls,
    )
    assert len(rows) == 2
    for erased in rows:
        assert (erased["visitor_name"], erased["visitor_email"], erased["visitor_phone"]) == (None, None, None)
        assert not erased["restricted"] and erased["erased_at"] is not None
    assert await database.pool.fetchval("SELECT count(*) FROM callback_requests WHERE id = $1", callback_id) == 0
    assert await database.pool.fetchval("SELECT state FROM recordings WHERE id = $1", record.id) == "deleted"
    assert not server.runner.app[RECORDINGS].path(org, record.id).exists()
    erasure = page.locator('#receipts-rows tr[data-kind="erasure"]')
    await expect(erasure).to_have_count(1, timeout=WAIT_MS)
    await expect(erasure.locator("td").nth(2)).to_have_text("Admin")
    await expect(erasure.locator("td").nth(3)).to_contain_text("Calls anonymised: 2")
    erasure_id = await erasure.get_attribute("data-receipt")
    assert erasure_id == await database.pool.fetchval(
        "SELECT id::text FROM deletion_receipts WHERE organisation_id = $1 AND kind = 'erasure'", org
    )
    async with page.expect_download() as download_info:
        await receipt_link.click()
    document = json.loads(await saved(await download_info.value))
    assert (document["receipt"], document["kind"], document["deleted"]["recordings"]) == (erasure_id, "erasure", 1)
    # The erasure took the record of her lifted hold with it.
    await expect(hold_rows).to_have_count(0)
    await expect(page.locator("#holds-empty")).to_be_visible()
    # Each request is on record, newest first, without naming her.
    await expect(page.locator("#requests-rows tr")).to_have_count(4)
    kinds = [await r.get_attribute("data-kind") for r in await page.locator("#requests-rows tr").all()]
    assert kinds == ["erase", "rectify", "restrict", "export"]
    await expect(page.locator("#requests-rows")).not_to_contain_text("grace")

    # Nothing is left to find.
    await finder.get_by_role("button", name="Look up").click()
    await expect(subject_facts.first).to_have_text("0", timeout=WAIT_MS)
    await expect(subject_facts).to_have_text(["0", "0", "0", "Not restricted", "No"])
    await expect(page.locator("#subject-calls")).to_have_text("No calls.")

    # The record of processing, from the live configuration, and as Markdown.
    record_body = page.locator("#record-body")
    await expect(record_body.locator("dd").first).to_have_text(organisation.name)
    await expect(record_body.locator('tr[data-category="recordings"] td')).to_have_text(
        ["two-channel audio of calls (buttons: Support)", "callers and agents", PURPOSES["recordings"], "30 days"]
    )
    await expect(record_body.locator('tr[data-category="callbacks"] td').last).to_have_text("until deleted by an admin")
    await expect(record_body.locator('tr[data-category="calls"] td').first).to_contain_text("caller's email")
    await expect(record_body).to_contain_text("None: no webhook is set up.")
    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Download as Markdown").click()
    download = await download_info.value
    assert download.suggested_filename == "record-of-processing.md"
    markdown = (await saved(download)).decode()
    assert markdown.startswith(f"# Record of processing: {organisation.name}\n")
    assert "| recordings | two-channel audio of calls |" in markdown

    assert await csp_violations(page) == []
    assert thrown(errors) == []
    await context.close()

    audited = {
        r["action"] for r in await database.pool.fetch("SELECT action FROM audit_log WHERE organisation_id = $1", org)
    }
    assert {
        "retention.update",
        "retention.purge",
        "hold.create",
        "hold.lift",
        "subject.lookup",
        "subject.export",
        "subject.restrict",
        "subject.rectify",
        "subject.erase",
    } <= audited


async def test_an_admin_terminates_the_organisation_and_keeps_its_receipt(
    server: Running,
    database: Database,
    browser: Browser,  # noqa: F811
) -> None:
    (tenant,) = await make_tenant(database)
    org = tenant.organisation_id
    organisation = await database.accounts.organisation(org)
    assert organisation is not None
    await past_call(database, tenant, 3, "Ada Lovelace", "ada@example.test")
    email, password = await make_admin(database, org)

    context = await new_context(browser)
    page = await context.new_page()
    errors = page_errors(page)
    await log_in(page, server, email, password)
    await page.get_by_role("link", name="Privacy").click()
    danger = page.get_by_role("group", name="Danger zone")
    await expect(danger.locator("#tz-confirm-hint")).to_have_text(
        f"Type the organisation's name exactly: {organisation.name}", timeout=WAIT_MS
    )

    # A name that is not the organisation's: refused, in the server's words, and nothing deleted.
    await danger.get_by_label("Name of the organisation, to confirm").fill(organisation.name.lower())
    await danger.get_by_role("button", name="Terminate the organisation").click()
    await expect(danger.get_by_role("alert")).to_have_text(
        "field 'confirm' must repeat the organisation's name exactly", timeout=WAIT_MS
    )
    assert await database.accounts.organisation(org) is not None

    await danger.get_by_label("Name of the organisation, to confirm").fill(organisation.name)
    await danger.get_by_role("button", name="Terminate the organisation").click()
    await expect(danger.get_by_role("heading", name="Your organisation no longer exists")).to_be_visible(
        timeout=WAIT_MS
    )
    await expect(page.locator("#terminate-status")).to_have_text("The organisation was terminated.")
    await expect(danger.get_by_role("alert")).to_be_hidden()
    await expect(page.locator("#terminate-form")).to_be_hidden()
    link = danger.get_by_role("link", name="Download the deletion receipt")
    await expect(link).to_be_focused()
    receipt_id = await database.pool.fetchval(
        "SELECT id::text FROM deletion_receipts WHERE organisation_id = $1 AND kind = 'termination'", org
    )
    assert receipt_id is not None
    async with page.expect_download() as download_info:
        await link.click()
    download = await download_info.value
    assert download.suggested_filename == f"deletion-receipt-{receipt_id}.json"
    document = json.loads(await saved(download))
    assert (document["receipt"], document["organisation"], document["kind"]) == (receipt_id, str(org), "termination")
    assert document["deleted"]["calls"] == 1 and document["deleted"]["users"] == 2
    assert json.loads(await danger.locator("pre").inner_text()) == document

    # Everything is gone, the admin's session with it: the next request finds the page logged out.
    assert await database.accounts.organisation(org) is None
    assert await database.pool.fetchval("SELECT count(*) FROM calls WHERE organisation_id = $1", org) == 0
    assert await database.accounts.user_by_email(email) is None
    await page.get_by_role("link", name="Calls").click()
    await expect(page.locator("#login-error")).to_have_text("Your session has ended. Log in again.", timeout=WAIT_MS)
    await expect(page.locator("#terminated")).to_be_hidden()

    assert await csp_violations(page) == []
    assert thrown(errors) == []
    await context.close()
