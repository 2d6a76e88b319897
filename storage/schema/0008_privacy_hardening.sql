-- Data protection, hardened after review.

-- One caller however they typed their email: callback requests now store it lower-cased, as calls
-- do (since 0003's routing); rows stored before are brought in line, so that lookups, holds and
-- restrictions find them.
UPDATE callback_requests SET email = lower(email) WHERE email IS NOT NULL AND email <> lower(email);
UPDATE calls SET visitor_email = lower(visitor_email) WHERE visitor_email IS NOT NULL AND visitor_email <> lower(visitor_email);

-- The audit log's retention flag is honoured only for the table's owner (purge_audit_log runs as
-- its owner): a role merely granted DELETE cannot switch the append-only trigger off with a SET.
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'TRUNCATE' AND pg_trigger_depth() > 1 THEN
        IF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        RETURN NEW;
    END IF;
    IF TG_OP = 'DELETE' AND current_setting('callbutton.audit_retention', true) = 'on'
       AND current_user = (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = TG_RELID) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP;
END
$$;
-- Only roles granted it may run the audit purge (the owner, and the server's role where it differs:
-- GRANT EXECUTE ON FUNCTION purge_audit_log(uuid, timestamptz, integer, boolean) TO <server role>).
REVOKE EXECUTE ON FUNCTION purge_audit_log(uuid, timestamptz, integer, boolean) FROM PUBLIC;

-- Lifted holds and restrictions name a person; the purge removes them with the calls' retention.
CREATE INDEX legal_holds_lifted ON legal_holds (organisation_id, lifted_at) WHERE lifted_at IS NOT NULL;
CREATE INDEX subject_restrictions_lifted ON subject_restrictions (organisation_id, lifted_at)
    WHERE lifted_at IS NOT NULL;
