-- Expands a word-level sieve to word pieces (SCORES.md): every piece of the query word is a
-- query, and its sieve is all pieces of the target word(s). The placeholder word_pairs (in braces)
-- below is replaced by the role's SELECT
-- (corpus_id, sentence_id, query_word_pos, key_word_pos); it applies to every run over that
-- corpus. Words without stored pieces (a truncated tail, a skipped sentence) drop out.
SELECT q.run_id, q.sentence_id, q.token_pos AS query_pos, k.token_pos AS key_pos
FROM {word_pairs} AS w
JOIN runs AS r ON r.corpus_id = w.corpus_id
JOIN tokens AS q
  ON q.run_id = r.run_id AND q.sentence_id = w.sentence_id AND q.word_pos = w.query_word_pos
JOIN tokens AS k
  ON k.run_id = r.run_id AND k.sentence_id = w.sentence_id AND k.word_pos = w.key_word_pos
