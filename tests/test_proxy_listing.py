"""What an index lists of a cached upstream page (proxy/listing.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from pypireg.domain.simple_pages import ProjectPage, UpstreamFile
from pypireg.proxy.listing import from_document, release_key, to_document, visible

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC).timestamp()


def _file(filename: str, version: str, *, sha256: str | None = "a" * 64,
          uploaded: str | None = "2026-11-01T00:00:00.000000Z") -> UpstreamFile:
    hashes = {"sha256": sha256} if sha256 else {"md5": "b" * 32}
    return UpstreamFile(filename=filename, url=f"https://upstream.example/f/{filename}",
                        hashes=hashes, version=version, requires_python=">=3.8",
                        yanked=True, yanked_reason="broken", size=10, upload_time=uploaded,
                        core_metadata={"sha256": "c" * 64})


PAGE = ProjectPage(name="six", files=(
    _file("six-1.0.tar.gz", "1.0"),
    _file("six-1.1.tar.gz", "1.1", uploaded="2026-12-03T11:00:00Z"),
    _file("six-1.2.tar.gz", "1.2", sha256=None),
    _file("six-1.3.tar.gz", "1.3", uploaded=None),
), versions=("1.0", "1.1", "1.2", "1.3"), last_serial=42, api_version="1.1")


def test_a_page_survives_its_stored_form() -> None:
    assert from_document(to_document(PAGE)) == PAGE


def test_files_without_a_sha256_are_not_listed() -> None:
    assert [f.filename for f in visible(PAGE, now=NOW, min_age=0)] == [
        "six-1.0.tar.gz", "six-1.1.tar.gz", "six-1.3.tar.gz"]


def test_min_age_hides_fresh_and_undated_releases() -> None:
    assert [f.filename for f in visible(PAGE, now=NOW, min_age=7 * 86400)] == ["six-1.0.tar.gz"]
    assert [f.filename for f in visible(PAGE, now=NOW, min_age=1800)] == ["six-1.0.tar.gz",
                                                                        "six-1.1.tar.gz"]


def test_blocked_releases_are_hidden_by_any_spelling() -> None:
    listed = visible(PAGE, now=NOW, min_age=0, blocked_versions={release_key("1.0.0")})
    assert [f.version for f in listed] == ["1.1", "1.3"]
