-- name: block
-- description: Attends within its own segment (pair inputs only): every non-special position
--   is a query, and its sieve is the non-special positions of the query's own segment
--   (A or B). Runs over single inputs have no block samples.
-- level: token
-- tau: 3
SELECT q.run_id, q.sentence_id, q.token_pos AS query_pos, k.token_pos AS key_pos
FROM tokens AS q
JOIN runs AS r ON r.run_id = q.run_id
JOIN tokens AS k
  ON k.run_id = q.run_id AND k.sentence_id = q.sentence_id AND k.segment = q.segment
WHERE r.pairs AND q.special IS NULL AND k.special IS NULL
