"""The record of processing activities (GDPR Art. 30), generated from the live configuration: what
the organisation's buttons collect, for what, for how long, who receives it, and how it is
protected. Nothing here is typed by hand per organisation; change a button, a policy or a webhook
and the record changes with it."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from server.config import Settings
from storage.db import Database
from storage.subjects import PURPOSES


def _days(days: int | None) -> str:
    return "until deleted by an admin" if days is None else f"{days} days"


async def processing_record(database: Database, settings: Settings, organisation_id: uuid.UUID) -> dict[str, Any]:
    organisation = await database.accounts.organisation(organisation_id)
    assert organisation is not None
    policy = await database.retention.policy(organisation_id)
    buttons = await database.buttons.all(organisation_id)
    endpoints = await database.webhooks.all(organisation_id)
    holds = await database.retention.holds(organisation_id, active=True)
    form_fields = sorted({name for b in buttons for name, mode in (b.form_fields or {}).items() if mode != "off"})
    recorded = [b.name for b in buttons if b.recording_enabled]
    categories = [
        {
            "category": "calls",
            "data": ["call times and outcome", "page the call started from", "agent notes", "ratings and comments"]
            + [f"caller's {name} (pre-call form)" for name in form_fields],
            "subjects": "callers (website visitors) and agents",
            "purpose": PURPOSES["calls"],
            "retention": _days(policy["calls"]),
        },
        {
            "category": "recordings",
            "data": ["two-channel audio of calls"] if recorded else [],
            "buttons": recorded,
            "subjects": "callers and agents",
            "purpose": PURPOSES["recordings"],
            "retention": _days(policy["recordings"]) if recorded else "no button records",
        },
        {
            "category": "clips",
            "data": ["photos, videos and PDF documents callers send (location and device metadata removed)"],
            "subjects": "callers, and whoever their photos and videos show",
            "purpose": PURPOSES["clips"],
            "retention": _days(policy["clips"]),
        },
        {
            "category": "callbacks",
            "data": ["name, email or phone, and note of callers asking to be called back"],
            "subjects": "callers",
            "purpose": PURPOSES["callbacks"],
            "retention": _days(policy["callbacks"]),
        },
        {
            "category": "audit",
            "data": ["who accessed, changed or deleted what, when, from which address and browser"],
            "subjects": "admins and agents",
            "purpose": PURPOSES["audit"],
            "retention": _days(policy["audit"]),
        },
        {
            "category": "webhook_log",
            "data": ["call events sent to connected systems, with the caller's form answers"],
            "subjects": "callers",
            "purpose": PURPOSES["webhook_log"],
            "retention": _days(policy["webhook_log"]),
        },
    ]
    return {
        "controller": organisation.name,
        "generated_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "processor": "callbutton, self-hosted by the controller"
        + (f" at {settings.public_url}" if settings.public_url else ""),
        "categories": categories,
        "recipients": [
            {"url": e.url, "events": list(e.events), "enabled": e.enabled, "description": e.description}
            for e in endpoints
        ],
        "transfers_outside_the_controller": "none but the webhook recipients above",
        "legal_holds_active": len(holds),
        "security_measures": [
            "recordings encrypted as they are written (AES-256-GCM streaming, Tink's AES-GCM-HKDF format), "
            "one key per recording",
            "recording keys kept in a key store apart from the main database and wrapped by a master key held "
            "outside both; destroying a key makes every copy of its recording unreadable, backups included",
            "passwords hashed with argon2id; sessions expire when idle and at a maximum age",
            "access by role (admin, agent), scoped to the organisation; API tokens revocable",
            "every playback, download and deletion of a recording, and every data-subject request, in an "
            "append-only audit log",
            "retention enforced by a scheduled purge with deletion receipts; legal holds",
            "webhooks signed (HMAC-SHA256)",
        ],
    }


def processing_record_markdown(record: dict[str, Any]) -> str:
    lines = [
        f"# Record of processing: {record['controller']}",
        "",
        f"Generated {record['generated_at']} from the live configuration. Processor: {record['processor']}.",
        "",
        "| category | data | data subjects | purpose | kept |",
        "|---|---|---|---|---|",
    ]
    for c in record["categories"]:
        data = "; ".join(c["data"]) or "none collected"
        lines.append(f"| {c['category']} | {data} | {c['subjects']} | {c['purpose']} | {c['retention']} |")
    lines += ["", "## Recipients", ""]
    lines += [
        f"- {r['url']} ({', '.join(r['events'])}){'' if r['enabled'] else ' (disabled)'}" for r in record["recipients"]
    ] or ["- none"]
    lines += ["", f"Transfers: {record['transfers_outside_the_controller']}.", "", "## Security measures", ""]
    lines += [f"- {m}" for m in record["security_measures"]]
    lines += ["", f"Active legal holds: {record['legal_holds_active']}.", ""]
    return "\n".join(lines)
