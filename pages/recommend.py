"""Recommend: pick a user, see their history, their top-K movies and similar movies."""

import random

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from lrml.inference import (
    MAX_K,
    LoadedRun,
    compare_top_k,
    find_users,
    genre_mix,
    history,
    recommend,
    similar_items,
)
from lrml.runs import list_runs
from pages import shared

shared.ensure_navigation()

ATTENTION_PAGE = "pages/attention.py"
SEARCH_TABLE_KEY = "recommend_search_table"
TOP_TABLE_KEY = "recommend_top_table"
OPEN_ATTENTION_KEY = "recommend_open_attention"
NO_BASELINE = ""
ORDER_LABELS = {
    "user_id": "user id",
    "most_active": "most active first",
    "least_active": "least active first",
}
MAX_SIMILAR = 50


# User search -------------------------------------------------------------------


def new_selected_row(event, table_key: str) -> int | None:
    """Return the row a table's selection event newly selected, else None.

    Streamlit keeps a keyed table's selection across reruns, even when its rows
    change, so only a selection that differs from the last one seen counts.
    A callback would not need this, but AppTest cannot trigger one for tables.
    """
    rows = list(event.selection.rows)
    seen_key = f"{table_key}_seen"
    if st.session_state.get(seen_key, []) == rows:
        return None
    st.session_state[seen_key] = rows
    return rows[0] if rows else None


def _choose_random_found_user(user_ids: list[int]) -> None:
    shared.set_selection("user", random.choice(user_ids))


def show_user_search(loaded: LoadedRun) -> None:
    """Draw demographic and activity filters, the matching users and a random pick."""
    users = loaded.users
    filters = {}
    age_column, gender_column, occupation_column, order_column = st.columns(4)
    ages = users["age"].dropna()
    if len(ages):
        low, high = int(ages.min()), int(ages.max())
        filters["min_age"], filters["max_age"] = age_column.slider(
            "Age", low, high, (low, high), key="recommend_search_age"
        )
    genders = sorted(users["gender"].dropna().unique())
    if genders:
        filters["genders"] = gender_column.multiselect(
            "Gender", genders, key="recommend_search_gender", placeholder="any"
        )
    occupations = sorted(users["occupation"].dropna().unique())
    if occupations:
        filters["occupations"] = occupation_column.multiselect(
            "Occupation",
            occupations,
            key="recommend_search_occupation",
            placeholder="any",
        )
    order = order_column.radio(
        "Order",
        list(ORDER_LABELS),
        format_func=ORDER_LABELS.__getitem__,
        key="recommend_search_order",
        help="Activity is the number of ratings in the dataset.",
    )

    found = find_users(loaded, order=order, **filters)
    skipped = int((users["train_pairs"] == 0).sum())
    if found.empty:
        st.info("No user with training ratings matches these filters. Widen them.")
        return
    found_ids = [int(user_id) for user_id in found["user_id"]]
    event = st.dataframe(
        found[["user_id", "age", "gender", "occupation", "ratings", "train_pairs"]],
        hide_index=True,
        height=240,
        key=SEARCH_TABLE_KEY,
        on_select="rerun",
        selection_mode="single-row",
        column_config={
            "ratings": st.column_config.NumberColumn(help="All ratings of the user."),
            "train_pairs": st.column_config.NumberColumn(
                "training pairs", help="Ratings in the training split."
            ),
        },
    )
    row = new_selected_row(event, SEARCH_TABLE_KEY)
    if row is not None:
        shared.set_selection("user", found_ids[row])
        # The user picker above has already drawn the previous user.
        st.rerun()
    caption_column, button_column = st.columns([3, 1], vertical_alignment="center")
    note = f" {skipped} users without ratings are not listed." if skipped else ""
    caption_column.caption(
        f"{len(found)} matching users. Select a row to show that user.{note}"
    )
    button_column.button(
        "Random matching user",
        key="recommend_search_random",
        icon=":material/casino:",
        width="stretch",
        on_click=_choose_random_found_user,
        args=(found_ids,),
    )


# Profile and history -----------------------------------------------------------


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


def show_history(loaded: LoadedRun, past: pd.DataFrame) -> None:
    st.subheader("History")
    st.dataframe(
        past[["title", "year", "genres", "rating", "date", "part"]],
        hide_index=True,
        height=300,
        column_config={
            "year": st.column_config.NumberColumn(format="%d"),
            "rating": st.column_config.NumberColumn(format="%.0f ★"),
        },
    )
    st.caption("Newest first. `part` is the split the rating fell into.")

    mix = genre_mix(loaded, past)
    if mix.empty:
        st.caption("None of these movies has a genre.")
        return
    figure = go.Figure(
        go.Bar(
            x=mix["movies"],
            y=mix["genre"],
            orientation="h",
            marker_color=shared.OKABE_ITO[4],
            customdata=mix[["share", "mean_rating"]],
            hovertemplate="%{y}: %{x} movies (%{customdata[0]:.0%})<br>"
            "mean rating %{customdata[1]:.2f}<extra></extra>",
        )
    )
    figure.update_yaxes(autorange="reversed")
    figure.update_xaxes(title_text="rated movies")
    figure.update_layout(height=60 + 22 * len(mix), margin={"t": 10, "b": 10})
    st.plotly_chart(figure, key="recommend_genre_mix")
    top = mix.iloc[0]
    st.caption(
        f"Genre mix: {top['genre']} is the most rated genre ({top['movies']} of "
        f"{len(past)} movies, mean rating {top['mean_rating']:.2f}). A movie with "
        "several genres counts once for each."
    )
    with st.expander("Genre mix as a table"):
        st.dataframe(
            mix,
            hide_index=True,
            column_config={
                "share": st.column_config.NumberColumn(format="percent"),
                "mean_rating": st.column_config.NumberColumn(format="%.2f"),
            },
        )


# Top-K -------------------------------------------------------------------------


def top_k_columns(include_seen: bool) -> list[str]:
    columns = ["rank", "title", "year", "genres", "score"]
    columns += ["distance_with_relation", "distance_without_relation"]
    return columns + (["seen"] if include_seen else [])


TOP_K_CONFIG = {
    "year": st.column_config.NumberColumn(format="%d"),
    "score": st.column_config.NumberColumn(
        format="%.4f", help="-||p + r - q||. Higher ranks first."
    ),
    "distance_with_relation": st.column_config.NumberColumn(
        "‖p + r − q‖", format="%.4f", help="Distance with the relation vector r."
    ),
    "distance_without_relation": st.column_config.NumberColumn(
        "‖p − q‖", format="%.4f", help="Distance without the relation vector."
    ),
}


def show_recommendations(
    loaded: LoadedRun, top: pd.DataFrame, k: int, include_seen: bool
) -> None:
    st.subheader(
        f"Top {k}" + (" (seen movies included)" if include_seen else " unseen movies")
    )
    event = st.dataframe(
        top[top_k_columns(include_seen)],
        hide_index=True,
        key=TOP_TABLE_KEY,
        on_select="rerun",
        selection_mode="single-row",
        column_config=TOP_K_CONFIG,
    )
    row = new_selected_row(event, TOP_TABLE_KEY)
    if row is not None:
        shared.set_selection("item", int(top["item_id"].iloc[row]))
    st.caption(
        f"Scores are negative distances under run {loaded.run.name}. Without the "
        "toggle, every movie the user rated, including the held-out validation and "
        "test movies, is left out. Select a row to explain it or to list similar "
        "movies below."
    )


def _request_attention_page(item_id: int) -> None:
    # A callback, because a button's return value is lost when the first run of
    # a page reruns through app.py (see shared.ensure_navigation).
    shared.set_selection("item", item_id)
    st.session_state[OPEN_ATTENTION_KEY] = True


def open_attention_if_requested() -> None:
    if st.session_state.pop(OPEN_ATTENTION_KEY, False):
        st.switch_page(ATTENTION_PAGE, query_params=shared.selection_query_params())


def show_explain_button(loaded: LoadedRun, user_id: int, top: pd.DataFrame) -> None:
    item_id = shared.parse_id(st.session_state.get("item"))
    if item_id is None or item_id not in loaded.split.item_vocab:
        item_id = int(top["item_id"].iloc[0])
    explain_column, download_column = st.columns(2)
    explain_column.button(
        f"Explain {shared.movie_label_of(loaded, item_id)} on Attention",
        key="recommend_explain",
        icon=":material/arrow_forward:",
        width="stretch",
        help="Open the Attention page for this user and the selected movie.",
        on_click=_request_attention_page,
        args=(item_id,),
    )

    export = top.drop(columns=["item_index"]).copy()
    export.insert(0, "user_id", user_id)
    export.insert(0, "run", loaded.run.name)
    download_column.download_button(
        "Download the list as CSV",
        export.to_csv(index=False),
        file_name=f"{loaded.run.name}-user{user_id}-top{len(top)}.csv",
        mime="text/csv",
        key="recommend_download",
        on_click="ignore",
        icon=":material/download:",
        width="stretch",
    )


# Baseline comparison -----------------------------------------------------------


def baseline_picker(loaded: LoadedRun) -> LoadedRun | None:
    """Draw the baseline run picker and return the loaded baseline, if any."""
    runs = {
        run.name: run
        for run in list_runs()
        if run.name != loaded.run.name and run.has_weights()
    }
    name = st.selectbox(
        "Compare with run",
        [NO_BASELINE, *runs],
        format_func=lambda option: option or "no comparison",
        key="recommend_baseline",
        help="Another run in the models folder, for example one trained with "
        "other settings. Its top-K for the same user is shown beside this one.",
    )
    if not name:
        return None
    run = runs[name]
    try:
        return shared.cached_loaded_run(str(run.path), shared.weights_mtime_ns(run))
    except (FileNotFoundError, ValueError) as error:
        st.warning(f"Could not load run {name!r} for comparison: {error}")
        return None


def show_comparison(
    loaded: LoadedRun,
    baseline: LoadedRun,
    user_id: int,
    top: pd.DataFrame,
    settings: dict,
) -> None:
    try:
        other = recommend(baseline, baseline.user_index(user_id), **settings)
    except (KeyError, ValueError) as error:
        message = error.args[0] if error.args else str(error)
        st.warning(f"Run {baseline.run.name!r} cannot rank user {user_id}: {message}")
        return

    joined = compare_top_k(top, other)
    shared_count = int(joined["in_both"].sum())
    st.subheader(f"{loaded.run.name} against {baseline.run.name}")
    overlap_column, jaccard_column = st.columns(2)
    overlap_column.metric(
        "Movies in both lists",
        f"{shared_count} of {len(top)}",
        help="Movies that both runs put in this user's top-K.",
    )
    jaccard_column.metric(
        "Jaccard overlap",
        f"{shared_count / max(1, len(joined)):.2f}",
        help="Movies in both lists divided by movies in either list.",
    )
    left, right = st.columns(2)
    for column, run_top, other_top, name in (
        (left, top, other, loaded.run.name),
        (right, other, top, baseline.run.name),
    ):
        shown = run_top[["rank", "title", "year", "score"]].copy()
        shown["in other list"] = run_top["item_id"].isin(other_top["item_id"])
        column.markdown(f"**{name}**")
        column.dataframe(shown, hide_index=True, column_config=TOP_K_CONFIG)
    ours, theirs = loaded.config.to_dict(), baseline.config.to_dict()
    changed = [
        f"{field} {ours[field]} against {theirs.get(field)}"
        for field in ours
        if ours[field] != theirs.get(field)
    ]
    settings_text = "; ".join(changed) if changed else "none"
    st.caption(
        "Scores of two runs live in different spaces, so compare ranks, not scores. "
        f"Settings that differ: {settings_text}."
    )


# Similar movies ----------------------------------------------------------------


def show_similar(loaded: LoadedRun, default_item_id: int) -> None:
    st.subheader("Similar movies")
    movie_column, k_column = st.columns([3, 1], vertical_alignment="bottom")
    with movie_column:
        item_id, item_index = shared.movie_picker(
            loaded, "recommend_similar_item", default_item_id
        )
    k = k_column.slider(
        "Number of movies",
        1,
        min(MAX_SIMILAR, loaded.split.n_items - 1),
        10,
        key="recommend_similar_k",
    )
    similar = similar_items(loaded, item_index, k)
    st.dataframe(
        similar[["rank", "title", "year", "genres", "distance"]],
        hide_index=True,
        column_config={
            "year": st.column_config.NumberColumn(format="%d"),
            "distance": st.column_config.NumberColumn(
                "‖q − q′‖", format="%.4f", help="Euclidean distance between movies."
            ),
        },
    )
    st.caption(
        f"The movies nearest to {shared.movie_label_of(loaded, item_id)} in the "
        "metric space, by the distance between the clipped movie vectors."
    )


# Page --------------------------------------------------------------------------

open_attention_if_requested()
st.title("Recommend")
loaded = shared.require_loaded_run()

user_column, k_column, seen_column = st.columns(
    [3, 2, 1.4], vertical_alignment="bottom"
)
with user_column:
    user_id, user_index = shared.user_picker(loaded, "recommend_user")
k = k_column.slider("Number of movies (K)", 1, MAX_K, 10, key="recommend_k")
include_seen = seen_column.toggle(
    "Include seen movies",
    key="recommend_include_seen",
    help="Also rank movies the user rated.",
)
with st.expander("Find a user by demographics or activity", icon=":material/search:"):
    show_user_search(loaded)
genre_column, baseline_column = st.columns(2)
genres = genre_column.multiselect(
    "Genres",
    loaded.genres,
    key="recommend_genres",
    placeholder="all genres",
    help="Keep only movies with at least one of these genres.",
)
with baseline_column:
    baseline = baseline_picker(loaded)

past = history(loaded, user_index)
show_profile(loaded, user_id, past)
settings = {"k": k, "exclude_seen": not include_seen, "genres": genres}
try:
    top = recommend(loaded, user_index, **settings)
except ValueError as error:
    st.error(str(error))
    st.stop()
if len(top) < k:
    scope = f"of the genre(s) {', '.join(genres)}" if genres else "in the catalogue"
    seen = "" if include_seen else " unseen"
    st.warning(
        f"K is {k}, but only {len(top)}{seen} movies {scope} are left for user "
        f"{user_id}, so the list shows all {len(top)}."
    )

left, right = st.columns([3, 2])
with left:
    show_recommendations(loaded, top, k, include_seen)
    show_explain_button(loaded, user_id, top)
with right:
    show_history(loaded, past)

if baseline is not None:
    show_comparison(loaded, baseline, user_id, top, settings)

show_similar(loaded, int(top["item_id"].iloc[0]))
