-- The attention store: corpora, sentences and words (shared by every run over the same
-- corpus), runs with their provenance, tokens per run, and sparse attention edges.
-- Vocabulary: run_id, sentence_id, layer, head, query_pos, key_pos, word_pos, token_pos.
-- All positions are 0-based.

CREATE SEQUENCE corpus_id_seq START 1;
CREATE SEQUENCE run_id_seq START 1;

CREATE TABLE corpora (
    corpus_id    INTEGER PRIMARY KEY DEFAULT nextval('corpus_id_seq'),
    path         VARCHAR NOT NULL,        -- as given when first ingested
    sha256       VARCHAR NOT NULL,        -- of the file's bytes
    format       VARCHAR NOT NULL,        -- conllu | text | tsv
    pairs        BOOLEAN NOT NULL,        -- sentences are (A, B) pairs
    parser       VARCHAR NOT NULL,        -- 'gold' for CoNLL-U, else the spaCy pipeline and version
    created_at   TIMESTAMP NOT NULL DEFAULT current_timestamp,
    UNIQUE (sha256, format, pairs, parser)
);

CREATE TABLE sentences (
    corpus_id    INTEGER NOT NULL,
    sentence_id  INTEGER NOT NULL,        -- 0-based, in file order (pair index for pairs)
    doc_id       VARCHAR,                 -- CoNLL-U newdoc id, where given
    sent_key     VARCHAR,                 -- CoNLL-U sent_id (joined by ' | ' for pairs)
    line         INTEGER NOT NULL,        -- 1-based line of the sentence in the corpus file
    text_a       VARCHAR NOT NULL,
    text_b       VARCHAR,                 -- second segment of a pair, else NULL
    n_words_a    SMALLINT NOT NULL,
    n_words_b    SMALLINT,
    PRIMARY KEY (corpus_id, sentence_id)
);

CREATE TABLE words (
    corpus_id     INTEGER NOT NULL,
    sentence_id   INTEGER NOT NULL,
    word_pos      SMALLINT NOT NULL,      -- 0-based over the whole input (segment B follows A)
    segment       TINYINT NOT NULL,       -- 0 = A, 1 = B
    form          VARCHAR NOT NULL,
    lemma         VARCHAR,
    upos          VARCHAR,
    xpos          VARCHAR,
    head_word_pos SMALLINT,               -- word_pos of the syntactic head; NULL for the root
    deprel        VARCHAR,                -- full label, e.g. obl:tmod
    PRIMARY KEY (corpus_id, sentence_id, word_pos)
);

CREATE TABLE runs (
    run_id              INTEGER PRIMARY KEY DEFAULT nextval('run_id_seq'),
    run_name            VARCHAR NOT NULL,
    fingerprint         VARCHAR NOT NULL,  -- sha256 of the settings that define the run's content
    corpus_id           INTEGER NOT NULL,
    corpus_path         VARCHAR NOT NULL,
    corpus_sha256       VARCHAR NOT NULL,
    corpus_format       VARCHAR NOT NULL,
    pairs               BOOLEAN NOT NULL,
    model               VARCHAR NOT NULL,  -- name or path as given
    model_hash          VARCHAR NOT NULL,  -- sha256 over the weight files, or the hub revision
    model_type          VARCHAR NOT NULL,
    tokenizer           VARCHAR NOT NULL,
    n_layers            SMALLINT NOT NULL,
    n_heads             SMALLINT NOT NULL,
    dtype               VARCHAR NOT NULL,
    attn_implementation VARCHAR NOT NULL,
    device              VARCHAR NOT NULL,
    max_length          INTEGER NOT NULL,
    truncate            BOOLEAN NOT NULL,  -- over-long inputs truncated (else skipped)
    top_k               INTEGER,           -- NULL when dense
    min_mass            DOUBLE,
    dense               BOOLEAN NOT NULL,
    sentence_limit      INTEGER,           -- --limit, NULL for the whole corpus
    batch_size          INTEGER NOT NULL,
    headdb_version      VARCHAR NOT NULL,
    library_versions    VARCHAR NOT NULL,  -- JSON: torch, transformers, duckdb, spacy
    started_at          TIMESTAMP NOT NULL DEFAULT current_timestamp,
    finished_at         TIMESTAMP,
    status              VARCHAR NOT NULL DEFAULT 'running',  -- running | done | failed
    error               VARCHAR
);

-- One row per sentence a run has dealt with: what was stored, truncated or skipped.
-- A sentence is here exactly when its batch committed, which is what resume relies on.
CREATE TABLE run_sentences (
    run_id       INTEGER NOT NULL,
    sentence_id  INTEGER NOT NULL,
    n_tokens     SMALLINT,               -- L, the stored sequence length; NULL when skipped
    n_tokens_full INTEGER NOT NULL,      -- length before truncation
    status       VARCHAR NOT NULL,       -- ok | truncated | skipped
    PRIMARY KEY (run_id, sentence_id)
);

CREATE TABLE tokens (
    run_id       INTEGER NOT NULL,
    sentence_id  INTEGER NOT NULL,
    token_pos    SMALLINT NOT NULL,
    piece        VARCHAR NOT NULL,
    word_pos     SMALLINT,               -- NULL for special tokens
    segment      TINYINT,                -- 0 or 1 for word pieces, NULL for special tokens
    special      VARCHAR,                -- cls | sep | other for special tokens, else NULL
    PRIMARY KEY (run_id, sentence_id, token_pos)
);

-- Sparse attention: the kept keys of every attention row. No index or key on purpose:
-- rows are bulk-appended in (run_id, sentence_id, layer, head, query_pos) order.
CREATE TABLE edges (
    run_id       INTEGER NOT NULL,
    sentence_id  INTEGER NOT NULL,
    layer        SMALLINT NOT NULL,
    head         SMALLINT NOT NULL,
    query_pos    SMALLINT NOT NULL,
    key_pos      SMALLINT NOT NULL,
    weight       FLOAT NOT NULL
);

-- Every attention row sums to 1, so what was not stored follows exactly from what was.
CREATE VIEW attention_rows AS
SELECT run_id, sentence_id, layer, head, query_pos,
       count(*)::SMALLINT               AS n_kept,
       sum(weight::DOUBLE)              AS kept_mass,
       greatest(0.0, 1.0 - sum(weight::DOUBLE)) AS residual,
       min(weight)                      AS min_weight
FROM edges
GROUP BY ALL;
