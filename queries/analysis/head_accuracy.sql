-- Syntactic head accuracy (Clark et al. 2019) of every head of run $run, per relation, direction
-- (dep->head, head->dep) and split (selection = even sentence_id, report = odd), with the
-- relation 'all' over every non-root word. Reads the word_attention_top view (migration 0003).
WITH
deps AS (
    SELECT w.sentence_id, w.word_pos AS dep, w.head_word_pos AS gov,
           CASE WHEN split_part(w.deprel, ':', 1) = 'dobj' THEN 'obj' ELSE split_part(w.deprel, ':', 1) END
               AS relation,
           CASE WHEN w.sentence_id % 2 = 0 THEN 'selection' ELSE 'report' END AS split
    FROM words w
    JOIN runs r ON r.corpus_id = w.corpus_id AND r.run_id = $run
    JOIN word_pieces pd ON pd.run_id = $run AND pd.sentence_id = w.sentence_id AND pd.word_pos = w.word_pos
    JOIN word_pieces pg ON pg.run_id = $run AND pg.sentence_id = w.sentence_id AND pg.word_pos = w.head_word_pos
    WHERE w.head_word_pos IS NOT NULL
),
heads AS (
    SELECT l.layer, h.head
    FROM runs r, range(r.n_layers) l(layer), range(r.n_heads) h(head)
    WHERE r.run_id = $run
),
top AS (SELECT * FROM word_attention_top WHERE run_id = $run),
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
SELECT layer::BIGINT AS layer, head::BIGINT AS head, coalesce(relation, 'all') AS relation, direction, split,
       count(*) AS n, count(*) FILTER (WHERE correct) AS n_correct
FROM judged
GROUP BY GROUPING SETS ((layer, head, relation, direction, split), (layer, head, direction, split))
