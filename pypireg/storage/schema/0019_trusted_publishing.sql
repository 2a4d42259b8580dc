-- Trusted publishing (README "Trusted publishing"): a CI job presents its
-- OIDC ID token and, if it matches a publisher registered on a project,
-- gets a short-lived upload token of that project.

-- A project's trusted publishers. `kind` decides which claims are checked:
--   github   repository (OWNER/REPO), workflow (file name), environment;
--            owner_id pins repository_owner_id (given, or the first seen),
--            so a deleted and re-created OWNER cannot take the publisher over;
--   gitlab   repository (NAMESPACE/PROJECT), workflow (the CI config path),
--            environment;
--   generic  claims: every listed claim must equal its value.
CREATE TABLE trusted_publishers (
    id          BIGSERIAL PRIMARY KEY,
    project_id  BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    issuer      TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('github', 'gitlab', 'generic')),
    repository  TEXT,
    workflow    TEXT,
    environment TEXT,
    owner_id    TEXT,
    claims      JSONB NOT NULL DEFAULT '{}',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (kind = 'generic' OR (repository IS NOT NULL AND workflow IS NOT NULL)),
    CHECK (kind <> 'generic' OR claims <> '{}')
);
CREATE INDEX trusted_publishers_issuer_idx ON trusted_publishers (issuer);
CREATE INDEX trusted_publishers_project_idx ON trusted_publishers (project_id);

-- Each issuer's signing keys (its JWKS document), shared by every daemon.
CREATE TABLE oidc_issuer_keys (
    issuer     TEXT PRIMARY KEY,
    jwks       JSONB NOT NULL,
    fetched_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Every ID token used, by issuer and jti: a replay is refused on every
-- daemon. Rows are kept until the token could no longer be accepted.
CREATE TABLE oidc_used_tokens (
    issuer     TEXT NOT NULL,
    jti        TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (issuer, jti)
);
CREATE INDEX oidc_used_tokens_expiry_idx ON oidc_used_tokens (expires_at);

-- A fourth kind of token: minted by a trusted publisher, one project,
-- upload only (domain/access_policy.py), expiring after 15 minutes.
ALTER TABLE tokens
    DROP CONSTRAINT tokens_kind_check,
    ADD CONSTRAINT tokens_kind_check
        CHECK (kind IN ('project', 'deploy', 'personal', 'trusted')),
    DROP CONSTRAINT tokens_kind_owner,
    ADD CONSTRAINT tokens_kind_owner CHECK (
        (kind = 'personal' AND user_id IS NOT NULL AND project_id IS NULL)
        OR (kind = 'project' AND project_id IS NOT NULL AND user_id IS NULL)
        OR (kind = 'deploy' AND project_id IS NOT NULL AND username IS NOT NULL)
        OR (kind = 'trusted' AND project_id IS NOT NULL AND user_id IS NULL
            AND expires_at IS NOT NULL)
    );

-- What minted each trusted token: the publisher and the job's claims
-- (repository, workflow, ref, sha, run or pipeline id), for "published by".
CREATE TABLE minted_tokens (
    token_id     BIGINT PRIMARY KEY REFERENCES tokens (id) ON DELETE CASCADE,
    publisher_id BIGINT REFERENCES trusted_publishers (id) ON DELETE SET NULL,
    issuer       TEXT NOT NULL,
    kind         TEXT NOT NULL,
    repository   TEXT,
    workflow     TEXT,
    ref          TEXT,
    sha          TEXT,
    run_id       TEXT,
    web_url      TEXT,
    claims       JSONB NOT NULL DEFAULT '{}'
);
CREATE INDEX minted_tokens_publisher_idx ON minted_tokens (publisher_id);
