"""Fixtures of the browser tests: a tiny real run, a Streamlit server and Chromium.

One server and one Chromium serve the whole session. The server starts on
127.0.0.1 and a free port, with $LRML_MODELS_DIR pointing at a temporary folder
that contains one run, "tiny", trained in this process on MovieLens-100K. Each
test gets a fresh browser context, so a fresh Streamlit session.

Without Chromium (or without the playwright package) every test here is
skipped with the reason, unless the environment variable CI is set: then the
missing browser is an error, so that CI never passes without running them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lrml import jobs
from lrml.config import TrainConfig
from lrml.runs import create_run
from tests.e2e import harness
from tests.e2e.harness import ARTIFACTS, TINY_RUN


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: drives the app in a real Chromium through Playwright"
    )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Keep each phase's report on the test item, for the screenshot on failure."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def browser_required() -> None:
    """Skip the browser tests where no browser is installed, but fail under CI."""
    reason = harness.missing_browser_reason()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(
            f"CI is set, so the browser tests must run, but {reason}", pytrace=False
        )
    pytest.skip(f"browser tests skipped: {reason}")


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory, browser_required) -> Path:
    """A models folder with one run, "tiny": 2 epochs on MovieLens-100K, d=8, N=4."""
    folder = tmp_path_factory.mktemp("e2e-models")
    config = TrainConfig(epochs=2, embedding_dim=8, memory_size=4)
    jobs.train_in_foreground(create_run(config, name=TINY_RUN, root=folder))
    return folder


@pytest.fixture(scope="session")
def browser(browser_required) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = harness.launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def server(
    tiny_models_dir, browser, tmp_path_factory
) -> Iterator[harness.StreamlitServer]:
    """The app, served for the whole session, with the Embeddings page warmed up.

    A background page opens the Embeddings page at once, so that UMAP runs
    while the other tests do; Streamlit's cache then serves its result to
    every later session.
    """
    log_path = ARTIFACTS / "e2e-server.log"
    log_path.unlink(missing_ok=True)
    app = harness.StreamlitServer(tiny_models_dir, log_path).start()
    try:
        warmup = harness.new_context(browser)
        warmup.new_page().goto(
            app.url("/embeddings", run=TINY_RUN), wait_until="commit"
        )
        yield app
        warmup.close()
    finally:
        app.stop()


@pytest.fixture(autouse=True)
def server_log_has_no_traceback(server) -> Iterator[None]:
    """Fail a test during which the shared server logged a traceback."""
    offset = server.log_size()
    yield
    tracebacks = server.tracebacks_since(offset)
    assert not tracebacks, "the server logged:\n" + "\n".join(tracebacks)


@pytest.fixture
def page(browser, request) -> Iterator:
    """A page in a fresh browser context, that records JavaScript errors and dialogs.

    On failure the page's screenshot goes to tests/artifacts/failed-TEST.png.
    """
    context = harness.new_context(browser)
    new_page = context.new_page()
    new_page.javascript_errors = []
    new_page.dialogs = []
    new_page.on(
        "pageerror", lambda error: new_page.javascript_errors.append(str(error))
    )

    def record_dialog(dialog) -> None:
        new_page.dialogs.append(dialog.message)
        dialog.dismiss()

    new_page.on("dialog", record_dialog)
    yield new_page

    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = harness.slug(request.node.name)
        new_page.screenshot(path=str(ARTIFACTS / f"failed-{name}.png"), full_page=True)
    context.close()
