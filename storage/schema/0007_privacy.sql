-- Retention, legal holds, data-subject rights, deletion receipts; and the recording keys leave this
-- database for the key store (storage/keystore_schema), so that a backup of this database holds no
-- key: restoring one taken before an erasure cannot decrypt what was erased.

-- Keys: what an older release kept here is moved to the key store at start
-- (storage.keys.Keyring.adopt_legacy_keys), then emptied.
ALTER TABLE recordings DROP CONSTRAINT recordings_check;
ALTER TABLE recordings DROP CONSTRAINT recordings_organisation_key_id_fkey;
ALTER TABLE organisation_keys RENAME TO legacy_organisation_keys;
ALTER TABLE recordings ADD COLUMN deleted_at timestamptz;
-- What the purge looks for: finished recordings by age.
CREATE INDEX recordings_finished ON recordings (organisation_id, started_at) WHERE state IN ('complete', 'truncated');

-- How long each category is kept, in days, per organisation; NULL keeps it until deleted by hand.
-- No row: the defaults (storage/retention.py, docs/privacy.md).
CREATE TABLE retention_policies (
    organisation_id   uuid PRIMARY KEY REFERENCES organisations ON DELETE CASCADE,
    recordings_days   integer CHECK (recordings_days BETWEEN 1 AND 36500),
    calls_days        integer CHECK (calls_days BETWEEN 1 AND 36500),
    callbacks_days    integer CHECK (callbacks_days BETWEEN 1 AND 36500),
    audit_days        integer CHECK (audit_days BETWEEN 30 AND 36500),
    webhook_log_days  integer CHECK (webhook_log_days BETWEEN 1 AND 36500),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    updated_by        uuid REFERENCES users ON DELETE SET NULL
);

-- A legal hold keeps what it covers from every deletion (purge, erasure, termination) until lifted.
CREATE TABLE legal_holds (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organisation_id  uuid NOT NULL REFERENCES organisations ON DELETE CASCADE,
    scope            text NOT NULL CHECK (scope IN ('organisation', 'call', 'subject')),
    call_id          uuid,                      -- no foreign key: a lifted hold stays on record after its call goes
    subject_email    text CHECK (length(subject_email) <= 320),
    subject_phone    text CHECK (length(subject_phone) <= 32),
    reason           text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    created_at       timestamptz NOT NULL DEFAULT now(),
    created_by       uuid REFERENCES users ON DELETE SET NULL,
    lifted_at        timestamptz,
    lifted_by        uuid REFERENCES users ON DELETE SET NULL,
    CHECK ((scope = 'call') = (call_id IS NOT NULL)),
    CHECK ((scope = 'subject') = (subject_email IS NOT NULL OR subject_phone IS NOT NULL))
);
CREATE INDEX legal_holds_active ON legal_holds (organisation_id) WHERE lifted_at IS NULL;

-- A restricted person's data is kept but left out of processing: webhooks, statistics, the call
-- list, playback, earlier-call counts. The flag on each row is what queries test.
CREATE TABLE subject_restrictions (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organisation_id  uuid NOT NULL REFERENCES organisations ON DELETE CASCADE,
    subject_email    text CHECK (length(subject_email) <= 320),
    subject_phone    text CHECK (length(subject_phone) <= 32),
    created_at       timestamptz NOT NULL DEFAULT now(),
    created_by       uuid REFERENCES users ON DELETE SET NULL,
    lifted_at        timestamptz,
    lifted_by        uuid REFERENCES users ON DELETE SET NULL,
    CHECK (subject_email IS NOT NULL OR subject_phone IS NOT NULL)
);
CREATE INDEX subject_restrictions_active ON subject_restrictions (organisation_id) WHERE lifted_at IS NULL;
ALTER TABLE calls ADD COLUMN restricted boolean NOT NULL DEFAULT false,
                  ADD COLUMN erased_at timestamptz;
ALTER TABLE callback_requests ADD COLUMN restricted boolean NOT NULL DEFAULT false;
-- What the purge looks for: ended calls and callback requests by age.
CREATE INDEX calls_ended ON calls (organisation_id, ended_at) WHERE state = 'ended';
CREATE INDEX callback_requests_created ON callback_requests (organisation_id, created_at);
CREATE INDEX webhook_events_created ON webhook_events (organisation_id, created_at);
CREATE INDEX webhook_events_subject_all ON webhook_events (organisation_id, subject);

-- Proof of deletion: what categories, how many items, which keys, when. No personal data, and no
-- foreign key: the receipt of an organisation's termination outlives the organisation.
CREATE TABLE deletion_receipts (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organisation_id  uuid NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('purge', 'erasure', 'recording', 'termination')),
    requested_by     uuid,                      -- the user who asked (no foreign key, see above); NULL: the schedule
    started_at       timestamptz NOT NULL,
    finished_at      timestamptz NOT NULL DEFAULT now(),
    counts           jsonb NOT NULL,            -- {"recordings": 3, "calls": 2, ...}
    held             jsonb NOT NULL DEFAULT '{}',   -- what was due but kept under a legal hold, by category
    destroyed_keys   jsonb NOT NULL DEFAULT '{}',   -- {"data_keys": [recording ids], "organisation_keys": [key ids]}
    policy           jsonb                      -- the retention applied (purges)
);
CREATE INDEX deletion_receipts_organisation ON deletion_receipts (organisation_id, finished_at DESC);

-- Every data-subject request: what was asked, when, by whom, with what result. Who the person was
-- is not kept here.
CREATE TABLE data_subject_requests (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organisation_id  uuid NOT NULL REFERENCES organisations ON DELETE CASCADE,
    kind             text NOT NULL CHECK (kind IN ('export', 'rectify', 'restrict', 'lift_restriction', 'erase')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    created_by       uuid REFERENCES users ON DELETE SET NULL,
    counts           jsonb NOT NULL,
    receipt_id       uuid
);
CREATE INDEX data_subject_requests_organisation ON data_subject_requests (organisation_id, created_at DESC);

ALTER TABLE webhook_events DROP CONSTRAINT webhook_events_kind_check;
ALTER TABLE webhook_events ADD CONSTRAINT webhook_events_kind_check CHECK (kind IN (
    'call.created', 'call.answered', 'call.ended', 'recording.ready', 'recording.deleted', 'callback.requested',
    'call.rectified', 'call.restricted', 'call.unrestricted', 'call.erased', 'callback.erased'));

-- The audit log's retention: the one way its rows go, through purge_audit_log, which computes the
-- cut-off itself from the organisation's policy (never less than 30 days) and sets the flag the
-- append-only trigger lets through. Deployments that run the server under a role without DELETE on
-- audit_log keep that: the function runs as its owner.
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'TRUNCATE' AND pg_trigger_depth() > 1 THEN
        IF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        RETURN NEW;
    END IF;
    IF TG_OP = 'DELETE' AND current_setting('callbutton.audit_retention', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP;
END
$$;

CREATE FUNCTION purge_audit_log(org uuid, at_time timestamptz, batch integer, dry boolean)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    days integer;
    removed integer;
BEGIN
    SELECT CASE WHEN p.organisation_id IS NULL THEN 730 ELSE p.audit_days END INTO days FROM organisations o
        LEFT JOIN retention_policies p ON p.organisation_id = o.id WHERE o.id = org;
    IF days IS NULL THEN
        RETURN 0;
    END IF;
    IF dry THEN
        SELECT count(*) INTO removed FROM audit_log
            WHERE organisation_id = org AND at < LEAST(at_time, now()) - make_interval(days => GREATEST(days, 30));
        RETURN removed;
    END IF;
    PERFORM set_config('callbutton.audit_retention', 'on', true);
    DELETE FROM audit_log WHERE id IN (
        SELECT id FROM audit_log
        WHERE organisation_id = org AND at < LEAST(at_time, now()) - make_interval(days => GREATEST(days, 30))
        ORDER BY id LIMIT batch);
    GET DIAGNOSTICS removed = ROW_COUNT;
    PERFORM set_config('callbutton.audit_retention', 'off', true);
    RETURN removed;
END
$$;
