"""The web pages, at GitLab's web URLs.

HTTP layer.

    GET /                                        the projects the caller may see
    GET /?sign-in                                401 until the browser sends a token, then /'s page
    GET /<path>                                  302 to the project's (or group's) packages page
    GET /<project path>/-/packages               a project's packages (?q= filters by name)
    GET /<project path>/-/packages/<name>        one package: versions, files, README
    GET /groups/<group path>/-/packages          the packages of a group's projects
    GET /api/v4/projects/<p>/packages/pypi/<name>[/<version>/]
                                                 302 to the package's page (and the version
                                                 on it): the links flit and hatch print
    GET /favicon.ico                             the icon

Access is that of the index (RequestAccess.project_scope and group_scope): anonymous
callers get 401 with `WWW-Authenticate: Basic` for anything not public, so
a browser asks for a user (`__token__`) and a password (the token). Every
redirect is decided after that check, so it says nothing of what the
caller may not read. The web paths cannot shadow the API: their
`/-/packages` part never occurs in an API path at the same place, and a
path under the reserved top-level names (`api`, `groups`, `-`) is never
taken for a project.
"""

from __future__ import annotations

from urllib.parse import quote

from packaging.version import InvalidVersion, Version
from twisted.web.iweb import IRequest

from pypireg.domain.errors import NotFound, RegistryError, Unauthorized
from pypireg.domain.filenames import parse_filename
from pypireg.domain.names import (
    MAX_VERSION_LENGTH,
    is_valid_name,
    is_valid_project_path,
    normalize_name,
)
from pypireg.http.credentials import request_credentials
from pypireg.http.front_door import valid_host
from pypireg.http.responses import redirect
from pypireg.http.scopes import RequestAccess
from pypireg.http.web.favicon import favicon
from pypireg.http.web.home import ProjectOverview, home_page, sign_in_page
from pypireg.http.web.layout import CONTENT_SECURITY_POLICY, SiteUrls
from pypireg.http.web.pages import (
    ProxiedPackage,
    group_list_page,
    newest_first,
    package_page,
    project_list_page,
    proxied_package_page,
    release_latest,
    summarise,
    version_anchor,
)
from pypireg.http.web.readme import ReadmeRenderer
from pypireg.proxy.listing import from_document, release_key
from pypireg.storage import groups as group_store
from pypireg.storage import name_origins as origin_store
from pypireg.storage import projects as project_store
from pypireg.storage import releases as release_store
from pypireg.storage import upstream_cache as cache_store
from pypireg.storage.database import Database
from pypireg.storage.projects import Project

# First path segments that are never a project's (as on GitLab).
_RESERVED = frozenset({"api", "groups", "-"})
# Files crawlers and browsers ask every site for (GitLab reserves these
# names too): at `/<path>` they are 404 as on any site without them.
_SITE_FILES = frozenset({"robots.txt", "sitemap.xml", "humans.txt", "ads.txt",
                         "apple-touch-icon.png", "apple-touch-icon-precomposed.png"})
MAX_QUERY = 200
_SIGN_IN = "Sign in with a token as the password (user __token__)."


class PageRoutes:
    def __init__(self, db: Database, access: RequestAccess, readme: ReadmeRenderer) -> None:
        self._db = db
        self._access = access
        self._readme = readme

    async def home(self, request: IRequest) -> bytes:
        urls = self._site_urls(request)
        if _has_flag(request, b"sign-in"):
            # 401 until the browser sends a valid token, then the same page
            # as `/`. Not a redirect to `/`: Chromium follows it without the
            # credentials it was just given (they go with later requests).
            try:
                signed_in = await self._access.authenticate(request)
            except Unauthorized as refusal:  # a bad token: counted, and asked again
                return _challenge(request, refusal, sign_in_page(urls))
            if not signed_in:
                return _challenge(request, Unauthorized(_SIGN_IN), sign_in_page(urls))
        listing = await self._access.listing(request)
        counts = await release_store.package_counts(self._db, [p.id for p in listing.projects])
        rows = sorted((ProjectOverview(p.path, p.public, counts.get(p.id, 0))
                       for p in listing.projects), key=lambda r: (r.path.lower(), r.path))
        # Anonymous callers all see the same page; a token's is its own.
        return _html(request, not listing.signed_in, home_page(urls, rows, listing.signed_in))

    def favicon(self, request: IRequest) -> bytes:
        return favicon(request)

    async def path_page(self, request: IRequest, path: str) -> bytes:
        """`/<path>`: a project's page is its packages page (GitLab's project URL).

        A path that is no project the caller may read may be a group's
        (GitLab's group URL is `/<path>` as well).
        """
        if request.method not in (b"GET", b"HEAD"):
            # The route takes every method so that other methods on unknown
            # paths stay 404 rather than becoming 405.
            raise NotFound("No such URL on this registry.")
        ref = path.rstrip("/")
        if ref.lower() in _SITE_FILES or not (ref.isdigit() or is_valid_project_path(ref)):
            # Nothing there can be a project: no database round trip, and
            # crawlers and browsers asking for such files get 404, not a
            # sign-in prompt.
            raise NotFound("No such URL on this registry.")
        urls = self._site_urls(request)
        try:
            found = await self._readable_project(request, ref)
        except (Unauthorized, NotFound) as refusal:
            group = await self._readable_group(request, ref, refusal)
            return redirect(request, urls.group_packages(group), 302)
        return redirect(request, urls.project_packages(found.path), 302)

    async def _readable_group(self, request: IRequest, ref: str,
                              refusal: Unauthorized | NotFound) -> str:
        """The path of the group at *ref*, if the caller may read it; else raise *refusal*.

        Whatever the group check says, a caller who may not read the group
        gets the project's refusal, so neither kind of path is told apart.
        """
        if isinstance(refusal, Unauthorized) and request_credentials(
                request.requestHeaders) is not None:
            raise refusal  # a bad token, counted once already
        try:
            await self._access.group_scope(request, ref)
        except (Unauthorized, NotFound):
            raise refusal from None
        group = await group_store.get_group(self._db, ref)
        if group is None:  # deleted since the access check
            raise refusal
        return group.path

    async def pypi_package(self, request: IRequest, project: str, name: str) -> bytes:
        """`…/pypi/<name>`, the link flit prints after an upload: to the package's page."""
        return await self._to_package(request, project, name, None)

    async def pypi_release(self, request: IRequest, project: str, name: str, version: str
                           ) -> bytes:
        """`…/pypi/<name>/<version>/`, the link hatch prints: to that version on the page."""
        return await self._to_package(request, project, name, version)

    async def _to_package(self, request: IRequest, project: str, name: str,
                          version: str | None) -> bytes:
        found = await self._readable_project(request, project)
        if not is_valid_name(name):
            raise NotFound(f"No package named {name!r}.")
        if version is not None and not _is_version(version):
            raise NotFound(f"No version {version!r} of {name!r}.")
        normalized = normalize_name(name)
        location = self._site_urls(request).package(found.path, normalized)
        if version is not None:
            # The page's anchor is the version as uploaded; 1.0.0 finds 1.0.
            files = await release_store.package_files(self._db, found.id, normalized)
            wanted = release_key(version)
            stored = next((f.version for f in files if release_key(f.version) == wanted), None)
            if stored is not None:
                location += "#" + quote(version_anchor(stored), safe="!+")
        # Not permanent: the project's path, or the page, may change.
        return redirect(request, location, 302)

    async def project_packages(self, request: IRequest, project: str) -> bytes:
        found = await self._readable_project(request, project)
        query = _query(request)
        urls = self._site_urls(request)
        if found.path != project:
            return _canonical(request, urls.project_packages(found.path), query)
        part = normalize_name(query) if query else ""
        releases = await release_store.release_summaries(self._db, [found.id], part)
        proxied = [(o.name, o.upstream or "") for o in
                   await origin_store.list_origins(self._db, found.id)
                   if o.origin == "upstream" and part in o.name]
        body = project_list_page(urls, found, summarise(releases), query, proxied)
        return _html(request, found.public, body)

    async def package(self, request: IRequest, project: str, name: str) -> bytes:
        found = await self._readable_project(request, project)
        if not is_valid_name(name):
            raise NotFound(f"No package named {name!r}.")
        urls = self._site_urls(request)
        normalized = normalize_name(name)
        if found.path != project or normalized != name:
            return redirect(request, urls.package(found.path, normalized), 302)
        files = await release_store.package_files(self._db, found.id, normalized)
        if not files:
            proxied = await self._proxied(found, normalized)
            if proxied is None:
                raise NotFound(f"No package named {name!r} in this project.")
            return _html(request, found.public, proxied_package_page(urls, found, proxied))
        latest = release_latest(files)
        description = await release_store.release_description(self._db, found.id, normalized,
                                                           latest)
        readme = None
        if description is not None:
            # Rendered once per README, in a bounded worker process (readme.py).
            readme = await self._readme.html(description, normalized, latest)
        return _html(request, found.public, package_page(urls, found, normalized, files, readme))

    async def group_packages(self, request: IRequest, group: str) -> bytes:
        scope = await self._access.group_scope(request, group)
        found = await group_store.get_group(self._db, group)
        if found is None:  # deleted since the access check
            raise NotFound("Group not found.")
        query = _query(request)
        urls = self._site_urls(request)
        if found.path != group:
            return _canonical(request, urls.group_packages(found.path), query)
        part = normalize_name(query) if query else ""
        releases = await release_store.release_summaries(self._db, scope.project_ids, part)
        body = group_list_page(urls, found, summarise(releases), query)
        return _html(request, scope.public, body)

    async def _proxied(self, project: Project, name: str) -> ProxiedPackage | None:
        """What the cache knows of *name*, if the project serves it from an upstream."""
        origin = await origin_store.get_origin(self._db, project.id, name)
        if origin is None or origin.origin != "upstream" or origin.upstream is None:
            return None
        cached = await cache_store.get_page(self._db, origin.upstream, name)
        versions: list[str] = []
        if cached is not None and cached.page is not None:
            versions = newest_first(sorted({f.version for f in
                                            from_document(cached.page).files}))
        rules = await cache_store.name_rules(self._db, [project.id], name)
        downloads: dict[str, int] = {}
        for f in await cache_store.cached_files(self._db, name):
            version = _file_version(f.filename) if f.upstream == origin.upstream else None
            if version is not None:
                key = release_key(version)
                downloads[key] = downloads.get(key, 0) + f.download_count
        return ProxiedPackage(
            name=name, upstream=origin.upstream, since=origin.decided_at, versions=versions,
            blocked=rules.blocked_versions, name_blocked=rules.name_blocked,
            state=cached.state if cached else None,
            checked_at=cached.checked_at if cached else None,
            error=cached.error if cached else None, downloads=downloads)

    async def _readable_project(self, request: IRequest, ref: str) -> Project:
        """The project at *ref*, if the caller may read it (the index's access rules)."""
        if ref.split("/", 1)[0].lower() in _RESERVED:
            raise NotFound("No such URL on this registry.")
        scope = await self._access.project_scope(request, ref)
        project = await project_store.get_project(self._db, str(scope.project_ids[0]))
        if project is None:  # deleted since the access check
            raise NotFound("Project not found.")
        return project

    def _site_urls(self, request: IRequest) -> SiteUrls:
        """Links as the other routes make them; snippets from base_url or the request."""
        base_url = self._access.base_url
        if base_url:
            return SiteUrls(base_url, base_url)
        scheme = "https" if request.isSecure() else "http"
        host_header = request.getHeader(b"host")
        host = host_header.decode("latin-1") if host_header else ""
        # The site refused a malformed Host already; HTTP/1.0 may send none.
        if not valid_host(host):
            address = request.getHost()
            host = (f"[{address.host}]" if ":" in address.host else address.host) + \
                f":{address.port}"
        return SiteUrls("", f"{scheme}://{host}")


def _file_version(filename: str) -> str | None:
    """The version in a distribution file's name; None for others (core metadata files)."""
    try:
        return str(parse_filename(filename).version)
    except RegistryError:
        return None


def _is_version(text: str) -> bool:
    if len(text) > MAX_VERSION_LENGTH or not text.isascii():
        return False
    try:
        Version(text)
    except InvalidVersion:
        return False
    return True


def _has_flag(request: IRequest, name: bytes) -> bool:
    """Whether the query has *name* alone (`?sign-in`), which request.args leaves out."""
    query = request.uri.partition(b"?")[2]
    return name in query.split(b"&")


def _query(request: IRequest) -> str:
    """The name filter (`?q=`), trimmed."""
    raw = request.args.get(b"q", [b""])[-1]
    return " ".join(raw.decode("utf-8", "replace").split())[:MAX_QUERY]


def _canonical(request: IRequest, location: str, query: str) -> bytes:
    """Redirect to the page at its canonical path (an id or another case in the URL).

    Not permanent: the id or spelling in the URL stays valid if a path changes.
    """
    return redirect(request, location + (f"?q={quote(query)}" if query else ""), 302)


def _html(request: IRequest, public: bool, body: bytes) -> bytes:
    visibility = b"public" if public else b"private"
    request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
    request.setHeader(b"Cache-Control", visibility + b", no-cache")
    request.setHeader(b"Vary", b"Authorization")
    request.setHeader(b"Content-Security-Policy", CONTENT_SECURITY_POLICY.encode())
    request.setHeader(b"Referrer-Policy", b"same-origin")
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    return body


def _challenge(request: IRequest, refusal: Unauthorized, body: bytes) -> bytes:
    """A 401 whose body is a page (what the browser shows if its user cancels)."""
    request.setResponseCode(401, refusal.reason.encode("latin-1", "replace"))
    for key, value in refusal.headers.items():
        request.setHeader(key.encode("latin-1"), value.encode("latin-1"))
    _html(request, False, body)
    request.setHeader(b"Cache-Control", b"no-store")
    return body
