-- Sparse runs may keep their weights as 16-bit fixed point (`headdb ingest --weight-bits 16`):
-- floor(weight * 65535) in `weight16`, about 1.5 bytes an edge less than a FLOAT (its 23
-- mantissa bits are nearly random, so no lossless encoding shrinks them). The physical table
-- becomes `edge_store`; `edges` is a view that gives every run a FLOAT `weight` (exact for
-- 32-bit runs, weight16 / 65535 for 16-bit ones), so every query reads weights one way.
-- runs.weight_bits says which a run stored; the scoring query widens its upper bound by the
-- rounding (queries/framework/scores.sql). Nothing is rewritten: old runs stay 32-bit.
ALTER TABLE edges RENAME TO edge_store;
ALTER TABLE edge_store ALTER COLUMN weight DROP NOT NULL;
ALTER TABLE edge_store ADD COLUMN weight16 USMALLINT;
ALTER TABLE runs ADD COLUMN weight_bits SMALLINT DEFAULT 32;

CREATE VIEW edges AS
SELECT run_id, sentence_id, layer, head, query_pos, key_pos,
       coalesce(weight, (weight16 / 65535)::FLOAT) AS weight
FROM edge_store;
