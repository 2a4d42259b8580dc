-- Core registry: projects, their tokens, packages and files.

CREATE TABLE projects (
    id                BIGSERIAL PRIMARY KEY,
    -- GitLab-style path ("group/project"); unique case-insensitively.
    path              TEXT NOT NULL,
    public            BOOLEAN NOT NULL DEFAULT FALSE,
    packages_enabled  BOOLEAN NOT NULL DEFAULT TRUE,
    reject_duplicates BOOLEAN NOT NULL DEFAULT FALSE,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX projects_path_key ON projects (lower(path));

CREATE TABLE tokens (
    id           BIGSERIAL PRIMARY KEY,
    project_id   BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    scope        TEXT NOT NULL CHECK (scope IN ('read', 'write')),
    -- SHA-256 of the whole token; the token itself is never stored.
    token_hash   BYTEA NOT NULL UNIQUE,
    -- The first characters, so that a listing can say which token is which.
    hint         TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ
);
CREATE INDEX tokens_project_idx ON tokens (project_id);

CREATE TABLE packages (
    id           BIGSERIAL PRIMARY KEY,
    project_id   BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    -- PEP 503 normalised name, and the name as first uploaded.
    name         TEXT NOT NULL,
    display_name TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (project_id, name)
);

CREATE TABLE package_files (
    id                  BIGSERIAL PRIMARY KEY,
    package_id          BIGINT NOT NULL REFERENCES packages (id) ON DELETE CASCADE,
    version             TEXT NOT NULL,
    filename            TEXT NOT NULL,
    packagetype         TEXT NOT NULL CHECK (packagetype IN ('bdist_wheel', 'sdist')),
    python_version      TEXT NOT NULL DEFAULT '',
    size                BIGINT NOT NULL CHECK (size > 0),
    sha256              TEXT NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    md5                 TEXT NOT NULL,
    blake2_256          TEXT NOT NULL,
    requires_python     TEXT,
    summary             TEXT,
    metadata_version    TEXT,
    uploaded_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    uploaded_by_token_id BIGINT REFERENCES tokens (id) ON DELETE SET NULL
);
CREATE INDEX package_files_package_idx ON package_files (package_id, filename, id);
CREATE INDEX package_files_sha256_idx ON package_files (sha256);
