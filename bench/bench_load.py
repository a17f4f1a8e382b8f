"""Load benchmark: browser sessions open the app at once, then browse every page.

Usage::

    .venv/bin/python bench/bench_load.py [--sessions 10] [--rounds 2] [--keep]

The script starts ``streamlit run app.py`` on 127.0.0.1 with $LRML_MODELS_DIR
pointing at a new, empty temporary folder, and drives Debian's Chromium
(``/usr/bin/chromium``, or $LRML_CHROMIUM) through Playwright:

1. First launch: every session opens the Home page at the same moment. The
   app starts the default training run on a first launch, so this checks that
   concurrent sessions start exactly one run, in exactly one process.
2. Browsing: once the run has saved its first weights, the script queues a
   second run that trains until the end, and each session clicks through
   every page in the sidebar ``--rounds`` times, starting at a different page.
   The sessions keep the default run selected, whose weights change with each
   better epoch while it trains.

For each page load it records two times from the click: until the page's
title is shown, and until the script run has ended (every element drawn). It
prints the median and 95th percentile of both, per page and overall, and every
error: exception or error boxes, JavaScript errors, tracebacks in the server
log, timeouts, and a run trained by more than one process. The exit status is
1 when there was any error. Timings depend on the machine and on what else runs
on it, so compare figures from the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import async_playwright

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from lrml.config import TrainConfig
from lrml.jobs import submit
from lrml.runs import LIVE_STATES, create_run, list_runs
from tests.e2e import harness

HOME = "Home"
HEADINGS = {HOME: "LRML Explorer"}
TARGET_P95_S = 3.0
LOAD_TIMEOUT_S = 180
WEIGHTS_TIMEOUT_S = 300
# Queued behind the default run, this run keeps a training process busy until
# the benchmark stops it: patience 0 turns early stopping off.
LONG_RUN = "bench-long"
LONG_CONFIG = TrainConfig(epochs=10_000, patience=0)


@dataclass
class Load:
    """One page load of one session."""

    session: int
    page: str
    shown_s: float | None
    complete_s: float | None
    while_training: bool
    errors: list[str] = field(default_factory=list)


@dataclass
class ProcessWatch:
    """The training processes seen under the models folder, sampled until stopped."""

    models_dir: Path
    max_per_run: dict[str, int] = field(default_factory=dict)
    stopped: bool = False

    async def run(self) -> None:
        while not self.stopped:
            self.sample()
            await asyncio.sleep(0.5)

    def sample(self) -> None:
        for name, pids in harness.training_processes(self.models_dir).items():
            self.max_per_run[name] = max(self.max_per_run.get(name, 0), len(pids))


def tree_cpu_seconds(root_pid: int) -> float:
    """Return the CPU seconds used by ``root_pid`` and its descendants, ended ones too.

    Ended descendants count through the children's times of the live process
    that reaped them.
    """
    root = psutil.Process(root_pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def training(models_dir: Path) -> bool:
    """Return whether any run in ``models_dir`` has a live training process."""
    return any(
        run.status().get("state") in LIVE_STATES for run in list_runs(models_dir)
    )


def heading_of(title: str) -> str:
    return HEADINGS.get(title, title)


async def new_page(browser, errors: list[str]):
    context = await browser.new_context(viewport=harness.VIEWPORT)
    page = await context.new_page()
    page.on("pageerror", lambda error: errors.append(f"JavaScript error: {error}"))
    context.on(
        "request",
        lambda request: (
            harness.leaves_loopback(request.url)
            and errors.append(f"request outside loopback: {request.url}")
        ),
    )
    return context, page


async def wait_for_heading(page, title: str) -> None:
    main = page.locator(harness.MAIN_SELECTOR)
    heading = main.get_by_role("heading", name=heading_of(title), exact=True)
    await heading.first.wait_for(timeout=LOAD_TIMEOUT_S * 1000)


async def wait_until_idle(page) -> None:
    await page.locator(harness.IDLE_SELECTOR).wait_for(
        state="attached", timeout=LOAD_TIMEOUT_S * 1000
    )


async def page_errors(page, javascript_errors: list[str]) -> list[str]:
    boxes = await page.locator(harness.ERROR_SELECTOR).all_inner_texts()
    errors = [f"error box: {text.strip()[:300]}" for text in boxes]
    errors += javascript_errors
    javascript_errors.clear()
    return errors


async def open_home(browser, server, session: int, models_dir: Path):
    """Open the Home page in a new context.

    Returns the context, the page, the page's list of JavaScript errors and the load.
    """
    javascript_errors: list[str] = []
    context, page = await new_page(browser, javascript_errors)
    start = time.perf_counter()
    shown = complete = None
    errors: list[str] = []
    try:
        await page.goto(server.url("/"), timeout=LOAD_TIMEOUT_S * 1000)
        await wait_for_heading(page, HOME)
        shown = time.perf_counter() - start
        await wait_until_idle(page)
        complete = time.perf_counter() - start
    except PlaywrightError as error:
        errors.append(f"{type(error).__name__}: {str(error).splitlines()[0]}")
    errors += await page_errors(page, javascript_errors)
    load = Load(session, HOME, shown, complete, training(models_dir), errors)
    return context, page, javascript_errors, load


async def browse(
    page, javascript_errors, session: int, titles: list[str], rounds: int, models_dir
) -> list[Load]:
    """Click through ``titles`` ``rounds`` times, from title number ``session``."""
    loads = []
    order = titles[session % len(titles) :] + titles[: session % len(titles)]
    current = HOME
    for title in [title for _ in range(rounds) for title in order]:
        if title == current:
            continue
        while_training = training(models_dir)
        start = time.perf_counter()
        shown = complete = None
        errors: list[str] = []
        try:
            link = page.locator(harness.NAV_LINK_SELECTOR).filter(has_text=title)
            await link.first.click()
            await wait_for_heading(page, title)
            shown = time.perf_counter() - start
            # The new page's heading comes from the new script run, so an idle
            # page from here on means that run has ended.
            await wait_until_idle(page)
            complete = time.perf_counter() - start
        except PlaywrightError as error:
            errors.append(f"{type(error).__name__}: {str(error).splitlines()[0]}")
        errors += await page_errors(page, javascript_errors)
        loads.append(Load(session, title, shown, complete, while_training, errors))
        current = title
    return loads


async def wait_for_weights(models_dir: Path) -> float:
    """Wait until a run has weights, and return the seconds waited."""
    start = time.perf_counter()
    while time.perf_counter() - start < WEIGHTS_TIMEOUT_S:
        if any(run.has_weights() for run in list_runs(models_dir)):
            return time.perf_counter() - start
        await asyncio.sleep(0.5)
    raise TimeoutError(f"no run in {models_dir} saved weights in {WEIGHTS_TIMEOUT_S} s")


async def benchmark(
    args, server, models_dir: Path
) -> tuple[list[Load], list[Load], dict]:
    """Run both phases, and return the first-launch loads, browsing loads and facts."""
    watch = ProcessWatch(models_dir)
    watcher = asyncio.create_task(watch.run())
    facts: dict = {}
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(harness.chromium_path()), args=harness.CHROMIUM_ARGS
        )
        opened = await asyncio.gather(
            *(
                open_home(browser, server, session, models_dir)
                for session in range(args.sessions)
            )
        )
        launch_loads = [load for _, _, _, load in opened]
        facts["runs_after_launch"] = [run.name for run in list_runs(models_dir)]
        facts["weights_wait_s"] = await wait_for_weights(models_dir)
        submit(create_run(LONG_CONFIG, name=LONG_RUN, root=models_dir))

        titles = await sidebar_titles(opened[0][1])
        facts["pages"] = titles
        cpu_before = cpu_split(server)
        browse_start = time.perf_counter()
        browsed = await asyncio.gather(
            *(
                browse(page, errors, session, titles, args.rounds, models_dir)
                for session, (_, page, errors, _) in enumerate(opened)
            )
        )
        browse_loads = [load for session_loads in browsed for load in session_loads]
        cpu_after = cpu_split(server)
        facts["browse_wall_s"] = time.perf_counter() - browse_start
        facts["cpu_s"] = {
            part: cpu_after[part] - cpu_before[part] for part in cpu_after
        }
        facts["runs_at_end"] = {
            run.name: "{state}, epoch {epoch}".format(
                state=run.status().get("state"), epoch=run.status().get("epoch", 0)
            )
            for run in list_runs(models_dir)
        }
        for context, _, _, _ in opened:
            await context.close()
        await browser.close()
    watch.stopped = True
    await watcher
    watch.sample()
    facts["max_processes_per_run"] = watch.max_per_run
    return launch_loads, browse_loads, facts


def cpu_split(server) -> dict[str, float]:
    """Return the CPU seconds so far of the server (with its training processes)
    and of the browsers (Chromium and Playwright's driver)."""
    server_s = tree_cpu_seconds(server.process.pid)
    everything_s = tree_cpu_seconds(os.getpid())
    own = os.times()
    return {
        "server and training": server_s,
        "browsers": everything_s - server_s - (own.user + own.system),
    }


async def sidebar_titles(page) -> list[str]:
    titles = []
    for text in await page.locator(harness.NAV_LINK_SELECTOR).all_inner_texts():
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            titles.append(lines[-1])
    return titles


def percentiles(values: list[float]) -> str:
    if not values:
        return f"{'-':>7} {'-':>7}"
    return f"{np.median(values):7.2f} {np.percentile(values, 95):7.2f}"


def times(loads: list[Load]) -> str:
    shown = [load.shown_s for load in loads if load.shown_s is not None]
    complete = [load.complete_s for load in loads if load.complete_s is not None]
    return f"{percentiles(shown)}   {percentiles(complete)}"


def report(
    launch: list[Load], browsing: list[Load], facts: dict, tracebacks: list[str], args
) -> int:
    """Print the figures and return the exit status: 1 on any error."""
    loads = launch + browsing
    errors = [
        f"session {load.session}, {load.page}: {error}"
        for load in loads
        for error in load.errors
    ]
    errors += [f"server log: {text.splitlines()[-1]}" for text in tracebacks]
    runs = facts["runs_after_launch"]
    if len(runs) != 1:
        errors.append(f"the first launch created {len(runs)} runs: {runs}")
    for name, count in facts["max_processes_per_run"].items():
        if count > 1:
            errors.append(f"run {name!r} was trained by {count} processes at once")

    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} at the end. Streamlit on 127.0.0.1, Chromium "
        f"{harness.chromium_path()}."
    )
    print(
        f"First launch: sessions opening Home at once: {args.sessions}; runs created: "
        f"{runs}; most training processes seen at once per run: "
        f"{facts['max_processes_per_run']}. First weights after "
        f"{facts['weights_wait_s']:.0f} s."
    )
    during = sum(load.while_training for load in browsing)
    print(
        f"Browsing: {len(browsing)} page loads (sessions: {args.sessions}, rounds: "
        f"{args.rounds}, pages: {', '.join(facts['pages'])}), {during} of them "
        f"started while a run trained. Runs when browsing ended: "
        f"{facts['runs_at_end']}."
    )
    print()
    print(f"{'page':<20} {'loads':>5}   {'title shown (s)':^15}   {'complete (s)':^15}")
    print(f"{'':<20} {'':>5}   {'median':>7} {'p95':>7}   {'median':>7} {'p95':>7}")
    print(f"{'Home, first launch':<20} {len(launch):>5}   {times(launch)}")
    for title in facts["pages"]:
        chosen = [load for load in browsing if load.page == title]
        print(f"{title:<20} {len(chosen):>5}   {times(chosen)}")
    print(f"{'all browsing':<20} {len(browsing):>5}   {times(browsing)}")
    print()

    for label, attribute in (("title shown", "shown_s"), ("complete", "complete_s")):
        values = [getattr(load, attribute) for load in browsing]
        values = [value for value in values if value is not None]
        p95 = float(np.percentile(values, 95)) if values else float("nan")
        verdict = "met" if p95 < TARGET_P95_S else "missed"
        print(
            f"Target: p95 under {TARGET_P95_S:.0f} s while browsing. {label}: "
            f"{p95:.2f} s, {verdict}."
        )
    print(
        "A page that polls while a run trains (Train) is rarely idle, so its "
        "complete times include polling reruns."
    )
    capacity = facts["browse_wall_s"] * (os.cpu_count() or 1)
    shares = ", ".join(
        f"{part} {seconds:.0f} s ({seconds / capacity:.0%})"
        for part, seconds in facts["cpu_s"].items()
    )
    print(
        f"CPU while browsing ({facts['browse_wall_s']:.0f} s on {os.cpu_count()} "
        f"cores, {capacity:.0f} CPU s available): {shares}. The browsers run on "
        "the same cores as the server here."
    )
    print()
    return harness.print_errors(errors)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10, help="browser sessions")
    parser.add_argument(
        "--rounds", type=int, default=2, help="passes of each session over every page"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary models folder"
    )
    args = parser.parse_args()
    if args.sessions < 1 or args.rounds < 1:
        parser.error("--sessions and --rounds must be at least 1")
    reason = harness.missing_browser_reason()
    if reason:
        parser.error(reason)

    models_dir = Path(tempfile.mkdtemp(prefix="lrml-bench-load-"))
    log_path = models_dir.parent / f"{models_dir.name}-server.log"
    server = harness.StreamlitServer(models_dir, log_path).start()
    try:
        launch, browsing, facts = asyncio.run(benchmark(args, server, models_dir))
    finally:
        server.stop()
    status = report(launch, browsing, facts, server.tracebacks_since(0), args)
    print(f"Server log: {log_path}")
    if args.keep:
        print(f"Models folder kept: {models_dir}")
    else:
        shutil.rmtree(models_dir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
