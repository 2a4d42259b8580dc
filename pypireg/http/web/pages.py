"""The Packages web pages (GitLab's shape), rendered on the server.

HTTP layer: pure functions from rows to HTML. Every value that comes from
the database or the request is escaped here; long descriptions go through
readme-renderer, which renders and sanitises them as PyPI does
(`render_description` can take seconds and hundreds of MiB on a large
README: the daemon calls it only in a worker process, see readme.py).
The frame (stylesheet, security policy, header) is layout.py's: one inline
stylesheet and no script, nothing loaded from anywhere else, so the pages
work without JavaScript and on a closed network.
"""

from __future__ import annotations

import email.message
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote, urlsplit

from pypireg.domain.versions import latest_version, version_key
from pypireg.http.web.layout import SiteUrls, page, visibility_badge
from pypireg.http.web.layout import escape_html as _e
from pypireg.http.web.layout import time_element as _time
from pypireg.proxy.listing import release_key

if TYPE_CHECKING:
    # Only annotations name the rows: the README worker imports this module
    # and starts faster (and smaller, under its memory cap) without the
    # storage layer, psycopg2 and Twisted.
    from pypireg.storage.groups import Group
    from pypireg.storage.projects import Project
    from pypireg.storage.releases import FileDetail, ReleaseSummary

# The name of the repository in the .pypirc snippets.
PYPIRC_NAME = "pypireg"
# Shell variable the install snippets of private projects take the token from.
SHELL_VARIABLE = "PYPIREG_TOKEN"

@dataclass(frozen=True)
class PackageOverview:
    """One row of a list page: a package in a project."""

    project_path: str
    name: str
    display_name: str
    latest: str
    file_count: int
    last_upload: datetime


def newest_first(versions: Sequence[str]) -> list[str]:
    return sorted(versions, key=version_key, reverse=True)


def release_latest(files: Sequence[FileDetail]) -> str:
    """The latest version among a package's files (see latest_version)."""
    yanked: dict[str, bool] = {}
    for f in files:
        yanked[f.version] = yanked.get(f.version, True) and f.yanked
    return latest_version(yanked)


def summarise(releases: Sequence[ReleaseSummary]) -> list[PackageOverview]:
    """One overview per package (and project) from its releases, in the input's order."""
    grouped: dict[tuple[str, str], list[ReleaseSummary]] = {}
    for release in releases:
        grouped.setdefault((release.project_path, release.name), []).append(release)
    overviews = []
    for (project_path, name), rows in grouped.items():
        overviews.append(PackageOverview(
            project_path=project_path,
            name=name,
            display_name=min(r.display_name for r in rows),
            latest=latest_version({r.version: r.yanked for r in rows}),
            file_count=sum(r.file_count for r in rows),
            last_upload=max(r.last_upload for r in rows),
        ))
    return overviews


def human_size(size: int) -> str:
    """Sizes as people read them: 812 B, 14.2 KiB, 3.0 MiB."""
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    units = ["KiB", "MiB", "GiB"]
    while value >= 1024 and len(units) > 1:
        value /= 1024
        units.pop(0)
    return f"{value:.1f} {units[0]}"


def _renderer(mime: str) -> Callable[..., str | None]:
    """PyPI's renderer for a Description-Content-Type.

    No type at all means reStructuredText, an unknown one plain text (as on
    PyPI). Imported here rather than at the top: the daemon renders only in
    its worker process, and docutils, Pygments and markdown-it would be some
    20 MiB of its heap for nothing.
    """
    if mime == "text/x-rst":
        import readme_renderer.rst
        return readme_renderer.rst.render
    if mime == "text/markdown":
        import readme_renderer.markdown
        return readme_renderer.markdown.render
    import readme_renderer.txt
    return readme_renderer.txt.render


def render_description(text: str, content_type: str | None) -> str:
    """A long description as sanitised HTML, rendered as PyPI renders it.

    Blocking and possibly slow: the daemon calls it only in a worker process
    (readme_worker.py). Text that its renderer refuses (invalid
    reStructuredText, say) falls back to plain text, as on PyPI.
    """
    return render_description_how(text, content_type)[0]


def render_description_how(text: str, content_type: str | None
                           ) -> tuple[str, Literal["rendered", "plain"]]:
    """`render_description`, and whether the renderer took the markup ("plain": it refused)."""
    import readme_renderer.txt

    mime, variant = "text/x-rst", None
    if content_type:
        message = email.message.EmailMessage()
        # A header value cannot span lines; a malformed type reads as text/plain.
        message["content-type"] = " ".join(content_type.split())
        mime = message.get_content_type()
        variant = message["content-type"].params.get("variant")
    renderer = _renderer(mime)
    # The markdown variant (GFM or CommonMark) is the one parameter a
    # renderer takes; others (charset) are not for them.
    if mime == "text/markdown" and variant:
        rendered = renderer(text, variant=variant)
    else:
        rendered = renderer(text)
    if rendered is None:
        return readme_renderer.txt.render(text) or "", "plain"
    return rendered or "", "rendered"


def plain_description(text: str, limit: int | None = None) -> str:
    """The long description as escaped preformatted text (if it was not rendered).

    Over *limit* bytes of UTF-8, only the first *limit* are shown, with a note.
    """
    if limit is None:
        return f"<pre>{_e(text)}</pre>"
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= limit:
        return f"<pre>{_e(text)}</pre>"
    shown = encoded[:limit].decode("utf-8", "ignore")
    return (f'<p class="note">This description is {human_size(len(encoded))}, too long to'
            f" render: its first {human_size(limit)} are shown as plain text.</p>"
            f"<pre>{_e(shown)}</pre>")


def _filter_form(action: str, query: str) -> str:
    clear = f' <a href="{_e(action)}">Clear filter</a>' if query else ""
    return (
        f'<form class="filter" role="search" method="get" action="{_e(action)}">'
        '<label for="pypireg-q">Filter by name</label>'
        f'<input id="pypireg-q" name="q" type="search" value="{_e(query)}" maxlength="200"'
        ' autocomplete="off" spellcheck="false">'
        f'<button type="submit">Filter</button>{clear}</form>'
    )


def _package_table(urls: SiteUrls, packages: Sequence[PackageOverview], caption: str,
                   with_project: bool) -> str:
    head = ['<th scope="col">Package</th>']
    if with_project:
        head.append('<th scope="col">Project</th>')
    head += ['<th scope="col">Latest version</th>', '<th scope="col">Files</th>',
             '<th scope="col">Last upload</th>']
    rows = []
    for p in packages:
        cells = [f'<td data-label="Package"><a href="{_e(urls.package(p.project_path, p.name))}">'
                 f"{_e(p.display_name)}</a></td>"]
        if with_project:
            cells.append(f'<td data-label="Project"><a href="'
                         f'{_e(urls.project_packages(p.project_path))}">{_e(p.project_path)}'
                         "</a></td>")
        cells += [f'<td data-label="Latest version">{_e(p.latest)}</td>',
                  f'<td data-label="Files" class="num">{p.file_count}</td>',
                  f'<td data-label="Last upload">{_time(p.last_upload)}</td>']
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<table class="cards packages"><caption class="visually-hidden">{_e(caption)}'
            f"</caption><thead><tr>{''.join(head)}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _listing(urls: SiteUrls, packages: Sequence[PackageOverview], query: str, action: str,
             caption: str, with_project: bool) -> str:
    parts = [_filter_form(action, query)]
    if packages:
        count = len(packages)
        noun = "package" if count == 1 else "packages"
        matching = f" matching “{_e(query)}”" if query else ""
        parts.append(f'<p class="meta" role="status">{count} {noun}{matching}</p>')
        parts.append(_package_table(urls, packages, caption, with_project))
    elif query:
        parts.append(f'<p class="empty" role="status">No package name contains “{_e(query)}”.'
                     "</p>")
    else:
        parts.append('<p class="empty" role="status">No packages yet.</p>')
    return "".join(parts)


def _index_url(api: str, public: bool) -> str:
    """The simple index URL to give pip; private ones carry the token variable."""
    simple = f"{api}/simple"
    if public:
        return simple
    parts = urlsplit(simple)
    return simple.replace(f"{parts.scheme}://",
                          f"{parts.scheme}://__token__:${{{SHELL_VARIABLE}}}@", 1)


def _snippet(label: str, text: str) -> str:
    return (f'<pre class="snippet" aria-label="{_e(label)}" tabindex="0"><code>{_e(text)}'
            "</code></pre>")


def _token_note(public: bool, scope: str) -> str:
    if public:
        return ""
    return (f'<p class="note">This project is private: set <code>{SHELL_VARIABLE}</code> to a '
            f"{scope} token of this project first.</p>")


def _pypirc(urls: SiteUrls, project: Project) -> str:
    return (
        "[distutils]\n"
        f"index-servers = {PYPIRC_NAME}\n\n"
        f"[{PYPIRC_NAME}]\n"
        f"repository = {urls.project_api(project.id, absolute=True)}\n"
        "username = __token__\n"
        "password = <a write token of this project>\n"
    )


def _publish_section(urls: SiteUrls, project: Project) -> str:
    return (
        '<section aria-labelledby="pypireg-publish"><h2 id="pypireg-publish">Publish</h2>'
        '<p class="note">Add this to <code>~/.pypirc</code>, then upload with twine:</p>'
        f"{_snippet('.pypirc', _pypirc(urls, project))}"
        f"{_snippet('twine command', f'twine upload --repository {PYPIRC_NAME} dist/*')}"
        "</section>"
    )


def project_list_page(urls: SiteUrls, project: Project, packages: Sequence[PackageOverview],
                      query: str, proxied: Sequence[tuple[str, str]] = ()) -> bytes:
    """A project's packages, filtered by *query* (already applied to *packages*).

    *proxied* are the (name, upstream) pairs it serves from upstreams.
    """
    here = urls.project_packages(project.path)
    index = _index_url(urls.project_api(project.id, absolute=True), project.public)
    body = (
        f"<h1>Packages</h1>"
        f'<p class="sub">Project <strong>{_e(project.path)}</strong> '
        f"{visibility_badge(project.public)}</p>"
        f"{_listing(urls, packages, query, here, f'Packages of {project.path}', False)}"
        f"{proxied_section(urls, project, proxied)}"
        '<section aria-labelledby="pypireg-use"><h2 id="pypireg-use">Install</h2>'
        f"{_token_note(project.public, 'read or write')}"
        f"{_snippet('pip command', f'pip install --index-url {_quoted(index)} PACKAGE')}"
        "</section>"
        f"{_publish_section(urls, project)}"
    )
    return page(urls, f"Packages · {project.path}", [(project.path, here), ("Packages", None)],
                body)


def group_list_page(urls: SiteUrls, group: Group, packages: Sequence[PackageOverview],
                    query: str) -> bytes:
    """The packages of a group's projects that the caller may read."""
    here = urls.group_packages(group.path)
    index = _index_url(urls.group_api(group.id), group.public)
    body = (
        f"<h1>Packages</h1>"
        f'<p class="sub">Group <strong>{_e(group.path)}</strong> {visibility_badge(group.public)}'
        "</p>"
        f"{_listing(urls, packages, query, here, f'Packages in {group.path}', True)}"
        '<section aria-labelledby="pypireg-use"><h2 id="pypireg-use">Install</h2>'
        '<p class="note">The group index serves the packages of all its projects that your '
        "token may read.</p>"
        f"{_token_note(group.public, 'read or write')}"
        f"{_snippet('pip command', f'pip install --index-url {_quoted(index)} PACKAGE')}"
        "</section>"
    )
    return page(urls, f"Packages · {group.path}", [(group.path, here), ("Packages", None)],
                body)


def _quoted(url: str) -> str:
    # Double quotes: the shell still expands the token variable.
    return f'"{url}"'


def _uploader(f: FileDetail) -> str:
    if f.uploader_token_id is None:
        return '<span class="meta">unknown</span>'
    if not f.uploader:
        return f"token #{f.uploader_token_id}"
    if f.uploader_kind == "deploy":
        return f'{_e(f.uploader)} <span class="meta">(deploy token)</span>'
    if f.uploader_kind == "trusted":
        # The minted token's description: "OWNER/REPO@REF via WORKFLOW (run N)".
        return f'published by {_e(f.uploader)} <span class="meta">(trusted publisher)</span>'
    return _e(f.uploader)


def downloads_text(count: int) -> str:
    """"1 download", "12 downloads"."""
    return f"{count} download{'' if count == 1 else 's'}"


def _first(values: Sequence[str | None]) -> str | None:
    return next((v for v in values if v), None)


def version_anchor(version: str) -> str:
    """The id of a version's section on the package page (redirects link to it)."""
    return f"pypireg-v-{version}"


def _release_section(urls: SiteUrls, project: Project, version: str,
                     files: Sequence[FileDetail], latest: str) -> str:
    newest = sorted(files, key=lambda f: f.id, reverse=True)
    yanked = all(f.yanked for f in files)
    anchor = version_anchor(version)
    badges = ""
    if version == latest:
        badges += ' <span class="badge latest">latest</span>'
    if yanked:
        badges += ' <span class="badge yanked">yanked</span>'
    parts = [f'<section class="release" aria-labelledby="{_e(anchor)}">'
             f'<h3 id="{_e(anchor)}">{_e(version)}{badges}</h3>']
    if yanked:
        reason = _first([f.yanked_reason for f in newest])
        parts.append(f'<p class="yank-reason">Yanked: {_e(reason)}</p>' if reason
                     else '<p class="yank-reason">Yanked (no reason given)</p>')
    facts = []
    summary = _first([f.summary for f in newest])
    if summary:
        facts.append(_e(summary))
    requires = _first([f.requires_python for f in newest])
    if requires:
        facts.append(f"Requires Python {_e(requires)}")
    facts.append(downloads_text(sum(f.downloads for f in files)))
    parts.append(f'<p class="meta">{" · ".join(facts)}</p>')
    rows = []
    for f in sorted(files, key=lambda f: f.filename):
        href = f"{urls.project_api(project.id)}/files/{f.sha256}/{quote(f.filename)}"
        kind = "wheel" if f.packagetype == "bdist_wheel" else "sdist"
        rows.append(
            f'<tr><td data-label="File"><div><a class="filename" href="{_e(href)}">'
            f'{_e(f.filename)}</a><span class="hash">sha256: {_e(f.sha256)}</span></div></td>'
            f'<td data-label="Type">{kind}</td>'
            f'<td data-label="Size" class="num">{human_size(f.size)}</td>'
            f'<td data-label="Uploaded">{_time(f.uploaded_at)}</td>'
            f'<td data-label="Uploaded by">{_uploader(f)}</td>'
            f'<td data-label="Downloads" class="num">{f.downloads}</td></tr>'
        )
    parts.append(
        f'<table class="cards files"><caption class="visually-hidden">Files of {_e(version)}'
        '</caption><thead><tr><th scope="col">File</th><th scope="col">Type</th>'
        '<th scope="col">Size</th><th scope="col">Uploaded</th>'
        '<th scope="col">Uploaded by</th><th scope="col">Downloads</th></tr></thead>'
        f'<tbody>{"".join(rows)}</tbody></table>'
        "</section>"
    )
    return "".join(parts)


def package_page(urls: SiteUrls, project: Project, name: str, files: Sequence[FileDetail],
                 readme_html: str | None) -> bytes:
    """One package: install and publish snippets, README, every version with its files.

    *name* is the normalised name, *files* are not empty; *readme_html* is
    the latest release's rendered long description (already sanitised).
    """
    releases: dict[str, list[FileDetail]] = {}
    for f in files:
        releases.setdefault(f.version, []).append(f)
    latest = release_latest(files)
    newest = sorted(releases[latest], key=lambda f: f.id, reverse=True)
    display_name = newest[0].display_name
    summary = _first([f.summary for f in newest])
    requires = _first([f.requires_python for f in newest])
    last_upload = max(f.uploaded_at for f in files)
    index = _index_url(urls.project_api(project.id, absolute=True), project.public)
    requirement = f"{name}=={latest}"

    facts = [f'<li>Project <a href="{_e(urls.project_packages(project.path))}">'
             f"<strong>{_e(project.path)}</strong></a> {visibility_badge(project.public)}</li>"]
    if requires:
        facts.append(f"<li>Requires Python <strong>{_e(requires)}</strong></li>")
    facts.append(f"<li>Last upload {_time(last_upload)}</li>")
    total = sum(f.downloads for f in files)
    facts.append(f"<li>Downloaded <strong>{total}</strong> time{'' if total == 1 else 's'}"
                 "</li>")
    header = (
        f'<h1>{_e(display_name)} <span class="version">{_e(latest)}</span></h1>'
        + (f'<p class="summary">{_e(summary)}</p>' if summary else "")
        + f'<ul class="facts">{"".join(facts)}</ul>'
    )
    api = urls.project_api(project.id)
    # Phones read install, description, versions, then publish; wide
    # screens put install and publish in a column beside the rest.
    install = (
        '<section class="install" aria-labelledby="pypireg-install">'
        '<h2 id="pypireg-install">Install</h2>'
        f"{_token_note(project.public, 'read or write')}"
        "<h3>pip</h3>"
        f"{_snippet('pip command', f'pip install --index-url {_quoted(index)} {requirement}')}"
        "<h3>uv</h3>"
        f"{_snippet('uv command', f'uv pip install --index-url {_quoted(index)} {requirement}')}"
        "</section>"
    )
    publish = (
        f'<div class="publish">{_publish_section(urls, project)}'
        '<section aria-labelledby="pypireg-links"><h2 id="pypireg-links">API</h2><ul>'
        f'<li><a href="{_e(api)}/simple/{_e(quote(name))}/">Simple index page</a></li>'
        f'<li><a href="{_e(api)}/pypi/{_e(quote(name))}/json">JSON metadata</a></li>'
        "</ul></section></div>"
    )
    readme = (f'<div class="readme">{readme_html}</div>' if readme_html
              else '<p class="empty">This release has no description.</p>')
    versions = "".join(_release_section(urls, project, v, releases[v], latest)
                       for v in newest_first(list(releases)))
    content = (
        '<div class="content">'
        '<section aria-labelledby="pypireg-readme"><h2 id="pypireg-readme">Description</h2>'
        f"{readme}</section>"
        '<section aria-labelledby="pypireg-versions"><h2 id="pypireg-versions">Versions</h2>'
        f"{versions}</section></div>"
    )
    listing = urls.project_packages(project.path)
    crumbs = [(project.path, listing), ("Packages", listing),
              (display_name, None)]
    return page(urls, f"{display_name} {latest} · {project.path}", crumbs,
                f'{header}<div class="layout">{install}{content}{publish}</div>')


@dataclass(frozen=True)
class ProxiedPackage:
    """A name the project serves from an upstream (its origin lock), as the cache knows it."""

    name: str
    upstream: str
    since: datetime
    # Newest first; empty when the page is not cached (yet, or any more).
    versions: Sequence[str]
    # Release keys an admin blocked, and whether the whole name is.
    blocked: frozenset[str]
    name_blocked: bool
    state: str | None
    checked_at: datetime | None
    error: str | None
    # Downloads of its cached files by release key (the cache, and so the
    # count, is shared by every project's index).
    downloads: Mapping[str, int] = field(default_factory=dict)


def proxied_package_page(urls: SiteUrls, project: Project, package: ProxiedPackage
                         ) -> bytes:
    """A name served from an upstream: where it comes from, what is cached, what is hidden."""
    name = package.name
    index = _index_url(urls.project_api(project.id, absolute=True), project.public)
    facts = [f'<li>Project <a href="{_e(urls.project_packages(project.path))}">'
             f"<strong>{_e(project.path)}</strong></a> {visibility_badge(project.public)}</li>",
             f"<li>From upstream <strong>{_e(package.upstream)}</strong>, first served"
             f" {_time(package.since)}</li>"]
    if package.checked_at is not None and package.checked_at.year > 1:
        facts.append(f"<li>Last checked {_time(package.checked_at)}</li>")
    if package.state == "missing":
        facts.append("<li>The upstream no longer has it; cached files stay for pinned"
                     " installs</li>")
    if package.error:
        facts.append(f"<li>Last upstream error: {_e(package.error)}</li>")
    if package.name_blocked:
        facts.append("<li><strong>Blocked</strong>: no version is served</li>")
    total = sum(package.downloads.values())
    facts.append(f"<li>Downloaded {total} time{'' if total == 1 else 's'} through this"
                 " registry (its cache serves every project)</li>")
    items = []
    for version in package.versions:
        key = release_key(version)
        mark = ' <span class="badge">Blocked</span>' if key in package.blocked else ""
        count = package.downloads.get(key, 0)
        if count:
            mark += f' <span class="meta">· {downloads_text(count)}</span>'
        items.append(f"<li>{_e(version)}{mark}</li>")
    versions = (f'<ul class="facts">{"".join(items)}</ul>' if items
                else '<p class="empty">No page of it is cached.</p>')
    api = urls.project_api(project.id)
    body = (
        f'<h1>{_e(name)} <span class="badge">Upstream</span></h1>'
        '<p class="summary">A public dependency, served through this project\'s index.'
        " Uploads of this name are refused while it comes from the upstream"
        " (an admin can claim it: <code>pypireg name claim</code>).</p>"
        f'<ul class="facts">{"".join(facts)}</ul>'
        '<section aria-labelledby="pypireg-install"><h2 id="pypireg-install">Install</h2>'
        f"{_token_note(project.public, 'read or write')}"
        f"{_snippet('pip command', f'pip install --index-url {_quoted(index)} {name}')}"
        "</section>"
        '<section aria-labelledby="pypireg-versions"><h2 id="pypireg-versions">Versions</h2>'
        f"{versions}</section>"
        f'<p><a href="{_e(api)}/simple/{_e(quote(name))}/">Simple index page</a></p>'
    )
    listing = urls.project_packages(project.path)
    return page(urls, f"{name} · {project.path}",
                [(project.path, listing), ("Packages", listing), (name, None)], body)


def proxied_section(urls: SiteUrls, project: Project, names: Sequence[tuple[str, str]]
                    ) -> str:
    """The project's names that come from upstreams, (name, upstream), for its list page."""
    if not names:
        return ""
    rows = "".join(
        f'<tr><td data-label="Package"><a href="{_e(urls.package(project.path, n))}">'
        f'{_e(n)}</a></td><td data-label="Upstream">{_e(u)}</td></tr>' for n, u in names)
    return ('<section aria-labelledby="pypireg-proxied"><h2 id="pypireg-proxied">From'
            " upstreams</h2>"
            '<table class="cards packages"><caption class="visually-hidden">Names served'
            ' from upstreams</caption><thead><tr><th scope="col">Package</th>'
            f'<th scope="col">Upstream</th></tr></thead><tbody>{rows}</tbody></table>'
            "</section>")
