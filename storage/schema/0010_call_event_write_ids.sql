-- A call's events are written through an outbox that retries through a database outage. A write
-- whose commit was lost with its connection is tried again; its write id makes the second try a
-- no-op instead of a second copy of the event (and of the webhook delivery written with it).
ALTER TABLE call_events ADD COLUMN write_id uuid;
CREATE UNIQUE INDEX call_events_write_id ON call_events (write_id);
