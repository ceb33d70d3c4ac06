-- Each test records which version of its role's SQL produced it: the `roles` table keeps only
-- the latest definition of a name, and a user role file may change between classifications.
ALTER TABLE head_tests ADD COLUMN role_sha256 VARCHAR;
