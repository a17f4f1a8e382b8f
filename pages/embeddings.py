"""Embeddings: users and movies of the selected run projected to 2-D, PCA then UMAP."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from lrml.inference import LoadedRun
from lrml.projection import cached_projection
from pages import shared

shared.ensure_navigation()

PROJECTION_FOLDER = "projections"
KIND_COLORS = {"user": "#2563eb", "movie": "#ea580c"}


@st.cache_data(max_entries=16, show_spinner=False)
def projected_points(
    run_path: str, weights_mtime_ns: int, method: str, **settings
) -> np.ndarray:
    """Return the (n_users + n_items, 2) projection, users first.

    Results are cached in memory here and on disk in the run folder, keyed by
    the weights file's modification time and the settings.
    """
    loaded = shared.cached_loaded_run(run_path, weights_mtime_ns)
    users, items = shared.embedding_vectors(loaded)
    vectors = np.concatenate([users, items])  # (n_users + n_items, d)
    return cached_projection(
        loaded.run.path / PROJECTION_FOLDER,
        {"weights_mtime_ns": weights_mtime_ns, "vectors": "clipped users then items"},
        vectors,
        method=method,
        **settings,
    )


def point_labels(loaded: LoadedRun) -> pd.DataFrame:
    """Return one row per point, users first: kind and hover text."""
    users = loaded.dataset.users.set_index("user_id")
    user_ids = loaded.split.user_vocab.ids
    user_text = []
    for user_id in user_ids:
        if user_id in users.index:
            person = users.loc[user_id]
            user_text.append(
                f"user {user_id}, {person['age']}, {person['gender']}, {person['occupation']}"
            )
        else:
            user_text.append(f"user {user_id}")
    items = loaded.items
    item_names = [
        shared.movie_label(title, year)
        for title, year in zip(items["title"], items["year"])
    ]
    item_text = [
        f"{shared.movie_label(title, year)}<br>{genres or 'no genre'}"
        for title, year, genres in zip(items["title"], items["year"], items["genres"])
    ]
    return pd.DataFrame(
        {
            "kind": ["user"] * len(user_ids) + ["movie"] * len(items),
            "id": list(user_ids) + items["item_id"].tolist(),
            "name": [f"user {user_id}" for user_id in user_ids] + item_names,
            "text": user_text + item_text,
        }
    )


def scatter_figure(points: pd.DataFrame, title: str) -> go.Figure:
    figure = go.Figure()
    for kind, color in KIND_COLORS.items():
        part = points[points["kind"] == kind]
        figure.add_trace(
            go.Scattergl(
                x=part["x"],
                y=part["y"],
                mode="markers",
                name=f"{kind}s ({len(part)})",
                marker={"size": 5, "color": color, "opacity": 0.6},
                hovertext=part["text"],
                hoverinfo="text",
            )
        )
    selected = selected_points(points)
    if not selected.empty:
        figure.add_trace(
            go.Scattergl(
                x=selected["x"],
                y=selected["y"],
                mode="markers+text",
                name="selected",
                text=selected["name"],
                textposition="top center",
                marker={
                    "size": 14,
                    "color": "rgba(0,0,0,0)",
                    "line": {"width": 2, "color": "black"},
                },
                hovertext=selected["text"],
                hoverinfo="text",
            )
        )
    figure.update_layout(
        title=title,
        height=640,
        margin={"t": 40, "b": 10},
        legend={"orientation": "h"},
        xaxis={"showticklabels": False},
        yaxis={"showticklabels": False, "scaleanchor": "x"},
    )
    return figure


def selected_points(points: pd.DataFrame) -> pd.DataFrame:
    """Return the points of the selected user and movie, when they are valid ids."""
    user_id = shared.parse_id(st.session_state.get("user"))
    item_id = shared.parse_id(st.session_state.get("item"))
    is_user = (points["kind"] == "user") & (points["id"] == user_id)
    is_item = (points["kind"] == "movie") & (points["id"] == item_id)
    return points[is_user | is_item]


def umap_settings() -> dict:
    with st.form("embeddings_umap"):
        n_neighbors = st.slider(
            "n_neighbors",
            2,
            200,
            15,
            key="embeddings_n_neighbors",
            help="Number of neighbours per point. Small values keep local structure, "
            "large values global structure.",
        )
        min_dist = st.slider(
            "min_dist",
            0.0,
            0.99,
            0.1,
            step=0.01,
            key="embeddings_min_dist",
            help="Minimum distance between projected points. Small values give tighter "
            "clusters.",
        )
        metric = st.selectbox(
            "metric",
            ["euclidean", "cosine"],
            key="embeddings_metric",
            help="Distance in the embedding space. LRML scores with the Euclidean distance.",
        )
        seed = st.number_input(
            "seed",
            0,
            2**31 - 1,
            0,
            key="embeddings_seed",
            help="UMAP random_state, so a plot is reproducible.",
        )
        st.form_submit_button("Project with UMAP", icon=":material/scatter_plot:")
    return {
        "n_neighbors": n_neighbors,
        "min_dist": min_dist,
        "metric": metric,
        "seed": int(seed),
    }


st.title("Embeddings")
loaded = shared.require_loaded_run()
run = loaded.run
mtime = shared.weights_mtime_ns(run)

plot_column, settings_column = st.columns([4, 1])
with settings_column:
    settings = umap_settings()
    st.caption(
        "The points are the clipped user and movie vectors that the model scores. "
        "UMAP runs in the server and can take a minute the first time. Results are "
        f"cached in `{run.path / PROJECTION_FOLDER}`."
    )

labels = point_labels(loaded)
with plot_column:
    plot = st.empty()
    pca = projected_points(str(run.path), mtime, "pca")
    plot.plotly_chart(
        scatter_figure(
            labels.assign(x=pca[:, 0], y=pca[:, 1]), "PCA (UMAP is being computed)"
        )
    )
    with st.spinner("Computing the UMAP projection…"):
        try:
            coords = projected_points(str(run.path), mtime, "umap", **settings)
        except ValueError as error:
            st.error(f"UMAP failed: {error}")
            st.stop()
    title = (
        f"UMAP of run {run.name}: n_neighbors={settings['n_neighbors']}, "
        f"min_dist={settings['min_dist']:g}, metric={settings['metric']}, seed={settings['seed']}"
    )
    plot.plotly_chart(
        scatter_figure(labels.assign(x=coords[:, 0], y=coords[:, 1]), title)
    )
