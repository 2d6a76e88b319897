"""Data protection, for admins: retention, legal holds, the purge, deletion receipts, data-subject
requests, the record of processing, and the organisation's termination. See docs/privacy.md."""

from __future__ import annotations

import datetime
import json
from typing import Any

from aiohttp import web

from server import body
from server.api import actor, audit, path_uuid, require_admin
from server.appkeys import DATABASE, RECORDINGS, SETTINGS
from server.errors import ApiError
from server.playback import NO_STORE
from server.processing import processing_record, processing_record_markdown
from storage.retention import CATEGORIES, DEFAULTS, LIMITS, HeldError, Hold, PurgeBusy, Purger, Subject
from storage.subjects import SubjectError, Subjects, terminate

_SUBJECT_FIELDS = frozenset({"email", "phone"})


def _at(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def _subject(data: body.Body) -> Subject:
    email = data.email("email", required=False)
    phone = data.phone("phone", required=False)
    if email is None and phone is None:
        raise body.bad("name the person by field 'email' or 'phone'")
    try:
        return Subject.of(email, phone)
    except ValueError as exc:
        raise body.bad(str(exc)) from None


def _subjects(request: web.Request) -> Subjects:
    return Subjects(request.app[DATABASE].pool, request.app[RECORDINGS])


# --- retention -------------------------------------------------------------------------------------


def _retention_json(policy: dict[str, int | None]) -> dict[str, Any]:
    return {
        "retention": policy,
        "defaults": DEFAULTS,
        "limits": {c: {"min_days": low, "max_days": high} for c, (low, high) in LIMITS.items()},
    }


async def get_retention(request: web.Request) -> web.Response:
    session = await require_admin(request)
    policy = await request.app[DATABASE].retention.policy(session.user.organisation_id)
    return web.json_response(_retention_json(policy), headers=NO_STORE)


async def set_retention(request: web.Request) -> web.Response:
    """Change some categories' retention (a number of days, or null: until deleted by hand). The
    next purge applies it to data already stored."""
    session = await require_admin(request)
    data = await body.read(request, frozenset(CATEGORIES))
    changes: dict[str, int | None] = {}
    for category in CATEGORIES:
        if category in data:
            low, high = LIMITS[category]
            changes[category] = data.integer(category, low, high, required=False)
    if not changes:
        raise body.bad(f"send some of {', '.join(CATEGORIES)}")
    policy = await request.app[DATABASE].retention.set_policy(session.user.organisation_id, changes, actor(session))
    await audit(request, session, "retention.update", "organisation", session.user.organisation_id)
    return web.json_response(_retention_json(policy), headers=NO_STORE)


async def run_purge(request: web.Request) -> web.Response:
    """Run the purge for this organisation now; with ``dry_run`` only say what would go."""
    session = await require_admin(request)
    data = await body.read(request, frozenset({"dry_run"}))
    dry_run = data.boolean("dry_run") if "dry_run" in data else False
    try:
        (report,) = await Purger(request.app[DATABASE].pool, request.app[RECORDINGS]).run(
            organisation_id=session.user.organisation_id, dry_run=dry_run, requested_by=actor(session)
        )
    except PurgeBusy as exc:
        raise ApiError(409, "busy", str(exc)) from None
    if not dry_run:
        await audit(request, session, "retention.purge", "receipt", report.receipt.id if report.receipt else None)
    return web.json_response(
        {
            "purge": {**report.document(), "dry_run": dry_run},
            "receipt": report.receipt.document() if report.receipt else None,
        },
        headers=NO_STORE,
    )


# --- legal holds -----------------------------------------------------------------------------------


def hold_json(hold: Hold) -> dict[str, Any]:
    return {
        "id": str(hold.id),
        "scope": hold.scope,
        "call_id": str(hold.call_id) if hold.call_id else None,
        "email": hold.subject_email,
        "phone": hold.subject_phone,
        "reason": hold.reason,
        "created_at": _at(hold.created_at),
        "created_by": str(hold.created_by) if hold.created_by else None,
        "lifted_at": _at(hold.lifted_at),
        "lifted_by": str(hold.lifted_by) if hold.lifted_by else None,
    }


async def list_holds(request: web.Request) -> web.Response:
    session = await require_admin(request)
    holds = await request.app[DATABASE].retention.holds(session.user.organisation_id)
    return web.json_response({"holds": [hold_json(h) for h in holds]}, headers=NO_STORE)


async def create_hold(request: web.Request) -> web.Response:
    """A hold on the whole organisation (no call, email or phone), one call, or one person."""
    session = await require_admin(request)
    data = await body.read(request, frozenset({"reason", "call_id", "email", "phone"}))
    reason = data.required_text("reason", 500)
    call_id = data.optional_id("call_id")
    email, phone = data.email("email", required=False), data.phone("phone", required=False)
    if call_id is not None and (email or phone):
        raise body.bad("a hold covers a call or a person, not both")
    subject = Subject.of(email, phone) if (email or phone) else None
    hold = await request.app[DATABASE].retention.add_hold(
        session.user.organisation_id, reason=reason, actor=actor(session), call_id=call_id, subject=subject
    )
    if hold is None:
        raise ApiError(404, "not_found", "no such call")
    await audit(request, session, "hold.create", "legal_hold", hold.id)
    return web.json_response({"hold": hold_json(hold)}, status=201, headers=NO_STORE)


async def lift_hold(request: web.Request) -> web.Response:
    session = await require_admin(request)
    hold = await request.app[DATABASE].retention.lift_hold(
        session.user.organisation_id, path_uuid(request, "id", "hold"), actor(session)
    )
    if hold is None:
        raise ApiError(404, "not_found", "no such active hold")
    await audit(request, session, "hold.lift", "legal_hold", hold.id)
    return web.json_response({"hold": hold_json(hold)}, headers=NO_STORE)


# --- receipts --------------------------------------------------------------------------------------


async def list_receipts(request: web.Request) -> web.Response:
    session = await require_admin(request)
    receipts = await request.app[DATABASE].retention.receipts(session.user.organisation_id)
    return web.json_response({"receipts": [r.document() for r in receipts]}, headers=NO_STORE)


async def get_receipt(request: web.Request) -> web.Response:
    """One receipt, as a JSON file to keep."""
    session = await require_admin(request)
    receipt = await request.app[DATABASE].retention.receipt(
        session.user.organisation_id, path_uuid(request, "id", "receipt")
    )
    if receipt is None:
        raise ApiError(404, "not_found", "no such receipt")
    return web.json_response(
        receipt.document(),
        headers={**NO_STORE, "Content-Disposition": f'attachment; filename="deletion-receipt-{receipt.id}.json"'},
        dumps=lambda value: json.dumps(value, indent=2),
    )


# --- data subjects ---------------------------------------------------------------------------------


async def lookup_subject(request: web.Request) -> web.Response:
    """What is held about a person (POST, so that the email or phone stays out of URLs and logs)."""
    session = await require_admin(request)
    subject = _subject(await body.read(request, _SUBJECT_FIELDS))
    found = await _subjects(request).find(session.user.organisation_id, subject)
    await audit(request, session, "subject.lookup", "data_subject", None)
    return web.json_response(
        {
            "subject": {
                "email": subject.email,
                "phone": subject.phone,
                "restricted": found.restricted,
                "held": found.held,
                "calls": [
                    {
                        "id": str(c["id"]),
                        "created_at": _at(c["created_at"]),
                        "outcome": c["outcome"],
                        "name": c["visitor_name"],
                        "email": c["visitor_email"],
                        "phone": c["visitor_phone"],
                        "recorded": any(r.call_id == c["id"] for r in found.recordings),
                    }
                    for c in found.calls
                ],
                "callbacks": len(found.callbacks),
                "recordings": len(found.recordings),
            }
        },
        headers=NO_STORE,
    )


async def export_subject(request: web.Request) -> web.Response:
    session = await require_admin(request)
    subject = _subject(await body.read(request, _SUBJECT_FIELDS))
    archive, _ = await _subjects(request).export(session.user.organisation_id, subject, actor(session))
    await audit(request, session, "subject.export", "data_subject", None)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    return web.Response(
        body=archive,
        content_type="application/zip",
        headers={**NO_STORE, "Content-Disposition": f'attachment; filename="data-subject-export-{stamp}.zip"'},
    )


async def rectify_subject(request: web.Request) -> web.Response:
    session = await require_admin(request)
    data = await body.read(request, frozenset({"email", "phone", "set"}))
    subject = _subject(data)
    changes = data.values.get("set")
    if not isinstance(changes, dict) or not changes:
        raise body.bad("field 'set' is an object with some of name, email, phone: the corrected values")
    corrected = body.Body(changes)
    unknown = sorted(set(changes) - {"name", "email", "phone"})
    if unknown:
        raise body.bad(f"field 'set' has an unknown field {unknown[0]!r}; fields are email, name, phone")
    values: dict[str, str | None] = {}
    if "name" in changes:
        values["name"] = corrected.text("name", 200, required=False)
    if "email" in changes:
        values["email"] = corrected.email("email", required=False)
    if "phone" in changes:
        values["phone"] = corrected.phone("phone", required=False)
    try:
        counts = await _subjects(request).rectify(session.user.organisation_id, subject, values, actor(session))
    except SubjectError as exc:
        raise body.bad(str(exc)) from None
    await audit(request, session, "subject.rectify", "data_subject", None)
    return web.json_response({"rectified": counts}, headers=NO_STORE)


async def restrict_subject(request: web.Request) -> web.Response:
    session = await require_admin(request)
    subject = _subject(await body.read(request, _SUBJECT_FIELDS))
    counts = await _subjects(request).restrict(session.user.organisation_id, subject, actor(session))
    await audit(request, session, "subject.restrict", "data_subject", None)
    return web.json_response({"restricted": counts}, headers=NO_STORE)


async def lift_subject_restriction(request: web.Request) -> web.Response:
    session = await require_admin(request)
    subject = _subject(await body.read(request, _SUBJECT_FIELDS))
    counts = await _subjects(request).lift_restriction(session.user.organisation_id, subject, actor(session))
    await audit(request, session, "subject.lift_restriction", "data_subject", None)
    return web.json_response({"lifted": counts}, headers=NO_STORE)


async def erase_subject(request: web.Request) -> web.Response:
    session = await require_admin(request)
    subject = _subject(await body.read(request, _SUBJECT_FIELDS))
    try:
        receipt = await _subjects(request).erase(session.user.organisation_id, subject, actor(session))
    except HeldError as exc:
        raise ApiError(409, "held", str(exc)) from None
    except SubjectError as exc:
        raise ApiError(409, "in_progress", str(exc)) from None
    await audit(request, session, "subject.erase", "receipt", receipt.id)
    return web.json_response({"receipt": receipt.document()}, headers=NO_STORE)


async def list_requests(request: web.Request) -> web.Response:
    session = await require_admin(request)
    rows = await request.app[DATABASE].pool.fetch(
        "SELECT id, kind, created_at, created_by, counts, receipt_id FROM data_subject_requests "
        "WHERE organisation_id = $1 ORDER BY created_at DESC, id LIMIT 200",
        session.user.organisation_id,
    )
    return web.json_response(
        {
            "requests": [
                {
                    "id": str(r["id"]),
                    "kind": r["kind"],
                    "created_at": _at(r["created_at"]),
                    "created_by": str(r["created_by"]) if r["created_by"] else None,
                    "counts": json.loads(r["counts"]) if isinstance(r["counts"], str) else r["counts"],
                    "receipt": str(r["receipt_id"]) if r["receipt_id"] else None,
                }
                for r in rows
            ]
        },
        headers=NO_STORE,
    )


# --- record of processing, termination -------------------------------------------------------------


async def get_processing_record(request: web.Request) -> web.Response:
    """The record of processing (GDPR Art. 30), from the live configuration; ``?format=markdown``
    for a document to file."""
    session = await require_admin(request)
    record = await processing_record(request.app[DATABASE], request.app[SETTINGS], session.user.organisation_id)
    if request.query.get("format") == "markdown":
        return web.Response(
            text=processing_record_markdown(record),
            content_type="text/markdown",
            headers={**NO_STORE, "Content-Disposition": 'attachment; filename="record-of-processing.md"'},
        )
    if request.query.get("format", "json") != "json":
        raise body.bad("format is json or markdown")
    return web.json_response({"record": record}, headers=NO_STORE)


async def terminate_organisation(request: web.Request) -> web.Response:
    """Delete everything of this organisation, then answer with the deletion receipt (kept by the
    server after the organisation is gone). The body must repeat the organisation's name."""
    session = await require_admin(request)
    data = await body.read(request, frozenset({"confirm"}))
    confirm = data.required_text("confirm", 200)
    database = request.app[DATABASE]
    organisation = await database.accounts.organisation(session.user.organisation_id)
    if organisation is None or confirm != organisation.name:
        raise body.bad("field 'confirm' must repeat the organisation's name exactly")
    try:
        receipt = await terminate(database.pool, request.app[RECORDINGS], organisation.id, actor(session))
    except HeldError as exc:
        raise ApiError(409, "held", str(exc)) from None
    except SubjectError as exc:
        raise ApiError(409, "in_progress", str(exc)) from None
    return web.json_response({"receipt": receipt.document()}, headers=NO_STORE)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/retention", get_retention)
    app.router.add_put("/api/v1/retention", set_retention)
    app.router.add_post("/api/v1/retention/purge", run_purge)
    app.router.add_get("/api/v1/legal-holds", list_holds)
    app.router.add_post("/api/v1/legal-holds", create_hold)
    app.router.add_delete("/api/v1/legal-holds/{id}", lift_hold)
    app.router.add_get("/api/v1/receipts", list_receipts)
    app.router.add_get("/api/v1/receipts/{id}", get_receipt)
    app.router.add_post("/api/v1/data-subjects/lookup", lookup_subject)
    app.router.add_post("/api/v1/data-subjects/export", export_subject)
    app.router.add_post("/api/v1/data-subjects/rectify", rectify_subject)
    app.router.add_post("/api/v1/data-subjects/restrict", restrict_subject)
    app.router.add_post("/api/v1/data-subjects/lift-restriction", lift_subject_restriction)
    app.router.add_post("/api/v1/data-subjects/erase", erase_subject)
    app.router.add_get("/api/v1/data-subject-requests", list_requests)
    app.router.add_get("/api/v1/processing-record", get_processing_record)
    app.router.add_post("/api/v1/organisation/terminate", terminate_organisation)
