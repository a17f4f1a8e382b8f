"""Recommend: one user's rating history and the model's top-K movies for them."""

import pandas as pd
import streamlit as st

from lrml.inference import MAX_K, LoadedRun, history, recommend
from pages import shared

shared.ensure_navigation()

ATTENTION_PAGE = "pages/attention.py"


def show_profile(loaded: LoadedRun, user_id: int, past: pd.DataFrame) -> None:
    users = loaded.dataset.users.set_index("user_id")
    parts = past["part"].value_counts()
    counts = f"{len(past)} ratings ({parts.get('train', 0)} for training"
    if parts.get("validation"):
        counts += ", the second latest for validation, the latest for test"
    counts += ")"
    if user_id in users.index:
        person = users.loc[user_id]
        st.markdown(
            f"**User {user_id}**: {person['age']} years, {person['gender']}, "
            f"{person['occupation']}, with {counts}."
        )
    else:
        st.markdown(f"**User {user_id}**: {counts}.")


def show_recommendations(
    loaded: LoadedRun, top: pd.DataFrame, k: int, include_seen: bool
) -> None:
    st.subheader(
        f"Top {k}" + (" (seen movies included)" if include_seen else " unseen movies")
    )
    columns = ["rank", "title", "year", "genres", "score"] + (
        ["seen"] if include_seen else []
    )
    st.dataframe(
        top[columns],
        hide_index=True,
        column_config={
            "year": st.column_config.NumberColumn(format="%d"),
            "score": st.column_config.NumberColumn(
                format="%.4f", help="-||p + r - q||. Higher ranks first."
            ),
        },
    )
    st.caption(
        f"Scores are negative distances under run {loaded.run.name}. "
        "Without the toggle, every movie the user rated, including the held-out "
        "validation and test movies, is left out."
    )


def show_explain_link(loaded: LoadedRun, top: pd.DataFrame) -> None:
    labels = shared.movie_labels(loaded)
    select_column, button_column = st.columns([2, 1], vertical_alignment="bottom")
    item_id = select_column.selectbox(
        "Explain a recommended movie",
        top["item_id"].tolist(),
        format_func=labels.__getitem__,
        key="recommend_explain_item",
    )
    if button_column.button(
        "Open on Attention",
        key="recommend_explain",
        icon=":material/arrow_forward:",
        width="stretch",
    ):
        shared.set_selection("item", int(item_id))
        st.switch_page(ATTENTION_PAGE, query_params=shared.selection_query_params())


def show_history(past: pd.DataFrame) -> None:
    st.subheader("History")
    st.dataframe(
        past[["title", "year", "genres", "rating", "date", "part"]],
        hide_index=True,
        column_config={
            "year": st.column_config.NumberColumn(format="%d"),
            "rating": st.column_config.NumberColumn(format="%.0f ★"),
        },
    )
    st.caption("Newest first. `part` is the split the rating fell into.")


st.title("Recommend")
loaded = shared.require_loaded_run()

user_column, k_column, seen_column = st.columns([3, 2, 1], vertical_alignment="bottom")
with user_column:
    user_id, user_index = shared.user_picker(loaded, "recommend_user")
k = k_column.slider("Number of movies (K)", 1, MAX_K, 10, key="recommend_k")
include_seen = seen_column.toggle(
    "Include seen movies",
    key="recommend_include_seen",
    help="Also rank movies the user rated.",
)

past = history(loaded, user_index)
show_profile(loaded, user_id, past)
try:
    top = recommend(loaded, user_index, k, exclude_seen=not include_seen)
except ValueError as error:
    st.error(str(error))
    st.stop()

left, right = st.columns(2)
with left:
    show_recommendations(loaded, top, k, include_seen)
    show_explain_link(loaded, top)
with right:
    show_history(past)
