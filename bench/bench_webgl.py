"""WebGL benchmark: how fast the Embeddings map redraws, timed inside the browser.

Usage::

    .venv/bin/python bench/bench_webgl.py [--steps 20] [--repeats 3] [--keep]

The script trains a small run on MovieLens-100K (2 epochs, embedding_dim 8,
memory_size 4) into a new temporary $LRML_MODELS_DIR. It starts ``streamlit run
app.py`` on 127.0.0.1 and a free port, and opens the Embeddings page in Debian's
Chromium (``/usr/bin/chromium``, or $LRML_CHROMIUM) through Playwright. Server
and browser start as in the browser tests (``tests/e2e/harness.py``).

It measures two maps, both projected with PCA, so that no UMAP computes on the
same cores while it times:

1. the page's default points and sample size (users and movies, 5,000 at most,
   so every one of the 2,625 users and movies of MovieLens-100K);
2. the largest map the page offers: "Translated users p + r of training pairs,
   with the movies" at the largest value of the sample-size slider. It contains
   every movie plus one ``p + r`` point per sampled training pair, so it has
   more points than any other kind at the same sample size.

For each map it reads the WebGL renderer and the points in the chart's traces.
Then it times ``--steps`` steps of each action, ``--repeats`` times, in the page
with ``performance.now()``. The actions are zoom in and zoom out
(``Plotly.relayout`` of both axis ranges by a factor of 0.9 around the centre),
pan (a shift of 5 % of the x range) and hover (``Plotly.Fx.hover`` on a point
of the largest trace). A step
ends when the relayout promise has resolved and two animation frames have
passed, so the frame with the new picture has been painted. Python does not
take part in the timed steps.

The exit status is 1 on any browser console error, JavaScript exception, error
box on the page or traceback in the server log. Timings depend on the machine
and on what else runs on it, so compare figures from the same machine.
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
FRAME_BUDGET_MS = 1000 / 60
INTERACTIVE_MS = 100
ACTIONS = ("zoom in", "zoom out", "pan", "hover")
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

# True once the chart whose title contains ``title`` (not a PCA preview) is drawn.
# Streamlit 1.67 wraps the title in <b> tags, sometimes twice, so no prefix test.
CHART_READY_JS = """([selector, title]) => {
    const chart = document.querySelector(selector);
    if (!chart || !chart._fullLayout || !chart.data) return false;
    const text = (chart._fullLayout.title && chart._fullLayout.title.text) || '';
    return text.includes(title) && !text.includes('preview');
}"""

# Lists the traces from ``_fullData``, where Plotly has decoded the base64 arrays
# that plotly.py sends, with the attributes that contain one value per point.
TRACES_JS = """(selector) => {
    const chart = document.querySelector(selector);
    return chart._fullData.map((trace) => ({
        name: trace.name,
        type: trace.type,
        points: trace._length ?? (trace.x ? trace.x.length : 0),
        per_point: Object.entries(trace)
            .concat(Object.entries(trace.marker || {}).map(
                ([key, value]) => ['marker.' + key, value]))
            .filter(([key, value]) => !key.startsWith('_')
                && (Array.isArray(value) || ArrayBuffer.isView(value)))
            .map(([key]) => key),
    }));
}"""

# Times ``steps`` of each action on the chart and returns milliseconds per action:
# ``times`` until painted, ``resolved`` until the relayout promise resolved (for
# hover, until Fx.hover returned). window.Plotly is the Plotly that Streamlit's
# chart code sets. Each hover step first waits 80 ms, untimed, because Plotly
# delays a hover call that comes less than 50 ms (HOVERMINTIME) after the last.
TIMING_JS = """async ({selector, steps}) => {
    const chart = document.querySelector(selector);
    const Plotly = window.Plotly;
    const nextFrame = () => new Promise((resolve) => requestAnimationFrame(resolve));
    const painted = async () => { await nextFrame(); await nextFrame(); };
    const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
    const times = {'zoom in': [], 'zoom out': [], 'pan': [], 'hover': []};
    const resolved = {'zoom in': [], 'zoom out': [], 'pan': [], 'hover': []};
    let hovered = 0;

    const timeRelayout = async (action, update) => {
        const start = performance.now();
        await Plotly.relayout(chart, update);
        resolved[action].push(performance.now() - start);
        await painted();
        times[action].push(performance.now() - start);
    };
    const ranges = () => [
        chart._fullLayout.xaxis.range.slice(), chart._fullLayout.yaxis.range.slice(),
    ];
    const scaled = (range, factor) => {
        const centre = (range[0] + range[1]) / 2;
        const half = (range[1] - range[0]) / 2 * factor;
        return [centre - half, centre + half];
    };
    const zoom = async (action, factor) => {
        for (let step = 0; step < steps; step++) {
            const [x, y] = ranges();
            await timeRelayout(action, {
                'xaxis.range': scaled(x, factor), 'yaxis.range': scaled(y, factor),
            });
        }
    };

    await Plotly.relayout(chart, {'xaxis.autorange': true, 'yaxis.autorange': true});
    await painted();
    await zoom('zoom in', 0.9);
    await zoom('zoom out', 1 / 0.9);
    for (let step = 0; step < steps; step++) {
        const [x] = ranges();
        const shift = (x[1] - x[0]) * 0.05 * (step < steps / 2 ? 1 : -1);
        await timeRelayout('pan', {'xaxis.range': [x[0] + shift, x[1] + shift]});
    }

    await Plotly.relayout(chart, {'xaxis.autorange': true, 'yaxis.autorange': true});
    await painted();
    const xaxis = chart._fullLayout.xaxis;
    const yaxis = chart._fullLayout.yaxis;
    const largest = chart._fullData.reduce(
        (best, trace) => (trace._length > best._length ? trace : best));
    for (let step = 0; step < steps; step++) {
        const index = Math.floor((step + 0.5) * largest._length / steps);
        const target = {
            xpx: xaxis.c2p(largest.x[index]), ypx: yaxis.c2p(largest.y[index]),
        };
        Plotly.Fx.unhover(chart);
        await sleep(80);
        await painted();
        const start = performance.now();
        Plotly.Fx.hover(chart, target, 'xy');
        resolved['hover'].push(performance.now() - start);
        await painted();
        times['hover'].push(performance.now() - start);
        if (chart._hoverdata && chart._hoverdata.length) hovered += 1;
    }
    Plotly.Fx.unhover(chart);
    return {times, resolved, hovered};
}"""


@dataclass
class MapResult:
    """The timings of one map: milliseconds per action, all repeats together."""

    label: str
    points_text: str
    traces: list[dict]
    draw_s: float
    times: dict[str, list[float]] = field(default_factory=dict)
    resolved: dict[str, list[float]] = field(default_factory=dict)
    repeat_medians: dict[str, list[float]] = field(default_factory=dict)
    hovered: int = 0
    hover_steps: int = 0

    @property
    def scattergl_points(self) -> int:
        return sum(t["points"] for t in self.traces if t["type"] == "scattergl")

    @property
    def all_points(self) -> int:
        return sum(t["points"] for t in self.traces)


def train_run(models_dir: Path) -> None:
    torch.set_num_threads(1)
    from lrml.runs import create_run

    jobs.train_in_foreground(create_run(RUN_CONFIG, name=RUN_NAME, root=models_dir))


def chart_title(kind: str) -> str:
    """Return the text that the title of a PCA map of ``kind`` contains."""
    return f"PCA of {KINDS[kind].lower()}"


def wait_for_chart(page, kind: str) -> None:
    page.wait_for_function(
        CHART_READY_JS,
        arg=[CHART_SELECTOR, chart_title(kind)],
        timeout=PAGE_TIMEOUT_S * 1000,
        polling=250,
    )
    harness.wait_until_idle(page, PAGE_TIMEOUT_S)


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


def project(page, kind: str, largest_sample: bool) -> tuple[str, float]:
    """Choose PCA, ``kind`` and optionally the largest sample size, then project.

    Returns the sample size the slider shows and the seconds from the click on
    "Project" until the chart is drawn.
    """
    sidebar_widget(page, "stRadio", "Method").get_by_text("PCA", exact=True).click()
    points = sidebar_widget(page, "stSelectbox", "Points")
    points.locator("input").first.click()
    page.locator('[role="option"]').filter(has_text=KINDS[kind]).first.click()
    slider = sidebar_widget(page, "stSlider", "Sample size")
    if largest_sample:
        slider.get_by_role("slider").focus()
        page.keyboard.press("End")
    sample = slider.locator('[data-testid="stSliderThumbValue"]').inner_text()
    start = time.perf_counter()
    page.get_by_role("button", name="Project").click()
    wait_for_chart(page, kind)
    page.evaluate(
        "() => new Promise((resolve) => requestAnimationFrame(() => "
        "requestAnimationFrame(resolve)))"
    )
    return sample, time.perf_counter() - start


def points_caption(page) -> str:
    """Return the page's "PCA of N points" line, which counts the projected points."""
    text = harness.main_text(page)
    for line in text.splitlines():
        if line.startswith("PCA of ") and "points" in line:
            return line.strip()
    return "(no 'PCA of N points' line found)"


def measure(page, label: str, draw_s: float, steps: int, repeats: int) -> MapResult:
    result = MapResult(
        label=label,
        points_text=points_caption(page),
        traces=page.evaluate(TRACES_JS, CHART_SELECTOR),
        draw_s=draw_s,
        times={action: [] for action in ACTIONS},
        resolved={action: [] for action in ACTIONS},
        repeat_medians={action: [] for action in ACTIONS},
    )
    for _ in range(repeats):
        timed = page.evaluate(TIMING_JS, {"selector": CHART_SELECTOR, "steps": steps})
        for action in ACTIONS:
            result.times[action] += timed["times"][action]
            result.resolved[action] += timed["resolved"][action]
            result.repeat_medians[action].append(
                float(np.median(timed["times"][action]))
            )
        result.hovered += timed["hovered"]
        result.hover_steps += steps
    return result


def benchmark(server, args, errors: list[str]) -> tuple[str, str, list[MapResult]]:
    """Open the page, time both maps, and return the browser, renderer and results."""
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
            for kind, largest in ((DEFAULT_KIND, False), (LARGEST_KIND, True)):
                sample, draw_s = project(page, kind, largest)
                label = f"{KINDS[kind]}, sample size {sample}"
                results.append(measure(page, label, draw_s, args.steps, args.repeats))
                errors += [
                    f"error box: {text}" for text in harness.error_messages(page)
                ]
            context.close()
        finally:
            browser.close()
    return version, renderer, results


def milliseconds(values: list[float]) -> tuple[float, float]:
    return float(np.median(values)), float(np.percentile(values, 95))


def ratio(large: list[float], small: list[float]) -> float:
    return float(np.median(large) / np.median(small))


def report(version: str, renderer: str | None, results: list[MapResult], args) -> None:
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} at the end. Chromium {version} "
        f"({harness.chromium_path()}), flags {' '.join(harness.CHROMIUM_ARGS)}, "
        f"viewport {harness.VIEWPORT['width']}x{harness.VIEWPORT['height']}."
    )
    print(f"WebGL renderer (UNMASKED_RENDERER_WEBGL): {renderer}")
    on_cpu = renderer is not None and any(
        word in renderer.lower() for word in CPU_RENDERERS
    )
    if on_cpu:
        print(
            "This headless Chromium renders WebGL on the CPU (software rasteriser), "
            "so these figures are an upper bound for a browser that renders WebGL "
            "on a GPU."
        )
    print(
        f"Steps: {args.steps} per action, repeated {args.repeats} times; each step "
        "is timed in the page from the call until two animation frames later, so "
        "a step takes at least one frame interval (16.7 ms at 60 Hz). 'resolved' "
        "is the median time until Plotly.relayout's promise resolved (hover: until "
        "Plotly.Fx.hover returned), before the frames."
    )
    for result in results:
        print()
        print(f"Map: {result.label}. Page: {result.points_text}.")
        print(
            f"Points in the chart's traces: {result.scattergl_points:,} in scattergl "
            f"traces, {result.all_points:,} in all {len(result.traces)} traces."
        )
        for trace in result.traces:
            arrays = ", ".join(trace["per_point"]) or "none"
            print(
                f"  {trace['type']:<9} {trace['points']:>7,}  {trace['name']}"
                f"  (per-point arrays: {arrays})"
            )
        print(f"From the click on Project to the drawn chart: {result.draw_s:.1f} s.")
        print(
            f"{'action':<10} {'median ms':>10} {'p95 ms':>8} {'fps at median':>14}"
            f" {'resolved ms':>12}   medians of each repeat (ms)"
        )
        for action in ACTIONS:
            median, p95 = milliseconds(result.times[action])
            resolved = float(np.median(result.resolved[action]))
            repeats = ", ".join(
                f"{value:.0f}" for value in result.repeat_medians[action]
            )
            print(
                f"{action:<10} {median:>10.1f} {p95:>8.1f} {1000 / median:>14.1f}"
                f" {resolved:>12.1f}   {repeats}"
            )
        print(
            f"Hover steps that showed hover data: {result.hovered} of "
            f"{result.hover_steps}."
        )

    if len(results) == 2:
        small, large = results
        print()
        print(
            f"Ratio, {large.scattergl_points:,} to {small.scattergl_points:,} "
            "scattergl points (median over median): "
            + ", ".join(
                f"{action} {ratio(large.times[action], small.times[action]):.1f}x"
                for action in ACTIONS
            )
            + "."
        )
    print(
        f"Thresholds: 60 fps needs {FRAME_BUDGET_MS:.1f} ms per redraw; a response "
        f"within {INTERACTIVE_MS} ms feels immediate."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=20, help="timed steps of each action per repeat"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="repeats of the sequence of steps"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary models folder"
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
    print(f"Server log: {log_path}")
    if args.keep:
        print(f"Models folder kept: {models_dir}")
    print()
    if errors:
        print(f"Errors ({len(errors)}):")
        for error in errors:
            print(f"  {error}")
        return 1
    print("Errors: none.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
