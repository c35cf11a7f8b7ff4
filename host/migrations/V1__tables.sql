-- Every table of the store is a range of this one: ordered keys (bytea, so
-- they sort byte-wise as the redb backend's do and may hold NUL separators)
-- to JSON or counter bytes. Records and their index entries are written by
-- the same transaction, as in redb.
CREATE TABLE kv (
    tbl   text  NOT NULL,
    key   bytea NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (tbl, key)
);

-- What each committed batch changed, for the other replicas' event feeds and
-- long-polls: written in the batch's transaction, announced by NOTIFY at
-- commit, pruned after a while by the leading replica.
CREATE TABLE changes (
    seq     bigserial   PRIMARY KEY,
    replica text        NOT NULL,
    at      timestamptz NOT NULL DEFAULT now(),
    payload text        NOT NULL
);
