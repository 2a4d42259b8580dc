-- GitLab's duplicate cleanup policy ("number of duplicated assets to
-- keep"): a project may keep only the N newest files of each file name.
-- NULL keeps every re-upload, as before; at least one is always kept, so
-- the file the index serves (the newest) is never the one removed.

ALTER TABLE projects
    ADD COLUMN keep_duplicates INTEGER CHECK (keep_duplicates >= 1);

-- Uploads (as 0012, 0011 says why it is one statement): after its row is
-- in, the older rows of the same file name beyond the project's policy go,
-- in the same transaction and under the package row's lock. A crash then
-- leaves either the rows as they were or the new row with the kept ones,
-- never fewer than the newest; two uploads of one file name racing prune
-- one after the other, each seeing the other's committed row, so the N
-- newest stay. The removed rows' blobs go with the garbage collector
-- (storage/gc.py), as after a delete. The signature and result stay as
-- they were, so a daemon not yet upgraded keeps uploading (and prunes).
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
    v_keep INTEGER;
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
    -- Read here, not passed in: the policy as committed now, whatever a
    -- daemon's cached copy of the project says. Newest is the highest id,
    -- as the index reads it (ids are taken under the package row's lock,
    -- so they follow the order uploads of one package commit in). A file
    -- name is one release's, so the release keeps a file and its row.
    SELECT pr.keep_duplicates INTO v_keep FROM projects pr WHERE pr.id = p_project_id;
    IF v_keep IS NOT NULL THEN
        DELETE FROM package_files f
        WHERE f.package_id = o_package_id AND f.filename = p_filename
          AND f.id < (SELECT min(k.id) FROM (
                SELECT n.id FROM package_files n
                WHERE n.package_id = o_package_id AND n.filename = p_filename
                ORDER BY n.id DESC LIMIT v_keep) k);
    END IF;
END
$$;
