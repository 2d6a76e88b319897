"""Data subjects' rights: export, rectify, restrict, erase; and an organisation's termination.

A data subject is a caller, found by the email or phone number they gave (a form, a callback
request). Requests are logged in ``data_subject_requests`` without naming the person; erasures and
terminations write a deletion receipt. Receivers of webhooks are told of every rectification,
restriction and erasure (GDPR Art. 19) with events that carry ids, never the erased data.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import shutil
import uuid
import zipfile
from dataclasses import dataclass
from typing import Any

from storage import webhooks
from storage.clips import ClipRecord, ClipStore
from storage.recordings import RecordingRecord, RecordingStore, read_plaintext
from storage.retention import CATEGORIES, HeldError, Receipt, Retention, Subject, held_call, held_callback

#: Why each category is processed (the export and the record of processing state it).
PURPOSES = {
    "calls": "Answering the caller's call and keeping its history for follow-up, quality and statistics.",
    "recordings": "Quality assurance, training and evidence of what was agreed, on buttons that record "
    "and say so before the call connects.",
    "clips": "Seeing the problem the caller shows: photos, videos and documents they chose to send.",
    "callbacks": "Calling back a caller who could not be answered, at their request.",
    "audit": "Security: who accessed or deleted which data, when and from where.",
    "webhook_log": "Delivering call events to the systems the organisation connected (its CRM, helpdesk).",
}


class SubjectError(Exception):
    """A data-subject request cannot be carried out; the message says why."""


@dataclass(frozen=True)
class Found:
    """What is held about a subject."""

    calls: list[dict[str, Any]]
    callbacks: list[dict[str, Any]]
    recordings: list[RecordingRecord]
    clips: list[ClipRecord]
    restricted: bool
    held: bool


_CALL_FIELDS = (
    "c.id, c.button_id, b.name AS button_name, c.direction, c.state, c.outcome, c.end_reason, c.page_url, "
    "c.created_at, c.answered_at, c.ended_at, c.visitor_name, c.visitor_email, c.visitor_phone, c.notes, c.rating, "
    "c.rating_comment, c.restricted, c.agent_id, c.organisation_id"
)
_CALLBACK_FIELDS = (
    "b.id, b.call_id, b.name, b.email, b.phone, b.note, b.reason, b.state, b.created_at, b.done_at, b.restricted, "
    "b.organisation_id"
)


def _iso(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _calls_of(subject: Subject) -> str:
    """SQL on ``calls c`` ($1 organisation, $2 email, $3 phone): the person's calls, those that
    carry their email or phone, and those they asked to be called back after (with an empty form)."""
    return f"""({subject.sql("c.visitor_email", "c.visitor_phone", "$2", "$3")}
        OR c.id IN (SELECT r.call_id FROM callback_requests r WHERE r.organisation_id = $1
                    AND r.call_id IS NOT NULL AND {subject.sql("r.email", "r.phone", "$2", "$3")}))"""


class Subjects:
    def __init__(self, pool: Any, recordings: RecordingStore) -> None:
        self._pool = pool
        self._recordings = recordings
        self._clips = ClipStore(pool, recordings.keyring, recordings.root)
        self._retention = Retention(pool)

    async def find(self, organisation_id: uuid.UUID, subject: Subject) -> Found:
        calls = await self._pool.fetch(
            f"""SELECT {_CALL_FIELDS}, {held_call()} AS held FROM calls c LEFT JOIN buttons b ON b.id = c.button_id
            WHERE c.organisation_id = $1
              AND {_calls_of(subject)}
            ORDER BY c.created_at, c.id""",
            organisation_id,
            subject.email,
            subject.phone,
        )
        callbacks = await self._pool.fetch(
            f"""SELECT {_CALLBACK_FIELDS}, {held_callback()} AS held FROM callback_requests b
            WHERE b.organisation_id = $1 AND {subject.sql("b.email", "b.phone", "$2", "$3")}
            ORDER BY b.created_at, b.id""",
            organisation_id,
            subject.email,
            subject.phone,
        )
        recordings = []
        for call in calls:
            recordings += [
                r for r in await self._recordings.for_call(organisation_id, call["id"]) if r.state != "deleted"
            ]
        restricted = await self._pool.fetchval(
            """SELECT EXISTS (SELECT 1 FROM subject_restrictions s WHERE s.organisation_id = $1
                AND s.lifted_at IS NULL AND (s.subject_email = $2 OR s.subject_phone = $3))""",
            organisation_id,
            subject.email,
            subject.phone,
        )
        held = any(r["held"] for r in calls) or any(r["held"] for r in callbacks)
        held = held or bool(
            await self._pool.fetchval(
                """SELECT EXISTS (SELECT 1 FROM legal_holds WHERE organisation_id = $1 AND lifted_at IS NULL
                   AND (scope = 'organisation' OR subject_email = $2 OR subject_phone = $3))""",
                organisation_id,
                subject.email,
                subject.phone,
            )
        )
        clips = await self._clips.of(
            organisation_id, call_ids=[c["id"] for c in calls], callback_ids=[b["id"] for b in callbacks]
        )
        return Found(
            calls=[dict(r) for r in calls],
            callbacks=[dict(r) for r in callbacks],
            recordings=recordings,
            clips=clips,
            restricted=bool(restricted),
            held=held,
        )

    async def log(
        self,
        organisation_id: uuid.UUID,
        kind: str,
        actor: uuid.UUID | None,
        counts: dict[str, int],
        receipt: Any = None,
    ) -> uuid.UUID:
        return uuid.UUID(
            str(
                await self._pool.fetchval(
                    "INSERT INTO data_subject_requests (organisation_id, kind, created_by, counts, receipt_id) "
                    "VALUES ($1, $2, $3, $4::jsonb, $5) RETURNING id",
                    organisation_id,
                    kind,
                    actor,
                    json.dumps(counts),
                    receipt,
                )
            )
        )

    # --- export --------------------------------------------------------------------------------------

    async def export(
        self, organisation_id: uuid.UUID, subject: Subject, actor: uuid.UUID | None
    ) -> tuple[bytes, dict[str, int]]:
        """A zip: ``data.json`` (every call, form answer, note, rating, callback request, with the
        purposes and storage periods) and ``recordings/<id>.ogg``, the calls' recordings decrypted."""
        found = await self.find(organisation_id, subject)
        policy = await self._retention.policy(organisation_id)
        organisation = await self._pool.fetchval("SELECT name FROM organisations WHERE id = $1", organisation_id)
        files: dict[str, bytes] = {}
        recordings_by_call: dict[uuid.UUID, list[dict[str, Any]]] = {}
        for record in found.recordings:
            name = f"recordings/{record.id}.ogg"
            try:
                ikm = await self._recordings.key(record)
                files[name] = await asyncio.to_thread(
                    read_plaintext,
                    self._recordings.path(organisation_id, record.id),
                    ikm,
                    record.id,
                    allow_truncated=True,
                )
                entry: dict[str, Any] = {"id": str(record.id), "file": name}
            except Exception as exc:  # an unreadable recording is named, not hidden
                entry = {"id": str(record.id), "file": None, "error": f"could not be read: {exc}"}
            entry.update(
                state=record.state,
                started_at=_iso(record.started_at),
                duration_ms=record.duration_ms,
                channels={"0": "caller", "1": "agent"},
            )
            recordings_by_call.setdefault(record.call_id, []).append(entry)
        clips_of: dict[uuid.UUID, list[dict[str, Any]]] = {}
        for clip in found.clips:
            extension = (clip.media_type or "application/octet-stream").split("/")[-1].replace("jpeg", "jpg")
            name = f"clips/{clip.id}.{extension}"
            try:
                files[name] = await self._clips.read(clip)
                clip_entry: dict[str, Any] = {"id": str(clip.id), "file": name}
            except Exception as exc:
                clip_entry = {"id": str(clip.id), "file": None, "error": f"could not be read: {exc}"}
            clip_entry.update(kind=clip.kind, media_type=clip.media_type, name=clip.name, sent_at=_iso(clip.ready_at))
            clips_of.setdefault(clip.call_id or clip.callback_id, []).append(clip_entry)  # type: ignore[arg-type]
        document = {
            "organisation": organisation,
            "generated_at": datetime.datetime.now(datetime.UTC).isoformat(),
            "subject": {"email": subject.email, "phone": subject.phone},
            "restricted": found.restricted,
            "purposes_and_storage": {
                category: {"purpose": PURPOSES[category], "kept_days": policy[category]} for category in CATEGORIES
            },
            "calls": [
                {
                    "id": str(c["id"]),
                    "button": c["button_name"],
                    "direction": c["direction"],
                    "outcome": c["outcome"],
                    "page_url": c["page_url"],
                    "created_at": _iso(c["created_at"]),
                    "answered_at": _iso(c["answered_at"]),
                    "ended_at": _iso(c["ended_at"]),
                    "form": {"name": c["visitor_name"], "email": c["visitor_email"], "phone": c["visitor_phone"]},
                    "notes": c["notes"],
                    "rating": c["rating"],
                    "rating_comment": c["rating_comment"],
                    "recordings": recordings_by_call.get(c["id"], []),
                    "clips": clips_of.get(c["id"], []),
                }
                for c in found.calls
            ],
            "callback_requests": [
                {
                    "id": str(b["id"]),
                    "call_id": _iso(b["call_id"]),
                    "name": b["name"],
                    "email": b["email"],
                    "phone": b["phone"],
                    "note": b["note"],
                    "reason": b["reason"],
                    "state": b["state"],
                    "created_at": _iso(b["created_at"]),
                    "done_at": _iso(b["done_at"]),
                    "clips": clips_of.get(b["id"], []),
                }
                for b in found.callbacks
            ],
        }
        counts = {
            "calls": len(found.calls),
            "callbacks": len(found.callbacks),
            "recordings": len(found.recordings),
            "clips": len(found.clips),
        }

        def pack() -> bytes:
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                archive.writestr("data.json", json.dumps(document, indent=2, ensure_ascii=False))
                for name, data in files.items():
                    archive.writestr(name, data, compress_type=zipfile.ZIP_STORED)  # Opus does not compress
            return buffer.getvalue()

        archive = await asyncio.to_thread(pack)
        await self.log(organisation_id, "export", actor, counts)
        return archive, counts

    # --- rectify -------------------------------------------------------------------------------------

    async def rectify(
        self, organisation_id: uuid.UUID, subject: Subject, changes: dict[str, str | None], actor: uuid.UUID | None
    ) -> dict[str, int]:
        """Correct the form answers (name, email, phone) on the subject's calls and callback
        requests; receivers of ``call.rectified`` get the corrected call."""
        unknown = set(changes) - {"name", "email", "phone"}
        if unknown or not changes:
            raise SubjectError("a rectification changes some of name, email, phone")
        if email := changes.get("email"):
            changes["email"] = email.strip().lower()
        calls_set = ", ".join(f"visitor_{k} = ${i + 4}" for i, k in enumerate(changes))
        callbacks_set = ", ".join(f"{k} = ${i + 4}" for i, k in enumerate(changes))
        values = list(changes.values())
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"""UPDATE calls c SET {calls_set}
                WHERE c.organisation_id = $1 AND {subject.sql("c.visitor_email", "c.visitor_phone", "$2", "$3")}
                RETURNING c.*""",
                organisation_id,
                subject.email,
                subject.phone,
                *values,
            )
            status = await conn.execute(
                f"""UPDATE callback_requests b SET {callbacks_set}
                WHERE b.organisation_id = $1 AND {subject.sql("b.email", "b.phone", "$2", "$3")}""",
                organisation_id,
                subject.email,
                subject.phone,
                *values,
            )
            for row in rows:
                await webhooks.emit(conn, organisation_id, "call.rectified", row["id"], webhooks.call_data(row))
        counts = {"calls": len(rows), "callbacks": int(status.split()[-1])}
        await self.log(organisation_id, "rectify", actor, counts)
        return counts

    # --- restrict ------------------------------------------------------------------------------------

    async def restrict(self, organisation_id: uuid.UUID, subject: Subject, actor: uuid.UUID | None) -> dict[str, int]:
        """Keep the subject's data but leave it out of processing until lifted: no webhooks (the
        undelivered ones are dropped), no statistics, lists or exports, no playback."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO subject_restrictions (organisation_id, subject_email, subject_phone, created_by)
                SELECT $1, $2, $3, $4 WHERE NOT EXISTS (
                    SELECT 1 FROM subject_restrictions WHERE organisation_id = $1 AND lifted_at IS NULL
                    AND subject_email IS NOT DISTINCT FROM $2 AND subject_phone IS NOT DISTINCT FROM $3)""",
                organisation_id,
                subject.email,
                subject.phone,
                actor,
            )
            calls = await conn.fetch(
                f"""UPDATE calls c SET restricted = true
                WHERE c.organisation_id = $1 AND {_calls_of(subject)}
                RETURNING c.id""",
                organisation_id,
                subject.email,
                subject.phone,
            )
            callbacks = await conn.fetch(
                f"""UPDATE callback_requests b SET restricted = true
                WHERE b.organisation_id = $1 AND {subject.sql("b.email", "b.phone", "$2", "$3")}
                RETURNING b.id, b.call_id""",
                organisation_id,
                subject.email,
                subject.phone,
            )
            # A callback request's events name its call, when it has one.
            ids = [r["id"] for r in calls] + [r["call_id"] or r["id"] for r in callbacks]
            await conn.execute(
                "DELETE FROM webhook_events WHERE organisation_id = $1 AND subject = ANY($2::uuid[]) "
                "AND delivered_at IS NULL AND NOT (kind = ANY($3::text[]))",
                organisation_id,
                ids,
                list(webhooks.SUBJECT_NOTICES),
            )
            for row in calls:
                await webhooks.emit(
                    conn, organisation_id, "call.restricted", row["id"], {"call": {"id": str(row["id"])}}
                )
        counts = {"calls": len(calls), "callbacks": len(callbacks)}
        await self.log(organisation_id, "restrict", actor, counts)
        return counts

    async def lift_restriction(
        self, organisation_id: uuid.UUID, subject: Subject, actor: uuid.UUID | None
    ) -> dict[str, int]:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """UPDATE subject_restrictions SET lifted_at = now(), lifted_by = $4
                WHERE organisation_id = $1 AND lifted_at IS NULL
                  AND ((subject_email IS NOT NULL AND subject_email = $2)
                       OR (subject_phone IS NOT NULL AND subject_phone = $3))""",
                organisation_id,
                subject.email,
                subject.phone,
                actor,
            )
            still = """EXISTS (SELECT 1 FROM subject_restrictions s WHERE s.organisation_id = $1
                AND s.lifted_at IS NULL AND ((s.subject_email IS NOT NULL AND s.subject_email = {email})
                OR (s.subject_phone IS NOT NULL AND s.subject_phone = regexp_replace({phone}, '[^0-9]', '', 'g'))))"""
            calls = await conn.fetch(
                f"""UPDATE calls c SET restricted = false
                WHERE c.organisation_id = $1 AND c.restricted AND {_calls_of(subject)}
                  AND NOT {still.format(email="c.visitor_email", phone="c.visitor_phone")}
                RETURNING c.id""",
                organisation_id,
                subject.email,
                subject.phone,
            )
            callbacks = await conn.fetch(
                f"""UPDATE callback_requests b SET restricted = false
                WHERE b.organisation_id = $1 AND b.restricted AND {subject.sql("b.email", "b.phone", "$2", "$3")}
                  AND NOT {still.format(email="b.email", phone="b.phone")} RETURNING b.id""",
                organisation_id,
                subject.email,
                subject.phone,
            )
            for row in calls:
                await webhooks.emit(
                    conn, organisation_id, "call.unrestricted", row["id"], {"call": {"id": str(row["id"])}}
                )
        counts = {"calls": len(calls), "callbacks": len(callbacks)}
        await self.log(organisation_id, "lift_restriction", actor, counts)
        return counts

    # --- erase ---------------------------------------------------------------------------------------

    async def erase(self, organisation_id: uuid.UUID, subject: Subject, actor: uuid.UUID | None) -> Receipt:
        """Everything of the subject: recordings (keys destroyed, files removed), callback requests
        and restrictions deleted, calls anonymised (form answers, page, notes, rating gone; the call
        stays as a number in the organisation's history), webhook log entries about them deleted.
        Receivers get ``call.erased`` / ``callback.erased``. Refused under a legal hold."""
        started = datetime.datetime.now(datetime.UTC)
        found = await self.find(organisation_id, subject)
        if found.held:
            raise HeldError("a legal hold covers this person's data: lift it before erasing")
        calls = [c["id"] for c in found.calls if c["state"] == "ended"]
        if len(calls) < len(found.calls) or any(r.state == "recording" for r in found.recordings):
            raise SubjectError(
                "a call of this person is in progress (or its recording is being finished): erase once it has ended"
            )
        callbacks = [b["id"] for b in found.callbacks]
        destroyed = await self._recordings.destroy(
            organisation_id, [r.id for r in found.recordings if r.call_id in set(calls)], notify=False
        )
        clips = await self._clips.destroy(organisation_id, [c.id for c in found.clips])
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM webhook_events WHERE organisation_id = $1 AND subject = ANY($2::uuid[])",
                organisation_id,
                calls + callbacks,
            )
            await conn.execute(
                """UPDATE calls SET visitor_name = NULL, visitor_email = NULL, visitor_phone = NULL, page_url = NULL,
                    notes = NULL, rating = NULL, rating_comment = NULL, rating_token_hash = NULL,
                    restricted = false, erased_at = now()
                WHERE organisation_id = $1 AND id = ANY($2::uuid[])""",
                organisation_id,
                calls,
            )
            await conn.execute(
                "DELETE FROM callback_requests WHERE organisation_id = $1 AND id = ANY($2::uuid[])",
                organisation_id,
                callbacks,
            )
            restrictions = await conn.execute(
                """DELETE FROM subject_restrictions WHERE organisation_id = $1
                AND ((subject_email IS NOT NULL AND subject_email = $2)
                     OR (subject_phone IS NOT NULL AND subject_phone = $3))""",
                organisation_id,
                subject.email,
                subject.phone,
            )
            holds = await conn.execute(
                """DELETE FROM legal_holds WHERE organisation_id = $1 AND scope = 'subject' AND lifted_at IS NOT NULL
                AND ((subject_email IS NOT NULL AND subject_email = $2)
                     OR (subject_phone IS NOT NULL AND subject_phone = $3))""",
                organisation_id,
                subject.email,
                subject.phone,
            )
            by_call: dict[uuid.UUID, list[str]] = {}
            for record in destroyed.records:
                by_call.setdefault(record.call_id, []).append(str(record.id))
            for call_id in calls:
                await webhooks.emit(
                    conn,
                    organisation_id,
                    "call.erased",
                    call_id,
                    {"call": {"id": str(call_id), "recordings_deleted": by_call.get(call_id, [])}},
                )
            for callback_id in callbacks:
                await webhooks.emit(
                    conn, organisation_id, "callback.erased", callback_id, {"callback": {"id": str(callback_id)}}
                )
        counts = {
            "calls_anonymised": len(calls),
            "recordings": len(destroyed.records),
            "clips": len(clips.records),
            "callbacks": len(callbacks),
            "restrictions": int(restrictions.split()[-1]),
            "lifted_holds": int(holds.split()[-1]),
        }
        receipt = await self._retention.write_receipt(
            organisation_id,
            kind="erasure",
            requested_by=actor,
            started_at=started,
            counts=counts,
            destroyed_keys={"data_keys": [str(k) for k in (*destroyed.keys, *clips.keys)]},
        )
        await self.log(organisation_id, "erase", actor, counts, receipt.id)
        if destroyed.keys:
            await self._recordings.keyring.vacuum()
        return receipt


async def terminate(
    pool: Any, recordings: RecordingStore, organisation_id: uuid.UUID, actor: uuid.UUID | None
) -> Receipt:
    """Delete everything of an organisation: frozen first (sessions, tokens, buttons gone, users
    disabled, webhooks off), then every key in the key store and every file, then every row (the
    large tables in batches, the rest by the cascades from ``organisations``), then the receipt,
    which outlives it. Refused under a legal hold, or while a call is in progress. A termination
    stopped part-way can be run again; its receipt then counts what that run removed."""
    retention = Retention(pool)
    started = datetime.datetime.now(datetime.UTC)
    if await pool.fetchval("SELECT NOT EXISTS (SELECT 1 FROM organisations WHERE id = $1)", organisation_id):
        raise SubjectError(f"no organisation {organisation_id}")
    if await retention.organisation_held(organisation_id, any_scope=True):
        raise HeldError("a legal hold is active in this organisation: lift every hold before terminating it")
    if await pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM calls WHERE organisation_id = $1 AND state <> 'ended')", organisation_id
    ):
        raise SubjectError("a call is in progress in this organisation: terminate once it has ended")
    counts = await organisation_rows(pool, organisation_id)
    counts = {table: n for table, n in counts.items() if n}
    # Frozen first: nobody logs in, no button takes a call, no token or webhook works, from now on.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM sessions WHERE organisation_id = $1", organisation_id)
        await conn.execute("DELETE FROM api_tokens WHERE organisation_id = $1", organisation_id)
        await conn.execute(
            "UPDATE users SET disabled_at = COALESCE(disabled_at, now()) WHERE organisation_id = $1", organisation_id
        )
        await conn.execute("DELETE FROM buttons WHERE organisation_id = $1", organisation_id)
        await conn.execute("UPDATE webhook_endpoints SET enabled = false WHERE organisation_id = $1", organisation_id)
    # Then the keys and the files: from here on nothing of it can be read, whatever happens next. (A
    # call that raced the freeze and opened a recording leaves a key the purge's reconciliation
    # destroys once the organisation is gone.)
    data_keys, organisation_keys = await recordings.keyring.destroy_organisation(organisation_id)
    folder = recordings.root / str(organisation_id)
    files = sum(1 for path in folder.rglob("*") if path.is_file()) if folder.exists() else 0
    await asyncio.to_thread(shutil.rmtree, folder, True)
    # Then the rows: the big tables in short batches, the rest with the organisation's row.
    for table in ("webhook_events", "calls"):
        removed = 1
        while removed:
            status = await pool.execute(
                f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE organisation_id = $1 LIMIT 5000)",
                organisation_id,
            )
            removed = int(status.split()[-1])
    await pool.execute("DELETE FROM organisations WHERE id = $1", organisation_id, timeout=3600)
    await recordings.keyring.vacuum()
    counts.update(files=files, data_keys=data_keys, organisation_keys=len(organisation_keys))
    return await retention.write_receipt(
        organisation_id,
        kind="termination",
        requested_by=actor,
        started_at=started,
        counts=counts,
        destroyed_keys={"organisation_keys": [str(k) for k in organisation_keys], "data_keys": data_keys},
    )


#: Tables whose rows belong to one organisation but do not name it (they go with their parent).
_CHILD_TABLES = {
    "team_members": "SELECT count(*) FROM team_members m JOIN teams t ON t.id = m.team_id WHERE t.organisation_id = $1",
    "button_targets": "SELECT count(*) FROM button_targets x JOIN buttons b ON b.id = x.button_id "
    "WHERE b.organisation_id = $1",
    "webhook_attempts": "SELECT count(*) FROM webhook_attempts a JOIN webhook_events e ON e.id = a.event_row "
    "WHERE e.organisation_id = $1",
}


async def organisation_rows(pool: Any, organisation_id: uuid.UUID) -> dict[str, int]:
    """How many rows each table holds of the organisation (receipts excepted: they outlive it)."""
    tables = [
        r["table_name"]
        for r in await pool.fetch(
            """SELECT table_name FROM information_schema.columns
            WHERE table_schema = 'public' AND column_name = 'organisation_id'
              AND table_name NOT IN ('deletion_receipts')
              AND table_name IN (SELECT table_name FROM information_schema.tables
                                 WHERE table_schema = 'public' AND table_type = 'BASE TABLE')
            ORDER BY table_name"""
        )
    ]
    counts = {
        "organisations": int(await pool.fetchval("SELECT count(*) FROM organisations WHERE id = $1", organisation_id))
    }
    for table in tables:
        counts[table] = int(
            await pool.fetchval(f'SELECT count(*) FROM "{table}" WHERE organisation_id = $1', organisation_id)
        )
    for table, query in _CHILD_TABLES.items():
        counts[table] = int(await pool.fetchval(query, organisation_id))
    return counts
