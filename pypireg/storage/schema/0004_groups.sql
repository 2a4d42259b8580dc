-- Groups: GitLab-style namespaces. A project belongs to every group whose
-- path is a prefix of its own ("acme" and "acme/tools" for
-- "acme/tools/cli"); a group's index aggregates those projects.

CREATE TABLE groups (
    id         BIGSERIAL PRIMARY KEY,
    path       TEXT NOT NULL,
    public     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX groups_path_key ON groups (lower(path));
-- Prefix searches for a group's projects.
CREATE INDEX projects_path_prefix_idx ON projects (lower(path) text_pattern_ops);
