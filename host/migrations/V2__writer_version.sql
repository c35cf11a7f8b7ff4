-- The number of the last write batch, of any replica (batches hold the
-- write lock, so the numbers follow commit order). A replica whose own last
-- batch has this number knows nobody else wrote since, and keeps what its
-- batches read; otherwise it reads afresh.
CREATE TABLE writer_version (version bigint NOT NULL);
INSERT INTO writer_version VALUES (0);
