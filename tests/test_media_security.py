"""Media-level security: a peer whose DTLS certificate does not match its SDP fingerprint gets no audio
path, and its call ends as failed (SECURITY.md, Media)."""

from __future__ import annotations

import re

from server.app import Running
from storage.db import Database
from tests.conftest import VISITOR_ORIGIN, Tenant
from tests.peers import Agent, Visitor
from tests.test_call import wait_for_row


async def test_dtls_fingerprint_must_match_the_offer(server: Running, database: Database, tenant: Tenant) -> None:
    agent = Agent(server.url, tenant.agent_email, tenant.agent_password)
    visitor = Visitor(server.url, tenant.button_key, VISITOR_ORIGIN)
    try:
        await agent.connect()
        await agent.go_available()
        await visitor.connect()
        sdp = await visitor.offer(440)
        # A well-formed fingerprint of some other certificate.
        forged = re.sub(r"(a=fingerprint:sha-256 )[0-9A-F:]+", r"\g<1>" + ":".join(["AB"] * 32), sdp)
        forged = "\r\n".join(
            line
            for line in forged.split("\r\n")
            if not line.startswith(("a=fingerprint:sha-384", "a=fingerprint:sha-512"))
        )
        assert forged != sdp
        await visitor.send({"type": "call", "sdp": forged})
        state = await visitor.expect("call_state", state="queued")
        await visitor.apply_answer((await visitor.expect("answer"))["sdp"])
        ended = await visitor.expect("call_state", state="ended", timeout=15)
        assert (ended["reason"], ended["detail"]) == ("failed", "visitor_media_failed")
        await agent.expect("ring_stopped", call_id=state["call_id"], reason="ended")
        row = await wait_for_row(database, tenant, state["call_id"], "ended")
        assert row.end_reason == "failed"
        assert visitor.sink is None or visitor.sink.frames_received == 0
    finally:
        await visitor.close()
        await agent.close()
