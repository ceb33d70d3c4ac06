-- A column that holds only NULLs still costs DuckDB's append: every float32 run wrote a NULL
-- weight16 for each edge, and every 16-bit run a NULL weight. Without the NULL column the
-- ingest of EWT dev (19.2 M edges) wrote in 1.35-1.42 s against 1.55-1.57 s
-- (docs/benchmarks.md, "Eighth session (CPU)"). 16-bit runs move to their own table,
-- edge_store16; edge_store keeps the float32 runs, with no weight16 column. The view edges reads
-- both, each row's weight as a FLOAT as before, so no query that reads edges changes. Each row
-- goes where the old view took its weight from (coalesce(weight, weight16 / 65535)), so rows
-- written by hand move as they read.
CREATE TABLE edge_store16 (
    run_id       INTEGER  USING COMPRESSION rle NOT NULL,
    sentence_id  INTEGER  USING COMPRESSION rle NOT NULL,
    layer        SMALLINT USING COMPRESSION rle NOT NULL,
    head         SMALLINT USING COMPRESSION rle NOT NULL,
    query_pos    SMALLINT USING COMPRESSION rle NOT NULL,
    key_pos      SMALLINT NOT NULL,
    weight16     USMALLINT NOT NULL
);
INSERT INTO edge_store16
SELECT run_id, sentence_id, layer, head, query_pos, key_pos, weight16 FROM edge_store
WHERE weight IS NULL AND weight16 IS NOT NULL;
CREATE TABLE edge_store32 (
    run_id       INTEGER  USING COMPRESSION rle NOT NULL,
    sentence_id  INTEGER  USING COMPRESSION rle NOT NULL,
    layer        SMALLINT USING COMPRESSION rle NOT NULL,
    head         SMALLINT USING COMPRESSION rle NOT NULL,
    query_pos    SMALLINT USING COMPRESSION rle NOT NULL,
    key_pos      SMALLINT NOT NULL,
    weight       FLOAT
);
INSERT INTO edge_store32
SELECT run_id, sentence_id, layer, head, query_pos, key_pos, weight FROM edge_store
WHERE weight IS NOT NULL OR weight16 IS NULL;
DROP TABLE edge_store;
ALTER TABLE edge_store32 RENAME TO edge_store;

CREATE OR REPLACE VIEW edges AS
SELECT run_id, sentence_id, layer, head, query_pos, key_pos, weight FROM edge_store
UNION ALL
SELECT run_id, sentence_id, layer, head, query_pos, key_pos, (weight16 / 65535)::FLOAT AS weight FROM edge_store16;
