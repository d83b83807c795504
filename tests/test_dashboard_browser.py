"""The served dashboard in headless Chromium: click through every page, screenshot each, and check that an
HTML/script completion appears as visible text and never runs (in st.code, and struck through in the
inline refinement diff, the one HTML view); and the same over the hostile runs folder of
tests/hostile_runs.py (payloads in every text field and name, corrupt files, links out of the folder).

Uses Debian's /usr/bin/chromium through playwright's python API (never `playwright install`); install it
with scripts/setup_browser.sh. Screenshots go to artifacts/screenshots/ (gitignored).
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from hostile_runs import PAYLOAD, PAYLOAD_RUN, PAYLOADS, SECRET, build_hostile_runs
from test_dashboard import SCRIPT, build_dashboard_runs, payload_near_miss_label

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("IGRPO_CHROMIUM", "/usr/bin/chromium")   # scripts/setup_browser.sh installs it
SHOTS = ROOT / "artifacts" / "screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
PAGES = [("Runs", "01_runs"), ("Curves", "02_curves"), ("Rollouts", "03_rollouts"),
         ("Near misses", "04_near_misses"), ("Evaluation", "05_evaluation"), ("Arms", "06_arms")]
DIFF = ".igrpo-diff"  # the inline refinement diff (dashboards/textdiff.inline_diff): the one HTML view


RUNS: list[Path] = []  # the fixture's runs directory, for labels computed from its records


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _need_chromium() -> None:
    if not Path(CHROMIUM).exists():
        msg = (f"{CHROMIUM} is missing: `bash scripts/setup_browser.sh` installs it with root or password-less "
               "sudo (apt-get install chromium); or set IGRPO_CHROMIUM to a Chromium binary")
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


@contextlib.contextmanager
def _serve(runs: Path, log: Path):
    """`streamlit run dashboards/app.py -- --runs RUNS` on a free port; yields its URL."""
    port = _free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", "dashboards/app.py", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--", "--runs", str(runs)]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"streamlit did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _need_chromium()
    runs = build_dashboard_runs(tmp_path_factory)
    RUNS[:] = [runs]
    with _serve(runs, tmp_path_factory.mktemp("streamlit") / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory):
    _need_chromium()
    hr = build_hostile_runs(tmp_path_factory.mktemp("hostile"))
    with _serve(hr.root, tmp_path_factory.mktemp("streamlit") / "server.log") as url:
        yield url, hr


def _settle(page, timeout_s: float = 30.0) -> None:
    """Wait until the script run is over (no 'running' status widget) and the DOM stops changing."""
    page.wait_for_selector('[data-testid="stSidebar"]', timeout=timeout_s * 1000)
    deadline = time.time() + timeout_s
    quiet = 0
    last = None
    while time.time() < deadline:
        running = page.locator('[data-testid="stStatusWidget"]').count() > 0
        size = page.evaluate("document.body.innerText.length")
        quiet = quiet + 1 if (not running and size == last) else 0
        last = size
        if quiet >= 3:
            return
        time.sleep(0.4)


def _shoot(page, name: str) -> Path:
    """Full-page screenshot; Streamlit scrolls inside its main container, so grow the viewport to fit it."""
    height = page.evaluate("""() => {
        const m = document.querySelector('[data-testid="stMain"]') || document.querySelector('section.main');
        return Math.max(m ? m.scrollHeight : 0, document.body.scrollHeight);
    }""")
    page.set_viewport_size({"width": 1400, "height": min(max(int(height) + 40, 900), 12000)})
    _settle(page, 10)
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 900})
    return path


def _goto(page, label: str) -> None:
    page.locator('[data-testid="stSidebar"] label').filter(has_text=label).first.click()
    _settle(page)


def _choose(page, key: str, option: str) -> None:
    """Pick `option` in the selectbox whose widget key is `key` (Streamlit tags it with class st-key-<key>)."""
    page.locator(f'.st-key-{key} [role="combobox"]').click()
    page.keyboard.type(option)  # long option lists are virtualised: filter so the option is rendered
    page.get_by_role("option", name=option, exact=True).click()
    _settle(page)


@contextlib.contextmanager
def _opened(url: str):
    """(page, dialogs, page errors) of headless Chromium on the served dashboard, settled; closed after."""
    from playwright.sync_api import sync_playwright
    dialogs: list[str] = []
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url, wait_until="domcontentloaded")
            _settle(page, 60)
            yield page, dialogs, errors
        finally:
            browser.close()


def test_click_through_pages_and_screenshot(server):
    with _opened(server) as (page, dialogs, errors):
        shots = []
        for label, name in PAGES:
            _goto(page, label)
            if label == "Rollouts":
                _choose(page, "rb_run", "igrpo-a")  # newest step: the chosen draft of group 0 is SCRIPT
            if label == "Near misses":  # a trained model's real near misses come first: pick the payload's
                _choose(page, "nm_pick", payload_near_miss_label(RUNS[0]))
            if label in ("Rollouts", "Near misses", "Evaluation"):  # shown as visible, literal text
                page.get_by_text(SCRIPT, exact=True).filter(visible=True).first.wait_for(timeout=20000)
            if label in ("Rollouts", "Near misses"):  # the chosen draft SCRIPT, struck through in the inline diff
                page.locator(f"{DIFF} del").filter(has_text=SCRIPT).first.wait_for(timeout=20000)
                assert page.locator(f"{DIFF} ins").count() >= 1, label
            if label == "Arms":
                page.wait_for_selector(".js-plotly-plot .main-svg", timeout=60000)  # slow on 2 busy cores
            assert page.locator('[data-testid="stException"]').count() == 0, label
            if label in ("Curves", "Near misses"):
                page.wait_for_selector(".js-plotly-plot .main-svg", timeout=60000)  # slow on 2 busy cores
            shots.append(_shoot(page, name))
        # the payload stayed text: no <b> element from model output, and nothing ran
        assert page.locator("b", has_text="bold").count() == 0
    assert dialogs == [], f"a dialog fired: {dialogs}"
    assert errors == [], f"uncaught errors in the page: {errors}"
    assert all(p.exists() and p.stat().st_size > 10_000 for p in shots)


# Elements a payload would create if any of it were rendered as HTML (Streamlit's own page has none of them).
INJECTED = 'img[src="x"], iframe, a[href^="javascript"], b'
PAYLOAD_SCRIPTS = "Array.from(document.scripts).filter(s => s.text.includes('PWNED')).length"


def test_hostile_runs_folder_in_chromium(hostile_server):
    """Every page: rendered, the warning naming the bad files visible, the payload text visible as text,
    the title unchanged, no dialog, no element from a payload in the DOM, nothing from outside the folder."""
    url, hr = hostile_server
    with _opened(url) as (page, dialogs, _errors):
        shots = []
        for label, name in PAGES:
            _goto(page, label)
            if label == "Rollouts":
                _choose(page, "rb_run", PAYLOAD_RUN)
            assert page.locator('[data-testid="stException"]').count() == 0, label
            alert = page.locator('[data-testid="stAlert"]').filter(has_text="could not be read").first
            alert.wait_for(timeout=20000)
            for rel in hr.bad:
                assert alert.get_by_text(rel, exact=True).count() == 1, (label, rel)
            if label in ("Rollouts", "Near misses", "Evaluation"):
                page.get_by_text(PAYLOAD).filter(visible=True).first.wait_for(timeout=20000)
            if label == "Near misses":
                page.get_by_text("more chars]").filter(visible=True).first.wait_for(timeout=20000)
            if label in ("Rollouts", "Near misses"):  # the inline diff holds the payloads as visible text
                diff = page.locator(DIFF).first
                diff.wait_for(timeout=20000)
                assert all(p in diff.inner_text() for p in PAYLOADS), label
            time.sleep(1.0)  # give an onerror handler, had one been created, time to fire
            assert page.title() == "iGRPO Workbench", (label, page.title())
            found = page.evaluate(f"Array.from(document.querySelectorAll({INJECTED!r})).map(e => e.outerHTML.slice(0, 300))")
            assert found == [], (label, found)
            assert page.evaluate(PAYLOAD_SCRIPTS) == 0, label
            assert SECRET not in page.evaluate("document.body.innerText"), label
            shots.append(_shoot(page, f"hostile_{name}"))
    assert dialogs == [], f"a dialog fired: {dialogs}"
    assert all(p.exists() and p.stat().st_size > 10_000 for p in shots)
