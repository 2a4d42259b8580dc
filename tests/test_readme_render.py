"""README rendering: once per README, in a bounded worker process, plain text on any failure.

The renderer is driven directly (with a reactor that counts the worker
processes it starts, a Clock for the time budget, and stand-in workers that
sleep, crash or babble) and through the real site (the page, and the index
answering while a README renders).
"""

from __future__ import annotations

import os
import sys
from base64 import b64encode
from html import escape
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor as _reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock, deferLater
from twisted.logger import globalLogPublisher

from pypireg.http.web.readme import ReadmeLimits, ReadmeRenderer, description_key
from pypireg.storage import descriptions as description_store
from pypireg.storage import projects as project_store
from pypireg.storage import tokens as token_store
from pypireg.storage.releases import Description
from tests.distributions import upload_form, wheel_bytes, wheel_filename

reactor: Any = _reactor

MARKDOWN = Description("# Demo heading\n\nSome *emphasis*.\n", "text/markdown")
RST = Description("Demo heading\n============\n\nSome *emphasis*.\n", "text/x-rst")
SCRIPT = "<script>alert('readme')</script>"
SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


class CountingReactor:
    """The real reactor's spawnProcess, counting the processes it starts."""

    def __init__(self) -> None:
        self.spawned: list[Any] = []

    def spawnProcess(self, protocol: Any, executable: str, args: Any, env: Any = None,
                     path: Any = None, **kw: Any) -> Any:
        transport = reactor.spawnProcess(protocol, executable, args, env=env, path=path, **kw)
        self.spawned.append(transport)
        return transport

    async def spawned_one(self, timeout: float = 10.0) -> Any:
        """The first process started (waits for it)."""
        waited = 0.0
        while not self.spawned:
            assert waited < timeout, "no worker process started"
            await deferLater(reactor, 0.01, lambda: None)
            waited += 0.01
        return self.spawned[0]


class Warnings:
    """The warnings logged while the test runs."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("log_level") is not None and event["log_level"].name == "warn":
            self.events.append(event)


@pytest.fixture
def warnings() -> Any:
    observer = Warnings()
    globalLogPublisher.addObserver(observer)
    yield observer
    globalLogPublisher.removeObserver(observer)


def renderer(db: Any, spawner: Any, limits: ReadmeLimits | None = None, **kw: Any
             ) -> ReadmeRenderer:
    kw.setdefault("clock", reactor)
    return ReadmeRenderer(spawner, db, limits or ReadmeLimits(), **kw)


def view(readme: ReadmeRenderer, description: Description, name: str = "demo-pkg",
         version: str = "1.0") -> Deferred[str]:
    return Deferred.fromCoroutine(readme.html(description, name, version))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("description", [MARKDOWN, RST], ids=["markdown", "rst"])
async def test_a_readme_is_rendered_once_and_kept(db: Any, description: Description) -> None:
    spawner = CountingReactor()
    html = await view(renderer(db, spawner), description)
    assert "<h1" in html and "<em>emphasis</em>" in html
    assert len(spawner.spawned) == 1
    kept = await description_store.get_rendered(db, description_key(description))
    assert kept is not None and kept.how == "rendered" and kept.html == html
    # Another view, even from a fresh renderer (a restarted daemon), reads the table.
    again = CountingReactor()
    assert await view(renderer(db, again), description) == html
    assert await view(renderer(db, spawner), description) == html
    assert again.spawned == [] and len(spawner.spawned) == 1


@pytest_twisted.ensureDeferred
async def test_the_key_is_the_source_and_its_type(db: Any) -> None:
    spawner = CountingReactor()
    readme = renderer(db, spawner)
    await view(readme, MARKDOWN, "one", "1.0")
    # Another package or version with the same README shares its rendering...
    await view(readme, MARKDOWN, "two", "2.0")
    assert len(spawner.spawned) == 1
    # ...another README, or the same text as another type, does not.
    as_text = Description(MARKDOWN.text, "text/plain")
    assert "<h1" not in await view(readme, as_text)
    await view(readme, Description(MARKDOWN.text + "More.\n", "text/markdown"))
    assert len(spawner.spawned) == 3
    assert description_key(Description("x", None)) == description_key(Description("x", ""))


@pytest_twisted.ensureDeferred
async def test_markup_the_renderer_refuses_is_plain_text(db: Any) -> None:
    refused = Description(f".. raw:: html\n\n   {SCRIPT}\n", "text/x-rst")
    html = await view(renderer(db, CountingReactor()), refused)
    assert "<script" not in html and "&lt;script&gt;" in html
    kept = await description_store.get_rendered(db, description_key(refused))
    assert kept is not None and kept.how == "plain"


@pytest_twisted.ensureDeferred
async def test_a_readme_over_the_size_limit_is_plain_text_without_a_process(
        db: Any, warnings: Warnings) -> None:
    spawner = CountingReactor()
    big = Description("# Big\n\n" + SCRIPT * 20, "text/markdown")
    html = await view(renderer(db, spawner, ReadmeLimits(max_source=100)), big, "big", "3.0")
    assert spawner.spawned == []
    assert "<script" not in html and "&lt;script&gt;" in html
    assert "too long to render" in html and html.count("alert") < 20
    kept = await description_store.get_rendered(db, description_key(big))
    assert kept is not None and kept.how == "too_large" and kept.html == html
    [warning] = warnings.events
    assert (warning["name"], warning["version"], warning["how"]) == ("big", "3.0", "too_large")


@pytest_twisted.ensureDeferred
async def test_a_render_over_its_time_budget_is_killed_and_the_fallback_kept(
        db: Any, warnings: Warnings) -> None:
    spawner, clock = CountingReactor(), Clock()
    readme = renderer(db, spawner, ReadmeLimits(seconds=0.2), clock=clock, worker=SLEEPER)
    description = Description(f"# Slow\n\n{SCRIPT}\n", "text/markdown")
    page = view(readme, description, "slow", "1.0")
    worker = await spawner.spawned_one()
    clock.advance(0.1)
    assert not page.called and alive(worker.pid)
    clock.advance(0.1)
    html = await page
    assert html == f"<pre>{escape(description.text)}</pre>"
    assert worker.pid is None  # reaped: it was killed, not left behind
    assert "<script" not in html
    kept = await description_store.get_rendered(db, description_key(description))
    assert kept is not None and kept.how == "timeout"
    [warning] = warnings.events
    assert (warning["name"], warning["how"]) == ("slow", "timeout")
    assert "longer than 0.2 s" in warning["reason"]
    # Kept: the next view does not try again.
    assert await view(readme, description) == html
    assert len(spawner.spawned) == 1


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(("worker", "how", "reason"), [
    ([sys.executable, "-c", "import sys; sys.stderr.write('boom\\n'); sys.exit(3)"],
     "failed", "exited with status 3: boom"),
    ([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"],
     "failed", "killed by signal 15"),
    ([sys.executable, "-c", "print('<script>not json')"], "failed", "not JSON"),
    ([sys.executable, "-c", "import sys; sys.stdout.write('x' * 100000)"],
     "too_large", "over 4096 bytes"),
    ([sys.executable, "-c", "import sys; sys.stdout.write('{\"html\": 1}')"],
     "failed", "lacks html"),
    (["/nonexistent/python"], "failed", "exited with status 1"),
], ids=["exit", "signal", "garbage", "too-much-output", "bad-answer", "missing"])
async def test_a_failing_worker_falls_back_to_plain_text(
        db: Any, warnings: Warnings, worker: list[str], how: str, reason: str) -> None:
    spawner = CountingReactor()
    readme = renderer(db, spawner, ReadmeLimits(max_html=4096), worker=worker)
    description = Description(f"# Title <b>\n\n{SCRIPT}\n", "text/markdown")
    html = await view(readme, description, "crashy", "0.1")
    assert html.startswith("<pre># Title &lt;b&gt;") and "<script" not in html
    kept = await description_store.get_rendered(db, description_key(description))
    assert kept is not None and kept.how == how
    [warning] = warnings.events
    assert (warning["name"], warning["version"], warning["how"]) == ("crashy", "0.1", how)
    assert reason in warning["reason"]


@pytest_twisted.ensureDeferred
async def test_the_real_worker_is_held_to_its_memory_cap(db: Any, warnings: Warnings) -> None:
    # A README docutils needs some 90 MiB for, under a 48 MiB cap.
    text = "".join(f"Section {i}\n{'-' * 12}\n\nSome *text* and ``code``.\n\n"
                   for i in range(3000))
    description = Description(text, "text/x-rst")
    html = await view(renderer(db, CountingReactor(), ReadmeLimits(memory=48 << 20)),
                      description)
    assert html.startswith("<pre>Section 0")
    kept = await description_store.get_rendered(db, description_key(description))
    assert kept is not None and kept.how == "failed"
    [warning] = warnings.events
    assert "MemoryError" in warning["reason"], warning["reason"]


@pytest_twisted.ensureDeferred
async def test_concurrent_first_views_share_one_render(db: Any) -> None:
    spawner = CountingReactor()
    readme = renderer(db, spawner)
    pages = [view(readme, MARKDOWN) for _ in range(4)]
    results = [await page for page in pages]
    assert len(spawner.spawned) == 1
    assert len(set(results)) == 1 and "<h1" in results[0]


@pytest_twisted.ensureDeferred
async def test_a_view_that_goes_away_does_not_stop_the_render(db: Any) -> None:
    spawner, clock = CountingReactor(), Clock()
    readme = renderer(db, spawner, ReadmeLimits(seconds=1.0), clock=clock, worker=SLEEPER)
    first, second = view(readme, MARKDOWN), view(readme, MARKDOWN)
    await spawner.spawned_one()
    # Both views wait on the one render (not on their cache lookups) before
    # the first goes away; on a busy machine the second may still be looking.
    for _ in range(500):
        if readme._in_flight.waiting() == 2:
            break
        await deferLater(reactor, 0.01, lambda: None)
    first.cancel()  # as Klein does when the client disconnects
    with pytest.raises(CancelledError):
        await first
    assert not second.called
    clock.advance(1.0)
    assert (await second).startswith("<pre>")
    assert len(spawner.spawned) == 1


@pytest_twisted.ensureDeferred
async def test_a_busy_renderer_shows_plain_text_for_now(db: Any, warnings: Warnings) -> None:
    spawner, clock = CountingReactor(), Clock()
    readme = renderer(db, spawner, ReadmeLimits(seconds=1.0, concurrent=1, waiting=0),
                      clock=clock, worker=SLEEPER)
    slow = view(readme, MARKDOWN)
    await spawner.spawned_one()
    other = Description(f"Other\n\n{SCRIPT}\n", "text/plain")
    html = await view(readme, other, "other", "1.0")
    assert html.startswith("<pre>Other") and "<script" not in html
    assert len(spawner.spawned) == 1
    # Not kept: once the renderer has room, the next view renders it.
    assert await description_store.get_rendered(db, description_key(other)) is None
    assert [e["name"] for e in warnings.events] == ["other"]
    clock.advance(1.0)
    await slow


# Through the site.

async def publish(reg: Any, name: str, readme: str, content_type: str) -> Any:
    """A public project with *name* 1.0 uploaded, its METADATA carrying *readme*."""
    project = await project_store.create_project(reg.db, "acme", public=True)
    _, write = await token_store.create_token(reg.db, project.id, "write")
    metadata = (f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\nSummary: A demo\n"
                f"Description-Content-Type: {content_type}\n\n{readme}")
    wheel = wheel_bytes(name, "1.0", metadata=metadata)
    ctype, body = upload_form(name, "1.0", wheel_filename(name, "1.0"), wheel)
    auth = b"Basic " + b64encode(f"__token__:{write}".encode())
    resp = await treq.post(reg.api(project.id), data=body,
                           headers={b"Content-Type": [ctype], b"Authorization": [auth]})
    assert resp.code == 201, await resp.text()
    return project


async def get_page(reg: Any, name: str) -> str:
    resp = await treq.get(f"{reg.url}/acme/-/packages/{name}")
    assert resp.code == 200
    return (await resp.content()).decode()


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("content_type", ["text/markdown", "text/x-rst", "text/plain"])
async def test_script_never_reaches_the_page(registry: Any, content_type: str) -> None:
    readme = f"Title\n=====\n\n{SCRIPT}\n\n.. raw:: html\n\n   {SCRIPT}\n"
    await publish(registry, "demo-pkg", readme, content_type)
    for _ in range(2):  # rendered, then kept
        page = await get_page(registry, "demo-pkg")
        assert "<script" not in page and "Title" in page


@pytest_twisted.ensureDeferred
async def test_an_oversized_readme_on_the_page(registry: Any) -> None:
    readme = "# Huge\n\n" + (SCRIPT + "\n") * ((1 << 20) // len(SCRIPT) + 1)
    await publish(registry, "huge-pkg", readme, "text/markdown")
    page = await get_page(registry, "huge-pkg")
    assert "<script" not in page and "too long to render" in page
    assert page.count("alert") < readme.count("alert")


def readme_workers() -> list[int]:
    """Our worker processes still running (children of this test process)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid() and b"readme_worker" in cmdline:
            found.append(int(entry.name))
    return found


@pytest_twisted.ensureDeferred
async def test_the_index_answers_while_a_readme_renders(registry: Any) -> None:
    # Ordinary reStructuredText that takes docutils a few seconds.
    readme = "".join(
        f"Section {i}\n{'-' * 12}\n\nSome *emphasis*, ``code`` and a"
        f" `link <https://example.com/{i}>`_.\n\n- one\n- two\n\n"
        ".. code-block:: python\n\n    def f(x):\n        return x  # comment\n\n"
        for i in range(600))
    project = await publish(registry, "big-pkg", readme, "text/x-rst")
    page = Deferred.fromCoroutine(get_page(registry, "big-pkg"))
    waited = 0.0
    while not readme_workers():
        assert waited < 10 and not page.called, "the README worker did not start"
        await deferLater(reactor, 0.01, lambda: None)
        waited += 0.01
    started = reactor.seconds()
    resp = await treq.get(registry.api(project.id) + "/simple/big-pkg/")
    assert resp.code == 200 and b"big_pkg-1.0-py3-none-any.whl" in await resp.content()
    index_seconds = reactor.seconds() - started
    # The index answered while the worker was still rendering.
    assert not page.called and readme_workers(), index_seconds
    assert index_seconds < 1.0
    html = await page
    assert "<h1" in html or "Section 599" in html
    assert "<pre>Section 0" not in html  # rendered, not a fallback
