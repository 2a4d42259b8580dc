-- Releases as rows: GitLab's package API calls one (name, version) pair a
-- "package" and gives it a stable numeric id. A row exists while the
-- release has files; created_at is its first upload.

CREATE TABLE package_versions (
    id         BIGSERIAL PRIMARY KEY,
    package_id BIGINT NOT NULL REFERENCES packages (id) ON DELETE CASCADE,
    version    TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (package_id, version)
);

-- Existing releases, numbered in the order they were first uploaded.
INSERT INTO package_versions (package_id, version, created_at)
SELECT package_id, version, min(uploaded_at)
FROM package_files
GROUP BY package_id, version
ORDER BY min(uploaded_at), package_id, version;
