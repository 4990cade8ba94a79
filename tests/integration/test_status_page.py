"""The status page in a real headless Chromium (Debian's, through its chromedriver)
against a real master and 8 simulated nodes: the page loads with the link
``beostat web`` prints, the grid shows the nodes and their states, a running
job's fill progress appears and completes without a reload (server-sent
events), and another user's job page is refused. A screenshot is saved in the
test's tmp dir; with ``BEOLAUNCH_STATUS_SCREENSHOT=PATH`` it is copied there
too (docs/status-page.png for the README is made this way)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from launcher.master.statustoken import issue
from tests.integration import vcluster as vc
from tests.integration.masterproc import Master, running_master
from tests.integration.test_simnodes import NOBODY, ROOT, simulated

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
NODES = 8
#: Seconds each simulated object takes to arrive: a fill of the job's 164
#: objects (/bin/true's closure and the master's /etc) then lasts about 8 s,
#: long enough for the page (a snapshot a second) to show it under way.
OBJECT_DELAY_S = "0.05"
WAIT_S = 60.0
T = TypeVar("T")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="runs beosub and beostat as nobody"),
]


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = WAIT_S) -> T:
    """``probe()``'s first true answer; fails naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("chromium and chromium-driver are not installed: run make deps")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)  # --no-sandbox: the tests run as root
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def as_nobody(m: Master, top: Path, *argv: str) -> list[str]:
    m.config.state_dir.chmod(0o755)
    return [
        "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        *argv,
    ]


def nobody_env(m: Master, top: Path) -> dict[str, str]:
    return {**os.environ, "HOME": str(top), "BEOLAUNCH_CONFIG": str(m.config.path)}


# The page redraws every second: read it in one script, never through element
# handles (they go stale between a find and a read).
_TILES = """return Array.from(document.querySelectorAll('#grid .tile'),
    t => [t.dataset.node, t.classList[t.classList.length - 1]]);"""
_FILLS = """return Array.from(document.querySelectorAll('#jobs section.job'),
    s => [s.dataset.job, Array.from(s.querySelectorAll('li'),
        li => [li.className, Number(li.querySelector('progress').value)])]);"""


def tiles(driver: WebDriver) -> dict[str, str]:
    """node name -> its tile's state class."""
    return {name: state for name, state in driver.execute_script(_TILES)}


def fills(driver: WebDriver) -> dict[str, list[tuple[str, int]]]:
    """job id -> each node row's (class: filling/filled, percent) on the page."""
    return {job: [(c, int(v)) for c, v in rows] for job, rows in driver.execute_script(_FILLS)}


def ended_text(driver: WebDriver, job: str) -> str | None:
    """The heading of job ``job``'s block once the page shows it ended."""
    text: str | None = driver.execute_script(
        "const s = document.querySelector(`section.job.ended[data-job='${arguments[0]}']`);"
        "return s ? s.querySelector('h3').textContent : null;",
        job,
    )
    return text


def fill_rows(driver: WebDriver, job: str) -> list[str]:
    return [c for c, _pct in fills(driver).get(job, [])]


def partly_filled(driver: WebDriver, job: str) -> bool:
    """Whether a node of job ``job`` shows a fill well under way (20% to 99%)."""
    return any(20 <= pct < 100 for _c, pct in fills(driver).get(job, []))


def test_the_status_page_in_a_browser(top: Path, tmp_path: Path, browser: WebDriver) -> None:
    with running_master() as m, simulated(m, NODES, "--object-delay-s", OBJECT_DELAY_S):
        env = nobody_env(m, top)
        beostat = str(ROOT / ".venv" / "bin" / "beostat")
        link = subprocess.run(
            as_nobody(m, top, beostat, "web"), env=env, cwd=top, capture_output=True, text=True
        )
        assert link.returncode == 0, link.stderr
        url = link.stdout.strip()
        port = m.config.service("status").port
        assert url.startswith(f"http://127.0.0.1:{port}/login?token={NOBODY}.")

        browser.get(url)
        assert browser.current_url == f"http://127.0.0.1:{port}/"  # the token left the URL

        def all_up() -> dict[str, str] | None:
            found = tiles(browser)
            return found if len(found) == NODES and set(found.values()) == {"up"} else None

        states = wait_for("every node up on the grid", all_up)
        assert sorted(states) == [f"sim{i}" for i in range(NODES)]

        beosub = str(ROOT / ".venv" / "bin" / "beosub")
        job = subprocess.Popen(
            as_nobody(m, top, beosub, "-N", str(NODES), "--", "/bin/true"),
            env=env,
            cwd=top,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            job_id = wait_for("the job on the page", lambda: next(iter(fills(browser)), None))
            wait_for("a node part-filled", lambda: partly_filled(browser, job_id))
            browser.save_screenshot(str(tmp_path / "status-page.png"))
            wait_for("every node filled", lambda: set(fill_rows(browser, job_id)) == {"filled"})
            _out, err = job.communicate(timeout=WAIT_S)
        finally:
            if job.poll() is None:
                job.kill()
                job.wait()
        assert job.returncode == 0, err + m.new_log()
        said = wait_for("the job shown ended", lambda: ended_text(browser, job_id))
        assert "ended, exit 0" in said
        wait_for("the job gone from the page", lambda: not fill_rows(browser, job_id) or None)
        assert browser.execute_script("return document.body.dataset.live") == "yes"

        browser.get(f"http://127.0.0.1:{port}/jobs/{job_id}")  # its owner
        assert f"Job {job_id}" in browser.find_element(By.TAG_NAME, "h2").text
        assert "/bin/true" in browser.page_source

        browser.delete_all_cookies()  # another user, uid 1 (daemon)
        browser.get(f"http://127.0.0.1:{port}/login?token={issue(m.secret, 1)}")
        browser.get(f"http://127.0.0.1:{port}/jobs/{job_id}")
        assert browser.find_element(By.TAG_NAME, "h1").text == "Not your job"
        assert "/bin/true" not in browser.page_source
        assert f"belongs to uid {NOBODY}" in browser.page_source

    shot = tmp_path / "status-page.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    copy = os.environ.get("BEOLAUNCH_STATUS_SCREENSHOT")
    if copy:
        shutil.copyfile(shot, copy)


def test_the_status_page_shows_a_real_virtual_cluster(
    vcluster: vc.Clusters, browser: WebDriver
) -> None:
    """The same page over the real thing: two network-namespace nodes with real
    agents and caches (``beoctl cluster up``), a user's job on both seen on the
    page from its start to its exit, and its page with its manifest."""
    e = vcluster.e2e(2)
    link = subprocess.run(
        e.user_argv("beostat", "web"), cwd=e.work, capture_output=True, text=True, timeout=60
    )
    assert link.returncode == 0, link.stderr
    browser.get(link.stdout.strip())

    def both_up() -> dict[str, str] | None:
        found = tiles(browser)
        return found if len(found) == 2 and set(found.values()) == {"up"} else None

    names = sorted(wait_for("the cluster's two nodes up on the grid", both_up))
    assert names == sorted(n["name"] for n in e.json("beostat", "nodes"))

    job = e.beosub_bg("-N", "2", "--", "/bin/sh", "-c", "sleep 4")
    try:
        job_id = wait_for("the job on the page", lambda: next(iter(fills(browser)), None))
        said = wait_for("the job shown ended", lambda: ended_text(browser, job_id), 120)
        _out, err = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert job.returncode == 0, err
    assert "ended, exit 0" in said
    base = browser.current_url.rstrip("/")
    browser.get(f"{base}/jobs/{job_id}")
    assert f"Job {job_id}" in browser.find_element(By.TAG_NAME, "h2").text
    assert "/bin/sh" in browser.page_source
