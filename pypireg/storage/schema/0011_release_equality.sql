-- Versions equal under PEP 440 are one release: 1.0, 1.0.0 and 1.0.0.0
-- (as the public index treats them). Stored versions are normalised
-- (str(packaging.version.Version)), so equal ones differ only in trailing
-- zero segments of the release part; the key strips those.

CREATE FUNCTION pypireg_release_key(version TEXT) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    head TEXT := substring(version FROM '^(?:[0-9]+!)?[0-9]+(?:\.[0-9]+)*');
    release TEXT := head;
BEGIN
    IF head IS NULL THEN
        RETURN version;
    END IF;
    WHILE release ~ '\.0$' LOOP
        release := left(release, -2);
    END LOOP;
    RETURN release || substr(version, length(head) + 1);
END
$$;

-- Releases that were recorded apart before this migration join the first
-- one uploaded: its version string and its row (the packages API id) stay.
CREATE TEMPORARY TABLE pypireg_merged_releases ON COMMIT DROP AS
SELECT id, package_id, version, keep_version
FROM (
    SELECT id, package_id, version,
           first_value(version) OVER w AS keep_version,
           first_value(id) OVER w AS keep_id
    FROM package_versions
    WINDOW w AS (PARTITION BY package_id, pypireg_release_key(version)
                 ORDER BY created_at, id)
) ranked
WHERE id <> keep_id;

UPDATE package_files f SET version = m.keep_version
FROM pypireg_merged_releases m
WHERE f.package_id = m.package_id AND f.version = m.version;

DELETE FROM package_versions v USING pypireg_merged_releases m WHERE v.id = m.id;

CREATE UNIQUE INDEX package_versions_release_key
    ON package_versions (package_id, pypireg_release_key(version));

-- Uploads: a file joins the release its version equals, under that
-- release's spelling (the function otherwise as in 0009, whose comments
-- say why it is one statement).
DROP FUNCTION pypireg_record_file(BIGINT, TEXT, TEXT, BOOLEAN, TEXT, TEXT, TEXT, TEXT, BIGINT,
    TEXT, TEXT, TEXT, TEXT, TEXT, TEXT, BIGINT, TEXT, TEXT, TEXT);

CREATE FUNCTION pypireg_record_file(
    p_project_id BIGINT, p_name TEXT, p_display_name TEXT, p_reject_duplicates BOOLEAN,
    p_version TEXT, p_filename TEXT, p_packagetype TEXT, p_python_version TEXT,
    p_size BIGINT, p_sha256 TEXT, p_md5 TEXT, p_blake2_256 TEXT, p_requires_python TEXT,
    p_summary TEXT, p_metadata_version TEXT, p_uploaded_by_token_id BIGINT,
    p_metadata_sha256 TEXT, p_description TEXT, p_description_content_type TEXT,
    OUT o_file_id BIGINT, OUT o_package_id BIGINT, OUT o_display_name TEXT,
    OUT o_uploaded_at TIMESTAMPTZ, OUT o_version TEXT)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    INSERT INTO packages AS p (project_id, name, display_name)
    VALUES (p_project_id, p_name, p_display_name)
    ON CONFLICT (project_id, name) DO UPDATE SET name = EXCLUDED.name
    RETURNING p.id, p.display_name INTO o_package_id, o_display_name;
    -- After the package row's lock: a concurrent first upload of an equal
    -- version has committed its release row by now.
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
