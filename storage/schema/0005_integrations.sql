-- The calls view's filters, API tokens, and webhooks with a durable outbox.

-- Keyset pages of the calls view, newest first, by each filter an admin picks alone.
CREATE INDEX calls_button_page ON calls (organisation_id, button_id, created_at DESC, id DESC);
CREATE INDEX calls_agent_page ON calls (organisation_id, agent_id, created_at DESC, id DESC);
CREATE INDEX calls_outcome_page ON calls (organisation_id, outcome, created_at DESC, id DESC);
CREATE INDEX calls_visitor_name ON calls (organisation_id, lower(visitor_name) text_pattern_ops)
    WHERE visitor_name IS NOT NULL;
-- Phone numbers are found whatever their spacing and punctuation: by their digits and '+'.
CREATE INDEX calls_visitor_phone_digits ON calls (organisation_id, regexp_replace(visitor_phone, '[^0-9+]', '', 'g'))
    WHERE visitor_phone IS NOT NULL;
CREATE INDEX calls_visitor_email_lower ON calls (organisation_id, lower(visitor_email)) WHERE visitor_email IS NOT NULL;
DROP INDEX calls_agent;  -- calls_agent_page serves it too

-- Per-organisation tokens for integrations: only the SHA-256 of a token is stored.
CREATE TABLE api_tokens (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organisation_id  uuid NOT NULL REFERENCES organisations ON DELETE CASCADE,
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    token_hash       bytea NOT NULL UNIQUE,
    created_by       uuid REFERENCES users ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_used_at     timestamptz,
    revoked_at       timestamptz
);
CREATE INDEX api_tokens_organisation ON api_tokens (organisation_id, created_at DESC);

-- Where an organisation's events go. The secret signs deliveries (HMAC-SHA256); receivers hold it too,
-- so it is kept as given, like a password the two sides share.
CREATE TABLE webhook_endpoints (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organisation_id  uuid NOT NULL REFERENCES organisations ON DELETE CASCADE,
    url              text NOT NULL CHECK (length(url) BETWEEN 8 AND 2048),
    events           text[] NOT NULL CHECK (cardinality(events) >= 1),
    secret           text NOT NULL,
    description      text CHECK (length(description) <= 200),
    enabled          boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_organisation ON webhook_endpoints (organisation_id);

-- The outbox: one row per event and endpoint, written in the same transaction as the fact it tells
-- of, delivered later by the server's delivery loop, kept after delivery as the delivery log.
CREATE TABLE webhook_events (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,   -- the order of delivery
    event_id         uuid NOT NULL,                                     -- the same for every endpoint
    organisation_id  uuid NOT NULL REFERENCES organisations ON DELETE CASCADE,
    endpoint_id      uuid NOT NULL REFERENCES webhook_endpoints ON DELETE CASCADE,
    kind             text NOT NULL CHECK (kind IN ('call.created', 'call.answered', 'call.ended',
                                                   'recording.ready', 'recording.deleted', 'callback.requested')),
    -- Events with the same subject (a call) are delivered in order, one at a time.
    subject          uuid NOT NULL,
    payload          jsonb NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    last_status      integer,
    last_error       text CHECK (length(last_error) <= 500),
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_events_due ON webhook_events (next_attempt_at) WHERE delivered_at IS NULL;
CREATE INDEX webhook_events_subject ON webhook_events (endpoint_id, subject, id) WHERE delivered_at IS NULL;
CREATE INDEX webhook_events_log ON webhook_events (organisation_id, endpoint_id, id DESC);

-- Every attempt, for the console's delivery log.
CREATE TABLE webhook_attempts (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_row        bigint NOT NULL REFERENCES webhook_events ON DELETE CASCADE,
    at               timestamptz NOT NULL DEFAULT now(),
    status           integer,                 -- the receiver's HTTP status; NULL: no answer
    error            text CHECK (length(error) <= 500),
    duration_ms      integer
);
CREATE INDEX webhook_attempts_event ON webhook_attempts (event_row, id);
CREATE INDEX audit_log_page ON audit_log (organisation_id, id DESC);
