-- Syntactic head accuracy (Clark et al. 2019) of every head of run $run, per relation, direction
-- (dep->head, head->dep) and split (selection = even sentence_id, report = odd), with the
-- relation 'all' over every non-root word, in the sentences $lo .. $hi (headdb.accuracy adds up
-- the counts of consecutive ranges: one query over a large run held all its word attention in
-- memory). Reads the word_attention view (migration 0003) between two words of one segment, as
-- word_attention_top does, and takes its argmax both ways, as Clark et al.'s released code does:
-- dep->head: per dependent, the word it attends to most (the row of the word-level map), right
-- if that is its head; head->dep: per dependent, the word that attends to it most (the column:
-- their transposed map), right if that is its head. Ties go to the lower word_pos (numpy's
-- argmax); a dependent with no stored edge from it (dep->head) or to it (head->dep) predicts
-- nothing and counts as wrong.
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
-- every stored word-to-word weight of the range between two words of one segment (the filter of
-- word_attention_top), summed once for both directions
pair AS MATERIALIZED (
    SELECT w.sentence_id, w.layer, w.head, w.query_word_pos, w.key_word_pos, w.weight
    FROM word_attention w
    JOIN word_pieces qp ON qp.run_id = w.run_id AND qp.sentence_id = w.sentence_id AND qp.word_pos = w.query_word_pos
    JOIN word_pieces kp ON kp.run_id = w.run_id AND kp.sentence_id = w.sentence_id AND kp.word_pos = w.key_word_pos
    WHERE w.run_id = $run AND w.sentence_id BETWEEN $lo AND $hi
      AND w.key_word_pos <> w.query_word_pos AND kp.segment = qp.segment
),
attends_most AS (  -- per word, the word it attends to most (ties: the lower word_pos)
    SELECT sentence_id, layer, head, query_word_pos AS word_pos,
           arg_max(key_word_pos, (weight, -key_word_pos)) AS predicted
    FROM pair GROUP BY sentence_id, layer, head, query_word_pos
),
attended_most_by AS (  -- per word, the word that attends to it most (ties: the lower word_pos)
    SELECT sentence_id, layer, head, key_word_pos AS word_pos,
           arg_max(query_word_pos, (weight, -query_word_pos)) AS predicted
    FROM pair GROUP BY sentence_id, layer, head, key_word_pos
),
judged AS (
    SELECT h.layer, h.head, d.relation, d.split, 'dep->head' AS direction,
           coalesce(t.predicted = d.gov, false) AS correct
    FROM deps d CROSS JOIN heads h
    LEFT JOIN attends_most t ON t.sentence_id = d.sentence_id AND t.layer = h.layer AND t.head = h.head
                            AND t.word_pos = d.dep
    UNION ALL
    SELECT h.layer, h.head, d.relation, d.split, 'head->dep' AS direction,
           coalesce(t.predicted = d.gov, false) AS correct
    FROM deps d CROSS JOIN heads h
    LEFT JOIN attended_most_by t ON t.sentence_id = d.sentence_id AND t.layer = h.layer AND t.head = h.head
                                AND t.word_pos = d.dep
)
SELECT layer::BIGINT AS layer, head::BIGINT AS head, CASE WHEN grouping(relation) = 1 THEN 'all' ELSE coalesce(relation, '_') END AS relation, direction, split,
       count(*) AS n, count(*) FILTER (WHERE correct) AS n_correct
FROM judged
GROUP BY GROUPING SETS ((layer, head, relation, direction, split), (layer, head, direction, split))
