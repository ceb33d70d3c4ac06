-- name: delimiter
-- description: Attends to the special tokens: every position is a query, and its sieve is
--   all special-token positions ([CLS], every [SEP] and any other special token, or the
--   model's equivalents).
-- level: token
-- tau: 3
SELECT q.run_id, q.sentence_id, q.token_pos AS query_pos, k.token_pos AS key_pos
FROM tokens AS q
JOIN tokens AS k ON k.run_id = q.run_id AND k.sentence_id = q.sentence_id
WHERE k.special IS NOT NULL
