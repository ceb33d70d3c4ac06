-- name: syntactic
-- description: Attends from a dependent to its head along any of nsubj, obj (or dobj), amod
--   and advmod (base labels): every piece of such a word whose head is a word (not the root)
--   is a query; its sieve is all pieces of the head word.
-- level: word
-- tau: 3
SELECT corpus_id, sentence_id, word_pos AS query_word_pos, head_word_pos AS key_word_pos
FROM words
WHERE split_part(deprel, ':', 1) IN ('nsubj', 'obj', 'dobj', 'amod', 'advmod')
  AND head_word_pos IS NOT NULL
