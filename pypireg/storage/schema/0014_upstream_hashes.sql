-- The sha256 of upstream files whose page gives none (a static tree
-- without hash fragments, say). Our file URLs and blobs are keyed by
-- sha256, so such a file is fetched whole and hashed once, before it is
-- listed; afterwards its page lists it under this hash.
CREATE TABLE upstream_hashes (
    upstream  TEXT NOT NULL,
    url       TEXT NOT NULL,
    sha256    TEXT NOT NULL,
    size      BIGINT NOT NULL,
    hashed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (upstream, url)
);
