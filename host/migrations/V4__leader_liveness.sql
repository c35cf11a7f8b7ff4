-- When the leading replica last said it leads, by the database's clock: a
-- leader that stopped refreshing it (paused, cut off from the database) is
-- not forwarded to after a few seconds, and the others write themselves.
ALTER TABLE leader ADD COLUMN at timestamptz NOT NULL DEFAULT '-infinity';
