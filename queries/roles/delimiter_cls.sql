-- name: delimiter_cls
-- description: Attends to [CLS]: every position is a query, and its sieve is the [CLS]
--   position (the model's start token, such as <s>).
-- level: token
-- tau: 3
SELECT q.run_id, q.sentence_id, q.token_pos AS query_pos, k.token_pos AS key_pos
FROM tokens AS q
JOIN tokens AS k ON k.run_id = q.run_id AND k.sentence_id = q.sentence_id
WHERE k.special = 'cls'
