-- The sieve bias score of every (run, role, layer, head, sentence), for every role at once,
-- in one query over the stored edges (SCORES.md):
--
--   r_i         = L * (sum of the stored weights on S_i) / |S_i|
--   score       = mean of r_i over the queries i whose sieve is not empty
--   score_upper = the same, each row's in-sieve mass raised by what its unstored keys could
--                 hold: min(residual_i, (|S_i| - stored keys in S_i) * smallest stored weight_i)
--
-- A run with 16-bit weights (runs.weight_bits) stores each weight rounded down to a multiple of
-- 1/65535 and reads it back as FLOAT, so a stored weight lies below the model's by less than
-- step = 1/65535 + 2^-24 (and never above it). The score from the stored weights then stays a
-- lower bound, and the upper bound adds what the rounding may have taken: step for each stored
-- in-sieve key, and step on the smallest stored weight (the residual, 1 - stored, only grows):
--     (stored in S_i) * step + min(residual_i, (|S_i| - stored in S_i) * (smallest stored weight_i + step))
-- For 32-bit runs step = 0 and this is the formula above, to the bit.
--
-- Under --dtype bfloat16 or float16 the model's rows sum to 1 only to that precision: each
-- weight is rounded to the nearest value of the type, so a row may sum to 1 + u (u = 2^-8 for
-- bfloat16, 2^-11 for float16; EWT's bfloat16 rows reach 1.003), and 1 - stored would then
-- undercount the unstored keys' mass. The residual of such a run is 1 + slack - stored, with
-- slack = u + 2^-15 (2^-15 for the rounding of the softmax itself); 0 for float32 maps.
--
-- headdb.scores fills in four placeholders (each a word in braces): `sieve` names a relation
-- (role, run_id, sentence_id, query_pos, key_pos) with the roles' token-level sieves, one row
-- per (query, key) pair of a role, role = 0 .. R-1; `edges` names the stored edges to score
-- (the view, the run's part of it, or a range of the run's sentences: headdb scores a large run
-- in pieces; edges of runs without a sieve drop out at the join with `queries`); `bits` is the
-- width of the per-role counter fields packed into one HUGEINT (enough for the longest
-- sequence, R * bits <= 126); and every line that holds `r` is written once per role with the
-- role's number (so a per-role item never spans two lines).
--
-- The score needs no per-row state: sum_i (stored mass on S_i) / |S_i| is a sum over the edges
-- that fall in a sieve, each weighted by 1 / |S_i|. Only the bound needs, per attention row, the
-- residual, the smallest stored weight and the number of stored keys in each role's sieve, and
-- those counts travel as bit fields of one integer so that a row holds three values, not 3 * R.
-- Every stored attention row has at least one edge, so each (layer, head) has every query.
WITH sieve AS (
    SELECT role, run_id, sentence_id, query_pos, key_pos FROM {sieve}
),
-- how far below the model's a stored weight may lie, per run (0 for float32 weights), and how
-- far over 1 a row of the model's map may sum (0 for float32 maps)
steps AS (
    SELECT run_id, CASE WHEN weight_bits = 16 THEN 1.0 / 65535 + 1.0 / 16777216 ELSE 0.0 END AS step,
           CASE dtype WHEN 'bfloat16' THEN 1.0 / 256 + 1.0 / 32768
                      WHEN 'float16' THEN 1.0 / 2048 + 1.0 / 32768 ELSE 0.0 END AS slack
    FROM runs
),
-- |S_i| per role (0: the query does not take part in that role)
queries AS (
    SELECT run_id, sentence_id, query_pos,
           count(*) FILTER (WHERE role = {r})::INTEGER AS size_{r},
    FROM sieve
    GROUP BY run_id, sentence_id, query_pos
),
-- every (query, key) pair of any role, once: a counter bit per role it belongs to, and its
-- weight in each role's r_i / L (1 / |S_i|, or 0 outside that role's sieve)
pairs AS (
    SELECT s.run_id, s.sentence_id, s.query_pos, s.key_pos,
           sum(1::HUGEINT << ({bits} * s.role)::HUGEINT) AS counters,
           coalesce(max(CASE WHEN s.role = {r} THEN 1.0 / q.size_{r} END), 0.0) AS inv_size_{r},
    FROM sieve AS s
    JOIN queries AS q USING (run_id, sentence_id, query_pos)
    GROUP BY s.run_id, s.sentence_id, s.query_pos, s.key_pos
),
-- per stored attention row: residual, smallest stored weight, stored keys per role's sieve
attn_rows AS (
    SELECT e.run_id, e.sentence_id, e.layer, e.head, e.query_pos,
           1.0 - sum(e.weight::DOUBLE) AS residual,
           min(e.weight)::DOUBLE AS min_weight,
           coalesce(sum(p.counters), 0)::HUGEINT AS counters
    FROM {edges} AS e
    LEFT JOIN pairs AS p USING (run_id, sentence_id, query_pos, key_pos)
    GROUP BY e.run_id, e.sentence_id, e.layer, e.head, e.query_pos
),
-- per (run, sentence, layer, head): sum over the queries of (stored mass on S_i) / |S_i|
masses AS (
    SELECT e.run_id, e.sentence_id, e.layer, e.head,
           sum(e.weight * p.inv_size_{r}) AS mass_{r},
    FROM {edges} AS e
    JOIN pairs AS p USING (run_id, sentence_id, query_pos, key_pos)
    GROUP BY e.run_id, e.sentence_id, e.layer, e.head
),
-- per stored attention row: the stored keys in each role's sieve (its counter field), and the run's step
row_counts AS (
    SELECT a.run_id, a.sentence_id, a.layer, a.head, a.query_pos,
           greatest(0.0, a.residual + st.slack) AS residual, a.min_weight, st.step,
           ((a.counters >> ({bits} * {r})::HUGEINT) & ((1::HUGEINT << {bits}) - 1))::INTEGER AS stored_{r},
    FROM attn_rows AS a
    JOIN steps AS st USING (run_id)
),
-- per (run, sentence, layer, head): sum over the queries of (what unstored keys could add) / |S_i|
bounds AS (
    SELECT a.run_id, a.sentence_id, a.layer, a.head,
           sum((a.stored_{r} * a.step + least(a.residual, (q.size_{r} - a.stored_{r}) * (a.min_weight + a.step))) / nullif(q.size_{r}, 0)) AS extra_{r},
    FROM row_counts AS a
    JOIN queries AS q USING (run_id, sentence_id, query_pos)
    GROUP BY a.run_id, a.sentence_id, a.layer, a.head
),
-- per (run, sentence): its length L and the number of participating queries per role, the same
-- for every (layer, head), since each has every query (counted here once, not per head)
sentence_sizes AS (
    SELECT q.run_id, q.sentence_id, any_value(rs.n_tokens) AS n_tokens,
           count(nullif(q.size_{r}, 0))::INTEGER AS n_queries_{r},
    FROM queries AS q
    JOIN run_sentences AS rs USING (run_id, sentence_id)
    GROUP BY q.run_id, q.sentence_id
),
-- one row per role
long AS (
    SELECT b.run_id, b.sentence_id, b.layer, b.head, ss.n_tokens,
           unnest([
               {r},
           ]) AS role,
           unnest([
               coalesce(m.mass_{r}, 0.0),
           ]) AS mass,
           unnest([
               b.extra_{r},
           ]) AS extra,
           unnest([
               ss.n_queries_{r},
           ]) AS n_queries
    FROM bounds AS b
    JOIN sentence_sizes AS ss USING (run_id, sentence_id)
    LEFT JOIN masses AS m USING (run_id, sentence_id, layer, head)
)
SELECT l.run_id, l.role::SMALLINT AS role, l.layer, l.head, l.sentence_id,
       l.n_tokens * l.mass / l.n_queries AS score,
       l.n_tokens * (l.mass + l.extra) / l.n_queries AS score_upper,
       l.n_queries
FROM long AS l
WHERE l.n_queries > 0
