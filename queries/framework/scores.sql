-- The sieve bias score of every (run, role, layer, head, sentence), for every role at once,
-- in one pass over the stored edges (SCORES.md):
--
--   r_i         = L * (sum of the stored weights on S_i) / |S_i|
--   score       = mean of r_i over the queries i whose sieve is not empty
--   score_upper = the same, each row's in-sieve mass raised by what its unstored keys could
--                 hold: min(residual_i, (|S_i| - stored keys in S_i) * smallest stored weight_i)
--
-- Filled in by headdb.scores: the placeholder `sieve` in braces names a relation
-- (role, run_id, sentence_id, query_pos, key_pos) holding the roles' token-level sieves, one
-- row per (query, key) pair of a role, role = 0, 1, ... R-1. Every line that holds `r` in
-- braces is written once per role with it replaced by the role's number (so a per-role item
-- never spans two lines).
-- Every stored attention row has at least one edge, so each (layer, head) has every query.
WITH sieve AS (
    SELECT role, run_id, sentence_id, query_pos, key_pos FROM {sieve}
),
-- every (query, key) pair of any role, once, with the set of its roles as a bit mask
pairs AS (
    SELECT run_id, sentence_id, query_pos, key_pos, bit_or(1::BIGINT << role) AS roles
    FROM sieve
    GROUP BY run_id, sentence_id, query_pos, key_pos
),
-- |S_i| of each role (0: the query does not take part in that role)
queries AS (
    SELECT run_id, sentence_id, query_pos,
           count(*) FILTER (WHERE role = {r})::INTEGER AS size_{r},
    FROM sieve
    GROUP BY run_id, sentence_id, query_pos
),
-- per stored attention row: its residual and its smallest stored weight
attn_rows AS (
    SELECT run_id, sentence_id, layer, head, query_pos,
           greatest(0.0, 1.0 - sum(weight::DOUBLE)) AS residual,
           min(weight)::DOUBLE AS min_weight
    FROM edges
    WHERE run_id IN (SELECT DISTINCT run_id FROM sieve)
    GROUP BY run_id, sentence_id, layer, head, query_pos
),
-- per attention row with a stored key in some sieve: per role, the stored mass and the
-- number of stored keys inside the sieve (every aggregate reads the pair's roles, which keeps
-- DuckDB from pre-aggregating all edges before the join)
hits AS (
    SELECT e.run_id, e.sentence_id, e.layer, e.head, e.query_pos,
           sum(CASE WHEN p.roles >> {r} & 1 = 1 THEN e.weight::DOUBLE ELSE 0.0 END) AS in_mass_{r},
           count(CASE WHEN p.roles >> {r} & 1 = 1 THEN 1 END)::INTEGER AS in_count_{r},
    FROM edges AS e
    JOIN pairs AS p USING (run_id, sentence_id, query_pos, key_pos)
    GROUP BY e.run_id, e.sentence_id, e.layer, e.head, e.query_pos
),
-- per (run, sentence, layer, head): the sums of r_i / L and of its bound, and the queries
per_head AS (
    SELECT a.run_id, a.sentence_id, a.layer, a.head,
           sum(coalesce(h.in_mass_{r}, 0.0) / nullif(q.size_{r}, 0)) AS ratio_{r},
           sum((coalesce(h.in_mass_{r}, 0.0) + least(a.residual, (q.size_{r} - coalesce(h.in_count_{r}, 0)) * a.min_weight)) / nullif(q.size_{r}, 0)) AS ratio_upper_{r},
           count(nullif(q.size_{r}, 0))::INTEGER AS n_queries_{r},
    FROM attn_rows AS a
    JOIN queries AS q USING (run_id, sentence_id, query_pos)
    LEFT JOIN hits AS h USING (run_id, sentence_id, layer, head, query_pos)
    GROUP BY a.run_id, a.sentence_id, a.layer, a.head
),
-- one row per role
long AS (
    SELECT run_id, sentence_id, layer, head,
           unnest([
               {r},
           ]) AS role,
           unnest([
               ratio_{r},
           ]) AS ratio,
           unnest([
               ratio_upper_{r},
           ]) AS ratio_upper,
           unnest([
               n_queries_{r},
           ]) AS n_queries
    FROM per_head
)
SELECT l.run_id, l.role::SMALLINT AS role, l.layer, l.head, l.sentence_id,
       rs.n_tokens * l.ratio / l.n_queries AS score,
       rs.n_tokens * l.ratio_upper / l.n_queries AS score_upper,
       l.n_queries
FROM long AS l
JOIN run_sentences AS rs USING (run_id, sentence_id)
WHERE l.n_queries > 0
