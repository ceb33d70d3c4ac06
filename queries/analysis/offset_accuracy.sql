-- Fixed-offset baselines for run $run: for every offset in $offsets, per relation, direction and
-- split, how many dependency edges the word at that offset from the dependent gets right (head =
-- dependent + offset). Both directions predict each dependent's head (head->dep from the column
-- of the word-level map, head_accuracy.sql), so a fixed offset predicts the same word for both,
-- as Clark et al.'s code scores one offset baseline for both.
WITH
deps AS (
{dependencies}
),
offs AS (SELECT unnest($offsets) AS "offset"),
judged AS (
    SELECT o."offset", d.relation, d.split, 'dep->head' AS direction, d.gov - d.dep = o."offset" AS correct
    FROM deps d CROSS JOIN offs o
    UNION ALL
    SELECT o."offset", d.relation, d.split, 'head->dep' AS direction, d.gov - d.dep = o."offset" AS correct
    FROM deps d CROSS JOIN offs o
)
SELECT "offset"::BIGINT AS "offset", CASE WHEN grouping(relation) = 1 THEN 'all' ELSE coalesce(relation, '_') END AS relation, direction, split,
       count(*) AS n, count(*) FILTER (WHERE correct) AS n_correct
FROM judged
GROUP BY GROUPING SETS (("offset", relation, direction, split), ("offset", direction, split))
