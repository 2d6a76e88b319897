-- A new button asks nothing before a call (a click calls); admins turn form fields on.
ALTER TABLE buttons ALTER COLUMN form_fields SET DEFAULT '{"name": "off", "email": "off", "phone": "off"}';

-- Whether a button rings every agent of its organisation, or only its listed agents and teams.
-- Kept apart from the list so that deleting the last listed team or agent leaves the button
-- ringing nobody, rather than suddenly everybody.
ALTER TABLE buttons ADD COLUMN routes_to_all boolean NOT NULL DEFAULT true;
UPDATE buttons b SET routes_to_all = NOT EXISTS (SELECT 1 FROM button_targets t WHERE t.button_id = b.id);
