"""The Packages pages in a real browser: the real daemon, twine uploads, headless Chromium.

Needs Debian's `chromium` and `chromium-driver` (/usr/bin/chromium,
/usr/bin/chromedriver) and selenium. Without them these tests skip, except
in CI (the CI variable set), where a missing browser is a failure.
Screenshots (375 px phone, 1280 px desktop) go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.distributions import wheel_bytes, wheel_filename, write
from tests.support.daemon import Daemon, running_daemon, twine

pytestmark = pytest.mark.e2e
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run",
)
README = """# Demo heading

The **demo** package, with a [link](https://example.org/) and code:

```python
import demo_pkg
print(demo_pkg.VALUE)
```

| option | meaning |
| ------ | ------- |
| `-v`   | verbose |
"""


def _require_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install '.[test]')")
    if not missing:
        return
    message = ("browser tests need Debian's chromium and chromium-driver and selenium; "
               f"missing: {', '.join(missing)} (apt-get install chromium chromium-driver)")
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def metadata(name: str, version: str, summary: str) -> str:
    return (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: {summary}\n"
            "Requires-Python: >=3.9\nDescription-Content-Type: text/markdown\n\n" + README)


@dataclass
class Site:
    daemon: Daemon
    public_id: str
    private_id: str
    read_token: str
    wheel: Path

    def url(self, path: str, token: str | None = None) -> str:
        if token is None:
            return self.daemon.url + path
        return f"http://__token__:{token}@127.0.0.1:{self.daemon.port}{path}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    _require_browser()
    with running_daemon("pypireg-e2e-ui-") as daemon:
        daemon.cli("group", "create", "acme", "--public")
        public_id = daemon.cli("project", "create", "acme/tools", "--public").stdout.strip()
        private_id = daemon.cli("project", "create", "acme/private").stdout.strip()
        write_token = daemon.cli("token", "create", "--project", public_id, "--scope", "write",
                                 "--description", "release CI").stdout.splitlines()[-1]
        private_write = daemon.cli("token", "create", "--project", private_id, "--scope",
                                   "write").stdout.splitlines()[-1]
        read_token = daemon.cli("token", "create", "--project", private_id, "--scope", "read"
                                ).stdout.splitlines()[-1]
        dists = tmp_path_factory.mktemp("ui-dists")

        def wheel(name: str, version: str, summary: str = "A demo package") -> Path:
            data = wheel_bytes(name, version, metadata=metadata(name, version, summary))
            return write(dists, wheel_filename(name, version), data)

        public_files = [wheel("demo-pkg", v) for v in ("1.0", "1.1", "2.0")]
        public_files.append(wheel("other-lib", "0.1", "Another library"))
        result = twine(daemon, public_id, write_token, *public_files)
        assert result.returncode == 0, result.stdout + result.stderr
        result = twine(daemon, private_id, private_write, wheel("secret-pkg", "1.0", "Secret"))
        assert result.returncode == 0, result.stdout + result.stderr
        daemon.cli("yank", public_id, "demo-pkg", "2.0", "--reason", "Broken build")
        yield Site(daemon, public_id, private_id, read_token, public_files[1])


@pytest.fixture
def browser(site: Site, tmp_path: Path) -> Iterator[Any]:
    """A fresh headless Chromium (its own profile: no cached credentials)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    options.add_argument("--window-size=1280,900")
    # Network events, to read response status codes.
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER),
                      log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def statuses(driver: Any) -> dict[str, int]:
    """The last status of each document loaded since the previous call, by URL."""
    seen = {}
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if (message["method"] == "Network.responseReceived"
                and message["params"]["type"] == "Document"):
            response = message["params"]["response"]
            seen[response["url"]] = int(response["status"])
    return seen


def wait_for_url(driver: Any, ending: str) -> None:
    """Wait for a navigation (a click, a form submission) to reach a URL ending so."""
    from selenium.webdriver.support.wait import WebDriverWait

    WebDriverWait(driver, 15).until(lambda d: d.current_url.endswith(ending)
                                    and d.execute_script("return document.readyState")
                                    == "complete")


def screenshot(driver: Any, name: str, width: int) -> Path:
    """A full-page PNG at *width* CSS pixels (a phone below 600); checks nothing overflows."""
    metrics = {"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": width < 600}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        scroll_width = driver.execute_script("return document.documentElement.scrollWidth")
        assert scroll_width <= width, f"{name}: the page is {scroll_width}px wide at {width}px"
        height = driver.execute_script("return document.documentElement.scrollHeight")
        metrics["height"] = min(int(height), 8000)
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}-{width}.png"
        assert driver.save_screenshot(str(path))
        assert path.read_bytes().startswith(b"\x89PNG")
        return path
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_list_page_and_filter(site: Site, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(site.url("/acme/tools/-/packages"))
    assert statuses(browser)[site.url("/acme/tools/-/packages")] == 200
    assert browser.find_element(By.TAG_NAME, "h1").text == "Packages"
    for landmark in ("header", "nav", "main"):
        assert browser.find_elements(By.TAG_NAME, landmark)
    rows = browser.find_elements(By.CSS_SELECTOR, "table.packages tbody tr")
    cells = [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]
    assert [c[:3] for c in cells] == [["demo-pkg", "1.1", "3"], ["other-lib", "0.1", "1"]]
    assert all(c[3].endswith("UTC") for c in cells)
    screenshot(browser, "list", 375)
    screenshot(browser, "list", 1280)

    field = browser.find_element(By.CSS_SELECTOR, "form[role=search] input[name=q]")
    label = browser.find_element(By.CSS_SELECTOR, f"label[for={field.get_attribute('id')}]")
    assert label.text == "Filter by name"
    field.send_keys("other")
    browser.find_element(By.CSS_SELECTOR, "form[role=search] button[type=submit]").click()
    wait_for_url(browser, "/acme/tools/-/packages?q=other")
    rows = browser.find_elements(By.CSS_SELECTOR, "table.packages tbody tr")
    assert [r.find_element(By.TAG_NAME, "a").text for r in rows] == ["other-lib"]
    assert browser.find_element(By.NAME, "q").get_attribute("value") == "other"

    # The group page: the public project's packages, never the private one's.
    browser.get(site.url("/groups/acme/-/packages"))
    page = browser.find_element(By.TAG_NAME, "main").text
    assert "demo-pkg" in page and "acme/tools" in page and "secret-pkg" not in page
    screenshot(browser, "group", 1280)


def test_package_page(site: Site, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(site.url("/acme/tools/-/packages"))
    browser.find_element(By.LINK_TEXT, "demo-pkg").click()
    wait_for_url(browser, "/acme/tools/-/packages/demo-pkg")
    assert browser.current_url == site.url("/acme/tools/-/packages/demo-pkg")
    assert browser.find_element(By.TAG_NAME, "h1").text == "demo-pkg 1.1"
    versions = [h.get_attribute("id").removeprefix("pypireg-v-")
                for h in browser.find_elements(By.CSS_SELECTOR, ".release h3")]
    assert versions == ["2.0", "1.1", "1.0"]
    yanked = browser.find_element(By.CSS_SELECTOR, ".release:first-of-type")
    assert "yanked" in yanked.find_element(By.TAG_NAME, "h3").text
    assert yanked.find_element(By.CLASS_NAME, "yank-reason").text == "Yanked: Broken build"
    # The README, rendered from Markdown (heading, code block, table).
    readme = browser.find_element(By.CSS_SELECTOR, ".readme")
    assert readme.find_element(By.TAG_NAME, "h1").text == "Demo heading"
    assert "print(demo_pkg.VALUE)" in readme.find_element(By.TAG_NAME, "pre").text
    assert readme.find_element(By.TAG_NAME, "table").text.startswith("option meaning")
    # Install and publish snippets with this registry's real URL.
    api = f"{site.daemon.url}/api/v4/projects/{site.public_id}/packages/pypi"
    snippets = [s.text for s in browser.find_elements(By.CSS_SELECTOR, "pre.snippet")]
    assert f'pip install --index-url "{api}/simple" demo-pkg==1.1' in snippets
    assert f'uv pip install --index-url "{api}/simple" demo-pkg==1.1' in snippets
    assert any(f"repository = {api}\nusername = __token__" in s for s in snippets)
    # Files: the download link is the simple index's, and serves the wheel.
    link = browser.find_element(By.LINK_TEXT, site.wheel.name)
    sha = hashlib.sha256(site.wheel.read_bytes()).hexdigest()
    assert link.get_attribute("href") == f"{api}/files/{sha}/{site.wheel.name}"
    with urllib.request.urlopen(link.get_attribute("href"), timeout=10) as resp:
        assert resp.read() == site.wheel.read_bytes()
    row = link.find_element(By.XPATH, "./ancestor::tr")
    assert f"sha256: {sha}" in row.text
    assert "release CI" in row.text
    assert re.search(r"\b\d+(\.\d)? (B|KiB)\b", row.text), row.text
    screenshot(browser, "package", 375)
    screenshot(browser, "package", 1280)


def test_private_project_needs_a_token(site: Site, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    url = site.url("/acme/private/-/packages")
    browser.get(url)
    assert statuses(browser)[url] == 401
    assert "secret-pkg" not in browser.page_source
    browser.get(site.url("/acme/private/-/packages/secret-pkg"))
    assert "secret-pkg" not in browser.find_element(By.TAG_NAME, "body").text

    # Credentials in the URL, as pip takes them; the browser then keeps them.
    with_credentials = site.url("/acme/private/-/packages", site.read_token)
    browser.get(with_credentials)
    assert statuses(browser)[with_credentials] == 200
    assert "Private" in browser.find_element(By.CSS_SELECTOR, "p.sub").text
    browser.find_element(By.LINK_TEXT, "secret-pkg").click()
    wait_for_url(browser, "/acme/private/-/packages/secret-pkg")
    assert browser.find_element(By.TAG_NAME, "h1").text == "secret-pkg 1.0"
    snippet = browser.find_element(By.CSS_SELECTOR, "pre.snippet").text
    assert (f"http://__token__:${{PYPIREG_TOKEN}}@127.0.0.1:{site.daemon.port}/api/v4/projects/"
            f"{site.private_id}/packages/pypi/simple") in snippet
    assert site.read_token not in browser.page_source
    screenshot(browser, "private-package", 1280)


def test_private_project_with_basic_header(site: Site, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    credentials = base64.b64encode(f"__token__:{site.read_token}".encode()).decode()
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders",
                            {"headers": {"Authorization": f"Basic {credentials}"}})
    url = site.url("/acme/private/-/packages/secret-pkg")
    browser.get(url)
    assert statuses(browser)[url] == 200
    assert browser.find_element(By.TAG_NAME, "h1").text == "secret-pkg 1.0"


def tab(driver: Any) -> Any:
    """Press Tab once; the element that has the focus then."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    ActionChains(driver).send_keys(Keys.TAB).perform()
    return driver.switch_to.active_element


def test_home_page(site: Site, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(site.url("/"))
    assert statuses(browser)[site.url("/")] == 200
    assert browser.title == "Projects · pypireg"
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
    assert browser.find_element(By.TAG_NAME, "h1").text == "Projects"
    for landmark in ("header", "nav", "main"):
        assert browser.find_elements(By.TAG_NAME, landmark)
    table = browser.find_element(By.CSS_SELECTOR, "table.projects")
    assert table.find_element(By.TAG_NAME, "caption").get_attribute("textContent") == "Projects"
    assert [th.get_attribute("scope") for th in table.find_elements(By.TAG_NAME, "th")] == [
        "col"] * 3
    rows = [[td.text for td in row.find_elements(By.TAG_NAME, "td")]
            for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")]
    # The private project is not even named to an anonymous visitor.
    assert rows == [["acme/tools", "Public", "2"]]
    assert "acme/private" not in browser.page_source
    screenshot(browser, "home", 375)
    screenshot(browser, "home", 1280)

    # Keyboard: the skip link comes first and lands on the content; then the
    # brand (home), the sign-in link and the project, which Enter opens.
    skip = tab(browser)
    assert skip.text == "Skip to content" and skip.is_displayed()
    skip.send_keys(Keys.ENTER)
    assert browser.current_url.endswith("/#pypireg-main")
    browser.get(site.url("/"))
    order = [tab(browser).text for _ in range(4)]
    assert order == ["Skip to content", "pypireg", "Sign in with a token", "acme/tools"]
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait_for_url(browser, "/acme/tools/-/packages")
    # Every page's brand leads back home.
    browser.find_element(By.CSS_SELECTOR, "header a.brand").click()
    wait_for_url(browser, "/")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Projects"


def test_sign_in_shows_the_private_projects_of_the_token(site: Site, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    # Without credentials: the challenge (headless Chromium holds the prompt
    # open, so the page shown on cancelling is checked in test_ui_home.py).
    browser.get(site.url("/?sign-in"))
    assert statuses(browser)[site.url("/?sign-in")] == 401
    assert "acme/private" not in browser.page_source

    # Credentials as the prompt would give them (in the URL, as pip takes
    # them): the token's projects are listed...
    browser.get(site.url("/?sign-in", site.read_token))
    wait_for_url(browser, "/?sign-in")

    def projects() -> list[str]:
        return [row.find_element(By.TAG_NAME, "td").text
                for row in browser.find_elements(By.CSS_SELECTOR, "table.projects tbody tr")]

    assert projects() == ["acme/private", "acme/tools"]
    assert "Your browser keeps the token" in browser.find_element(By.TAG_NAME, "main").text
    assert site.read_token not in browser.page_source
    screenshot(browser, "home-signed-in", 1280)
    # ... and the browser sends the token with every page of the registry from
    # then on. (Typed: links from a page whose URL holds credentials keep them,
    # and Chromium sends those only after a 401, which the home page never is.)
    browser.get(site.url("/"))
    assert projects() == ["acme/private", "acme/tools"]
    browser.find_element(By.LINK_TEXT, "acme/private").click()
    wait_for_url(browser, "/acme/private/-/packages")
    assert statuses(browser)[site.url("/acme/private/-/packages")] == 200


def test_paths_and_upload_links_lead_to_the_pages(site: Site, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(site.url("/acme/tools"))
    wait_for_url(browser, "/acme/tools/-/packages")
    browser.get(site.url("/acme"))
    wait_for_url(browser, "/groups/acme/-/packages")
    # What hatch prints after an upload: the page, scrolled to that version.
    browser.get(site.daemon.api(site.public_id) + "/demo-pkg/1.1/")
    wait_for_url(browser, "/acme/tools/-/packages/demo-pkg#pypireg-v-1.1")
    target = browser.execute_script("return document.querySelector(':target')")
    assert target.get_attribute("id") == "pypireg-v-1.1" and target.is_displayed()
    # Scrolled to it (as far as the page's length allows).
    top, scrolled, height = browser.execute_script(
        "return [arguments[0].getBoundingClientRect().top, window.scrollY, window.innerHeight]",
        target)
    assert 0 <= top < height and scrolled > 0
    # What flit prints: the package's page.
    browser.get(site.daemon.api(site.public_id) + "/Other_Lib")
    wait_for_url(browser, "/acme/tools/-/packages/other-lib")
    assert browser.find_element(By.TAG_NAME, "h1").text == "other-lib 0.1"
    # A private project's link says nothing without a token.
    url = site.daemon.api(site.private_id) + "/secret-pkg/1.0/"
    browser.get(url)
    assert statuses(browser)[url] == 401
    assert "secret-pkg" not in browser.find_element(By.TAG_NAME, "body").text


def test_favicon(site: Site, browser: Any) -> None:
    browser.get(site.url("/favicon.ico"))
    assert statuses(browser)[site.url("/favicon.ico")] == 200
    # Chromium decodes it: its image document shows the 32 px frame.
    size = browser.execute_script(
        "const i = document.images[0]; return [i.complete, i.naturalWidth, i.naturalHeight]")
    assert size == [True, 32, 32]
