-- Several server processes share one database (server/cluster.py). The node that carries a call, or
-- takes a clip upload, is written with it, so that a node starting after a crash closes its own
-- interrupted work and that of dead nodes, never what a live node is doing.
ALTER TABLE calls ADD COLUMN node text;
ALTER TABLE clips ADD COLUMN node text;
CREATE INDEX calls_open_node ON calls (node) WHERE state <> 'ended';
