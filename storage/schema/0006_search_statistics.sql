-- The planner reads no statistics from partial indexes' expressions, so it guessed a visitor
-- search matches thousands of calls and walked the newest-first index through the whole
-- organisation (250 ms at a million calls; bench/calls_page.py). Statistics on the expressions
-- themselves give it true estimates, and the search indexes are used (0.2 to 1 ms).
CREATE STATISTICS calls_visitor_name_lower ON (lower(visitor_name)) FROM calls;
CREATE STATISTICS calls_visitor_email_lower ON (lower(visitor_email)) FROM calls;
CREATE STATISTICS calls_visitor_phone_digits ON (regexp_replace(visitor_phone, '[^0-9+]', '', 'g')) FROM calls;
ANALYZE calls;
