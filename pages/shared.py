"""Selection state, cached loaders and pickers shared by the app's pages.

The selected run, user and movie live in ``st.session_state`` under ``"run"``,
``"user"`` and ``"item"``, and are copied into ``st.query_params`` so that a
page's URL can be bookmarked. Widgets have keys of their own and copy their
value into these entries on change, because Streamlit deletes a widget's state
when a page without that widget runs.

``app.py`` lists the pages with ``st.navigation``, and this module is not one of them.
"""

from __future__ import annotations

import random
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import torch

from lrml.data import Dataset, load_dataset
from lrml.inference import LoadedRun, load_run
from lrml.runs import ACTIVE_STATES, WEIGHTS_FILE, Run, list_runs, models_dir

SELECTION_KEYS = ("run", "user", "item")
RUN_WIDGET_KEY = "sidebar_run"
WAIT_REFRESH_SECONDS = 2
TRAIN_PAGE = "pages/train.py"


# Navigation --------------------------------------------------------------------


def ensure_navigation() -> None:
    """Rerun through ``app.py`` when Streamlit ran a page file on its own.

    With a folder named ``pages/`` beside the entry script, Streamlit 1.67
    starts in its older pages-folder mode: a fresh server's first request for a
    URL such as ``/recommend``, and every AppTest run, execute the page file
    without ``app.py``. Streamlit leaves that mode once ``st.navigation`` is
    called, so turning it off and rerunning lets ``app.py`` open the same page.
    """
    # NOTE: PagesManager is internal to Streamlit; check this after upgrades.
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


# Selection state ---------------------------------------------------------------


def restore_selection() -> None:
    """Sync the selection between the URL and session state.

    A session's first run takes ``run``, ``user`` and ``item`` from the URL.
    Later runs write session state back into the URL, because Streamlit clears
    the query parameters when the user switches pages.
    """
    for key in SELECTION_KEYS:
        if key not in st.session_state and key in st.query_params:
            st.session_state[key] = st.query_params[key]
    for key in SELECTION_KEYS:
        value = st.session_state.get(key)
        if value is not None and st.query_params.get(key) != str(value):
            st.query_params[key] = str(value)


def set_selection(key: str, value: Any) -> None:
    """Store one selection entry in session state and in the URL."""
    st.session_state[key] = value
    st.query_params[key] = str(value)


def selection_query_params() -> dict[str, str]:
    """Return the selection as query parameters, for ``st.switch_page``."""
    return {
        key: str(st.session_state[key])
        for key in SELECTION_KEYS
        if st.session_state.get(key) is not None
    }


def copy_widget_to_selection(widget_key: str, selection_key: str) -> None:
    """Widget callback: store the widget's new value as the selection."""
    # The browser also sends the value of a selector drawn before the
    # selection changed; only the current one may change the selection.
    stale = widget_key.startswith(RUN_WIDGET_KEY + "_") and widget_key != (
        f"{RUN_WIDGET_KEY}_{st.session_state.get('run')}"
    )
    if stale:
        return
    set_selection(selection_key, st.session_state[widget_key])


def parse_id(value: Any) -> int | None:
    """Return ``value`` as an integer MovieLens id, or None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    try:
        return int(str(value).strip())
    except ValueError:
        return None


# Runs --------------------------------------------------------------------------


def default_run(runs: list[Run]) -> Run:
    """Return the newest run that has weights, or the newest run if none has."""
    return next((run for run in runs if run.has_weights()), runs[0])


def describe_run(run: Run, status: dict[str, Any]) -> str:
    """Return a one-line label such as ``default (running, epoch 3/30)``."""
    state = status.get("state", "unknown")
    done = status.get("epoch", 0)
    try:
        total = run.config.epochs
    except (OSError, ValueError):
        return f"{run.name} ({state})"
    return f"{run.name} ({state}, epoch {done}/{total})"


def run_selector() -> Run | None:
    """Draw the sidebar's run selector and return the selected run.

    An unknown run name from the URL gets an error, and the newest run with
    weights is selected in its place.
    """
    runs = list_runs()
    if not runs:
        st.sidebar.info("No runs yet: start one on the Train page.")
        return None

    by_name = {run.name: run for run in runs}
    requested = st.session_state.get("run")
    if requested is not None and str(requested) not in by_name:
        fallback = default_run(runs)
        st.error(
            f"No run named {str(requested)!r} in {models_dir()}. "
            f"Showing run {fallback.name!r} instead. Pick another run in the sidebar."
        )
        requested = None
    name = str(requested) if requested is not None else default_run(runs).name
    set_selection("run", name)

    statuses = {run.name: run.status() for run in runs}
    names = list(by_name)
    widget_key = f"{RUN_WIDGET_KEY}_{name}"
    st.sidebar.selectbox(
        "Run",
        names,
        index=names.index(name),
        key=widget_key,
        on_change=copy_widget_to_selection,
        args=(widget_key, "run"),
        help="The training run whose model the Home, Recommend, Attention and "
        "Embeddings pages show. Runs are folders in " + str(models_dir()) + ".",
    )
    st.sidebar.caption(describe_run(by_name[name], statuses[name]))
    return by_name[name]


def current_run() -> Run | None:
    """Return the selected run, or the default run if the selection is missing or unknown.

    Returns None when the models folder contains no run.
    """
    runs = list_runs()
    if not runs:
        return None
    by_name = {run.name: run for run in runs}
    name = st.session_state.get("run")
    if name is not None and str(name) in by_name:
        return by_name[str(name)]
    run = default_run(runs)
    set_selection("run", run.name)
    return run


def training_message(run: Run, status: dict[str, Any]) -> str:
    """Return a sentence on a run's progress for st.info boxes."""
    done = status.get("epoch", 0)
    try:
        total = f" of {run.config.epochs}"
    except (OSError, ValueError):
        total = ""
    message = status.get("message") or ""
    detail = f" ({message})" if message else ""
    return (
        f"Run **{run.name}** is {status.get('state', 'unknown')}: "
        f"{done}{total} epochs done{detail}."
    )


# Cached loaders ----------------------------------------------------------------


@st.cache_resource(show_spinner="Loading the dataset…")
def cached_dataset(name: str) -> Dataset:
    """Return the dataset, loaded once per server process. Callers must not modify it."""
    return load_dataset(name)


@st.cache_resource(max_entries=4, show_spinner="Loading the model…")
def cached_loaded_run(run_path: str, weights_mtime_ns: int) -> LoadedRun:
    """Return the run at ``run_path`` with its model, dataset and split.

    ``weights_mtime_ns`` is only part of the cache key. Keying on the weights
    file's modification time makes a page pick up the weights of a newer best
    epoch while the run is still training.
    """
    run = Run(Path(run_path))
    return load_run(run_path, dataset=cached_dataset(run.config.dataset))


def weights_mtime_ns(run: Run) -> int:
    return (run.path / WEIGHTS_FILE).stat().st_mtime_ns


def require_loaded_run() -> LoadedRun:
    """Return the selected run's model, or show why there is none and stop the page.

    While the run trains its first epoch, a fragment polls the run folder and
    reruns the page once the first weights are saved.
    """
    run = current_run()
    if run is None:
        st.info("No training run exists yet. Start one on the Train page.")
        st.page_link(TRAIN_PAGE, label="Go to Train", icon=":material/model_training:")
        st.stop()

    if not run.has_weights():
        wait_for_weights(str(run.path))
        st.stop()

    try:
        return cached_loaded_run(str(run.path), weights_mtime_ns(run))
    except (FileNotFoundError, ValueError) as error:
        st.error(f"Could not load run {run.name!r}: {error}")
        st.stop()


@st.fragment(run_every=WAIT_REFRESH_SECONDS)
def wait_for_weights(run_path: str) -> None:
    """Show the progress of a run without weights, and rerun the page once it has them."""
    run = Run(Path(run_path))
    if run.has_weights():
        st.rerun()

    status = run.status()
    if status.get("state") in ACTIVE_STATES:
        st.info(
            training_message(run, status)
            + " This page shows its model once the first epoch's weights are "
            f"saved, and checks every {WAIT_REFRESH_SECONDS} seconds.",
            icon=":material/hourglass_top:",
        )
    else:
        st.error(
            f"Run **{run.name}** has no weights: it is {status.get('state')} "
            f"({status.get('message', 'no message')}). Pick another run in the "
            "sidebar, or start a new one on the Train page."
        )


# Users and movies --------------------------------------------------------------


def movie_label(title: str, year: Any) -> str:
    """Return ``Title (year)``, or the title alone when the year is unknown."""
    if pd.isna(year):
        return str(title)
    return f"{title} ({int(year)})"


def movie_labels(loaded: LoadedRun) -> dict[int, str]:
    """Return ``{item_id: "Title (year)"}`` for every movie of the run."""
    items = loaded.items
    return {
        int(item_id): movie_label(title, year)
        for item_id, title, year in zip(items["item_id"], items["title"], items["year"])
    }


def movie_label_of(loaded: LoadedRun, item_id: int) -> str:
    """Return ``Title (year)`` of one movie; cheaper than `movie_labels` for one."""
    row = loaded.items.iloc[loaded.item_index(item_id)]
    return movie_label(row["title"], row["year"])


def _choose_random_user(user_ids: list[Hashable]) -> None:
    set_selection("user", int(random.choice(user_ids)))


def user_picker(loaded: LoadedRun, widget_key: str) -> tuple[int, int]:
    """Draw a user id input and a Random user button.

    Returns
    -------
    (user_id, user_index)
        The selected MovieLens user id and its row in the model. An id that is
        not in the dataset shows an error and stops the page.
    """
    user_ids = loaded.split.user_vocab.ids
    value = st.session_state.get("user")
    user_id = parse_id(value)
    if value is not None and user_id is None:
        st.error(
            f"Invalid user id {str(value)!r}: MovieLens user ids are integers. "
            f"Showing user {user_ids[0]} instead."
        )
    if user_id is None:
        user_id = int(user_ids[0])
    set_selection("user", user_id)

    st.session_state[widget_key] = user_id
    input_column, button_column = st.columns([3, 2], vertical_alignment="bottom")
    input_column.number_input(
        "User id",
        step=1,
        key=widget_key,
        on_change=copy_widget_to_selection,
        args=(widget_key, "user"),
        help=f"MovieLens user id. This dataset has {len(user_ids)} users, "
        f"with ids from {min(user_ids)} to {max(user_ids)}.",
    )
    button_column.button(
        "Random user",
        key=f"{widget_key}_random",
        width="stretch",
        icon=":material/casino:",
        on_click=_choose_random_user,
        args=(user_ids,),
    )

    try:
        return user_id, loaded.user_index(user_id)
    except KeyError as error:
        st.error(error.args[0])
        st.stop()


def movie_picker(
    loaded: LoadedRun, widget_key: str, default_item_id: int
) -> tuple[int, int]:
    """Draw a movie selectbox that filters by title as the user types.

    Returns
    -------
    (item_id, item_index)
        The selected MovieLens movie id and its row in the model. An unknown id
        from the URL shows an error, and ``default_item_id`` is used instead.
    """
    labels = movie_labels(loaded)
    value = st.session_state.get("item")
    item_id = parse_id(value)
    if value is not None and item_id not in labels:
        st.error(
            f"Unknown movie id {str(value)!r}: this dataset has {len(labels)} movies, "
            f"with ids from {min(labels)} to {max(labels)}. Showing "
            f"{labels[default_item_id]!r} instead."
        )
        item_id = None
    if item_id is None:
        item_id = default_item_id
    set_selection("item", item_id)

    st.session_state[widget_key] = item_id
    st.selectbox(
        "Movie",
        list(labels),
        key=widget_key,
        format_func=labels.__getitem__,
        on_change=copy_widget_to_selection,
        args=(widget_key, "item"),
        help="Type part of a title to search.",
    )
    return item_id, loaded.item_index(item_id)


def embedding_vectors(loaded: LoadedRun) -> tuple[np.ndarray, np.ndarray]:
    """Return the clipped user and item vectors, as the model scores them.

    Returns
    -------
    (users, items)
        Arrays of shape (n_users, d) and (n_items, d).
    """
    model = loaded.model
    with torch.inference_mode():
        users = model.users(torch.arange(model.n_users)).numpy()  # (n_users, d)
        items = model.items(torch.arange(model.n_items)).numpy()  # (n_items, d)
    return users, items


# Colour-blind-safe colours -----------------------------------------------------

# The Okabe-Ito palette: orange, sky blue, bluish green, yellow, blue,
# vermillion, reddish purple, black. Its colours stay apart under the common
# colour-vision deficiencies.
OKABE_ITO = (
    "#E69F00",
    "#56B4E9",
    "#009E73",
    "#F0E442",
    "#0072B2",
    "#D55E00",
    "#CC79A7",
    "#000000",
)
# Plotly's continuous scales for values from low to high (Cividis is built to
# read the same with and without colour vision deficiency) and for signed
# values around zero (PuOr, a ColorBrewer scale marked colour-blind safe).
SEQUENTIAL_SCALE = "Cividis"
DIVERGING_SCALE = "PuOr"
