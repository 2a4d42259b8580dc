-- PEP 658 core metadata files and PEP 592 yanking.

ALTER TABLE package_files
    -- sha256 of the extracted METADATA / PKG-INFO, itself stored as a blob;
    -- NULL when the file has none we may serve (sdists before 2.2).
    ADD COLUMN metadata_sha256 TEXT CHECK (metadata_sha256 ~ '^[0-9a-f]{64}$'),
    ADD COLUMN yanked BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN yanked_reason TEXT;
