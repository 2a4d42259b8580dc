-- The long description (README) of each file's metadata, for the web pages.

ALTER TABLE package_files
    ADD COLUMN description TEXT,
    ADD COLUMN description_content_type TEXT;
