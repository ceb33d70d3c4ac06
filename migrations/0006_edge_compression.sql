-- DuckDB analyses every column segment it appends to choose a compression method. The row keys
-- of the edges (run_id, sentence_id, layer, head, query_pos) come in long runs of one value
-- (a top-k row's 8 edges share all five), so it always chose RLE for them (query_pos: in most
-- segments), yet that analysis cost 40% of the append. Naming RLE skips it: the EWT dev edges
-- (19.2 M) append 13-21% faster at 2 threads, for 0.014 more bytes an edge (query_pos, in
-- the segments where bit-packing had won); docs/benchmarks.md, "Fifth session (CPU)".
-- The append is what bounds ingestion on a GPU. The table is rebuilt with its rows in their
-- order; the views that read edge_store (edges) read the new one by name.
CREATE TABLE edge_store_rle (
    run_id       INTEGER  USING COMPRESSION rle NOT NULL,
    sentence_id  INTEGER  USING COMPRESSION rle NOT NULL,
    layer        SMALLINT USING COMPRESSION rle NOT NULL,
    head         SMALLINT USING COMPRESSION rle NOT NULL,
    query_pos    SMALLINT USING COMPRESSION rle NOT NULL,
    key_pos      SMALLINT NOT NULL,
    weight       FLOAT,
    weight16     USMALLINT
);
INSERT INTO edge_store_rle
SELECT run_id, sentence_id, layer, head, query_pos, key_pos, weight, weight16 FROM edge_store;
DROP TABLE edge_store;
ALTER TABLE edge_store_rle RENAME TO edge_store;
