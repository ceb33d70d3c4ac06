-- name: local
-- description: Attends to its neighbourhood: every position is a query, and its sieve is the
--   positions j with |i - j| <= window (window = 2), clipped to the sequence, including i
--   itself and special tokens.
-- level: token
-- tau: 3
-- params: window=2
SELECT q.run_id, q.sentence_id, q.token_pos AS query_pos, k.token_pos AS key_pos
FROM tokens AS q
JOIN tokens AS k
  ON k.run_id = q.run_id
 AND k.sentence_id = q.sentence_id
 AND k.token_pos BETWEEN q.token_pos - getvariable('window') AND q.token_pos + getvariable('window')
