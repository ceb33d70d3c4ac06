-- The parts of the role contract that only data can show, for the sieves in the relation named
-- by `sieve` in braces (role, run_id, sentence_id, query_pos, key_pos): a NULL sentence or
-- position, a pair listed twice by one role, and a position outside the stored sequence
-- [0, n_tokens). One example per role.
WITH problems AS (
    SELECT role, 'null' AS kind, sentence_id, query_pos, key_pos
    FROM {sieve}
    WHERE sentence_id IS NULL OR query_pos IS NULL OR key_pos IS NULL
    UNION ALL
    SELECT role, 'duplicate' AS kind, sentence_id, query_pos, key_pos
    FROM {sieve}
    GROUP BY role, run_id, sentence_id, query_pos, key_pos
    HAVING count(*) > 1
    UNION ALL
    SELECT s.role, 'out_of_range' AS kind, s.sentence_id, s.query_pos, s.key_pos
    FROM {sieve} AS s
    LEFT JOIN run_sentences AS rs USING (run_id, sentence_id)
    WHERE rs.n_tokens IS NULL
       OR s.query_pos < 0 OR s.query_pos >= rs.n_tokens
       OR s.key_pos < 0 OR s.key_pos >= rs.n_tokens
)
SELECT role, kind, sentence_id, query_pos, key_pos
FROM problems
ORDER BY role, kind <> 'null', kind, sentence_id, query_pos, key_pos
LIMIT 1
