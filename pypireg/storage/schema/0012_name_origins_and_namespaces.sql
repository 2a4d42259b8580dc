-- Where each package name of a project comes from, fixed when it first
-- arrives, so that a name can never switch source (dependency confusion):
-- a name that was uploaded here is never served from an upstream, even
-- after its files are deleted; one first served from an upstream cannot
-- be uploaded here unless an admin claims it.

CREATE TABLE name_origins (
    project_id BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,    -- normalised (PEP 503)
    origin     TEXT NOT NULL CHECK (origin IN ('local', 'upstream')),
    upstream   TEXT,             -- the upstream's configured name, for origin 'upstream'
    reason     TEXT NOT NULL CHECK (reason IN ('upload', 'reserved', 'claimed', 'proxied')),
    decided_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, name),
    CHECK ((origin = 'upstream') = (upstream IS NOT NULL))
);

INSERT INTO name_origins (project_id, name, origin, reason)
SELECT project_id, name, 'local', 'upload' FROM packages;

-- PEP 752 namespace grants: the owner (one project, or a group and the
-- projects under it) owns `prefix` and every `prefix-*` name.
CREATE TABLE namespaces (
    id         BIGSERIAL PRIMARY KEY,
    prefix     TEXT NOT NULL UNIQUE,     -- normalised
    display    TEXT NOT NULL,            -- as granted
    project_id BIGINT REFERENCES projects (id) ON DELETE CASCADE,
    group_id   BIGINT REFERENCES groups (id) ON DELETE CASCADE,
    granted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((project_id IS NULL) <> (group_id IS NULL))
);

-- What the index serves depends on both (storage/changes.py).
CREATE TRIGGER name_origins_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON name_origins FOR EACH STATEMENT EXECUTE FUNCTION pypireg_notify_change();
CREATE TRIGGER namespaces_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON namespaces FOR EACH STATEMENT EXECUTE FUNCTION pypireg_notify_change();

-- Whether a project may take a new name: the namespaces granted to
-- someone else that contain it (none: it may).
CREATE FUNCTION pypireg_foreign_namespace(p_project_id BIGINT, p_name TEXT) RETURNS TEXT
LANGUAGE sql STABLE AS $$
    SELECT ns.display FROM namespaces ns
    WHERE (p_name = ns.prefix OR starts_with(p_name, ns.prefix || '-'))
      AND ns.project_id IS DISTINCT FROM p_project_id
      AND NOT EXISTS (
          SELECT 1 FROM groups g JOIN projects pr ON pr.id = p_project_id
          WHERE g.id = ns.group_id AND starts_with(lower(pr.path), lower(g.path) || '/'))
    ORDER BY length(ns.prefix) DESC
    LIMIT 1
$$;

-- Uploads (as 0011, which says why it is one statement): a name's first
-- upload records its local origin; a name whose origin is upstream, or
-- that sits in another owner's namespace, is refused.
CREATE OR REPLACE FUNCTION pypireg_record_file(
    p_project_id BIGINT, p_name TEXT, p_display_name TEXT, p_reject_duplicates BOOLEAN,
    p_version TEXT, p_filename TEXT, p_packagetype TEXT, p_python_version TEXT,
    p_size BIGINT, p_sha256 TEXT, p_md5 TEXT, p_blake2_256 TEXT, p_requires_python TEXT,
    p_summary TEXT, p_metadata_version TEXT, p_uploaded_by_token_id BIGINT,
    p_metadata_sha256 TEXT, p_description TEXT, p_description_content_type TEXT,
    OUT o_file_id BIGINT, OUT o_package_id BIGINT, OUT o_display_name TEXT,
    OUT o_uploaded_at TIMESTAMPTZ, OUT o_version TEXT)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_origin TEXT;
    v_upstream TEXT;
    v_namespace TEXT;
BEGIN
    INSERT INTO packages AS p (project_id, name, display_name)
    VALUES (p_project_id, p_name, p_display_name)
    ON CONFLICT (project_id, name) DO UPDATE SET name = EXCLUDED.name
    RETURNING p.id, p.display_name INTO o_package_id, o_display_name;
    -- Under the package row's lock: the origin cannot change meanwhile.
    SELECT o.origin, o.upstream INTO v_origin, v_upstream FROM name_origins o
    WHERE o.project_id = p_project_id AND o.name = p_name;
    IF v_origin = 'upstream' THEN
        RAISE EXCEPTION '%', v_upstream USING ERRCODE = 'PR002';
    END IF;
    IF v_origin IS NULL THEN
        v_namespace := pypireg_foreign_namespace(p_project_id, p_name);
        IF v_namespace IS NOT NULL THEN
            RAISE EXCEPTION '%', v_namespace USING ERRCODE = 'PR003';
        END IF;
        INSERT INTO name_origins (project_id, name, origin, reason)
        VALUES (p_project_id, p_name, 'local', 'upload');
    END IF;
    SELECT v.version INTO o_version FROM package_versions v
    WHERE v.package_id = o_package_id
      AND pypireg_release_key(v.version) = pypireg_release_key(p_version);
    IF o_version IS NULL THEN
        o_version := p_version;
    END IF;
    IF p_reject_duplicates AND EXISTS (
            SELECT 1 FROM package_files f
            WHERE f.package_id = o_package_id AND f.filename = p_filename) THEN
        RAISE EXCEPTION 'file already exists: %', p_filename USING ERRCODE = 'PR001';
    END IF;
    INSERT INTO package_files AS f (package_id, version, filename, packagetype,
        python_version, size, sha256, md5, blake2_256, requires_python, summary,
        metadata_version, uploaded_by_token_id, metadata_sha256, description,
        description_content_type)
    VALUES (o_package_id, o_version, p_filename, p_packagetype, p_python_version, p_size,
        p_sha256, p_md5, p_blake2_256, p_requires_python, p_summary, p_metadata_version,
        p_uploaded_by_token_id, p_metadata_sha256, p_description, p_description_content_type)
    RETURNING f.id, f.uploaded_at INTO o_file_id, o_uploaded_at;
    INSERT INTO package_versions (package_id, version) VALUES (o_package_id, o_version)
    ON CONFLICT DO NOTHING;
END
$$;
