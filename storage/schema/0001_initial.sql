-- The foundation: tenants, accounts, sessions, buttons, calls and their event log.
-- Every tenant table carries organisation_id so that every query can be scoped by it.

CREATE TABLE organisations (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organisation_id  uuid NOT NULL REFERENCES organisations ON DELETE CASCADE,
    email            text NOT NULL CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 320),
    display_name     text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    role             text NOT NULL CHECK (role IN ('admin', 'agent')),
    password_hash    text NOT NULL,            -- argon2id, PHC string
    disabled_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
-- Login is by email alone, so an email names one user across all organisations.
CREATE UNIQUE INDEX users_email ON users (email);
CREATE INDEX users_organisation ON users (organisation_id);

CREATE TABLE sessions (
    token_hash       bytea PRIMARY KEY,        -- SHA-256 of the cookie token; the token itself is never stored
    user_id          uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    organisation_id  uuid NOT NULL REFERENCES organisations ON DELETE CASCADE,
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_seen_at     timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL      -- absolute limit; the idle limit is checked against last_seen_at
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE buttons (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organisation_id  uuid NOT NULL REFERENCES organisations ON DELETE CASCADE,
    public_key       text NOT NULL UNIQUE CHECK (public_key ~ '^cb_[A-Za-z0-9_-]{16,64}$'),
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    allowed_origins  text[] NOT NULL DEFAULT '{}',
    ring_timeout_s   integer CHECK (ring_timeout_s BETWEEN 1 AND 600),   -- NULL: the server's default
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX buttons_organisation ON buttons (organisation_id);

CREATE TABLE calls (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organisation_id  uuid NOT NULL REFERENCES organisations ON DELETE CASCADE,
    button_id        uuid REFERENCES buttons ON DELETE SET NULL,
    agent_id         uuid REFERENCES users ON DELETE SET NULL,
    state            text NOT NULL CHECK (state IN ('created', 'queued', 'answered', 'ended')),
    end_reason       text CHECK (end_reason IN ('visitor_hangup', 'agent_hangup', 'no_answer',
                                                'abandoned', 'rejected', 'failed', 'shutdown')),
    page_url         text CHECK (length(page_url) <= 2048),
    created_at       timestamptz NOT NULL,
    queued_at        timestamptz,
    answered_at      timestamptz,
    ended_at         timestamptz,
    -- The funnel as a column: every ended call is exactly one of these.
    outcome          text GENERATED ALWAYS AS (
        CASE
            WHEN ended_at IS NULL THEN NULL
            WHEN answered_at IS NOT NULL THEN 'answered'
            WHEN end_reason = 'abandoned' THEN 'abandoned'
            WHEN end_reason = 'no_answer' THEN 'no_answer'
            ELSE 'missed'
        END
    ) STORED,
    CHECK ((state = 'ended') = (ended_at IS NOT NULL)),
    CHECK ((state = 'ended') = (end_reason IS NOT NULL))
);
CREATE INDEX calls_organisation_created ON calls (organisation_id, created_at DESC, id DESC);
CREATE INDEX calls_open ON calls (state) WHERE state <> 'ended';

CREATE TABLE call_events (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_id          uuid NOT NULL REFERENCES calls ON DELETE CASCADE,
    organisation_id  uuid NOT NULL REFERENCES organisations ON DELETE CASCADE,
    at               timestamptz NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('created', 'queued', 'answered', 'ended',
                                                   'agent_rung', 'agent_declined', 'agent_ring_stopped')),
    from_state       text,
    to_state         text,
    agent_id         uuid REFERENCES users ON DELETE SET NULL,
    reason           text
);
CREATE INDEX call_events_call ON call_events (call_id, id);
