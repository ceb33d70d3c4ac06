-- The parts of the contract of a word-level role that only data can show, checked before its
-- pairs are expanded to pieces (where they would silently drop out, or be reported in piece
-- positions the role never wrote): for the corpus of the run $run_id, a pair with a NULL
-- sentence or word position, or naming a word the sentence does not have ('missing'), and a
-- pair listed twice ('duplicate'). The placeholder word_pairs (in braces) is replaced by the
-- role's SELECT (corpus_id, sentence_id, query_word_pos, key_word_pos). One example.
WITH pairs AS (
    SELECT * FROM {word_pairs}
),
problems AS (
    SELECT 'missing' AS kind, w.sentence_id, w.query_word_pos, w.key_word_pos
    FROM pairs AS w
    LEFT JOIN words AS q
      ON q.corpus_id = w.corpus_id AND q.sentence_id = w.sentence_id AND q.word_pos = w.query_word_pos
    LEFT JOIN words AS k
      ON k.corpus_id = w.corpus_id AND k.sentence_id = w.sentence_id AND k.word_pos = w.key_word_pos
    WHERE w.corpus_id = (SELECT corpus_id FROM runs WHERE run_id = $run_id)
      AND (q.word_pos IS NULL OR k.word_pos IS NULL)
    UNION ALL
    SELECT 'duplicate' AS kind, sentence_id, query_word_pos, key_word_pos
    FROM pairs
    WHERE corpus_id = (SELECT corpus_id FROM runs WHERE run_id = $run_id)
    GROUP BY corpus_id, sentence_id, query_word_pos, key_word_pos
    HAVING count(*) > 1
)
SELECT kind, sentence_id, query_word_pos, key_word_pos
FROM problems
ORDER BY kind <> 'missing', sentence_id, query_word_pos, key_word_pos
LIMIT 1
