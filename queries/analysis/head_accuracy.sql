-- Syntactic head accuracy (Clark et al. 2019) of every head of run $run, per relation, direction
-- (dep->head, head->dep) and split (selection = even sentence_id, report = odd), with the
-- relation 'all' over every non-root word, in the sentences $lo .. $hi (headdb.accuracy adds up
-- the counts of consecutive ranges: one query over a large run held all its word attention in
-- memory). Reads the word_attention_top view (migration 0003).
WITH
deps AS (
SELECT * FROM (
{dependencies}
) WHERE sentence_id BETWEEN $lo AND $hi
),
heads AS (
    SELECT l.layer, h.head
    FROM runs r, range(r.n_layers) l(layer), range(r.n_heads) h(head)
    WHERE r.run_id = $run
),
top AS (SELECT * FROM word_attention_top WHERE run_id = $run AND sentence_id BETWEEN $lo AND $hi),
judged AS (
    SELECT h.layer, h.head, d.relation, d.split, 'dep->head' AS direction,
           coalesce(t.key_word_pos = d.gov, false) AS correct
    FROM deps d CROSS JOIN heads h
    LEFT JOIN top t ON t.sentence_id = d.sentence_id AND t.layer = h.layer AND t.head = h.head
                   AND t.query_word_pos = d.dep
    UNION ALL
    SELECT h.layer, h.head, d.relation, d.split, 'head->dep' AS direction,
           coalesce(t.key_word_pos = d.dep, false) AS correct
    FROM deps d CROSS JOIN heads h
    LEFT JOIN top t ON t.sentence_id = d.sentence_id AND t.layer = h.layer AND t.head = h.head
                   AND t.query_word_pos = d.gov
)
SELECT layer::BIGINT AS layer, head::BIGINT AS head, CASE WHEN grouping(relation) = 1 THEN 'all' ELSE coalesce(relation, '_') END AS relation, direction, split,
       count(*) AS n, count(*) FILTER (WHERE correct) AS n_correct
FROM judged
GROUP BY GROUPING SETS ((layer, head, relation, direction, split), (layer, head, direction, split))
