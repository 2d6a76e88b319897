-- Accounts, teams, button routing and appearance, the queue's outcomes, callbacks, call links.

ALTER TABLE users
    ADD COLUMN agent_code text CHECK (length(agent_code) BETWEEN 1 AND 64),   -- the team's own agent ID
    ADD COLUMN phone text CHECK (length(phone) BETWEEN 3 AND 32);

CREATE TABLE teams (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organisation_id  uuid NOT NULL REFERENCES organisations ON DELETE CASCADE,
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organisation_id, name)
);

CREATE TABLE team_members (
    team_id  uuid NOT NULL REFERENCES teams ON DELETE CASCADE,
    user_id  uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    PRIMARY KEY (team_id, user_id)
);

ALTER TABLE buttons
    ADD COLUMN strategy text NOT NULL DEFAULT 'ring_all'
        CHECK (strategy IN ('ring_all', 'longest_idle', 'round_robin')),
    ADD COLUMN max_queue_wait_s integer NOT NULL DEFAULT 300 CHECK (max_queue_wait_s BETWEEN 0 AND 7200),
    ADD COLUMN wrap_up_s integer NOT NULL DEFAULT 0 CHECK (wrap_up_s BETWEEN 0 AND 3600),
    -- {"mon": [["09:00", "17:00"]], ...}; NULL: always open
    ADD COLUMN opening_hours jsonb,
    ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC' CHECK (length(time_zone) BETWEEN 1 AND 64),
    ADD COLUMN closed_message text NOT NULL DEFAULT 'We are closed right now. Leave your details and we will call you back.'
        CHECK (length(closed_message) BETWEEN 1 AND 500),
    -- {"name": "optional", "email": "required", "phone": "off"}
    ADD COLUMN form_fields jsonb NOT NULL DEFAULT '{"name": "optional", "email": "off", "phone": "off"}',
    ADD COLUMN language text NOT NULL DEFAULT 'en' CHECK (language IN ('en', 'fr')),
    ADD COLUMN colour text NOT NULL DEFAULT '#1a7f4b' CHECK (colour ~ '^#[0-9a-fA-F]{6}$'),
    ADD COLUMN position text NOT NULL DEFAULT 'bottom-right' CHECK (position IN ('bottom-right', 'bottom-left'));

-- Whom a button rings: listed agents and teams; none listed means every agent of the organisation.
CREATE TABLE button_targets (
    button_id  uuid NOT NULL REFERENCES buttons ON DELETE CASCADE,
    user_id    uuid REFERENCES users ON DELETE CASCADE,
    team_id    uuid REFERENCES teams ON DELETE CASCADE,
    CHECK ((user_id IS NULL) <> (team_id IS NULL)),
    UNIQUE (button_id, user_id),
    UNIQUE (button_id, team_id)
);

ALTER TABLE calls
    ADD COLUMN direction text NOT NULL DEFAULT 'inbound' CHECK (direction IN ('inbound', 'outbound')),
    ADD COLUMN visitor_name text CHECK (length(visitor_name) <= 200),
    ADD COLUMN visitor_email text CHECK (length(visitor_email) <= 320),
    ADD COLUMN visitor_phone text CHECK (length(visitor_phone) <= 32),
    ADD COLUMN rating smallint CHECK (rating BETWEEN 1 AND 5),
    ADD COLUMN rating_comment text CHECK (length(rating_comment) <= 2000),
    ADD COLUMN notes text CHECK (length(notes) <= 10000),
    ADD COLUMN rating_token_hash bytea;
CREATE INDEX calls_visitor_email ON calls (organisation_id, visitor_email) WHERE visitor_email IS NOT NULL;
CREATE INDEX calls_visitor_phone ON calls (organisation_id, visitor_phone) WHERE visitor_phone IS NOT NULL;
CREATE INDEX calls_agent ON calls (organisation_id, agent_id, created_at DESC);

ALTER TABLE call_events DROP CONSTRAINT call_events_kind_check;
ALTER TABLE call_events ADD CONSTRAINT call_events_kind_check CHECK (kind IN (
    'created', 'queued', 'answered', 'ended',
    'agent_rung', 'agent_declined', 'agent_ring_stopped', 'agent_ring_timeout'));

CREATE TABLE callback_requests (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organisation_id  uuid NOT NULL REFERENCES organisations ON DELETE CASCADE,
    button_id        uuid REFERENCES buttons ON DELETE SET NULL,
    call_id          uuid REFERENCES calls ON DELETE SET NULL,   -- the call that ended in this request, if any
    name             text CHECK (length(name) <= 200),
    email            text CHECK (length(email) <= 320),
    phone            text CHECK (length(phone) <= 32),
    note             text CHECK (length(note) <= 2000),
    reason           text NOT NULL CHECK (reason IN ('closed', 'max_wait', 'no_agent', 'visitor')),
    state            text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'done')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    done_at          timestamptz,
    done_by          uuid REFERENCES users ON DELETE SET NULL,
    CHECK (email IS NOT NULL OR phone IS NOT NULL),
    CHECK ((state = 'done') = (done_at IS NOT NULL))
);
CREATE INDEX callback_requests_open ON callback_requests (organisation_id, state, created_at);

CREATE TABLE call_links (
    token_hash       bytea PRIMARY KEY,                          -- SHA-256 of the link's token
    organisation_id  uuid NOT NULL REFERENCES organisations ON DELETE CASCADE,
    agent_id         uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    callback_id      uuid REFERENCES callback_requests ON DELETE SET NULL,
    button_id        uuid REFERENCES buttons ON DELETE SET NULL, -- whose settings (recording, language) apply
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    used_at          timestamptz,
    call_id          uuid REFERENCES calls ON DELETE SET NULL
);
CREATE INDEX call_links_agent ON call_links (organisation_id, agent_id, created_at DESC);
