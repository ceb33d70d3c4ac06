TABLE classifications
  classification_id INTEGER NOT NULL DEFAULT nextval('classification_id_seq')
  run_id INTEGER NOT NULL
  roles VARCHAR NOT NULL
  alpha DOUBLE NOT NULL
  correction VARCHAR NOT NULL
  tau_override DOUBLE
  n_tests INTEGER NOT NULL
  created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
  PRIMARY KEY (classification_id)
TABLE corpora
  corpus_id INTEGER NOT NULL DEFAULT nextval('corpus_id_seq')
  path VARCHAR NOT NULL
  sha256 VARCHAR NOT NULL
  format VARCHAR NOT NULL
  pairs BOOLEAN NOT NULL
  parser VARCHAR NOT NULL
  created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
  PRIMARY KEY (corpus_id)
  UNIQUE (sha256, format, pairs, parser)
TABLE edge_store
  run_id INTEGER USING COMPRESSION RLE NOT NULL
  sentence_id INTEGER USING COMPRESSION RLE NOT NULL
  layer SMALLINT USING COMPRESSION RLE NOT NULL
  head SMALLINT USING COMPRESSION RLE NOT NULL
  query_pos SMALLINT USING COMPRESSION RLE NOT NULL
  key_pos SMALLINT NOT NULL
  weight FLOAT
TABLE edge_store16
  run_id INTEGER USING COMPRESSION RLE NOT NULL
  sentence_id INTEGER USING COMPRESSION RLE NOT NULL
  layer SMALLINT USING COMPRESSION RLE NOT NULL
  head SMALLINT USING COMPRESSION RLE NOT NULL
  query_pos SMALLINT USING COMPRESSION RLE NOT NULL
  key_pos SMALLINT NOT NULL
  weight16 USMALLINT NOT NULL
TABLE head_tests
  classification_id INTEGER NOT NULL
  run_id INTEGER NOT NULL
  layer SMALLINT NOT NULL
  head SMALLINT NOT NULL
  role VARCHAR NOT NULL
  n INTEGER NOT NULL
  mean DOUBLE
  std DOUBLE
  tau DOUBLE NOT NULL
  t DOUBLE
  p DOUBLE
  p_adj DOUBLE
  significant BOOLEAN NOT NULL
  ci_low DOUBLE
  ci_high DOUBLE
  flip_possible BOOLEAN NOT NULL
  role_sha256 VARCHAR
  PRIMARY KEY (run_id, role, layer, head)
TABLE role_versions
  sha256 VARCHAR NOT NULL
  role VARCHAR NOT NULL
  level VARCHAR NOT NULL
  description VARCHAR NOT NULL
  tau DOUBLE NOT NULL
  source_path VARCHAR NOT NULL
  sql VARCHAR NOT NULL
  PRIMARY KEY (sha256)
TABLE roles
  role VARCHAR NOT NULL
  level VARCHAR NOT NULL
  description VARCHAR NOT NULL
  tau DOUBLE NOT NULL
  source_path VARCHAR NOT NULL
  sql VARCHAR NOT NULL
  sha256 VARCHAR NOT NULL
  PRIMARY KEY (role)
TABLE run_sentences
  run_id INTEGER NOT NULL
  sentence_id INTEGER NOT NULL
  n_tokens SMALLINT
  n_tokens_full INTEGER NOT NULL
  status VARCHAR NOT NULL
  PRIMARY KEY (run_id, sentence_id)
TABLE runs
  run_id INTEGER NOT NULL DEFAULT nextval('run_id_seq')
  run_name VARCHAR NOT NULL
  fingerprint VARCHAR NOT NULL
  corpus_id INTEGER NOT NULL
  corpus_path VARCHAR NOT NULL
  corpus_sha256 VARCHAR NOT NULL
  corpus_format VARCHAR NOT NULL
  pairs BOOLEAN NOT NULL
  model VARCHAR NOT NULL
  model_hash VARCHAR NOT NULL
  model_type VARCHAR NOT NULL
  tokenizer VARCHAR NOT NULL
  n_layers SMALLINT NOT NULL
  n_heads SMALLINT NOT NULL
  dtype VARCHAR NOT NULL
  attn_implementation VARCHAR NOT NULL
  device VARCHAR NOT NULL
  max_length INTEGER NOT NULL
  truncate BOOLEAN NOT NULL
  top_k INTEGER
  min_mass DOUBLE
  dense BOOLEAN NOT NULL
  sentence_limit INTEGER
  batch_size INTEGER NOT NULL
  headdb_version VARCHAR NOT NULL
  library_versions VARCHAR NOT NULL
  started_at TIMESTAMP NOT NULL DEFAULT current_timestamp
  finished_at TIMESTAMP
  status VARCHAR NOT NULL DEFAULT 'running'
  error VARCHAR
  weight_bits SMALLINT DEFAULT 32
  PRIMARY KEY (run_id)
TABLE schema_migrations
  version INTEGER NOT NULL
  name VARCHAR NOT NULL
  checksum VARCHAR NOT NULL
  applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp
  PRIMARY KEY (version)
TABLE sentence_scores
  run_id INTEGER NOT NULL
  role VARCHAR NOT NULL
  layer SMALLINT NOT NULL
  head SMALLINT NOT NULL
  sentence_id INTEGER NOT NULL
  score DOUBLE NOT NULL
  score_upper DOUBLE NOT NULL
  n_queries INTEGER NOT NULL
TABLE sentences
  corpus_id INTEGER NOT NULL
  sentence_id INTEGER NOT NULL
  doc_id VARCHAR
  sent_key VARCHAR
  line INTEGER NOT NULL
  text_a VARCHAR NOT NULL
  text_b VARCHAR
  n_words_a SMALLINT NOT NULL
  n_words_b SMALLINT
  PRIMARY KEY (corpus_id, sentence_id)
TABLE tokens
  run_id INTEGER NOT NULL
  sentence_id INTEGER NOT NULL
  token_pos SMALLINT NOT NULL
  piece VARCHAR NOT NULL
  word_pos SMALLINT
  segment TINYINT
  special VARCHAR
  PRIMARY KEY (run_id, sentence_id, token_pos)
TABLE words
  corpus_id INTEGER NOT NULL
  sentence_id INTEGER NOT NULL
  word_pos SMALLINT NOT NULL
  segment TINYINT NOT NULL
  form VARCHAR NOT NULL
  lemma VARCHAR
  upos VARCHAR
  xpos VARCHAR
  head_word_pos SMALLINT
  deprel VARCHAR
  PRIMARY KEY (corpus_id, sentence_id, word_pos)
SEQUENCE classification_id_seq
SEQUENCE corpus_id_seq
SEQUENCE run_id_seq
VIEW attention_rows
  CREATE VIEW attention_rows AS SELECT run_id, sentence_id, layer, head, query_pos, CAST(count_star() AS SMALLINT) AS n_kept, sum(CAST(weight AS DOUBLE)) AS kept_mass, greatest(0.0, (1.0 - sum(CAST(weight AS DOUBLE)))) AS residual, min(weight) AS min_weight FROM edges GROUP BY ALL;
VIEW edges
  CREATE VIEW edges AS (SELECT run_id, sentence_id, layer, head, query_pos, key_pos, weight FROM edge_store) UNION ALL (SELECT run_id, sentence_id, layer, head, query_pos, key_pos, CAST((weight16 / 65535) AS FLOAT) AS weight FROM edge_store16);
VIEW head_roles
  CREATE VIEW head_roles AS SELECT run_id, layer, head, count_star() AS n_roles, string_agg("role", ',' ORDER BY "role") AS roles FROM head_tests WHERE significant GROUP BY run_id, layer, head;
VIEW role_colocation
  CREATE VIEW role_colocation AS SELECT a.run_id, a."role" AS role_a, b."role" AS role_b, count_star() FILTER (WHERE (a.significant AND b.significant)) AS n_heads FROM (head_tests AS a INNER JOIN head_tests AS b ON (((b.run_id = a.run_id) AND (b.layer = a.layer) AND (b.head = a.head)))) GROUP BY a.run_id, a."role", b."role";
VIEW role_layer_distribution
  CREATE VIEW role_layer_distribution AS SELECT run_id, "role", layer, count_star() FILTER (WHERE significant) AS n_significant, count(p) AS n_tested FROM head_tests GROUP BY run_id, "role", layer;
VIEW role_summary
  CREATE VIEW role_summary AS SELECT run_id, "role", count(p) AS n_tested, count_star() FILTER (WHERE significant) AS n_significant, (CAST(count_star() FILTER (WHERE significant) AS DOUBLE) / "nullif"(count(p), 0)) AS share_significant, count_star() FILTER (WHERE flip_possible) AS n_flip_possible, min(tau) AS tau, avg(mean) AS mean_score, max(mean) AS max_score, min(n) AS min_n, max(n) AS max_n FROM head_tests GROUP BY run_id, "role";
VIEW word_attention
  CREATE VIEW word_attention AS SELECT e.run_id, e.sentence_id, e.layer, e.head, q.word_pos AS query_word_pos, k.word_pos AS key_word_pos, (sum(CAST(e.weight AS DOUBLE)) / any_value(p.n_pieces)) AS weight FROM (((edges AS e INNER JOIN tokens AS q ON (((q.run_id = e.run_id) AND (q.sentence_id = e.sentence_id) AND (q.token_pos = e.query_pos)))) INNER JOIN tokens AS k ON (((k.run_id = e.run_id) AND (k.sentence_id = e.sentence_id) AND (k.token_pos = e.key_pos)))) INNER JOIN word_pieces AS p ON (((p.run_id = e.run_id) AND (p.sentence_id = e.sentence_id) AND (p.word_pos = q.word_pos)))) WHERE ((q.word_pos IS NOT NULL) AND (k.word_pos IS NOT NULL)) GROUP BY e.run_id, e.sentence_id, e.layer, e.head, q.word_pos, k.word_pos;
VIEW word_attention_top
  CREATE VIEW word_attention_top AS SELECT w.run_id, w.sentence_id, w.layer, w.head, w.query_word_pos, w.key_word_pos, w.weight FROM ((word_attention AS w INNER JOIN word_pieces AS qp ON (((qp.run_id = w.run_id) AND (qp.sentence_id = w.sentence_id) AND (qp.word_pos = w.query_word_pos)))) INNER JOIN word_pieces AS kp ON (((kp.run_id = w.run_id) AND (kp.sentence_id = w.sentence_id) AND (kp.word_pos = w.key_word_pos)))) WHERE ((w.key_word_pos != w.query_word_pos) AND (kp.segment = qp.segment)) QUALIFY (row_number() OVER (PARTITION BY w.run_id, w.sentence_id, w.layer, w.head, w.query_word_pos ORDER BY w.weight DESC, w.key_word_pos) = 1);
VIEW word_pieces
  CREATE VIEW word_pieces AS SELECT run_id, sentence_id, word_pos, any_value(segment) AS segment, count_star() AS n_pieces FROM tokens WHERE (word_pos IS NOT NULL) GROUP BY run_id, sentence_id, word_pos;
