-- name: nsubj
-- description: Attends from a dependent to its head along the nsubj relation: every piece
--   of a word whose relation is nsubj (base label, so nsubj:xxx counts) and whose head is a
--   word (not the root) is a query; its sieve is all pieces of the head word.
-- level: word
-- tau: 3
SELECT corpus_id, sentence_id, word_pos AS query_word_pos, head_word_pos AS key_word_pos
FROM words
WHERE split_part(deprel, ':', 1) = 'nsubj'
  AND head_word_pos IS NOT NULL
