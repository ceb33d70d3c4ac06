-- Fixed-offset baselines for run $run: for every offset in $offsets, per relation, direction and
-- split, how many dependency edges the word at that offset gets right.
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
offs AS (SELECT unnest($offsets) AS "offset"),
judged AS (
    SELECT o."offset", d.relation, d.split, 'dep->head' AS direction, d.gov - d.dep = o."offset" AS correct
    FROM deps d CROSS JOIN offs o
    UNION ALL
    SELECT o."offset", d.relation, d.split, 'head->dep' AS direction, d.dep - d.gov = o."offset" AS correct
    FROM deps d CROSS JOIN offs o
)
SELECT "offset"::BIGINT AS "offset", coalesce(relation, 'all') AS relation, direction, split,
       count(*) AS n, count(*) FILTER (WHERE correct) AS n_correct
FROM judged
GROUP BY GROUPING SETS (("offset", relation, direction, split), ("offset", direction, split))
