-- An upload's rows in one round trip. Before this, recording a file was a
-- transaction of five statements, each a round trip to the server, which
-- on a small wheel cost more than storing its bytes.
--
-- A VOLATILE function takes a fresh snapshot for each statement, so the
-- duplicate check below runs after the package row's lock is held and sees
-- a concurrent upload of the same file that committed meanwhile: the same
-- guarantee the separate statements gave. Called as one statement, it is
-- its own transaction.

CREATE OR REPLACE FUNCTION pypireg_record_file(
    p_project_id BIGINT, p_name TEXT, p_display_name TEXT, p_reject_duplicates BOOLEAN,
    p_version TEXT, p_filename TEXT, p_packagetype TEXT, p_python_version TEXT,
    p_size BIGINT, p_sha256 TEXT, p_md5 TEXT, p_blake2_256 TEXT, p_requires_python TEXT,
    p_summary TEXT, p_metadata_version TEXT, p_uploaded_by_token_id BIGINT,
    p_metadata_sha256 TEXT, p_description TEXT, p_description_content_type TEXT,
    OUT o_file_id BIGINT, OUT o_package_id BIGINT, OUT o_display_name TEXT,
    OUT o_uploaded_at TIMESTAMPTZ)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    -- The upsert locks the package row until commit: concurrent uploads of
    -- one package serialise, and a delete of the row in between is waited
    -- for, not missed.
    INSERT INTO packages AS p (project_id, name, display_name)
    VALUES (p_project_id, p_name, p_display_name)
    ON CONFLICT (project_id, name) DO UPDATE SET name = EXCLUDED.name
    RETURNING p.id, p.display_name INTO o_package_id, o_display_name;
    IF p_reject_duplicates AND EXISTS (
            SELECT 1 FROM package_files f
            WHERE f.package_id = o_package_id AND f.filename = p_filename) THEN
        RAISE EXCEPTION 'file already exists: %', p_filename USING ERRCODE = 'PR001';
    END IF;
    INSERT INTO package_files AS f (package_id, version, filename, packagetype,
        python_version, size, sha256, md5, blake2_256, requires_python, summary,
        metadata_version, uploaded_by_token_id, metadata_sha256, description,
        description_content_type)
    VALUES (o_package_id, p_version, p_filename, p_packagetype, p_python_version, p_size,
        p_sha256, p_md5, p_blake2_256, p_requires_python, p_summary, p_metadata_version,
        p_uploaded_by_token_id, p_metadata_sha256, p_description, p_description_content_type)
    RETURNING f.id, f.uploaded_at INTO o_file_id, o_uploaded_at;
    -- The release's row (its id in the package API; see package_api).
    INSERT INTO package_versions (package_id, version) VALUES (o_package_id, p_version)
    ON CONFLICT DO NOTHING;
END
$$;
