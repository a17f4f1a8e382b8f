"""Tour: a guided demo that steps through saved deep links to the other pages."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from pages import shared

shared.ensure_navigation()

STEP_KEY = "tour_step"
STEP_PARAM = "step"
HOME_PAGE = "pages/home.py"


@dataclass(frozen=True)
class TourStep:
    """One stop of the tour: a page of the app opened with saved query parameters."""

    title: str
    caption: str
    page: str
    params: dict[str, str] = field(default_factory=dict)


# MovieLens-100K ids: user 42 rated 183 movies, and movie 50 is Star Wars (1977).
STEPS = (
    TourStep(
        "What LRML computes",
        "Users and movies share one metric space. For each pair, attention over "
        "a few memory slots builds a relation vector that moves the user towards "
        "the movies they like. The Home page shows the formula, the selected run "
        "and the dataset.",
        HOME_PAGE,
    ),
    TourStep(
        "Training a model",
        "Each run trains in a background process. The Train page follows the "
        "loss and the validation HR@10 epoch by epoch, and starts new runs from a "
        "form.",
        "pages/train.py",
    ),
    TourStep(
        "Recommendations for one user",
        "User 42's rating history beside the ten unseen movies that the model "
        "ranks highest for them.",
        "pages/recommend.py",
        {"user": "42"},
    ),
    TourStep(
        "Why a movie scores as it does",
        "The attention of user 42 and Star Wars (1977) over the memory slots, and "
        "how the relation vector changes their distance.",
        "pages/attention.py",
        {"user": "42", "item": "50"},
    ),
    TourStep(
        "The map of users and movies",
        "A 2-D projection of every user and movie vector, with user 42 and Star "
        "Wars (1977) marked.",
        "pages/embeddings.py",
        {"user": "42", "item": "50"},
    ),
)


def current_step() -> int:
    """Return the 0-based step: session state, else ``?step=`` (1-based), else 0."""
    if STEP_KEY not in st.session_state:
        requested = shared.parse_id(st.query_params.get(STEP_PARAM))
        st.session_state[STEP_KEY] = (requested or 1) - 1
    step = min(max(int(st.session_state[STEP_KEY]), 0), len(STEPS) - 1)
    st.session_state[STEP_KEY] = step
    st.query_params[STEP_PARAM] = str(step + 1)
    return step


def move_step(offset: int) -> None:
    """Button callback: go ``offset`` steps forward (negative: back)."""
    st.session_state[STEP_KEY] = st.session_state[STEP_KEY] + offset


def step_query_params(step: TourStep) -> dict[str, str]:
    """Return the query parameters that open ``step``: the selection, then its own."""
    return {**shared.selection_query_params(), **step.params}


def deep_link(step: TourStep) -> str:
    """Return the path and query string that open ``step`` in a new session."""
    path = "/" if step.page == HOME_PAGE else "/" + Path(step.page).stem
    return path + "?" + urllib.parse.urlencode(step_query_params(step))


def open_step(step: TourStep) -> None:
    """Make the step's user and movie the selection, then switch to its page.

    The pages read the selection from session state and take query parameters
    only on a session's first run, so the step's ids go into session state first.
    """
    for key, value in step.params.items():
        if key in shared.SELECTION_KEYS:
            shared.set_selection(key, value)
    st.switch_page(step.page, query_params=step_query_params(step))


def show_step(index: int) -> None:
    step = STEPS[index]
    st.progress((index + 1) / len(STEPS))
    st.caption(f"Step {index + 1} of {len(STEPS)}")
    st.subheader(step.title)
    st.markdown(step.caption)
    st.caption(f"Deep link: `{deep_link(step)}`")

    back_column, open_column, next_column = st.columns(3)
    back_column.button(
        "Back",
        key="tour_back",
        icon=":material/arrow_back:",
        width="stretch",
        disabled=index == 0,
        on_click=move_step,
        args=(-1,),
    )
    if open_column.button(
        f"Open {Path(step.page).stem.capitalize()}",
        key="tour_open",
        icon=":material/open_in_new:",
        type="primary",
        width="stretch",
    ):
        open_step(step)
    next_column.button(
        "Next",
        key="tour_next",
        icon=":material/arrow_forward:",
        width="stretch",
        disabled=index == len(STEPS) - 1,
        on_click=move_step,
        args=(1,),
    )


def show_outline(index: int) -> None:
    st.subheader("All steps")
    lines = []
    for position, step in enumerate(STEPS):
        title = f"**{step.title}**" if position == index else step.title
        lines.append(f"{position + 1}. {title}")
    st.markdown("\n".join(lines))


st.title("Tour")
st.caption(
    "A short demo in five steps. Next and Back move through the steps, and Open "
    "goes to the step's page with its user and movie selected. Come back with "
    "the browser's Back button or the Tour entry in the sidebar. Add "
    "`?present=1` to any address, or switch on Presentation mode in the sidebar, "
    "for larger text and a collapsed sidebar."
)
step_index = current_step()
show_step(step_index)
show_outline(step_index)
