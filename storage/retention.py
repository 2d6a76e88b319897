"""Retention policies, legal holds, the purge, and deletion receipts.

Each organisation keeps each category of data for a number of days (``retention_policies``; no row
means :data:`DEFAULTS`). The purge removes what is older than that, in small batches, and writes a
deletion receipt per organisation and run. A legal hold (on the organisation, a call, or a data
subject by email or phone) keeps what it covers from every deletion until it is lifted. See
docs/privacy.md.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from storage.clips import ClipStore
from storage.recordings import RecordingStore

log = structlog.get_logger(__name__)

PURGE_RUN = "retention.purge_run"
PURGE_FAILED = "retention.purge_failed"
ORPHAN_KEYS = "retention.orphan_keys_destroyed"

#: Categories, in the order the purge takes them, with their default retention in days.
DEFAULTS: dict[str, int | None] = {
    "recordings": 90,
    "clips": 90,
    "calls": 365,
    "callbacks": 90,
    "audit": 730,
    "webhook_log": 30,
}
CATEGORIES = tuple(DEFAULTS)
LIMITS = {category: (30 if category == "audit" else 1, 36500) for category in CATEGORIES}


_PURGE_LOCK = 0x70757267  # "purg": the advisory lock one purge run holds


class PurgeBusy(Exception):
    """Another purge run holds the lock."""


class HeldError(Exception):
    """A legal hold covers what was to be deleted; the message says which."""


@dataclass(frozen=True)
class Subject:
    """A data subject, as visitors identify themselves: an email, a phone number, or both.

    Emails are compared lower-cased (as calls store them), phone numbers by their digits only."""

    email: str | None = None
    phone: str | None = None

    @classmethod
    def of(cls, email: str | None, phone: str | None) -> Subject:
        email = email.strip().lower() if email and email.strip() else None
        digits = re.sub(r"\D", "", phone) if phone else ""
        if email is None and not digits:
            raise ValueError("a data subject is named by an email or a phone number")
        return cls(email, digits or None)

    def sql(self, email_column: str, phone_column: str, email_arg: str, phone_arg: str) -> str:
        """SQL: whether the row's email or phone columns name this subject."""
        return (
            f"(({email_arg}::text IS NOT NULL AND {email_column} = {email_arg}) OR "
            f"({phone_arg}::text IS NOT NULL AND regexp_replace({phone_column}, '[^0-9]', '', 'g') = {phone_arg}))"
        )


def held_call(alias: str = "c") -> str:
    """SQL: whether an active legal hold covers call ``alias`` (its organisation, itself, or its caller)."""
    return f"""EXISTS (SELECT 1 FROM legal_holds h WHERE h.organisation_id = {alias}.organisation_id
        AND h.lifted_at IS NULL
        AND (h.scope = 'organisation'
             OR (h.scope = 'call' AND h.call_id = {alias}.id)
             OR (h.scope = 'subject'
                 AND ((h.subject_email IS NOT NULL AND h.subject_email = {alias}.visitor_email)
                      OR (h.subject_phone IS NOT NULL
                          AND h.subject_phone = regexp_replace({alias}.visitor_phone, '[^0-9]', '', 'g'))))))"""


def held_callback(alias: str = "b") -> str:
    """SQL: whether an active legal hold covers callback request ``alias``."""
    return f"""EXISTS (SELECT 1 FROM legal_holds h WHERE h.organisation_id = {alias}.organisation_id
        AND h.lifted_at IS NULL
        AND (h.scope = 'organisation'
             OR (h.scope = 'call' AND h.call_id = {alias}.call_id)
             OR (h.scope = 'subject'
                 AND ((h.subject_email IS NOT NULL AND h.subject_email = {alias}.email)
                      OR (h.subject_phone IS NOT NULL
                          AND h.subject_phone = regexp_replace({alias}.phone, '[^0-9]', '', 'g'))))))"""


@dataclass(frozen=True)
class Hold:
    id: uuid.UUID
    organisation_id: uuid.UUID
    scope: str
    call_id: uuid.UUID | None
    subject_email: str | None
    subject_phone: str | None
    reason: str
    created_at: datetime.datetime
    created_by: uuid.UUID | None
    lifted_at: datetime.datetime | None
    lifted_by: uuid.UUID | None


_HOLD_COLUMNS = (
    "id, organisation_id, scope, call_id, subject_email, subject_phone, reason, created_at, created_by, "
    "lifted_at, lifted_by"
)


@dataclass(frozen=True)
class Receipt:
    """Proof of a deletion: what categories, how many items, which keys, when. No personal data."""

    id: uuid.UUID
    organisation_id: uuid.UUID
    kind: str
    requested_by: uuid.UUID | None
    started_at: datetime.datetime
    finished_at: datetime.datetime
    counts: dict[str, int]
    held: dict[str, int]
    destroyed_keys: dict[str, Any]
    policy: dict[str, int | None] | None

    def document(self) -> dict[str, Any]:
        """The receipt as admins download it."""
        return {
            "receipt": str(self.id),
            "organisation": str(self.organisation_id),
            "kind": self.kind,
            "requested_by": str(self.requested_by) if self.requested_by else None,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "deleted": self.counts,
            "kept_under_legal_hold": self.held,
            "destroyed_keys": self.destroyed_keys,
            "retention_days": self.policy,
        }


_RECEIPT_COLUMNS = (
    "id, organisation_id, kind, requested_by, started_at, finished_at, counts, held, destroyed_keys, policy"
)


def _receipt(row: Any) -> Receipt:
    values = dict(row)
    for name in ("counts", "held", "destroyed_keys", "policy"):
        if isinstance(values[name], str):
            values[name] = json.loads(values[name])
    return Receipt(**values)


class Retention:
    """Policies, holds and receipts of each organisation."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    # --- policies ------------------------------------------------------------------------------------

    async def policy(self, organisation_id: uuid.UUID) -> dict[str, int | None]:
        row = await self._pool.fetchrow("SELECT * FROM retention_policies WHERE organisation_id = $1", organisation_id)
        if row is None:
            return dict(DEFAULTS)
        return {category: row[f"{category}_days"] for category in CATEGORIES}

    async def set_policy(
        self, organisation_id: uuid.UUID, changes: dict[str, int | None], actor: uuid.UUID | None
    ) -> dict[str, int | None]:
        """Change some categories' days (None: keep until deleted by hand). Applies to data already
        stored from the next purge on."""
        unknown = set(changes) - set(CATEGORIES)
        if unknown:
            raise ValueError(f"unknown retention category {sorted(unknown)[0]}")
        policy = {**await self.policy(organisation_id), **changes}
        for category, days in policy.items():
            low, high = LIMITS[category]
            if days is not None and not low <= days <= high:
                raise ValueError(f"{category} are kept from {low} to {high} days, or without limit")
        columns = [f"{c}_days" for c in CATEGORIES]
        await self._pool.execute(
            f"""
            INSERT INTO retention_policies (organisation_id, {", ".join(columns)}, updated_by)
            VALUES ($1, {", ".join(f"${i + 2}" for i in range(len(columns)))}, ${len(columns) + 2})
            ON CONFLICT (organisation_id) DO UPDATE SET
                {", ".join(f"{c} = EXCLUDED.{c}" for c in columns)},
                updated_at = now(), updated_by = EXCLUDED.updated_by
            """,
            organisation_id,
            *(policy[c] for c in CATEGORIES),
            actor,
        )
        return policy

    # --- legal holds ---------------------------------------------------------------------------------

    async def holds(self, organisation_id: uuid.UUID, *, active: bool = False) -> list[Hold]:
        rows = await self._pool.fetch(
            f"SELECT {_HOLD_COLUMNS} FROM legal_holds WHERE organisation_id = $1 "
            "AND (NOT $2 OR lifted_at IS NULL) ORDER BY created_at DESC, id",
            organisation_id,
            active,
        )
        return [Hold(**dict(r)) for r in rows]

    async def add_hold(
        self,
        organisation_id: uuid.UUID,
        *,
        reason: str,
        actor: uuid.UUID | None,
        call_id: uuid.UUID | None = None,
        subject: Subject | None = None,
    ) -> Hold | None:
        """A hold on the organisation (neither a call nor a subject), a call, or a subject. None when
        the call is not the organisation's."""
        scope = "call" if call_id is not None else "subject" if subject is not None else "organisation"
        row = await self._pool.fetchrow(
            f"""
            INSERT INTO legal_holds (organisation_id, scope, call_id, subject_email, subject_phone, reason, created_by)
            SELECT $1, $2, $3, $4, $5, $6, $7
            WHERE $3::uuid IS NULL OR EXISTS (SELECT 1 FROM calls WHERE organisation_id = $1 AND id = $3)
            RETURNING {_HOLD_COLUMNS}
            """,
            organisation_id,
            scope,
            call_id,
            subject.email if subject else None,
            subject.phone if subject else None,
            reason,
            actor,
        )
        return None if row is None else Hold(**dict(row))

    async def lift_hold(self, organisation_id: uuid.UUID, hold_id: uuid.UUID, actor: uuid.UUID | None) -> Hold | None:
        row = await self._pool.fetchrow(
            f"""
            UPDATE legal_holds SET lifted_at = now(), lifted_by = $3
            WHERE organisation_id = $1 AND id = $2 AND lifted_at IS NULL RETURNING {_HOLD_COLUMNS}
            """,
            organisation_id,
            hold_id,
            actor,
        )
        return None if row is None else Hold(**dict(row))

    async def organisation_held(self, organisation_id: uuid.UUID, *, any_scope: bool = False) -> bool:
        """Whether a hold on the whole organisation is active (``any_scope``: any hold at all)."""
        return bool(
            await self._pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM legal_holds WHERE organisation_id = $1 AND lifted_at IS NULL "
                "AND ($2 OR scope = 'organisation'))",
                organisation_id,
                any_scope,
            )
        )

    async def call_held(self, organisation_id: uuid.UUID, call_id: uuid.UUID) -> bool:
        return bool(
            await self._pool.fetchval(
                f"SELECT {held_call()} FROM calls c WHERE c.organisation_id = $1 AND c.id = $2",
                organisation_id,
                call_id,
            )
        )

    # --- receipts ------------------------------------------------------------------------------------

    async def write_receipt(
        self,
        organisation_id: uuid.UUID,
        *,
        kind: str,
        requested_by: uuid.UUID | None,
        started_at: datetime.datetime,
        counts: dict[str, int],
        held: dict[str, int] | None = None,
        destroyed_keys: dict[str, Any] | None = None,
        policy: dict[str, int | None] | None = None,
    ) -> Receipt:
        row = await self._pool.fetchrow(
            f"""
            INSERT INTO deletion_receipts (organisation_id, kind, requested_by, started_at, counts, held,
                                           destroyed_keys, policy)
            VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7::jsonb, $8::jsonb) RETURNING {_RECEIPT_COLUMNS}
            """,
            organisation_id,
            kind,
            requested_by,
            started_at,
            json.dumps(counts),
            json.dumps(held or {}),
            json.dumps(destroyed_keys or {}),
            None if policy is None else json.dumps(policy),
        )
        return _receipt(row)

    async def receipts(self, organisation_id: uuid.UUID, limit: int = 100) -> list[Receipt]:
        rows = await self._pool.fetch(
            f"SELECT {_RECEIPT_COLUMNS} FROM deletion_receipts WHERE organisation_id = $1 "
            "ORDER BY finished_at DESC, id LIMIT $2",
            organisation_id,
            limit,
        )
        return [_receipt(r) for r in rows]

    async def receipt(self, organisation_id: uuid.UUID, receipt_id: uuid.UUID) -> Receipt | None:
        row = await self._pool.fetchrow(
            f"SELECT {_RECEIPT_COLUMNS} FROM deletion_receipts WHERE organisation_id = $1 AND id = $2",
            organisation_id,
            receipt_id,
        )
        return None if row is None else _receipt(row)


@dataclass
class PurgeReport:
    """One organisation's part of a purge run (or of a dry run: what would go)."""

    organisation_id: uuid.UUID
    policy: dict[str, int | None]
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    held: dict[str, int] = field(default_factory=dict)
    destroyed_keys: list[str] = field(default_factory=list)  # strings: no garbage collector work
    receipt: Receipt | None = None

    def document(self) -> dict[str, Any]:
        return {
            "organisation": str(self.organisation_id),
            "retention_days": self.policy,
            "due": self.counts,
            "kept_under_legal_hold": self.held,
            "receipt": str(self.receipt.id) if self.receipt else None,
        }


class Purger:
    """Deletes what each organisation's policy says is due, in batches of ``batch`` rows, one short
    transaction each, yielding to the event loop between batches so that live calls never wait on
    it for long."""

    def __init__(
        self,
        pool: Any,
        recordings: RecordingStore,
        *,
        batch: int = 500,
        pause: float = 0.0,
        clock: Callable[[], datetime.datetime] | None = None,
    ) -> None:
        self._pool = pool
        self._recordings = recordings
        self._clips = ClipStore(pool, recordings.keyring, recordings.root)
        self._retention = Retention(pool)
        self._batch = batch
        self._pause = pause
        self._clock = clock or (lambda: datetime.datetime.now(datetime.UTC))

    async def run(
        self,
        *,
        organisation_id: uuid.UUID | None = None,
        dry_run: bool = False,
        now: datetime.datetime | None = None,
        requested_by: uuid.UUID | None = None,
    ) -> list[PurgeReport]:
        """Purge each organisation (or one); ``requested_by``: the admin who asked (None: the schedule
        or the command line). One run at a time across every server process: a run that finds
        another going (a second worker's schedule, the command line) raises :class:`PurgeBusy`."""
        if dry_run:
            return await self._run(organisation_id, True, now or self._clock(), requested_by)
        async with self._pool.acquire() as lock:
            if not await lock.fetchval("SELECT pg_try_advisory_lock($1)", _PURGE_LOCK):
                raise PurgeBusy("another purge is running; try again when it has finished")
            try:
                return await self._run(organisation_id, False, now or self._clock(), requested_by)
            finally:
                await lock.execute("SELECT pg_advisory_unlock($1)", _PURGE_LOCK)

    async def _run(
        self,
        organisation_id: uuid.UUID | None,
        dry_run: bool,
        now: datetime.datetime,
        requested_by: uuid.UUID | None,
    ) -> list[PurgeReport]:
        started = datetime.datetime.now(datetime.UTC)
        if organisation_id is None:
            organisations = [r["id"] for r in await self._pool.fetch("SELECT id FROM organisations ORDER BY id")]
        else:
            organisations = [organisation_id]
        reports = []
        for organisation in organisations:
            report = PurgeReport(organisation, await self._retention.policy(organisation))
            try:
                await self._organisation(report, now, dry_run)
            except Exception:
                # One organisation's trouble (its files, say) does not stop the others' purge.
                log.exception(PURGE_FAILED, organisation_id=str(organisation), counts=report.counts)
                if organisation_id is not None:
                    raise
            finally:
                # What went has a receipt even when the run stopped part-way (an error, a shutdown).
                if not dry_run and any(report.counts.values()):
                    report.receipt = await self._retention.write_receipt(
                        organisation,
                        kind="purge",
                        requested_by=requested_by,
                        started_at=started,
                        counts=report.counts,
                        held={k: v for k, v in report.held.items() if v},
                        destroyed_keys={"data_keys": report.destroyed_keys},
                        policy=report.policy,
                    )
                    log.info(
                        PURGE_RUN,
                        organisation_id=str(organisation),
                        counts=report.counts,
                        receipt=str(report.receipt.id),
                    )
            reports.append(report)
        if not dry_run and organisation_id is None:
            await self._orphans()
        if any(r.destroyed_keys for r in reports):
            await self._recordings.keyring.vacuum()
        return reports

    async def _organisation(self, report: PurgeReport, now: datetime.datetime, dry_run: bool) -> None:
        cutoffs = {
            category: now - datetime.timedelta(days=days)
            for category, days in report.policy.items()
            if days is not None
        }
        await self._held(report, cutoffs)
        if "recordings" in cutoffs:
            await self._recordings_due(report, cutoffs["recordings"], dry_run)
        if "clips" in cutoffs:
            await self._clips_due(report, cutoffs["clips"], dry_run)
        if "calls" in cutoffs:
            await self._calls_due(report, cutoffs["calls"], dry_run)
            await self._lifted_due(report, cutoffs["calls"], dry_run)
        if "callbacks" in cutoffs:
            await self._callbacks_due(report, cutoffs["callbacks"], dry_run)
        if "audit" in cutoffs and not await self._retention.organisation_held(report.organisation_id):
            await self._audit_due(report, now, dry_run)
        if "webhook_log" in cutoffs:
            await self._webhook_log_due(report, cutoffs["webhook_log"], dry_run)

    async def _lifted_due(self, report: PurgeReport, cutoff: datetime.datetime, dry_run: bool) -> None:
        """Lifted legal holds and restrictions name a person: they go with the calls' retention."""
        for table in ("legal_holds", "subject_restrictions"):
            where = f"FROM {table} WHERE organisation_id = $1 AND lifted_at IS NOT NULL AND lifted_at < $2"
            if dry_run:
                removed = int(await self._pool.fetchval(f"SELECT count(*) {where}", report.organisation_id, cutoff))
            else:
                status = await self._pool.execute(f"DELETE {where}", report.organisation_id, cutoff)
                removed = int(status.split()[-1])
            if removed:
                key = "lifted_holds" if table == "legal_holds" else "lifted_restrictions"
                report.counts[key] = report.counts.get(key, 0) + removed

    async def _orphans(self) -> None:
        """Keys in the key store whose recording or organisation the main database no longer has (a
        crash between the two databases, a recording that never got its row, a call that raced an
        organisation's termination): destroyed. Only keys older than an hour, so that a recording
        being opened right now is never taken for one."""
        keyring = self._recordings.keyring
        older_than = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)  # real time, not the clock
        after: uuid.UUID | None = None
        destroyed = 0
        while batch := await keyring.data_keys_since(after, 1000, older_than):
            after = batch[-1]["recording_id"]
            known = {
                r["id"]
                for r in await self._pool.fetch(
                    "SELECT id FROM recordings WHERE id = ANY($1::uuid[]) AND state <> 'deleted' "
                    "UNION ALL SELECT id FROM clips WHERE id = ANY($1::uuid[]) AND state <> 'deleted'",
                    [r["recording_id"] for r in batch],
                )
            }
            by_organisation: dict[uuid.UUID, list[uuid.UUID]] = {}
            for row in batch:
                if row["recording_id"] not in known:
                    by_organisation.setdefault(row["organisation_id"], []).append(row["recording_id"])
            for organisation, ids in by_organisation.items():
                destroyed += len(await keyring.destroy(organisation, ids))
            await self._pause_between()
        gone = [
            organisation
            for organisation in await keyring.organisations()
            if not await self._pool.fetchval("SELECT EXISTS (SELECT 1 FROM organisations WHERE id = $1)", organisation)
        ]
        for organisation in gone:
            await keyring.destroy_organisation(organisation)
        if destroyed or gone:
            log.warning(ORPHAN_KEYS, data_keys=destroyed, organisations=[str(o) for o in gone])

    async def _pause_between(self) -> None:
        await asyncio.sleep(self._pause)

    async def _held(self, report: PurgeReport, cutoffs: dict[str, datetime.datetime]) -> None:
        org = report.organisation_id
        queries = {
            "recordings": f"""SELECT count(*) FROM recordings r JOIN calls c ON c.id = r.call_id
                WHERE r.organisation_id = $1 AND r.state IN ('complete', 'truncated') AND r.started_at < $2
                AND {held_call()}""",
            "calls": f"""SELECT count(*) FROM calls c WHERE c.organisation_id = $1 AND c.state = 'ended'
                AND c.ended_at < $2 AND {held_call()}""",
            "callbacks": f"""SELECT count(*) FROM callback_requests b WHERE b.organisation_id = $1
                AND b.created_at < $2 AND {held_callback()}""",
            "clips": f"""SELECT count(*) FROM clips k
                LEFT JOIN calls c ON c.id = k.call_id LEFT JOIN callback_requests b ON b.id = k.callback_id
                WHERE k.organisation_id = $1 AND k.state = 'ready' AND k.ready_at < $2
                AND ((c.id IS NOT NULL AND {held_call()}) OR (b.id IS NOT NULL AND {held_callback()}))""",
        }
        for category, query in queries.items():
            if category in cutoffs:
                report.held[category] = int(await self._pool.fetchval(query, org, cutoffs[category]))

    async def _recordings_due(self, report: PurgeReport, cutoff: datetime.datetime, dry_run: bool) -> None:
        query = f"""
            SELECT r.id FROM recordings r JOIN calls c ON c.id = r.call_id
            WHERE r.organisation_id = $1 AND r.state IN ('complete', 'truncated') AND r.started_at < $2
              AND NOT {held_call()}
            ORDER BY r.started_at LIMIT $3"""
        if dry_run:
            report.counts["recordings"] = await self._count(query, report.organisation_id, cutoff)
            return
        while ids := [r["id"] for r in await self._pool.fetch(query, report.organisation_id, cutoff, self._batch)]:
            destroyed = await self._recordings.destroy(report.organisation_id, ids)
            report.counts["recordings"] += len(destroyed.records)
            report.destroyed_keys += [str(k) for k in destroyed.keys]
            if not destroyed.records:
                break  # all taken meanwhile (being deleted by someone else)
            await self._pause_between()

    async def _clips_due(self, report: PurgeReport, cutoff: datetime.datetime, dry_run: bool) -> None:
        query = f"""
            SELECT k.id FROM clips k
            LEFT JOIN calls c ON c.id = k.call_id LEFT JOIN callback_requests b ON b.id = k.callback_id
            WHERE k.organisation_id = $1 AND k.state = 'ready' AND k.ready_at < $2
              AND NOT (c.id IS NOT NULL AND {held_call()}) AND NOT (b.id IS NOT NULL AND {held_callback()})
            ORDER BY k.ready_at LIMIT $3"""
        if dry_run:
            report.counts["clips"] = await self._count(query, report.organisation_id, cutoff)
            return
        while ids := [r["id"] for r in await self._pool.fetch(query, report.organisation_id, cutoff, self._batch)]:
            await self._destroy_clips(report, ids)
            await self._pause_between()

    async def _destroy_clips(self, report: PurgeReport, ids: list[uuid.UUID]) -> None:
        destroyed = await self._clips.destroy(report.organisation_id, ids)
        report.counts["clips"] = report.counts.get("clips", 0) + len(destroyed.records)
        report.destroyed_keys += [str(k) for k in destroyed.keys]

    async def _calls_due(self, report: PurgeReport, cutoff: datetime.datetime, dry_run: bool) -> None:
        """Ended calls past retention go whole: their recordings (keys and files) first, then their
        webhook log, events and rows. Callback requests and call links that pointed at them stay."""
        org = report.organisation_id
        query = f"""
            SELECT c.id FROM calls c
            WHERE c.organisation_id = $1 AND c.state = 'ended' AND c.ended_at < $2 AND NOT {held_call()}
            ORDER BY c.ended_at LIMIT $3"""
        if dry_run:
            report.counts["calls"] = await self._count(query, org, cutoff)
            return
        while ids := [r["id"] for r in await self._pool.fetch(query, org, cutoff, self._batch)]:
            recordings = [
                r["id"]
                for r in await self._pool.fetch(
                    "SELECT id FROM recordings WHERE organisation_id = $1 AND call_id = ANY($2::uuid[]) "
                    "AND state IN ('complete', 'truncated')",
                    org,
                    ids,
                )
            ]
            if recordings:
                destroyed = await self._recordings.destroy(org, recordings, notify=False)
                report.counts["recordings"] += len(destroyed.records)
                report.destroyed_keys += [str(k) for k in destroyed.keys]
            if clips := await self._clips.of(org, call_ids=ids):
                await self._destroy_clips(report, [c.id for c in clips])
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "DELETE FROM webhook_events WHERE organisation_id = $1 AND subject = ANY($2::uuid[])", org, ids
                )
                status = await conn.execute(
                    "DELETE FROM calls WHERE organisation_id = $1 AND id = ANY($2::uuid[]) "
                    "AND NOT EXISTS (SELECT 1 FROM recordings r WHERE r.call_id = calls.id AND r.state = 'recording')",
                    org,
                    ids,
                )
            removed = int(status.split()[-1])
            report.counts["calls"] += removed
            if not removed:
                break
            await self._pause_between()

    async def _callbacks_due(self, report: PurgeReport, cutoff: datetime.datetime, dry_run: bool) -> None:
        query = f"""
            SELECT b.id, b.call_id FROM callback_requests b
            WHERE b.organisation_id = $1 AND b.created_at < $2 AND NOT {held_callback()}
            ORDER BY b.created_at LIMIT $3"""
        if dry_run:
            report.counts["callbacks"] = await self._count(query, report.organisation_id, cutoff)
            return
        while rows := await self._pool.fetch(query, report.organisation_id, cutoff, self._batch):
            if clips := await self._clips.of(report.organisation_id, callback_ids=[r["id"] for r in rows]):
                await self._destroy_clips(report, [c.id for c in clips])
            async with self._pool.acquire() as conn, conn.transaction():
                # Their webhook payloads (name, email, note) go with them; a request's events name
                # its call when it has one.
                await conn.execute(
                    "DELETE FROM webhook_events WHERE organisation_id = $1 AND kind = 'callback.requested' "
                    "AND subject = ANY($2::uuid[])",
                    report.organisation_id,
                    [r["call_id"] or r["id"] for r in rows],
                )
                status = await conn.execute(
                    "DELETE FROM callback_requests WHERE organisation_id = $1 AND id = ANY($2::uuid[])",
                    report.organisation_id,
                    [r["id"] for r in rows],
                )
            report.counts["callbacks"] += int(status.split()[-1])
            await self._pause_between()

    async def _audit_due(self, report: PurgeReport, now: datetime.datetime, dry_run: bool) -> None:
        if dry_run:
            report.counts["audit"] = int(
                await self._pool.fetchval("SELECT purge_audit_log($1, $2, 0, true)", report.organisation_id, now)
            )
            return
        while removed := int(
            await self._pool.fetchval(
                "SELECT purge_audit_log($1, $2, $3, false)", report.organisation_id, now, self._batch
            )
        ):
            report.counts["audit"] += removed
            await self._pause_between()

    async def _webhook_log_due(self, report: PurgeReport, cutoff: datetime.datetime, dry_run: bool) -> None:
        query = "SELECT id FROM webhook_events WHERE organisation_id = $1 AND created_at < $2 ORDER BY id LIMIT $3"
        if dry_run:
            report.counts["webhook_log"] = await self._count(query, report.organisation_id, cutoff)
            return
        while ids := [r["id"] for r in await self._pool.fetch(query, report.organisation_id, cutoff, self._batch)]:
            status = await self._pool.execute("DELETE FROM webhook_events WHERE id = ANY($1::bigint[])", ids)
            report.counts["webhook_log"] += int(status.split()[-1])
            await self._pause_between()

    async def _count(self, query: str, organisation_id: uuid.UUID, cutoff: datetime.datetime) -> int:
        return int(await self._pool.fetchval(f"SELECT count(*) FROM ({query}) due", organisation_id, cutoff, 2**31 - 1))
