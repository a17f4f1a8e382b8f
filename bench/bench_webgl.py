"""WebGL benchmark: frame rates of the Embeddings map while a user moves it.

Usage::

    .venv/bin/python bench/bench_webgl.py [--steps 40] [--repeats 3] [--keep]

The script trains a small run on MovieLens-100K (2 epochs, embedding_dim 8,
memory_size 4) into a new temporary $LRML_MODELS_DIR. It starts ``streamlit run
app.py`` on 127.0.0.1 and a free port, and opens the Embeddings page in Debian's
Chromium (``/usr/bin/chromium``, or $LRML_CHROMIUM) through Playwright. Server
and browser start as in the browser tests (``tests/e2e/harness.py``).

It measures four maps, all projected with PCA so that no UMAP computes on the
same cores while it times: in 2-D and in 3-D, the page's default points
(users and movies) and the largest map the page offers, "Translated users
p + r of training pairs, with the movies" at the largest sample size the page
draws in that many dimensions. That map has every movie plus one ``p + r``
point per sampled pair, so it has more points than any other kind.

On each map it plays three gestures: in 2-D a drag in pan mode, wheel zoom
and a hover sweep, in 3-D a rotating drag, wheel zoom and a hover sweep. A
script in the page sends one mouse or wheel event per animation frame to the
element under the pointer, as a mouse moved without pause does, ``--steps``
events per gesture, and plays each gesture ``--repeats`` times. It records
when each frame starts. A redraw that takes longer than a frame delays the
next one, so frames per second over the gesture is the rate at which the map
moves on screen. It also counts the frames in which the axis ranges or the
camera changed: a drag or wheel gesture that changed the view in fewer than
half of its frames is an error, because it did not reach the map.

A map is smooth when every gesture averages at least 30 frames per second. The
exit status is 1 on any browser console error, JavaScript exception, error box
on the page or traceback in the server log. Timings depend on the machine and
on what else runs on it, so compare figures from the same machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from lrml import jobs
from lrml.config import TrainConfig
from lrml.projection import KINDS
from tests.e2e import harness

RUN_NAME = "bench-webgl"
RUN_CONFIG = TrainConfig(epochs=2, embedding_dim=8, memory_size=4)
# A first UMAP in a fresh environment compiles numba code: up to 90 s was seen
# on a shared two-core machine, so waits that may include it get more time.
PAGE_TIMEOUT_S = 600
DEFAULT_KIND = "users_items"
LARGEST_KIND = "translated"
CHART_SELECTOR = '[data-testid="stPlotlyChart"] .js-plotly-plot'
GESTURES = {2: ("pan", "wheel zoom", "hover"), 3: ("rotate", "wheel zoom", "hover")}
SMOOTH_FPS = 30
DRAG_STEP_PX = 4
WHEEL_STEP = -40
# Plotly writes a wheel zoom to the layout 50 ms (its REDRAWDELAY) after the
# last wheel event, so this wait leaves ample time before the view is reset.
SETTLE_MS = 600
# Substrings of UNMASKED_RENDERER_WEBGL that name a renderer running on the CPU.
CPU_RENDERERS = ("swiftshader", "llvmpipe", "softpipe", "software")

RENDERER_JS = """() => {
    const gl = document.createElement('canvas').getContext('webgl');
    if (!gl) return null;
    const info = gl.getExtension('WEBGL_debug_renderer_info');
    return info
        ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL)
        : gl.getParameter(gl.RENDERER);
}"""

# True once the chart of ``kind``'s title (not a PCA preview) is drawn in
# ``dimensions``. Streamlit 1.67 wraps the title in <b> tags, sometimes twice,
# so no prefix test.
CHART_READY_JS = """([selector, title, dimensions]) => {
    const chart = document.querySelector(selector);
    if (!chart || !chart._fullLayout || !chart.data) return false;
    const text = (chart._fullLayout.title && chart._fullLayout.title.text) || '';
    const is3d = Boolean(chart._fullLayout.scene && chart._fullLayout.scene._scene);
    return text.includes(title) && !text.includes('preview')
        && is3d === (dimensions === 3);
}"""

# Lists the traces from ``_fullData``, where Plotly has decoded the base64 arrays
# that plotly.py sends.
TRACES_JS = """(selector) => {
    const chart = document.querySelector(selector);
    return chart._fullData.map((trace) => ({
        name: trace.name,
        type: trace.type,
        points: trace._length ?? (trace.x ? trace.x.length : 0),
        symbol: trace.marker && typeof trace.marker.symbol === 'string'
            ? trace.marker.symbol : '',
    }));
}"""

# The map's view: the axis ranges in 2-D, the camera in 3-D.
VIEW_JS = """(selector) => {
    const layout = document.querySelector(selector)._fullLayout;
    if (layout.scene && layout.scene._scene) {
        return JSON.stringify(layout.scene._scene.getCamera());
    }
    return JSON.stringify([layout.xaxis.range, layout.yaxis.range]);
}"""

RESET_VIEW_JS = """async ([selector, camera]) => {
    const chart = document.querySelector(selector);
    if (camera) {
        await window.Plotly.relayout(chart, {'scene.camera': JSON.parse(camera)});
    } else {
        await window.Plotly.relayout(
            chart, {'xaxis.autorange': true, 'yaxis.autorange': true});
    }
}"""

DRAGMODE_JS = """([selector, mode]) => window.Plotly.relayout(
    document.querySelector(selector), {dragmode: mode})"""

TWO_FRAMES_JS = """() => new Promise((resolve) => requestAnimationFrame(
    () => requestAnimationFrame(resolve)))"""

# Plays one gesture in the page: one mouse or wheel event per animation frame,
# as a mouse moved without pause produces, sent to the element under the
# pointer. Returns the start time of each frame and how many showed a new view.
GESTURE_JS = """async ({selector, dimensions, gesture, steps, stepPx, wheel}) => {
    const chart = document.querySelector(selector);
    const area = (dimensions === 2 ? chart.querySelector('.nsewdrag') : chart)
        .getBoundingClientRect();
    let x = area.left + area.width / 2;
    let y = area.top + area.height / 2;
    if (gesture === 'hover') x -= area.width / 6;
    const element = document.elementFromPoint(x, y);
    const layout = () => chart._fullLayout;
    const view = () => (layout().scene && layout().scene._scene
        ? JSON.stringify(layout().scene._scene.getCamera())
        : JSON.stringify([layout().xaxis.range, layout().yaxis.range]));
    const dragging = gesture === 'pan' || gesture === 'rotate';
    const mouse = (type, buttons) => element.dispatchEvent(new MouseEvent(type, {
        bubbles: true, cancelable: true, view: window,
        clientX: x, clientY: y, button: 0, buttons,
    }));
    const frame = () => new Promise((resolve) => requestAnimationFrame(resolve));

    await frame();
    if (dragging) mouse('mousedown', 1);
    const times = [await frame()];
    const changed = [];
    let last = view();
    for (let step = 0; step < steps; step++) {
        if (gesture === 'wheel zoom') {
            element.dispatchEvent(new WheelEvent('wheel', {
                bubbles: true, cancelable: true, clientX: x, clientY: y,
                deltaY: wheel, deltaMode: 0,
            }));
        } else if (gesture === 'hover') {
            x += area.width / 3 / steps;
            mouse('mousemove', 0);
        } else {
            x += stepPx;
            y += stepPx / 2;
            mouse('mousemove', 1);
        }
        times.push(await frame());
        const now = view();
        changed.push(now !== last);
        last = now;
    }
    if (dragging) mouse('mouseup', 0);
    return {times, changed: changed.filter(Boolean).length};
}"""


@dataclass
class Gesture:
    """Frame intervals of one gesture, all repeats together."""

    name: str
    fps: list[float] = field(default_factory=list)
    intervals: list[float] = field(default_factory=list)
    changed: int = 0
    steps: int = 0

    @property
    def median_fps(self) -> float:
        return float(np.median(self.fps))

    @property
    def p95_ms(self) -> float:
        return float(np.percentile(self.intervals, 95))

    @property
    def worst_ms(self) -> float:
        return float(max(self.intervals))


@dataclass
class MapResult:
    label: str
    dimensions: int
    points_text: str
    traces: list[dict]
    pixel_ratio: float
    draw_s: float
    gestures: list[Gesture]

    @property
    def smooth(self) -> bool:
        return all(g.median_fps >= SMOOTH_FPS for g in self.gestures)


def train_run(models_dir: Path) -> None:
    torch.set_num_threads(1)
    from lrml.runs import create_run

    jobs.train_in_foreground(create_run(RUN_CONFIG, name=RUN_NAME, root=models_dir))


def chart_title(kind: str) -> str:
    """Return the text that the title of a PCA map of ``kind`` contains."""
    return f"PCA of {KINDS[kind].lower()}"


def wait_for_umap(page) -> None:
    """Wait until the default UMAP, submitted by the page's first run, has ended.

    The page computes it in a server thread, which would share the CPU with
    the browser while it is timed.
    """
    page.wait_for_function(
        """(selector) => {
            const chart = document.querySelector(selector);
            const text = chart && chart._fullLayout && chart._fullLayout.title.text;
            return Boolean(text) && !text.includes('preview');
        }""",
        arg=CHART_SELECTOR,
        timeout=PAGE_TIMEOUT_S * 1000,
        polling=500,
    )
    harness.wait_until_idle(page, PAGE_TIMEOUT_S)


def record_console_error(errors: list[str], message) -> None:
    if message.type == "error":
        url = message.location.get("url", "")
        errors.append(f"console error: {message.text} ({url})")


def sidebar_widget(page, test_id: str, label: str):
    return page.locator(f'[data-testid="{test_id}"]').filter(has_text=label).first


def project(page, kind: str, dimensions: int, largest_sample: bool) -> float:
    """Choose PCA, ``kind``, ``dimensions`` and a sample size, then project.

    Returns the seconds from the click on "Project" until the chart is drawn.
    """
    sidebar_widget(page, "stRadio", "Method").get_by_text("PCA", exact=True).click()
    sidebar_widget(page, "stRadio", "Dimensions").get_by_text(
        str(dimensions), exact=True
    ).click()
    points = sidebar_widget(page, "stSelectbox", "Points")
    points.locator("input").first.click()
    page.locator('[role="option"]').filter(has_text=KINDS[kind]).first.click()
    slider = sidebar_widget(page, "stSlider", "Sample size").get_by_role("slider")
    slider.focus()
    page.keyboard.press("End" if largest_sample else "Home")
    if not largest_sample:
        # The default sample size, 5,000, is the fifth value.
        for _ in range(4):
            page.keyboard.press("ArrowRight")
    start = time.perf_counter()
    page.get_by_role("button", name="Project").click()
    page.wait_for_function(
        CHART_READY_JS,
        arg=[CHART_SELECTOR, chart_title(kind), dimensions],
        timeout=PAGE_TIMEOUT_S * 1000,
        polling=250,
    )
    harness.wait_until_idle(page, PAGE_TIMEOUT_S)
    page.evaluate(TWO_FRAMES_JS)
    return time.perf_counter() - start


def points_caption(page) -> str:
    """Return the page's "PCA of N points" line, which counts the projected points."""
    for line in harness.main_text(page).splitlines():
        if line.startswith("PCA of ") and "points" in line:
            return line.strip()
    return "(no 'PCA of N points' line found)"


def measure(page, label: str, dimensions: int, draw_s: float, args) -> MapResult:
    context = page.evaluate(
        "(selector) => document.querySelector(selector)._context.plotGlPixelRatio",
        CHART_SELECTOR,
    )
    result = MapResult(
        label=label,
        dimensions=dimensions,
        points_text=points_caption(page),
        traces=page.evaluate(TRACES_JS, CHART_SELECTOR),
        pixel_ratio=context,
        draw_s=draw_s,
        gestures=[Gesture(name) for name in GESTURES[dimensions]],
    )
    camera = page.evaluate(VIEW_JS, CHART_SELECTOR) if dimensions == 3 else None
    for _ in range(args.repeats):
        for gesture in result.gestures:
            if gesture.name == "pan":
                page.evaluate(DRAGMODE_JS, [CHART_SELECTOR, "pan"])
            played = page.evaluate(
                GESTURE_JS,
                {
                    "selector": CHART_SELECTOR,
                    "dimensions": dimensions,
                    "gesture": gesture.name,
                    "steps": args.steps,
                    "stepPx": DRAG_STEP_PX,
                    "wheel": WHEEL_STEP,
                },
            )
            times = np.asarray(played["times"])
            intervals = np.diff(times)
            gesture.intervals += intervals.tolist()
            gesture.fps.append(1000 * len(intervals) / (times[-1] - times[0]))
            gesture.changed += played["changed"]
            gesture.steps += args.steps
            if gesture.name == "pan":
                page.evaluate(DRAGMODE_JS, [CHART_SELECTOR, "lasso"])
            page.wait_for_timeout(SETTLE_MS)
            page.evaluate(RESET_VIEW_JS, [CHART_SELECTOR, camera])
            page.wait_for_timeout(SETTLE_MS)
    return result


def benchmark(server, args, errors: list[str]) -> tuple[str, str, list[MapResult]]:
    """Open the page, time the four maps, and return the browser, renderer and results."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = harness.launch_chromium(playwright)
        try:
            context = harness.new_context(browser)
            page = context.new_page()
            page.on(
                "pageerror", lambda error: errors.append(f"page exception: {error}")
            )
            page.on("console", partial(record_console_error, errors))
            version = browser.version
            # The page is opened from the sidebar, as a user does. Opening the
            # /embeddings URL directly makes Streamlit's frontend probe
            # /embeddings/_stcore/health first, which logs two 404 errors.
            harness.open_page(page, server.url("/", run=RUN_NAME), "LRML Explorer")
            harness.click_page_link(page, "Embeddings", "Embeddings", PAGE_TIMEOUT_S)
            renderer = page.evaluate(RENDERER_JS)
            wait_for_umap(page)

            results = []
            for dimensions in (2, 3):
                for kind, largest in ((DEFAULT_KIND, False), (LARGEST_KIND, True)):
                    draw_s = project(page, kind, dimensions, largest)
                    label = (
                        f"{dimensions}-D, {KINDS[kind]}, "
                        f"{'largest' if largest else 'default'} sample size"
                    )
                    results.append(measure(page, label, dimensions, draw_s, args))
                    errors += [
                        f"error box: {text}" for text in harness.error_messages(page)
                    ]
            for result in results:
                for gesture in result.gestures:
                    if gesture.name != "hover" and gesture.changed < gesture.steps / 2:
                        errors.append(
                            f"{result.label}: {gesture.name} changed the view in "
                            f"{gesture.changed} of {gesture.steps} frames"
                        )
            context.close()
        finally:
            browser.close()
    return version, renderer, results


def report(version: str, renderer: str | None, results: list[MapResult], args) -> None:
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} at the end. Chromium {version} "
        f"({harness.chromium_path()}), flags {' '.join(harness.CHROMIUM_ARGS)}, "
        f"viewport {harness.VIEWPORT['width']}x{harness.VIEWPORT['height']}."
    )
    print(f"WebGL renderer (UNMASKED_RENDERER_WEBGL): {renderer}")
    if renderer is not None and any(w in renderer.lower() for w in CPU_RENDERERS):
        print(
            "This headless Chromium renders WebGL on the CPU (software rasteriser), "
            "so these figures are a lower bound for a browser that renders WebGL "
            "on a GPU."
        )
    print(
        f"Each gesture: {args.steps} events, one per animation frame, repeated "
        f"{args.repeats} times. fps: frames per second over the gesture, median "
        "of the repeats; p95 and worst: frame intervals in ms, all repeats; new "
        "view: frames in which the axis ranges or the camera had changed. The "
        "display runs at 60 Hz, so 60 fps and 16.7 ms are the ceiling."
    )
    for result in results:
        print()
        print(f"Map: {result.label}. Page: {result.points_text}.")
        webgl = sum(
            t["points"]
            for t in result.traces
            if t["type"] in ("scattergl", "scatter3d")
        )
        symbols = sorted({t["symbol"] for t in result.traces if t["points"] > 100})
        print(
            f"Points in WebGL traces, overlays included: {webgl:,} in "
            f"{len(result.traces)} traces; "
            f"marker symbols of the large traces: {', '.join(symbols)}; "
            f"plotGlPixelRatio {result.pixel_ratio}. Drawn {result.draw_s:.1f} s "
            "after the click on Project."
        )
        print(
            f"{'gesture':<11} {'fps':>6} {'p95 ms':>8} {'worst ms':>9} "
            f"{'new view':>9}   fps of each repeat"
        )
        for gesture in result.gestures:
            repeats = ", ".join(f"{fps:.0f}" for fps in gesture.fps)
            new_view = (
                "-" if gesture.name == "hover" else f"{gesture.changed}/{gesture.steps}"
            )
            print(
                f"{gesture.name:<11} {gesture.median_fps:>6.1f} {gesture.p95_ms:>8.1f}"
                f" {gesture.worst_ms:>9.1f} {new_view:>9}   {repeats}"
            )
        verdict = "smooth" if result.smooth else "not smooth"
        print(
            f"{verdict}: the target is {SMOOTH_FPS} fps or more, on average, in "
            "every gesture."
        )
    print()
    for result in results:
        slowest = min(result.gestures, key=lambda g: g.median_fps)
        print(
            f"{result.label}: slowest gesture {slowest.name}, "
            f"{slowest.median_fps:.0f} fps "
            f"({'met' if result.smooth else 'missed'}, target {SMOOTH_FPS} fps)."
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=40, help="mouse or wheel events in each gesture"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="repeats of each gesture"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary models folder and the server log, which is "
        "otherwise kept only when there are errors",
    )
    args = parser.parse_args()
    if args.steps < 2 or args.repeats < 1:
        parser.error(
            f"--steps must be at least 2 and --repeats at least 1; got "
            f"{args.steps} and {args.repeats}"
        )
    reason = harness.missing_browser_reason()
    if reason:
        parser.error(reason)

    models_dir = Path(tempfile.mkdtemp(prefix="lrml-bench-webgl-"))
    log_path = models_dir.parent / f"{models_dir.name}-server.log"
    errors: list[str] = []
    try:
        train_run(models_dir)
        server = harness.StreamlitServer(models_dir, log_path).start()
        try:
            version, renderer, results = benchmark(server, args, errors)
        finally:
            server.stop()
        errors += [
            f"server log: {text.splitlines()[-1]}"
            for text in server.tracebacks_since(0)
        ]
        report(version, renderer, results, args)
    finally:
        if not args.keep:
            shutil.rmtree(models_dir, ignore_errors=True)
    if errors or args.keep:
        print(f"Server log: {log_path}")
    else:
        log_path.unlink(missing_ok=True)
    if args.keep:
        print(f"Models folder kept: {models_dir}")
    print()
    return harness.print_errors(errors)


if __name__ == "__main__":
    sys.exit(main())
