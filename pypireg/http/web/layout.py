"""The frame every web page shares: stylesheet, security policy, header, breadcrumbs.

HTTP layer: pure functions and constants, no I/O, and nothing from the
storage layer (the README worker imports pages.py, and with it this module,
under a memory cap). pages.py and home.py fill the frame.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from urllib.parse import quote

STYLE = """
:root{--fg:#1b1f24;--muted:#4a5360;--line:#d0d7de;--soft:#f3f5f7;--link:#0a55c2;
--bar:#1f2a37;--warn-fg:#8d1a14;--warn-bg:#fdeceb;--ok-fg:#0f5c2e;--ok-bg:#e3f4e9}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;color:var(--fg);background:#fff;
font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif}
a{color:var(--link)}
a:focus-visible,button:focus-visible,input:focus-visible{outline:3px solid #c25e00;
outline-offset:2px}
.skip{position:absolute;left:-999px;top:0;background:#fff;padding:.5rem}
.skip:focus{left:.5rem}
.top{background:var(--bar);color:#fff;padding:.6rem 1rem;display:flex;gap:.75rem;
align-items:baseline;flex-wrap:wrap}
.top .brand{font-weight:700;font-size:1.1rem;color:#fff;text-decoration:none}
.top .brand:hover{text-decoration:underline}
.top .role{color:#d6dde6}
.crumbs{background:var(--soft);border-bottom:1px solid var(--line)}
.crumbs ol{list-style:none;margin:0 auto;max-width:76rem;padding:.5rem 1rem;display:flex;
flex-wrap:wrap;gap:.3rem}
.crumbs li{overflow-wrap:anywhere}
.crumbs li+li::before{content:"/";margin-right:.3rem;color:var(--muted)}
main{display:block;max-width:76rem;margin:0 auto;padding:1rem 1rem 3rem}
h1{font-size:1.75rem;line-height:1.25;margin:.5rem 0;overflow-wrap:anywhere}
h2{font-size:1.3rem;margin:1.75rem 0 .6rem}
h3{font-size:1.1rem;margin:1.25rem 0 .4rem}
.sub,.meta{color:var(--muted);margin:.25rem 0}
.summary{font-size:1.1rem;margin:.25rem 0 .75rem}
.badge{display:inline-block;font-size:.8rem;font-weight:600;line-height:1.4;
padding:.05rem .5rem;border-radius:1rem;border:1px solid var(--line);background:var(--soft);
color:var(--fg);vertical-align:middle}
.badge.yanked{background:var(--warn-bg);color:var(--warn-fg);border-color:#f0b4ae}
.badge.latest{background:var(--ok-bg);color:var(--ok-fg);border-color:#a6d8b8}
.yank-reason{color:var(--warn-fg);margin:.25rem 0}
.version{color:var(--muted);font-weight:400}
.facts{list-style:none;padding:0;margin:.5rem 0;display:flex;flex-wrap:wrap;gap:.25rem 1.5rem;
color:var(--muted)}
.facts strong{color:var(--fg)}
form.filter{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;margin:1rem 0}
form.filter label{font-weight:600;flex-basis:100%}
form.filter input{font:inherit;padding:.4rem .6rem;border:1px solid #6b7480;border-radius:4px;
min-width:0;flex:1 1 12rem;max-width:24rem}
form.filter button{font:inherit;padding:.4rem 1rem;border:1px solid var(--bar);
border-radius:4px;background:var(--bar);color:#fff;cursor:pointer}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.5rem;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:.9rem;color:var(--muted);border-bottom-width:2px}
td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
.filename{font-weight:600;overflow-wrap:anywhere}
.hash{display:block;font:.78rem/1.4 ui-monospace,"DejaVu Sans Mono",monospace;
color:var(--muted);word-break:break-all}
code,pre{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace}
pre{background:var(--soft);border:1px solid var(--line);border-radius:4px;padding:.6rem .75rem;
overflow-x:auto;font-size:.85rem;line-height:1.45}
.snippet code{white-space:pre-wrap;overflow-wrap:anywhere}
.note{font-size:.9rem;color:var(--muted)}
.empty{padding:1rem;background:var(--soft);border-radius:4px}
.readme{overflow-wrap:anywhere;border:1px solid var(--line);border-radius:6px;padding:0 1rem .75rem}
.readme img{max-width:100%;height:auto}
.readme table{display:block;overflow-x:auto}
.readme h1{font-size:1.4rem}.readme h2{font-size:1.2rem}
.release{border-top:1px solid var(--line);padding-top:.25rem}
.release h3{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center}
.visually-hidden{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);
white-space:nowrap}
@media (min-width:62rem){
.layout{display:grid;grid-template-columns:minmax(0,1fr) 24rem;grid-template-rows:auto auto 1fr;
gap:0 2.5rem}
.layout>.install{grid-column:2;grid-row:1}
.layout>.publish{grid-column:2;grid-row:2}
.layout>.content{grid-column:1;grid-row:1/span 3}
}
@media (max-width:40rem){
h1{font-size:1.5rem}
table.cards thead{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}
table.cards,table.cards tbody,table.cards tr,table.cards td{display:block;width:100%}
table.cards tr{border:1px solid var(--line);border-radius:6px;margin:0 0 .75rem;
padding:.35rem .75rem}
table.cards td{border:0;padding:.2rem 0;display:grid;grid-template-columns:8rem minmax(0,1fr);
gap:.5rem}
table.cards td::before{content:attr(data-label);font-weight:600;color:var(--muted)}
table.cards td>.badge{justify-self:start}
}
""".strip()
# The Content-Security-Policy allows this stylesheet by its hash: no other
# style, no script, no frame; README images may come from https URLs.
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'self' https: data:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class SiteUrls:
    """Where things are on this registry.

    *links* prefixes links between pages and to files: '' (host-relative
    paths) or the configured base_url. *origin* is this registry's absolute
    URL, for the snippets people copy into a shell or a config file.
    """

    links: str
    origin: str

    def project_packages(self, path: str) -> str:
        return f"{self.links}/{quote(path)}/-/packages"

    def package(self, path: str, name: str) -> str:
        return f"{self.project_packages(path)}/{quote(name)}"

    def group_packages(self, path: str) -> str:
        return f"{self.links}/groups/{quote(path)}/-/packages"

    def project_api(self, project_id: int, *, absolute: bool = False) -> str:
        root = self.origin if absolute else self.links
        return f"{root}/api/v4/projects/{project_id}/packages/pypi"

    def group_api(self, group_id: int) -> str:
        return f"{self.origin}/api/v4/groups/{group_id}/-/packages/pypi"

    def home(self) -> str:
        return f"{self.links}/"

    def sign_in(self) -> str:
        return f"{self.links}/?sign-in"

    def favicon(self) -> str:
        return f"{self.links}/favicon.ico"


def escape_html(value: object) -> str:
    """*value* as text for HTML content and double-quoted attributes."""
    return escape(str(value), quote=True)


_e = escape_html


def time_element(moment: datetime) -> str:
    """A `<time>` in UTC, machine-readable in its attribute."""
    utc = moment.astimezone(UTC)
    return (f'<time datetime="{utc.strftime("%Y-%m-%dT%H:%M:%SZ")}">'
            f'{utc.strftime("%Y-%m-%d %H:%M")} UTC</time>')


def visibility_badge(public: bool) -> str:
    return '<span class="badge">Public</span>' if public else '<span class="badge">Private</span>'


def page(urls: SiteUrls, title: str, crumbs: Sequence[tuple[str, str | None]], body: str
         ) -> bytes:
    """A whole page: *body* in the frame, *crumbs* as (label, link or None for this page).

    The brand links to the home page. The icon is named explicitly so that
    behind a base_url with a path, browsers ask for ours and not the
    origin's root /favicon.ico.
    """
    items = "".join(
        f'<li><a href="{_e(href)}">{_e(label)}</a></li>' if href is not None
        else f'<li aria-current="page">{_e(label)}</li>'
        for label, href in crumbs
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="same-origin">\n'
        f'<link rel="icon" href="{_e(urls.favicon())}" type="image/x-icon">\n'
        f"<title>{_e(title)} · pypireg</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        '<a class="skip" href="#pypireg-main">Skip to content</a>\n'
        f'<header class="top"><a class="brand" href="{_e(urls.home())}">pypireg</a>'
        '<span class="role">Package registry</span></header>\n'
        f'<nav class="crumbs" aria-label="Breadcrumb"><ol>{items}</ol></nav>\n'
        f'<main id="pypireg-main">\n{body}\n</main>\n</body>\n</html>\n'
    ).encode()
