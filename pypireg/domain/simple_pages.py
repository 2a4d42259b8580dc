"""Reading an upstream index's project page (PEP 503 HTML, PEP 691 JSON) into typed values.

Domain layer, pure: bytes and the page's URL in, a `ProjectPage` out; no
I/O. Whatever the upstream sends, the parsers either return a page or raise
`UpstreamPageError`; a file entry that cannot be served safely is dropped and
counted in `ProjectPage.skipped`, never passed on.

What is kept is every field a client uses, so the pages rendered from the
cache lose nothing (the research notes' "full fidelity"):

- PEP 503 links, with hashes from the URL fragment and `data-requires-python`;
- PEP 691 JSON (`hashes`, `requires-python`, `yanked`), PEP 700 (`versions`,
  `size`, `upload-time`), PEP 658/714 core metadata (`core-metadata`, falling
  back to `dist-info-metadata` and PyPI's misnamed `data-dist-info-metadata`),
  PEP 592 yanking with its reason, PEP 629 repository version, PEP 740
  provenance URLs and PEP 792 project status;
- the upstream's last serial (PyPI's `meta._last-serial` or its
  `<!--SERIAL n-->` comment), for change tracking.

Entries are checked with the same rules as uploads: a file name must pass
`filenames.parse_filename` and belong to the page's project; only the hash
algorithms in `HASH_ALGORITHMS`, in hex of the right length, are kept.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from html.parser import HTMLParser
from typing import Any, Literal, TypeGuard
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from pypireg.domain.errors import RegistryError
from pypireg.domain.filenames import parse_filename
from pypireg.domain.names import is_valid_name, normalize_name
from pypireg.domain.versions import version_key

JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
TEXT_HTML = "text/html"
# What the client asks an upstream for: JSON first, HTML as the fallback
# (the order devpi and pip use), so static PEP 503 trees keep working.
ACCEPT = f"{JSON_V1}, {HTML_V1};q=0.2, {TEXT_HTML};q=0.1"
PageFormat = Literal["json", "html"]
_FORMATS: dict[str, PageFormat] = {
    JSON_V1: "json", "application/vnd.pypi.simple.latest+json": "json",
    HTML_V1: "html", "application/vnd.pypi.simple.latest+html": "html", TEXT_HTML: "html",
}

# The major version of the simple API we understand (PEP 629: a client
# MUST refuse a page with a higher one).
SUPPORTED_MAJOR = 1
# Limits against a hostile or broken upstream. The body itself is capped by
# the HTTP client (MAX_PAGE_BYTES); these bound what one page can make us keep.
MAX_PAGE_BYTES = 64 * 1024 * 1024
MAX_FILES = 100_000
MAX_VERSIONS = 100_000
MAX_URL_LENGTH = 8192
MAX_TEXT_LENGTH = 4096  # requires-python, yank reasons, status reasons, times, versions
MAX_SKIPPED_EXAMPLES = 5
# The algorithms whose digests are kept, with their hex length. hashlib has
# all of them, so a later step can check a download against any of them.
HASH_ALGORITHMS = {"sha256": 64, "sha384": 96, "sha512": 128, "blake2b": 128, "md5": 32}

_HEX_RE = re.compile(r"^[0-9a-fA-F]+\Z")
_API_VERSION_RE = re.compile(r"^([0-9]{1,4})\.([0-9]{1,4})\Z")
_STATUS_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}\Z")
_SERIAL_RE = re.compile(r"^\s*SERIAL\s+([0-9]{1,18})\s*\Z")
_UNSAFE_URL_RE = re.compile(r"\s")


class UpstreamPageError(Exception):
    """The body is not a simple-index project page we can use; the message says why."""


@dataclass(frozen=True)
class UpstreamFile:
    """One distribution file an upstream page lists."""

    filename: str
    # Absolute http(s) URL, resolved against the page URL, fragment removed.
    url: str
    # Algorithm (HASH_ALGORITHMS) → lower-case hex digest.
    hashes: dict[str, str]
    # The project version the file name gives, PEP 440-normalised.
    version: str
    requires_python: str | None = None
    yanked: bool = False
    yanked_reason: str | None = None
    size: int | None = None
    # ISO 8601 as the upstream gave it (PEP 700: yyyy-mm-ddThh:mm:ss.ffffffZ).
    upload_time: str | None = None
    # PEP 658/714: False (none), True (there is one, no usable hash given), or
    # the hashes of the `<url>.metadata` file.
    core_metadata: dict[str, str] | bool = False
    # PEP 740: absolute URL of the provenance object, if the upstream has one.
    provenance: str | None = None

    @property
    def sha256(self) -> str | None:
        """The sha256 the page gave, or None.

        None flags a file the proxy must download and hash itself before it
        can serve it (our file URLs and blobs are keyed by sha256).
        """
        return self.hashes.get("sha256")


@dataclass(frozen=True)
class ProjectPage:
    """One project's page from an upstream index."""

    # PEP 503-normalised.
    name: str
    files: tuple[UpstreamFile, ...]
    # PEP 700 versions; derived from the file names when the page has none.
    versions: tuple[str, ...]
    last_serial: int | None = None
    # PEP 629 / PEP 691 `meta.api-version`, e.g. "1.1"; None if the page has none.
    api_version: str | None = None
    # PEP 792: "active", "archived", "quarantined", "deprecated" (or a newer one).
    project_status: str | None = None
    project_status_reason: str | None = None
    # Entries dropped as unusable (bad or hostile file names, unknown URL
    # schemes, wrong types, another project's files, duplicates) and, for
    # the log, the first few with their reason.
    skipped: int = 0
    skipped_examples: tuple[str, ...] = field(default=(), compare=False)


def page_format(content_type: str | None) -> PageFormat | None:
    """Which parser a response's Content-Type calls for; None when neither (PEP 691)."""
    if not content_type:
        return None
    media = content_type.split(";", 1)[0].strip().lower()
    return _FORMATS.get(media)


# -- JSON (PEP 691) -----------------------------------------------------------


def parse_json_page(body: bytes, page_url: str, *, name: str | None = None) -> ProjectPage:
    """Parse a PEP 691 project page.

    Args:
        body: the response body (the caller bounds its size).
        page_url: the URL the page was finally fetched from; relative file
            URLs resolve against it.
        name: the project that was asked for; the page must be that project's.

    Raises:
        UpstreamPageError: the body is not JSON, not a project page, of an
            unsupported major version or over a limit.
    """
    document = _load_json(body)
    if not isinstance(document, dict):
        raise UpstreamPageError("the JSON page is not an object")
    meta = document.get("meta")
    if not isinstance(meta, dict):
        raise UpstreamPageError("the JSON page has no meta object")
    api_version = _api_version(meta.get("api-version"))
    if api_version is None:
        raise UpstreamPageError("the JSON page has no meta.api-version")
    page_name = _page_name(document.get("name"), name)
    raw_files = document.get("files")
    if not isinstance(raw_files, list):
        raise UpstreamPageError("the JSON page has no files list")
    if len(raw_files) > MAX_FILES:
        raise UpstreamPageError(f"the page lists more than {MAX_FILES} files")
    collector = _Collector(page_name)
    for entry in raw_files:
        collector.add(_json_file(entry, page_url), entry)
    versions = _json_versions(document.get("versions"))
    serial = meta.get("_last-serial")
    status, reason = _json_status(document.get("project-status"))
    return collector.page(
        versions=versions,
        last_serial=serial if _is_int(serial) and serial >= 0 else None,
        api_version=api_version, project_status=status, project_status_reason=reason)


def _load_json(body: bytes) -> Any:
    if len(body) > MAX_PAGE_BYTES:
        raise UpstreamPageError(f"the page is larger than {MAX_PAGE_BYTES} bytes")
    try:
        # RFC 8259: JSON between systems is UTF-8 (a BOM tolerated).
        text = body.decode("utf-8-sig")
        return json.loads(text, parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise UpstreamPageError("the JSON page is not UTF-8") from None
    # RecursionError: absurdly deep nesting; ValueError: bad JSON, huge numbers.
    except (ValueError, RecursionError) as e:
        raise UpstreamPageError(f"the page is not valid JSON: {str(e)[:200]}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _json_file(entry: Any, page_url: str) -> tuple[UpstreamFile, str] | str:
    """One `files` entry (see _build_file), or the reason it is skipped."""
    if not isinstance(entry, dict):
        return "an entry that is not an object"
    filename, url = entry.get("filename"), entry.get("url")
    if not isinstance(filename, str) or not isinstance(url, str):
        return "filename and url must be strings"
    hashes = entry.get("hashes", {})
    if not isinstance(hashes, dict):
        return "hashes is not an object"
    requires_python = entry.get("requires-python")
    if requires_python is not None and not isinstance(requires_python, str):
        return "requires-python is not a string"
    yanked = entry.get("yanked", False)
    if not isinstance(yanked, bool | str):
        return "yanked is neither a boolean nor a string"
    size = entry.get("size")
    if size is not None and not (_is_int(size) and size >= 0):
        return "size is not a non-negative integer"
    upload_time = entry.get("upload-time")
    metadata = _first_present(entry, "core-metadata", "dist-info-metadata",
                              "data-dist-info-metadata")
    provenance = entry.get("provenance")
    return _build_file(
        filename=filename, href=url, page_url=page_url, hashes=_known_hashes(hashes),
        requires_python=requires_python,
        # PEP 691: a truthy value means yanked; a non-empty string is the reason.
        yanked=bool(yanked), yanked_reason=yanked if isinstance(yanked, str) and yanked else None,
        size=size,
        upload_time=upload_time if isinstance(upload_time, str) else None,
        core_metadata=_json_metadata(metadata),
        provenance=provenance if isinstance(provenance, str) else None)


def _first_present(entry: dict[str, Any], *keys: str) -> Any:
    """PEP 714: the first of *keys* present (newest name first)."""
    for key in keys:
        if key in entry:
            return entry[key]
    return None


def _json_metadata(value: Any) -> dict[str, str] | bool:
    if isinstance(value, dict):
        # A dict, even of unknown algorithms only, says the file exists.
        return _known_hashes(value) or True
    return value is True


def _json_versions(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise UpstreamPageError("versions is not a list")
    if len(value) > MAX_VERSIONS:
        raise UpstreamPageError(f"the page lists more than {MAX_VERSIONS} versions")
    if not all(isinstance(v, str) and 0 < len(v) <= MAX_TEXT_LENGTH for v in value):
        raise UpstreamPageError("versions holds something other than version strings")
    return value


def _json_status(value: Any) -> tuple[str | None, str | None]:
    if not isinstance(value, dict):
        return None, None
    return _status(value.get("status")), _short_text(value.get("reason"))


# -- HTML (PEP 503) -----------------------------------------------------------


def parse_html_page(body: bytes, page_url: str, *, name: str | None = None) -> ProjectPage:
    """Parse a PEP 503 project page.

    Args:
        body: the response body (the caller bounds its size).
        page_url: the URL the page was finally fetched from; relative links
            (and a `<base href>`) resolve against it.
        name: the project that was asked for; without it, the last segment
            of *page_url* names the project.

    Raises:
        UpstreamPageError: the markup cannot be read, the repository version's
            major is unsupported, or a limit is exceeded.
    """
    if len(body) > MAX_PAGE_BYTES:
        raise UpstreamPageError(f"the page is larger than {MAX_PAGE_BYTES} bytes")
    page_name = _page_name(None, name if name is not None else _name_from_url(page_url))
    parser = _LinkParser()
    try:
        # PEP 503 pages are UTF-8; a stray byte only garbles a reason string,
        # never a file name (those are ASCII and checked below).
        parser.feed(body.decode("utf-8", errors="replace"))
        parser.close()
    except _TooManyLinks:
        raise UpstreamPageError(f"the page lists more than {MAX_FILES} files") from None
    # html.parser is lenient but not total: some malformed declarations
    # (e.g. "<![x[") still raise AssertionError or ValueError from _markupbase.
    except Exception as e:
        raise UpstreamPageError(f"the HTML page cannot be parsed: {type(e).__name__}") from None
    api_version = _api_version(parser.meta.get("pypi:repository-version"))
    base = urljoin(page_url, parser.base) if parser.base else page_url
    collector = _Collector(page_name)
    for attrs in parser.links:
        collector.add(_html_file(attrs, base), attrs.get("href"))
    return collector.page(
        versions=None, last_serial=parser.serial, api_version=api_version,
        project_status=_status(parser.meta.get("pypi:project-status")),
        project_status_reason=_short_text(parser.meta.get("pypi:project-status-reason")))


class _TooManyLinks(Exception):
    pass


class _LinkParser(HTMLParser):
    """Collects `<a>` attributes, `<meta name=… content=…>`, the first `<base href>`
    and PyPI's `<!--SERIAL n-->` comment; everything else is ignored."""

    def __init__(self) -> None:
        # Character references in text are irrelevant; attribute values are
        # unescaped by HTMLParser either way (`&gt;=3.8` → `>=3.8`).
        super().__init__(convert_charrefs=True)
        self.links: list[dict[str, str | None]] = []
        self.meta: dict[str, str] = {}
        self.base: str | None = None
        self.serial: int | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            if len(self.links) >= MAX_FILES:
                raise _TooManyLinks
            # The first of a repeated attribute wins, as in browsers.
            values: dict[str, str | None] = {}
            for key, value in attrs:
                values.setdefault(key, value)
            if values.get("href"):
                self.links.append(values)
        elif tag == "meta":
            values = dict(attrs)
            meta_name, content = values.get("name"), values.get("content")
            if meta_name and content is not None:
                self.meta.setdefault(meta_name.lower(), content)
        elif tag == "base" and self.base is None:
            self.base = dict(attrs).get("href") or None

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_comment(self, data: str) -> None:
        match = _SERIAL_RE.match(data)
        if match and self.serial is None:
            self.serial = int(match[1])


def _html_file(attrs: dict[str, str | None], base: str) -> tuple[UpstreamFile, str] | str:
    """One `<a>` (see _build_file), or the reason it is skipped."""
    href = attrs.get("href") or ""
    if len(href) > MAX_URL_LENGTH:
        return "the URL is too long"
    # pip takes the file name from the URL's last path segment, not from the
    # anchor text (PEP 503 says the two must match); so do we.
    path = urlsplit(href).path
    filename = unquote(path.rsplit("/", 1)[-1])
    yanked = "data-yanked" in attrs
    reason = attrs.get("data-yanked")
    metadata = _first_present(attrs, "data-core-metadata", "data-dist-info-metadata")
    return _build_file(
        filename=filename, href=href, page_url=base, hashes={},
        requires_python=attrs.get("data-requires-python"),
        # An empty data-yanked (or a bare attribute) is a yank without reason.
        yanked=yanked, yanked_reason=reason or None,
        size=None, upload_time=None, core_metadata=_html_metadata(metadata),
        provenance=attrs.get("data-provenance") or None)


def _html_metadata(value: str | None) -> dict[str, str] | bool:
    """PEP 658/714: "true" or "<algorithm>=<hex>"; anything else means no metadata."""
    if value is None:
        return False
    value = value.strip()
    if value.lower() == "true":
        return True
    algorithm, sep, digest = value.partition("=")
    if not sep or not digest:
        return False
    return _known_hashes({algorithm: digest}) or True


def _name_from_url(page_url: str) -> str:
    segments = [s for s in urlsplit(page_url).path.split("/") if s]
    return unquote(segments[-1]) if segments else ""


# -- shared -------------------------------------------------------------------


class _Collector:
    """Keeps the usable files of a page, in page order, and counts the rest."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.files: list[UpstreamFile] = []
        self.filenames: set[str] = set()
        self.skipped = 0
        self.examples: list[str] = []

    def add(self, result: tuple[UpstreamFile, str] | str, entry: Any) -> None:
        """Keep *result*'s file (with the project its name gives), or count the skip."""
        if not isinstance(result, str):
            file, owner = result
            if owner != self.name:
                # pip ignores such links too; keeping one would let a page
                # plant files of another project in this one's cache.
                result = f"a file of another project ({owner})"
            elif file.filename in self.filenames:
                result = "a repeated file name"
            else:
                self.filenames.add(file.filename)
                self.files.append(file)
                return
        self.skipped += 1
        if len(self.examples) < MAX_SKIPPED_EXAMPLES:
            label = entry.get("filename") if isinstance(entry, dict) else entry
            self.examples.append(f"{str(label)[:100]!r}: {result}")

    def page(self, *, versions: list[str] | None, last_serial: int | None,
             api_version: str | None, project_status: str | None,
             project_status_reason: str | None) -> ProjectPage:
        # PEP 700: every file belongs to a listed version; a page that lacks
        # some (or the key) gets them from the file names.
        known = list(dict.fromkeys(versions or ()))
        derived = sorted({f.version for f in self.files} - set(known), key=version_key)
        return ProjectPage(
            name=self.name, files=tuple(self.files), versions=tuple(known + derived),
            last_serial=last_serial, api_version=api_version, project_status=project_status,
            project_status_reason=project_status_reason, skipped=self.skipped,
            skipped_examples=tuple(self.examples))


def _build_file(*, filename: str, href: str, page_url: str, hashes: dict[str, str],
                requires_python: str | None, yanked: bool, yanked_reason: str | None,
                size: int | None, upload_time: str | None,
                core_metadata: dict[str, str] | bool, provenance: str | None
                ) -> tuple[UpstreamFile, str] | str:
    """The checks both formats share.

    Returns (the file, the normalised project its name gives), or the reason
    to skip the entry.
    """
    try:
        dist = parse_filename(filename)
    except RegistryError:
        return "not an accepted distribution file name"
    url, fragment = _absolute(href, page_url)
    if url is None:
        return "the URL is not http(s) or too long"
    # PEP 503 puts the hash in the fragment; JSON pages may too. The hashes
    # object, when it has the algorithm, is what counts.
    for algorithm, digest in _fragment_hashes(fragment).items():
        hashes.setdefault(algorithm, digest)
    if requires_python is not None:
        requires_python = requires_python.strip() or None
        if requires_python is not None and (len(requires_python) > MAX_TEXT_LENGTH
                                            or not requires_python.isprintable()):
            return "requires-python is too long or not printable"
    if yanked_reason is not None and len(yanked_reason) > MAX_TEXT_LENGTH:
        return "the yank reason is too long"
    provenance_url = _absolute(provenance, page_url)[0] if provenance else None
    return UpstreamFile(
        filename=filename, url=url, hashes=hashes, version=str(dist.version),
        requires_python=requires_python, yanked=yanked, yanked_reason=yanked_reason, size=size,
        upload_time=_upload_time(upload_time), core_metadata=core_metadata,
        provenance=provenance_url), normalize_name(dist.name)


def _absolute(href: str, base: str) -> tuple[str | None, str]:
    """(*href* resolved against *base* without its fragment, the fragment); None if unusable."""
    if len(href) > MAX_URL_LENGTH or _UNSAFE_URL_RE.search(href) or not href.isprintable():
        return None, ""
    try:
        # urljoin is the costly part on a page of 100 000 files: skip it for
        # URLs that are already absolute.
        absolute = href if href.startswith(("https://", "http://")) else urljoin(base, href)
        parts = urlsplit(absolute)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        return None, ""
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None, ""
    url = urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, ""))
    return (url if len(url) <= MAX_URL_LENGTH else None), parts.fragment


def _fragment_hashes(fragment: str) -> dict[str, str]:
    algorithm, sep, digest = fragment.partition("=")
    return _known_hashes({algorithm: digest}) if sep else {}


def _known_hashes(raw: dict[Any, Any]) -> dict[str, str]:
    """The entries of *raw* that are a known algorithm with a hex digest of its length."""
    kept: dict[str, str] = {}
    for algorithm, digest in raw.items():
        if not (isinstance(algorithm, str) and isinstance(digest, str)):
            continue
        algorithm = algorithm.lower()
        length = HASH_ALGORITHMS.get(algorithm)
        if length is not None and len(digest) == length and _HEX_RE.match(digest):
            kept[algorithm] = digest.lower()
    return kept


def _upload_time(value: str | None) -> str | None:
    """*value* if it is an ISO 8601 time with a zone, else None (as if absent)."""
    if value is None or len(value) > 64:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return value if moment.tzinfo is not None else None


def _api_version(value: Any) -> str | None:
    """PEP 629's repository version, refusing a major we do not know."""
    if not isinstance(value, str):
        return None
    match = _API_VERSION_RE.match(value.strip())
    if not match:
        return None
    if int(match[1]) > SUPPORTED_MAJOR:
        raise UpstreamPageError(f"the page is simple API version {value.strip()}; "
                                f"only {SUPPORTED_MAJOR}.x is supported")
    return value.strip()


def _page_name(value: Any, expected: str | None) -> str:
    """The page's project, normalised; it must be the one asked for."""
    candidates = [v for v in (value, expected) if v is not None]
    if not candidates:
        raise UpstreamPageError("the page does not name its project")
    for candidate in candidates:
        if not isinstance(candidate, str) or not is_valid_name(candidate):
            raise UpstreamPageError(f"the page names an invalid project {str(candidate)[:100]!r}")
    names = {normalize_name(c) for c in candidates}
    if len(names) > 1:
        raise UpstreamPageError(f"the page is for {normalize_name(value)!r}, "
                                f"not {normalize_name(expected or '')!r}")
    return names.pop()


def _status(value: Any) -> str | None:
    if isinstance(value, str) and _STATUS_RE.match(value.strip().lower()):
        return value.strip().lower()
    return None


def _short_text(value: Any) -> str | None:
    if isinstance(value, str) and value and len(value) <= MAX_TEXT_LENGTH:
        return value
    return None


def _is_int(value: object) -> TypeGuard[int]:
    # bool is an int to Python, but `"size": true` is garbage.
    return isinstance(value, int) and not isinstance(value, bool)
