"""Drive the app in a real browser: a Streamlit server, Chromium and page helpers.

The browser tests in this folder and ``bench/bench_load.py`` share this module.
It starts ``streamlit run app.py`` as a child process on 127.0.0.1 and a free
port, and launches Debian's Chromium through Playwright. It reads pages the way
a user sees them: by headings, widget labels and Streamlit's ``data-testid``
attributes, never by the position of an element.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "tests" / "artifacts"
# `make screenshots` sets this to docs/screenshots, so that the README's images
# come from the same pages the tests check.
SCREENSHOT_DIR_ENV = "LRML_SCREENSHOT_DIR"
TINY_RUN = "tiny"
CHROMIUM_ENV = "LRML_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
# Playwright's own browser download is not used: the tests drive the system
# Chromium, which needs these flags to run headless as root in a container.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    # Resolve no host name but loopback, so the browser cannot reach any other
    # address even if the app asked it to (outside_requests records the try).
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
VIEWPORT = {"width": 1400, "height": 900}
SERVER_START_TIMEOUT_S = 90
TRACEBACK_MARKER = "Traceback (most recent call last)"

# Streamlit 1.67 test ids. An exception box, an st.error box, and the box that
# replaces an element the frontend failed to draw.
ERROR_SELECTOR = ", ".join(
    f'[data-testid="{test_id}"]'
    for test_id in ("stException", "stAlertContentError", "stErrorElementStack")
)
APP_SELECTOR = '[data-testid="stApp"]'
IDLE_SELECTOR = '[data-testid="stApp"][data-test-script-state="notRunning"]'
SIDEBAR_SELECTOR = '[data-testid="stSidebar"]'
NAV_LINK_SELECTOR = '[data-testid="stSidebarNav"] a'
MAIN_SELECTOR = '[data-testid="stMain"]'
SKELETON_SELECTOR = '[data-testid="stSkeleton"], [data-testid="stSkeletonElement"]'

# Chromium ------------------------------------------------------------------------


def chromium_path() -> Path:
    """Return the Chromium binary: $LRML_CHROMIUM, else /usr/bin/chromium."""
    return Path(os.environ.get(CHROMIUM_ENV, DEFAULT_CHROMIUM))


def print_errors(errors: list[str]) -> int:
    """Print a benchmark's errors and return its exit status: 1 if there are any."""
    if errors:
        print(f"Errors ({len(errors)}):")
        for error in errors:
            print(f"  {error}")
        return 1
    print("Errors: none.")
    return 0


def missing_browser_reason() -> str | None:
    """Return why the browser tests cannot run here, or None when they can."""
    path = chromium_path()
    if not os.access(path, os.X_OK):
        return (
            f"no Chromium at {path}: install Debian's chromium and chromium-driver "
            f"packages (bash .ci/run does it) or set {CHROMIUM_ENV} to a Chromium "
            "binary"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as error:
        return f"the playwright package is not installed ({error}); run make install"
    return None


def launch_chromium(playwright: Any) -> Any:
    """Launch the system Chromium through a started ``sync_playwright()`` object."""
    return playwright.chromium.launch(
        executable_path=str(chromium_path()), args=CHROMIUM_ARGS
    )


def new_context(browser: Any, **options: Any) -> Any:
    """Open a browser context with the tests' window size: a new Streamlit session.

    The context's ``outside_requests`` lists the URL of every request its pages
    made to a host other than loopback; `assert_clean` expects none.
    """
    context = browser.new_context(viewport=VIEWPORT, **options)
    context.outside_requests = []
    context.on("request", lambda request: record_outside(context, request.url))
    return context


def record_outside(context: Any, url: str) -> None:
    """Append ``url`` to ``context.outside_requests`` unless it stays on loopback."""
    if leaves_loopback(url):
        context.outside_requests.append(url)


def leaves_loopback(url: str) -> bool:
    """Return whether a browser request for ``url`` goes to a host other than loopback."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return False
    return parts.hostname not in LOOPBACK_HOSTS


# Streamlit server ------------------------------------------------------------------


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class StreamlitServer:
    """``streamlit run app.py`` in a child process, with its output in a log file.

    Parameters
    ----------
    models_dir : Path
        Passed to the app as $LRML_MODELS_DIR.
    log_path : Path
        Receives the server's stdout and stderr.
    address : str or None
        ``--server.address``; None leaves it to ``.streamlit/config.toml``.
    env : dict, optional
        Extra environment variables for the server.
    """

    def __init__(
        self,
        models_dir: Path,
        log_path: Path,
        address: str | None = "127.0.0.1",
        env: dict[str, str] | None = None,
    ) -> None:
        self.models_dir = Path(models_dir)
        self.log_path = Path(log_path)
        self.address = address
        self.port = free_port()
        self.extra_env = dict(env or {})
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "/", **query: Any) -> str:
        """Return the URL of ``path`` with ``query`` as its query string."""
        url = self.base_url + "/" + path.lstrip("/")
        if query:
            url += "?" + urllib.parse.urlencode({k: str(v) for k, v in query.items()})
        return url

    def start(self) -> StreamlitServer:
        """Start the server and wait until its health endpoint returns ok.

        The health check is an HTTP request that runs no script, so the first
        page a browser opens afterwards is still the server's first script run.
        """
        command = [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.port",
            str(self.port),
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
        ]
        if self.address is not None:
            command += ["--server.address", self.address]
        env = {
            **os.environ,
            "LRML_MODELS_DIR": str(self.models_dir),
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_until_healthy()
        return self

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        health = self.base_url + "/_stcore/health"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"streamlit exited with code {self.process.returncode} before "
                    f"serving; its log ends with:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(health, timeout=2) as response:
                    if response.read().strip() == b"ok":
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(
            f"streamlit did not answer {health} within {SERVER_START_TIMEOUT_S} s; "
            f"its log ends with:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop the server, then every training process it started."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        stop_training_processes(self.models_dir)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_size(self) -> int:
        return len(self.log_text())

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def tracebacks_since(self, offset: int) -> list[str]:
        """Return each traceback the server logged after character ``offset``."""
        text = self.log_text()[offset:]
        return [
            TRACEBACK_MARKER + chunk[:2000]
            for chunk in text.split(TRACEBACK_MARKER)[1:]
        ]


# Training processes ------------------------------------------------------------------


def training_processes(models_dir: Path) -> dict[str, list[int]]:
    """Return the live ``python -m lrml.jobs RUN_DIR`` processes under ``models_dir``.

    Reads /proc, so it works on Linux only. Keys are run names and values are
    process ids. A run with more than one process trains twice.
    """
    root = Path(models_dir).resolve()
    found: dict[str, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        arguments = [part.decode(errors="replace") for part in raw.split(b"\0") if part]
        if state == "Z" or "lrml.jobs" not in arguments:
            continue
        run_dir = Path(arguments[-1])
        if not run_dir.is_absolute():
            run_dir = REPO_ROOT / run_dir
        if run_dir.resolve().parent == root:
            found.setdefault(run_dir.name, []).append(int(entry.name))
    return found


def stop_training_processes(models_dir: Path, timeout_s: float = 15) -> None:
    """Send SIGTERM to the training processes under ``models_dir`` and wait for them."""
    pids = [pid for pids in training_processes(models_dir).values() for pid in pids]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and training_processes(models_dir):
        time.sleep(0.2)
    for pids in training_processes(models_dir).values():
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# Reading pages -----------------------------------------------------------------------


def wait_until_idle(page: Any, timeout_s: float = 60) -> None:
    """Wait until no script run is in progress in ``page`` and every element is drawn.

    A rerun that starts and ends between two frames never shows as running,
    so callers first wait for what the rerun changes (a heading, the URL, a
    text), then call this for the rest of the page.
    """
    page.locator(IDLE_SELECTOR).wait_for(state="attached", timeout=timeout_s * 1000)
    # Elements whose code is still loading show a grey skeleton in their place.
    page.wait_for_function(
        "(selector) => document.querySelectorAll(selector).length === 0",
        arg=SKELETON_SELECTOR,
        timeout=timeout_s * 1000,
    )


def click_page_link(page: Any, title: str, heading: str, timeout_s: float = 90) -> None:
    """Click the sidebar link ``title``, then wait for ``heading`` and an idle page."""
    page.locator(NAV_LINK_SELECTOR).filter(has_text=title).first.click()
    wait_for_heading(page, heading, timeout_s)
    wait_until_idle(page, timeout_s)


def wait_for_url(page: Any, fragment: str, timeout_s: float = 60) -> None:
    """Wait until the page's URL contains ``fragment``, then until the page is idle."""
    page.wait_for_function(
        "(fragment) => window.location.href.includes(fragment)",
        arg=fragment,
        timeout=timeout_s * 1000,
    )
    wait_until_idle(page, timeout_s)


def wait_for_main_text_change(page: Any, before: str, timeout_s: float = 60) -> None:
    """Wait until the main area's text differs from ``before``, then until idle."""
    page.wait_for_function(
        "([selector, before]) => document.querySelector(selector).innerText !== before",
        arg=[MAIN_SELECTOR, before],
        timeout=timeout_s * 1000,
    )
    wait_until_idle(page, timeout_s)


def choose_first_option(page: Any, combobox: Any, attempts: int = 3) -> str:
    """Click the first option of a selectbox or multiselect, and return its text.

    "Select all", which a multiselect lists first, is skipped.
    """
    from playwright.sync_api import Error as PlaywrightError

    option = page.locator('[role="option"]:not([data-key="__select_all__"])').first
    for _ in range(attempts):
        combobox.click()
        try:
            option.wait_for(timeout=5_000)
            text = option.inner_text()
            option.click(timeout=5_000)
            return text
        except PlaywrightError:
            # NOTE: on the Attention page the list sometimes did not open after
            # the first click (seen in one of five runs), cause unknown. A user
            # clicks again, and so does this loop.
            page.keyboard.press("Escape")
    raise AssertionError(
        f"the options of {combobox} did not open after {attempts} clicks"
    )


def open_page(page: Any, url: str, heading: str, timeout_s: float = 90) -> None:
    """Go to ``url`` and wait for the ``heading`` and for the script to finish."""
    page.goto(url)
    wait_for_heading(page, heading, timeout_s)
    wait_until_idle(page, timeout_s)


def wait_for_heading(page: Any, heading: str, timeout_s: float = 60) -> None:
    page.locator(MAIN_SELECTOR).get_by_role(
        "heading", name=heading, exact=True
    ).first.wait_for(timeout=timeout_s * 1000)


def error_messages(page: Any) -> list[str]:
    """Return the text of every exception and error box in the page."""
    return [text.strip() for text in page.locator(ERROR_SELECTOR).all_inner_texts()]


def main_text(page: Any) -> str:
    return page.locator(MAIN_SELECTOR).inner_text()


def sidebar_page_titles(page: Any) -> list[str]:
    """Return the titles of the page links in the sidebar navigation."""
    titles = []
    for text in page.locator(NAV_LINK_SELECTOR).all_inner_texts():
        # Each link shows a Material icon name on its own line before the title.
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            titles.append(lines[-1])
    return titles


def dataframe_tables(page: Any) -> Iterator[list[dict[str, str]]]:
    """Yield the visible rows of each visible st.dataframe, as dicts of cell text.

    Dataframes inside a collapsed expander or an inactive tab are left out.
    """
    frames = page.locator('[data-testid="stDataFrame"]')
    for index in range(frames.count()):
        if frames.nth(index).is_visible():
            yield read_dataframe(frames.nth(index))


def read_dataframe(frame: Any) -> list[dict[str, str]]:
    """Return the visible rows of one st.dataframe, keyed by column header.

    st.dataframe draws on a canvas. Once the canvas has the keyboard focus, its
    grid library writes the visible cells into an accessible HTML table inside
    it, which is read here.
    """
    frame.scroll_into_view_if_needed()
    frame.locator('canvas[data-testid="data-grid-canvas"]').first.focus()
    table = frame.locator('table[role="grid"]').first
    table.wait_for(state="attached", timeout=10_000)
    return table.evaluate(
        """(table) => {
            const header = [...table.querySelectorAll('thead th')].map(
                (cell) => cell.textContent.trim());
            return [...table.querySelectorAll('tbody tr')].map((row) => {
                const cells = [...row.querySelectorAll('td')].map(
                    (cell) => cell.textContent.trim());
                return Object.fromEntries(header.map((name, i) => [name, cells[i]]));
            });
        }"""
    )


def find_dataframe(page: Any, *columns: str) -> list[dict[str, str]]:
    """Return the rows of the first st.dataframe that has all of ``columns``.

    Raises
    ------
    AssertionError
        If no dataframe on the page has those columns.
    """
    seen = []
    for rows in dataframe_tables(page):
        header = list(rows[0]) if rows else []
        if rows and all(column in header for column in columns):
            return rows
        seen.append(header)
    raise AssertionError(f"no st.dataframe with columns {columns}; found {seen}")


def slug(text: str) -> str:
    """Return ``text`` as a file-name-safe lowercase word."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "page"


def assert_clean(page: Any) -> None:
    """Assert that the page shows no exception or error box, raised no JS error,
    and requested nothing from outside loopback."""
    messages = error_messages(page)
    assert messages == [], messages
    assert page.javascript_errors == [], page.javascript_errors
    outside = getattr(page.context, "outside_requests", [])
    assert outside == [], f"the page requested outside loopback: {outside}"


def save_screenshot(page: Any, name: str) -> Path:
    """Save the whole page to tests/artifacts/NAME.png.

    With $LRML_SCREENSHOT_DIR set, the visible part (1400 x 900 pixels) also
    goes to that folder, for the README.
    """
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    folder = os.environ.get(SCREENSHOT_DIR_ENV)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"))
    return path
