-- The upstream proxy's state, all in PostgreSQL so that every daemon on
-- the database shares it and a restart forgets nothing.

-- One row per (upstream, name): the last good page, how to revalidate it,
-- and when the upstream was last asked. `state` 'missing' records an
-- upstream 404 (the name is then left off, cached files stay for pinned
-- installs); 'pending' a name asked for that no fetch has answered yet. A fetch holds a lease (fetching_until) so that one daemon
-- asks the upstream and the others wait for its answer.
CREATE TABLE upstream_pages (
    upstream       TEXT NOT NULL,
    name           TEXT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('found', 'missing', 'pending')),
    page           JSONB,
    etag           TEXT,
    last_modified  TEXT,
    last_serial    BIGINT,
    fetched_at     TIMESTAMPTZ,
    checked_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    error          TEXT,
    error_at       TIMESTAMPTZ,
    fetching_until TIMESTAMPTZ,
    PRIMARY KEY (upstream, name),
    CHECK ((state = 'found') = (page IS NOT NULL))
);

-- Files fetched from an upstream and kept in the blob store (with their
-- core metadata files); the garbage collector keeps what is listed here,
-- eviction (proxy.max_cache_size) removes the least recently downloaded.
CREATE TABLE upstream_files (
    sha256           TEXT PRIMARY KEY,
    upstream         TEXT NOT NULL,
    name             TEXT NOT NULL,
    filename         TEXT NOT NULL,
    size             BIGINT NOT NULL,
    metadata_sha256  TEXT,
    stored_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_download_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX upstream_files_last_download ON upstream_files (last_download_at);

-- Upstream releases hidden in a project (a malicious release, say): the
-- whole name when version is NULL.
CREATE TABLE upstream_blocks (
    id         BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    version    TEXT,
    reason     TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX upstream_blocks_release
    ON upstream_blocks (project_id, name, coalesce(pypireg_release_key(version), ''));

-- Which upstreams a project's or group's index includes, in order: NULL
-- means every configured upstream, an empty array none.
ALTER TABLE projects ADD COLUMN upstreams TEXT[];
ALTER TABLE groups ADD COLUMN upstreams TEXT[];

CREATE TRIGGER upstream_pages_changed AFTER INSERT OR UPDATE OF page, state OR DELETE OR TRUNCATE
    ON upstream_pages FOR EACH STATEMENT EXECUTE FUNCTION pypireg_notify_change();
CREATE TRIGGER upstream_blocks_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON upstream_blocks FOR EACH STATEMENT EXECUTE FUNCTION pypireg_notify_change();
