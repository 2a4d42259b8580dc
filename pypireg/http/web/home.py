"""The home page (the projects a caller may see) and the sign-in page.

HTTP layer: pure functions from rows to HTML, in layout.py's frame, with
every value escaped. Which projects a caller may see is the Authorizer's
decision (access.py); these pages only show it.

Browsers send Basic credentials only after a 401, and then only to the
folder of the URL that asked: the sign-in URL is the home page's own
(`/?sign-in`), so the token the browser keeps from it goes with every page
of the registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pypireg.http.web.layout import SiteUrls, page, visibility_badge
from pypireg.http.web.layout import escape_html as _e


@dataclass(frozen=True)
class ProjectOverview:
    """One row of the home page."""

    path: str
    public: bool
    package_count: int


def _project_table(urls: SiteUrls, projects: Sequence[ProjectOverview]) -> str:
    rows = "".join(
        f'<tr><td data-label="Project"><a href="{_e(urls.project_packages(p.path))}">'
        f"{_e(p.path)}</a></td>"
        f'<td data-label="Visibility">{visibility_badge(p.public)}</td>'
        f'<td data-label="Packages" class="num">{p.package_count}</td></tr>'
        for p in projects)
    return ('<table class="cards projects"><caption class="visually-hidden">Projects'
            '</caption><thead><tr><th scope="col">Project</th><th scope="col">Visibility</th>'
            f'<th scope="col">Packages</th></tr></thead><tbody>{rows}</tbody></table>')


def home_page(urls: SiteUrls, projects: Sequence[ProjectOverview], signed_in: bool) -> bytes:
    """The projects the caller may see, each linking to its packages page.

    *signed_in*: the caller presented a valid token (so private projects it
    reads are among *projects*); otherwise the page offers to sign in.
    """
    if signed_in:
        intro = ('<p class="sub">Public projects, and the private ones your token reads. '
                 "Your browser keeps the token until it closes.</p>")
    else:
        intro = (f'<p class="sub">Public projects. <a href="{_e(urls.sign_in())}">Sign in with a'
                 " token</a> to see the private projects it reads as well.</p>")
    if projects:
        count = len(projects)
        listing = (f'<p class="meta" role="status">{count} '
                   f'{"project" if count == 1 else "projects"}</p>'
                   f"{_project_table(urls, projects)}")
    elif signed_in:
        listing = '<p class="empty" role="status">No project to show.</p>'
    else:
        listing = '<p class="empty" role="status">No public projects yet.</p>'
    example = f"{urls.origin}/api/v4/projects/<project>/packages/pypi/simple"
    body = (
        f"<h1>Projects</h1>{intro}{listing}"
        '<section aria-labelledby="pypireg-use"><h2 id="pypireg-use">Installing</h2>'
        '<p class="note">Every project has its own index; its page shows the commands to '
        "install from it and publish to it. The index URLs look like this:</p>"
        f'<pre class="snippet" aria-label="Index URL" tabindex="0"><code>{_e(example)}'
        "</code></pre></section>"
    )
    return page(urls, "Projects", [("Projects", None)], body)


def sign_in_page(urls: SiteUrls) -> bytes:
    """What a browser shows when its user cancels the sign-in prompt (the 401's body)."""
    body = (
        "<h1>Sign in</h1>"
        '<p class="summary">This registry signs people in with a token: the token is the '
        "password.</p>"
        '<ul class="note"><li>The user name is <code>__token__</code> for project and personal'
        " tokens; a deploy token takes its own (<code>gitlab+deploy-token-…</code> unless it"
        " was given another).</li><li>Reload this page to be asked again.</li></ul>"
        f'<p><a href="{_e(urls.home())}">Back to the public projects</a></p>'
    )
    return page(urls, "Sign in", [("Projects", urls.home()), ("Sign in", None)], body)
