-- md5 and blake2b-256 are computed only when the client sends them (twine
-- sends sha256 and blake2b-256); sha256 is always computed and verified.

ALTER TABLE package_files
    ALTER COLUMN md5 DROP NOT NULL,
    ALTER COLUMN blake2_256 DROP NOT NULL;
