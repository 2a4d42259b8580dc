-- Audit events: who changed what, from where and when. One row per
-- recorded change, written in the change's own transaction where there is
-- one (storage/audit.py), so no change commits without its event and no
-- event outlives a change that rolled back.
--
-- An event outlives what it names: deleting a project or group sets its id
-- to NULL and the path columns keep naming it. The actor is copied, not
-- referenced, for the same reason (a token's row may go, a user renamed).
-- No secret is ever stored here: no token secret or hash, no password, no
-- upstream credential (storage/audit.py builds the rows; tests/test_audit.py
-- searches them).
CREATE TABLE audit_events (
    id             BIGSERIAL PRIMARY KEY,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    project_id     BIGINT REFERENCES projects (id) ON DELETE SET NULL,
    project_path   TEXT,
    group_id       BIGINT REFERENCES groups (id) ON DELETE SET NULL,
    group_path     TEXT,
    -- "package_file.upload", "release.yank", "token.create", ... (domain/audit.py)
    action         TEXT NOT NULL,
    -- 'token' (an API request), 'admin' (the admin command), 'system' (the
    -- daemon's own jobs), 'publisher' (a CI job minting a token, trusted publishing)
    actor_kind     TEXT NOT NULL
                   CHECK (actor_kind IN ('token', 'admin', 'system', 'anonymous', 'publisher')),
    actor_token_id BIGINT,
    actor_token_kind TEXT,
    actor_user_id  BIGINT,
    -- A personal token's user, a deploy token's user name, the OS user of the admin command.
    actor_name     TEXT,
    -- The client's address, after trusted proxies; NULL for the admin command.
    client_address TEXT,
    target_type    TEXT NOT NULL,
    target_id      BIGINT,
    target_details TEXT NOT NULL DEFAULT '',
    details        JSONB NOT NULL DEFAULT '{}'
);
-- "A project's events, newest first" and "all events since T".
CREATE INDEX audit_events_project_idx ON audit_events (project_id, created_at DESC, id DESC);
CREATE INDEX audit_events_created_idx ON audit_events (created_at, id);
CREATE INDEX audit_events_group_idx ON audit_events (group_id, created_at DESC, id DESC)
    WHERE group_id IS NOT NULL;
