"""Clips in the browsers: a visitor in a call sends a photo from the widget (on a customer's page with a
strict CSP), the agent console shows it at once, cleaned of where it was taken, and the admin's call page
lists it. A file the server refuses is shown as refused, with the server's reason.

Run inside a loopback-only network namespace:

    unshare -n sh -c 'ip link set lo up && .venv/bin/python -m pytest tests/test_browser_clips.py'
"""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image
from playwright.async_api import Browser, Page, expect

from server.app import Running
from storage.db import Database
from tests.browser import HostSite, Org, csp_violations, make_org, new_context
from tests.conftest import make_admin
from tests.test_browser import (  # noqa: F401 - fixtures
    MEDIA_WAIT_MS,
    WAIT_MS,
    browser,
    call_button,
    host_site,
    open_agent,
    open_visitor,
    page_errors,
    playwright,
    widget_status,
)
from tests.test_browser_admin import log_in, thrown
from tests.test_clips import GPS, photo_with_location

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

IMAGE_LOADED = (
    "() => { const i = document.querySelector('#call-clips img'); return i?.complete && i.naturalWidth > 0; }"
)
FETCH_BYTES = "async (url) => Array.from(new Uint8Array(await (await fetch(url)).arrayBuffer()))"


def widget(page: Page, selector: str):  # type: ignore[no-untyped-def]
    return page.locator(f"callbutton-widget {selector}")


async def in_call(visitor: Page, agent: Page, org: Org) -> str:
    """The visitor calls through the widget and the agent answers in the console: the call's id."""
    await call_button(visitor, org).click()
    ring = agent.locator("#rings .ring")
    await expect(ring).to_have_count(1, timeout=MEDIA_WAIT_MS)
    call_id = await ring.get_attribute("data-call-id")
    assert call_id is not None
    await ring.get_by_role("button", name="Accept").click()
    await expect(widget_status(visitor)).to_have_text("In call", timeout=MEDIA_WAIT_MS)
    await expect(agent.get_by_role("heading", name="In call")).to_be_visible(timeout=WAIT_MS)
    return call_id


async def test_a_photo_sent_during_a_call_reaches_the_agent_at_once_without_its_location(
    server: Running,
    database: Database,
    browser: Browser,  # noqa: F811
    host_site: HostSite,  # noqa: F811
) -> None:
    org = await make_org(database, host_site.origin)
    photo, pixels = photo_with_location()
    assert Image.open(io.BytesIO(photo)).getexif().get_ifd(GPS), "the photo says where it was taken"
    agent_context = await new_context(browser)
    visitor_context = await new_context(browser)
    admin_context = await new_context(browser)
    try:
        agent = await open_agent(agent_context, server, org)
        agent_errors = page_errors(agent)
        visitor = await open_visitor(visitor_context, host_site, org)
        visitor_errors = page_errors(visitor)

        # Before the call there is nothing to send with.
        send_file = visitor.get_by_label("Send a photo or file")
        await expect(send_file).to_be_hidden()

        call_id = await in_call(visitor, agent, org)
        await expect(widget(visitor, ".clips-title")).to_have_text("Show us the problem")
        await expect(widget(visitor, ".clip-limits")).to_contain_text("JPEG or PNG photos up to 15 MB")
        await expect(send_file).to_have_attribute("accept", "image/jpeg,image/png,video/webm,video/mp4,application/pdf")
        await expect(visitor.get_by_role("button", name="Record screen")).to_be_visible()
        await expect(visitor.get_by_role("button", name="Record camera")).to_be_visible()

        # The visitor picks a photo taken with a phone: it carries where and with what it was taken.
        await send_file.set_input_files(files=[{"name": "teapot.jpg", "mimeType": "image/jpeg", "buffer": photo}])
        item = widget(visitor, ".clip-item")
        await expect(item).to_have_count(1)
        await expect(item).to_have_attribute("data-state", "done", timeout=WAIT_MS)
        await expect(item.locator(".clip-state")).to_have_text("Sent")
        progress = visitor.get_by_role("progressbar", name="Sending teapot.jpg")
        await expect(progress).to_have_attribute("aria-valuenow", "100")

        # The agent sees it within a second, in the caller panel of the call.
        image = agent.locator("#call-clips img")
        await expect(image).to_be_visible(timeout=1000)
        await agent.wait_for_function(IMAGE_LOADED, timeout=WAIT_MS)
        assert await image.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [64, 48]
        await expect(image).to_have_attribute("alt", "Photo from the caller: teapot.jpg")
        await expect(agent.locator("#call-clips .clip-title")).to_contain_text("Photo teapot.jpg · JPEG")
        await expect(agent.locator("#clips-status")).to_have_text("The caller sent a photo: teapot.jpg.")
        src = await image.get_attribute("src")
        assert src is not None and src.startswith("/api/v1/clips/")
        download = agent.get_by_role("link", name="Download the photo teapot.jpg (JPEG)")
        await expect(download).to_have_attribute("href", f"{src}?download=1")

        # What the agent gets has the same pixels, and neither the location nor the phone's details.
        shown = bytes(await agent.evaluate(FETCH_BYTES, src))
        cleaned = Image.open(io.BytesIO(shown))
        assert cleaned.tobytes() == pixels
        exif = cleaned.getexif()
        assert not exif.get_ifd(GPS) and 0x010F not in exif and 0x0110 not in exif
        assert b"SERIAL-123456" not in shown and b"Phonemaker" not in shown

        # A file that only claims to be a PDF: the server refuses it and the widget says why.
        await send_file.set_input_files(
            files=[{"name": "invoice.pdf", "mimeType": "application/pdf", "buffer": b"just some text, no PDF"}]
        )
        refused = item.nth(1)
        await expect(refused).to_have_attribute("data-state", "failed", timeout=WAIT_MS)
        await expect(refused.locator(".clip-state")).to_have_text(
            re.compile(r"^Not sent: .*refused.*Accepted are JPEG or PNG photos")
        )
        await expect(refused.get_by_role("button", name="Retry sending invoice.pdf")).to_be_hidden()
        # One the widget itself knows it cannot send, before uploading anything.
        await send_file.set_input_files(files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}])
        await expect(widget(visitor, ".clip-error")).to_have_text(
            "notes.txt: This kind of file cannot be sent. Accepted: JPEG or PNG photos, WebM or MP4 videos, "
            "PDF documents."
        )
        await expect(item).to_have_count(2)
        await expect(agent.locator("#call-clips .clip")).to_have_count(1)

        await visitor.get_by_role("button", name="Hang up").click()
        await expect(widget_status(visitor)).to_have_text("Call ended.", timeout=WAIT_MS)
        await expect(send_file).to_be_hidden()
        # The agent keeps the photo in view with the last call.
        await expect(agent.get_by_role("heading", name="Last call")).to_be_visible(timeout=WAIT_MS)
        await expect(image).to_be_visible()

        assert await csp_violations(visitor) == []
        assert await csp_violations(agent) == []
        assert thrown(visitor_errors) == [] and agent_errors == []

        # The admin's page of the call lists the photo.
        email, password = await make_admin(database, org.organisation_id)
        admin = await admin_context.new_page()
        admin_errors = page_errors(admin)
        await log_in(admin, server, email, password)
        await admin.goto(f"{server.url}/admin/#calls/{call_id}")
        clips = admin.locator("#call-clips .clip")
        await expect(clips).to_have_count(1, timeout=WAIT_MS)
        await expect(admin.get_by_role("heading", name="Sent by the caller")).to_be_visible()
        await expect(clips.get_by_role("heading", name="Photo: teapot.jpg")).to_be_visible()
        admin_image = clips.locator("img")
        await expect(admin_image).to_have_attribute("src", src)
        await admin_image.scroll_into_view_if_needed()
        await admin.wait_for_function(IMAGE_LOADED, timeout=WAIT_MS)
        await expect(clips.get_by_role("link", name="Download the photo teapot.jpg (JPEG)")).to_have_attribute(
            "href", f"{src}?download=1"
        )
        assert await csp_violations(admin) == []
        assert thrown(admin_errors) == []
    finally:
        await admin_context.close()
        await visitor_context.close()
        await agent_context.close()


async def test_a_callback_request_carries_a_camera_recording_and_a_photo_to_every_agent(
    server: Running,
    database: Database,
    browser: Browser,  # noqa: F811
    host_site: HostSite,  # noqa: F811
) -> None:
    org = await make_org(database, host_site.origin)
    photo, _ = photo_with_location()
    agent_context = await new_context(browser)
    visitor_context = await new_context(browser)
    try:
        # The agent is logged in but away: nobody can take the call, so the visitor leaves a request.
        agent = await agent_context.new_page()
        await agent.goto(f"{server.url}/agent/")
        await agent.get_by_label("Email").fill(org.agent_email)
        await agent.get_by_label("Password").fill(org.agent_password)
        await agent.get_by_role("button", name="Log in").click()
        await expect(agent.locator("#presence")).to_have_text("Away", timeout=WAIT_MS)
        agent_errors = page_errors(agent)

        visitor = await open_visitor(visitor_context, host_site, org)
        visitor_errors = page_errors(visitor)
        await call_button(visitor, org).click()
        await expect(widget_status(visitor)).to_have_text(
            "No one is available to take your call right now.", timeout=MEDIA_WAIT_MS
        )
        form = widget(visitor, ".callback")
        await form.get_by_label("Email").fill("ada@example.test")
        await visitor.get_by_role("button", name="Request a callback").click()
        await expect(widget(visitor, ".done")).to_have_text("Thank you. We will call you back.", timeout=WAIT_MS)
        request = agent.locator("#callback-list .callback")
        await expect(request).to_have_count(1, timeout=WAIT_MS)

        # With the request, the visitor records a few seconds of camera, then a photo.
        record = visitor.get_by_role("button", name="Record camera")
        await record.click()
        stop = visitor.get_by_role("button", name="Stop recording")
        await expect(stop).to_be_focused(timeout=WAIT_MS)
        await expect(stop).to_have_attribute("aria-pressed", "true")
        await expect(visitor.get_by_role("button", name="Record screen")).to_be_disabled()
        await expect(widget(visitor, ".clip-recording")).to_have_text(re.compile(r"^Recording… 00:0[0-2]$"))
        await visitor.wait_for_timeout(2000)
        await stop.click()
        await expect(record).to_be_visible()
        items = widget(visitor, ".clip-item")
        await expect(items).to_have_count(1)
        await expect(items.first).to_have_attribute("data-state", "done", timeout=MEDIA_WAIT_MS)
        await expect(items.first.locator(".clip-name")).to_contain_text("camera-recording.webm")
        await visitor.get_by_label("Send a photo or file").set_input_files(
            files=[{"name": "teapot.jpg", "mimeType": "image/jpeg", "buffer": photo}]
        )
        await expect(items.nth(1)).to_have_attribute("data-state", "done", timeout=WAIT_MS)

        # Every agent sees them on the request, as they arrive.
        clips = request.locator(".callback-clips .clip")
        await expect(clips).to_have_count(2, timeout=WAIT_MS)
        video = clips.locator("video")
        await expect(video).to_be_visible()
        await agent.wait_for_function(
            "() => { const v = document.querySelector('.callback-clips video'); return v?.readyState >= 1; }",
            timeout=WAIT_MS,
        )
        await expect(clips.locator("img")).to_have_attribute("alt", "Photo from the caller: teapot.jpg")
        await expect(agent.locator("#callbacks-status")).to_have_text(
            "ada@example.test sent a photo with their callback request."
        )

        # Closing the panel ends what can be sent with the request.
        await visitor.get_by_role("button", name="Close").click()
        await expect(visitor.get_by_label("Send a photo or file")).to_be_hidden()
        assert await csp_violations(visitor) == []
        assert await csp_violations(agent) == []
        assert thrown(visitor_errors) == [] and agent_errors == []
    finally:
        await visitor_context.close()
        await agent_context.close()
