-- Whom a button rings is kept in each server process's memory (server/directory.py). A change to
-- what that reads (a button, its targets, a team's members) tells every process, once it commits,
-- to forget what it holds. One notification a statement; Postgres folds a transaction's identical
-- notifications into one.
CREATE FUNCTION callbutton_routing_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('callbutton_routing', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER buttons_routing_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON buttons
    FOR EACH STATEMENT EXECUTE FUNCTION callbutton_routing_changed();
CREATE TRIGGER button_targets_routing_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON button_targets
    FOR EACH STATEMENT EXECUTE FUNCTION callbutton_routing_changed();
CREATE TRIGGER team_members_routing_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON team_members
    FOR EACH STATEMENT EXECUTE FUNCTION callbutton_routing_changed();
