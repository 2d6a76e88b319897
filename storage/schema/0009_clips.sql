-- Clips: photos, videos and documents a caller sends to support, during a call or with a callback
-- request. Stored like recordings: encrypted as written (Tink's streaming AEAD), one data key each,
-- in the key store (keyed there by the clip's id); location and device metadata removed first.

CREATE TABLE clips (
    id                 uuid PRIMARY KEY,
    organisation_id    uuid NOT NULL REFERENCES organisations ON DELETE CASCADE,
    call_id            uuid REFERENCES calls ON DELETE CASCADE,
    callback_id        uuid REFERENCES callback_requests ON DELETE CASCADE,
    state              text NOT NULL CHECK (state IN ('uploading', 'ready', 'deleted')),
    name               text CHECK (length(name) <= 255),     -- as the caller's device named it
    declared_type      text CHECK (length(declared_type) <= 100),
    declared_size      bigint NOT NULL CHECK (declared_size > 0),
    kind               text CHECK (kind IN ('image', 'video', 'document')),
    media_type         text,
    byte_size          bigint,
    ciphertext_sha256  bytea,
    removed            text[],                               -- what metadata was stripped
    created_at         timestamptz NOT NULL DEFAULT now(),
    ready_at           timestamptz,
    deleted_at         timestamptz,
    CHECK (call_id IS NOT NULL OR callback_id IS NOT NULL),
    CHECK (state = 'uploading' OR (ready_at IS NOT NULL AND kind IS NOT NULL))
);
CREATE INDEX clips_call ON clips (call_id) WHERE call_id IS NOT NULL;
CREATE INDEX clips_callback ON clips (callback_id) WHERE callback_id IS NOT NULL;
CREATE INDEX clips_ready ON clips (organisation_id, ready_at) WHERE state = 'ready';

-- Per button: how many clips a call or callback request may carry (0: the button takes none), and
-- how large each may be (the per-kind limits of media/clips.py apply too).
ALTER TABLE buttons
    ADD COLUMN clips_per_call integer NOT NULL DEFAULT 20 CHECK (clips_per_call BETWEEN 0 AND 50),
    ADD COLUMN clip_max_mb integer NOT NULL DEFAULT 100 CHECK (clip_max_mb BETWEEN 1 AND 100);

ALTER TABLE retention_policies ADD COLUMN clips_days integer CHECK (clips_days BETWEEN 1 AND 36500);
UPDATE retention_policies SET clips_days = 90;

ALTER TABLE webhook_events DROP CONSTRAINT webhook_events_kind_check;
ALTER TABLE webhook_events ADD CONSTRAINT webhook_events_kind_check CHECK (kind IN (
    'call.created', 'call.answered', 'call.ended', 'recording.ready', 'recording.deleted', 'callback.requested',
    'call.rectified', 'call.restricted', 'call.unrestricted', 'call.erased', 'callback.erased', 'clip.received'));
