-- Results of `headdb classify`: the role definitions used, the per-sentence scores read from
-- the score views, and one t-test per (head, role). A classification is one family of tests.

CREATE SEQUENCE classification_id_seq START 1;

CREATE TABLE roles (
    role         VARCHAR PRIMARY KEY,
    level        VARCHAR NOT NULL,         -- token | word
    description  VARCHAR NOT NULL,
    tau          DOUBLE NOT NULL,          -- the file's default threshold
    source_path  VARCHAR NOT NULL,
    sql          VARCHAR NOT NULL,
    sha256       VARCHAR NOT NULL
);

CREATE TABLE classifications (
    classification_id INTEGER PRIMARY KEY DEFAULT nextval('classification_id_seq'),
    run_id       INTEGER NOT NULL,
    roles        VARCHAR NOT NULL,         -- comma-separated, in test order
    alpha        DOUBLE NOT NULL,
    correction   VARCHAR NOT NULL,         -- bh | holm | bonferroni | none
    tau_override DOUBLE,
    n_tests      INTEGER NOT NULL,
    created_at   TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE sentence_scores (
    run_id       INTEGER NOT NULL,
    role         VARCHAR NOT NULL,
    layer        SMALLINT NOT NULL,
    head         SMALLINT NOT NULL,
    sentence_id  INTEGER NOT NULL,
    score        DOUBLE NOT NULL,          -- sieve bias score from the stored edges
    score_upper  DOUBLE NOT NULL,          -- largest score the unstored mass allows
    n_queries    INTEGER NOT NULL
);

CREATE TABLE head_tests (
    classification_id INTEGER NOT NULL,
    run_id       INTEGER NOT NULL,
    layer        SMALLINT NOT NULL,
    head         SMALLINT NOT NULL,
    role         VARCHAR NOT NULL,
    n            INTEGER NOT NULL,
    mean         DOUBLE,
    std          DOUBLE,
    tau          DOUBLE NOT NULL,
    t            DOUBLE,
    p            DOUBLE,
    p_adj        DOUBLE,
    significant  BOOLEAN NOT NULL,
    ci_low       DOUBLE,
    ci_high      DOUBLE,
    flip_possible BOOLEAN NOT NULL,
    PRIMARY KEY (run_id, role, layer, head)
);
