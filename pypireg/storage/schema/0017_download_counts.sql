-- Download counts: how often each stored file was downloaded, and when last.
--
-- Per file row, not per blob: identical bytes in two projects are two rows
-- and count apart. In a table of their own rather than columns of
-- package_files: every write to package_files notifies every daemon to drop
-- its caches (0007), and its rows are wide (descriptions); a flush of counts
-- every minute must do neither. A row appears with a file's first counted
-- download and goes with the file row. Totals per release and per package
-- are sums over the package's file rows (package_files_package_idx finds
-- them, this table's key the counts).
CREATE TABLE file_downloads (
    file_id            BIGINT PRIMARY KEY REFERENCES package_files (id) ON DELETE CASCADE,
    download_count     BIGINT NOT NULL CHECK (download_count >= 0),
    last_downloaded_at TIMESTAMPTZ NOT NULL
);

-- Upstream files are one row per blob, shared by every project whose index
-- serves them (the cache is shared): their count is the registry's. This
-- table has no change trigger, and the flush already touches its rows
-- (last_download_at, for eviction).
ALTER TABLE upstream_files ADD COLUMN download_count BIGINT NOT NULL DEFAULT 0
    CHECK (download_count >= 0);
