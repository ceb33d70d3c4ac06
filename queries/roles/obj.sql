-- name: obj
-- description: Attends from a direct object to its head: every piece of a word whose
--   relation is obj (base label; also spaCy's dobj) and whose head is a word (not the
--   root) is a query; its sieve is all pieces of the head word.
-- level: word
-- tau: 3
SELECT corpus_id, sentence_id, word_pos AS query_word_pos, head_word_pos AS key_word_pos
FROM words
WHERE split_part(deprel, ':', 1) IN ('obj', 'dobj')
  AND head_word_pos IS NOT NULL
