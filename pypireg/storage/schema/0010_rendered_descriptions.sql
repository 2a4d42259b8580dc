-- Long descriptions (READMEs) as the package page shows them, rendered once.
--
-- Rendering a large README takes seconds of CPU and hundreds of MiB, so the
-- page renders each one once, in a bounded worker process, and keeps the
-- result here. The key is the hex sha256 of what decides the HTML: the
-- renderer's version, the Description-Content-Type and the text (see
-- http/web/readme.py, description_key). Keyed by content rather than by
-- file, the wheel and the sdist of a release, and releases whose README did
-- not change, share one row; a re-upload with another README gets a new key.
--
-- `how` says what the page shows: `rendered` (readme-renderer's sanitised
-- HTML), `plain` (the renderer refused the markup and fell back to text, as
-- on PyPI), or escaped plain text because the render hit a limit:
-- `timeout`, `too_large` (source or HTML over the size limits) or `failed`
-- (the worker crashed, ran out of memory or exited non-zero). Failures are
-- kept too, so a README that defeats the renderer costs one attempt, not
-- one per view.

CREATE TABLE rendered_descriptions (
    description_key TEXT PRIMARY KEY,
    html TEXT NOT NULL,
    how TEXT NOT NULL
        CHECK (how IN ('rendered', 'plain', 'timeout', 'too_large', 'failed')),
    rendered_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
