-- Users, project memberships with GitLab's roles, and three kinds of token:
--   project  (as before) one project, scope read|write, user name ignored;
--   deploy   one project, scope read|write (read_package_registry /
--            write_package_registry), the Basic user name must match;
--   personal owned by a user, scope read|write (read_api / api), reaching
--            the projects the user is a member of, limited by the role.

CREATE TABLE users (
    id         BIGSERIAL PRIMARY KEY,
    username   TEXT NOT NULL,
    blocked    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_username_key ON users (lower(username));

CREATE TABLE members (
    project_id BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       TEXT NOT NULL CHECK (role IN ('reporter', 'developer', 'maintainer')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, user_id)
);
CREATE INDEX members_user_idx ON members (user_id);

ALTER TABLE tokens
    ADD COLUMN kind TEXT NOT NULL DEFAULT 'project'
        CHECK (kind IN ('project', 'deploy', 'personal')),
    ADD COLUMN user_id BIGINT REFERENCES users (id) ON DELETE CASCADE,
    ADD COLUMN username TEXT,
    ALTER COLUMN project_id DROP NOT NULL,
    ADD CONSTRAINT tokens_kind_owner CHECK (
        (kind = 'personal' AND user_id IS NOT NULL AND project_id IS NULL)
        OR (kind = 'project' AND project_id IS NOT NULL AND user_id IS NULL)
        OR (kind = 'deploy' AND project_id IS NOT NULL AND username IS NOT NULL)
    );
CREATE INDEX tokens_user_idx ON tokens (user_id);
