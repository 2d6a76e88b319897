-- Encrypted recordings, their key hierarchy, and the audit log.
--
-- Keys: each recording's data key is wrapped (AES-GCM) by its organisation's current key, which is
-- wrapped by the master key; the master key itself is configuration and never stored here. Only
-- wrapped keys are stored; destroying a wrapped key makes every copy of its ciphertext unreadable.

ALTER TABLE buttons
    ADD COLUMN recording_enabled boolean NOT NULL DEFAULT false,
    ADD COLUMN recording_notice text NOT NULL DEFAULT 'This call is recorded.'
        CHECK (length(recording_notice) BETWEEN 1 AND 500);

CREATE TABLE organisation_keys (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organisation_id  uuid NOT NULL REFERENCES organisations ON DELETE CASCADE,
    wrapped_key      bytea NOT NULL,            -- AES-GCM(master key): nonce || ciphertext || tag
    master_key_id    text NOT NULL,             -- fingerprint of the master key that wraps it
    created_at       timestamptz NOT NULL DEFAULT now(),
    retired_at       timestamptz                -- replaced by a newer key: wraps nothing any more
);
-- One current key per organisation.
CREATE UNIQUE INDEX organisation_keys_current ON organisation_keys (organisation_id) WHERE retired_at IS NULL;

CREATE TABLE recordings (
    id                   uuid PRIMARY KEY,
    organisation_id      uuid NOT NULL REFERENCES organisations ON DELETE CASCADE,
    call_id              uuid NOT NULL REFERENCES calls ON DELETE CASCADE,
    state                text NOT NULL CHECK (state IN ('recording', 'complete', 'truncated', 'deleted')),
    started_at           timestamptz NOT NULL,
    ended_at             timestamptz,
    duration_ms          integer CHECK (duration_ms >= 0),
    byte_size            bigint CHECK (byte_size >= 0),
    ciphertext_sha256    bytea,
    organisation_key_id  uuid REFERENCES organisation_keys ON DELETE SET NULL,
    wrapped_key          bytea,                 -- the data key, AES-GCM(organisation key); NULL once shredded
    container            text NOT NULL DEFAULT 'ogg',
    codec                text NOT NULL DEFAULT 'opus',
    channels             text[] NOT NULL DEFAULT '{visitor,agent}',
    CHECK ((state = 'deleted') = (wrapped_key IS NULL))
);
CREATE INDEX recordings_call ON recordings (call_id);
CREATE INDEX recordings_organisation ON recordings (organisation_id, started_at DESC);
CREATE INDEX recordings_open ON recordings (state) WHERE state = 'recording';

CREATE TABLE audit_log (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organisation_id  uuid NOT NULL REFERENCES organisations ON DELETE CASCADE,
    at               timestamptz NOT NULL DEFAULT now(),
    actor_id         uuid REFERENCES users ON DELETE SET NULL,
    action           text NOT NULL,
    object_type      text NOT NULL,
    object_id        uuid,
    address          inet,
    user_agent       text CHECK (length(user_agent) <= 512)
);
CREATE INDEX audit_log_organisation ON audit_log (organisation_id, at DESC);

-- Append-only: the application may add entries, never change or remove them. The one way rows
-- change is a foreign-key cascade (deleting the organisation, or a user's id set to NULL), which
-- runs inside the referential-integrity triggers, so at a trigger depth above 1.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'TRUNCATE' AND pg_trigger_depth() > 1 THEN
        IF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP;
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
-- The triggers hold for every role but one that owns the table and drops them: deployments that
-- want that guarantee run migrations as an owner role and the server as a role granted only
-- SELECT and INSERT here (docs/recordings.md).
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC;
