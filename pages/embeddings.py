"""Embeddings: the run's metric space projected with UMAP or PCA, linked to the other pages.

The map shows users, movies, relation vectors or translated users ``p + r``.
A first UMAP of some settings runs in a background thread while a PCA preview
is drawn, and each projection is cached as parquet in the run folder.
"""

import hashlib
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.colors import qualitative
from safetensors import SafetensorError, safe_open

from lrml.inference import LoadedRun, recommend
from lrml.projection import (
    KINDS,
    METRICS,
    SHARE_PREFIX,
    Points,
    Projection,
    ProjectionJobs,
    ProjectionSettings,
    build_points,
    cache_path,
    cached_projection,
    fit_point_limit,
    neighbors_of,
    nonfinite_rows,
    pair_vectors,
    place_points,
    read_cached_projection,
    selected_rows,
)
from lrml.runs import WEIGHTS_FILE, Run
from lrml.split import Split
from pages import shared

shared.ensure_navigation()

PROJECTION_FOLDER = "projections"
RECOMMEND_PAGE = "pages/recommend.py"
ATTENTION_PAGE = "pages/attention.py"
SAMPLE_SIZES = (250, 500, 1000, 2000, 5000, 10_000, 20_000)
# Plotly draws WebGL at twice the CSS resolution by default, which quadruples
# the pixels each redraw fills. In a browser that renders WebGL on the CPU a
# large map then redraws fewer than 30 times a second while it is dragged. So
# maps of more points than this, and every 3-D map, draw one WebGL pixel per
# CSS pixel and smaller markers. `make bench-webgl` measures the frame rates.
SHARP_MAP_POINTS = 5000
# Each 3-D marker costs far more to draw than a 2-D one, so 3-D maps draw
# fewer points. The translated map's movies count towards the limit.
MAX_3D_POINTS = 2500
METHOD_LABELS = {"umap": "UMAP", "pca": "PCA"}
COLOURS = (
    "kind",
    "main genre",
    "genre share",
    "year",
    "popularity",
    "user activity",
    "age",
    "gender",
    "occupation",
    "dominant slot",
    "rating",
)
CATEGORICAL = ("kind", "main genre", "gender", "occupation", "dominant slot")
KIND_COLOURS = {
    "user": "#2563eb",
    "movie": "#ea580c",
    "relation": "#7c3aed",
    "p + r": "#059669",
}
MISSING_COLOUR = "#c4c4c4"
PALETTE = qualitative.Dark24 + qualitative.Light24
SELECTION_STATE = "embeddings_selection"
OPEN_PAGE_STATE = "embeddings_open_page"
POLL_SECONDS = 1
NEIGHBOURS = 10
MAX_LISTED = 500


# Data --------------------------------------------------------------------------


@st.cache_resource
def projection_jobs() -> ProjectionJobs:
    """Return the server's one queue of background projections."""
    return ProjectionJobs()


@st.cache_data(max_entries=8, show_spinner="Collecting vectors…")
def cached_points(
    run_path: str,
    weights_mtime_ns: int,
    kind: str,
    sample_size: int,
    seed: int,
    max_movies: int | None = None,
) -> Points:
    loaded = shared.cached_loaded_run(run_path, weights_mtime_ns)
    return build_points(loaded, kind, sample_size, seed, max_movies)


def weights_key(run: Run) -> dict:
    """Return what identifies the weights: run name, file mtime and saved epoch."""
    path = run.path / WEIGHTS_FILE
    try:
        with safe_open(str(path), framework="pt") as handle:
            epoch = (handle.metadata() or {}).get("epoch")
    except (SafetensorError, OSError):
        epoch = None
    return {
        "run": run.name,
        "weights_mtime_ns": path.stat().st_mtime_ns,
        "weights_epoch": epoch,
    }


def drop_nonfinite(points: Points) -> Points:
    """Warn about vectors with NaN or infinite values and return the points without them."""
    bad = nonfinite_rows(points.vectors)
    if len(bad) == 0:
        return points
    names = points.frame["label"].iloc[bad[:10]].tolist()
    more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
    st.warning(
        f"{len(bad)} of {len(points.frame)} vectors hold NaN or infinite values and "
        f"are not drawn: {', '.join(names)}{more}. These rows of the run's weights "
        "are invalid, so train the run again.",
        icon=":material/warning:",
    )
    keep = np.setdiff1d(np.arange(len(points.frame)), bad)
    return Points(
        frame=points.frame.iloc[keep].reset_index(drop=True),
        vectors=points.vectors[keep],
        key={**points.key, "dropped_nonfinite": bad.tolist()},
    )


def obtain_projection(
    run: Run, points: Points, settings: ProjectionSettings
) -> tuple[Projection, Path | None]:
    """Return the projection to draw, and the cache file of a UMAP still computing.

    PCA is computed at once. A UMAP without a cache file is submitted to the
    background queue, and the PCA projection is returned as its preview.
    """
    cache_dir = run.path / PROJECTION_FOLDER
    key = {**weights_key(run), **points.key}
    path = cache_path(cache_dir, key, settings)
    cached = read_cached_projection(path, len(points.vectors))
    if cached is not None:
        return cached, None

    preview_settings = replace(settings, method="pca")
    preview = cached_projection(
        cache_dir, key, points.vectors, **asdict(preview_settings)
    )
    if settings.method == "pca":
        return preview, None

    jobs = projection_jobs()
    future = jobs.get(path)
    if future is None or (future.done() and future.exception() is None):
        compute = partial(
            cached_projection, cache_dir, key, points.vectors, **asdict(settings)
        )
        jobs.submit(path, compute)
    return preview, path


@st.fragment(run_every=POLL_SECONDS)
def wait_for_umap(path: str) -> None:
    """Show a running status until the background UMAP ends, then rerun the page."""
    future = projection_jobs().get(Path(path))
    if future is None or future.done():
        st.rerun()
    st.status(
        "Computing UMAP in the background. The PCA preview is shown until it "
        "is ready; you can keep using the page.",
        state="running",
    )


# Controls ----------------------------------------------------------------------


def projection_controls() -> tuple[str, int, ProjectionSettings]:
    with st.form("embeddings_form", border=False):
        kind = st.selectbox(
            "Points",
            list(KINDS),
            format_func=KINDS.get,
            key="embeddings_kind",
            persist_state="session",
        )
        method = st.radio(
            "Method",
            list(METHOD_LABELS),
            format_func=METHOD_LABELS.get,
            horizontal=True,
            key="embeddings_method",
            persist_state="session",
        )
        n_components = st.radio(
            "Dimensions",
            [2, 3],
            horizontal=True,
            key="embeddings_dimensions",
            persist_state="session",
        )
        sample_size = st.select_slider(
            "Sample size",
            SAMPLE_SIZES,
            value=5000,
            key="embeddings_sample_size",
            persist_state="session",
            help="Most points drawn. Users and movies are sampled when there are "
            "more; relation and p + r maps draw this many training pairs. 3-D "
            f"maps draw at most {MAX_3D_POINTS:,} points, so that they rotate "
            "smoothly.",
        )
        n_neighbors = st.slider(
            "n_neighbors",
            2,
            200,
            15,
            key="embeddings_n_neighbors",
            persist_state="session",
            help="UMAP: neighbours per point. Small values keep local structure, "
            "large values global structure.",
        )
        min_dist = st.slider(
            "min_dist",
            0.0,
            0.99,
            0.1,
            step=0.01,
            key="embeddings_min_dist",
            persist_state="session",
            help="UMAP: how tightly points may pack. Small values give tight clusters.",
        )
        metric = st.selectbox(
            "metric",
            METRICS,
            key="embeddings_metric",
            persist_state="session",
            help="UMAP's distance in the original space, also used for the nearest "
            "neighbours below. LRML scores with the Euclidean distance.",
        )
        seed = st.number_input(
            "seed",
            0,
            2**31 - 1,
            0,
            key="embeddings_seed",
            persist_state="session",
            help="Seeds the sample and UMAP's random_state, so a map is reproducible.",
        )
        st.form_submit_button(
            "Project", icon=":material/scatter_plot:", key="embeddings_project"
        )
    settings = ProjectionSettings(
        method=method,
        n_components=int(n_components),
        n_neighbors=int(n_neighbors),
        min_dist=float(min_dist),
        metric=metric,
        seed=int(seed),
    )
    return kind, int(sample_size), settings


def points_in_2d(kind: str, sample_size: int, split: Split) -> int:
    """Return how many points the 2-D map of ``kind`` draws at ``sample_size``."""
    pairs = min(sample_size, len(split.train_users))
    return {
        "users_items": min(sample_size, split.n_users + split.n_items),
        "users": min(sample_size, split.n_users),
        "items": min(sample_size, split.n_items),
        "relations": pairs,
        "translated": pairs + split.n_items,
    }[kind]


def show_3d_limit(points: Points, kind: str, in_2d: int, n_items: int) -> None:
    """Say that a 3-D map draws fewer points than its 2-D map, when it does."""
    drawn = len(points.frame)
    if drawn >= in_2d:
        return
    if kind == "translated":
        movies = int((points.frame["kind"] == "movie").sum())
        if movies == n_items:
            share = f"all {n_items:,}"
        else:
            share = f"{movies:,} of the {n_items:,}"
        contents = f"{drawn - movies:,} sampled pairs and {share} movies"
    else:
        contents = f"{drawn:,} sampled points"
    st.caption(
        f"3-D maps draw at most {MAX_3D_POINTS:,} points, so that they rotate "
        f"smoothly. This one draws {contents}; the 2-D map draws {in_2d:,} points."
    )


def marker_base_size(points: int, dimensions: int) -> float:
    """Return the marker size: smaller on larger maps, which also draw faster."""
    if dimensions == 3:
        return 3.0
    if points <= SHARP_MAP_POINTS:
        return 5.0
    return 3.0 if points <= 2 * SHARP_MAP_POINTS else 2.0


def chart_config(points: int, dimensions: int) -> dict:
    """Return the Plotly config: wheel zoom, and the WebGL pixel ratio."""
    sharp = dimensions == 2 and points <= SHARP_MAP_POINTS
    return {"scrollZoom": True, "plotGlPixelRatio": 2 if sharp else 1}


def display_controls(genres: list[str]) -> tuple[str, str | None, bool]:
    # A catalogue without genres has no genre share to colour by.
    colours = [c for c in COLOURS if genres or c != "genre share"]
    colour = st.selectbox(
        "Colour by", colours, key="embeddings_colour", persist_state="session"
    )
    genre = None
    if colour == "genre share":
        genre = st.selectbox(
            "Genre",
            genres,
            index=genres.index("Drama") if "Drama" in genres else 0,
            key="embeddings_genre",
            persist_state="session",
            help="Movies: 1 if they have the genre. Users: the share of their "
            "training movies that have it.",
        )
    sized = st.toggle(
        "Size by popularity",
        key="embeddings_size",
        persist_state="session",
        help="Movies and pairs by the movie's training ratings, users by their own.",
    )
    return colour, genre, sized


def search_options(loaded: LoadedRun) -> dict[str, str]:
    """Return ``{"movie:<id>" or "user:<id>": label}`` for the search box."""
    options = {
        f"movie:{item_id}": label
        for item_id, label in shared.movie_labels(loaded).items()
    }
    options.update(
        {
            f"user:{user_id}": f"user {user_id}"
            for user_id in loaded.split.user_vocab.ids
        }
    )
    return options


# Colours and figure ------------------------------------------------------------


def colour_values(frame: pd.DataFrame, colour: str, genre: str | None) -> pd.Series:
    """Return the value each point is coloured by; NaN or None where it has none."""
    if colour == "kind":
        return frame["kind"]
    if colour == "main genre":
        return frame["main_genre"]
    if colour == "genre share":
        return frame[SHARE_PREFIX + str(genre)]
    if colour == "popularity":
        return np.log10(1.0 + frame["popularity"])
    if colour == "user activity":
        return (
            frame["activity"] if "activity" in frame else pd.Series(np.nan, frame.index)
        )
    if colour == "dominant slot":
        return frame["slot"].map(
            lambda slot: None if pd.isna(slot) else f"slot {int(slot)}"
        )
    return frame[colour]


def colour_title(colour: str, genre: str | None) -> str:
    return {
        "popularity": "log10(1 + ratings)",
        "genre share": f"share of {genre}",
        "user activity": "training ratings",
    }.get(colour, colour)


def marker_sizes(frame: pd.DataFrame, sized: bool, base: float) -> float | np.ndarray:
    """Return one marker size for every point, or an array when sized by popularity."""
    if not sized:
        return base
    users = (frame["kind"] == "user").to_numpy()
    counts = np.where(
        users,
        frame["activity"].to_numpy(np.float64, na_value=np.nan),
        frame["popularity"].to_numpy(np.float64, na_value=np.nan),
    )
    counts = np.nan_to_num(counts, nan=0.0)
    scale = np.sqrt(counts / max(counts.max(), 1.0))
    return base * 0.6 + 3.0 * base * scale


def sizes_of(sizes: float | np.ndarray, rows: np.ndarray) -> float | np.ndarray:
    return sizes[rows] if isinstance(sizes, np.ndarray) else sizes


def point_trace(
    coords: np.ndarray,
    rows: np.ndarray,
    frame: pd.DataFrame,
    marker: dict,
    name: str,
    **extra,
):
    """Return one WebGL trace for ``rows``, whose customdata are the row numbers."""
    common = {
        "mode": "markers",
        "name": name,
        "customdata": rows,
        "hovertext": frame["hover"].to_numpy()[rows],
        "hoverinfo": "text",
        "marker": marker,
        **extra,
    }
    if coords.shape[1] == 3:
        # Squares drew two to three times faster than circles in software
        # WebGL, and at 3 pixels the two look alike.
        common["marker"] = {**marker, "symbol": "square"}
        return go.Scatter3d(
            x=coords[rows, 0], y=coords[rows, 1], z=coords[rows, 2], **common
        )
    return go.Scattergl(x=coords[rows, 0], y=coords[rows, 1], **common)


def point_traces(
    frame: pd.DataFrame,
    coords: np.ndarray,
    colour: str,
    genre: str | None,
    sizes: float | np.ndarray,
) -> list:
    values = colour_values(frame, colour, genre)
    missing = values.isna().to_numpy()
    traces = []
    opacity = 0.75 if coords.shape[1] == 2 else 0.6
    if colour in CATEGORICAL:
        categories = sorted(values[~missing].unique(), key=_natural_key)
        for position, category in enumerate(categories):
            rows = np.flatnonzero((values == category).to_numpy() & ~missing)
            tint = KIND_COLOURS.get(category) if colour == "kind" else None
            tint = tint or PALETTE[position % len(PALETTE)]
            marker = {"size": sizes_of(sizes, rows), "color": tint, "opacity": opacity}
            traces.append(
                point_trace(coords, rows, frame, marker, f"{category} ({len(rows)})")
            )
    else:
        rows = np.flatnonzero(~missing)
        marker = {
            "size": sizes_of(sizes, rows),
            "color": values.to_numpy(np.float64, na_value=np.nan)[rows],
            "colorscale": "Viridis",
            "opacity": opacity,
            "colorbar": {
                "title": {"text": colour_title(colour, genre)},
                "thickness": 12,
            },
            "showscale": True,
        }
        traces.append(
            point_trace(coords, rows, frame, marker, f"{colour} ({len(rows)})")
        )
    rows = np.flatnonzero(missing)
    if len(rows):
        marker = {
            "size": sizes_of(sizes, rows),
            "color": MISSING_COLOUR,
            "opacity": 0.5,
        }
        traces.append(
            point_trace(coords, rows, frame, marker, f"no {colour} ({len(rows)})")
        )
    return traces


def _natural_key(value) -> tuple:
    text = str(value)
    digits = "".join(character for character in text if character.isdigit())
    return (text.rstrip("0123456789 "), int(digits) if digits else -1, text)


def overlay_trace(coords: np.ndarray, name: str, **style):
    """Return an SVG trace for a few highlight points or lines (no customdata)."""
    if coords.shape[1] == 3:
        return go.Scatter3d(
            x=coords[:, 0], y=coords[:, 1], z=coords[:, 2], name=name, **style
        )
    return go.Scatter(x=coords[:, 0], y=coords[:, 1], name=name, **style)


def arrow_heads(count: int, dimensions: int) -> dict:
    """Return a marker that draws an arrow head at the end of each 2-D segment."""
    if dimensions == 3:
        return {"size": 2, "color": "black"}
    return {
        "size": [4, 12, 0] * count,
        "symbol": ["circle", "arrow", "circle"] * count,
        "angleref": "previous",
        "color": "black",
    }


def segments(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Interleave start, end and a NaN gap, so one line trace draws every segment."""
    gap = np.full_like(starts, np.nan)
    return np.stack([starts, ends, gap], axis=1).reshape(-1, starts.shape[1])


def map_figure(traces: list, dimensions: int, title: str) -> go.Figure:
    figure = go.Figure(traces)
    layout = {
        "title": {"text": title, "font": {"size": 14}},
        "height": 680,
        "margin": {"t": 40, "b": 10, "l": 10, "r": 10},
        "legend": {"orientation": "h", "y": -0.02, "itemsizing": "constant"},
        "uirevision": title,
    }
    if dimensions == 2:
        axis = {"showticklabels": False, "zeroline": False, "showgrid": False}
        layout["xaxis"] = axis
        layout["yaxis"] = {**axis, "scaleanchor": "x"}
        layout["dragmode"] = "lasso"
    else:
        axis = {"showticklabels": False, "title": {"text": ""}}
        layout["scene"] = {"xaxis": axis, "yaxis": axis, "zaxis": axis}
    figure.update_layout(**layout)
    return figure


# Overlays ----------------------------------------------------------------------


def fitted_or_placed(
    points: Points,
    projection: Projection,
    settings: ProjectionSettings,
    vectors: np.ndarray,
    rows: np.ndarray,
) -> np.ndarray:
    """Return map positions: the fitted row's where ``rows`` >= 0, else placed ones."""
    coords = np.zeros((len(vectors), projection.coords.shape[1]), dtype=np.float32)
    fitted = rows >= 0
    coords[fitted] = projection.coords[rows[fitted]]
    if (~fitted).any():
        coords[~fitted] = place_points(
            points.vectors,
            projection.coords,
            vectors[~fitted],
            projection.method,
            int(projection.used.get("n_neighbors", settings.n_neighbors)),
            settings.metric,
        )
    return coords


def row_of(frame: pd.DataFrame, kind: str, column: str, index: int) -> int:
    matches = np.flatnonzero(
        ((frame["kind"] == kind) & (frame[column] == index)).to_numpy()
    )
    return int(matches[0]) if len(matches) else -1


def translation_traces(
    loaded: LoadedRun,
    points: Points,
    projection: Projection,
    settings: ProjectionSettings,
    kind: str,
    user_id: int,
    user_index: int,
    k: int,
) -> list:
    """Return traces for the user's ``p``, ``p + r_i`` and top-``k`` movies ``q_i``.

    Vectors that are not points of this map are placed with `place_points`.
    """
    top = recommend(loaded, user_index, k)
    pairs = pair_vectors(
        loaded.model, np.full(len(top), user_index), top["item_index"].to_numpy()
    )
    frame = points.frame
    titles = [f"#{rank} {title}" for rank, title in zip(top["rank"], top["title"])]
    place = partial(fitted_or_placed, points, projection, settings)
    unfitted = np.full(len(top), -1)
    if kind == "relations":
        relation = place(pairs.relation, unfitted)
        return [
            overlay_trace(
                relation,
                f"r of user {user_id}'s top {len(top)}",
                mode="markers+text",
                text=[f"#{rank}" for rank in top["rank"]],
                textposition="top center",
                hovertext=titles,
                hoverinfo="text",
                marker={"size": 12, "symbol": "diamond", "color": "black"},
            )
        ]

    user_row = row_of(frame, "user", "user_index", user_index)
    p = place(pairs.p[:1], np.array([user_row]))  # (1, c)
    item_rows = np.array(
        [row_of(frame, "movie", "item_index", index) for index in top["item_index"]]
    )
    q = place(pairs.q, item_rows)  # (k, c)
    translated = place(pairs.translated, unfitted)  # (k, c)
    starts = np.repeat(p, len(top), axis=0)
    return [
        overlay_trace(
            segments(starts, translated),
            "p → p + r",
            mode="lines+markers",
            line={"color": "black", "width": 1.5},
            marker=arrow_heads(len(top), projection.coords.shape[1]),
            hoverinfo="skip",
        ),
        overlay_trace(
            segments(translated, q),
            "p + r to q",
            mode="lines",
            line={"color": "#dc2626", "width": 1, "dash": "dot"},
            hoverinfo="skip",
        ),
        overlay_trace(
            q,
            f"user {user_id}'s top {len(top)} movies",
            mode="markers+text",
            text=[f"#{rank}" for rank in top["rank"]],
            textposition="top center",
            hovertext=titles,
            hoverinfo="text",
            marker={
                "size": 11,
                "symbol": "square-open",
                "color": "#dc2626",
                "line": {"width": 2},
            },
        ),
        overlay_trace(
            p,
            f"user {user_id} (p)",
            mode="markers",
            hovertext=[f"user {user_id}: p"],
            hoverinfo="text",
            marker={
                "size": 16,
                "symbol": "star" if projection.coords.shape[1] == 2 else "diamond",
                "color": "gold",
                "line": {"width": 1, "color": "black"},
            },
        ),
    ]


def search_rows(frame: pd.DataFrame, target: str | None) -> np.ndarray:
    """Return the rows of the searched movie or user: its point or its pairs."""
    if not target:
        return np.array([], dtype=np.int64)
    kind, _, value = target.partition(":")
    column = "item_id" if kind == "movie" else "user_id"
    return np.flatnonzero((frame[column] == int(value)).fillna(False).to_numpy())


def highlight_trace(
    coords: np.ndarray, rows: np.ndarray, frame: pd.DataFrame, label: str
):
    show_text = len(rows) <= 20
    return overlay_trace(
        coords[rows],
        f"search: {label} ({len(rows)})",
        mode="markers+text" if show_text else "markers",
        text=frame["label"].to_numpy()[rows] if show_text else None,
        textposition="top center",
        hovertext=frame["hover"].to_numpy()[rows],
        hoverinfo="text",
        marker={
            "size": 16,
            "color": "rgba(0,0,0,0)",
            "line": {"width": 2.5, "color": "#111827"},
        },
    )


# Selection ---------------------------------------------------------------------


def store_selection(chart_key: str, points_id: str) -> None:
    """Chart callback: store the selected rows with the identity of the map's points."""
    event = st.session_state.get(chart_key)
    selection = event["selection"] if event else None
    st.session_state[SELECTION_STATE] = {
        "points": points_id,
        "rows": selected_rows(selection),
    }


def stored_selection(points_id: str, n_points: int) -> list[int]:
    stored = st.session_state.get(SELECTION_STATE) or {}
    if stored.get("points") != points_id:
        return []
    return [row for row in stored.get("rows", []) if 0 <= row < n_points]


def request_page(page: str, user_id: int | None, item_id: int | None) -> None:
    """Button callback: select the point's user and movie, then open ``page``.

    A callback, because a button's return value is lost when the first run of
    a page reruns through app.py (see `shared.ensure_navigation`).
    """
    if user_id is not None:
        shared.set_selection("user", user_id)
    if item_id is not None:
        shared.set_selection("item", item_id)
    st.session_state[OPEN_PAGE_STATE] = page


def open_page_if_requested() -> None:
    page = st.session_state.pop(OPEN_PAGE_STATE, None)
    if page is not None:
        st.switch_page(page, query_params=shared.selection_query_params())


def optional_id(value) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


LISTED_COLUMNS = [
    "label", "kind", "user_id", "item_id", "genres", "year", "popularity",
    "activity", "age", "gender", "occupation", "rating", "slot",
]  # fmt: skip


def show_selection(
    points: Points,
    projection: Projection,
    rows: list[int],
    settings: ProjectionSettings,
) -> None:
    frame = points.frame
    st.subheader(f"Selected points ({len(rows)})")
    if not rows:
        st.caption(
            "Click, box- or lasso-select points on a 2-D map, or search a movie or "
            "user above, to list them here with their metadata and nearest neighbours."
        )
        return
    listed = frame.iloc[rows[:MAX_LISTED]][LISTED_COLUMNS]
    st.dataframe(
        listed,
        hide_index=True,
        key="embeddings_selected_table",
        column_config={
            "year": st.column_config.NumberColumn(format="%.0f"),
            "popularity": st.column_config.NumberColumn(
                "popularity",
                format="%.0f",
                help="training ratings of the movie (users: mean over their movies)",
            ),
            "activity": st.column_config.NumberColumn(
                format="%.0f", help="training ratings of the user"
            ),
            "age": st.column_config.NumberColumn(format="%.0f"),
            "rating": st.column_config.NumberColumn(
                format="%.2f",
                help="the pair's rating; mean rating for users and movies",
            ),
        },
    )
    if len(rows) > MAX_LISTED:
        st.caption(f"The first {MAX_LISTED} of {len(rows)} are listed.")

    chosen = st.selectbox(
        "Inspect",
        rows[:MAX_LISTED],
        format_func=lambda row: frame["label"].iloc[row],
        key="embeddings_inspect",
    )
    point = frame.iloc[chosen]
    show_neighbours(points, projection, chosen, settings)
    show_links(point)


def show_neighbours(
    points: Points, projection: Projection, row: int, settings: ProjectionSettings
) -> None:
    """Show the point's nearest neighbours in the original space, with map ranks."""
    frame = points.frame
    indices, distances = neighbors_of(
        points.vectors, points.vectors[row], NEIGHBOURS + 1, settings.metric
    )
    others = indices != row
    indices, distances = indices[others][:NEIGHBOURS], distances[others][:NEIGHBOURS]

    map_distances = np.linalg.norm(projection.coords - projection.coords[row], axis=1)
    ordering = map_distances.copy()
    ordering[row] = -np.inf  # rank 0 is the point itself, even among duplicates
    map_rank = np.empty(len(ordering), dtype=np.int64)
    map_rank[np.argsort(ordering, kind="stable")] = np.arange(len(ordering))
    table = pd.DataFrame(
        {
            "rank": np.arange(1, len(indices) + 1),
            "label": frame["label"].to_numpy()[indices],
            "kind": frame["kind"].to_numpy()[indices],
            "distance": distances,
            "map distance": map_distances[indices],
            "map rank": map_rank[indices],
        }
    )
    near_on_map = int((map_rank[indices] <= len(indices)).sum())

    st.markdown(
        f"**Nearest neighbours of {frame['label'].iloc[row]}** in the original "
        f"{points.vectors.shape[1]}-dimensional space ({settings.metric} distance)"
    )
    st.dataframe(
        table,
        hide_index=True,
        key="embeddings_neighbours",
        column_config={
            "distance": st.column_config.NumberColumn(format="%.4f"),
            "map distance": st.column_config.NumberColumn(format="%.3f"),
        },
    )
    st.caption(
        f"{near_on_map} of these {len(indices)} are also among the point's "
        f"{len(indices)} nearest on the map, and the map rank shows where the "
        "others landed. A map in two or three dimensions cannot keep every "
        "distance, so trust this table over the picture."
    )


def show_links(point: pd.Series) -> None:
    user_id, item_id = optional_id(point["user_id"]), optional_id(point["item_id"])
    columns = st.columns(3)
    columns[0].button(
        "Open on Recommend",
        key="embeddings_open_recommend",
        disabled=user_id is None,
        icon=":material/recommend:",
        width="stretch",
        help="Show this user's recommendations."
        if user_id is not None
        else "A movie has no recommendations of its own; pick a user or a pair.",
        on_click=request_page,
        args=(RECOMMEND_PAGE, user_id, None),
    )
    columns[1].button(
        "Open on Attention",
        key="embeddings_open_attention",
        icon=":material/bar_chart:",
        width="stretch",
        help="Show the attention of this pair, or of this user or movie with the "
        "selected movie or user.",
        on_click=request_page,
        args=(ATTENTION_PAGE, user_id, item_id),
    )
    columns[2].button(
        "Draw this user's translation",
        key="embeddings_make_user",
        disabled=user_id is None,
        icon=":material/person_pin:",
        width="stretch",
        on_click=shared.set_selection,
        args=("user", user_id),
    )


def show_values_used(
    projection: Projection,
    points: Points,
    requested: ProjectionSettings,
    path: Path | None,
) -> None:
    method = METHOD_LABELS[projection.method]
    lines = [
        f"**{method}** of **{len(points.frame):,}** points, {points.vectors.shape[1]}-d vectors"
    ]
    for name, value in projection.used.items():
        lines.append(f"- {name}: `{value}`")
    if path is not None:
        lines.append(
            f"- UMAP with n_neighbors={requested.n_neighbors}, min_dist={requested.min_dist:g}, metric={requested.metric}, seed={requested.seed} is computing"
        )
    st.markdown("\n".join(lines))
    for note in projection.notes:
        st.caption(note)


# Page --------------------------------------------------------------------------

st.title("Embeddings")
open_page_if_requested()
loaded = shared.require_loaded_run()
run = loaded.run
mtime = shared.weights_mtime_ns(run)

top_columns = st.columns([3, 1, 1, 3], vertical_alignment="bottom")
with top_columns[0]:
    user_id, user_index = shared.user_picker(loaded, "embeddings_user")
top_k = top_columns[1].number_input(
    "Top K",
    1,
    50,
    5,
    key="embeddings_top_k",
    persist_state="session",
    help="Recommended movies whose translation is drawn.",
)
show_translation = top_columns[2].toggle(
    "Translation",
    value=True,
    key="embeddings_translation",
    persist_state="session",
    help="Draw p, p + r and q of the user's top-K unseen movies.",
)
options = search_options(loaded)
target = top_columns[3].selectbox(
    "Search a movie or user",
    list(options),
    index=None,
    format_func=options.get,
    placeholder="Type a title or 'user 42'",
    key="embeddings_search",
    persist_state="session",
)

map_column, side_column = st.columns([4, 1])
with side_column:
    kind, sample_size, settings = projection_controls()
    in_2d = points_in_2d(kind, sample_size, loaded.split)
    max_movies = None
    if settings.n_components == 3:
        sample_size, max_movies = fit_point_limit(
            kind, sample_size, loaded.split.n_items, MAX_3D_POINTS, SAMPLE_SIZES[0]
        )
    points = cached_points(
        str(run.path), mtime, kind, sample_size, settings.seed, max_movies
    )
    collected = points
    genres = sorted(
        c.removeprefix(SHARE_PREFIX)
        for c in points.frame.columns
        if c.startswith(SHARE_PREFIX)
    )
    colour, genre, sized = display_controls(genres)

with map_column:
    points = drop_nonfinite(points)
    if len(points.frame) == 0:
        st.error("No point has finite coordinates, so there is nothing to draw.")
        st.stop()
    projection, pending = obtain_projection(run, points, settings)
    if pending is not None:
        future = projection_jobs().get(pending)
        if future is not None and future.done() and future.exception() is not None:
            st.error(f"UMAP failed: {future.exception()}. The PCA projection is shown.")
            st.button(
                "Retry UMAP",
                key="embeddings_retry",
                on_click=projection_jobs().forget,
                args=(pending,),
            )
        else:
            wait_for_umap(str(pending))

    frame, coords = points.frame, projection.coords
    dimensions = coords.shape[1]
    traces = point_traces(
        frame,
        coords,
        colour,
        genre,
        marker_sizes(frame, sized, marker_base_size(len(frame), dimensions)),
    )
    if show_translation:
        try:
            traces += translation_traces(
                loaded,
                points,
                projection,
                settings,
                kind,
                user_id,
                user_index,
                int(top_k),
            )
        except ValueError as error:
            st.info(f"No translation is drawn for user {user_id}: {error}")
    found = search_rows(frame, target)
    if target and len(found) == 0:
        st.info(
            f"{options[target]} is not among the points of this map: it was "
            "sampled out, or the map shows another kind of point."
        )
    elif len(found):
        traces.append(highlight_trace(coords, found, frame, options[target]))

    points_id = (
        f"{run.name}-{mtime}-{kind}-{sample_size}-{max_movies}-{settings.seed}"
        f"-{len(frame)}"
    )
    chart_key = "embeddings_map_" + hashlib.sha256(points_id.encode()).hexdigest()[:12]
    title = (
        f"{METHOD_LABELS[projection.method]} of {KINDS[kind].lower()}, run {run.name}"
    )
    if pending is not None:
        title += " (PCA preview while UMAP computes)"
    figure = map_figure(traces, dimensions, title)
    if dimensions == 2:
        st.plotly_chart(
            figure,
            key=chart_key,
            on_select=partial(store_selection, chart_key, points_id),
            selection_mode=("points", "box", "lasso"),
            config=chart_config(len(frame), dimensions),
        )
    else:
        st.plotly_chart(
            figure, key=chart_key + "_3d", config=chart_config(len(frame), dimensions)
        )
        show_3d_limit(collected, kind, in_2d, loaded.split.n_items)
        st.caption("Selecting points works on 2-D maps. In 3-D, use the search box.")
    if show_translation and kind == "relations":
        st.caption(
            "Black diamonds are the relation vectors r of the user's top-K unseen "
            "movies. They are not points of this map, so they are placed exactly "
            "under PCA, and under UMAP at the weighted mean of their nearest "
            "points, an approximation."
        )
    elif show_translation:
        shapes = (
            "The star is the user's vector p. Arrows end"
            if dimensions == 2
            else "The gold diamond is the user's vector p. Lines from it end"
        )
        st.caption(
            f"{shapes} at p + r for each of the user's top-K unseen movies, and "
            "dotted lines join p + r to the movie q it is scored against. Vectors "
            "that are not points of this map are placed exactly under PCA, and "
            "under UMAP at the weighted mean of their nearest points, an "
            "approximation."
        )

with side_column:
    show_values_used(projection, points, settings, pending)
    st.caption(f"Cached in `{run.path / PROJECTION_FOLDER}`.")

rows = stored_selection(points_id, len(frame))
rows += [int(row) for row in found if int(row) not in rows]
show_selection(points, projection, rows, settings)
