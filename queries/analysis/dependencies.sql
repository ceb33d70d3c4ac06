-- The dependency edges of run $run that accuracy judges, one row per dependent word with a
-- head word (both with stored pieces): relation on its base label (spaCy's dobj read as obj),
-- and the split (selection = even sentence_id, report = odd). A word whose label is missing
-- (CoNLL-U's `_`: NULL) has relation NULL, which the accuracy queries show as '_'. Included as the CTE `deps` by
-- head_accuracy.sql and offset_accuracy.sql (headdb.accuracy fills in the braces).
SELECT w.sentence_id, w.word_pos AS dep, w.head_word_pos AS gov,
       CASE WHEN split_part(w.deprel, ':', 1) = 'dobj' THEN 'obj' ELSE split_part(w.deprel, ':', 1) END
           AS relation,
       CASE WHEN w.sentence_id % 2 = 0 THEN 'selection' ELSE 'report' END AS split
FROM words w
JOIN runs r ON r.corpus_id = w.corpus_id AND r.run_id = $run
JOIN word_pieces pd ON pd.run_id = $run AND pd.sentence_id = w.sentence_id AND pd.word_pos = w.word_pos
JOIN word_pieces pg ON pg.run_id = $run AND pg.sentence_id = w.sentence_id AND pg.word_pos = w.head_word_pos
WHERE w.head_word_pos IS NOT NULL
