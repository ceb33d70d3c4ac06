-- Every version of a role's SQL that stored tests came from. `roles` keeps only the latest
-- definition of a name, so after a role file was edited, the tests of an earlier classification
-- named (head_tests.role_sha256) SQL that the store no longer held.
CREATE TABLE role_versions (
    sha256       VARCHAR PRIMARY KEY,
    role         VARCHAR NOT NULL,
    level        VARCHAR NOT NULL,
    description  VARCHAR NOT NULL,
    tau          DOUBLE NOT NULL,
    source_path  VARCHAR NOT NULL,
    sql          VARCHAR NOT NULL
);

INSERT INTO role_versions (sha256, role, level, description, tau, source_path, sql)
SELECT sha256, role, level, description, tau, source_path, sql FROM roles;

-- `n_tested` counted every (head, role) row, also heads without a test (fewer than two scores,
-- as for `block` on single inputs), where classifications.n_tests and the tests' family count
-- only tests with a p-value. Both views now count those; a role without samples has n_tested 0
-- and no share_significant.
CREATE OR REPLACE VIEW role_layer_distribution AS
SELECT run_id, role, layer,
       count(*) FILTER (WHERE significant) AS n_significant,
       count(p)                            AS n_tested
FROM head_tests
GROUP BY run_id, role, layer;

CREATE OR REPLACE VIEW role_summary AS
SELECT run_id, role,
       count(p)                                  AS n_tested,
       count(*) FILTER (WHERE significant)       AS n_significant,
       (count(*) FILTER (WHERE significant))::DOUBLE / nullif(count(p), 0) AS share_significant,
       count(*) FILTER (WHERE flip_possible)     AS n_flip_possible,
       min(tau)                                  AS tau,
       avg(mean)                                 AS mean_score,
       max(mean)                                 AS max_score,
       min(n)                                    AS min_n,
       max(n)                                    AS max_n
FROM head_tests
GROUP BY run_id, role;
