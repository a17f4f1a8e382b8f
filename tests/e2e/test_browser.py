"""The app in a real Chromium: pages, training, top-K, attention, tour and demo mode.

Elements are found by page titles, widget labels and Streamlit's test ids, so
that layout changes within a page do not break these tests. Each test checks
that the page shows no exception or error box, and the shared server fixture
fails any test during which the server logged a traceback.
"""

from __future__ import annotations

import re
import time

import pytest

from lrml.inference import load_run, recommend
from lrml.runs import open_run
from tests.e2e import harness
from tests.e2e.harness import TINY_RUN, assert_clean, save_screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# (page title, URL path, heading that page shows).
PAGES = [
    ("Home", "/", "LRML Explorer"),
    ("Data", "/data", "Data"),
    ("Train", "/train", "Train"),
    ("Recommend", "/recommend", "Recommend"),
    ("Attention", "/attention", "Attention"),
    ("Embeddings", "/embeddings", "Embeddings"),
    ("Tour", "/tour", "Tour"),
]
HEADINGS = {title: heading for title, _, heading in PAGES}
# UMAP's first run in a fresh environment compiles numba code, which took up to
# 90 s on a shared two-core machine.
EMBEDDINGS_TIMEOUT_S = 300
TRAINING_TIMEOUT_S = 240
E2E_RUN = "e2e-browser"
TOP_K = 10


def open_app_page(page, server, path: str, heading: str, **query) -> None:
    timeout = EMBEDDINGS_TIMEOUT_S if path == "/embeddings" else 90
    harness.open_page(page, server.url(path, **query), heading, timeout)


# Every page ------------------------------------------------------------------------


@pytest.mark.parametrize(("title", "path", "heading"), PAGES, ids=[p[0] for p in PAGES])
def test_page_opens_without_error(page, server, title, path, heading):
    open_app_page(page, server, path, heading, run=TINY_RUN)

    assert_clean(page)
    assert page.url.startswith(server.url(path))
    assert f"run={TINY_RUN}" in page.url
    save_screenshot(page, harness.slug(title))


def test_sidebar_links_open_every_page(page, server):
    open_app_page(page, server, "/", "LRML Explorer", run=TINY_RUN)
    titles = harness.sidebar_page_titles(page)
    assert set(HEADINGS) <= set(titles), titles

    # The first link is the page already open, which a click does not rerun.
    for title in [*titles[1:], titles[0]]:
        # A page added to the navigation later is expected to show its title.
        heading = HEADINGS.get(title, title)
        harness.click_page_link(page, title, heading, EMBEDDINGS_TIMEOUT_S)
        assert_clean(page)
        # The selection survives the page switch.
        assert f"run={TINY_RUN}" in page.url, (title, page.url)


def test_deep_link_on_fresh_server(page, tiny_models_dir, tmp_path):
    """A fresh server's first request for a page URL shows that page inside the app."""
    fresh = harness.StreamlitServer(tiny_models_dir, tmp_path / "fresh-server.log")
    fresh.start()
    try:
        page.goto(fresh.url("/recommend", run=TINY_RUN, user=1))
        harness.wait_for_heading(page, "Recommend", timeout_s=120)
        harness.wait_until_idle(page, timeout_s=120)

        assert_clean(page)
        sidebar = page.locator(harness.SIDEBAR_SELECTOR)
        assert sidebar.get_attribute("data-collapsed") == "false"
        assert set(HEADINGS) <= set(harness.sidebar_page_titles(page))
        # The run selector that app.py draws, which a bare page would lack.
        assert sidebar.get_by_text("Run", exact=True).count() == 1
        assert "user=1" in page.url
        assert f"run={TINY_RUN}" in page.url
        assert fresh.tracebacks_since(0) == []
    finally:
        fresh.stop()


# Train -----------------------------------------------------------------------------


def run_row(page, name: str) -> dict[str, str] | None:
    """Return the row of run ``name`` in the Train page's table of runs, if shown."""
    from playwright.sync_api import Error as PlaywrightError

    try:
        rows = harness.find_dataframe(page, "name", "state")
    except (AssertionError, PlaywrightError):
        # The table is redrawn every second while a run trains.
        return None
    return next((row for row in rows if row["name"] == name), None)


def test_train_page_trains_new_run(page, server, tiny_models_dir):
    open_app_page(page, server, "/train", "Train", run=TINY_RUN)
    page.get_by_label("Run name (optional)", exact=True).fill(E2E_RUN)
    for field, value in {"epochs": 2, "embedding_dim": 8, "memory_size": 4}.items():
        field_input = page.get_by_label(field, exact=True)
        field_input.fill(str(value))
        field_input.press("Tab")
    page.get_by_role("button", name="Start training").click()

    states, processes = [], []
    deadline = time.monotonic() + TRAINING_TIMEOUT_S
    while time.monotonic() < deadline:
        row = run_row(page, E2E_RUN)
        state = row["state"] if row else None
        if state and (not states or states[-1] != state):
            states.append(state)
        runs = harness.training_processes(tiny_models_dir)
        processes.append(len(runs.get(E2E_RUN, [])))
        if state == "finished":
            break
        assert harness.error_messages(page) == []
        page.wait_for_timeout(500)

    assert states, "the run never appeared in the Train page's table of runs"
    assert states[-1] == "finished", states
    assert set(states[:-1]) & {"queued", "starting", "running"}, states
    assert max(processes) == 1
    assert_clean(page)
    run = open_run(tiny_models_dir / E2E_RUN)
    assert run.status()["state"] == "finished"
    assert len(run.metrics()) == 2
    save_screenshot(page, "train-finished")
    # Starting a run selects it, and the selection lasts.
    assert f"run={E2E_RUN}" in page.url


# Recommend -------------------------------------------------------------------------


def test_recommend_lists_top_k_for_user(page, server, tiny_models_dir):
    open_app_page(page, server, "/recommend", "Recommend", run=TINY_RUN)
    user_input = page.get_by_label("User id", exact=True)
    user_input.fill("42")
    user_input.press("Enter")
    harness.wait_for_url(page, "user=42")

    assert_clean(page)
    rows = harness.find_dataframe(page, "rank", "title")
    loaded = load_run(tiny_models_dir / TINY_RUN)
    expected = recommend(loaded, loaded.user_index(42), TOP_K)
    assert len(rows) == TOP_K
    assert [row["rank"] for row in rows] == [str(rank) for rank in range(1, TOP_K + 1)]
    assert [row["title"] for row in rows] == expected["title"].tolist()
    save_screenshot(page, "recommend-user-42")


# Attention -------------------------------------------------------------------------


def test_attention_mute_slot_changes_page(page, server):
    open_app_page(
        page, server, "/attention", "Attention", run=TINY_RUN, user=42, item=50
    )
    assert_clean(page)
    mute = page.locator(harness.MAIN_SELECTOR).get_by_role(
        "combobox", name=re.compile("mute", re.IGNORECASE)
    )
    if mute.count() == 0:
        pytest.skip(
            "the Attention page has no control to mute a memory slot (no "
            "multiselect or selectbox whose label contains 'mute')"
        )

    before = harness.main_text(page)
    harness.choose_first_option(page, mute.first)
    page.keyboard.press("Escape")
    harness.wait_for_main_text_change(page, before)

    assert_clean(page)
    save_screenshot(page, "attention-muted")


# Embeddings ------------------------------------------------------------------------


def test_embeddings_box_select_points(page, server):
    from playwright.sync_api import Error as PlaywrightError

    open_app_page(page, server, "/embeddings", "Embeddings", run=TINY_RUN)
    chart = page.locator('[data-testid="stPlotlyChart"]').first
    chart.hover()
    box_select = chart.locator('.modebar-btn[data-title="Box Select"]')
    # Plotly shows the Box Select tool only for a chart drawn with on_select.
    box_select.wait_for(state="attached", timeout=15_000)

    # The page lists the selection under a heading such as "Selected points (12)".
    main = page.locator(harness.MAIN_SELECTOR)
    counted = main.get_by_role("heading", name=re.compile(r"^Selected points \(\d+\)"))
    assert counted.count() == 1, "the Embeddings page shows no selection heading"
    nonzero = main.get_by_role("heading", name=re.compile(r"^Selected points \([1-9]"))
    for attempt in range(2):
        drag_box(page, chart, box_select)
        try:
            nonzero.first.wait_for(timeout=30_000)
            break
        except PlaywrightError:
            # NOTE: under heavy load the first drag sometimes reached the chart
            # before Plotly had switched to box mode, and selected nothing. A
            # user drags again, and so does this loop.
            if attempt == 1:
                raise
    harness.wait_until_idle(page)

    assert_clean(page)
    save_screenshot(page, "embeddings-selected")


def drag_box(page, chart, box_select) -> None:
    """Switch the chart to box selection and drag over its middle 60 percent."""
    chart.hover()
    box_select.click()
    area = chart.locator(".nsewdrag").first.bounding_box()
    page.mouse.move(area["x"] + area["width"] * 0.2, area["y"] + area["height"] * 0.2)
    page.mouse.down()
    page.mouse.move(
        area["x"] + area["width"] * 0.8, area["y"] + area["height"] * 0.8, steps=10
    )
    page.mouse.up()
    # Hover labels are text too, so the pointer leaves the chart.
    page.mouse.move(0, 0)


CAMERA_JS = """() => {
    const chart = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
    const scene = chart && chart._fullLayout && chart._fullLayout.scene;
    return scene && scene._scene ? JSON.stringify(scene._scene.getCamera()) : null;
}"""


def test_embeddings_3d_map_rotates(page, server):
    from playwright.sync_api import Error as PlaywrightError

    open_app_page(page, server, "/embeddings", "Embeddings", run=TINY_RUN)
    main = page.locator(harness.MAIN_SELECTOR)
    main.get_by_test_id("stRadio").filter(has_text="Method").get_by_text(
        "PCA", exact=True
    ).click()
    main.get_by_test_id("stRadio").filter(has_text="Dimensions").get_by_text(
        "3", exact=True
    ).click()
    page.get_by_role("button", name="Project").click()
    page.wait_for_function(CAMERA_JS, timeout=60_000)
    harness.wait_until_idle(page)

    chart = page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').first
    ratio = chart.evaluate("(chart) => chart._context.plotGlPixelRatio")
    before = page.evaluate(CAMERA_JS)
    for attempt in range(2):
        drag_across(page, chart)
        try:
            page.wait_for_function(
                f"(before) => ({CAMERA_JS})() !== before", arg=before, timeout=10_000
            )
            break
        except PlaywrightError:
            # NOTE: under load one drag in four left the camera as it was, as
            # if it reached the chart before the 3-D scene took input. A user
            # drags again, and so does this loop.
            if attempt == 1:
                raise AssertionError("dragging did not rotate the 3-D map") from None

    assert ratio == 1
    assert_clean(page)
    save_screenshot(page, "embeddings-3d")


def test_embeddings_settings_survive_page_switch(page, server):
    open_app_page(page, server, "/embeddings", "Embeddings", run=TINY_RUN)
    main = page.locator(harness.MAIN_SELECTOR)
    size = main.get_by_test_id("stCheckbox").filter(has_text="Size by popularity")
    size.locator("label").click()
    page.wait_for_function(
        '() => document.querySelector(\'[data-testid="stPlotlyChart"] '
        ".js-plotly-plot')?._fullData?.some((trace) => "
        "Array.isArray(trace.marker?.size) || ArrayBuffer.isView(trace.marker?.size))",
        timeout=60_000,
    )
    harness.wait_until_idle(page)

    harness.click_page_link(page, "Recommend", "Recommend")
    harness.click_page_link(page, "Embeddings", "Embeddings", EMBEDDINGS_TIMEOUT_S)
    harness.wait_until_idle(page)

    checked = size.locator("input").is_checked()
    assert checked, "Size by popularity was reset after a visit to Recommend"
    assert "Session State API" not in harness.main_text(page)
    assert_clean(page)


def drag_across(page, chart) -> None:
    """Drag from the chart's centre 120 pixels right and 40 down."""
    area = chart.bounding_box()
    x, y = area["x"] + area["width"] / 2, area["y"] + area["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 120, y + 40, steps=12)
    page.mouse.up()
    page.mouse.move(0, 0)


# Tour and presentation mode ---------------------------------------------------------


def click_tour_button(page, name: str, step: int) -> None:
    """Click Back or Next and wait for the URL to show the new ``step``."""
    page.get_by_role("button", name=name, exact=True).click()
    harness.wait_for_url(page, f"step={step}")


def test_tour_steps_through_deep_links(page, server):
    open_app_page(page, server, "/tour", "Tour", run=TINY_RUN)
    assert "Step 1 of 5" in harness.main_text(page)
    assert page.get_by_role("button", name="Back").is_disabled()

    click_tour_button(page, "Next", 2)
    click_tour_button(page, "Next", 3)
    assert "Step 3 of 5" in harness.main_text(page)
    click_tour_button(page, "Back", 2)
    click_tour_button(page, "Next", 3)

    page.get_by_role("button", name="Open Recommend", exact=True).click()
    harness.wait_for_heading(page, "Recommend")
    harness.wait_until_idle(page)
    assert_clean(page)
    assert "/recommend" in page.url
    assert "user=42" in page.url
    assert f"run={TINY_RUN}" in page.url


def root_font_size(page) -> str:
    return page.evaluate("getComputedStyle(document.documentElement).fontSize")


def wait_for_root_font_size(page, size: str) -> None:
    """Wait for the root font size, because st.html loads its code after the rerun."""
    page.wait_for_function(
        f"getComputedStyle(document.documentElement).fontSize === '{size}'",
        timeout=15_000,
    )


def test_presentation_mode_from_url(page, server):
    open_app_page(page, server, "/", "LRML Explorer", run=TINY_RUN, present=1)

    assert_clean(page)
    assert (
        page.locator(harness.SIDEBAR_SELECTOR).get_attribute("data-collapsed") == "true"
    )
    wait_for_root_font_size(page, "20px")
    save_screenshot(page, "presentation-mode")

    # Presentation mode stays on when the presenter switches pages.
    page.locator('[data-testid="stExpandSidebarButton"]').click()
    harness.click_page_link(page, "Tour", "Tour")
    assert "present=1" in page.url
    wait_for_root_font_size(page, "20px")


def test_presentation_toggle_in_sidebar(page, server):
    open_app_page(page, server, "/", "LRML Explorer", run=TINY_RUN)
    normal_size = root_font_size(page)
    toggle = page.locator(harness.SIDEBAR_SELECTOR).get_by_text("Presentation mode")

    toggle.click()
    harness.wait_for_url(page, "present=1")
    wait_for_root_font_size(page, "20px")

    if page.locator(harness.SIDEBAR_SELECTOR).get_attribute("data-collapsed") == "true":
        page.locator('[data-testid="stExpandSidebarButton"]').click()
    toggle.click()
    wait_for_root_font_size(page, normal_size)
    harness.wait_until_idle(page)
    assert "present=" not in page.url
    assert_clean(page)


# Untrusted text ---------------------------------------------------------------------

# Each payload sets window.lrmlxss and opens a dialog if the browser runs it.
IMG_PAYLOAD = "<img src=x onerror=\"window.lrmlxss='img';alert('img')\">"
SCRIPT_PAYLOAD = "<script>window.lrmlxss='script';alert('script')</script>"


def assert_no_script_ran(page) -> None:
    assert page.evaluate("typeof window.lrmlxss") == "undefined"
    assert page.dialogs == []
    assert page.locator('img[src="x"]').count() == 0


def test_html_input_shown_as_text(page, server):
    page.goto(server.url("/recommend", run=IMG_PAYLOAD, user=SCRIPT_PAYLOAD))
    harness.wait_for_heading(page, "Recommend")
    harness.wait_until_idle(page)
    errors = " ".join(harness.error_messages(page))
    assert "onerror" in errors
    assert "<script>" in errors
    assert_no_script_ran(page)

    open_app_page(page, server, "/train", "Train", run=TINY_RUN)
    page.get_by_label("Run name (optional)", exact=True).fill(IMG_PAYLOAD)
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("invalid run name").first.wait_for(timeout=60_000)
    errors = " ".join(harness.error_messages(page))
    assert "invalid run name" in errors
    assert "onerror" in errors
    assert_no_script_ran(page)
    assert page.javascript_errors == []
