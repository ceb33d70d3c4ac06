-- Views for reading results the way the paper does (layer distribution, co-location, counts per
-- role) over head_tests, and word-level attention for syntactic head accuracy (Clark et al. 2019)
-- over edges and tokens. Views only: they hold no data and follow the tables they read.
-- All layers, heads and positions are 0-based.

-- Per run, role and layer: how many heads have the role (significant) out of those tested.
CREATE VIEW role_layer_distribution AS
SELECT run_id, role, layer,
       count(*) FILTER (WHERE significant) AS n_significant,
       count(*)                            AS n_tested
FROM head_tests
GROUP BY run_id, role, layer;

-- Per run and pair of roles: how many heads have both (the diagonal: heads with the role).
CREATE VIEW role_colocation AS
SELECT a.run_id, a.role AS role_a, b.role AS role_b,
       count(*) FILTER (WHERE a.significant AND b.significant) AS n_heads
FROM head_tests a
JOIN head_tests b ON b.run_id = a.run_id AND b.layer = a.layer AND b.head = a.head
GROUP BY a.run_id, a.role, b.role;

-- Per run and head with at least one role: its roles, alphabetically.
CREATE VIEW head_roles AS
SELECT run_id, layer, head,
       count(*)                              AS n_roles,
       string_agg(role, ',' ORDER BY role)   AS roles
FROM head_tests
WHERE significant
GROUP BY run_id, layer, head;

-- Per run and role: counts and the spread of the per-head mean scores.
CREATE VIEW role_summary AS
SELECT run_id, role,
       count(*)                                  AS n_tested,
       count(*) FILTER (WHERE significant)       AS n_significant,
       avg(CASE WHEN significant THEN 1.0 ELSE 0.0 END) AS share_significant,
       count(*) FILTER (WHERE flip_possible)     AS n_flip_possible,
       min(tau)                                  AS tau,
       avg(mean)                                 AS mean_score,
       max(mean)                                 AS max_score,
       min(n)                                    AS min_n,
       max(n)                                    AS max_n
FROM head_tests
GROUP BY run_id, role;

-- Pieces per word of each stored input (special tokens have no word).
CREATE VIEW word_pieces AS
SELECT run_id, sentence_id, word_pos, any_value(segment) AS segment, count(*) AS n_pieces
FROM tokens
WHERE word_pos IS NOT NULL
GROUP BY run_id, sentence_id, word_pos;

-- Word-level attention (Clark et al. 2019): attention from a word is the mean over its pieces,
-- attention to a word the sum over its pieces. Only stored edges count (a sparse run gives a
-- lower bound); keys that are special tokens are left out, so a row need not sum to 1.
CREATE VIEW word_attention AS
SELECT e.run_id, e.sentence_id, e.layer, e.head,
       q.word_pos AS query_word_pos,
       k.word_pos AS key_word_pos,
       sum(e.weight::DOUBLE) / any_value(p.n_pieces) AS weight
FROM edges e
JOIN tokens q ON q.run_id = e.run_id AND q.sentence_id = e.sentence_id AND q.token_pos = e.query_pos
JOIN tokens k ON k.run_id = e.run_id AND k.sentence_id = e.sentence_id AND k.token_pos = e.key_pos
JOIN word_pieces p ON p.run_id = e.run_id AND p.sentence_id = e.sentence_id AND p.word_pos = q.word_pos
WHERE q.word_pos IS NOT NULL AND k.word_pos IS NOT NULL
GROUP BY e.run_id, e.sentence_id, e.layer, e.head, q.word_pos, k.word_pos;

-- For every query word, the other word of its own segment it attends to most (ties: the lower
-- word_pos). A word without any stored edge to another word has no row.
CREATE VIEW word_attention_top AS
SELECT w.run_id, w.sentence_id, w.layer, w.head, w.query_word_pos, w.key_word_pos, w.weight
FROM word_attention w
JOIN word_pieces qp ON qp.run_id = w.run_id AND qp.sentence_id = w.sentence_id AND qp.word_pos = w.query_word_pos
JOIN word_pieces kp ON kp.run_id = w.run_id AND kp.sentence_id = w.sentence_id AND kp.word_pos = w.key_word_pos
WHERE w.key_word_pos <> w.query_word_pos AND kp.segment = qp.segment
QUALIFY row_number() OVER (
    PARTITION BY w.run_id, w.sentence_id, w.layer, w.head, w.query_word_pos
    ORDER BY w.weight DESC, w.key_word_pos) = 1;
