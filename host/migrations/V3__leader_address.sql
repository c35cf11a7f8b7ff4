-- Where the leading replica answers HTTP: the other replicas forward their
-- API writes there, so one writer batches them all (empty: nowhere; each
-- replica then writes itself, under the write lock as always).
CREATE TABLE leader (url text NOT NULL);
INSERT INTO leader VALUES ('');
