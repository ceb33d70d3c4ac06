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
TABLE edges
  run_id INTEGER NOT NULL
  sentence_id INTEGER NOT NULL
  layer SMALLINT NOT NULL
  head SMALLINT NOT NULL
  query_pos SMALLINT NOT NULL
  key_pos SMALLINT NOT NULL
  weight FLOAT NOT NULL
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
  PRIMARY KEY (run_id, role, layer, head)
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
